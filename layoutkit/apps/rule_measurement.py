"""`layoutkit postprocess`: measure the post-processing rules (layoutkit/pipelines/postprocess.py) on a run's test
predictions: entity precision, recall and F1 per label before and after the rules, as a Markdown table.

    layoutkit postprocess --predictions RUN/test_predictions.jsonl --dataset_path DATA

The scores are seqeval's, as in training (layoutkit/metrics.py).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass, field
from typing import Iterable, Sequence

from ..cli import program_name
from ..metrics import seqeval_scores
from ..pipelines.postprocess import RULES, RuleConfig, apply_rules

# A label the rules' output has no entity of.
NO_ENTITIES = {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}


def entity_scores(references: Sequence[Sequence[str]], predictions: Sequence[Sequence[str]]) -> dict[str, dict]:
    """Exact-span entity precision, recall, F1 and support per type, plus "overall": seqeval's (conlleval reading,
    the same numbers as training's metrics)."""
    scores = seqeval_scores(references, predictions)
    table = {name: {"precision": value["precision"], "recall": value["recall"], "f1": value["f1"],
                    "support": value["number"]} for name, value in scores.items() if isinstance(value, dict)}
    table["overall"] = {"precision": scores["overall_precision"], "recall": scores["overall_recall"],
                        "f1": scores["overall_f1"], "support": sum(value["support"] for value in table.values())}
    return table


@dataclass
class RuleEffect:
    """Entity precision/recall per type before and after the rules, and how many words they changed."""

    before: dict[str, dict] = field(default_factory=dict)  # entity_scores of the predictions
    after: dict[str, dict] = field(default_factory=dict)  # and of the predictions after the rules
    words_changed: int = 0
    documents: int = 0

    def to_dict(self) -> dict:
        table = {}
        for label in self.before:
            b, a = self.before[label], self.after.get(label, NO_ENTITIES)
            table[label] = {
                "support": b["support"],
                "precision_before": b["precision"], "precision_after": a["precision"],
                "recall_before": b["recall"], "recall_after": a["recall"],
                "f1_before": b["f1"], "f1_after": a["f1"],
            }
        return {"documents": self.documents, "words_changed": self.words_changed, "labels": table}

    def to_markdown(self) -> str:
        rows = [
            "| label | support | precision before | precision after | recall before | recall after "
            "| F1 before | F1 after |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for label, v in self.to_dict()["labels"].items():
            name = f"**{label}**" if label == "overall" else label
            rows.append(
                f"| {name} | {v['support']} | {v['precision_before']:.4f} | {v['precision_after']:.4f} "
                f"| {v['recall_before']:.4f} | {v['recall_after']:.4f} | {v['f1_before']:.4f} | {v['f1_after']:.4f} |"
            )
        rows.append("")
        rows.append(f"{self.documents} documents, {self.words_changed} word predictions changed by the rules.")
        return "\n".join(rows)


def measure_rules(records: Iterable[dict], boxes_by_id: dict, config=None, line_ids_by_id: dict | None = None) -> RuleEffect:
    """Apply the rules to prediction records (`{"id", "words", "labels", "predictions"}` as in
    test_predictions.jsonl) and compare entity precision/recall before and after.

    `boxes_by_id[id]` gives the words' boxes of each document (e.g. the dataset's `bboxes`).
    """
    config = RuleConfig.from_value(config)
    gold, before, after = [], [], []
    changed = 0
    for record in records:
        if record["id"] not in boxes_by_id:
            raise KeyError(f"document {record['id']!r} of the predictions is not in the dataset")
        boxes = boxes_by_id[record["id"]]
        if len(boxes) != len(record["words"]):
            raise ValueError(
                f"document {record['id']!r}: {len(record['words'])} predicted words but {len(boxes)} boxes in the dataset"
            )
        lines = (line_ids_by_id or {}).get(record["id"])
        new = apply_rules(record["words"], boxes, record["predictions"], config, lines)
        changed += sum(a != b for a, b in zip(new, record["predictions"]))
        gold.append(record["labels"])
        before.append(record["predictions"])
        after.append(new)
    return RuleEffect(entity_scores(gold, before), entity_scores(gold, after), changed, len(gold))


def read_predictions(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        prog=program_name("python -m layoutkit.apps.rule_measurement"),
        description="Measure the post-processing rules on a run's test predictions: entity precision and "
        "recall per label before and after, as a Markdown table.",
    )
    parser.add_argument("--predictions", required=True, help="test_predictions.jsonl written by run_invoice_ner.py")
    parser.add_argument("--dataset_path", required=True, help="the saved dataset the run was tested on (for boxes)")
    parser.add_argument(
        "--rules", default="all",
        help='comma-separated rules ("all" = %s) or a JSON file of RuleConfig fields' % ",".join(RULES),
    )
    parser.add_argument("--total_keywords", help="comma-separated keywords for total_keyword")
    parser.add_argument("--total_types", help="comma-separated entity types total_keyword applies to")
    parser.add_argument("--company_lines", type=int, help="lines company_first_lines allows (default 2)")
    parser.add_argument("--company_types", help="comma-separated entity types company_first_lines applies to")
    parser.add_argument("--box_column", default="bboxes", help="dataset column holding the word boxes")
    parser.add_argument("--output_json", help="also write the numbers to this JSON file")
    args = parser.parse_args(argv)

    def split(text):
        return None if text is None else tuple(part.strip() for part in text.split(",") if part.strip())

    config = RuleConfig.from_value(
        args.rules, total_keywords=split(args.total_keywords), total_types=split(args.total_types),
        company_lines=args.company_lines, company_types=split(args.company_types),
    )
    from datasets import DatasetDict, load_from_disk
    dataset = load_from_disk(args.dataset_path)
    splits = dataset.values() if isinstance(dataset, DatasetDict) else [dataset]
    boxes_by_id = {}
    for part in splits:
        for row_id, boxes in zip(part["id"], part[args.box_column]):
            boxes_by_id[row_id] = boxes
    effect = measure_rules(read_predictions(args.predictions), boxes_by_id, config)
    print(f"Rules: {', '.join(config.rules) or 'none'}\n")
    print(effect.to_markdown())
    if args.output_json:
        with open(args.output_json, "w", encoding="utf-8") as handle:
            json.dump({"config": asdict(config), **effect.to_dict()}, handle, indent=2)


if __name__ == "__main__":
    main()
