"""Field confidence as a probability: map a field's model score to how often such a value is exactly right.

A field's model score is the mean softmax probability of its words' labels: on a model trained to near-zero loss
it sits near 1.0 whether or not the value is right. At the end of training (`field_trust.py`) two calibrators are
fitted on the validation split's fields, each with its 0/1 "value exactly right":

- `platt`: a logistic regression on the logit of the score, P = sigmoid(a * logit(s) + b);
- `isotonic`: the non-decreasing step function closest to the 0/1 outcomes (pool-adjacent-violators), linearly
  interpolated between its steps.

Each is fitted once over all values and once per group (`group_of`: the field's name, and whether the document's
cross-field checks confirmed the value; a group with fewer than `MIN_GROUP_VALUES` values uses the all-values fit):
a total that adds up is right far more often than its word probabilities say, an item description less often.
Their expected calibration error (`expected_calibration_error`, 10 equal-width bins) and Brier score on held-out
folds of the validation values decide which one the checkpoint keeps (`choose_calibration`: among those within
0.01 of the lowest ECE, the one whose review threshold accepts the most held-out values, then the lowest Brier
score); `calibrate(calibration, score, group)` applies it wherever fields are
built (`review.py`).

Copied into saved checkpoints beside the custom pipeline: the standard library only.
"""

from __future__ import annotations

import bisect
import math
import random

METHODS = ("platt", "isotonic")
ECE_BINS = 10
MIN_GROUP_VALUES = 40  # a group needs this many validation values for a fit of its own
ECE_SLACK = 0.01  # candidates within this much of the lowest held-out ECE compete on the Brier score
_EPSILON = 1e-6


# -------------------------------------------------------------------------------------------------- apply
def _logit(score: float) -> float:
    score = min(max(score, _EPSILON), 1 - _EPSILON)
    return math.log(score / (1 - score))


def _sigmoid(value: float) -> float:
    if value >= 0:
        return 1 / (1 + math.exp(-value))
    exp = math.exp(value)
    return exp / (1 + exp)


def group_of(field_name: str, checked: bool) -> str:
    """The calibration group of a value: its field, and "+checked" when a passing cross-field check read it."""
    return f"{field_name}+checked" if checked else field_name


def calibrate(calibration: dict | None, score: float, group: str | None = None) -> float:
    """The calibrated probability of a model score (of a value in `group`); the score itself without a
    calibration."""
    if not calibration:
        return float(score)
    method = calibration["method"]
    if method == "grouped":
        groups = calibration["groups"]
        return calibrate(groups.get(group) or groups["default"], score)
    if method == "platt":
        return _sigmoid(calibration["a"] * _logit(score) + calibration["b"])
    if method == "isotonic":
        xs, ys = calibration["x"], calibration["y"]
        if score <= xs[0]:
            return ys[0]
        if score >= xs[-1]:
            return ys[-1]
        right = bisect.bisect_right(xs, score)
        x0, x1, y0, y1 = xs[right - 1], xs[right], ys[right - 1], ys[right]
        return y0 if x1 == x0 else y0 + (y1 - y0) * (score - x0) / (x1 - x0)
    if method == "none":
        return float(score)
    raise ValueError(f"unknown calibration method {method!r}; known: {', '.join(METHODS)}, none")


# ---------------------------------------------------------------------------------------------------- fit
def fit_platt(scores, correct, iterations: int = 100) -> dict:
    """Logistic regression of `correct` on logit(score): Newton steps, halved until the loss falls (slightly
    regularised, so a split where every value is right still gives finite weights)."""
    xs = [_logit(s) for s in scores]
    ys = [float(c) for c in correct]
    ridge = 1e-3

    def loss(a: float, b: float) -> float:
        total = ridge * (a * a + b * b) / 2
        for x, y in zip(xs, ys):
            z = a * x + b
            # log(1 + e^z) - y * z, computed without overflow
            total += (z if z > 0 else 0.0) + math.log1p(math.exp(-abs(z))) - y * z
        return total

    a, b = 1.0, 0.0
    current = loss(a, b)
    for _ in range(iterations):
        ga, gb, haa, hab, hbb = ridge * a, ridge * b, ridge, 0.0, ridge
        for x, y in zip(xs, ys):
            p = _sigmoid(a * x + b)
            w = p * (1 - p)
            ga += (p - y) * x
            gb += p - y
            haa += w * x * x
            hab += w * x
            hbb += w
        determinant = haa * hbb - hab * hab
        if determinant <= 0:
            break
        step_a = (hbb * ga - hab * gb) / determinant
        step_b = (haa * gb - hab * ga) / determinant
        scale = 1.0
        while scale > 1e-6 and loss(a - scale * step_a, b - scale * step_b) > current:
            scale /= 2
        if scale <= 1e-6:
            break
        a, b = a - scale * step_a, b - scale * step_b
        previous, current = current, loss(a, b)
        if previous - current < 1e-10:
            break
    return {"method": "platt", "a": a, "b": b}


def fit_isotonic(scores, correct) -> dict:
    """Pool-adjacent-violators on the outcomes sorted by score; the steps as (x, y) points to interpolate."""
    pairs = sorted(zip(scores, correct))
    blocks: list[list[float]] = []  # [sum of y, count, min x, max x]
    for x, y in pairs:
        blocks.append([float(y), 1.0, x, x])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] >= blocks[-1][0] / blocks[-1][1]:
            total, count, _, high = blocks.pop()
            blocks[-1][0] += total
            blocks[-1][1] += count
            blocks[-1][3] = high
    xs, ys = [], []
    for total, count, low, high in blocks:
        for x in ((low, high) if high > low else (low,)):
            xs.append(float(x))
            ys.append(total / count)
    return {"method": "isotonic", "x": xs, "y": ys}


def fit(method: str, scores, correct, groups=None) -> dict:
    """One calibrator (`groups` None), or {"method": "grouped", "groups": {group: calibrator, "default": ...}}."""
    if groups is not None:
        fitted = {"default": fit(method, scores, correct)}
        members: dict[str, list[int]] = {}
        for index, group in enumerate(groups):
            members.setdefault(group, []).append(index)
        for group, indices in members.items():
            if len(indices) >= MIN_GROUP_VALUES:
                fitted[group] = fit(method, [scores[i] for i in indices], [correct[i] for i in indices])
        return {"method": "grouped", "base": method, "groups": fitted}
    if method == "platt":
        return fit_platt(scores, correct)
    if method == "isotonic":
        return fit_isotonic(scores, correct)
    raise ValueError(f"unknown calibration method {method!r}; known: {', '.join(METHODS)}")


# ------------------------------------------------------------------------------------------------ measure
def reliability_bins(probabilities, correct, bins: int = ECE_BINS) -> list[dict]:
    """Per equal-width bin of predicted probability: {"low", "high", "count", "confidence", "accuracy"}."""
    table = [{"low": i / bins, "high": (i + 1) / bins, "count": 0, "confidence": 0.0, "accuracy": 0.0}
             for i in range(bins)]
    for probability, right in zip(probabilities, correct):
        row = table[min(int(probability * bins), bins - 1)]
        row["count"] += 1
        row["confidence"] += probability
        row["accuracy"] += float(right)
    for row in table:
        if row["count"]:
            row["confidence"] /= row["count"]
            row["accuracy"] /= row["count"]
    return table


def expected_calibration_error(probabilities, correct, bins: int = ECE_BINS) -> float:
    """Sum over bins of |accuracy - mean confidence| weighted by the bin's share of the values."""
    probabilities = list(probabilities)
    if not probabilities:
        return float("nan")
    table = reliability_bins(probabilities, correct, bins)
    return sum(row["count"] * abs(row["accuracy"] - row["confidence"]) for row in table) / len(probabilities)


def brier_score(probabilities, correct) -> float:
    """Mean squared difference between probability and outcome (rewards telling right from wrong values)."""
    pairs = list(zip(probabilities, correct))
    return sum((p - float(c)) ** 2 for p, c in pairs) / len(pairs) if pairs else float("nan")


def choose_calibration(scores, correct, groups=None, folds: int = 5, seed: int = 0, coverage=None) -> dict:
    """Fit each candidate (Platt, isotonic; with `groups` also each per group, "grouped-platt",
    "grouped-isotonic") on `folds` - 1 folds of the values and predict the held-out fold (every value out of fold
    once); keep the candidate with the lowest held-out Brier score among those within `ECE_SLACK` of the lowest
    held-out ECE, fitted on all values. `coverage(probabilities, correct)`, when given, is what the scores are for
    (the share of values a review threshold accepts): among those candidates, the one that covers most held-out
    values wins, the Brier score breaking ties. The result carries "heldout_ece", "heldout_brier" (and
    "heldout_coverage") per candidate ("none": the raw scores), "chosen" and "num_values"."""
    scores, correct = [float(s) for s in scores], [int(c) for c in correct]
    candidates = {method: (method, False) for method in METHODS}
    if groups is not None:
        groups = list(groups)
        candidates.update({f"grouped-{method}": (method, True) for method in METHODS})
    order = list(range(len(scores)))
    random.Random(seed).shuffle(order)
    folds = max(2, min(folds, len(scores)))
    predicted = {name: [0.0] * len(scores) for name in candidates}
    for fold in range(folds):
        held = set(order[fold::folds])
        train = [i for i in order if i not in held]
        for name, (method, grouped) in candidates.items():
            model = fit(method, [scores[i] for i in train], [correct[i] for i in train],
                        [groups[i] for i in train] if grouped else None)
            for i in held:
                predicted[name][i] = calibrate(model, scores[i], groups[i] if grouped else None)
    heldout = {"none": expected_calibration_error(scores, correct)}
    heldout.update({name: expected_calibration_error(values, correct) for name, values in predicted.items()})
    brier = {"none": brier_score(scores, correct)}
    brier.update({name: brier_score(values, correct) for name, values in predicted.items()})
    lowest = min(heldout[name] for name in candidates)
    eligible = [name for name in candidates if heldout[name] <= lowest + ECE_SLACK]
    extra = {}
    if coverage is not None:
        covered = {name: coverage(values, correct) for name, values in predicted.items()}
        extra["heldout_coverage"] = covered
        chosen = min(eligible, key=lambda name: (-covered[name], brier[name]))
    else:
        chosen = min(eligible, key=lambda name: brier[name])
    method, grouped = candidates[chosen]
    model = fit(method, scores, correct, groups if grouped else None)
    return {**model, "chosen": chosen, "heldout_ece": heldout, "heldout_brier": brier, **extra,
            "num_values": len(scores)}
