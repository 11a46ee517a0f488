"""Token classification over documents: dataset windows, distributed word-level prediction, evaluation, and the
training task (`TokenClassificationTask`, run by driver.py; `main` is `run_invoice_ner.py` / `layoutkit train-ner`)."""

from __future__ import annotations

import os
from typing import Sequence

import torch
from datasets import Array3D, Dataset, Features, IterableDataset, Value
from datasets import Sequence as SequenceFeature
from PIL import Image

from ..metrics import field_exact_match, flatten_scores, overall_metrics, seqeval_scores
from ..pipelines.encoding import b_to_i_label_ids, encode_pages
from ..pipelines.labels import OUTSIDE
from ..pipelines.modeling import ModelFamily
from ..pipelines.windows import WordPredictionMerger
from .arguments import TokenClassificationArguments
from .data import standardize_label_column
from .driver import Evaluation, Task

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
    next run with the same settings (tokenization and image preprocessing happen once, not per epoch). A streamed
    split (an `IterableDataset`, --streaming) is encoded lazily, as it is read, and nothing is written.
    """
    box_column = BOX_COLUMNS[box_level]
    if box_column not in dataset.column_names:
        raise ValueError(
            f"--box_level {box_level} needs a '{box_column}' column; the dataset has {dataset.column_names}"
        )
    b_to_i = b_to_i_label_ids(label_names)
    with_labels = "ner_tags" in dataset.column_names

    def encode(batch, indices):
        return encode_pages(
            batch["image"], batch["words"], batch[box_column], tokenizer, image_processor, family, max_length,
            stride, doc_indices=indices, word_labels=batch["ner_tags"] if with_labels else None,
            label_all_tokens=label_all_tokens, b_to_i=b_to_i,
        )

    features = window_features(family, image_processor, with_labels)
    if isinstance(dataset, IterableDataset):
        # Rows as `encode` makes them (lists, numpy pixels), which the collator takes: typing them as `features` and
        # formatting them as numpy converts every scalar on its own, 10x the encoding's own time.
        return dataset.map(encode, batched=True, batch_size=32, with_indices=True, remove_columns=dataset.column_names)
    windows = dataset.map(
        encode,
        batched=True,
        batch_size=32,
        with_indices=True,
        remove_columns=dataset.column_names,
        features=features,
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


# ------------------------------------------------------------------------------------------ the training task
class TokenClassificationTask(Task):
    """Fine-tune a LayoutLM-family model for key-information extraction: one BIO label per word."""

    pipeline_task = "token-classification"
    script_name = "run_invoice_ner"
    arguments_class = TokenClassificationArguments
    model_inputs = staticmethod(model_inputs)

    def prepare_dataset(self, accelerator, raw):
        return standardize_label_column(raw, self.args.task.label_column_name, "ner_tags")

    def read_labels(self, raw) -> None:
        self.label_names = raw["train"].features["ner_tags"].feature.names

    def model_class(self):
        from transformers import AutoModelForTokenClassification

        return AutoModelForTokenClassification

    def recorded_preprocessing(self) -> dict:
        return {"box_level": self.args.task.box_level}

    def encode(self, raw, split: str, processing):
        data = self.args.data
        return encode_ner_split(
            raw[split], processing.tokenizer, processing.image_processor, processing.family, self.label_names,
            data.max_seq_length, data.stride, label_all_tokens=self.args.task.label_all_tokens,
            box_level=self.args.task.box_level, num_proc=data.preprocessing_num_workers,
            load_from_cache_file=not data.overwrite_cache,
        )

    def training_label_ids(self, raw) -> list[int]:
        return [t for tags in raw["train"]["ner_tags"] for t in tags]

    def evaluate(self, accelerator, model, dataloader, raw, split: str, final: bool) -> Evaluation:
        metrics, records = evaluate_ner(accelerator, model, dataloader, raw[split], self.label_names)
        if not (final or self.args.task.return_entity_level_metrics):
            metrics = overall_metrics(metrics)
        return Evaluation(metrics, records)

    def fit_confidence(self, accelerator, model, dataloader, raw, split: str) -> dict:
        """Field calibration, review threshold and day_first (field_trust.py) into `config.field_trust`."""
        from .field_trust import fit_trust, gold_dates

        _, records = evaluate_ner(accelerator, model, dataloader, raw[split], self.label_names)
        dates = [text for part in ("train", split) for text in gold_dates(raw[part], self.label_names)]
        trust, metrics = fit_trust(records, raw[split]["bboxes"], review_precision=self.args.task.review_precision,
                                   dates=dates, review_confidence=self.args.task.review_confidence)
        accelerator.unwrap_model(model).config.field_trust = trust
        self.field_trust = trust
        precision = "none reached" if metrics["auto_precision"] is None else f"{metrics['auto_precision']:.4f}"
        accelerator.print(f"field confidence: {metrics['field_calibration_method']} calibration, review threshold "
                          f"{metrics['review_threshold']:.4f} (validation precision {precision}, "
                          f"coverage {metrics['auto_coverage']:.4f})")
        return {f"eval_{name}": value for name, value in metrics.items()}

    def report(self, accelerator, model, raw, split: str, prefix: str, evaluation: Evaluation, processing) -> dict:
        """ECE before and after calibration, precision and coverage of the values accepted without review, and
        the reliability plot (field_reliability.png) on the report split."""
        from .field_trust import RELIABILITY_PLOT, measure_trust, plot_reliability

        trust = getattr(self, "field_trust", None)
        if not trust:
            return {}
        metrics, tables = measure_trust(evaluation.records, raw[split]["bboxes"], trust)
        if accelerator.is_main_process:
            plot_reliability(tables, os.path.join(self.args.training.output_dir, RELIABILITY_PLOT),
                             title=f"Field confidence ({split})")
        return {f"{prefix}_{name}": value for name, value in metrics.items()}


def main(argv=None, description: str | None = None) -> dict:
    from .driver import main as run

    return run(TokenClassificationTask, argv, description)
