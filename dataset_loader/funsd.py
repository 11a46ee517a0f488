"""Import FUNSD (forms with question/answer/header entities) into the same dataset layout.

training_data/ gives train plus a seeded validation carved from it; testing_data/ gives test.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from datasets import DatasetDict

from dataset_loader.annotations import AnnotationError, Document, read_json, validate_document
from dataset_loader.ocr_build import OcrBuild
from dataset_loader.preprocessing import DEFAULT_KEEP_ASPECT, DEFAULT_PAD, DEFAULT_SIZE
from dataset_loader.splits import assign_splits
from dataset_loader.writer import BuildError, abort_with_report, scan_documents, start_build, write_dataset

# The label order of the Hugging Face FUNSD datasets, so label ids match published checkpoints.
FUNSD_LABELS = ["O", "B-HEADER", "I-HEADER", "B-QUESTION", "I-QUESTION", "B-ANSWER", "I-ANSWER"]
_ENTITY_TYPES = {"header": "HEADER", "question": "QUESTION", "answer": "ANSWER", "other": None}
_SOURCE_FOLDERS = {"train": "training_data", "test": "testing_data"}


def import_funsd(
    input_dir: str | Path,
    output: str | Path,
    *,
    size: tuple[int, int] = DEFAULT_SIZE,
    keep_aspect: bool = DEFAULT_KEEP_ASPECT,
    pad: bool = DEFAULT_PAD,
    seed: int = 42,
    validation_ratio: float = 0.1,
    max_docs: int | None = None,
    strict: bool = False,
    overwrite: bool = False,
    ocr: OcrBuild | None = None,
) -> DatasetDict:
    """Convert the FUNSD folder `input_dir` to a DatasetDict saved at `output`. `max_docs` limits each
    source folder (the first N files by name), for quick tests. `ocr`: train on OCR words (`ocr_build`)."""
    input_dir, output = Path(input_dir), Path(output)
    if not 0 <= validation_ratio < 1:
        raise ValueError(f"validation ratio {validation_ratio} must be in [0, 1)")
    sources = {}
    for split, folder in _SOURCE_FOLDERS.items():
        annotations_dir = input_dir / folder / "annotations"
        if not annotations_dir.is_dir():
            raise BuildError(
                f"{annotations_dir} is not a folder; --input must be the FUNSD root (training_data/, testing_data/)"
            )
        sources[split] = sorted(annotations_dir.glob("*.json"))[:max_docs]
    report = start_build(input_dir, "funsd", output, size=size, keep_aspect=keep_aspect, seed=seed, strict=strict,
                         overwrite=overwrite, pad=pad)
    train_refs, _ = scan_documents(sources["train"], read_funsd, report, strict)
    test_refs, _ = scan_documents(sources["test"], read_funsd, report, strict)
    if not train_refs:
        raise abort_with_report(output, report, f"no valid FUNSD training document in {input_dir}")

    by_id = {ref.id: ref for ref in train_refs}
    carved = assign_splits(list(by_id), (1 - validation_ratio, validation_ratio, 0.0), seed)
    splits = {
        "train": [by_id[i] for i in carved["train"]],
        "validation": [by_id[i] for i in carved["validation"]],
        "test": test_refs,
    }
    return write_dataset(splits, read_funsd, FUNSD_LABELS, output, size, keep_aspect, report, strict, ocr)


def read_funsd(path: Path) -> Document:
    """One FUNSD form as a Document: first word of an entity B-, the rest I-; "other" is O; each word's
    segment box is its entity's box; each word carries its entity's `id` (`entity_ids`) and the entities'
    `linking` pairs become `relations` (FUNSD lists each link in both of its entities: kept once; links to an
    entity without words, and self-links, cannot be represented and are dropped, counted). Blank words are dropped
    and counted."""
    path = Path(path)
    data = read_json(path)
    form = data.get("form") if isinstance(data, dict) else None
    if not isinstance(form, list):
        raise AnnotationError(path, "form", 'missing or not a list; a FUNSD file is {"form": [entity, ...]}')

    words: list[str] = []
    boxes: list[Any] = []
    labels: list[str] = []
    segments: list[Any] = []
    origins: list[str] = []  # where each kept word came from, to point errors at the FUNSD field
    entity_ids: list[int] = []
    links: dict[tuple[int, int], str] = {}  # link -> where it was first given
    dropped = 0
    for entity_index, entity in enumerate(form):
        where = f"form[{entity_index}]"
        entity_type = _entity_type(entity, where, path)
        entity_id = entity.get("id", entity_index)
        if not isinstance(entity_id, int) or isinstance(entity_id, bool):
            raise AnnotationError(path, f"{where}.id", f"{entity_id!r} must be an integer entity id")
        for link_index, link in enumerate(entity.get("linking") or []):
            if not (isinstance(link, list) and len(link) == 2 and all(isinstance(v, int) for v in link)):
                raise AnnotationError(path, f"{where}.linking[{link_index}]", f"{link!r} must be [from_id, to_id]")
            links.setdefault(tuple(link), f"{where}.linking[{link_index}]")
        first = True
        for word_index, word in enumerate(entity["words"]):
            if not isinstance(word, dict) or not isinstance(word.get("text"), str) or "box" not in word:
                message = 'must be {"text": "...", "box": [x0, y0, x1, y1]}'
                raise AnnotationError(path, f"{where}.words[{word_index}]", message)
            if not word["text"].strip():
                dropped += 1
                continue
            words.append(word["text"])
            boxes.append(word["box"])
            segments.append(entity["box"])
            labels.append("O" if entity_type is None else f"{'B' if first else 'I'}-{entity_type}")
            origins.append(f"{where}.words[{word_index}]")
            entity_ids.append(entity_id)
            first = False

    with_words = set(entity_ids)
    # One FUNSD form (0011906503) links an entity to itself: a quirk of the source, dropped (counted) here so the
    # form's words are still imported; the user format refuses self-links.
    relations = [list(link) for link in links if link[0] in with_words and link[1] in with_words and link[0] != link[1]]
    # Relations are checked against the ids of words; point their errors at the FUNSD linking field.
    link_origins = [links[tuple(pair)] for pair in relations]
    document = Document(
        id=path.stem,
        annotation_file=path,
        image_file=path.parent.parent / "images" / f"{path.stem}.png",
        words=words,
        boxes=boxes,
        labels=labels,
        segment_boxes=segments,
        entity_ids=entity_ids,
        relations=relations,
        dropped_words=dropped,
        dropped_relations=len(links) - len(relations),
    )
    try:
        return validate_document(document, FUNSD_LABELS)
    except AnnotationError as error:
        raise AnnotationError(path, _funsd_field(error.field, origins, link_origins), error.message) from None


def _entity_type(entity: Any, where: str, path: Path) -> str | None:
    if not isinstance(entity, dict) or not isinstance(entity.get("words"), list) or "box" not in entity:
        raise AnnotationError(path, where, 'must be an entity {"label": ..., "box": [...], "words": [...]}')
    label = entity.get("label")
    if label not in _ENTITY_TYPES:
        raise AnnotationError(path, f"{where}.label", f"{label!r} is not one of {', '.join(_ENTITY_TYPES)}")
    return _ENTITY_TYPES[label]


def _funsd_field(field: str | None, origins: list[str], link_origins: list[str]) -> str | None:
    """Map a flattened field ("boxes[12]", "relations[2]") back to the FUNSD one ("form[3].words[1].box",
    "form[5].linking[0]")."""
    relation = re.fullmatch(r"relations\[(\d+)\]", field or "")
    if relation:
        return link_origins[int(relation.group(1))]
    match = re.fullmatch(r"(boxes|segment_boxes|labels)\[(\d+)\]", field or "")
    if not match:
        return field
    word = origins[int(match.group(2))]
    return {"boxes": f"{word}.box", "segment_boxes": f"{word.split('.words')[0]}.box", "labels": word}[match.group(1)]
