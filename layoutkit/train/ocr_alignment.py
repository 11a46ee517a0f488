"""Match OCR words to reference (gold) words by box overlap and text, to train on what inference will see and to
measure OCR quality.

* `transfer_labels`: carry gold BIO labels onto the OCR words of the same page. Every OCR word takes the entity
  of the gold word it overlaps most (weighted by text similarity; entity words before O words), so a word that
  OCR splits ("INV-" "0042") or merges ("Total:$12.00") still gets the right tag; BIO is rebuilt over the OCR
  reading order (each contiguous run of an entity's words starts with B-). The `TransferStats` say, per entity
  type, how many gold entities came through with exactly their text, partly, or not at all.
* `overlapping_pairs` / `ocr_quality`: word recall and precision (same text within overlapping boxes) and character
  error rate of matched words, for `benchmarks/ocr_quality.py`.

Standard library only.
"""

from __future__ import annotations

import bisect
import difflib
from dataclasses import dataclass, field
from typing import Sequence

from ..pipelines.labels import OUTSIDE, bio_spans

# An OCR box and a gold box belong together when their intersection covers this share of the smaller box.
MIN_OVERLAP = 0.5


def intersection(a, b) -> float:
    return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))


def area(box) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


def overlap(a, b) -> float:
    """Intersection over the smaller box's area: 1.0 when one box lies inside the other, so a box that OCR
    merged or split still matches each of its parts."""
    smaller = min(area(a), area(b))
    return intersection(a, b) / smaller if smaller > 0 else 0.0


def similarity(a: str, b: str) -> float:
    return difflib.SequenceMatcher(None, a.lower(), b.lower(), autojunk=False).ratio()


def overlapping_pairs(boxes_a: Sequence, boxes_b: Sequence, min_overlap: float = MIN_OVERLAP
                      ) -> list[tuple[int, int, float]]:
    """(i, j, overlap) for every pair of boxes of the two lists that overlap by at least `min_overlap`. Boxes are
    bucketed by row band first, so a page costs about n log n, not n x m."""
    pairs = []
    order = sorted(range(len(boxes_b)), key=lambda j: boxes_b[j][1])
    tops = [boxes_b[j][1] for j in order]
    for i, a in enumerate(boxes_a):
        end = bisect.bisect_right(tops, a[3])
        for position in range(end):
            j = order[position]
            b = boxes_b[j]
            if b[3] < a[1]:
                continue
            value = overlap(a, b)
            if value >= min_overlap:
                pairs.append((i, j, value))
    return pairs


# ------------------------------------------------------------------------------------------- label transfer
@dataclass
class TransferStats:
    """Per entity type: gold entities, and how many came through OCR exactly (same text, spaces ignored),
    partly (some words tagged, text differs) or were lost (no OCR word tagged with them)."""

    entities: dict[str, int] = field(default_factory=dict)
    exact: dict[str, int] = field(default_factory=dict)
    partial: dict[str, int] = field(default_factory=dict)
    lost: dict[str, int] = field(default_factory=dict)
    lost_entities: list[dict] = field(default_factory=list)  # {"label", "text"} of each lost or partial entity

    def add(self, other: "TransferStats") -> None:
        for name in ("entities", "exact", "partial", "lost"):
            mine = getattr(self, name)
            for label, count in getattr(other, name).items():
                mine[label] = mine.get(label, 0) + count
        self.lost_entities.extend(other.lost_entities)

    def to_dict(self) -> dict[str, dict[str, int]]:
        return {
            label: {"entities": total, "exact": self.exact.get(label, 0), "partial": self.partial.get(label, 0),
                    "lost": self.lost.get(label, 0)}
            for label, total in sorted(self.entities.items())
        }


def _squeeze(text: str) -> str:
    return "".join(text.split())


def transfer_labels(gold_words: Sequence[str], gold_boxes: Sequence, gold_labels: Sequence[str],
                    ocr_words: Sequence[str], ocr_boxes: Sequence) -> tuple[list[str], TransferStats]:
    """BIO labels for the OCR words of a page from its gold words, and what survived (see module docstring)."""
    entity_of_word: list[int | None] = [None] * len(gold_words)
    spans = bio_spans(list(gold_labels))
    for number, span in enumerate(spans):
        for index in range(span.start, span.end):
            entity_of_word[index] = number

    # The gold word each OCR word belongs to: the largest overlap, weighted by how alike the texts are. An OCR
    # word covering an entity word and other words ("Total:$12.00") carries the entity: tagged O, the value
    # would be lost; tagged with the entity, its value is still found (and normalised) at inference.
    best: dict[int, tuple[bool, float, int]] = {}
    for i, j, value in overlapping_pairs(ocr_boxes, gold_boxes):
        candidate = (entity_of_word[j] is not None, value * (0.5 + 0.5 * similarity(ocr_words[i], gold_words[j])), j)
        if i not in best or candidate[:2] > best[i][:2]:
            best[i] = candidate
    ocr_entity = [entity_of_word[best[i][2]] if i in best else None for i in range(len(ocr_words))]

    labels, previous = [], None
    for entity in ocr_entity:
        if entity is None:
            labels.append(OUTSIDE)
        else:
            labels.append(("I-" if entity == previous else "B-") + spans[entity].label)
        previous = entity

    stats = TransferStats()
    for number, span in enumerate(spans):
        label = span.label
        stats.entities[label] = stats.entities.get(label, 0) + 1
        gold_text = " ".join(gold_words[span.start : span.end])
        found = " ".join(word for word, entity in zip(ocr_words, ocr_entity) if entity == number)
        if not found:
            kind = "lost"
        elif _squeeze(found) == _squeeze(gold_text):
            kind = "exact"
        else:
            kind = "partial"
        counts = getattr(stats, kind)
        counts[label] = counts.get(label, 0) + 1
        if kind != "exact":
            stats.lost_entities.append({"label": label, "gold": gold_text, "ocr": found, "kind": kind})
    return labels, stats


# --------------------------------------------------------------------------------------------- OCR quality
@dataclass
class QualityCounts:
    """Word-level OCR quality against reference words: a reference word is found when an OCR word with the same
    text overlaps its box; character errors are counted on overlapping pairs."""

    reference_words: int = 0
    ocr_words: int = 0
    found: int = 0  # reference words matched by an OCR word with the same text
    correct: int = 0  # OCR words that match a reference word with the same text
    char_errors: int = 0  # edit distance summed over the best-overlapping pairs
    chars: int = 0  # reference characters of those pairs

    def add(self, other: "QualityCounts") -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    @property
    def recall(self) -> float:
        return self.found / self.reference_words if self.reference_words else 0.0

    @property
    def precision(self) -> float:
        return self.correct / self.ocr_words if self.ocr_words else 0.0

    @property
    def cer(self) -> float:
        return self.char_errors / self.chars if self.chars else 0.0


def edit_distance(a: str, b: str) -> int:
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, start=1):
        current = [i]
        for j, char_b in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b)))
        previous = current
    return previous[-1]


def ocr_quality(reference_words: Sequence[str], reference_boxes: Sequence, ocr_words: Sequence[str],
                ocr_boxes: Sequence, min_overlap: float = MIN_OVERLAP) -> QualityCounts:
    """Quality counts of one page (see `QualityCounts`)."""
    counts = QualityCounts(reference_words=len(reference_words), ocr_words=len(ocr_words))
    pairs = overlapping_pairs(ocr_boxes, reference_boxes, min_overlap)
    found_reference, correct_ocr = set(), set()
    best_for_reference: dict[int, tuple[float, int]] = {}
    for i, j, value in pairs:
        if ocr_words[i] == reference_words[j]:
            found_reference.add(j)
            correct_ocr.add(i)
        if j not in best_for_reference or value > best_for_reference[j][0]:
            best_for_reference[j] = (value, i)
    counts.found, counts.correct = len(found_reference), len(correct_ocr)
    for j, (_, i) in best_for_reference.items():
        counts.char_errors += edit_distance(ocr_words[i], reference_words[j])
        counts.chars += len(reference_words[j])
    return counts
