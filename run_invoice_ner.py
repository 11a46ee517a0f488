#!/usr/bin/env python
"""Fine-tune a LayoutLM-family model (LayoutLM v1, LayoutLMv2, LayoutXLM, LayoutLMv3, LiLT) for key-information
extraction: one BIO label per word, such as B-total or I-vendor.

    accelerate launch run_invoice_ner.py --dataset_path data/invoices --output_dir runs/invoices \
        --model_name_or_path microsoft/layoutlmv3-base

The same command runs on one CPU, one GPU or several (`accelerate config` / `accelerate launch` flags).
Documents longer than --max_seq_length are split into overlapping windows; predictions are merged back
to one label per word, and every metric is computed on words, not tokens.
"""

from layoutkit.train import driver
from layoutkit.train.ner_task import TokenClassificationTask


def parse_args(argv=None):
    """The run's flags: arguments.RunArguments (data, model, training and task groups)."""
    return driver.parse_args(TokenClassificationTask, argv, __doc__)


def main(argv=None) -> dict:
    """Data, model, training loop with validation each epoch, test of the kept model, save (layoutkit/train/driver.py)."""
    return driver.main(TokenClassificationTask, argv, __doc__)


if __name__ == "__main__":
    main()
