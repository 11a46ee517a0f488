"""Layout rules applied to word predictions.

One rule on by default, `currency_amount`:

* a currency marker written as its own word ("USD", "EUR", "$", "€") and the number beside it on the same line
  ("USD 6,499.50", "2.506,20 €") are one amount: when the model gives them different labels, or tags only one of
  them, both take the label of the word it is surer of (a currency marker is never a value on its own, so a
  number tagged O joins the marker's entity). Without it "USD" alone becomes the subtotal, and the number is lost
  or becomes another field.

Two rules off by default (`RuleConfig`):

* `total_keyword`: a word predicted as a total-like field (default: the entity types whose name contains
  "total") must lie right of (same line) or below (same column) another word that matches a total keyword
  (default "total", "amount", "rm", "$"); otherwise it becomes "O".
* `company_first_lines`: a word predicted as a company/vendor name (default: entity types whose name
  contains "company" or "vendor") must lie on one of the first N visual lines of the page (default 2);
  otherwise it becomes "O".

After a rule removes words, an entity that lost its first word starts again with B-.

Used by predict.py (`--rules total_keyword,company_first_lines` or `--rules rules.json`) and by the
pipeline (`pipe(image, rules="total_keyword")`). Measure the effect on a test set with `layoutkit postprocess`
(layoutkit/apps/rule_measurement.py).

Copied into saved checkpoints beside the custom pipeline: the rules import only the standard library.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, fields
from typing import Iterable, Sequence

from .boxes import group_lines, union_box
from .fields import is_bare_currency, parse_amount
from .labels import OUTSIDE, entity_type

RULES = ("currency_amount", "total_keyword", "company_first_lines")
DEFAULT_RULES = ("currency_amount",)
DEFAULT_TOTAL_KEYWORDS = ("total", "amount", "rm", "$")
# Characters stripped from both ends of a word before it is compared with a keyword ("Total:" -> "total").
_PUNCTUATION = " \t:;,.()[]{}*#'\"-_/|"


@dataclass
class RuleConfig:
    """Which rules run and their settings: `DEFAULT_RULES` unless `rules` says otherwise; `rules=()` runs none.

    `total_types` / `company_types`: the entity types each rule applies to; None picks the types whose
    name contains "total" / "company" or "vendor" (case-insensitive).
    """

    rules: tuple[str, ...] = DEFAULT_RULES
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
        """A config from None (the default rules), a RuleConfig, a dict of fields, a list of rule names, a
        comma-separated string of rule names ("all" for every rule, "none" for none) or the path of a JSON file
        holding a dict of fields."""
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
            name = value.strip()
            config = {"rules": RULES if name == "all" else () if name == "none" else value}
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


def _is_number(word: str) -> bool:
    return any(ch.isdigit() for ch in word) and parse_amount(word)[0] is not None


def _one_entity(tags, left: int, right: int) -> bool:
    """Whether the neighbouring words `left` and `left + 1` are in one entity."""
    return (tags[left] != OUTSIDE and tags[right].startswith("I-")
            and entity_type(tags[right]) == entity_type(tags[left]))


def currency_amount_rule(words, boxes, tags, scores=None) -> list[str]:
    """A bare currency word and the number next to it on the same line get one label (module docstring)."""
    tags = list(tags)
    scores = scores if scores is not None else [1.0] * len(tags)
    for i in range(len(words) - 1):
        j = i + 1
        if is_bare_currency(words[i]) and _is_number(words[j]):
            marker, number = i, j
        elif _is_number(words[i]) and is_bare_currency(words[j]):
            marker, number = j, i
        else:
            continue
        first, second = tags[i], tags[j]
        if first == OUTSIDE and second == OUTSIDE or not same_line(boxes[i], boxes[j]):
            continue
        if _one_entity(tags, i, j):
            continue
        # "51,74 € 1.034,80 €": a marker already one entity with the number on its other side stays there.
        other = 2 * marker - number
        if 0 <= other < len(words) and _is_number(words[other]) and _one_entity(tags, min(marker, other),
                                                                                 max(marker, other)):
            continue
        if tags[number] == OUTSIDE:
            label = entity_type(tags[marker])  # a currency is never a value on its own
        elif tags[marker] == OUTSIDE:
            label = entity_type(tags[number])
        else:
            label = entity_type(tags[i] if scores[i] >= scores[j] else tags[j])
        # The pair keeps the place of its first word in an entity that runs on before it ("Total due USD 5").
        tags[i] = first if first != OUTSIDE and entity_type(first) == label else "B-" + label
        tags[j] = "I-" + label
        # A word that continued the number's old entity now starts it; other words keep the model's tags.
        if j + 1 < len(tags) and tags[j + 1].startswith("I-") and entity_type(tags[j + 1]) != label:
            tags[j + 1] = "B-" + tags[j + 1][2:]
    return tags


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


def apply_rules(words, boxes, tags, config=None, line_ids=None, scores=None) -> list[str]:
    """Apply the rules of `config` (anything `RuleConfig.from_value` takes) to one page's word tags.

    `boxes` are the words' pixel boxes on one page (any consistent pixel space); `line_ids` the OCR line
    of each word (optional: lines are rebuilt from the boxes otherwise); `scores` the model's probability of
    each word's tag (optional: ties otherwise).
    """
    config = RuleConfig.from_value(config)
    tags = list(tags)
    if not config.rules or not tags:
        return tags
    present = {entity_type(t) for t in tags if t != OUTSIDE}
    for rule in config.rules:
        if rule == "currency_amount":
            tags = currency_amount_rule(words, boxes, tags, scores)
        elif rule == "total_keyword":
            tags = total_keyword_rule(
                words, boxes, tags, config.total_keywords, config.types_for(rule, present)
            )
        elif rule == "company_first_lines":
            tags = company_first_lines_rule(
                boxes, tags, line_ids, config.company_lines, config.types_for(rule, present)
            )
    return tags
