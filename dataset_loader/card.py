"""Dataset card (huggingface_hub.DatasetCard) and the push of a built dataset to the Hub."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

from datasets import DatasetDict, DatasetInfo, SplitDict, SplitInfo, load_from_disk
from datasets.info import DatasetInfosDict
from datasets.utils.metadata import MetadataConfigs
from huggingface_hub import DatasetCard, DatasetCardData, get_token

from dataset_loader.features import label_names_of
from dataset_loader.preprocessing import load_preprocessing
from dataset_loader.report import read_report
from layoutkit.pipelines.labels import bio_spans

FORMAT_FILE = Path(__file__).with_name("FORMAT.md")


class PushError(RuntimeError):
    """The dataset cannot be pushed (no token)."""


def dataset_statistics(dataset: DatasetDict) -> dict[str, dict[str, Any]]:
    """Per split: documents, words and entities per type (read from the ner_tags column only)."""
    statistics = {}
    for split, part in dataset.items():
        names = label_names_of(part.features)
        entities: Counter[str] = Counter()
        words = 0
        for batch in part.select_columns(["ner_tags"]).iter(batch_size=1000):
            for tags in batch["ner_tags"]:
                words += len(tags)
                entities.update(span.label for span in bio_spans([names[tag] for tag in tags]))
        statistics[split] = {"documents": len(part), "words": words, "entities": dict(sorted(entities.items()))}
    return statistics


def make_dataset_card(
    dataset: DatasetDict,
    preprocessing: dict[str, Any] | None = None,
    report: dict[str, Any] | None = None,
    repo_id: str | None = None,
) -> DatasetCard:
    """The card: YAML metadata (task, tags, features and split files so the Hub keeps the ClassLabel names)
    and a body with the labels, counts per split and per label, the annotation format and the resize."""
    statistics = dataset_statistics(dataset)
    funsd = (report or {}).get("source_format") == "funsd"
    total = sum(split["documents"] for split in statistics.values())
    card_data = DatasetCardData(
        task_categories=["token-classification"],
        task_ids=["named-entity-recognition"],
        tags=["document-ai", "layoutlm", "forms" if funsd else "invoices", "key-information-extraction"],
        size_categories=["n<1K" if total < 1000 else "1K<n<10K" if total < 10_000 else "10K<n<100K"],
        pretty_name="FUNSD (LayoutLM format)" if funsd else (repo_id or "Invoice documents").split("/")[-1],
        language=["en"] if funsd else None,
        license="other" if funsd else None,
    )
    # Our card replaces the README that push_to_hub wrote, so carry its two machine-read entries over.
    splits = SplitDict()
    for name, part in dataset.items():
        splits.add(SplitInfo(name=name, num_examples=len(part), num_bytes=part.data.nbytes))
    features = next(iter(dataset.values())).features
    DatasetInfosDict({"default": DatasetInfo(features=features, splits=splits)}).to_dataset_card_data(card_data)
    MetadataConfigs(
        {"default": {"data_files": [{"split": name, "path": f"data/{name}-*"} for name in dataset]}}
    ).to_dataset_card_data(card_data)
    body = _card_body(dataset, statistics, preprocessing, report, repo_id, funsd)
    return DatasetCard(f"---\n{card_data.to_yaml()}\n---\n\n{body}")


def _card_body(
    dataset: DatasetDict,
    statistics: dict[str, dict[str, Any]],
    preprocessing: dict[str, Any] | None,
    report: dict[str, Any] | None,
    repo_id: str | None,
    funsd: bool,
) -> str:
    labels = label_names_of(next(iter(dataset.values())).features)
    types = sorted({label[2:] for label in labels if label != "O"})
    lines = [f"# {repo_id or 'Document token-classification dataset'}", ""]
    lines += [
        "Word-level token classification (BIO tags) on document page images, with word boxes and segment "
        "boxes, ready for LayoutLM-family models (LayoutLMv3, LiLT, ...). Built with `python -m dataset_loader`.",
        "",
        "A model fine-tuned on it also inherits the licence of its base checkpoint: LiLT "
        "(`SCUT-DLVCLab/lilt-roberta-en-base`) and LayoutLM v1 weights are MIT (commercial use allowed); LayoutLMv2, "
        "LayoutXLM and LayoutLMv3 weights are CC BY-NC-SA 4.0 (non-commercial).",
        "",
    ]
    if funsd:
        lines += [
            "Converted from **FUNSD** (Jaume, Ekenel, Thiran, ICDAR-OST 2019): 199 scanned forms. "
            "License: research, non-commercial use only; cite the paper.",
            "",
        ]
    if repo_id:
        lines += ["```python", "from datasets import load_dataset", "", f'dataset = load_dataset("{repo_id}")', "```"]
        lines += [""]

    lines += ["## Labels", "", "| id | label |", "|---:|---|"]
    lines += [f"| {index} | `{label}` |" for index, label in enumerate(labels)]
    lines += ["", "## Counts", "", "| split | documents | words | " + " | ".join(types) + " |"]
    lines += ["|---|---:|---:|" + "---:|" * len(types)]
    for split, numbers in statistics.items():
        entity_counts = " | ".join(str(numbers["entities"].get(name, 0)) for name in types)
        lines.append(f"| {split} | {numbers['documents']} | {numbers['words']} | {entity_counts} |")
    lines += ["", "Entity columns count entities (B- spans), not words.", ""]

    lines += [
        "## Features",
        "",
        "| column | type | meaning |",
        "|---|---|---|",
        "| `id` | string | document id (annotation file name without extension) |",
        "| `words` | list of string | the words of the page, in reading order |",
        "| `bboxes` | list of [x0, y0, x1, y1] int32 | word boxes in pixels of the stored (resized) `image` |",
        "| `segment_bboxes` | list of [x0, y0, x1, y1] int32 | per word, the box of its line or entity segment |",
        "| `ner_tags` | list of ClassLabel | one BIO tag per word |",
        "| `image` | Image | the page, RGB, resized |",
        "",
        "## Preprocessing",
        "",
    ]
    if preprocessing:
        width, height = preprocessing["resize"]
        keep_aspect, pad = preprocessing["keep_aspect"], preprocessing.get("pad", True)
        if keep_aspect and not pad:
            how = f"scaled to fit inside **{width}x{height}** (width x height) pixels, aspect ratio kept"
        elif keep_aspect:
            how = (f"scaled to fit inside **{width}x{height}** (width x height) pixels and padded with white on the "
                   "right and bottom (aspect ratio kept)")
        else:
            how = f"stretched to exactly **{width}x{height}** (width x height) pixels"
        settings = json.dumps({"resize": [width, height], "keep_aspect": keep_aspect, "pad": pad})
        lines += [
            f"Every page was {how}; boxes were scaled with the page. Resize pages the same way at inference "
            f"(`{settings}`).",
            "",
        ]
    else:
        lines += ["Resize settings unknown (no preprocessing.json).", ""]
    if report:
        lines += [
            "## Build report",
            "",
            f"- documents found: {report.get('documents_found')}, kept: {report.get('documents_kept')}, "
            f"skipped (invalid): {report.get('documents_skipped')}",
            f"- empty documents (no words, kept): {report.get('empty_documents')}",
            f"- blank words dropped: {report.get('dropped_blank_words')}",
            "",
        ]
    lines += ["## Annotation format", ""]
    if funsd:
        lines += [
            "Source: FUNSD JSON (`{\"form\": [entity, ...]}`). Each entity's first word is tagged `B-` and the "
            "rest `I-` with its label (`question`, `answer`, `header`; `other` is `O`); a word's segment box is "
            "its entity's box. Words with empty text were dropped (counted above).",
            "",
        ]
    else:
        lines += [_format_text(), ""]
    return "\n".join(lines)


def _format_text() -> str:
    """FORMAT.md with its headings one level down, to sit under "Annotation format"."""
    try:
        text = FORMAT_FILE.read_text(encoding="utf-8")
    except OSError:
        return "One JSON file per page with `image`, `words`, `boxes`, `labels` and optional `segment_boxes`."
    lines = [("#" + line) if line.startswith("#") else line for line in text.splitlines()]
    return "\n".join(lines[1:] if lines and lines[0].startswith("## ") else lines).strip()


def push_dataset(
    dataset_path: str | Path, repo_id: str, private: bool = False, token: str | None = None
) -> DatasetCard:
    """Push a dataset saved by this package to the Hub as parquet, then its dataset card.

    The token comes from `token`, else HF_TOKEN in the environment, else a saved `hf auth login`.
    """
    token = token or os.environ.get("HF_TOKEN") or get_token()
    if not token:
        raise PushError("no Hugging Face token: set HF_TOKEN (a write token) or run `hf auth login`")
    dataset = load_from_disk(str(dataset_path))
    if not isinstance(dataset, DatasetDict):
        raise PushError(f"{dataset_path} holds a single Dataset; expected a DatasetDict saved by dataset_loader")
    card = make_dataset_card(dataset, load_preprocessing(dataset_path), read_report(dataset_path), repo_id)
    dataset.push_to_hub(repo_id, private=private, token=token, commit_message="Upload dataset (dataset_loader)")
    card.push_to_hub(repo_id, token=token, commit_message="Add dataset card (dataset_loader)")
    return card
