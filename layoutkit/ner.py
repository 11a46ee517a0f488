"""Token classification over documents: dataset windows, distributed word-level prediction, evaluation."""

from __future__ import annotations

from typing import Sequence

import torch
from datasets import Array3D, Dataset, Features, Sequence as SequenceFeature, Value
from PIL import Image

from .boxes import normalize_boxes
from .encoding import b_to_i_label_ids, encode_documents, window_page_images
from .labels import OUTSIDE
from .metrics import field_exact_match, flatten_scores, seqeval_scores
from .modeling import ModelFamily
from .windows import WordPredictionMerger

BOX_COLUMNS = {"word": "bboxes", "segment": "segment_bboxes"}
BOOKKEEPING = ("word_ids", "doc_index")


def window_features(family: ModelFamily, image_processor, with_labels: bool) -> Features:
    """Arrow types of the encoded windows (explicit, so pixel arrays are stored as fixed-shape arrays)."""
    features = {
        "input_ids": SequenceFeature(Value("int32")),
        "attention_mask": SequenceFeature(Value("int8")),
        "bbox": SequenceFeature(SequenceFeature(Value("int32"), length=4)),
        "word_ids": SequenceFeature(Value("int32")),
        "doc_index": Value("int64"),
    }
    if with_labels:
        features["labels"] = SequenceFeature(Value("int32"))
    if family.image_input and image_processor is not None:
        probe = image_processor(images=[Image.new("RGB", (32, 32), "white")], return_tensors="np")["pixel_values"]
        features[family.image_input] = Array3D(shape=probe.shape[1:], dtype=str(probe.dtype))
    return Features(features)


def encode_ner_split(
    dataset: Dataset,
    tokenizer,
    image_processor,
    family: ModelFamily,
    label_names: Sequence[str],
    max_length: int,
    stride: int,
    label_all_tokens: bool = False,
    box_level: str = "word",
    num_proc: int | None = None,
    load_from_cache_file: bool = True,
) -> Dataset:
    """Encode a split of documents (`words`, `bboxes`/`segment_bboxes`, `ner_tags`, `image`) into windows.

    Runs through `Dataset.map`, so the result is cached on disk next to the dataset and reused by the
    next run with the same settings (tokenization and image preprocessing happen once, not per epoch).
    """
    box_column = BOX_COLUMNS[box_level]
    if box_column not in dataset.column_names:
        raise ValueError(
            f"--box_level {box_level} needs a '{box_column}' column; the dataset has {dataset.column_names}"
        )
    b_to_i = b_to_i_label_ids(label_names)
    with_labels = "ner_tags" in dataset.column_names

    def encode(batch, indices):
        images = batch["image"]
        boxes = [normalize_boxes(b, image.width, image.height) for b, image in zip(batch[box_column], images)]
        columns = encode_documents(
            batch["words"], boxes, tokenizer, family, max_length, stride,
            word_labels=batch["ner_tags"] if with_labels else None,
            label_all_tokens=label_all_tokens, b_to_i=b_to_i, doc_indices=indices,
        )
        position = {doc: i for i, doc in enumerate(indices)}
        columns.update(
            window_page_images(images, image_processor, family, [position[d] for d in columns["doc_index"]])
        )
        return columns

    windows = dataset.map(
        encode,
        batched=True,
        batch_size=32,
        with_indices=True,
        remove_columns=dataset.column_names,
        features=window_features(family, image_processor, with_labels),
        num_proc=num_proc,
        load_from_cache_file=load_from_cache_file,
        desc="Encoding documents into windows",
    )
    # numpy rows keep the stored dtypes (float32 pixels, uint8 images) on the way to the collator.
    return windows.with_format("numpy")


def model_inputs(batch: dict) -> dict:
    """The model's inputs: a batch without the bookkeeping columns used to merge windows."""
    return {k: v for k, v in batch.items() if k not in BOOKKEEPING}


@torch.no_grad()
def predict_words(accelerator, model, dataloader, num_words: Sequence[int], default_label: int) -> WordPredictionMerger:
    """Run the model over all windows (sharded across processes) and merge to one label per word.

    Per batch only the argmax label and its probability travel between processes, gathered with
    `gather_for_metrics` so the duplicated samples of the last uneven batch are dropped.
    """
    model.eval()
    merger = WordPredictionMerger(num_words, default_label)
    for batch in dataloader:
        logits = model(**{k: v for k, v in model_inputs(batch).items() if k != "labels"}).logits
        scores, labels = logits.float().softmax(-1).max(-1)
        word_ids = accelerator.pad_across_processes(batch["word_ids"], dim=1, pad_index=-1)
        labels = accelerator.pad_across_processes(labels, dim=1, pad_index=0)
        scores = accelerator.pad_across_processes(scores, dim=1, pad_index=0)
        gathered = accelerator.gather_for_metrics((batch["doc_index"], word_ids, labels, scores))
        merger.add(*(tensor.cpu().numpy() for tensor in gathered))
    return merger


def evaluate_ner(accelerator, model, dataloader, documents: Dataset, label_names: Sequence[str]):
    """Word-level seqeval and field exact match on a split. Returns (flat metrics, per-document records)."""
    words = documents["words"]
    gold = [[label_names[t] for t in tags] for tags in documents["ner_tags"]]
    merger = predict_words(accelerator, model, dataloader, [len(w) for w in words], label_names.index(OUTSIDE))
    ids = documents["id"] if "id" in documents.column_names else [str(i) for i in range(len(words))]
    predicted, records = [], []
    for doc, doc_words in enumerate(words):
        label_ids, scores = merger.result(doc)
        tags = [label_names[i] for i in label_ids]
        predicted.append(tags)
        records.append({
            "id": ids[doc],
            "words": doc_words,
            "labels": gold[doc],
            "predictions": tags,
            "scores": [round(float(s), 4) for s in scores],
        })
    metrics = flatten_scores(seqeval_scores(gold, predicted))
    metrics.update(field_exact_match(words, gold, predicted))
    return metrics, records
