#!/usr/bin/env python
"""Domain-adaptive pretraining of a LayoutLM-family model (LayoutLM v1, LayoutLMv2, LayoutXLM, LayoutLMv3, LiLT) on
your own unlabeled documents: whole-word masked language modelling with the words' boxes (and page image) kept;
LayoutLMv3 also masks blocks of image patches, regresses their pixels and predicts for each unmasked word whether
the patches under it are masked (`--image_objectives`, on by default for it).

    layoutkit pretraining-corpus --pages_dir scans/ --output datasets/corpus        # OCR, cached
    accelerate launch run_pretraining.py --dataset_path datasets/corpus --output_dir runs/pretrained \
        --model_name_or_path microsoft/layoutlmv3-base          # or --config_name runs/scratch (from scratch)
    accelerate launch run_invoice_ner.py --model_name_or_path runs/pretrained --dataset_path data/invoices ...

A corpus larger than memory or disk: --streaming --max_train_steps N [--eval_steps M] reads the train split as a
datasets.IterableDataset (a saved dataset, a folder of parquet shards, or --dataset_name on the Hub), shuffled in a
buffer, encoded as it is read (nothing cached) and shared out across processes; validation every M steps.

Any saved dataset with words and boxes works as the corpus (labels are ignored, a test split is dropped). The
output folder holds the encoder with its masked-LM head, the tokenizer/processor and a model card stating the
corpus, objectives and steps; the fine-tuning scripts load it directly. See docs/pretraining.md.
"""

from layoutkit.train import driver
from layoutkit.train.pretraining_task import PretrainingTask


def parse_args(argv=None):
    """The run's flags: arguments.RunArguments (data, model, training and pretraining groups)."""
    return driver.parse_args(PretrainingTask, argv, __doc__)


def main(argv=None) -> dict:
    """Data, model, training loop with validation each epoch, save (layoutkit/train/driver.py)."""
    return driver.main(PretrainingTask, argv, __doc__)


if __name__ == "__main__":
    main()
