"""Cross-field checks, calibration, review routing and fitting them on evaluation records."""

import math
import random
import typing

import pytest

from layoutkit.pipelines.calibration import (
    calibrate,
    choose_calibration,
    expected_calibration_error,
    fit_isotonic,
    fit_platt,
    group_of,
)
from layoutkit.pipelines.field_checks import CheckConfig, choose_by_checks, run_checks
from layoutkit.train.field_trust import (field_outcomes, fit_trust, measure_trust, precision_lower_bound,
                                         review_threshold)
from layoutkit.pipelines.fields import FieldSchema, extract_fields
from layoutkit.pipelines.review import assess_document, effective_schema


def entity(name, text, score, start, box=None):
    return {"entity_group": name, "word": text, "score": score, "start": start, "end": start + 1,
            "box": box or [0, start * 20, 100, start * 20 + 10], "page": 1}


def invoice(total="144.00", extra=()):
    """An invoice whose numbers add up: 2 x 50.00 + 20.00 = 120.00, tax 24.00, total 144.00."""
    return [
        entity("invoice_date", "2023-04-05", 0.99, 0), entity("due_date", "2023-05-05", 0.99, 1),
        entity("item_quantity", "2", 0.99, 2, [0, 100, 20, 110]), entity("item_unit_price", "50.00", 0.99, 3, [30, 100, 60, 110]),
        entity("item_amount", "$100.00", 0.99, 4, [70, 100, 99, 110]),
        entity("item_quantity", "1", 0.99, 5, [0, 120, 20, 130]), entity("item_unit_price", "20.00", 0.99, 6, [30, 120, 60, 130]),
        entity("item_amount", "$20.00", 0.99, 7, [70, 120, 99, 130]),
        entity("subtotal", "$120.00", 0.99, 8), entity("tax", "$24.00", 0.98, 9), entity("total", f"${total}", 0.97, 10),
        *extra,
    ]


def checks_by_name(document):
    return {check["name"]: check for check in document["checks"]}


# ------------------------------------------------------------------------------------------------ checks
def test_checks_pass_on_a_consistent_invoice():
    document = assess_document(invoice())
    assert set(checks_by_name(document)) == {"items_sum_to_subtotal", "subtotal_plus_tax_is_total",
                                             "quantity_times_unit_price", "due_after_invoice_date", "one_currency"}
    assert all(check["ok"] for check in document["checks"]), document["checks"]
    assert document["review_status"] == "auto" and document["review_reasons"] == []
    assert all(field["needs_review"] is False for field in document["fields"].values())


def test_a_misread_digit_fails_a_check_and_routes_to_review():
    document = assess_document(invoice(total="184.00"))
    check = checks_by_name(document)["subtotal_plus_tax_is_total"]
    assert not check["ok"] and check["detail"] == "120.00 + 24.00 = 144.00, total is 184.00"
    assert document["review_status"] == "review"
    assert {"field": "total", "reason": "failed check", "detail": "subtotal_plus_tax_is_total"} in document["review_reasons"]
    assert document["fields"]["total"]["needs_review"] and not document["fields"]["invoice_date"]["needs_review"]


def test_line_arithmetic_and_dates_and_currencies():
    entities = invoice()
    entities[3] = entity("item_unit_price", "51.00", 0.99, 3, [30, 100, 60, 110])
    entities[1] = entity("due_date", "2023-03-01", 0.99, 1)
    entities[9] = entity("tax", "€24.00", 0.98, 9)
    checks = checks_by_name(assess_document(entities))
    assert checks["quantity_times_unit_price"] == {"name": "quantity_times_unit_price", "ok": False,
                                                   "detail": "row 1: 2 x 51.00 = 102.00, amount 100.00",
                                                   "fields": ["line_items"]}
    assert not checks["due_after_invoice_date"]["ok"]
    assert not checks["one_currency"]["ok"] and checks["one_currency"]["detail"] == "EUR (tax), USD (item_amount, subtotal, total)"


def test_checks_without_their_fields_are_left_out():
    fields = extract_fields([entity("total", "10.00", 0.9, 0)])
    assert run_checks(fields, []) == []


def test_candidates_that_add_up_win_over_the_highest_score():
    # The model scores a wrong total highest; the runner-up makes subtotal + tax = total.
    extra = [entity("total", "$144.00", 0.95, 11, [0, 400, 50, 410])]
    entities = invoice(total="184.00") + extra
    model_choice = extract_fields(entities)["total"]
    assert model_choice["normalized"] == "184.00"
    document = assess_document(entities)
    assert document["fields"]["total"]["normalized"] == "144.00"
    assert document["fields"]["total"]["chosen_by"] == "checks"
    assert all(check["ok"] for check in document["checks"])


def test_choose_by_checks_keeps_the_model_choice_when_nothing_adds_up_better():
    fields = extract_fields(invoice(total="184.00") + [entity("total", "$185.00", 0.5, 11, [0, 400, 50, 410])])
    assert choose_by_checks(fields, [], CheckConfig()) == []
    assert fields["total"]["normalized"] == "184.00"


def test_schema_configures_checks():
    schema = FieldSchema.load({"checks": {"one_currency": False, "tolerance": 0.5,
                                          "subtotal_plus_tax_is_total": {"total": "amount_due"}}})
    assert "one_currency" not in schema.checks.fields
    assert schema.checks.fields["subtotal_plus_tax_is_total"]["total"] == "amount_due"
    entities = [entity("subtotal", "10.00", 0.9, 0), entity("tax", "1.00", 0.9, 1), entity("amount_due", "11.40", 0.9, 2)]
    assert checks_by_name(assess_document(entities, schema))["subtotal_plus_tax_is_total"]["ok"]
    assert FieldSchema.load({"checks": False}).checks.fields == {}
    with pytest.raises(ValueError, match="schema: checks: unknown check 'sum'"):
        FieldSchema.load({"checks": {"sum": True}})
    with pytest.raises(ValueError, match="checks.one_currency: unknown role 'x'"):
        FieldSchema.load({"checks": {"one_currency": {"x": "y"}}})


# ------------------------------------------------------------------------------------------------ routing
def test_review_reasons():
    schema = FieldSchema.load({"fields": {"vendor": {"required": True}}})
    entities = [entity("invoice_date", "03/04/2021", 0.99, 0), entity("total", "about ten", 0.6, 1)]
    trust = {"calibration": {"method": "platt", "a": 1.0, "b": 0.0}, "review_threshold": 0.9}
    document = assess_document(entities, schema, trust)
    reasons = {(reason["field"], reason["reason"]) for reason in document["review_reasons"]}
    assert reasons == {("invoice_date", "ambiguous date"), ("total", "low score"), ("total", "unparsed value"),
                       ("vendor", "missing required field")}
    assert document["review_status"] == "review"
    total = document["fields"]["total"]
    assert total["model_score"] == 0.6 and total["score"] == pytest.approx(0.6, abs=1e-4)


def test_recorded_day_first_applies_unless_the_schema_settles_dates():
    trust = {"day_first": True}
    assert effective_schema(None, trust).day_first is True
    assert effective_schema({"day_first": False}, trust).day_first is False
    assert effective_schema({"locale": "en_US"}, trust).day_first is None
    fields = assess_document([entity("invoice_date", "03/04/2021", 0.99, 0)], None, trust)["fields"]
    assert fields["invoice_date"]["normalized"] == "2021-04-03" and "ambiguous" not in fields["invoice_date"]


# ------------------------------------------------------------------------------------------------ calibration
def synthetic_scores(n, seed):
    rng = random.Random(seed)
    scores = [1 - rng.random() ** 3 * 0.5 for _ in range(n)]
    return scores, [int(rng.random() < score ** 8) for score in scores]


def test_calibration_lowers_ece_on_held_out_values():
    scores, correct = synthetic_scores(3000, 0)
    chosen = choose_calibration(scores[:1500], correct[:1500])
    assert chosen["method"] in ("platt", "isotonic")
    assert set(chosen["heldout_ece"]) == {"none", "platt", "isotonic"}
    test_scores, test_correct = scores[1500:], correct[1500:]
    before = expected_calibration_error(test_scores, test_correct)
    after = expected_calibration_error([calibrate(chosen, s) for s in test_scores], test_correct)
    assert before > 0.2 and after < 0.05


def test_platt_and_isotonic_are_monotone_probabilities():
    scores, correct = synthetic_scores(500, 1)
    for model in (fit_platt(scores, correct), fit_isotonic(scores, correct)):
        values = [calibrate(model, s) for s in (0.0, 0.5, 0.7, 0.9, 0.99, 1.0)]
        assert values == sorted(values) and all(0 <= v <= 1 for v in values)
    assert fit_platt([0.9] * 5, [1] * 5)["a"] < 1e3  # every value right: finite weights


def test_review_threshold_reaches_the_precision():
    scores = [0.99] * 90 + [0.8] * 10 + [0.5] * 10
    correct = [1] * 89 + [0] + [1] * 5 + [0] * 5 + [0] * 10
    threshold, precision, coverage = review_threshold(scores, correct, 0.98)
    assert (threshold, coverage) == (0.99, 90 / 110) and precision == pytest.approx(89 / 90)
    threshold, precision, coverage = review_threshold(scores, correct, 0.999)
    assert threshold > 1.0 and coverage == 0.0


def test_review_threshold_with_confidence_asks_the_lower_bound_to_reach_the_precision():
    # 1000 values at 0.99 of which 5 wrong (99.5% right), 1000 at 0.9 of which 20 wrong: the two together are 98.75%
    # right (95% lower bound, Wilson: 98.3%), the top thousand alone 99.5% (lower bound 99.0%).
    scores = [0.99] * 1000 + [0.9] * 1000
    correct = [0] * 5 + [1] * 995 + [0] * 20 + [1] * 980
    assert review_threshold(scores, correct, 0.985)[0] == 0.9  # the observed share: everything
    assert review_threshold(scores, correct, 0.985, confidence=0.95)[0] == 0.99
    assert precision_lower_bound(995, 1000, 0.95) == pytest.approx(0.9898, abs=1e-4)
    assert precision_lower_bound(1975, 2000, 0.95) == pytest.approx(0.9827, abs=1e-4)
    assert precision_lower_bound(995, 1000, 0.0) == 0.995
    assert precision_lower_bound(50, 50, 0.95) < 1.0


def record(words, labels, predictions, scores):
    return {"words": words, "labels": labels, "predictions": predictions, "scores": scores}


def test_field_outcomes_compare_normalised_values():
    gold = extract_fields([entity("total", "$1,250.00", 1.0, 0), entity("item_amount", "1.00", 1, 1),
                           entity("item_amount", "2.00", 1, 2)])
    predicted = extract_fields([entity("total", "1250.00 USD", 0.9, 0), entity("item_amount", "1.00", 0.8, 1),
                                entity("item_amount", "3.00", 0.7, 2), entity("vendor", "Acme", 0.6, 3)])
    assert sorted(field_outcomes(predicted, gold)) == [("item_amount", 0.7, False), ("item_amount", 0.8, True),
                                                       ("total", 0.9, True), ("vendor", 0.6, False)]


def test_fit_and_measure_trust_on_records():
    rng = random.Random(0)
    records, boxes = [], []
    for i in range(60):
        wrong = i % 4 == 0
        words = ["Total", f"{i}.00", "Date", "25/04/2023"]
        labels = ["O", "B-total", "O", "B-invoice_date"]
        # Wrong: the total read off the label below it ("Date"), less surely, and no invoice date.
        predictions = ["O", "O", "B-total", "O"] if wrong else ["O", "B-total", "O", "B-invoice_date"]
        scores = [0.99, 0.999, 0.9 if wrong else 0.99, 0.999 - rng.random() * 0.01]
        records.append(record(words, labels, predictions, scores))
        boxes.append([[0, 0, 10, 10], [20, 0, 30, 10], [0, 20, 10, 30], [20, 20, 30, 30]])
    trust, metrics = fit_trust(records, boxes, review_precision=0.95, dates=["25/04/2023"])
    assert trust["day_first"] is True and metrics["field_values"] == 60 * 2 - 15
    assert trust["calibration"]["method"] in ("platt", "isotonic")
    assert metrics["auto_precision"] >= 0.95 and metrics["auto_coverage"] > 0.8
    measured, tables = measure_trust(records, boxes, trust)
    assert measured["field_ece"] < measured["field_ece_model"]
    assert len(tables["calibrated"]) == 10 and not math.isnan(measured["auto_precision"])


# ------------------------------------------------------------------------------------------------ flags
def test_locale_and_day_first_flags(tmp_path, capsys):
    from layoutkit.apps import predict
    from layoutkit.apps import serve

    base = ["--model_name_or_path", "m", "--input", "x", "--output_dir", "o"]
    schema = tmp_path / "schema.json"
    schema.write_text('{"locale": "en_US", "fields": {"total": {"type": "amount", "required": true}}}')
    settings, _ = predict.parse_args(base + ["--schema", str(schema), "--locale", "de-DE", "--day_first", "false"])
    assert settings.field_schema.locale == "de-DE" and settings.field_schema.day_first is False
    assert settings.field_schema.required_fields() == ["total"]
    assert serve.parse_args(["--model", "m", "--locale", "fr_CH"])[0].field_schema.locale == "fr_CH"
    with pytest.raises(SystemExit):
        predict.parse_args(base + ["--locale", "xx_YY"])
    assert "unknown locale 'xx_YY'" in capsys.readouterr().err


def test_document_uncertainty_orders_label_studio_tasks():
    from layoutkit.apps.labelstudio_format import document_uncertainty

    sure = {"fields": {"total": {"score": 0.99}, "item_amount": {"multiple": True, "values": [{"score": 0.95}]}}}
    unsure = {"fields": {"total": {"score": 0.99}, "item_amount": {"multiple": True, "values": [{"score": 0.4}]}}}
    assert document_uncertainty(sure) == pytest.approx(0.05)
    assert document_uncertainty(unsure) == pytest.approx(0.6)
    assert document_uncertainty({"fields": {}}) == 1.0
    documents = sorted([sure, unsure, {"fields": {}}], key=lambda document: -document_uncertainty(document))
    assert documents[1] is unsure


def test_uncertainty_measures_count_what_there_is_to_correct():
    """`lowest_score` looks at the weakest value only; `expected_corrections` adds up the doubt over every value and
    counts a missing required field as one sure correction; `word_errors` adds up the model's doubt over every word."""
    from layoutkit.apps.labelstudio_format import UNCERTAINTY_MEASURES, document_uncertainty, uncertainty_rank

    short = {"fields": {"total": {"score": 0.5}}, "words": [{"score": 0.5}, {"score": 1.0}]}
    long = {"fields": {"total": {"score": 0.9}, "item_amount": {"multiple": True, "values": [
        {"score": 0.6}, {"score": 0.7}, {"score": 0.8}]}}, "words": [{"score": 0.9}] * 8}
    assert document_uncertainty(short) > document_uncertainty(long)
    assert document_uncertainty(short, "expected_corrections") == pytest.approx(0.5)
    assert document_uncertainty(long, "expected_corrections") == pytest.approx(1.0)
    assert document_uncertainty(short, "word_errors") == pytest.approx(0.5)
    assert document_uncertainty(long, "word_errors") == pytest.approx(0.8)
    missing = {"fields": {}, "review_reasons": [{"field": "total", "reason": "missing required field"},
                                                 {"field": "vendor", "reason": "low score"}]}
    assert document_uncertainty(missing, "expected_corrections") == 1.0
    assert uncertainty_rank(long, "expected_corrections") == (pytest.approx(1.0), pytest.approx(0.4))
    with pytest.raises(ValueError, match="unknown uncertainty measure 'entropy'"):
        document_uncertainty(short, "entropy")
    # predict.py offers exactly these measures.
    from layoutkit.apps.predict import PredictArguments

    assert typing.get_args(typing.get_type_hints(PredictArguments)["uncertainty"]) == tuple(UNCERTAINTY_MEASURES)


def test_uncertainty_rank_breaks_calibration_ties_with_the_model_scores():
    """Isotonic calibration gives many documents one calibrated score; the model's own scores order them."""
    from layoutkit.apps.labelstudio_format import uncertainty_rank

    calmer = {"fields": {"total": {"score": 0.938, "model_score": 0.97}}}
    shakier = {"fields": {"total": {"score": 0.938, "model_score": 0.81}}}
    uncalibrated = {"fields": {"total": {"score": 0.7}}}
    assert uncertainty_rank(calmer)[0] == uncertainty_rank(shakier)[0]
    assert sorted([calmer, shakier, uncalibrated], key=uncertainty_rank, reverse=True) == [uncalibrated, shakier, calmer]
    assert uncertainty_rank({"fields": {}}) == (1.0, 1.0)


def test_grouped_calibration_tells_confirmed_values_apart():
    """Values a check confirmed are right far more often at the same model score: a calibrator per group
    separates them, where one over all values cannot."""
    rng = random.Random(3)
    scores, correct, groups = [], [], []
    for _ in range(3000):
        checked = rng.random() < 0.5
        score = 0.9 + rng.random() * 0.1
        scores.append(score)
        correct.append(int(rng.random() < (0.995 if checked else 0.7)))
        groups.append(group_of("total", checked))
    chosen = choose_calibration(scores, correct, groups)
    assert chosen["chosen"].startswith("grouped-") and chosen["method"] == "grouped"
    assert chosen["heldout_brier"][chosen["chosen"]] < chosen["heldout_brier"][chosen["chosen"][len("grouped-"):]]
    assert calibrate(chosen, 0.95, "total+checked") > 0.97 > 0.8 > calibrate(chosen, 0.95, "total")
    assert calibrate(chosen, 0.95, "unseen") == pytest.approx(calibrate(chosen["groups"]["default"], 0.95))


def test_confirmed_values_are_calibrated_in_their_group():
    calibration = {"method": "grouped", "base": "platt",
                   "groups": {"default": {"method": "platt", "a": 1.0, "b": 0.0},
                              "total+checked": {"method": "platt", "a": 1.0, "b": 5.0}}}
    document = assess_document(invoice(), None, {"calibration": calibration, "review_threshold": 0.99})
    total = document["fields"]["total"]
    assert total["model_score"] == 0.97 and total["score"] > 0.99 and not total["needs_review"]
    failed = assess_document(invoice(total="184.00"), None, {"calibration": calibration, "review_threshold": 0.99})
    assert failed["fields"]["total"]["score"] == pytest.approx(0.97, abs=1e-4)


def test_a_document_settles_its_own_ambiguous_dates():
    """The due date 18/02/2021 can only be day first: the invoice date 03/02/2021 of the same document is then
    the 3rd of February (not March 2nd, before the due date), and nothing is ambiguous."""
    document = assess_document([entity("invoice_date", "03/02/2021", 0.99, 0), entity("due_date", "18/02/2021", 0.99, 1)])
    assert document["fields"]["invoice_date"]["normalized"] == "2021-02-03"
    assert "ambiguous" not in document["fields"]["invoice_date"]
    assert checks_by_name(document)["due_after_invoice_date"]["ok"]
    alone = assess_document([entity("invoice_date", "03/02/2021", 0.99, 0)])
    assert alone["fields"]["invoice_date"]["ambiguous"] and alone["review_reasons"][0]["reason"] == "ambiguous date"
