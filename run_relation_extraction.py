#!/usr/bin/env python
"""Train a LayoutLM-family model (LayoutLM v1, LayoutLMv2, LayoutXLM, LayoutLMv3) to link entities: which answer
belongs to which question on a form, which value to which key.

    accelerate launch run_relation_extraction.py --dataset_path data/funsd --output_dir runs/funsd-links \
        --model_name_or_path microsoft/layoutlmv3-base --relation_types QUESTION:ANSWER

The dataset needs `entity_ids` and `relations` columns (dataset_loader/FORMAT.md; `python -m dataset_loader funsd`
keeps FUNSD's links). Entity spans (gold here) are pooled from the encoder and a biaffine pair classifier scores
every head -> tail pair of candidate types (layoutkit/pipelines/relation_model.py). Documents longer than --max_seq_length are
split into overlapping windows; a pair's score is the highest of the windows that hold both entities. Metrics are
link precision/recall/F1 on gold entities; with --ner_model_name_or_path the test split is also scored end to end,
on the entities that NER model predicts.
"""

from layoutkit.train import driver
from layoutkit.train.relation_task import RelationExtractionTask


def parse_args(argv=None):
    """The run's flags: arguments.RunArguments (data, model, training and task groups)."""
    return driver.parse_args(RelationExtractionTask, argv, __doc__)


def main(argv=None) -> dict:
    """Data, model, training loop with validation each epoch, test of the kept model, save (layoutkit/train/driver.py)."""
    return driver.main(RelationExtractionTask, argv, __doc__)


if __name__ == "__main__":
    main()
