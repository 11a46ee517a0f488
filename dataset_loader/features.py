"""The dataset schema shared by the builders and the training code."""

from __future__ import annotations

import io
from typing import Any, Sequence

from datasets import ClassLabel, Features, Image, Sequence as DatasetSequence, Value
from PIL.Image import Image as PILImage

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


def encoded_page(image: PILImage) -> dict[str, Any]:
    """A resized page in the form the `Image` feature stores: PNG, lossless as datasets' own encoding, but
    at zlib level 1 instead of 6, which writes a scanned page about a third faster (measured: 23 vs 34 ms
    for 1000x700) for a file about 4% larger. Image encoding is the largest cost of a build."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return {"bytes": buffer.getvalue(), "path": None}


def label_names_of(features: Features) -> list[str]:
    """The label list carried by a dataset's `ner_tags` feature."""
    return list(features["ner_tags"].feature.names)
