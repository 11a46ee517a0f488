"""Word-level metrics: seqeval entity scores (offline) and field exact match."""

from __future__ import annotations

from typing import Sequence

from seqeval.metrics import accuracy_score, classification_report

from .pipelines.labels import bio_spans


def seqeval_scores(references: Sequence[Sequence[str]], predictions: Sequence[Sequence[str]]) -> dict:
    """Entity-level precision, recall and F1 (overall and per type) plus word accuracy.

    Same numbers and keys as `evaluate.load("seqeval").compute(...)` in its default (conlleval) mode,
    computed with the seqeval package directly because `evaluate.load` fetches its module from the Hub.
    """
    report = classification_report(references, predictions, output_dict=True, zero_division=0)
    scores: dict = {}
    for name, values in report.items():
        if name in ("micro avg", "macro avg", "weighted avg"):
            continue
        scores[name] = {
            "precision": values["precision"],
            "recall": values["recall"],
            "f1": values["f1-score"],
            "number": int(values["support"]),
        }
    micro = report.get("micro avg", {"precision": 0.0, "recall": 0.0, "f1-score": 0.0})
    scores["overall_precision"] = micro["precision"]
    scores["overall_recall"] = micro["recall"]
    scores["overall_f1"] = micro["f1-score"]
    scores["overall_accuracy"] = accuracy_score(references, predictions) if any(references) else 0.0
    return scores


def flatten_scores(scores: dict) -> dict[str, float]:
    """`{"overall_f1": .., "total": {"f1": ..}}` -> `{"f1": .., "total_f1": ..}`."""
    flat = {}
    for key, value in scores.items():
        if isinstance(value, dict):
            for metric, number in value.items():
                flat[f"{key}_{metric}"] = number
        else:
            flat[key.removeprefix("overall_")] = value
    return flat


# The overall scores among flat metrics (flatten_scores + field_exact_match); the rest are per entity type / field.
OVERALL_METRICS = ("precision", "recall", "f1", "accuracy", "em", "em_no_space")


def overall_metrics(metrics: dict) -> dict:
    """Only the overall scores of flat metrics (without --return_entity_level_metrics)."""
    return {name: value for name, value in metrics.items() if name in OVERALL_METRICS}


def field_values(words: Sequence[str], tags: Sequence[str]) -> dict[str, list[str]]:
    """The text of every entity in a document, per entity type, in reading order."""
    values: dict[str, list[str]] = {}
    for span in bio_spans(tags):
        values.setdefault(span.label, []).append(" ".join(words[span.start : span.end]))
    return values


def field_exact_match(
    words: Sequence[Sequence[str]], references: Sequence[Sequence[str]], predictions: Sequence[Sequence[str]]
) -> dict[str, float]:
    """Per field, the share of documents whose predicted string equals the gold string exactly (`em`)
    and ignoring whitespace (`em_no_space`); a field with several occurrences compares the whole list.

    Averaged over the documents where the field occurs in the gold or the prediction, then over fields
    for the overall `em` / `em_no_space`.
    """
    matches: dict[str, list[tuple[bool, bool]]] = {}
    for doc_words, gold_tags, pred_tags in zip(words, references, predictions):
        gold, pred = field_values(doc_words, gold_tags), field_values(doc_words, pred_tags)
        for field in set(gold) | set(pred):
            g, p = gold.get(field, []), pred.get(field, [])
            exact = g == p
            no_space = ["".join(v.split()) for v in g] == ["".join(v.split()) for v in p]
            matches.setdefault(field, []).append((exact, no_space))
    result: dict[str, float] = {}
    for field, pairs in sorted(matches.items()):
        result[f"{field}_em"] = sum(e for e, _ in pairs) / len(pairs)
        result[f"{field}_em_no_space"] = sum(n for _, n in pairs) / len(pairs)
    fields = sorted(matches)
    result["em"] = sum(result[f"{f}_em"] for f in fields) / len(fields) if fields else 0.0
    result["em_no_space"] = sum(result[f"{f}_em_no_space"] for f in fields) / len(fields) if fields else 0.0
    return result
