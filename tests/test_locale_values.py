"""Dates and amounts across locales: the babel (CLDR) oracle and the cases it stands for."""

import pytest

from layoutkit.pipelines.fields import (
    FieldSchema,
    FieldSpec,
    day_first_from_dates,
    locale_facts,
    normalize_value,
    parse_amount,
    parse_date,
    read_date,
)

babel = pytest.importorskip("babel", reason="the locale suite is generated with babel: pip install babel")


def test_babel_suite_reads_back_with_the_locale():
    from layoutkit.apps.locale_suite import generate_cases, run_suite

    cases = generate_cases(seed=1)
    result = run_suite(cases)
    assert result["cases"] >= 1000 and result["locales"] >= 20
    assert {"date", "amount"} <= set(result["by_kind"])
    assert result["pass_rate"] >= 0.995, result["failures"][:20]


def test_babel_suite_without_locale_flags_what_it_cannot_settle():
    """Without a locale a numeric date whose day and month are both <= 12 is read M/D and flagged, never
    silently wrong (Korean two-digit-year-first dates need the locale)."""
    from layoutkit.apps.locale_suite import generate_cases, run_suite

    cases = [case for case in generate_cases(seed=2) if case.kind == "date" and case.locale != "ko_KR"]
    result = run_suite(cases, with_locale=False)
    assert result["wrong_unflagged"] == 0, result["failures"][:20]
    assert result["ambiguous"] > 0


@pytest.mark.parametrize("text, expected", [
    ("5. Januar 2023", "2023-01-05"), ("5 janvier 2023", "2023-01-05"), ("5 de enero de 2023", "2023-01-05"),
    ("5 gennaio 2023", "2023-01-05"), ("5 de janeiro de 2023", "2023-01-05"), ("5 januari 2023", "2023-01-05"),
    ("5 января 2023\u202fг.", "2023-01-05"), ("5 янв. 2023 г.", "2023-01-05"), ("23 listopada 2021", "2021-11-23"),
    ("2023. január 5.", "2023-01-05"), ("2023年1月5日", "2023-01-05"), ("2023년 1월 5일", "2023-01-05"),
    ("5 Ocak 2023", "2023-01-05"), ("5. tammikuuta 2023", "2023-01-05"), ("5 Ιανουαρίου 2023", "2023-01-05"),
    ("5 d’abr. 2023", "2023-04-05"), ("jeudi 5 janvier 2023", "2023-01-05"), ("5. Jänner 2023", "2023-01-05"),
])
def test_month_names_in_many_languages(text, expected):
    assert parse_date(text) == (expected, None)


def test_locale_settles_day_and_month():
    assert read_date("03/04/2021").ambiguous  # M/D by default, flagged
    assert read_date("03/04/2021", locale="en_GB") == read_date("03/04/2021", day_first=True)
    assert read_date("03/04/2021", locale="en_GB").iso == "2021-04-03"
    assert read_date("03/04/2021", locale="en_US").iso == "2021-03-04"
    assert not read_date("03/04/2021", locale="en_US").ambiguous
    assert read_date("23. 1. 5.", locale="ko_KR").iso == "2023-01-05"
    # day_first wins over the locale; a number above 12 wins over both.
    assert read_date("03/04/2021", day_first=False, locale="en_GB").iso == "2021-03-04"
    assert read_date("13/04/2021", locale="en_US").iso == "2021-04-13"


@pytest.mark.parametrize("text, locale, amount, currency", [
    ("1.234,56 €", None, "1234.56", "EUR"), ("1\u202f234,56\u00a0€", None, "1234.56", "EUR"),
    ("1 234,56 €", None, "1234.56", "EUR"), ("CHF 1'234.56", None, "1234.56", "CHF"),
    ("1’234.56 CHF", None, "1234.56", "CHF"), ("1 234,50 $US", None, "1234.50", "USD"),
    ("1 234,50 $ US", None, "1234.50", "USD"), ("USD1,234.50", None, "1234.50", "USD"),
    ("-1 234,56 zł", None, "-1234.56", "PLN"), ("kr.866,28", "da_DK", "866.28", "DKK"),
    ("1 234,56 kr", "nb_NO", "1234.56", "NOK"), ("1 234,56 kr", None, "1234.56", None),
    ("$5.67", "en_CA", "5.67", "CAD"), ("$5.67", None, "5.67", "USD"), ("R$ 1.234,56", None, "1234.56", "BRL"),
    ("¥1,234.56", "zh_CN", "1234.56", "CNY"), ("￥1,235", "ja_JP", "1235", "JPY"),
    ("1.234", "de_DE", "1234", None), ("1.234", "en_US", "1.234", None), ("1,234", "de_DE", "1.234", None),
    ("€ -1.234,56", "nl_NL", "-1234.56", "EUR"), ("CHF-1234.50", "de_CH", "-1234.50", "CHF"),
])
def test_amounts_across_locales(text, locale, amount, currency):
    assert parse_amount(text, locale) == ({"amount": amount, "currency": currency}, None)


def test_locale_names_and_errors():
    assert locale_facts("de-de") == locale_facts("de_DE") and locale_facts("pt")["currency"] == "BRL"
    assert locale_facts("de_LU")["decimal"] == ","  # an unknown territory takes the language's first locale
    with pytest.raises(ValueError, match="unknown locale 'xx_YY'; known: en_US"):
        locale_facts("xx_YY")
    with pytest.raises(ValueError, match="schema: locale: unknown locale 'klingon'"):
        FieldSchema.load({"locale": "klingon"})


def test_schema_locale_reaches_the_values():
    schema = FieldSchema.load({"locale": "de_DE"})
    assert normalize_value("03.04.2021", FieldSpec("date"), schema) == {"normalized": "2021-04-03"}
    assert normalize_value("1.250", FieldSpec("amount"), schema) == {"normalized": "1250", "currency": None}
    assert schema.to_dict()["locale"] == "de_DE"


def test_day_first_from_dates():
    assert day_first_from_dates(["25/04/2023", "03/04/2021", "April 5, 2023"]) is True
    assert day_first_from_dates(["04/25/2023", "03/04/2021"]) is False
    assert day_first_from_dates(["03/04/2021", "2023-04-25"]) is None  # nothing settles it
    assert day_first_from_dates(["25/04/2023", "04/25/2023"]) is None  # the data mixes both
