"""Optional layout rules applied to word predictions, and a measurement of their effect.

Two rules, both off by default and configurable (`RuleConfig`):

* `total_keyword`: a word predicted as a total-like field (default: the entity types whose name contains
  "total") must lie right of (same line) or below (same column) another word that matches a total keyword
  (default "total", "amount", "rm", "$"); otherwise it becomes "O".
* `company_first_lines`: a word predicted as a company/vendor name (default: entity types whose name
  contains "company" or "vendor") must lie on one of the first N visual lines of the page (default 2);
  otherwise it becomes "O".

After a rule removes words, an entity that lost its first word starts again with B-.

Used by predict.py (`--rules total_keyword,company_first_lines` or `--rules rules.json`) and by the
pipeline (`pipe(image, rules="total_keyword")`). Measure the effect on a test set:

    python -m layoutkit.pipelines.postprocess --predictions RUN/test_predictions.jsonl --dataset_path DATA

Copied into saved checkpoints beside the custom pipeline: the rules import only the standard library.
The measurement command reads the dataset with `datasets`, imported inside `main()`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from dataclasses import asdict, dataclass, field, fields
from typing import Iterable, Sequence

from .boxes import group_lines, union_box
from .labels import OUTSIDE, bio_spans, entity_type

RULES = ("total_keyword", "company_first_lines")
DEFAULT_TOTAL_KEYWORDS = ("total", "amount", "rm", "$")
# Characters stripped from both ends of a word before it is compared with a keyword ("Total:" -> "total").
_PUNCTUATION = " \t:;,.()[]{}*#'\"-_/|"


@dataclass
class RuleConfig:
    """Which rules run and their settings. `rules=()` (the default) changes nothing.

    `total_types` / `company_types`: the entity types each rule applies to; None picks the types whose
    name contains "total" / "company" or "vendor" (case-insensitive).
    """

    rules: tuple[str, ...] = ()
    total_keywords: tuple[str, ...] = DEFAULT_TOTAL_KEYWORDS
    total_types: tuple[str, ...] | None = None
    company_lines: int = 2
    company_types: tuple[str, ...] | None = None

    def __post_init__(self):
        if isinstance(self.rules, str):
            self.rules = tuple(name.strip() for name in self.rules.split(",") if name.strip())
        self.rules = tuple(self.rules)
        unknown = sorted(set(self.rules) - set(RULES))
        if unknown:
            raise ValueError(f"unknown rule(s) {unknown}; available: {', '.join(RULES)}")
        self.total_keywords = tuple(self.total_keywords)
        if self.total_types is not None:
            self.total_types = tuple(self.total_types)
        if self.company_types is not None:
            self.company_types = tuple(self.company_types)
        if int(self.company_lines) < 1:
            raise ValueError(f"company_lines must be at least 1, got {self.company_lines}")
        self.company_lines = int(self.company_lines)

    @classmethod
    def from_value(cls, value=None, **overrides) -> "RuleConfig":
        """A config from None, a RuleConfig, a dict of fields, a list of rule names, a comma-separated
        string of rule names ("all" for every rule) or the path of a JSON file holding a dict of fields."""
        if isinstance(value, RuleConfig):
            config = asdict(value)
        elif value is None:
            config = {}
        elif isinstance(value, dict):
            config = dict(value)
        elif isinstance(value, str) and (value.endswith(".json") or os.path.isfile(value)):
            with open(value, encoding="utf-8") as handle:
                config = json.load(handle)
            if not isinstance(config, dict):
                raise ValueError(f"{value}: a rules file holds a JSON object such as {{\"rules\": [\"total_keyword\"]}}")
        elif isinstance(value, str):
            config = {"rules": RULES if value.strip() == "all" else value}
        elif isinstance(value, (list, tuple)):
            config = {"rules": tuple(value)}
        else:
            raise TypeError(f"rules: expected a name list, dict, JSON path or RuleConfig, got {type(value).__name__}")
        config.update({k: v for k, v in overrides.items() if v is not None})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ValueError(f"unknown rule settings {unknown}; known: {sorted(known)}")
        return cls(**config)

    def types_for(self, rule: str, entity_types: Iterable[str]) -> set[str]:
        if rule == "total_keyword":
            chosen, needles = self.total_types, ("total",)
        else:
            chosen, needles = self.company_types, ("company", "vendor")
        if chosen is not None:
            return set(chosen)
        return {name for name in entity_types if any(needle in name.lower() for needle in needles)}


# --------------------------------------------------------------------------------------------- geometry
def _height(box) -> float:
    return max(1.0, box[3] - box[1])


def _vertical_overlap(a, b) -> float:
    return min(a[3], b[3]) - max(a[1], b[1])


def same_line(a, b) -> bool:
    """Boxes overlap vertically by at least half the smaller height."""
    return _vertical_overlap(a, b) >= 0.5 * min(_height(a), _height(b))


def right_of(value, keyword) -> bool:
    """`value` sits on the keyword's line, to its right."""
    return same_line(value, keyword) and (value[0] + value[2]) / 2 > (keyword[0] + keyword[2]) / 2


def below(value, keyword) -> bool:
    """`value` lies lower on the page than the keyword and shares part of its column."""
    return (value[1] + value[3]) / 2 > keyword[3] and min(value[2], keyword[2]) - max(value[0], keyword[0]) > 0


def visual_rows(boxes: Sequence, line_ids: Sequence[int] | None = None) -> list[int]:
    """Row number (0 = top) of every word: lines (OCR lines, or `group_lines` when not given) sorted by
    their top edge, lines overlapping vertically by half a line height merged into one visual row."""
    if line_ids is None:
        line_ids = group_lines(boxes)
    members: dict[int, list] = {}
    for box, line in zip(boxes, line_ids):
        members.setdefault(line, []).append(box)
    line_boxes = {line: union_box(group) for line, group in members.items()}
    row_of_line: dict[int, int] = {}
    row_box = None
    row = -1
    for line in sorted(line_boxes, key=lambda name: (line_boxes[name][1], line_boxes[name][0])):
        box = line_boxes[line]
        if row_box is not None and same_line(box, row_box):
            row_box = union_box([row_box, box])
        else:
            row += 1
            row_box = list(box)
        row_of_line[line] = row
    return [row_of_line[line] for line in line_ids]


# ----------------------------------------------------------------------------------------------- rules
def matches_keyword(word: str, keyword: str) -> bool:
    """Case-insensitive match of a word against a keyword, ignoring surrounding punctuation.

    Keywords of 3+ letters also match as a part of the word ("Subtotal", "Sub-total", "TOTAL:",
    "Amount(RM)"); short or symbolic keywords ("rm", "$") match the whole word or its start when a
    non-letter follows ("$", "RM", "RM12.50", "$12.00").
    """
    keyword = keyword.lower().strip()
    text = word.lower().strip(_PUNCTUATION.replace(keyword, "") if keyword else _PUNCTUATION)
    if not keyword or not text:
        return False
    if text == keyword:
        return True
    if keyword.isalpha() and len(keyword) >= 3:
        return text.startswith(keyword) or text.endswith(keyword) or keyword in re.split(r"[^a-z]+", text)
    return text.startswith(keyword) and not text[len(keyword)].isalpha()


def repair_bio(tags: Sequence[str]) -> list[str]:
    """Turn an I-x that no longer follows B-x/I-x into B-x."""
    repaired, previous = [], OUTSIDE
    for tag in tags:
        if tag.startswith("I-") and entity_type(previous) != tag[2:]:
            tag = "B-" + tag[2:]
        repaired.append(tag)
        previous = tag
    return repaired


def total_keyword_rule(words, boxes, tags, keywords=DEFAULT_TOTAL_KEYWORDS, types=None) -> list[str]:
    """Words tagged with one of `types` keep their tag only when they are right of or below another word
    matching one of `keywords`."""
    tags = list(tags)
    if types is None:
        types = RuleConfig().types_for("total_keyword", {entity_type(t) for t in tags if t != OUTSIDE})
    keyword_positions = [i for i, word in enumerate(words) if any(matches_keyword(word, k) for k in keywords)]
    for i, tag in enumerate(tags):
        if tag == OUTSIDE or entity_type(tag) not in types:
            continue
        anchored = any(
            j != i and (right_of(boxes[i], boxes[j]) or below(boxes[i], boxes[j])) for j in keyword_positions
        )
        if not anchored:
            tags[i] = OUTSIDE
    return repair_bio(tags)


def company_first_lines_rule(boxes, tags, line_ids=None, max_lines: int = 2, types=None) -> list[str]:
    """Words tagged with one of `types` keep their tag only on the first `max_lines` visual lines."""
    tags = list(tags)
    if types is None:
        types = RuleConfig().types_for("company_first_lines", {entity_type(t) for t in tags if t != OUTSIDE})
    if not any(tag != OUTSIDE and entity_type(tag) in types for tag in tags):
        return tags
    rows = visual_rows(boxes, line_ids)
    for i, tag in enumerate(tags):
        if tag != OUTSIDE and entity_type(tag) in types and rows[i] >= max_lines:
            tags[i] = OUTSIDE
    return repair_bio(tags)


def apply_rules(words, boxes, tags, config=None, line_ids=None) -> list[str]:
    """Apply the rules of `config` (anything `RuleConfig.from_value` takes) to one page's word tags.

    `boxes` are the words' pixel boxes on one page (any consistent pixel space); `line_ids` the OCR line
    of each word (optional: lines are rebuilt from the boxes otherwise).
    """
    config = RuleConfig.from_value(config)
    tags = list(tags)
    if not config.rules or not tags:
        return tags
    present = {entity_type(t) for t in tags if t != OUTSIDE}
    for rule in config.rules:
        if rule == "total_keyword":
            tags = total_keyword_rule(
                words, boxes, tags, config.total_keywords, config.types_for(rule, present)
            )
        elif rule == "company_first_lines":
            tags = company_first_lines_rule(
                boxes, tags, line_ids, config.company_lines, config.types_for(rule, present)
            )
    return tags


# ----------------------------------------------------------------------------------------- measurement
@dataclass
class Counts:
    true_positives: int = 0
    false_positives: int = 0
    false_negatives: int = 0

    @property
    def precision(self) -> float:
        found = self.true_positives + self.false_positives
        return self.true_positives / found if found else 0.0

    @property
    def recall(self) -> float:
        gold = self.true_positives + self.false_negatives
        return self.true_positives / gold if gold else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


def entity_counts(references: Sequence[Sequence[str]], predictions: Sequence[Sequence[str]]) -> dict[str, Counts]:
    """Exact-span entity counts per type (conlleval reading, as seqeval's default mode), plus "overall"."""
    counts: dict[str, Counts] = {}
    overall = Counts()
    for gold_tags, pred_tags in zip(references, predictions):
        gold = {(s.label, s.start, s.end) for s in bio_spans(gold_tags)}
        pred = {(s.label, s.start, s.end) for s in bio_spans(pred_tags)}
        for label, *_ in gold | pred:
            counts.setdefault(label, Counts())
        for span in gold & pred:
            counts[span[0]].true_positives += 1
        for span in pred - gold:
            counts[span[0]].false_positives += 1
        for span in gold - pred:
            counts[span[0]].false_negatives += 1
    for value in counts.values():
        overall.true_positives += value.true_positives
        overall.false_positives += value.false_positives
        overall.false_negatives += value.false_negatives
    return {**dict(sorted(counts.items())), "overall": overall}


@dataclass
class RuleEffect:
    """Entity precision/recall per type before and after the rules, and how many words they changed."""

    before: dict[str, Counts] = field(default_factory=dict)
    after: dict[str, Counts] = field(default_factory=dict)
    words_changed: int = 0
    documents: int = 0

    def to_dict(self) -> dict:
        table = {}
        for label in self.before:
            b, a = self.before[label], self.after.get(label, Counts())
            table[label] = {
                "support": b.true_positives + b.false_negatives,
                "precision_before": b.precision, "precision_after": a.precision,
                "recall_before": b.recall, "recall_after": a.recall,
                "f1_before": b.f1, "f1_after": a.f1,
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
    return RuleEffect(entity_counts(gold, before), entity_counts(gold, after), changed, len(gold))


def read_predictions(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        # "layoutkit postprocess" through the `layoutkit` command (layoutkit/cli.py, which this module, shipped in
        # checkpoints, does not import).
        prog=sys.argv[0] if sys.argv[0].startswith("layoutkit ") else "python -m layoutkit.pipelines.postprocess",
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
    try:  # only the measurement needs `datasets`; inside `try` so checkpoints never require it
        from datasets import DatasetDict, load_from_disk
    except ImportError as error:
        raise SystemExit(f"measuring the rules needs the datasets package: {error}")
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
