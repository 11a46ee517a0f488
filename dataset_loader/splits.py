"""Seeded, deterministic train/validation/test assignment of document ids."""

from __future__ import annotations

import itertools
import random
from typing import Iterable, Sequence

from dataset_loader.features import SPLITS

DEFAULT_RATIOS = (0.8, 0.1, 0.1)  # train, validation, test: the default of every build (and of --split)


def parse_ratios(text: str) -> tuple[float, float, float]:
    """Parse "TRAIN,VALIDATION,TEST" (e.g. "0.8,0.1,0.1"); the ratios are normalised to sum to 1."""
    try:
        ratios = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"split {text!r} is not three numbers TRAIN,VALIDATION,TEST, e.g. 0.8,0.1,0.1") from None
    if len(ratios) != 3 or any(ratio < 0 for ratio in ratios):
        raise ValueError(f"split {text!r} must be three non-negative numbers TRAIN,VALIDATION,TEST")
    if ratios[0] <= 0:
        raise ValueError(f"split {text!r}: the train ratio must be positive")
    total = sum(ratios)
    return (ratios[0] / total, ratios[1] / total, ratios[2] / total)


def split_counts(total: int, ratios: Sequence[float]) -> list[int]:
    """Documents per split. Rounds half up; a split with a positive ratio gets at least one document while
    train keeps at least one, so tiny folders still give a usable train split. A zero ratio gives 0 (and the
    build then leaves that split out)."""
    others = [int(total * ratio + 0.5) for ratio in ratios[1:]]
    others = [max(count, 1) if ratio > 0 else 0 for count, ratio in zip(others, ratios[1:])]
    while total - sum(others) < 1 and sum(others) > 0:
        largest = max(range(len(others)), key=lambda index: (others[index], index))
        others[largest] -= 1
    return [total - sum(others), *others]


def assign_splits(
    ids: Sequence[str],
    ratios: Sequence[float],
    seed: int,
    names: Sequence[str] = SPLITS,
    together: Iterable[Iterable[str]] = (),
) -> dict[str, list[str]]:
    """Shuffle the sorted ids with `seed` and cut them by `ratios`; each split keeps the ids sorted.

    `together`: groups of ids that must land in the same split (annotations of one image: one in train and one
    in test would score the model on a page it trained on). A group is shuffled as one item, in the place of its
    smallest id, and goes whole to the split its first position falls in, so that split may get a few more
    documents than its ratio. Without groups the assignment is the plain cut, unchanged.
    """
    units = _units(ids, together)
    random.Random(seed).shuffle(units)  # same length, same seed: the same permutation as shuffling the ids
    ends = list(itertools.accumulate(split_counts(len(ids), ratios)))
    result: dict[str, list[str]] = {name: [] for name in names}
    position = 0
    for unit in units:
        split = next(index for index, end in enumerate(ends) if position < end)
        result[names[split]].extend(unit)
        position += len(unit)
    return {name: sorted(chosen) for name, chosen in result.items()}


def _units(ids: Sequence[str], together: Iterable[Iterable[str]]) -> list[tuple[str, ...]]:
    """The ids as sorted shuffle units: one tuple per group in `together` (its ids sorted; groups that share an id
    are one group: a page annotated twice in a document of several pages), one per other id."""
    known = set(ids)
    group_of: dict[str, frozenset[str]] = {}
    for group in together:
        members = frozenset(set(group) & known)
        for member in list(members):
            members |= group_of.get(member, frozenset())
        for member in members:
            group_of[member] = members
    return sorted({tuple(sorted(group_of.get(id_, (id_,)))) for id_ in ids})
