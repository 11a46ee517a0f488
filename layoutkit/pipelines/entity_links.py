"""Entities, candidate links, window columns and the relation metric of relation extraction (key -> value links).

An entity is a set of words with a type (QUESTION, ANSWER, total_label ...): from the annotation (`entity_ids`
plus the words' BIO labels: gold entities) or from BIO spans an NER model predicted. A relation links a head
entity to a tail entity (question -> answer, key -> value). Copied into saved checkpoints beside the relation
pipeline: standard library and numpy only.

The metric compares links by what they join, not by ids: a link is (head words, head type, tail words, tail
type), so the same function scores gold entities (the published setting) and predicted entities (end to end:
a predicted link counts only if both of its entities were found with exactly the right words and type).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from .labels import bio_spans, entity_type


@dataclass(frozen=True)
class Entity:
    words: tuple[int, ...]  # word indices, in reading order
    type: str | None  # None: the words carry no entity label ("O"), such an entity is never linked

    def key(self) -> tuple:
        return (self.words, self.type)


def gold_entities(entity_ids: Sequence[int | None], labels: Sequence[str]) -> dict[int, Entity]:
    """{entity id: Entity} from per-word ids (None or -1: no entity) and BIO labels; an entity's type is its first
    word's."""
    members: dict[int, list[int]] = {}
    for word, entity in enumerate(entity_ids):
        if entity is not None and entity >= 0:
            members.setdefault(int(entity), []).append(word)
    return {entity: Entity(tuple(words), entity_type(labels[words[0]])) for entity, words in members.items()}


def span_entities(labels: Sequence[str]) -> dict[int, Entity]:
    """{index: Entity} of the BIO spans of (predicted) labels."""
    return {i: Entity(tuple(range(span.start, span.end)), span.label) for i, span in enumerate(bio_spans(labels))}


def oriented_pairs(entities: dict[int, Entity], relations: Iterable[Sequence[int]],
                   candidates: Sequence[Sequence[str]]) -> set[tuple[int, int]]:
    """The gold links the task scores: (head id, tail id) whose types form a candidate pair. A link given the other
    way round (answer -> question where question -> answer is the candidate) is turned round; links between other
    types are left out. With no candidates, every link between two typed entities is kept as given."""
    allowed = {tuple(pair) for pair in candidates}
    pairs = set()
    for head, tail in relations:
        if head not in entities or tail not in entities:
            continue
        types = (entities[head].type, entities[tail].type)
        if None in types:
            continue
        if not allowed or types in allowed:
            pairs.add((int(head), int(tail)))
        elif types[::-1] in allowed:
            pairs.add((int(tail), int(head)))
    return pairs


def window_entity_columns(word_ids: Sequence[int], entities: dict[int, Entity], type_ids: dict[str, int],
                          pairs: Iterable[tuple[int, int]] = ()) -> dict[str, list]:
    """The relation columns of one window (`word_ids`: the word of each token, -1 for special tokens).

    The window's entities are those with at least one token in it whose type the model knows, in order of first
    token: `entity_index` (per token, the index of its entity in that list, -1 none), `entity_labels` (type ids),
    `entity_ids` (document entity ids, to merge windows back) and `relation_pairs` (the gold `pairs` whose two
    entities are both in the window, as window indices)."""
    word_entity = {}
    for entity_id, entity in entities.items():
        if entity.type in type_ids:
            for word in entity.words:
                word_entity[word] = entity_id
    order: dict[int, int] = {}
    entity_index = []
    for word in word_ids:
        entity_id = word_entity.get(int(word)) if word >= 0 else None
        if entity_id is None:
            entity_index.append(-1)
            continue
        entity_index.append(order.setdefault(entity_id, len(order)))
    ids = list(order)
    return {
        "entity_index": entity_index,
        "entity_labels": [type_ids[entities[e].type] for e in ids],
        "entity_ids": ids,
        "relation_pairs": [[order[h], order[t]] for h, t in sorted(pairs) if h in order and t in order],
    }


class PairScoreMerger:
    """The score of each (head, tail) entity pair of each document: the highest over the windows holding both."""

    def __init__(self, num_documents: int):
        self.scores: list[dict[tuple[int, int], float]] = [{} for _ in range(num_documents)]

    def add(self, doc_index, entity_ids, scores) -> None:
        """`doc_index` [B], `entity_ids` [B, E] (-1 padding), `scores` [B, E, E] link probabilities (NaN or -inf
        logits turned to 0 for pairs that are no candidate)."""
        doc_index, entity_ids, scores = np.asarray(doc_index), np.asarray(entity_ids), np.asarray(scores)
        for row in range(len(doc_index)):
            doc = self.scores[int(doc_index[row])]
            ids = entity_ids[row]
            valid = np.flatnonzero(ids >= 0)
            block = scores[row][np.ix_(valid, valid)]
            for i, j in zip(*np.nonzero(block > 0)):
                key = (int(ids[valid[i]]), int(ids[valid[j]]))
                doc[key] = max(doc.get(key, 0.0), float(block[i, j]))

    def pairs(self, doc: int, threshold: float = 0.5, one_head_per_tail: bool = True) -> dict[tuple[int, int], float]:
        return select_links(self.scores[doc], threshold, one_head_per_tail)


def select_links(scores: dict[tuple[int, int], float], threshold: float = 0.5, one_head_per_tail: bool = True
                 ) -> dict[tuple[int, int], float]:
    """The links among scored (head, tail) pairs: those scoring at least `threshold`; with `one_head_per_tail`, only
    the best head of each tail (a value belongs to one key, an answer to one question; a key may have several)."""
    found = {pair: score for pair, score in scores.items() if score >= threshold}
    if not one_head_per_tail:
        return found
    best: dict[int, tuple[int, int]] = {}
    for pair, score in found.items():
        if pair[1] not in best or score > found[best[pair[1]]]:
            best[pair[1]] = pair
    return {pair: found[pair] for pair in best.values()}


def link_keys(entities: dict[int, Entity], pairs: Iterable[tuple[int, int]]) -> set[tuple]:
    """Links as (head words, head type, tail words, tail type), comparable across entity sources."""
    return {(entities[h].key(), entities[t].key()) for h, t in pairs}


def relation_scores(gold: Sequence[set], predicted: Sequence[set]) -> dict[str, float | int]:
    """Micro precision, recall and F1 of predicted links over documents (each a set of `link_keys`)."""
    true_positives = sum(len(g & p) for g, p in zip(gold, predicted))
    gold_count = sum(len(g) for g in gold)
    predicted_count = sum(len(p) for p in predicted)
    precision = true_positives / predicted_count if predicted_count else 0.0
    recall = true_positives / gold_count if gold_count else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "gold_links": gold_count,
            "predicted_links": predicted_count, "correct_links": true_positives}
