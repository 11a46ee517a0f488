#!/usr/bin/env python
"""Fine-tune a LayoutLM-family model (LayoutLM v1, LayoutLMv2, LayoutXLM, LayoutLMv3, LiLT) for document image
classification: one class per document, such as invoice, receipt or letter.

    python -m dataset_loader classify --data_dir data/ --output datasets/doctypes [--ocr]
    accelerate launch run_doc_classification.py --dataset_path datasets/doctypes --output_dir runs/doctypes \
        --model_name_or_path microsoft/layoutlmv3-base

Documents longer than --max_seq_length are split into overlapping windows. Training uses every window with
its document's label; evaluation and the saved pipeline classify a document by the MEAN of its windows'
logits. Every metric (accuracy, macro/weighted F1, per-class precision/recall/F1) is computed on documents.
The output folder gets confusion_matrix.png, misclassified.jsonl and all_results.json besides the model.
"""

from layoutkit.train import driver
from layoutkit.train.classification_task import DocumentClassificationTask


def parse_args(argv=None):
    """The run's flags: arguments.RunArguments (data, model, training and task groups)."""
    return driver.parse_args(DocumentClassificationTask, argv, __doc__)


def main(argv=None) -> dict:
    """Data, model, training loop with validation each epoch, test of the kept model, save (layoutkit/train/driver.py)."""
    return driver.main(DocumentClassificationTask, argv, __doc__)


if __name__ == "__main__":
    main()
