"""Fit and measure field confidence at the end of training: what `review.py` applies at inference.

From the word-level predictions of a split (`ner.evaluate_ner`'s records: words, gold labels, predicted labels and
scores, plus the split's boxes), every document's fields are built as at inference (`review.assess_document` on the
predicted spans, each with the mean word probability as the pipeline scores it: checks run, candidates chosen by
them) and from the gold spans (`fields.extract_fields`). Each predicted value is "exactly right" when its normalised
value equals the gold one (a multi-valued field's value: one of the gold values not matched yet), and belongs to the
calibration group of its field, "+checked" when a passing check confirmed it. Then (`fit_trust`, on validation):

- calibration: Platt and isotonic, over all values and per group, are fitted on 4/5 of the values and measured on
  the fifth (5 folds); `calibration.choose_calibration` keeps the one whose review threshold accepts the most
  held-out values (among those about as well calibrated as the best), fitted on all values;
- `review_threshold`: the lowest calibrated score above which the accepted values reach `review_precision`
  with `review_confidence` (the Wilson lower bound of their precision reaches it; the most values accepted);
- `day_first`: what the training and validation dates settle (`fields.day_first_from_dates`).

`measure_trust` reports, on another split (test), ECE before and after calibration and the precision and coverage
of the values accepted without review; `plot_reliability` draws both reliability curves.
"""

from __future__ import annotations

import math
import os
from statistics import NormalDist

from ..pipelines.calibration import (
    calibrate,
    choose_calibration,
    expected_calibration_error,
    group_of,
    reliability_bins,
)
from ..pipelines.fields import FieldSchema, day_first_from_dates, extract_fields
from ..pipelines.labels import bio_spans
from ..pipelines.review import assess_document, checked_fields, document_schema, effective_schema

RELIABILITY_PLOT = "field_reliability.png"


def entities_from_words(words, boxes, labels, scores=None) -> list[dict]:
    """Entity spans as the pipeline returns them: type, mean word score, joined words, word range, union box."""
    entities = []
    for span in bio_spans(labels):
        span_boxes = [boxes[i] for i in range(span.start, span.end)] if boxes is not None else []
        box = [min(b[0] for b in span_boxes), min(b[1] for b in span_boxes), max(b[2] for b in span_boxes),
               max(b[3] for b in span_boxes)] if span_boxes else None
        score = sum(scores[span.start:span.end]) / (span.end - span.start) if scores is not None else 1.0
        entities.append({"entity_group": span.label, "score": float(score),
                         "word": " ".join(words[span.start:span.end]),
                         "start": span.start, "end": span.end, "box": box, "page": 1,
                         "continuation": labels[span.start].startswith("I-")})
    return entities


def value_key(value: dict):
    """What two values are compared by: the normalised value, else the text with whitespace collapsed."""
    normalized = value.get("normalized")
    if normalized is not None:
        return normalized
    return " ".join(str(value.get("text", value.get("value", ""))).split())


def field_outcomes(predicted: dict, gold: dict) -> list[tuple[str, float, bool]]:
    """(field name, score, exactly right) for each predicted value of one document."""
    return [(name, value["score"], right) for name, value, right in value_outcomes(predicted, gold)]


def value_outcomes(predicted: dict, gold: dict) -> list[tuple[str, dict, bool]]:
    """(field name, the value's dict, exactly right) for each predicted value of one document: the single value
    of a field, or each value of a multi-valued one."""
    outcomes = []
    for name, entry in predicted.items():
        truth = gold.get(name)
        if entry.get("multiple"):
            remaining = [value_key(value) for value in truth["values"]] if truth and truth.get("multiple") else []
            for value in entry["values"]:
                key = value_key(value)
                right = key in remaining
                if right:
                    remaining.remove(key)
                outcomes.append((name, value, right))
        else:
            right = truth is not None and not truth.get("multiple") and value_key(entry) == value_key(truth)
            outcomes.append((name, entry, right))
    return outcomes


def document_outcomes(record: dict, boxes, schema: FieldSchema) -> list[tuple[str, float, bool]]:
    """(calibration group, model score, exactly right) of each value of one evaluation record, the fields built
    as at inference (`review.assess_document`, uncalibrated: checks, candidates chosen by them)."""
    entities = entities_from_words(record["words"], boxes, record["predictions"], record["scores"])
    gold_entities = entities_from_words(record["words"], boxes, record["labels"])
    return entity_outcomes(entities, gold_entities, schema)


def entity_outcomes(entities: list[dict], gold_entities: list[dict], schema: FieldSchema) \
        -> list[tuple[str, float, bool]]:
    """(calibration group, model score, exactly right) of each value built from a document's predicted entities,
    against the values of its gold entities (which may sit on other words: the annotation's, where the prediction
    read OCR's)."""
    assessed = assess_document(entities, schema)
    checked = checked_fields(assessed["fields"], assessed["checks"])
    gold = extract_fields(gold_entities, document_schema(gold_entities, schema))
    return [(group_of(name, name in checked), score, right)
            for name, score, right in field_outcomes(assessed["fields"], gold)]


def split_outcomes(records, boxes_per_document, schema) -> list[tuple[str, float, bool]]:
    outcomes = []
    for record, boxes in zip(records, boxes_per_document):
        outcomes += document_outcomes(record, boxes, schema)
    return outcomes


def precision_lower_bound(right: int, accepted: int, confidence: float) -> float:
    """The one-sided Wilson lower bound, at `confidence`, of the precision of `accepted` values of which `right`
    were right; the observed share when `confidence` is 0."""
    share = right / accepted
    if confidence <= 0:
        return share
    z = NormalDist().inv_cdf(confidence)
    centre = share + z * z / (2 * accepted)
    spread = z * math.sqrt(share * (1 - share) / accepted + z * z / (4 * accepted * accepted))
    return (centre - spread) / (1 + z * z / accepted)


def review_threshold(scores, correct, precision: float, confidence: float = 0.0) -> tuple[float, float, float]:
    """(threshold, precision, coverage): the lowest score s such that the values scoring >= s are right at
    least `precision` of the time, with that precision and the share of values accepted. With `confidence` (e.g.
    0.95) the lower confidence bound of their precision must reach it (`precision_lower_bound`): the threshold is
    picked on a sample of validation values, and new documents should meet the precision too, not only the sample.
    When no threshold reaches it, a threshold above every score (nothing accepted; precision None)."""
    pairs = sorted(zip(scores, correct), key=lambda pair: -pair[0])
    best = (math.nextafter(1.0, 2.0), None, 0.0)
    right = 0
    for index, (score, ok) in enumerate(pairs):
        right += int(ok)
        last_of_tie = index + 1 == len(pairs) or pairs[index + 1][0] < score
        if last_of_tie and precision_lower_bound(right, index + 1, confidence) >= precision:
            best = (score, right / (index + 1), (index + 1) / len(pairs))
    return best


def gold_dates(documents, label_names, schema=None) -> list[str]:
    """The texts of every gold date value of a split (its words and ner_tags)."""
    schema = FieldSchema.load(schema)
    texts = []
    for words, tags in zip(documents["words"], documents["ner_tags"]):
        labels = [label_names[tag] for tag in tags]
        for span in bio_spans(labels):
            if schema.spec(span.label).type == "date":
                texts.append(" ".join(words[span.start:span.end]))
    return texts


def fit_calibration(outcomes, review_precision: float = 0.99, review_confidence: float = 0.95) -> tuple[dict, dict]:
    """({"calibration", "review_threshold", "review_precision", "review_confidence"}, metrics) fitted on (group,
    score, right) outcomes: `calibration.choose_calibration`, then the review threshold whose accepted values reach
    `review_precision` with `review_confidence` (`review_threshold`)."""
    groups = [group for group, _, _ in outcomes]
    scores = [score for _, score, _ in outcomes]
    correct = [right for _, _, right in outcomes]
    if len(set(correct)) < 2 or len(outcomes) < 10:
        # Nothing to learn a mapping from (every value right, or wrong, or almost no values): identity.
        calibration = {"method": "none", "chosen": "none", "heldout_ece": {}, "num_values": len(outcomes)}
    else:
        # Calibrators that are equally well calibrated differ in what they let through: take the one whose
        # threshold accepts the most held-out values at the precision (a total confirmed by the arithmetic is
        # accepted only by a calibrator that knows it).
        calibration = choose_calibration(
            scores, correct, groups,
            coverage=lambda probabilities, right: review_threshold(probabilities, right, review_precision,
                                                                   review_confidence)[2])
    calibrated = [calibrate(calibration, score, group) for group, score in zip(groups, scores)]
    threshold, precision, coverage = review_threshold(calibrated, correct, review_precision, review_confidence)
    fitted = {"calibration": calibration, "review_threshold": threshold, "review_precision": review_precision,
              "review_confidence": review_confidence}
    metrics = {
        "field_calibration_method": calibration["chosen"],
        "field_values": len(outcomes),
        "field_accuracy": sum(correct) / len(correct) if correct else None,
        **{f"field_ece_heldout_{method}": ece for method, ece in calibration["heldout_ece"].items()},
        **{f"field_brier_heldout_{method}": value for method, value in calibration.get("heldout_brier", {}).items()},
        **{f"field_coverage_heldout_{method}": value
           for method, value in calibration.get("heldout_coverage", {}).items()},
        "review_threshold": threshold,
        "review_precision_target": review_precision,
        "review_confidence": review_confidence,
        "auto_precision": precision,
        "auto_coverage": coverage,
    }
    return fitted, metrics


def fit_trust(records, boxes_per_document, schema=None, review_precision: float = 0.99,
              dates=(), review_confidence: float = 0.95) -> tuple[dict, dict]:
    """(the checkpoint's `field_trust`, validation metrics) from a validation split's records."""
    recorded_day_first = day_first_from_dates(dates)
    trust = {"day_first": recorded_day_first}
    schema = effective_schema(schema, trust)
    fitted, metrics = fit_calibration(split_outcomes(records, boxes_per_document, schema), review_precision,
                                      review_confidence)
    trust.update(fitted)
    return trust, {**metrics, "day_first": recorded_day_first}


def measure_trust(records, boxes_per_document, trust: dict, schema=None) -> tuple[dict, dict]:
    """(metrics, reliability tables) of a split under a fitted `trust`: ECE of the model's scores and of the
    calibrated ones, and precision / coverage of the values at or above the review threshold."""
    schema = effective_schema(schema, trust)
    outcomes = split_outcomes(records, boxes_per_document, schema)
    raw = [score for _, score, _ in outcomes]
    correct = [right for _, _, right in outcomes]
    calibrated = [calibrate(trust.get("calibration"), score, group) for group, score, _ in outcomes]
    accepted = [right for score, right in zip(calibrated, correct) if score >= trust["review_threshold"]]
    metrics = {
        "field_values": len(outcomes),
        "field_accuracy": sum(correct) / len(correct) if correct else None,
        "field_ece_model": expected_calibration_error(raw, correct),
        "field_ece": expected_calibration_error(calibrated, correct),
        # None, not NaN, where nothing is there to count: results are JSON (and NaN never equals itself).
        "auto_precision": sum(accepted) / len(accepted) if accepted else None,
        "auto_coverage": len(accepted) / len(correct) if correct else None,
    }
    tables = {"model": reliability_bins(raw, correct), "calibrated": reliability_bins(calibrated, correct)}
    return metrics, tables


def plot_reliability(tables: dict, path: str | os.PathLike, title: str = "Field confidence") -> None:
    """Reliability diagram: accuracy against mean confidence per bin, model scores and calibrated."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(4.5, 4.5))
    axis.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect")
    for name, table in tables.items():
        rows = [row for row in table if row["count"]]
        axis.plot([row["confidence"] for row in rows], [row["accuracy"] for row in rows], marker="o", label=name)
    axis.set_xlabel("confidence (mean score in bin)")
    axis.set_ylabel("share of values exactly right")
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1)
    axis.set_title(title)
    axis.legend(loc="upper left")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
