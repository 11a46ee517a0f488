"""BIO tags: validation, label lists and entity spans.

Copied into saved checkpoints beside the custom pipeline: standard library only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

OUTSIDE = "O"


def is_bio_tag(tag: str) -> bool:
    """True for "O", or for "B-"/"I-" and an entity type. The type must be non-empty, have no whitespace at either end
    ("B- " or "B-total " would become label-list entries of their own), and not start with a prefix itself
    ("B-B-total" is a doubled prefix, not a type)."""
    if tag == OUTSIDE:
        return True
    if not isinstance(tag, str) or tag[:2] not in ("B-", "I-"):
        return False
    name = tag[2:]
    return bool(name) and name == name.strip() and name[:2] not in ("B-", "I-")


def entity_type(tag: str) -> str | None:
    return None if tag == OUTSIDE else tag[2:]


def label_list_from_types(entity_types: Iterable[str]) -> list[str]:
    """The canonical label order: "O", then B-/I- per entity type, types sorted."""
    labels = [OUTSIDE]
    for name in sorted(set(entity_types)):
        labels += [f"B-{name}", f"I-{name}"]
    return labels


def label_list_from_tags(tags: Iterable[str]) -> list[str]:
    return label_list_from_types(entity_type(tag) for tag in tags if tag != OUTSIDE)


@dataclass(frozen=True)
class Span:
    """An entity: words [start, end) of one type."""

    label: str
    start: int
    end: int


def bio_spans(tags: Sequence[str]) -> list[Span]:
    """Entity spans of a BIO sequence. A stray I- (no B- before it, or after another type) opens a new
    span, as seqeval's default (conlleval) mode reads it."""
    spans: list[Span] = []
    current: str | None = None
    start = 0
    for index, tag in enumerate(list(tags) + [OUTSIDE]):
        name = entity_type(tag)
        continues = tag.startswith("I-") and name == current
        if current is not None and not continues:
            spans.append(Span(current, start, index))
            current = None
        if name is not None and not continues:
            current, start = name, index
    return spans
