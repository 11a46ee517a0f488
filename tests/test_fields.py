"""Typed field values from entity spans: date/amount/number parsing, schemas, span merging, field choice."""

import json

import pytest

from layoutkit.pipelines.field_checks import CheckConfig

from layoutkit.pipelines.fields import (
    FIELD_TYPES,
    FieldSchema,
    FieldSpec,
    date_is_ambiguous,
    default_spec,
    extract_fields,
    merge_continuations,
    normalize_value,
    parse_amount,
    parse_date,
    parse_number,
)


def entity(group, word, score=0.9, start=0, end=None, box=(0, 0, 10, 10), page=None, **extra):
    span = {"entity_group": group, "score": score, "word": word, "start": start,
            "end": start + len(word.split()) if end is None else end, "box": list(box), **extra}
    if page is not None:
        span["page"] = page
    return span


# ------------------------------------------------------------------------------------------------ dates
@pytest.mark.parametrize("text", [
    "2023-04-05", "2023/04/05", "2023.04.05", "20230405", "2023 - 04 - 05", "2023-04-05T10:30:00",
    "04/05/2023", "04-05-2023", "04/05/23", "5.4.2023", "05.04.2023",
    "April 5, 2023", "Apr 5, 2023", "APRIL 5 2023", "apr 05 2023", "5 Apr 2023", "5 April 2023", "05 Apr. 2023",
    "5th April 2023", "April 5th, 2023", "Wednesday, 5th of April 2023", "05-Apr-2023", "2023-Apr-05", "5 Apr 23",
    " 5 Apr 2023. ", ":April 5, 2023",
])
def test_parse_date_formats(text):
    assert parse_date(text) == ("2023-04-05", None)


@pytest.mark.parametrize("text, expected", [
    ("Sept 9, 2021", "2021-09-09"), ("9 Sep 2021", "2021-09-09"), ("1 jan 2020", "2020-01-01"),
    ("31 December 1999", "1999-12-31"), ("Feb 29, 2024", "2024-02-29"), ("2nd March 2022", "2022-03-02"),
    ("21st May 2022", "2022-05-21"), ("3rd Aug 2022", "2022-08-03"),
])
def test_parse_date_month_names(text, expected):
    assert parse_date(text) == (expected, None)


@pytest.mark.parametrize("text, expected", [
    ("05/04/69", "2069-04-05"), ("05/04/70", "1970-04-05"), ("31/12/99", "1999-12-31"), ("01/02/00", "2000-02-01"),
])
def test_two_digit_years(text, expected):
    assert parse_date(text, day_first=True) == (expected, None)


def test_numeric_day_month_order():
    # A number above 12 settles the order whatever day_first says.
    assert parse_date("25/04/2023") == ("2023-04-25", None)
    assert parse_date("25/04/2023", day_first=False) == ("2023-04-25", None)
    assert parse_date("04/25/2023", day_first=True) == ("2023-04-25", None)
    # Both <= 12: day_first decides; unset reads month first (US), dotted dates day first.
    assert parse_date("03/04/2021") == ("2021-03-04", None)
    assert parse_date("03/04/2021", day_first=False) == ("2021-03-04", None)
    assert parse_date("03/04/2021", day_first=True) == ("2021-04-03", None)
    assert parse_date("03.04.2021") == ("2021-04-03", None)
    assert parse_date("03.04.2021", day_first=False) == ("2021-03-04", None)


@pytest.mark.parametrize("text, ambiguous", [
    ("03/04/2021", True), ("03-04-21", True), ("25/04/2023", False), ("04/25/2023", False), ("04/04/2023", False),
    ("03.04.2021", False), ("2021-03-04", False), ("April 3, 2021", False), ("not a date", False),
])
def test_date_is_ambiguous(text, ambiguous):
    assert date_is_ambiguous(text) is ambiguous


@pytest.mark.parametrize("text, reason", [
    ("2023-02-30", "not a valid calendar date"),
    ("31/04/2023", "not a valid calendar date"),
    ("13/13/2023", "not a valid calendar date"),
    ("Feb 29, 2023", "not a valid calendar date"),
    ("", "no date found"),
    (" - ", "no date found"),
    ("April 2023", "a date needs a day, a month and a year"),
    ("soon", "unrecognised word 'soon' in a date"),
    ("12345", "not a recognised date format"),
    ("April May 5 2023", "more than one month name"),
])
def test_parse_date_failures(text, reason):
    assert parse_date(text) == (None, reason)


# ---------------------------------------------------------------------------------------------- amounts
@pytest.mark.parametrize("text, amount, currency", [
    # US / UK
    ("$1,250.00", "1250.00", "USD"), ("1,250", "1250", None), ("12.5", "12.5", None), ("USD 99.99", "99.99", "USD"),
    ("£7.20", "7.20", "GBP"), ("1,250,000.5", "1250000.5", None), ("0.99", "0.99", None), (".50", "0.50", None),
    # European
    ("1.056,24 €", "1056.24", "EUR"), ("EUR 3.400,00", "3400.00", "EUR"), ("1.250", "1250", None),
    ("12,50", "12.50", None), ("1.250.000", "1250000", None), ("0,500", "0.500", None),
    # Swiss, spaces, Indian grouping
    ("1'250.00", "1250.00", None), ("CHF 1'250.-", "1250", "CHF"), ("1 250,00", "1250.00", None),
    ("12 345 678.90 kr", "12345678.90", None), ("1\u202f250,00\u00a0€", "1250.00", "EUR"),
    ("₹1,25,000.00", "125000.00", "INR"),
    # Currencies by symbol and code
    ("RM12.50", "12.50", "MYR"), ("¥1,250", "1250", "JPY"), ("€5", "5", "EUR"), ("12.00 eur", "12.00", "EUR"),
    ("C$5.00", "5.00", "CAD"), ("HK$ 80", "80", "HKD"), ("CAD $5.00", "5.00", "CAD"), ("USD $5.00", "5.00", "USD"),
    ("SGD 7", "7", "SGD"), ("Rs. 450", "450", "INR"), ("1234.567", "1234.567", None),
    # Negatives
    ("-45.00", "-45.00", None), ("(45.00)", "-45.00", None), ("45.00-", "-45.00", None), ("$-45.00", "-45.00", "USD"),
    ("−45.00 €", "-45.00", "EUR"), ("-0.00", "0.00", None),
])
def test_parse_amount(text, amount, currency):
    assert parse_amount(text) == ({"amount": amount, "currency": currency}, None)


@pytest.mark.parametrize("text, reason", [
    ("", "no number found"), ("€", "no number found"), ("N/A", "no number found"),
    ("12.00 15.00", "more than one number"), ("$12.00 / $15.00", "more than one number"),
    ("1 2", "more than one number"),
    ("EUR 5.00 USD", "more than one currency (EUR, USD)"), ("£5 €5", "more than one number"),
    ("10%", "a percentage, not an amount"),
    ("12.00,15.00", "unclear digit grouping in '12.00,15.00'"), ("1.2.3", "unclear digit grouping in '1.2.3'"),
])
def test_parse_amount_failures(text, reason):
    assert parse_amount(text) == (None, reason)


@pytest.mark.parametrize("text, number", [
    ("2", "2"), ("10", "10"), ("1.5", "1.5"), ("1,5", "1.5"), ("x3", "3"), ("3 pcs", "3"), ("1,500", "1500"),
    ("-1", "-1"), ("007", "7"),
])
def test_parse_number(text, number):
    assert parse_number(text) == (number, None)


def test_parse_number_failures():
    assert parse_number("a few") == (None, "no number found")
    assert parse_number("2 x 3") == (None, "more than one number")


# ---------------------------------------------------------------------------------------- specs, schema
@pytest.mark.parametrize("name, value_type, multiple", [
    ("vendor", "text", False), ("invoice_number", "text", False), ("invoice_date", "date", False),
    ("due_date", "date", False), ("item_description", "text", True), ("item_amount", "amount", True),
    ("subtotal", "amount", False), ("tax", "amount", False), ("total", "amount", False),
    ("QUESTION", "text", True), ("ANSWER", "text", True), ("HEADER", "text", True), ("answer", "text", True),
    ("line_quantity", "number", True), ("qty", "number", False), ("TOTAL_AMOUNT", "amount", False),
    ("bill_to", "text", False), ("line_items", "text", True), ("unit_price", "amount", False),
    ("tax_id", "text", False), ("vat_number", "text", False), ("OTHER", "text", False),
])
def test_default_spec(name, value_type, multiple):
    assert default_spec(name) == FieldSpec(type=value_type, multiple=multiple)


def test_schema_load_values(tmp_path):
    assert FieldSchema.load(None) == FieldSchema()
    schema = FieldSchema(fields={"total": FieldSpec("amount")}, day_first=True)
    assert FieldSchema.load(schema) is schema
    loaded = FieldSchema.load({"fields": {"ref": {"type": "number"}, "item_amount": {"multiple": False}}})
    assert loaded.day_first is None
    assert loaded.spec("ref") == FieldSpec("number")
    # Keys a field leaves out keep the guess from its name.
    assert loaded.spec("item_amount") == FieldSpec("amount", multiple=False)
    assert loaded.spec("REF") == FieldSpec("number")
    assert loaded.spec("vendor") == default_spec("vendor")
    assert FieldSchema.load(loaded.to_dict()) == loaded


def test_schema_load_file(tmp_path):
    path = tmp_path / "schema.json"
    path.write_text(json.dumps({"day_first": True, "fields": {
        "invoice_date": {"type": "date"}, "total": {"type": "amount"},
        "item_amount": {"type": "amount", "multiple": True}}}))
    for value in (path, str(path)):
        schema = FieldSchema.load(value)
        assert schema.day_first is True
        assert schema.fields == {"invoice_date": FieldSpec("date"), "total": FieldSpec("amount"),
                                 "item_amount": FieldSpec("amount", True)}
    assert schema.to_dict() == {"day_first": True, "locale": None, "fields": {
        "invoice_date": {"type": "date", "multiple": False}, "total": {"type": "amount", "multiple": False},
        "item_amount": {"type": "amount", "multiple": True}}, "checks": CheckConfig().to_dict()}


@pytest.mark.parametrize("data, message", [
    ({"day_first": True, "feilds": {}}, "schema.json: unknown key 'feilds'; allowed keys: day_first, locale, fields, checks"),
    ({"fields": {"total": {"type": "money"}}},
     "schema.json: fields.total.type: 'money' is not one of text, date, amount, number"),
    ({"fields": {"total": {"typ": "amount"}}},
     "schema.json: fields.total: unknown key 'typ'; allowed keys: type, multiple, required"),
    ({"fields": {"item_amount": {"multiple": "yes"}}},
     "schema.json: fields.item_amount.multiple: must be true or false, got 'yes'"),
    ({"day_first": "yes"}, "schema.json: day_first: must be true, false or null, got 'yes'"),
    ({"day_first": 1}, "schema.json: day_first: must be true, false or null, got 1"),
    ({"fields": ["total"]}, "schema.json: fields: must be an object"),
    ({"fields": {"total": "amount"}}, "schema.json: fields.total: must be an object like"),
    (["total"], "schema.json: a schema is a JSON object like"),
])
def test_schema_file_errors(tmp_path, data, message):
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError) as error:
        FieldSchema.load(path)
    assert str(error.value).startswith(str(tmp_path / message))


def test_schema_dict_errors_name_schema():
    with pytest.raises(ValueError, match=r"^schema: fields\.total\.type: 'money' is not one of"):
        FieldSchema.load({"fields": {"total": {"type": "money"}}})


def test_schema_missing_or_broken_file(tmp_path):
    missing = tmp_path / "nope.json"
    with pytest.raises(ValueError, match=f"schema file {missing} not found"):
        FieldSchema.load(missing)
    broken = tmp_path / "broken.json"
    broken.write_text("{fields: ")
    with pytest.raises(ValueError, match=f"{broken}: not valid JSON"):
        FieldSchema.load(broken)
    with pytest.raises(TypeError):
        FieldSchema.load(3)


def test_field_spec_checks_type():
    assert set(FIELD_TYPES) == {"text", "date", "amount", "number"}
    with pytest.raises(ValueError, match="'money' is not one of text, date, amount, number"):
        FieldSpec("money")


# ------------------------------------------------------------------------------------------ normalising
def test_normalize_value():
    schema = FieldSchema()
    assert normalize_value("  ACME \n Corp ", FieldSpec("text"), schema) == {"normalized": "ACME Corp"}
    assert normalize_value("03/04/2021", FieldSpec("date"), schema) == {"normalized": "2021-03-04", "ambiguous": True}
    # A schema that fixes day_first resolves the ambiguity.
    day_first = FieldSchema(day_first=True)
    assert normalize_value("03/04/2021", FieldSpec("date"), day_first) == {"normalized": "2021-04-03"}
    assert normalize_value("2023-02-30", FieldSpec("date"), schema) == {"normalized": None,
                                                                          "error": "not a valid calendar date"}
    assert normalize_value("£7.20", FieldSpec("amount"), schema) == {"normalized": "7.20", "currency": "GBP"}
    assert normalize_value("n/a", FieldSpec("amount"), schema) == {"normalized": None, "currency": None,
                                                                     "error": "no number found"}
    assert normalize_value("x3", FieldSpec("number")) == {"normalized": "3"}
    assert normalize_value("many", FieldSpec("number")) == {"normalized": None, "error": "no number found"}


# ---------------------------------------------------------------------------------------------- merging
def test_merge_adjacent_words():
    spans = [entity("vendor", "ACME", 0.9, start=0, box=(10, 10, 60, 30), page=2),
             entity("vendor", "Corp Ltd", 0.6, start=1, box=(70, 12, 150, 30), page=2)]
    original = [dict(span, box=list(span["box"])) for span in spans]
    merged = merge_continuations(spans)
    assert merged == [{"entity_group": "vendor", "score": pytest.approx((0.9 + 2 * 0.6) / 3), "word": "ACME Corp Ltd",
                       "start": 0, "end": 3, "box": [10, 10, 150, 30], "page": 2}]
    assert spans == original  # inputs untouched


def test_merge_weights_by_num_words():
    spans = [entity("vendor", "ACME", 0.9, start=0, end=1, num_words=3),
             entity("vendor", "Corp", 0.5, start=1, end=2, num_words=1)]
    merged = merge_continuations(spans)
    assert merged[0]["score"] == pytest.approx((3 * 0.9 + 0.5) / 4)
    assert merged[0]["num_words"] == 4


def test_merge_next_line_below():
    # An address over three lines (other words between them in word order), left-aligned or overlapping.
    spans = [entity("address", "1 Main Street", 0.9, start=3, box=(100, 100, 220, 120)),
             entity("address", "Springfield", 0.8, start=9, box=(102, 126, 190, 146)),
             entity("address", "IL 62704 USA", 0.7, start=15, box=(60, 150, 160, 170))]
    merged = merge_continuations(spans)
    assert len(merged) == 1
    assert merged[0]["word"] == "1 Main Street Springfield IL 62704 USA"
    assert (merged[0]["start"], merged[0]["end"]) == (3, 18)
    assert merged[0]["box"] == [60, 100, 220, 170]


@pytest.mark.parametrize("second", [
    entity("address", "far below", start=9, box=(100, 200, 200, 220)),  # gap of 80 > line height 20
    entity("address", "other column", start=9, box=(400, 126, 500, 146)),  # next line, far right
    entity("address", "same line", start=9, box=(300, 100, 380, 120)),  # same line, words between
    entity("address", "above", start=9, box=(100, 60, 200, 80)),
    entity("vendor", "other type", start=4, box=(100, 126, 200, 146)),
    entity("address", "other page", start=4, box=(100, 126, 200, 146), page=2),
])
def test_not_merged(second):
    first = entity("address", "1 Main Street", start=1, box=(100, 100, 220, 120), page=1)
    second = dict(second, page=second.get("page", 1))
    assert [span["word"] for span in merge_continuations([first, second])] == [first["word"], second["word"]]


def test_merge_continuation_across_other_types_as_ocr_reads_a_table():
    # OCR reads an item table line by line: the second line of the first description ("delivered to site", opened
    # by an I- tag) comes after the first line's amount, and the next item's description (opened by B-) right after
    # it in word order. The continuation joins its description; the B- span starts a value of its own.
    spans = [entity("item_description", "Cleaning Service", start=0, box=(60, 400, 200, 418), continuation=False),
             entity("item_amount", "1.004,00", start=2, box=(600, 400, 660, 418), continuation=False),
             entity("item_description", "delivered to site", start=3, box=(60, 422, 190, 440), continuation=True),
             entity("item_description", "Shipping incl.", start=6, box=(60, 446, 170, 464), continuation=False),
             entity("item_amount", "2.171,61", start=8, box=(600, 446, 660, 464), continuation=False),
             entity("item_description", "installation", start=9, box=(60, 468, 150, 486), continuation=True)]
    merged = merge_continuations(spans)
    assert [span["word"] for span in merged] == ["Cleaning Service delivered to site", "1.004,00",
                                                 "Shipping incl. installation", "2.171,61"]
    assert all("continuation" not in span for span in merged)


def test_new_value_opened_by_b_tag_never_merges():
    # Adjacent in word order and on the next line, but the model opened it with B-: two values.
    spans = [entity("item_description", "Custom Chair", start=0, box=(60, 400, 200, 418), continuation=False),
             entity("item_description", "Office Desk", start=2, box=(60, 422, 190, 440), continuation=False)]
    assert [span["word"] for span in merge_continuations(spans)] == ["Custom Chair", "Office Desk"]


def test_continuation_too_far_below_stays_alone():
    spans = [entity("vendor", "ACME", start=0, box=(60, 100, 200, 118), continuation=False),
             entity("vendor", "Corp", start=5, box=(60, 300, 190, 318), continuation=True)]
    assert [span["word"] for span in merge_continuations(spans)] == ["ACME", "Corp"]


def test_split_date_and_amount_pieces_are_joined_when_only_together_they_parse():
    entities = [entity("due_date", "Jul", 0.97, start=4, box=(100, 50, 130, 66)),
                entity("due_date", "27, 2023", 0.95, start=5, box=(134, 50, 200, 66)),
                entity("total", "EUR", 0.9, start=9, box=(100, 300, 130, 316)),
                entity("total", "1.234,56", 0.99, start=10, box=(134, 300, 200, 316))]
    fields = extract_fields(entities, {"locale": "de_DE"})
    assert (fields["due_date"]["value"], fields["due_date"]["normalized"]) == ("Jul 27, 2023", "2023-07-27")
    assert fields["due_date"]["candidates"] == [fields["due_date"]["candidates"][0]]
    assert (fields["total"]["normalized"], fields["total"]["currency"]) == ("1234.56", "EUR")


@pytest.mark.parametrize("second", [
    entity("item_amount", "4.00", start=2, box=(134, 50, 200, 66)),  # both parse alone: two values of a column
    entity("item_amount", "4.00", start=3, box=(134, 50, 200, 66)),  # a word between them
    entity("item_amount", "EUR", start=2, box=(100, 80, 130, 96)),  # on the next line
])
def test_values_that_parse_alone_or_are_apart_stay_apart(second):
    first = entity("item_amount", "12.00", start=1, box=(60, 50, 100, 66))
    values = extract_fields([first, second])["item_amount"]["values"]
    assert [value["text"] for value in values] == ["12.00", second["word"]]


def test_merge_only_consecutive_spans():
    spans = [entity("vendor", "ACME", start=0, box=(10, 10, 60, 30)),
             entity("total", "$5", start=1, box=(70, 10, 90, 30)),
             entity("vendor", "Corp", start=2, box=(100, 10, 140, 30))]
    assert [span["word"] for span in merge_continuations(spans)] == ["ACME", "$5", "Corp"]


# ------------------------------------------------------------------------------------------- extracting
def test_extract_fields_picks_highest_score_with_candidates():
    entities = [
        entity("total", "$1,200.00", 0.61, start=10, box=(500, 400, 580, 420)),
        entity("total", "$1,250.00", 0.97, start=40, box=(500, 800, 580, 820)),
        entity("invoice_date", "05/04/2023", 0.9, start=5, box=(400, 100, 480, 120)),
        entity("vendor", "ACME", 0.99, start=0, box=(50, 40, 120, 70)),
        entity("vendor", "Corp", 0.95, start=1, box=(125, 40, 190, 70)),
    ]
    fields = extract_fields(entities)
    assert list(fields) == ["invoice_date", "total", "vendor"]
    total = fields["total"]
    assert total == {
        "type": "amount", "value": "$1,250.00", "normalized": "1250.00", "currency": "USD", "score": 0.97,
        "box": [500, 800, 580, 820], "page": 1,
        "candidates": [
            {"text": "$1,200.00", "score": 0.61, "box": [500, 400, 580, 420], "page": 1, "normalized": "1200.00",
             "currency": "USD"},
            {"text": "$1,250.00", "score": 0.97, "box": [500, 800, 580, 820], "page": 1, "normalized": "1250.00",
             "currency": "USD"},
        ],
    }
    assert fields["invoice_date"]["normalized"] == "2023-05-04"
    assert fields["invoice_date"]["ambiguous"] is True
    assert fields["vendor"]["value"] == "ACME Corp"
    assert fields["vendor"]["score"] == 0.97
    assert len(fields["vendor"]["candidates"]) == 1


def test_extract_fields_ties_keep_the_earlier_candidate():
    entities = [entity("total", "9.00", 0.8, start=20, box=(10, 300, 50, 320)),
                entity("total", "7.00", 0.8, start=2, box=(10, 100, 50, 120))]
    assert extract_fields(entities)["total"]["value"] == "7.00"


def test_extract_fields_schema_day_first_and_types():
    entities = [entity("invoice_date", "05/04/2023", start=0), entity("ref", "1,5", start=3, box=(0, 50, 10, 60))]
    fields = extract_fields(entities, {"day_first": True, "fields": {"ref": {"type": "number"}}})
    assert fields["invoice_date"]["normalized"] == "2023-04-05"
    assert "ambiguous" not in fields["invoice_date"]
    assert fields["ref"]["type"] == "number" and fields["ref"]["normalized"] == "1.5"


def test_extract_fields_multi_page():
    entities = [
        entity("total", "€ 99,00", 0.7, start=30, box=(500, 700, 580, 720), page=1),
        entity("vendor", "ACME", 0.9, start=0, box=(50, 40, 120, 70), page=1),
        entity("total", "€ 1.056,24", 0.95, start=12, box=(500, 300, 580, 320), page=2),
        # Same start index as the vendor on page 1: spans of different pages never merge.
        entity("vendor", "Ltd", 0.5, start=1, box=(125, 40, 190, 70), page=2),
    ]
    fields = extract_fields(entities)
    total = fields["total"]
    assert (total["value"], total["normalized"], total["currency"]) == ("€ 1.056,24", "1056.24", "EUR")
    assert total["page"] == 2
    assert [(c["page"], c["text"]) for c in total["candidates"]] == [(1, "€ 99,00"), (2, "€ 1.056,24")]
    assert [(c["page"], c["text"]) for c in fields["vendor"]["candidates"]] == [(1, "ACME"), (2, "Ltd")]
    assert fields["vendor"]["page"] == 1


def test_extract_fields_page_defaults_to_one():
    fields = extract_fields([entity("total", "5.00")])
    assert fields["total"]["page"] == 1


def test_extract_fields_multiple_values_in_reading_order():
    entities = [
        entity("item_description", "Widget A", 0.9, start=20, box=(50, 300, 200, 320)),
        entity("item_amount", "$10.00", 0.9, start=23, box=(500, 300, 580, 320)),
        entity("item_description", "Widget B", 0.8, start=24, box=(50, 340, 200, 360)),
        entity("item_amount", "oops", 0.6, start=27, box=(500, 340, 580, 360)),
        entity("item_amount", "$7.50", 0.7, start=40, box=(500, 100, 580, 120), page=2),
    ]
    fields = extract_fields(entities)
    assert fields["item_description"] == {"type": "text", "multiple": True, "values": [
        {"text": "Widget A", "normalized": "Widget A", "score": 0.9, "box": [50, 300, 200, 320], "page": 1},
        {"text": "Widget B", "normalized": "Widget B", "score": 0.8, "box": [50, 340, 200, 360], "page": 1},
    ]}
    amounts = fields["item_amount"]["values"]
    assert [(v["text"], v["normalized"], v["page"]) for v in amounts] == [
        ("$10.00", "10.00", 1), ("oops", None, 1), ("$7.50", "7.50", 2)]
    assert amounts[1]["error"] == "no number found"
    assert amounts[0]["currency"] == "USD"


def test_extract_fields_reading_order_by_line_then_left():
    # The right-hand answer sits a pixel higher than the left one on the same line.
    entities = [entity("ANSWER", "left", start=0, box=(10, 101, 60, 121)),
                entity("ANSWER", "right", start=5, box=(300, 100, 360, 120)),
                entity("ANSWER", "below", start=9, box=(10, 200, 60, 220))]
    values = extract_fields(entities)["ANSWER"]["values"]
    assert [value["text"] for value in values] == ["left", "right", "below"]


def test_extract_fields_unparseable_best_keeps_raw_text_and_error():
    entities = [entity("total", "TOTAL DUE", 0.9, start=10, box=(400, 500, 480, 520)),
                entity("total", "$12.00", 0.8, start=30, box=(500, 600, 560, 620))]
    total = extract_fields(entities)["total"]
    assert total["value"] == "TOTAL DUE"
    assert total["normalized"] is None and total["currency"] is None
    assert total["error"] == "no number found"
    assert total["candidates"][1]["normalized"] == "12.00"


def test_extract_fields_empty():
    assert extract_fields([]) == {}


def test_amounts_one_below_the_other_stay_separate_values():
    """A table column read top to bottom (as OCR sometimes does): each amount is its own value, while a text field
    broken over two lines is one value."""
    def entity(group, word, start, end, box):
        return {"entity_group": group, "score": 0.9, "word": word, "start": start, "end": end, "box": box, "page": 1}

    entities = [
        entity("item_amount", "12.00", 10, 11, [500, 100, 560, 115]),
        entity("item_amount", "15.50", 11, 12, [500, 120, 560, 135]),
        entity("vendor", "Blue River", 0, 2, [10, 10, 90, 25]),
        entity("vendor", "Supplies Ltd", 5, 7, [10, 30, 95, 45]),
    ]
    fields = extract_fields(entities)
    assert [v["normalized"] for v in fields["item_amount"]["values"]] == ["12.00", "15.50"]
    assert fields["vendor"]["value"] == "Blue River Supplies Ltd"
