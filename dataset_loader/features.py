"""The dataset schema shared by the builders and the training code."""

from __future__ import annotations

import io
from typing import Any, Sequence

from datasets import ClassLabel, Features, Image, Sequence as DatasetSequence, Value
from PIL.Image import Image as PILImage

SPLITS = ("train", "validation", "test")


def _boxes() -> DatasetSequence:
    return DatasetSequence(DatasetSequence(Value("int32"), length=4))


# Optional columns, present when the source annotates them (FORMAT.md): -1 stands for "no entity" / "no row".
ENTITY_COLUMNS = ("entity_ids", "relations")
ROW_COLUMNS = ("row_ids",)


def ner_features(label_names: Sequence[str], optional_columns: Sequence[str] = ()) -> Features:
    """Features of every split: boxes are pixels of the resized page stored in `image`. `optional_columns`:
    any of `entity_ids` (one int per word, -1 none), `relations` ([head entity id, tail entity id] pairs) and
    `row_ids` (one int per word, -1 none)."""
    features = {
        "id": Value("string"),
        "words": DatasetSequence(Value("string")),
        "bboxes": _boxes(),
        "segment_bboxes": _boxes(),
        "ner_tags": DatasetSequence(ClassLabel(names=list(label_names))),
        "image": Image(),
    }
    for name in ("entity_ids", "row_ids"):
        if name in optional_columns:
            features[name] = DatasetSequence(Value("int32"))
    if "relations" in optional_columns:
        features["relations"] = DatasetSequence(DatasetSequence(Value("int32"), length=2))
    return Features(features)


def optional_columns_of(document) -> list[str]:
    """The optional columns a Document (dataset_loader.annotations) fills."""
    columns = [name for name in ("entity_ids", "relations", "row_ids") if getattr(document, name) is not None]
    if "relations" in columns or "entity_ids" in columns:  # entities and links travel together
        columns = sorted(set(columns) | set(ENTITY_COLUMNS))
    return columns


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
