"""Label Studio's OCR labelling template: region geometry, and predictions as pre-annotations.

Label Studio stores an image region as `value.x`, `value.y` (its top-left corner before rotation), `value.width`,
`value.height`, all in percent of the image, and `value.rotation` in degrees, clockwise around that corner. One
region of the OCR template is several results sharing an `id`: `rectangle` (or `polygon`), `labels` and `textarea`.
Documented at https://labelstud.io/tags/rectanglelabels (result parameters) and
https://labelstud.io/guide/predictions#Import-OCR-pre-annotations (the OCR pre-annotation example).

* `region_corners` / `word_boxes`: a region in pixels; a transcription's words each get a share of the region along
  its reading direction (the rotated width), and a rotated word's box is the axis-aligned box around it.
* `prediction_task`: one page's predicted words and entities as a Label Studio task with `predictions`.

Standard library only.
"""

from __future__ import annotations

import math
import re
from typing import Any, Sequence

from ..pipelines.review import MISSING_REQUIRED_FIELD

# The names of the OCR template's tags (https://labelstud.io/templates/optical_character_recognition), with the
# image under the `image` data key; docs/labelstudio.md gives the labelling configuration these names fit.
TEMPLATE_NAMES = {"image": "image", "rectangle": "bbox", "labels": "label", "textarea": "transcription"}
DATA_KEY = "image"

Point = tuple[float, float]


def region_corners(value: dict[str, Any], width: float, height: float) -> list[Point]:
    """The 4 corners, in pixels, of a rectangle region (or the bounding rectangle of a polygon's points)."""
    if "points" in value:
        xs = [float(p[0]) * width / 100 for p in value["points"]]
        ys = [float(p[1]) * height / 100 for p in value["points"]]
        return [(min(xs), min(ys)), (max(xs), min(ys)), (max(xs), max(ys)), (min(xs), max(ys))]
    frame = _Frame(value, width, height)
    return [frame.point(0, 0), frame.point(frame.w, 0), frame.point(frame.w, frame.h), frame.point(0, frame.h)]


def bounding_box(points: Sequence[Point]) -> list[float]:
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    return [min(xs), min(ys), max(xs), max(ys)]


def word_boxes(value: dict[str, Any], lines: Sequence[str], width: float, height: float
               ) -> list[tuple[str, list[float]]]:
    """(word, [x0, y0, x1, y1] pixels) for every word of a region's transcription `lines`.

    The lines share the region's height equally; within a line each word gets the share of the region's width
    that its characters (spaces counted) have of the line, so "Total 12.00" puts "Total" on the left 5/11. A rotated
    region is split along its own axes and each word's box is the axis-aligned box around its rotated share."""
    if "points" in value:  # a polygon: its bounding rectangle, unrotated
        x0, y0, x1, y1 = bounding_box(region_corners(value, width, height))
        value = {"x": x0 * 100 / width, "y": y0 * 100 / height, "width": (x1 - x0) * 100 / width,
                 "height": (y1 - y0) * 100 / height, "rotation": 0}
    frame = _Frame(value, width, height)
    lines = [line for line in lines if line.strip()]
    words = []
    for number, line in enumerate(lines):
        top, bottom = frame.h * number / len(lines), frame.h * (number + 1) / len(lines)
        for match in re.finditer(r"\S+", line):
            left, right = frame.w * match.start() / len(line), frame.w * match.end() / len(line)
            corners = [frame.point(left, top), frame.point(right, top), frame.point(right, bottom),
                       frame.point(left, bottom)]
            words.append((match.group(), bounding_box(corners)))
    return words


class _Frame:
    """A region's own axes: offsets along its width and height, in pixels, mapped to image pixels."""

    def __init__(self, value: dict[str, Any], width: float, height: float):
        self.x, self.y = float(value["x"]) * width / 100, float(value["y"]) * height / 100
        self.w, self.h = float(value["width"]) * width / 100, float(value["height"]) * height / 100
        angle = math.radians(float(value.get("rotation") or 0))
        self.cos, self.sin = math.cos(angle), math.sin(angle)

    def point(self, along: float, across: float) -> Point:
        # Clockwise on screen (y grows downwards), around the top-left corner, as Label Studio rotates.
        return (self.x + along * self.cos - across * self.sin, self.y + along * self.sin + across * self.cos)


def region_value(box: Sequence[float], width: float, height: float) -> dict[str, float]:
    """A pixel box as the percent geometry of an unrotated Label Studio region."""
    x0, y0, x1, y1 = box
    return {"x": 100 * x0 / width, "y": 100 * y0 / height, "width": 100 * (x1 - x0) / width,
            "height": 100 * (y1 - y0) / height, "rotation": 0}


def region_results(region_id: str, box: Sequence[float], text: str, label: str | None, score: float, width: int,
                   height: int, names: dict[str, str] = TEMPLATE_NAMES) -> list[dict[str, Any]]:
    """The results of one OCR-template region: rectangle, labels (when `label` is an entity type) and textarea,
    sharing `region_id`, each with the region's `score`."""
    geometry = region_value(box, width, height)
    common = {"id": region_id, "to_name": names["image"], "original_width": width, "original_height": height,
              "image_rotation": 0, "score": round(float(score), 4)}
    results = [{**common, "from_name": names["rectangle"], "type": "rectangle", "value": dict(geometry)}]
    if label is not None:
        results.append({**common, "from_name": names["labels"], "type": "labels",
                        "value": {**geometry, "labels": [label]}})
    results.append({**common, "from_name": names["textarea"], "type": "textarea",
                    "value": {**geometry, "text": [text]}})
    return results


def prediction_task(image: str, width: int, height: int, words: Sequence[dict[str, Any]],
                    entities: Sequence[dict[str, Any]], model_version: str, data_key: str = DATA_KEY,
                    names: dict[str, str] = TEMPLATE_NAMES) -> dict[str, Any]:
    """One page's predictions as a Label Studio task to import for correction.

    `words` are the page's words (`text`, `box` in pixels, `score`) and `entities` its predicted spans (`entity_group`,
    `start`, `end` word indices, `score`), as the token-classification pipeline returns them with `return_words`.
    Every entity becomes one labelled region (its words' text, its union box); every word outside an entity becomes
    an unlabelled region of its own, so an annotator can label a missed field by picking a label on its words.
    The prediction's `score` is the mean entity score (1.0 for a page without entities)."""
    in_entity = [False] * len(words)
    results: list[dict[str, Any]] = []
    for number, entity in enumerate(entities):
        members = words[entity["start"] : entity["end"]]
        for index in range(entity["start"], entity["end"]):
            in_entity[index] = True
        box = [min(w["box"][0] for w in members), min(w["box"][1] for w in members),
               max(w["box"][2] for w in members), max(w["box"][3] for w in members)]
        text = " ".join(w["text"] for w in members)
        results += region_results(f"e{number}", box, text, entity["entity_group"], entity["score"], width, height,
                                  names)
    for index, word in enumerate(words):
        if not in_entity[index]:
            results += region_results(f"w{index}", word["box"], word["text"], None, word.get("score", 1.0), width,
                                      height, names)
    scores = [float(entity["score"]) for entity in entities]
    return {
        "data": {data_key: image},
        "predictions": [{
            "model_version": model_version,
            "score": round(sum(scores) / len(scores), 4) if scores else 1.0,
            "result": results,
        }],
    }


# How `predict.py --order uncertainty` measures a document's uncertainty (larger: label it sooner).
UNCERTAINTY_MEASURES = {
    "lowest_score": "1 - the lowest calibrated field score (the document's weakest value)",
    "expected_corrections": "the values a reviewer is expected to correct: the sum of 1 - calibrated score over "
                            "every value, plus one per required field the model did not find",
    "word_errors": "the words the model is expected to label wrongly: the sum of 1 - the model's score over every "
                   "word (fields or not)",
}


def document_uncertainty(document: dict[str, Any], measure: str = "lowest_score") -> float:
    """How unsure the model is of a predict.py document JSON, by `measure` (UNCERTAINTY_MEASURES). `lowest_score`:
    1 - the lowest (calibrated) score among its fields' values (every value of a multi-valued field), 1.0 for a
    document without fields (nothing found is the least certain). The two sums grow with what there is to correct
    in the document, so a long document with many doubtful values comes before a short one with one. Labelling the
    most uncertain documents first (`predict.py --order uncertainty`) teaches the model most per document
    labelled."""
    if measure == "word_errors":
        return sum(1.0 - float(word["score"]) for word in document.get("words", ()) if word.get("score") is not None)
    scores = _value_scores(document, "score")
    if measure == "expected_corrections":
        missing = sum(reason["reason"] == MISSING_REQUIRED_FIELD for reason in document.get("review_reasons", ()))
        return sum(1.0 - score for score in scores) + missing
    if measure != "lowest_score":
        raise ValueError(f"unknown uncertainty measure {measure!r}; one of {sorted(UNCERTAINTY_MEASURES)}")
    return 1.0 - min(scores) if scores else 1.0


def uncertainty_rank(document: dict[str, Any], measure: str = "lowest_score") -> tuple[float, float]:
    """The sort key of `--order uncertainty`, larger first: `document_uncertainty`, then 1 - the lowest of the
    model's own value scores. Isotonic calibration maps scores to a few steps, so many documents share one calibrated
    uncertainty; the raw scores still order them (without them the tie would fall back to input order)."""
    raw = _value_scores(document, "model_score") or _value_scores(document, "score")
    return document_uncertainty(document, measure), 1.0 - min(raw) if raw else 1.0


def _value_scores(document: dict[str, Any], key: str) -> list[float]:
    """`key` of every value of the document's fields (every value of a multi-valued field)."""
    scores = []
    for entry in document.get("fields", {}).values():
        values = entry["values"] if entry.get("multiple") else [entry]
        scores += [float(value[key]) for value in values if value.get(key) is not None]
    return scores


def document_tasks(document: dict[str, Any], image: str, model_version: str) -> list[dict[str, Any]]:
    """The Label Studio task of a one-page document JSON written by predict.py (`pages`, `words` and `entities`
    with their `page`), its image referenced as `image`."""
    page = document["pages"][0]
    words = [w for w in document["words"] if w.get("page", 1) == 1]
    entities = [e for e in document["entities"] if e.get("page", 1) == 1]
    return [prediction_task(image, page["width"], page["height"], words, entities, model_version)]
