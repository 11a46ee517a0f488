"""The locale suite: dates and amounts as CLDR writes them in every locale the value parser knows, read back.

babel (CLDR; a test/dev dependency, `pip install babel`) formats random dates (short, medium and long
patterns) and amounts (`format_currency` in the locale's currency, US dollars and euros, with the symbol or the
ISO code before or after, negatives; `format_decimal` with 2-3 fraction digits) in each locale of
`locale_data.LOCALES`; `run_suite` parses each with `layoutkit.pipelines.fields` given the locale and counts what reads
back exactly (the same date; the same amount and currency). Without a locale the parser may not settle day and
month; `run_suite(..., with_locale=False)` counts how often it then reads wrongly without flagging "ambiguous".

    python -m layoutkit.apps.locale_suite        # prints the pass rates and the failures
"""

from __future__ import annotations

import datetime
import random
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal

from ..pipelines.fields import parse_amount, read_date
from ..pipelines.locale_data import LOCALES

DATE_WIDTHS = ("short", "medium", "long")


@dataclass
class Case:
    kind: str  # "date" or "amount"
    locale: str
    text: str
    expected: object  # ISO date, or (Decimal amount, currency code or None)


def _babel():
    try:
        import babel.dates
        import babel.numbers
    except ImportError:
        raise ImportError("the locale suite formats its cases with babel: pip install babel") from None
    return babel.dates, babel.numbers


def generate_cases(seed: int = 0, dates_per_locale: int = 10, amounts_per_locale: int = 8) -> list[Case]:
    """`dates_per_locale` dates x 3 widths and `amounts_per_locale` amounts x several styles per locale."""
    dates, numbers = _babel()
    rng = random.Random(seed)
    cases = []
    for locale, facts in LOCALES.items():
        for _ in range(dates_per_locale):
            day = datetime.date(1975, 1, 1) + datetime.timedelta(days=rng.randint(0, 90 * 365))
            for width in DATE_WIDTHS:
                cases.append(Case("date", locale, dates.format_date(day, width, locale=locale), day.isoformat()))
        for index in range(amounts_per_locale):
            digits = rng.choice((3, 5, 7, 9))
            value = Decimal(rng.randint(10, 10**digits)) / 100
            if index % 4 == 3:
                value = -value
            for currency in (facts["currency"], "USD", "EUR"):
                precision = numbers.get_currency_precision(currency)
                expected = (value.quantize(Decimal(1).scaleb(-precision), ROUND_HALF_EVEN), currency)
                cases.append(Case("amount", locale, numbers.format_currency(value, currency, locale=locale), expected))
            currency = facts["currency"]
            precision = numbers.get_currency_precision(currency)
            pattern = rng.choice(("¤¤ #,##0.00", "#,##0.00 ¤¤", "#,##0.00¤", "¤#,##0.00"))
            text = numbers.format_currency(value, currency, pattern, locale=locale, currency_digits=False)
            cases.append(Case("amount", locale, text, (value.quantize(Decimal("0.01"), ROUND_HALF_EVEN), currency)))
            fraction = Decimal(rng.randint(1, 10**digits)) / 1000
            cases.append(Case("amount", locale, numbers.format_decimal(fraction, locale=locale), (fraction, None)))
    return cases


def read_back(case: Case, with_locale: bool = True) -> tuple[bool, bool, str]:
    """(read back exactly, flagged ambiguous, what was read) for one case."""
    locale = case.locale if with_locale else None
    if case.kind == "date":
        reading = read_date(case.text, locale=locale)
        return reading.iso == case.expected, reading.ambiguous, str(reading.iso or reading.error)
    parsed, error = parse_amount(case.text, locale=locale)
    if error:
        return False, False, error
    amount, currency = case.expected
    exact = Decimal(parsed["amount"]) == amount and parsed["currency"] == currency
    return exact, False, f"{parsed['amount']} {parsed['currency']}"


def run_suite(cases: list[Case], with_locale: bool = True) -> dict:
    """{"cases", "passed", "pass_rate", "ambiguous" (flagged, not read exactly), "wrong_unflagged",
    "by_kind": {kind: pass rate}, "failures": [(locale, text, expected, read)]}."""
    passed = flagged = 0
    by_kind: dict[str, list[int]] = {}
    failures = []
    for case in cases:
        exact, ambiguous, read = read_back(case, with_locale)
        counts = by_kind.setdefault(case.kind, [0, 0])
        counts[1] += 1
        if exact:
            passed += 1
            counts[0] += 1
        elif ambiguous:
            flagged += 1
        else:
            failures.append((case.locale, case.text, case.expected, read))
    total = len(cases)
    return {"cases": total, "passed": passed, "pass_rate": passed / total, "ambiguous": flagged,
            "wrong_unflagged": len(failures), "by_kind": {kind: ok / n for kind, (ok, n) in by_kind.items()},
            "locales": len({case.locale for case in cases}), "failures": failures}


def main() -> None:
    cases = generate_cases()
    for with_locale in (True, False):
        result = run_suite(cases, with_locale)
        print(f"with_locale={with_locale}: {result['passed']}/{result['cases']} read back exactly "
              f"({result['pass_rate']:.2%}) over {result['locales']} locales, {result['ambiguous']} flagged ambiguous, "
              f"{result['wrong_unflagged']} wrong without a flag; by kind {result['by_kind']}")
        for failure in result["failures"][:40]:
            print("   ", failure)


if __name__ == "__main__":
    main()
