"""Document classification: dataset windows, document-level prediction, metrics and reports.

A document longer than one window (`max_seq_length` tokens) is split into overlapping windows with
`encode_documents` (every window remembers its `doc_index`). Training uses every window with its
document's label. At evaluation and inference a document is classified by the MEAN of its windows'
logits (then softmax): every part of the document gets an equal vote, and a one-window document is
classified exactly as the model sees it. Every metric here is computed on documents, not windows.
"""

from __future__ import annotations

import json
import os
from typing import Sequence

import numpy as np
import torch
from datasets import Dataset, Value

from ..figures import confusion_figure
from ..pipelines.encoding import LayoutCollator, document_words, encode_pages
from ..pipelines.modeling import ModelFamily
from .accelerator_setup import log_figure
from .arguments import DocumentClassificationArguments
from .driver import Evaluation, Task
from .ner_task import BOOKKEEPING, window_features

CONFUSION_FILE = "confusion_matrix.png"
MISCLASSIFIED_FILE = "misclassified.jsonl"


def encode_classification_split(
    dataset: Dataset,
    tokenizer,
    image_processor,
    family: ModelFamily,
    max_length: int,
    stride: int,
    label_column: str = "label",
    num_proc: int | None = None,
    load_from_cache_file: bool = True,
) -> Dataset:
    """Encode documents (`words`, `bboxes` in pixels of `image`, `label`) into windows, each labelled with
    its document's class (`labels`, one int per window). Cached by `Dataset.map` like the NER split."""
    with_labels = label_column in dataset.column_names
    features = window_features(family, image_processor, with_labels=False)
    if with_labels:
        features["labels"] = Value("int64")

    def encode(batch, indices):
        words, boxes = zip(*(document_words(w, b) for w, b in zip(batch["words"], batch["bboxes"])))
        columns = encode_pages(batch["image"], words, boxes, tokenizer, image_processor, family, max_length, stride,
                               doc_indices=indices)
        if with_labels:
            position = {doc: i for i, doc in enumerate(indices)}
            columns["labels"] = [int(batch[label_column][position[d]]) for d in columns["doc_index"]]
        return columns

    windows = dataset.map(
        encode, batched=True, batch_size=32, with_indices=True, remove_columns=dataset.column_names,
        features=features, num_proc=num_proc, load_from_cache_file=load_from_cache_file,
        desc="Encoding documents into windows",
    )
    return windows.with_format("numpy")


class ClassificationCollator(LayoutCollator):
    """LayoutCollator for windows with one class label each (`labels` is a scalar, not a sequence)."""

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        labels = [f["labels"] for f in features] if "labels" in features[0] else None
        batch = super().__call__([{k: v for k, v in f.items() if k != "labels"} for f in features])
        if labels is not None:
            batch["labels"] = torch.as_tensor(np.asarray(labels), dtype=torch.long)
        return batch


def model_inputs(batch: dict) -> dict:
    """The model's inputs: a batch without the bookkeeping columns (word ids, document index)."""
    return {k: v for k, v in batch.items() if k not in BOOKKEEPING}


def mean_window_logits(doc_index: np.ndarray, logits: np.ndarray, num_documents: int) -> np.ndarray:
    """(num_documents, num_labels): the mean of each document's window logits."""
    totals = np.zeros((num_documents, logits.shape[-1]), dtype=np.float64)
    counts = np.zeros(num_documents, dtype=np.int64)
    np.add.at(totals, doc_index, logits)
    np.add.at(counts, doc_index, 1)
    if (counts == 0).any():
        missing = np.flatnonzero(counts == 0)[:5].tolist()
        raise ValueError(f"documents {missing} have no window; every document must be encoded")
    return totals / counts[:, None]


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(-1, keepdims=True)


@torch.no_grad()
def predict_documents(accelerator, model, dataloader, num_documents: int) -> np.ndarray:
    """Document probabilities (num_documents, num_labels): window logits gathered across processes
    (`gather_for_metrics` drops the duplicates of the last uneven batch), averaged per document, softmax."""
    model.eval()
    indices, chunks = [], []
    for batch in dataloader:
        inputs = {k: v for k, v in model_inputs(batch).items() if k != "labels"}
        logits = model(**inputs).logits.float()
        doc_index, logits = accelerator.gather_for_metrics((batch["doc_index"], logits))
        indices.append(doc_index.cpu().numpy())
        chunks.append(logits.cpu().numpy())
    doc_index = np.concatenate(indices)
    logits = np.concatenate(chunks)
    return softmax(mean_window_logits(doc_index, logits, num_documents))


def classification_metrics(gold: Sequence[int], predicted: Sequence[int], label_names: Sequence[str]) -> dict:
    """Document-level accuracy, macro and weighted F1/precision/recall, and per class
    `<class>_precision`, `<class>_recall`, `<class>_f1`, `<class>_number` (support)."""
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    labels = list(range(len(label_names)))
    metrics = {"accuracy": float(accuracy_score(gold, predicted))}
    for average in ("macro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(gold, predicted, labels=labels, average=average, zero_division=0)
        metrics.update({f"precision_{average}": float(p), f"recall_{average}": float(r), f"f1_{average}": float(f)})
    p, r, f, s = precision_recall_fscore_support(gold, predicted, labels=labels, average=None, zero_division=0)
    for i, name in enumerate(label_names):
        metrics.update({f"{name}_precision": float(p[i]), f"{name}_recall": float(r[i]), f"{name}_f1": float(f[i]),
                        f"{name}_number": int(s[i])})
    metrics["documents"] = len(gold)
    return metrics


def confusion(gold: Sequence[int], predicted: Sequence[int], num_labels: int) -> np.ndarray:
    """Counts: row = true class, column = predicted class."""
    from sklearn.metrics import confusion_matrix

    return confusion_matrix(gold, predicted, labels=list(range(num_labels)))


def prediction_records(ids: Sequence[str], gold: Sequence[int], probabilities: np.ndarray,
                       label_names: Sequence[str], top: int = 3) -> list[dict]:
    """One record per document: id, true label, predicted label, confidence, top-`top` classes with scores."""
    records = []
    for doc, row in enumerate(probabilities):
        order = np.argsort(-row, kind="stable")
        records.append({
            "id": ids[doc],
            "label": label_names[int(gold[doc])],
            "predicted": label_names[int(order[0])],
            "confidence": round(float(row[order[0]]), 4),
            "top": [{"label": label_names[int(i)], "score": round(float(row[i]), 4)} for i in order[:top]],
        })
    return records


def evaluate_classification(accelerator, model, dataloader, documents: Dataset, label_names: Sequence[str],
                            label_column: str = "label"):
    """(metrics, records, confusion matrix) of a split, all at document level."""
    probabilities = predict_documents(accelerator, model, dataloader, len(documents))
    gold = [int(v) for v in documents[label_column]]
    predicted = probabilities.argmax(-1).tolist()
    ids = documents["id"] if "id" in documents.column_names else [str(i) for i in range(len(documents))]
    metrics = classification_metrics(gold, predicted, label_names)
    records = prediction_records(ids, gold, probabilities, label_names)
    return metrics, records, confusion(gold, predicted, len(label_names))


def majority_baseline(train_labels: Sequence[int], gold: Sequence[int]) -> float:
    """Accuracy of always predicting the most frequent training class."""
    values, counts = np.unique(np.asarray(train_labels), return_counts=True)
    majority = values[np.argmax(counts)]
    return float(np.mean(np.asarray(gold) == majority)) if len(gold) else 0.0


def write_reports(output_dir: str, records: Sequence[dict], matrix: np.ndarray, label_names: Sequence[str],
                  split_name: str):
    """misclassified.jsonl (documents whose top class is wrong) and confusion_matrix.png / .json.
    Returns the matplotlib figure (for MLflow)."""
    with open(os.path.join(output_dir, MISCLASSIFIED_FILE), "w", encoding="utf-8") as handle:
        for record in records:
            if record["predicted"] != record["label"]:
                handle.write(json.dumps({**record, "split": split_name}, ensure_ascii=False) + "\n")
    with open(os.path.join(output_dir, "confusion_matrix.json"), "w", encoding="utf-8") as handle:
        json.dump({"split": split_name, "labels": list(label_names), "rows": "true", "columns": "predicted",
                   "matrix": matrix.tolist()}, handle, indent=2)
        handle.write("\n")
    figure = confusion_figure(matrix, label_names, f"Confusion matrix ({split_name}, documents)")
    figure.savefig(os.path.join(output_dir, CONFUSION_FILE))
    return figure


def add_ocr_words(raw, lang: str, num_proc=None):
    """Words and pixel boxes for datasets that come without them (plain image folders): Tesseract, once."""
    from ..pipelines.boxes import load_page
    from ..pipelines.ocr import ocr_page

    def ocr(example):
        result = ocr_page(load_page(example["image"]), lang=lang)
        return {"words": result.words, "bboxes": result.boxes}

    return raw.map(ocr, num_proc=num_proc, desc="OCR (once; cached)")


# ------------------------------------------------------------------------------------------ the training task
class DocumentClassificationTask(Task):
    """Fine-tune a LayoutLM-family model for document image classification: one class per document. Documents
    longer than one window are classified by the mean of their windows' logits; every metric is on documents."""

    pipeline_task = "image-classification"
    script_name = "run_doc_classification"
    arguments_class = DocumentClassificationArguments
    collator_class = ClassificationCollator
    model_inputs = staticmethod(model_inputs)

    @property
    def metric_name(self) -> str:
        return self.args.task.metric_for_best_model

    @property
    def label_column(self) -> str:
        return self.args.task.label_column_name

    @property
    def stratify_column(self) -> str:
        return self.label_column

    def prepare_dataset(self, accelerator, raw):
        if self.label_column not in raw["train"].column_names:
            raise ValueError(f"no {self.label_column!r} column in the dataset ({raw['train'].column_names}); "
                             "pass --label_column_name")
        if "words" not in raw["train"].column_names:
            with accelerator.main_process_first():
                raw = add_ocr_words(raw, self.args.task.ocr_lang, self.args.data.preprocessing_num_workers)
        return raw

    def read_labels(self, raw) -> None:
        self.label_names = raw["train"].features[self.label_column].names

    def model_class(self):
        from transformers import AutoModelForSequenceClassification

        return AutoModelForSequenceClassification

    def recorded_preprocessing(self) -> dict:
        return {"document_aggregation": "mean_window_logits"}

    def encode(self, raw, split: str, processing):
        data = self.args.data
        return encode_classification_split(
            raw[split], processing.tokenizer, processing.image_processor, processing.family, data.max_seq_length,
            data.stride, label_column=self.label_column, num_proc=data.preprocessing_num_workers,
            load_from_cache_file=not data.overwrite_cache,
        )

    def training_label_ids(self, raw) -> list[int]:
        return raw["train"][self.label_column]

    def describe(self, raw, windows) -> str:
        return f"{super().describe(raw, windows)}, {len(self.label_names)} classes"

    def evaluate(self, accelerator, model, dataloader, raw, split: str, final: bool) -> Evaluation:
        metrics, records, matrix = evaluate_classification(accelerator, model, dataloader, raw[split],
                                                           self.label_names, self.label_column)
        return Evaluation(metrics, records, matrix)

    def headline(self, metrics: dict) -> str:
        return (f"accuracy={metrics['accuracy']:.4f} f1_macro={metrics['f1_macro']:.4f} "
                f"f1_weighted={metrics['f1_weighted']:.4f}")

    def run_results(self) -> dict:
        return {"metric_for_best_model": self.metric_name}

    def report(self, accelerator, model, raw, split: str, prefix: str, evaluation: Evaluation,
               processing) -> dict:
        baseline = majority_baseline(raw["train"][self.label_column], raw[split][self.label_column])
        accelerator.print(f"{split}: majority baseline accuracy={baseline:.4f}")
        if accelerator.is_main_process:
            figure = write_reports(self.args.training.output_dir, evaluation.records, evaluation.extra,
                                   self.label_names, split)
            log_figure(accelerator, figure, "confusion_matrix.png")
        return {f"{prefix}_majority_baseline_accuracy": baseline}


def main(argv=None, description: str | None = None) -> dict:
    from .driver import main as run

    return run(DocumentClassificationTask, argv, description)
