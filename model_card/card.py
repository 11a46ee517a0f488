"""Write README.md (a Hugging Face model card) into a training output directory.

Task-agnostic: the inputs are a task name, the label list, the flat metrics dict written to
all_results.json (keys `test_f1`, `eval_f1`, `test_<label>_f1`, ...), the per-epoch validation history of
training_history.json and the training flags. The metadata's `model-index` holds the test metrics (f1,
precision, recall, accuracy) so the Hub shows them; the body documents base model, data, labels,
hyperparameters, the training curve (table + training_curve.png), intended use, limitations with the base
checkpoint's licence, and usage.

    from model_card import write_model_card
    write_model_card(args.output_dir, task="token-classification", labels=label_names, metrics=results,
                     history=state.history, args=args)
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Mapping, Sequence

from huggingface_hub import EvalResult, ModelCard, ModelCardData

TEMPLATE = Path(__file__).resolve().parent / "template.md"
CURVE_FILE = "training_curve.png"
MAIN_METRICS = ("f1", "precision", "recall", "accuracy")
METRIC_NAMES = {"f1": "F1", "precision": "Precision", "recall": "Recall", "accuracy": "Accuracy",
                "em": "Field exact match", "em_no_space": "Field exact match (ignoring spaces)"}
TASK_NAMES = {
    "token-classification": "Token Classification",
    "image-classification": "Image Classification",
    "text-classification": "Text Classification",
    "relation-extraction": "Relation Extraction",
}
NON_COMMERCIAL = ("cc-by-nc-sa-4.0", "CC BY-NC-SA 4.0: no commercial use, and derivatives such as this model must be "
                  "shared under the same licence.")
# Licence (id for the metadata, sentence for the card) of the known pretrained checkpoints, as their model pages
# state it.
CHECKPOINT_LICENCES = {
    # (microsoft/layoutlm-large-uncased and -base-cased state no licence on their pages: unknown here.)
    **{name: ("mit", "the MIT licence (commercial use allowed).") for name in (
        "microsoft/layoutlm-base-uncased", "SCUT-DLVCLab/lilt-roberta-en-base",
    )},
    **{name: NON_COMMERCIAL for name in (
        "microsoft/layoutlmv2-base-uncased", "microsoft/layoutlmv2-large-uncased", "microsoft/layoutxlm-base",
        "microsoft/layoutlmv3-base", "microsoft/layoutlmv3-large", "microsoft/layoutlmv3-base-chinese",
    )},
}
# Model types whose every published pretrained checkpoint is share-alike: a model fine-tuned from any checkpoint
# of them (a local folder, someone's fine-tuned copy) inherits the licence whatever its name.
SHARE_ALIKE_MODEL_TYPES = {"layoutlmv2": NON_COMMERCIAL, "layoutxlm": NON_COMMERCIAL, "layoutlmv3": NON_COMMERCIAL}
LICENCE_REFERENCE = ("For reference: LayoutLM (v1) and LiLT (`SCUT-DLVCLab/lilt-roberta-en-base`) weights are MIT; "
                     "LayoutLMv2, LayoutXLM and LayoutLMv3 weights are CC BY-NC-SA 4.0 (non-commercial).")


def base_licence(base_model: str | None, model_type: str | None) -> tuple[str | None, str | None]:
    """(licence id, sentence) of a fine-tuned model's base checkpoint: by its name when it is a known checkpoint,
    else by its model type when every checkpoint of that type is share-alike, else (None, None): unknown."""
    if not base_model:
        return None, None
    if base_model in CHECKPOINT_LICENCES:
        licence, words = CHECKPOINT_LICENCES[base_model]
        return licence, f"The base checkpoint `{base_model}` is released under {words}"
    if model_type in SHARE_ALIKE_MODEL_TYPES:
        licence, words = SHARE_ALIKE_MODEL_TYPES[model_type]
        return licence, f"Every published `{model_type}` checkpoint is released under {words}"
    return None, None


HYPERPARAMETERS = (
    "learning_rate", "per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps",
    "num_train_epochs", "max_train_steps", "lr_scheduler_type", "num_warmup_steps", "warmup_ratio",
    "weight_decay", "max_grad_norm", "seed", "mixed_precision", "early_stopping_patience", "max_seq_length",
    "stride", "label_all_tokens", "box_level", "image_size", "group_by_length", "attention_dropout",
)
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def is_hub_id(name: str | None) -> bool:
    """A Hub repo id ("org/name") rather than a local folder."""
    return bool(name) and not os.path.exists(name) and bool(HUB_ID.match(name))


def card_inputs_from_args(args) -> dict:
    """base_model, dataset, model_name, repo_id and hyperparameters from a training script's flags (a mapping of
    flag names to values, or a namespace)."""
    values = args if isinstance(args, Mapping) else vars(args)
    base = values.get("model_name_or_path")
    dataset = values.get("dataset_name") or values.get("dataset_path")
    repo_id = values.get("hub_model_id")
    output_dir = values.get("output_dir") or "model"
    return {
        "base_model": base,
        "from_scratch_config": None if base else values.get("config_name"),
        "dataset": dataset,
        "dataset_config": values.get("dataset_config_name"),
        "repo_id": repo_id,
        "model_name": (repo_id or os.path.basename(os.path.normpath(output_dir))).split("/")[-1],
        # `is`, not `in`: 0.0 == False, and attention_dropout 0 is a choice the card records.
        "hyperparameters": {k: values[k] for k in HYPERPARAMETERS if values.get(k) is not None and values[k] is not False},
    }


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _metric(metrics: Mapping, prefix: str, name: str):
    value = metrics.get(f"{prefix}{name}")
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _label_groups(labels: Sequence[str]) -> list[str]:
    """Entity types for BIO labels ("B-total" -> "total"), the labels themselves otherwise."""
    groups = []
    for label in labels:
        name = label[2:] if label[:2] in ("B-", "I-") else label
        if name != "O" and name not in groups:
            groups.append(name)
    return groups


def plot_history(history: Sequence[Mapping], path: str | os.PathLike, metrics: Sequence[str] = MAIN_METRICS):
    """Validation metrics per epoch as a PNG (matplotlib's Agg canvas; no display needed).
    Returns the path, or None when there is nothing to plot."""
    rows = [row for row in history if "epoch" in row]
    present = [m for m in metrics if any(isinstance(row.get(m), (int, float)) for row in rows)]
    if not rows or not present:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 4), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    epochs = [row["epoch"] for row in rows]
    for name in present:
        axes.plot(epochs, [row.get(name) for row in rows], marker="o", label=METRIC_NAMES.get(name, name))
    axes.set_xlabel("epoch")
    axes.set_ylabel("validation metric")
    axes.set_ylim(-0.02, 1.02)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right")
    axes.set_title("Validation metrics per epoch")
    figure.tight_layout()
    figure.savefig(path)
    return path


def _history_table(history: Sequence[Mapping], metrics: Sequence[str]) -> str:
    rows = [row for row in history if "epoch" in row]
    columns = [m for m in (*metrics, "em", "loss", "eval_loss", "train_loss") if any(m in row for row in rows)]
    if not rows:
        return "No per-epoch validation history was recorded."
    lines = ["| epoch | " + " | ".join(METRIC_NAMES.get(c, c) for c in columns) + " |",
             "|---:|" + "---:|" * len(columns)]
    for row in rows:
        lines.append(f"| {row['epoch']} | " + " | ".join(_fmt(row.get(c, "")) for c in columns) + " |")
    return "\n".join(lines)


def _evaluation(metrics: Mapping, labels: Sequence[str], prefix: str, split_name: str) -> str:
    if prefix is None:
        return "No evaluation metrics were recorded."
    overall = [(m, _metric(metrics, prefix, m)) for m in (*MAIN_METRICS, "em", "em_no_space")]
    lines = [f"On the {split_name} split:", "", "| metric | value |", "|---|---:|"]
    lines += [f"| {METRIC_NAMES.get(m, m)} | {v:.4f} |" for m, v in overall if v is not None]
    per_label = []
    for group in _label_groups(labels):
        values = [_metric(metrics, prefix, f"{group}_{m}") for m in ("precision", "recall", "f1")]
        support = _metric(metrics, prefix, f"{group}_number")
        if any(v is not None for v in values):
            per_label.append(
                f"| {group} | " + " | ".join("" if v is None else f"{v:.4f}" for v in values)
                + f" | {'' if support is None else int(support)} |"
            )
    if per_label:
        lines += ["", "Per label:", "", "| label | precision | recall | F1 | support |", "|---|---:|---:|---:|---:|"]
        lines += per_label
    lines += _field_confidence(metrics, prefix, split_name)
    return "\n".join(lines)


RELIABILITY_FILE = "field_reliability.png"


def _field_confidence(metrics: Mapping, prefix: str, split_name: str) -> list[str]:
    """The calibrated field scores and review routing (layoutkit/train/field_trust.py), when the run fitted them."""
    if _metric(metrics, prefix, "field_ece") is None:
        return []
    rows = [("values (fields) scored", _metric(metrics, prefix, "field_values")),
            ("share exactly right", _metric(metrics, prefix, "field_accuracy")),
            ("ECE of the model's scores (10 bins)", _metric(metrics, prefix, "field_ece_model")),
            ("ECE of the calibrated scores", _metric(metrics, prefix, "field_ece")),
            ("precision of the values accepted without review", _metric(metrics, prefix, "auto_precision")),
            ("coverage: share accepted without review", _metric(metrics, prefix, "auto_coverage"))]
    method, threshold = metrics.get("eval_field_calibration_method"), metrics.get("eval_review_threshold")
    lines = ["", f"Field confidence on the {split_name} split: each field's `score` is the probability that its value "
             f"is exactly right, calibrated on validation ({method}); values scoring below {threshold:.4f} go to "
             f"review (the threshold reaching precision {metrics.get('eval_review_precision_target')} on validation).",
             "", "| | value |", "|---|---:|"]
    lines += [f"| {name} | {value:.4f} |" if isinstance(value, float) else f"| {name} | {value} |"
              for name, value in rows if value is not None]
    lines += ["", f"![Reliability of the field scores]({RELIABILITY_FILE})"]
    return lines


def resize_mode_words(preprocessing: dict) -> str:
    if not preprocessing.get("keep_aspect"):
        return ""
    if preprocessing.get("pad", True):
        return " keeping the aspect ratio (white padding)"
    return " at most, keeping the aspect ratio and orientation (no padding)"


def _usage(task: str, repo: str) -> str:
    if task == "token-classification":
        return f"""With the pipeline shipped in this repository (OCR by the engine recorded below, or your own words
and boxes):

```python
from transformers import pipeline

extractor = pipeline("token-classification", model="{repo}", trust_remote_code=True)
extractor("invoice.png")  # or {{"image": "invoice.png", "words": [...], "boxes": [[x0, y0, x1, y1], ...]}}
# [{{"entity_group": "total", "score": 0.97, "word": "1,250.00", "start": 41, "end": 42, "box": [612, 880, 701, 902]}}, ...]
extractor("invoice.png", return_fields=True)["fields"]  # one typed value per field
# {{"total": {{"type": "amount", "value": "1,250.00", "normalized": "1250.00", "currency": "USD", ...}}, ...}}
```

On images, multi-page TIFFs, PDFs or whole folders, with one JSON per document (layoutkit's `predict.py`):

```bash
python predict.py --model_name_or_path {repo} --input invoices/ --output_dir predictions/
```

The pipeline repeats the training preprocessing recorded in `config.json` (`document_preprocessing`): the page
resize, box level, window length, stride and, for a model trained on OCR words, the OCR engine and its settings.
OCR needs the engine: `rapidocr` and `onnxruntime` (default), or `tesseract-ocr` and `pytesseract`."""
    if task == "relation-extraction":
        return f"""Links between entities (question -> answer, key -> value), with the pipeline and model code shipped
in this repository; entities come from a token-classification model, or are given:

```python
from transformers import pipeline

linker = pipeline("relation-extraction", model="{repo}", trust_remote_code=True)
linker("form.png", ner_model="path/or/hub-id-of-an-ner-model")
# or linker({{"image": "form.png", "words": [...], "boxes": [...],
#             "entities": [{{"words": [0, 1], "label": "QUESTION"}}, ...]}})
# [{{"key": {{"text": "Date:", "label": "QUESTION", "box": [...], "words": [0]}}, "value": {{...}}, "score": 0.97}}]
```"""
    return f"""```python
from transformers import pipeline

classifier = pipeline("{task}", model="{repo}", trust_remote_code=True)
```"""


def build_model_card(
    *,
    task: str,
    labels: Sequence[str],
    metrics: Mapping,
    history: Sequence[Mapping] | None = None,
    model_name: str = "model",
    repo_id: str | None = None,
    base_model: str | None = None,
    from_scratch_config: str | None = None,
    model_type: str | None = None,
    dataset: str | None = None,
    dataset_config: str | None = None,
    hyperparameters: Mapping | None = None,
    preprocessing: Mapping | None = None,
    curve_file: str | None = None,
    intended_use: str | None = None,
    usage: str | None = None,
    tags: Sequence[str] = (),
) -> ModelCard:
    """The model card (metadata + Markdown body) as a `huggingface_hub.ModelCard`."""
    history = list(history or [])
    task_name = TASK_NAMES.get(task, task.replace("-", " ").title())
    prefix = "test_" if _metric(metrics, "test_", "f1") is not None or _metric(metrics, "test_", "accuracy") is not None \
        else ("eval_" if any(k.startswith("eval_") for k in metrics) else None)
    split_name = {"test_": "test", "eval_": "validation"}.get(prefix, "test")
    hub_dataset = is_hub_id(dataset)
    dataset_label = dataset or "a custom dataset"
    dataset_short = os.path.basename(os.path.normpath(dataset)) if dataset else "custom"
    fine_tuned = bool(base_model)
    licence, licence_text = base_licence(base_model, model_type)

    eval_results = []
    if prefix:
        for name in MAIN_METRICS:
            value = _metric(metrics, prefix, name)
            if value is not None:
                eval_results.append(EvalResult(
                    task_type=task, task_name=task_name, dataset_type=dataset if hub_dataset else dataset_short,
                    dataset_name=dataset_short, dataset_config=dataset_config, dataset_split=split_name,
                    metric_type=name, metric_name=METRIC_NAMES[name], metric_value=round(float(value), 4),
                ))
    card_tags = ["layoutkit", "document-ai", *([model_type] if model_type else []), *tags]
    data = ModelCardData(
        model_name=model_name,
        base_model=base_model if is_hub_id(base_model) else None,
        datasets=[dataset] if hub_dataset else None,
        license=licence,
        library_name="transformers",
        pipeline_tag=task,
        tags=list(dict.fromkeys(card_tags)),
        metrics=[m for m in MAIN_METRICS if prefix and _metric(metrics, prefix, m) is not None] or None,
        eval_results=eval_results or None,
    )

    base_link = f"[{base_model}](https://huggingface.co/{base_model})" if is_hub_id(base_model) else f"`{base_model}`"
    data_link = f"[{dataset}](https://huggingface.co/datasets/{dataset})" if hub_dataset else f"`{dataset_label}`"
    origin = (f"a fine-tuned version of {base_link}" if fine_tuned
              else f"a {model_type or 'LayoutLM-family'} model trained from scratch"
              + (f" (configuration `{from_scratch_config}`)" if from_scratch_config else ""))
    summary = f"This model is {origin} for {task_name.lower()} on {data_link}, trained with layoutkit."
    headline = [(m, _metric(metrics, prefix, m)) for m in MAIN_METRICS] if prefix else []
    if any(v is not None for _, v in headline):
        summary += f" It achieves the following results on the {split_name} set:\n\n" + "\n".join(
            f"- {METRIC_NAMES[m]}: {v:.4f}" for m, v in headline if v is not None
        )

    details = [("Task", f"{task_name} (`{task}`)"), ("Model type", f"`{model_type}`" if model_type else "unknown"),
               ("Base model", base_link if fine_tuned else "none (trained from scratch)"),
               ("Training data", data_link), ("Licence", licence or (
                   "unknown: the base checkpoint's licence (see below)" if fine_tuned
                   else "none inherited (trained from scratch; see below)"))]
    if "best_epoch" in metrics:
        details.append(("Best epoch (validation)", str(metrics["best_epoch"])))

    if licence_text:
        licence_part = (f"**Licence.** This model inherits the licence of its base checkpoint. {licence_text} "
                        "Check the licence of your training data as well.")
    elif fine_tuned:
        licence_part = (f"**Licence.** This model inherits the licence of its base checkpoint `{base_model}`, which "
                        "layoutkit does not know: check it on the checkpoint's model page, and the licence of your "
                        f"training data. {LICENCE_REFERENCE}")
    else:
        licence_part = ("**Licence.** Trained from scratch: no pretrained weights are involved, so the licence is "
                        "yours to choose, subject to the licence of the training data. (" + LICENCE_REFERENCE + ")")
    limitations = "\n".join([
        "- Trained and evaluated on the data above only: layouts, languages, currencies and scan quality that differ "
        "from it can lower accuracy substantially. Check the metrics on your own documents before relying on it.",
        "- Predictions depend on the OCR: words the OCR engine misses or misreads cannot be extracted correctly.",
        "- Outputs are predictions with scores, not verified values; keep a human in the loop for payments, "
        "accounting or legal use.",
        "- Documents can contain personal data; process them in line with the applicable data-protection rules.",
        "", licence_part,
    ])
    if intended_use is None:
        if task == "token-classification":
            intended_use = ("Extracting the labelled fields (see the labels above) from single-page or multi-page "
                            "business documents such as invoices and receipts that resemble the training data: "
                            "each word gets a label, and consecutive words of one field are grouped with their "
                            "bounding box.")
        else:
            intended_use = f"{task_name} of documents that resemble the training data."

    prep = dict(preprocessing or {})
    if prep:
        resize = prep.get("resize")
        prep_lines = [
            "- Page resize: " + (f"{resize[0]}x{resize[1]} pixels" + resize_mode_words(prep) if resize
                                 else "none (pages kept as they are)"),
        ]
        if "box_level" in prep:
            prep_lines.append(f"- Boxes: {prep['box_level']}-level, on the 0-1000 grid")
        if prep.get("ocr"):
            settings = ", ".join(f"{k}={v}" for k, v in prep["ocr"].items() if k != "engine")
            prep_lines.append(f"- Trained on the words OCR reads: {prep['ocr'].get('engine')} ({settings}); inference "
                              "reads pages the same way")
        if "max_seq_length" in prep:
            prep_lines.append(f"- Windows of {prep['max_seq_length']} tokens with a stride of {prep.get('stride')} tokens; "
                              "predictions are merged back to one label per word")
        preprocessing_text = "Preprocessing (recorded in `config.json` as `document_preprocessing`):\n\n" + "\n".join(prep_lines)
    else:
        preprocessing_text = ""
    hyper = dict(hyperparameters or {})
    for key in ("best_epoch", "train_steps", "train_seconds"):
        if key in metrics and metrics[key] is not None:
            hyper.setdefault(key, metrics[key])
    hyper_rows = "\n".join(f"| {k} | {v:g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in hyper.items())
    hyper_rows = hyper_rows or "| (not recorded) | |"

    curve = _history_table(history, MAIN_METRICS)
    if curve_file:
        curve += f"\n\n![Validation metrics per epoch]({curve_file})"

    labels = list(labels)
    return ModelCard.from_template(
        data,
        template_path=TEMPLATE,
        title=model_name,
        summary=summary,
        details="\n".join(f"| {k} | {v} |" for k, v in details),
        num_labels=len(labels),
        labels=", ".join(f"`{label}`" for label in labels),
        intended_use=intended_use,
        limitations=limitations,
        usage=usage or _usage(task, repo_id or model_name),
        training_data=f"{data_link}" + (f" (configuration `{dataset_config}`)" if dataset_config else "") + ".",
        preprocessing=preprocessing_text,
        hyperparameters=hyper_rows,
        evaluation=_evaluation(metrics, labels, prefix, split_name),
        curve=curve,
    )


def write_model_card(
    output_dir: str | os.PathLike,
    *,
    task: str,
    labels: Sequence[str],
    metrics: Mapping,
    history: Sequence[Mapping] | None = None,
    args=None,
    **overrides,
) -> ModelCard:
    """Write `README.md` and `training_curve.png` into `output_dir` and return the card.

    `args` (a training script's flags) supplies base model, dataset, repo id and hyperparameters; keyword
    `overrides` win (any `build_model_card` argument). Model type and preprocessing are read from the
    folder's config.json when not given.
    """
    output_dir = Path(output_dir)
    inputs = card_inputs_from_args(args) if args is not None else {"model_name": output_dir.resolve().name}
    config_path = output_dir / "config.json"
    if config_path.is_file():
        config = json.loads(config_path.read_text(encoding="utf-8"))
        inputs.setdefault("model_type", config.get("model_type"))
        if config.get("document_preprocessing"):
            inputs.setdefault("preprocessing", config["document_preprocessing"])
    inputs.update(overrides)
    if history and plot_history(history, output_dir / CURVE_FILE):
        inputs.setdefault("curve_file", CURVE_FILE)
    card = build_model_card(task=task, labels=labels, metrics=metrics, history=history, **inputs)
    card.save(output_dir / "README.md")
    return card
