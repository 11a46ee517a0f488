"""The dataset schema shared by the builders and the training code."""

from __future__ import annotations

from typing import Sequence

from datasets import ClassLabel, Features, Image, Sequence as DatasetSequence, Value

SPLITS = ("train", "validation", "test")


def _boxes() -> DatasetSequence:
    return DatasetSequence(DatasetSequence(Value("int32"), length=4))


def ner_features(label_names: Sequence[str]) -> Features:
    """Features of every split: boxes are pixels of the resized page stored in `image`."""
    return Features(
        {
            "id": Value("string"),
            "words": DatasetSequence(Value("string")),
            "bboxes": _boxes(),
            "segment_bboxes": _boxes(),
            "ner_tags": DatasetSequence(ClassLabel(names=list(label_names))),
            "image": Image(),
        }
    )


def label_names_of(features: Features) -> list[str]:
    """The label list carried by a dataset's `ner_tags` feature."""
    return list(features["ner_tags"].feature.names)
