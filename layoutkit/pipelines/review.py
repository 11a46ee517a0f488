"""Which values of a document a person should check: calibrated scores, cross-field checks, review routing.

`assess_document(entities, schema, trust)` is what every inference path (the pipeline's `return_fields`,
predict.py and the HTTP service through `prediction.py`, the endpoint handler through the pipeline) turns a
document's entities into:

    {"fields": {...}, "line_items": [...],
     "checks": [{"name": "subtotal_plus_tax_is_total", "ok": True, "detail": "...", "fields": [...]}, ...],
     "review_status": "auto" | "review",
     "review_reasons": [{"field": "total", "reason": "failed check", "detail": "..."}, ...]}

1. typed fields (`fields.extract_fields`) and line items, with the schema's locale, else the `day_first` the
   training data settled (recorded in the checkpoint's `field_trust`), else the one the document's own dates
   settle (`document_schema`); the dates nothing settles are flagged ambiguous;
2. each field's `score` becomes the calibrated probability that its value is exactly right (`calibration.py`;
   the model's own mean word probability stays in `model_score`);
3. `field_checks.choose_by_checks` swaps in the candidates that make the arithmetic add up, then
   `field_checks.run_checks` reports every check, and the values the passing checks confirmed are calibrated in
   their "+checked" group;
4. every field gets `needs_review` (each value of a multi-valued field too), and the document goes to review
   when any field does or a required field is missing. Reasons: "low score" (below the threshold picked on
   validation for `--review_precision`), "failed check", "ambiguous date", "unparsed value", "missing required
   field".

`trust` is `config.field_trust` of a checkpoint trained by this version (`field_trust.py` writes it):
{"calibration": {...}, "review_threshold": 0.93, "review_precision": 0.99, "day_first": true | false | null,
"words_sources": {"ocr:rapidocr": {"calibration": {...}, "review_threshold": 0.97, ...}}}; `words_sources` holds
what `layoutkit calibrate` fitted on validation pages read by OCR, used for documents whose words came from there.
Without it (older checkpoints) scores stay the model's and no value is held back for its score alone.

Copied into saved checkpoints beside the custom pipeline: the standard library and sibling modules only.
"""

from __future__ import annotations

from dataclasses import replace

from .calibration import calibrate, group_of
from .field_checks import choose_by_checks, run_checks
from .fields import FieldSchema, day_first_from_dates, extract_fields
from .line_items import column_of, group_line_items

MISSING_REQUIRED_FIELD = "missing required field"
REVIEW_REASONS = ("low score", "failed check", "ambiguous date", "unparsed value", MISSING_REQUIRED_FIELD)


def trust_settings(config) -> dict | None:
    """The `field_trust` a checkpoint's config records (a transformers config or a dict), or None."""
    if config is None:
        return None
    value = config.get("field_trust") if isinstance(config, dict) else getattr(config, "field_trust", None)
    return value or None


def trust_for_words(trust: dict | None, words_source: str | None) -> dict | None:
    """The trust settings for a document whose words came from `words_source` ("given", "pdf_text",
    "ocr:rapidocr", ...): the calibration and review threshold fitted on such words (`layoutkit calibrate`, kept
    under `words_sources`) where the checkpoint has them, else those fitted at training time on the validation
    split's own words. A model is surer of itself than it should be on OCR's words, which carry misreadings and
    another word order."""
    fitted = ((trust or {}).get("words_sources") or {}).get(words_source) if words_source else None
    return {**trust, **fitted} if fitted else trust


def document_words_source(sources) -> str | None:
    """The words source a document is calibrated for: its pages' one source, else the first OCR engine any page
    was read with (the least exact words decide), else the first source."""
    sources = [source for source in sources if source]
    ocr = [source for source in sources if source.startswith("ocr:")]
    return ocr[0] if ocr else (sources[0] if sources else None)


def effective_schema(schema, trust: dict | None) -> FieldSchema:
    """The schema with the `day_first` the training data settled, when the schema settles neither it nor the
    locale."""
    schema = FieldSchema.load(schema)
    recorded = (trust or {}).get("day_first")
    if recorded is not None and schema.day_first is None and schema.locale is None:
        return replace(schema, day_first=recorded)
    return schema


def checked_fields(fields: dict, checks: list[dict]) -> set[str]:
    """The fields that a passing check read and no failing check did ("line_items" stands for the line-item
    columns quantity, unit price and amount)."""
    def names(check) -> set[str]:
        read = set(check["fields"])
        if "line_items" in read:
            read |= {name for name in fields if column_of(name) in ("quantity", "unit_price", "amount")}
        return read

    passed = set().union(*(names(check) for check in checks if check["ok"]))
    failed = set().union(*(names(check) for check in checks if not check["ok"]))
    return passed - failed


def document_schema(entities: list[dict], schema: FieldSchema) -> FieldSchema:
    """The schema for one document: when neither `day_first` nor the locale settles numeric dates, the document's
    own dates may (a due date 18/02/2021 makes its invoice date 03/02/2021 the 3rd of February)."""
    if schema.day_first is not None or schema.locale is not None:
        return schema
    dates = [entity.get("word", "") for entity in entities if schema.spec(entity["entity_group"]).type == "date"]
    settled = day_first_from_dates(dates)
    return schema if settled is None else replace(schema, day_first=settled)


def _calibrate_value(value: dict, calibration: dict, group: str) -> None:
    value.setdefault("model_score", value["score"])
    value["score"] = round(calibrate(calibration, value["model_score"], group), 4)


def calibrate_fields(fields: dict, calibration: dict | None, checked: set[str] = frozenset()) -> None:
    """Calibrated `score` from `model_score` (set from `score` the first time) on every value and candidate, in
    place; the values of the `checked` fields in their field's "+checked" group (`calibration.group_of`)."""
    if not calibration:
        return
    for name, entry in fields.items():
        group = group_of(name, name in checked)
        if entry.get("multiple"):
            for value in entry["values"]:
                _calibrate_value(value, calibration, group)
            continue
        for candidate in entry.get("candidates", []):
            _calibrate_value(candidate, calibration, group_of(name, False))
        _calibrate_value(entry, calibration, group)


def _value_reasons(name: str, value: dict, threshold: float | None) -> list[dict]:
    reasons = []
    if threshold is not None and value.get("score") is not None and value["score"] < threshold:
        reasons.append({"field": name, "reason": "low score",
                        "detail": f"score {value['score']:.4f} below the review threshold {threshold:.4f}"})
    if value.get("ambiguous"):
        reasons.append({"field": name, "reason": "ambiguous date",
                        "detail": f"{value.get('text', value.get('value'))!r} could be day/month or month/day; "
                                  f"set the locale or day_first"})
    if value.get("error"):
        reasons.append({"field": name, "reason": "unparsed value", "detail": value["error"]})
    return reasons


def route(fields: dict, checks: list[dict], schema: FieldSchema, threshold: float | None) -> list[dict]:
    """Sets `needs_review` on every field (and value); returns the document's review reasons."""
    reasons = []
    failed: dict[str, list[str]] = {}
    for check in checks:
        if not check["ok"]:
            for name in check["fields"]:
                failed.setdefault(name, []).append(check["name"])
    for name, entry in fields.items():
        values = entry["values"] if entry.get("multiple") else [entry]
        field_reasons = []
        for value in values:
            value_reasons = _value_reasons(name, value, threshold)
            if entry.get("multiple"):
                value["needs_review"] = bool(value_reasons) or name in failed
            field_reasons += value_reasons
        if name in failed:
            field_reasons.append({"field": name, "reason": "failed check", "detail": ", ".join(failed[name])})
        entry["needs_review"] = bool(field_reasons)
        reasons += field_reasons
    if "line_items" in failed:
        reasons.append({"field": "line_items", "reason": "failed check", "detail": ", ".join(failed["line_items"])})
    for name in schema.required_fields():
        if name not in fields:
            reasons.append({"field": name, "reason": MISSING_REQUIRED_FIELD, "detail": f"no {name} was found"})
    return reasons


def assess_document(entities: list[dict], schema=None, trust: dict | None = None, links=None,
                    words_source: str | None = None) -> dict:
    """Fields, line items, checks and the review decision of one document (all its pages' entities); see the
    module docstring. `words_source` picks the calibration fitted on such words (`trust_for_words`)."""
    trust = trust_for_words(trust, words_source) or {}
    schema = document_schema(entities, effective_schema(schema, trust))
    fields = extract_fields(entities, schema)
    line_items = group_line_items(entities, links=links, locale=schema.locale)
    calibrate_fields(fields, trust.get("calibration"))
    choose_by_checks(fields, line_items, schema.checks)
    checks = run_checks(fields, line_items, schema.checks)
    # A value the arithmetic confirms is right far more often than its word probabilities say: its own group.
    calibrate_fields(fields, trust.get("calibration"), checked_fields(fields, checks))
    reasons = route(fields, checks, schema, trust.get("review_threshold"))
    return {"fields": fields, "line_items": line_items, "checks": checks,
            "review_status": "review" if reasons else "auto", "review_reasons": reasons}
