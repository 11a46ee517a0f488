"""Learning floors of the tests that train: the trained model must beat, on its fixture's test split, what a model
that learned nothing scores there (the all-O / majority baseline, computed here from the fixture's own labels,
never hard-coded) and a floor each test states with the values it was chosen from. A broken loss or shuffled
training labels leave a model at (or below) the baseline, so these fail."""

from __future__ import annotations

from collections import Counter


def all_outside_accuracy(split) -> float:
    """Word accuracy of predicting O for every word of a NER split: the majority label's share, what a model that
    learned nothing (or collapsed onto the majority label) scores. Its entity F1 is 0."""
    names = split.features["ner_tags"].feature.names
    tags = [names[tag] for document in split["ner_tags"] for tag in document]
    return tags.count("O") / len(tags)


def majority_class_accuracy(split, column: str = "label") -> float:
    """Accuracy of predicting a document classification split's most frequent class for every document."""
    return max(Counter(split[column]).values()) / len(split)


def assert_learned(what: str, measured: float, baseline: float, floor: float) -> None:
    """`measured` beats both the do-nothing `baseline` and the stated `floor`."""
    assert measured > baseline and measured >= floor, (
        f"{what} = {measured:.3f}: the model did not learn its fixture (baseline {baseline:.3f}, floor {floor})")


def assert_ner_learned(scores: dict, test_split, f1_floor: float, accuracy_margin: float = 0.05,
                       prefix: str = "test") -> None:
    """Entity F1 above `f1_floor` (all-O scores 0) and word accuracy `accuracy_margin` above all-O's."""
    assert_learned(f"{prefix}_f1", scores[f"{prefix}_f1"], 0.0, f1_floor)
    outside = all_outside_accuracy(test_split)
    assert_learned(f"{prefix}_accuracy", scores[f"{prefix}_accuracy"], outside, outside + accuracy_margin)


def all_candidate_links_f1(split, candidates) -> float:
    """Link F1 of linking every candidate pair (head type, tail type) of each document of a relation split: what a
    model that learned no rule for which head goes with which tail scores (linking none scores 0)."""
    from layoutkit.pipelines.entity_links import gold_entities, oriented_pairs

    names = split.features["ner_tags"].feature.names
    gold = possible = 0
    for entity_ids, tags, relations in zip(split["entity_ids"], split["ner_tags"], split["relations"]):
        entities = gold_entities(entity_ids, [names[tag] for tag in tags])
        types = [entity.type for entity in entities.values()]
        possible += sum(types.count(head) * types.count(tail) for head, tail in candidates)
        gold += len(oriented_pairs(entities, relations, candidates))
    precision = gold / possible if possible else 0.0
    return 2 * precision / (precision + 1) if precision else 0.0
