"""Compare finished training runs side by side: one Markdown report with a metrics table and a confusion matrix
per run.

    python -m layoutkit.apps.compare runs/layoutlm runs/layoutlmv3 --output reports/compare --names v1 v3

A run folder is the `--output_dir` of `run_invoice_ner.py` (token classification) or `run_doc_classification.py`
(document classification). Everything is read from the files the training scripts write at the end
(`all_results.json`, `config.json`, the safetensors weights, the predictions file); no model is loaded, so
comparing large runs is quick and needs no GPU.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ..cli import program_name
from .rule_measurement import read_predictions

TOKEN_TASK = "token-classification"
DOCUMENT_TASK = "document-classification"

RESULTS_FILE = "all_results.json"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX_FILE = "model.safetensors.index.json"
CONFUSION_JSON_FILE = "confusion_matrix.json"
REPORT_FILE = "report.md"
# run_invoice_ner.py writes test predictions only; run_doc_classification.py writes `<split>_predictions.jsonl`
# for the split it reports (test, or the validation split when there is no test split).
PREDICTION_FILES = ("test_predictions.jsonl", "validation_predictions.jsonl", "eval_predictions.jsonl")

# The metric columns of each task, in table order: (key in all_results.json without the split prefix, header).
METRIC_COLUMNS = {
    TOKEN_TASK: [("f1", "F1"), ("em", "em"), ("em_no_space", "em_no_space")],
    DOCUMENT_TASK: [("accuracy", "accuracy"), ("f1_macro", "F1 macro")],
}
TASK_TITLES = {TOKEN_TASK: "Token classification (NER)", DOCUMENT_TASK: "Document classification"}
MISSING = "n/a"


class RunFolderError(ValueError):
    """A run folder that cannot be compared; the message names the folder and what to do."""


@dataclass
class Confusion:
    """Counts with rows = true label, columns = predicted label, in `labels` order."""

    labels: list[str]
    matrix: np.ndarray
    unit: str  # "words" (NER) or "documents" (classification)
    source: str  # the file the counts come from


@dataclass
class RunSummary:
    name: str
    path: str
    task: str  # TOKEN_TASK or DOCUMENT_TASK
    model_type: str | None
    parameters: int | None
    metrics: dict[str, float]  # the task's METRIC_COLUMNS keys, without the split prefix
    metrics_split: str | None  # "test", or "validation" (the best epoch) when the run had no test split
    train_steps: int | None = None
    train_seconds: float | None = None
    train_documents_per_second: float | None = None
    best_epoch: int | None = None
    confusion: Confusion | None = None
    label_names: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------------ reading a run
def read_json(path: str):
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as error:
        raise RunFolderError(f"{path} is not valid JSON ({error}); was it written by an interrupted run?") from error


def check_run_folder(run_dir: str) -> None:
    if not os.path.exists(run_dir):
        raise RunFolderError(
            f"{run_dir}: no such folder; pass the --output_dir of a run_invoice_ner.py or run_doc_classification.py run"
        )
    if not os.path.isdir(run_dir):
        raise RunFolderError(f"{run_dir} is a file; pass the run's output folder (its --output_dir)")
    if not os.path.isfile(os.path.join(run_dir, RESULTS_FILE)):
        raise RunFolderError(
            f"{run_dir} has no {RESULTS_FILE}: the training scripts write it at the very end, so this run did not "
            f"finish (or the folder is not a run's --output_dir); run training to completion first"
        )


def count_parameters(run_dir: str) -> int | None:
    """Parameters of the saved model, from the safetensors headers only (no tensor is loaded).

    Integer tensors are skipped: those are index buffers (e.g. `position_ids`), not learned parameters, so the
    count equals `sum(p.numel() for p in model.parameters())`. None when the folder has no safetensors weights.
    """
    from safetensors import safe_open

    index_path = os.path.join(run_dir, WEIGHTS_INDEX_FILE)
    if os.path.isfile(index_path):  # sharded: the index maps every tensor to its shard
        shards = sorted(set(read_json(index_path)["weight_map"].values()))
    elif os.path.isfile(os.path.join(run_dir, WEIGHTS_FILE)):
        shards = [WEIGHTS_FILE]
    else:
        return None
    total = 0
    for shard in shards:
        with safe_open(os.path.join(run_dir, shard), framework="pt") as weights:
            for name in weights.keys():
                tensor = weights.get_slice(name)
                if tensor.get_dtype().startswith(("F", "BF")):  # F16, F32, BF16, F8_*...
                    total += math.prod(tensor.get_shape())
    return total


def find_predictions_file(run_dir: str) -> str | None:
    for name in PREDICTION_FILES:
        path = os.path.join(run_dir, name)
        if os.path.isfile(path):
            return path
    return None


def first_record(path: str | None) -> dict | None:
    if path is None:
        return None
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                return json.loads(line)
    return None


def detect_task(run_dir: str, config: dict, results: dict, record: dict | None) -> str:
    """From the strongest evidence down: the predictions' shape, the saved architecture, the metric names."""
    if record is not None:
        if isinstance(record.get("words"), list) and isinstance(record.get("predictions"), list):
            return TOKEN_TASK
        if "predicted" in record:
            return DOCUMENT_TASK
    architectures = " ".join(config.get("architectures") or [])
    if "ForTokenClassification" in architectures:
        return TOKEN_TASK
    if "ForSequenceClassification" in architectures or os.path.isfile(os.path.join(run_dir, CONFUSION_JSON_FILE)):
        return DOCUMENT_TASK
    if any(key.endswith("_em") for key in results):
        return TOKEN_TASK
    if any(key.endswith("_f1_macro") for key in results):
        return DOCUMENT_TASK
    raise RunFolderError(
        f"{run_dir}: cannot tell whether this is a token or a document classification run (no predictions file, "
        f"no architecture in {CONFIG_FILE}, no known metric in {RESULTS_FILE})"
    )


def label_order(config: dict) -> list[str]:
    """The model's labels in id order (`id2label` keys are strings in config.json)."""
    id2label = config.get("id2label") or {}
    return [id2label[key] for key in sorted(id2label, key=int)]


def pick_metrics(results: dict, task: str) -> tuple[str | None, dict[str, float]]:
    """The task's metrics from one split: test when the run had one, otherwise the best validation epoch.
    One split per run, never a mix, so a row's numbers are comparable with each other."""
    names = [name for name, _ in METRIC_COLUMNS[task]]
    for prefix, split in (("test", "test"), ("eval", "validation")):
        found = {name: results[f"{prefix}_{name}"] for name in names if results.get(f"{prefix}_{name}") is not None}
        if found:
            return split, found
    return None, {}


def load_run(run_dir: str, name: str | None = None) -> RunSummary:
    """Everything the report needs from one finished run folder (`name` defaults to the folder's name)."""
    run_dir = os.fspath(run_dir)
    check_run_folder(run_dir)
    results = read_json(os.path.join(run_dir, RESULTS_FILE))
    config_path = os.path.join(run_dir, CONFIG_FILE)
    config = read_json(config_path) if os.path.isfile(config_path) else {}
    predictions_path = find_predictions_file(run_dir)
    task = detect_task(run_dir, config, results, first_record(predictions_path))
    split, metrics = pick_metrics(results, task)
    labels = label_order(config)
    return RunSummary(
        name=name or os.path.basename(os.path.normpath(os.path.abspath(run_dir))),
        path=run_dir,
        task=task,
        model_type=config.get("model_type"),
        parameters=count_parameters(run_dir),
        metrics=metrics,
        metrics_split=split,
        train_steps=results.get("train_steps"),
        train_seconds=results.get("train_seconds"),
        train_documents_per_second=results.get("train_documents_per_second"),
        best_epoch=results.get("best_epoch"),
        confusion=load_confusion(run_dir, task, labels, predictions_path),
        label_names=labels,
    )


# --------------------------------------------------------------------------------------- confusion matrices
def with_unseen_labels(label_names: Sequence[str], seen: Sequence[str]) -> list[str]:
    """The config's label order, plus (sorted, at the end) any label the predictions use that it lacks,
    so that no prediction silently drops out of the counts."""
    known = list(label_names)
    return known + sorted(set(seen) - set(known))


def word_confusion(records: Sequence[dict], label_names: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """(labels, counts) of gold vs predicted BIO tags over every word of every document, O included."""
    from sklearn.metrics import confusion_matrix

    gold = [tag for record in records for tag in record["labels"]]
    predicted = [tag for record in records for tag in record["predictions"]]
    labels = with_unseen_labels(label_names, gold + predicted)
    return labels, confusion_matrix(gold, predicted, labels=labels)


def document_confusion(records: Sequence[dict], label_names: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """(labels, counts) of true vs predicted class per document (`prediction_records` of classification.py)."""
    from sklearn.metrics import confusion_matrix

    gold = [record["label"] for record in records]
    predicted = [record["predicted"] for record in records]
    labels = with_unseen_labels(label_names, gold + predicted)
    return labels, confusion_matrix(gold, predicted, labels=labels)


def load_confusion(run_dir: str, task: str, label_names: Sequence[str],
                   predictions_path: str | None) -> Confusion | None:
    """From the predictions file; for classification runs without one, from confusion_matrix.json.
    None when the run kept neither (an NER run without a test split writes no predictions)."""
    if predictions_path is not None:
        records = read_predictions(predictions_path)
        if task == TOKEN_TASK:
            labels, matrix = word_confusion(records, label_names)
            return Confusion(labels, matrix, "words", os.path.basename(predictions_path))
        labels, matrix = document_confusion(records, label_names)
        return Confusion(labels, matrix, "documents", os.path.basename(predictions_path))
    saved_path = os.path.join(run_dir, CONFUSION_JSON_FILE)
    if task == DOCUMENT_TASK and os.path.isfile(saved_path):
        saved = read_json(saved_path)
        return Confusion(list(saved["labels"]), np.asarray(saved["matrix"], dtype=np.int64), "documents",
                         CONFUSION_JSON_FILE)
    return None


# ----------------------------------------------------------------------------------------------- the report
def format_number(value, decimals: int) -> str:
    return MISSING if value is None else f"{value:.{decimals}f}"


def format_parameters(count: int | None) -> str:
    return MISSING if count is None else f"{count / 1e6:.1f}M"


def table_cell(text) -> str:
    return str(text).replace("|", "\\|")  # a pipe would end the cell


def markdown_table(runs: Sequence[RunSummary], task: str) -> str:
    """One row per run: name, model, metrics split, the task's metrics, size and training cost."""
    metric_columns = METRIC_COLUMNS[task]
    header = ["run", "model", "split", *(title for _, title in metric_columns), "parameters", "steps",
              "best epoch", "training time (s)", "documents/s"]
    rows = []
    for run in runs:
        rows.append([
            run.name,
            run.model_type or MISSING,
            run.metrics_split or MISSING,
            *(format_number(run.metrics.get(key), 4) for key, _ in metric_columns),
            format_parameters(run.parameters),
            MISSING if run.train_steps is None else str(run.train_steps),
            MISSING if run.best_epoch is None else str(run.best_epoch),
            format_number(run.train_seconds, 1),
            format_number(run.train_documents_per_second, 1),
        ])
    lines = [header, ["---"] * len(header), *rows]
    return "\n".join("| " + " | ".join(table_cell(cell) for cell in line) + " |" for line in lines)


def image_file_name(run_name: str) -> str:
    """A file name (and Markdown link) safe for any run name: other characters become `_`."""
    return f"confusion_{re.sub(r'[^A-Za-z0-9._-]+', '_', run_name)}.png"


def check_distinct_names(runs: Sequence[RunSummary]) -> None:
    """Two runs with the same (file) name would share a row label and overwrite each other's figure."""
    files = [image_file_name(run.name) for run in runs]
    duplicates = sorted({run.name for run, f in zip(runs, files) if files.count(f) > 1})
    if duplicates:
        raise RunFolderError(f"several runs are named {duplicates}; give each one a distinct name with --names")


def tasks_in_order(runs: Sequence[RunSummary]) -> list[str]:
    return list(dict.fromkeys(run.task for run in runs))


def comparison_tables(runs: Sequence[RunSummary]) -> str:
    """One table per task (NER and classification metrics do not share columns), with a heading each."""
    sections = []
    for task in tasks_in_order(runs):
        sections.append(f"## {TASK_TITLES[task]}\n\n{markdown_table([r for r in runs if r.task == task], task)}")
    return "\n\n".join(sections)


def save_confusion_figure(run: RunSummary, path: str) -> None:
    from ..figures import confusion_figure  # the same figure style as the training scripts' report

    confusion = run.confusion
    figure = confusion_figure(confusion.matrix, confusion.labels,
                              f"{run.name}: {confusion.unit} ({confusion.source})")
    figure.savefig(path)


def confusion_section(run: RunSummary, output_dir: str) -> str:
    if run.confusion is None:
        return (f"### {run.name}\n\nNo predictions in `{run.path}`: `run_invoice_ner.py` writes "
                f"`test_predictions.jsonl` only when the dataset has a test split.")
    file_name = image_file_name(run.name)
    save_confusion_figure(run, os.path.join(output_dir, file_name))
    confusion = run.confusion
    return (f"### {run.name}\n\n{confusion.unit.capitalize()} of `{confusion.source}`, "
            f"{int(confusion.matrix.sum())} in all; rows = true label, columns = predicted label.\n\n"
            f"![Confusion matrix of {run.name}]({file_name})")


METRICS_NOTE = (
    "Metrics are on the `split` shown: the test split when the run had one, otherwise the best validation "
    "epoch. NER: entity-level F1 (seqeval) and field exact match (`em`; `em_no_space` ignores whitespace). "
    "Classification: document-level accuracy and macro F1. The best epoch counts from 0, as in the training log. "
    "Training time and documents/s are for the whole training loop, as measured by the run (they depend on the "
    "machine it ran on)."
)


def write_report(runs: Sequence[RunSummary], output_dir: str) -> str:
    """Write `output_dir/report.md` (tables, then one confusion matrix PNG per run beside it); returns its path."""
    check_distinct_names(runs)
    os.makedirs(output_dir, exist_ok=True)
    parts = ["# Run comparison", comparison_tables(runs), METRICS_NOTE, "## Confusion matrices"]
    parts += [confusion_section(run, output_dir) for run in runs]
    path = os.path.join(output_dir, REPORT_FILE)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("\n\n".join(parts) + "\n")
    return path


# ------------------------------------------------------------------------------------------------------ CLI
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=program_name("python -m layoutkit.apps.compare"),
        description="Compare finished runs of run_invoice_ner.py / run_doc_classification.py: a Markdown table "
                    "of metrics, size and training cost, and a confusion matrix per run.",
    )
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="the --output_dir of each finished run")
    parser.add_argument("--output", required=True, metavar="REPORT_DIR",
                        help="folder for report.md and the confusion_<run>.png figures")
    parser.add_argument("--names", nargs="+", metavar="NAME",
                        help="a row name per run, in RUN_DIR order (default: the folder names)")
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.names is not None and len(args.names) != len(args.run_dirs):
        parser.error(f"--names has {len(args.names)} names for {len(args.run_dirs)} run folders; give one per run")
    names = args.names or [None] * len(args.run_dirs)
    try:
        runs = [load_run(run_dir, name) for run_dir, name in zip(args.run_dirs, names)]
        path = write_report(runs, args.output)
    except RunFolderError as error:
        parser.error(str(error))  # usage + message on stderr, exit status 2
    print(comparison_tables(runs))
    print(f"\nreport: {path}")
    return 0


if __name__ == "__main__":
    main()
