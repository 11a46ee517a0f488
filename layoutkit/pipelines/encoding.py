"""Documents (words, 0-1000 boxes, optional word labels, optional page image) into model windows.

A document longer than the model's window is split into overlapping windows (the tokenizer's own
overflow with `stride`), never truncated away. Every window keeps the word index of each token
(`word_ids`, -1 for special tokens) and the document it came from (`doc_index`), so predictions can be
merged back to one label per word (see `windows.py`).

Copied into saved checkpoints beside the custom pipelines: imports only numpy, torch and transformers.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .boxes import normalize_boxes
from .modeling import ModelFamily, tokenizer_takes_boxes

IGNORE_INDEX = -100


def b_to_i_label_ids(label_names: Sequence[str]) -> list[int]:
    """For each label id, the id used on continuation sub-tokens: B-x becomes I-x."""
    index = {name: i for i, name in enumerate(label_names)}
    return [index.get("I-" + name[2:], i) if name.startswith("B-") else i for i, name in enumerate(label_names)]


def encode_documents(
    words: Sequence[Sequence[str]],
    boxes: Sequence[Sequence[Sequence[int]]],
    tokenizer,
    family: ModelFamily,
    max_length: int = 512,
    stride: int = 128,
    word_labels: Sequence[Sequence[int]] | None = None,
    label_all_tokens: bool = False,
    b_to_i: Sequence[int] | None = None,
    doc_indices: Sequence[int] | None = None,
) -> dict[str, list]:
    """Tokenize a batch of documents into windows of at most `max_length` tokens.

    `boxes` are already on the 0-1000 grid (`boxes.normalize_boxes`). Labels go on the first sub-token
    of each word in a window; the other sub-tokens get -100, or with `label_all_tokens` the word's
    label with B- turned into I-. Returns column lists, one row per window.
    """
    if doc_indices is None:
        doc_indices = list(range(len(words)))
    common = dict(
        truncation=True,
        max_length=max_length,
        stride=stride,
        return_overflowing_tokens=True,
        return_attention_mask=True,
    )
    if tokenizer_takes_boxes(tokenizer, family):
        encoding = tokenizer(text=[list(w) for w in words], boxes=[list(b) for b in boxes], **common)
    else:
        encoding = tokenizer([list(w) for w in words], is_split_into_words=True, **common)

    columns: dict[str, list] = {
        "input_ids": [], "attention_mask": [], "bbox": [], "word_ids": [], "doc_index": []
    }
    if word_labels is not None:
        columns["labels"] = []
    for window, sample in enumerate(encoding["overflow_to_sample_mapping"]):
        word_ids = [-1 if w is None else w for w in encoding.word_ids(window)]
        input_ids = encoding["input_ids"][window]
        columns["input_ids"].append(input_ids)
        columns["attention_mask"].append(encoding["attention_mask"][window])
        columns["word_ids"].append(word_ids)
        columns["doc_index"].append(doc_indices[sample])
        if "bbox" in encoding:
            columns["bbox"].append(encoding["bbox"][window])
        else:
            doc_boxes = boxes[sample]
            columns["bbox"].append([
                list(doc_boxes[w]) if w >= 0 else list(family.cls_box if position == 0 else family.sep_box)
                for position, w in enumerate(word_ids)
            ])
        if word_labels is not None:
            doc_labels = word_labels[sample]
            labels, previous = [], -1
            for w in word_ids:
                if w < 0:
                    labels.append(IGNORE_INDEX)
                elif w != previous:
                    labels.append(int(doc_labels[w]))
                elif label_all_tokens:
                    label = int(doc_labels[w])
                    labels.append(b_to_i[label] if b_to_i is not None else label)
                else:
                    labels.append(IGNORE_INDEX)
                previous = w
            columns["labels"].append(labels)
    return columns


def encode_pages(
    images: Sequence,
    words: Sequence[Sequence[str]],
    pixel_boxes: Sequence[Sequence[Sequence[float]]],
    tokenizer,
    image_processor,
    family: ModelFamily,
    max_length: int = 512,
    stride: int = 128,
    doc_indices: Sequence[int] | None = None,
    **label_options,
) -> dict[str, list]:
    """Pages (PIL images with their words and boxes in the image's pixels) into model windows: boxes onto the
    0-1000 grid, tokens into overlapping windows (`encode_documents`, which takes the `label_options`), and each
    window's page pixels. The one encoding path of training (`Dataset.map` in ner.py, classification.py,
    relation_extraction.py) and inference (the pipelines)."""
    boxes = [normalize_boxes(b, image.width, image.height) for b, image in zip(pixel_boxes, images)]
    doc_indices = list(range(len(words))) if doc_indices is None else list(doc_indices)
    columns = encode_documents(words, boxes, tokenizer, family, max_length, stride, doc_indices=doc_indices,
                               **label_options)
    position = {doc: i for i, doc in enumerate(doc_indices)}
    columns.update(window_page_images(images, image_processor, family, [position[d] for d in columns["doc_index"]]))
    return columns


def document_words(words: Sequence[str], boxes: Sequence[Sequence[float]]) -> tuple[list, list]:
    """A document classified with no words still gets one (empty) window: [CLS] [SEP] plus the page image."""
    if len(words):
        return list(words), [list(b) for b in boxes]
    return [""], [[0, 0, 0, 0]]


def window_page_images(images, image_processor, family: ModelFamily, positions: Sequence[int]) -> dict:
    """Page-image inputs for each window: the image processor runs once per document and each window
    gets its document's copy (`positions[i]` = index in `images` of window i's document).
    Returns {input_name: array} or {} for text-only models."""
    if family.image_input is None or image_processor is None:
        return {}
    pixels = image_processor(images=list(images), return_tensors="np")["pixel_values"]
    return {family.image_input: pixels[np.asarray(positions, dtype=np.int64)]}


class LayoutCollator:
    """Pads a list of windows to the longest in the batch (dynamic padding), rounded up to
    `pad_to_multiple_of` so tensor cores get aligned shapes. Boxes pad with zeros, labels with -100,
    word ids with -1. Works for every family, including v1 whose BERT tokenizer cannot pad boxes."""

    PAD_VALUES = {"attention_mask": 0, "token_type_ids": 0, "bbox": 0, "labels": IGNORE_INDEX, "word_ids": -1}

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = 8, image_input: str | None = None):
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of
        self.image_input = image_input

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        length = max(len(f["input_ids"]) for f in features)
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
        batch: dict[str, torch.Tensor] = {}
        for key in ("input_ids", "attention_mask", "token_type_ids", "bbox", "labels", "word_ids"):
            if key not in features[0]:
                continue
            pad = self.pad_token_id if key == "input_ids" else self.PAD_VALUES[key]
            rows = []
            for f in features:
                row = torch.as_tensor(f[key], dtype=torch.long)
                missing = length - row.shape[0]
                if missing:
                    filler = torch.full((missing, *row.shape[1:]), pad, dtype=torch.long)
                    row = torch.cat([row, filler])
                rows.append(row)
            batch[key] = torch.stack(rows)
        if "doc_index" in features[0]:
            # int(): a streamed dataset's numpy rows give 0-d arrays, which a tensor cannot be made of in a list.
            batch["doc_index"] = torch.as_tensor([int(f["doc_index"]) for f in features], dtype=torch.long)
        if self.image_input and self.image_input in features[0]:
            batch[self.image_input] = torch.stack([torch.as_tensor(np.asarray(f[self.image_input])) for f in features])
        return batch


class RelationCollator(LayoutCollator):
    """LayoutCollator plus the entity columns: `entity_index` padded like the tokens (-1), the per-entity columns
    to the most entities in the batch (-1), `relation_pairs` to the most links ([-1, -1])."""

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        batch = super().__call__(features)
        length = batch["input_ids"].shape[1]
        batch["entity_index"] = _pad_rows([f["entity_index"] for f in features], length, -1)
        entities = max(1, max(len(f["entity_labels"]) for f in features))
        batch["entity_labels"] = _pad_rows([f["entity_labels"] for f in features], entities, -1)
        batch["entity_ids"] = _pad_rows([f["entity_ids"] for f in features], entities, -1)
        if "relation_pairs" in features[0]:
            links = max(len(f["relation_pairs"]) for f in features)
            # numpy-formatted rows hold the pairs as an object array of arrays: rebuild them as one int array.
            rows = [torch.as_tensor(np.array([list(p) for p in f["relation_pairs"]], dtype=np.int64).reshape(-1, 2))
                    for f in features]
            batch["relation_pairs"] = torch.stack([
                torch.cat([row, torch.full((links - len(row), 2), -1, dtype=torch.long)]) for row in rows
            ])
        return batch


def _pad_rows(rows, length: int, value: int) -> torch.Tensor:
    out = torch.full((len(rows), length), value, dtype=torch.long)
    for i, row in enumerate(rows):
        row = torch.as_tensor(row, dtype=torch.long)
        out[i, : len(row)] = row
    return out
