"""A geometric reference for relation extraction: link each tail entity (answer, value) to the nearest head entity
(question, key) that sits to its left on the same line or above it, on gold entities, scored with the same metric
as run_relation_extraction.py (layoutkit/pipelines/entity_links.py). Prints a Markdown table per split.

    python benchmarks/relation_baseline.py --dataset_path data/funsd --relation_types QUESTION:ANSWER
"""

from __future__ import annotations

import argparse

from datasets import load_from_disk

from layoutkit.pipelines.boxes import union_box
from layoutkit.pipelines.entity_links import link_keys, oriented_pairs, relation_scores
from layoutkit.train.relation_task import document_entities, entity_types_of, parse_relation_types


def nearest_head_links(entities, boxes, candidates) -> set[tuple[int, int]]:
    """(head, tail) for each tail: the closest candidate head whose box starts left of the tail on an overlapping
    line, or above it; distance between the head's right/bottom edge and the tail's left/top edge."""
    allowed = {tuple(pair) for pair in candidates}
    union = {i: union_box([boxes[w] for w in e.words]) for i, e in entities.items()}
    links = set()
    for tail, tail_entity in entities.items():
        best = None
        for head, head_entity in entities.items():
            if head == tail or (head_entity.type, tail_entity.type) not in allowed:
                continue
            h, t = union[head], union[tail]
            same_line = min(h[3], t[3]) - max(h[1], t[1]) > 0 and h[0] < t[0]
            above = h[3] <= t[1] + 2
            if not (same_line or above):
                continue
            distance = max(0.0, t[0] - h[2]) if same_line else (t[1] - h[3]) + 0.5 * abs(t[0] - h[0])
            if best is None or distance < best[0]:
                best = (distance, head)
        if best is not None:
            links.add((best[1], tail))
    return links


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset_path", required=True)
    parser.add_argument("--relation_types", default="QUESTION:ANSWER")
    args = parser.parse_args()
    dataset = load_from_disk(args.dataset_path)
    print("| split | documents | gold links | precision | recall | F1 |\n|---|---|---|---|---|---|")
    for split in dataset:
        names = dataset[split].features["ner_tags"].feature.names
        candidates = parse_relation_types(args.relation_types, entity_types_of(names))
        entities = document_entities(dataset[split], names)
        gold, predicted = [], []
        for doc, (ents, relations, boxes) in enumerate(zip(entities, dataset[split]["relations"],
                                                          dataset[split]["bboxes"])):
            gold.append(link_keys(ents, oriented_pairs(ents, relations, candidates)))
            predicted.append(link_keys(ents, nearest_head_links(ents, boxes, candidates)))
        scores = relation_scores(gold, predicted)
        print(f"| {split} | {len(gold)} | {scores['gold_links']} | {scores['precision']:.3f} | {scores['recall']:.3f} "
              f"| {scores['f1']:.3f} |")


if __name__ == "__main__":
    main()
