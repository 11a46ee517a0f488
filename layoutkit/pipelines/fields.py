"""One typed value per field of a document, from the entity spans the token-classification pipeline returns.

The pipeline tags words; users want "the invoice date" as 2023-04-05 and "the total" as 1250.00 USD.
`extract_fields(entities, schema)` takes the entities of all pages of one document (each with "entity_group",
"score", "word", "start", "end", "box" and "page"), merges spans that continue one another
(`merge_continuations`) and the pieces of one date or amount the model split (`join_split_values`), and returns
per entity type either the best-scoring value (single-valued fields) or all values in reading order (`multiple`
fields such as line-item columns), each normalised by its type:

    {"invoice_date": {"type": "date", "value": "05/04/2023", "normalized": "2023-05-04", "ambiguous": True,
                      "score": 0.97, "box": [...], "page": 1, "candidates": [...]},
     "total": {"type": "amount", "value": "$1,250.00", "normalized": "1250.00", "currency": "USD", ...},
     "item_amount": {"type": "amount", "multiple": True, "values": [{"text": "12.00", "normalized": "12.00", ...}]}}

Field types (`FIELD_TYPES`): "text" (whitespace collapsed), "date" (ISO 8601, `parse_date`), "amount" (plain
decimal string and currency, `parse_amount`) and "number" (`parse_number`). A value that does not parse keeps
its raw text in "value"/"text", gets "normalized": None and an "error" saying why.

Types are guessed from the entity type names (`default_spec`); a schema overrides them, as a dict or a JSON
file (`FieldSchema.load`), see `DEFAULT_SCHEMA_EXAMPLE`.

Copied into saved checkpoints beside the custom pipeline: the standard library and `boxes.py` only.
"""

from __future__ import annotations

import datetime
import json
import os
import re
from dataclasses import dataclass, field

from .boxes import reading_order, union_box
from .field_checks import CheckConfig
from .locale_data import CURRENCY_SYMBOLS, LOCALES, MONTH_NAMES, WEEKDAY_NAMES

FIELD_TYPES = ("text", "date", "amount", "number")

DEFAULT_SCHEMA_EXAMPLE = """\
{"day_first": true, "locale": "en_GB",
 "fields": {"invoice_date": {"type": "date"},
            "total": {"type": "amount"},
            "item_amount": {"type": "amount", "multiple": true}},
 "checks": {"tolerance": 0.005, "one_currency": false}}"""

_SCHEMA_KEYS = ("day_first", "locale", "fields", "checks")
_FIELD_KEYS = ("type", "multiple", "required")

_DATE_WORDS = ("date",)
_AMOUNT_WORDS = ("total", "amount", "tax", "price", "subtotal", "balance", "sum", "vat", "cost", "fee")
_NUMBER_WORDS = ("quantity", "qty")
# Name parts that make a field an identifier ("vat_number", "tax_id") even when it also names an amount word.
_IDENTIFIER_PARTS = ("id", "no", "nr", "number", "code", "reg")
# FUNSD labels: a form has many questions, answers and headers.
_FORM_LABELS = ("question", "answer", "header")


# ---------------------------------------------------------------------------------------------- schema
@dataclass
class FieldSpec:
    """How one entity type becomes a field: its value type, whether a document has many values, and whether a
    document without it goes to review (`required`)."""

    type: str = "text"
    multiple: bool = False
    required: bool = False

    def __post_init__(self):
        if self.type not in FIELD_TYPES:
            raise ValueError(f"field type {self.type!r} is not one of {', '.join(FIELD_TYPES)}")


def _name_parts(name: str) -> list[str]:
    """"item_amount", "itemAmount", "Item Amount" -> ["item", "amount"]."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name)
    return [part for part in re.split(r"[^a-z0-9]+", spaced.lower()) if part]


def default_spec(name: str) -> FieldSpec:
    """The spec guessed from an entity type name (case-insensitive): "date" -> date; total, amount, tax,
    price, ... -> amount; quantity/qty -> number; else text. Line-item columns ("item_*", "line_*", a name
    part "item") and FUNSD's QUESTION/ANSWER/HEADER are `multiple`."""
    lowered = name.lower()
    parts = _name_parts(name)
    if any(word in lowered for word in _DATE_WORDS):
        value_type = "date"
    elif any(part in _IDENTIFIER_PARTS for part in parts):
        value_type = "text"
    elif any(word in lowered for word in _AMOUNT_WORDS):
        value_type = "amount"
    elif any(word in lowered for word in _NUMBER_WORDS):
        value_type = "number"
    else:
        value_type = "text"
    multiple = (
        lowered.startswith(("item_", "line_"))
        or "item" in parts
        or "items" in parts
        or lowered in _FORM_LABELS
    )
    return FieldSpec(type=value_type, multiple=multiple)


@dataclass
class FieldSchema:
    """Field specs by entity type name; names without a spec get `default_spec(name)`.

    `day_first` decides numeric dates whose day and month are both <= 12 ("03/04/2021"): True reads D/M,
    False M/D, None leaves it to the locale, else reads M/D and marks the value "ambiguous".
    `locale` ("de_DE", "fr-CH", "pt"): the order of numeric dates, the decimal sign of a number with one kind
    of separator and the currency of a shared symbol ("$", "kr"); month names of every known language are
    read whatever the locale.
    """

    fields: dict[str, FieldSpec] = field(default_factory=dict)
    day_first: bool | None = None
    locale: str | None = None
    checks: CheckConfig = field(default_factory=CheckConfig)

    def __post_init__(self):
        locale_facts(self.locale)  # an unknown locale fails here, naming the known ones

    def spec(self, name: str) -> FieldSpec:
        if name in self.fields:
            return self.fields[name]
        folded = {key.lower(): spec for key, spec in self.fields.items()}
        return folded.get(name.lower()) or default_spec(name)

    @classmethod
    def load(cls, value=None) -> "FieldSchema":
        """A schema from None (guess every field), a FieldSchema, a dict shaped like
        `DEFAULT_SCHEMA_EXAMPLE`, or the path of a JSON file holding one."""
        if value is None:
            return cls()
        if isinstance(value, FieldSchema):
            return value
        if isinstance(value, dict):
            return cls._from_dict(value, "schema")
        if isinstance(value, (str, os.PathLike)):
            return cls._from_dict(_read_schema_file(value), os.fspath(value))
        raise TypeError(f"schema: expected None, a dict, a JSON file path or a FieldSchema, got {type(value).__name__}")

    @classmethod
    def _from_dict(cls, data, where: str) -> "FieldSchema":
        if not isinstance(data, dict):
            raise ValueError(f"{where}: a schema is a JSON object like {DEFAULT_SCHEMA_EXAMPLE}")
        _check_keys(data, _SCHEMA_KEYS, where)
        day_first = data.get("day_first")
        if day_first is not None and not isinstance(day_first, bool):
            raise ValueError(f"{where}: day_first: must be true, false or null, got {day_first!r}")
        raw_fields = data.get("fields", {})
        if not isinstance(raw_fields, dict):
            raise ValueError(f"{where}: fields: must be an object of field name -> {{\"type\": ...}}, "
                             f"got {type(raw_fields).__name__}")
        specs = {name: _spec_from_dict(name, entry, where) for name, entry in raw_fields.items()}
        locale = data.get("locale")
        if locale is not None and not isinstance(locale, str):
            raise ValueError(f"{where}: locale: must be a locale name such as \"de_DE\" or null, got {locale!r}")
        checks = CheckConfig.load(data.get("checks"), where)
        try:
            return cls(fields=specs, day_first=day_first, locale=locale, checks=checks)
        except ValueError as error:
            raise ValueError(f"{where}: locale: {error}") from None

    def to_dict(self) -> dict:
        return {
            "day_first": self.day_first,
            "locale": self.locale,
            "fields": {name: {"type": spec.type, "multiple": spec.multiple,
                              **({"required": True} if spec.required else {})}
                       for name, spec in self.fields.items()},
            "checks": self.checks.to_dict(),
        }

    def required_fields(self) -> list[str]:
        return [name for name, spec in self.fields.items() if spec.required]


def _read_schema_file(path) -> dict:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise ValueError(f"schema file {os.fspath(path)} not found; give the path of a JSON file like "
                         f"{DEFAULT_SCHEMA_EXAMPLE}") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{os.fspath(path)}: not valid JSON ({error})") from None


def _check_keys(data: dict, allowed: tuple[str, ...], where: str, prefix: str = "") -> None:
    for key in data:
        if key not in allowed:
            raise ValueError(f"{where}: {prefix}unknown key {key!r}; allowed keys: {', '.join(allowed)}")


def _spec_from_dict(name: str, entry, where: str) -> FieldSpec:
    """A field's spec; keys it leaves out keep `default_spec(name)`'s guess."""
    path = f"fields.{name}"
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: {path}: must be an object like {{\"type\": \"amount\"}}, got {entry!r}")
    _check_keys(entry, _FIELD_KEYS, where, prefix=f"{path}: ")
    guess = default_spec(name)
    value_type = entry.get("type", guess.type)
    if value_type not in FIELD_TYPES:
        raise ValueError(f"{where}: {path}.type: {value_type!r} is not one of {', '.join(FIELD_TYPES)}")
    multiple = entry.get("multiple", guess.multiple)
    required = entry.get("required", False)
    for key, value in (("multiple", multiple), ("required", required)):
        if not isinstance(value, bool):
            raise ValueError(f"{where}: {path}.{key}: must be true or false, got {value!r}")
    return FieldSpec(type=value_type, multiple=multiple, required=required)


# ---------------------------------------------------------------------------------------------- locales
def locale_facts(locale: str | None) -> dict | None:
    """CLDR facts of a locale ("de_DE", "de-DE", "pt_br"; a bare language "de" takes its first locale in
    `locale_data.LOCALES`): {"date_order": "DMY"|"MDY"|"YMD", "decimal", "group", "currency"}; None for None."""
    if not locale:
        return None
    language, _, territory = locale.replace("-", "_").partition("_")
    code = f"{language.lower()}_{territory.upper()}"
    if code in LOCALES:
        return LOCALES[code]
    for known, facts in LOCALES.items():
        if known.split("_")[0] == language.lower():
            return facts
    raise ValueError(f"unknown locale {locale!r}; known: {', '.join(LOCALES)} (or their languages)")


# ----------------------------------------------------------------------------------------------- dates
_ENGLISH_MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august", "september",
                   "october", "november", "december")
_ORDINAL_SUFFIXES = ("st", "nd", "rd", "th")
# Words a date may carry besides its month: "5 de enero de 2023", "5 января 2023 г.", "the 5th of May".
_DATE_FILLERS = ("of", "the", "de", "del", "г", "р", "год", "года", "рік", "року", "gada", "le", "el")
_EDGE_PUNCTUATION = " \t\r\n.,;:()[]{}'\"-_/|*#"
_DATE_SEPARATOR = r"[-/.\s]"
_NUMERIC_DATE = re.compile(rf"(\d{{1,4}})({_DATE_SEPARATOR})(\d{{1,2}}){_DATE_SEPARATOR}(\d{{1,4}})")
_COMPACT_DATE = re.compile(r"(\d{4})(\d{2})(\d{2})")
_TIME_SUFFIX = re.compile(r"(?:T|\s+)\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?$")
# Chinese, Japanese and Korean dates: 2023年1月5日, 2023년 1월 5일.
_CJK_DATE_MARKS = str.maketrans({"年": "-", "月": "-", "日": " ", "년": "-", "월": "-", "일": " "})


def _clean_date_text(text: str) -> str:
    """Strip stray edge punctuation, a time of day, and OCR spaces around separators ("2023 - 04 - 05")."""
    text = text.translate(_CJK_DATE_MARKS).strip(_EDGE_PUNCTUATION)
    text = _TIME_SUFFIX.sub("", text)
    return re.sub(r"\s*([-/.,])\s*", r"\1", text)


def _full_year(digits: str) -> int:
    year = int(digits)
    if len(digits) == 2:
        return 2000 + year if year < 70 else 1900 + year
    return year


def _iso(year: int, month: int, day: int) -> tuple[str | None, str | None]:
    try:
        return datetime.date(year, month, day).isoformat(), None
    except ValueError:
        return None, "not a valid calendar date"


@dataclass
class DateReading:
    """A parsed date: `iso` ("YYYY-MM-DD" or None), `error` (why not), `ambiguous` (day and month could be
    swapped and nothing settled which: no number above 12, no `day_first`, no locale)."""

    iso: str | None
    error: str | None = None
    ambiguous: bool = False


def _numeric_order(first: str, second: str, last: str, separator: str, day_first: bool | None,
                   facts: dict | None) -> tuple[str, bool] | None:
    """("YMD" | "DMY" | "MDY", ambiguous) for the numbers of a numeric date, or None when none fits."""
    if len(first) == 4:
        return "YMD", False
    if len(first) == 3 or len(last) == 3 or len(last) == 1 and not (facts and facts["date_order"] == "YMD"):
        return None
    if facts and facts["date_order"] == "YMD" and len(last) <= 2:
        return "YMD", False  # Korean "23. 1. 5.": a two-digit year first
    a, b = int(first), int(second)
    if a > 12 or b > 12 or a == b:
        return ("DMY" if a > 12 or a == b else "MDY"), False
    if day_first is not None:
        return ("DMY" if day_first else "MDY"), False
    if facts and facts["date_order"] in ("DMY", "MDY"):
        return facts["date_order"], False
    # Dotted dates (5.4.2023) are a European convention; US dates use slashes or dashes.
    return ("DMY", False) if separator == "." else ("MDY", True)


def _parse_numeric_date(text: str, day_first: bool | None, facts: dict | None) -> DateReading | None:
    """The reading of an all-digit date, or None when the text is not one."""
    match = _NUMERIC_DATE.fullmatch(text)
    if match:
        first, separator, second, last = match.groups()
        found = _numeric_order(first, second, last, separator, day_first, facts)
        if found is None:
            return DateReading(None, "not a recognised date format")
        order, ambiguous = found
        if order == "YMD":
            iso, error = _iso(_full_year(first), int(second), int(last))
        else:
            day, month = (first, second) if order == "DMY" else (second, first)
            iso, error = _iso(_full_year(last), int(month), int(day))
        return DateReading(iso, error, ambiguous and error is None)
    match = _COMPACT_DATE.fullmatch(text)
    if match:
        return DateReading(*_iso(int(match[1]), int(match[2]), int(match[3])))
    return None


def _month_number(word: str) -> int | None:
    """1-12 for a month name or abbreviation in any language of `locale_data` ("janv", "января", "Sept"), or an
    English month abbreviated to 3+ letters; else None."""
    word = word.rstrip(".")
    if word in MONTH_NAMES:
        return MONTH_NAMES[word]
    if len(word) < 3:
        return None
    for number, name in enumerate(_ENGLISH_MONTHS, start=1):
        if name.startswith(word):
            return number
    return None


def _parse_month_name_date(text: str) -> DateReading:
    """Dates with a month name in any order: "April 5th, 2023", "5. Januar 2023", "5 de enero de 2023",
    "2023. január 5.", "5 января 2023 г."."""
    months, numbers = [], []
    previous = ""
    for token in re.findall(r"[^\W\d_]+|\d+", text.lower().replace("’", "'").replace("d'", "")):
        ordinal = token in _ORDINAL_SUFFIXES and previous.isdigit()
        if token.isdigit():
            numbers.append(token)
        elif _month_number(token):
            months.append(_month_number(token))
        elif not (ordinal or token in _DATE_FILLERS or token in WEEKDAY_NAMES):
            return DateReading(None, f"unrecognised word {token!r} in a date")
        previous = token
    if not months:
        return DateReading(None, "not a recognised date format")
    if len(months) > 1:
        return DateReading(None, "more than one month name")
    if len(numbers) != 2:
        return DateReading(None, "a date needs a day, a month and a year")
    four_digit = [n for n in numbers if len(n) == 4]
    if len(four_digit) == 1:
        year = four_digit[0]
        day = numbers[1] if numbers[0] == year else numbers[0]
    else:
        day, year = numbers
    if len(day) > 2 or len(year) not in (2, 4):
        return DateReading(None, "not a recognised date format")
    return DateReading(*_iso(_full_year(year), months[0], int(day)))


def read_date(text: str, day_first: bool | None = None, locale: str | None = None) -> DateReading:
    """The date in `text`, in any language of `locale_data` (month names, CJK 年月日).

    Numeric dates: a 4-digit year first is Y-M-D; otherwise the year is last (2-digit years are 20yy below
    70, else 19yy), except in a year-first locale (Korean "23. 1. 5."). Day and month are told apart by a
    number above 12, else by `day_first`, else by the locale's order (en_US M/D, de_DE D.M), else by the
    separator (dots: D.M; slashes/dashes: M/D and `ambiguous`).
    """
    facts = locale_facts(locale)
    cleaned = _clean_date_text(text)
    if not cleaned:
        return DateReading(None, "no date found")
    numeric = _parse_numeric_date(cleaned, day_first, facts)
    if numeric is not None:
        return numeric
    return _parse_month_name_date(cleaned)


def parse_date(text: str, day_first: bool | None = None, locale: str | None = None) -> tuple[str | None, str | None]:
    """("YYYY-MM-DD", None), or (None, reason) when `text` is not a date: `read_date` without the ambiguity."""
    reading = read_date(text, day_first, locale)
    return reading.iso, reading.error


def date_is_ambiguous(text: str, day_first: bool | None = None, locale: str | None = None) -> bool:
    """True for a numeric D/M or M/D date whose first two numbers differ and are both <= 12 ("03/04/2021")
    when neither `day_first` nor the locale settles the order. Dotted dates ("03.04.2021") count as D.M."""
    return read_date(text, day_first, locale).ambiguous


def day_first_from_dates(texts) -> bool | None:
    """What dates seen in data settle: True when some numeric date can only be D/M (a first number above 12)
    and none can only be M/D, False for the reverse, None when none settles it or the data mixes both."""
    evidence = set()
    for text in texts:
        match = _NUMERIC_DATE.fullmatch(_clean_date_text(text))
        if not match or len(match[1]) > 2 or len(match[4]) < 2:
            continue
        first, second = int(match[1]), int(match[3])
        if first > 12 >= second:
            evidence.add(True)
        elif second > 12 >= first:
            evidence.add(False)
    return evidence.pop() if len(evidence) == 1 else None

# --------------------------------------------------------------------------------------------- numbers
# A run of digits with separators inside: "1,250.00", "1 250,00", "1'250.00", "12.00 15.00".
# A leading separator belongs to the number (".50") unless a digit or letter precedes it (Danish "kr.866,28").
_NUMBER_RUN = re.compile(r"(?:(?<!\w)[.,](?=\d))?\d(?:[\d.,'’\s]*\d)?")
_MINUS_SIGNS = "-−–"


def _group_space_chunks(run: str) -> list[str]:
    """The numbers in a run, spaces read as thousands separators only between 3-digit groups:
    "1 250,00" -> ["1250,00"], "12.00 15.00" -> ["12.00", "15.00"]."""
    numbers: list[list[str]] = []
    for chunk in run.split():
        previous = numbers[-1] if numbers else None
        groups_so_far = previous is not None and re.fullmatch(r"\d{1,3}", previous[0]) and all(
            re.fullmatch(r"\d{3}", group) for group in previous[1:]
        )
        if groups_so_far and re.fullmatch(r"\d{3}(?:[.,]\d+)?", chunk):
            previous.append(chunk)
        else:
            numbers.append([chunk])
    return ["".join(chunks) for chunks in numbers]


def _valid_grouping(groups: list[str]) -> bool:
    """Thousands groups: 1-3 digits, then 3-digit groups (1,250,000) or Indian 2-digit ones (1,25,000)."""
    first, rest = groups[0], groups[1:]
    if not rest or not 1 <= len(first) <= 3:
        return False
    western = all(len(group) == 3 for group in rest)
    indian = len(rest[-1]) == 3 and all(len(group) == 2 for group in rest[:-1])
    return western or indian


def _split_decimal(number: str, decimal_sign: str | None = None) -> tuple[str, str | None] | None:
    """(integer digits, fraction digits or None), or None when the separators make no sense.

    Both "," and "." present: the rightmost is the decimal point. One kind: the locale's `decimal_sign` when
    given (de: "1.234" is 1234, "1,234" is 1.234; en the reverse) and the grouping allows it; else once, a
    decimal point unless exactly 3 digits follow a non-zero integer part of 1-3 digits ("1,250" is 1250;
    "0,500" and "1234.567" keep the decimal point); several: thousands separators.
    """
    separators = [char for char in ".," if char in number]
    if len(separators) == 2:
        decimal = max(separators, key=number.rfind)
        integer, fraction = number.rsplit(decimal, 1)
        groups = integer.split(separators[0] if decimal == separators[1] else separators[1])
        if decimal in integer or not _valid_grouping(groups):
            return None
        return "".join(groups), fraction
    if not separators:
        return number, None
    parts = number.split(separators[0])
    if decimal_sign in (".", ","):
        if separators[0] == decimal_sign and len(parts) == 2:
            return parts[0], parts[1]
        if separators[0] != decimal_sign and _valid_grouping(parts):
            return "".join(parts), None
    if len(parts) == 2 and (len(parts[1]) != 3 or parts[0].strip("0") == "" or len(parts[0]) > 3):
        return parts[0], parts[1]
    if not _valid_grouping(parts):
        return None
    return "".join(parts), None


def _plain_decimal(number: str, decimal_sign: str | None = None) -> tuple[str | None, str | None]:
    """"1.056,24" -> "1056.24": "." as decimal point, no thousands separators, the given fraction digits."""
    compact = number.replace("'", "").replace("’", "")
    if re.fullmatch(r"[.,]\d+", compact):
        return "0." + compact[1:], None
    if not re.fullmatch(r"\d+(?:[.,]\d+)*", compact):
        return None, f"unclear digit grouping in {number!r}"
    split = _split_decimal(compact, decimal_sign)
    if split is None:
        return None, f"unclear digit grouping in {number!r}"
    integer, fraction = split
    integer = integer.lstrip("0") or "0"
    return (integer if fraction is None else f"{integer}.{fraction}"), None


def _is_negative(before: str, after: str) -> bool:
    """"-45.00", "$-45.00", "45.00-" and "(45.00)" are negative; Swiss "1'250.-" is not."""
    after = after.lstrip()
    if any(sign in before for sign in _MINUS_SIGNS) or (after[:1] and after[0] in _MINUS_SIGNS):
        return True
    return "(" in before and ")" in after


def _number_span(text: str, decimal_sign: str | None = None) -> tuple[str | None, str | None, tuple[int, int]]:
    """(the one number in `text` as a plain decimal string, or None; the reason; where it is in the text)."""
    runs = list(_NUMBER_RUN.finditer(text))
    numbers = [number for run in runs for number in _group_space_chunks(run[0])]
    if not numbers:
        return None, "no number found", (0, 0)
    span = runs[0].span()
    if len(numbers) > 1:
        return None, "more than one number", span
    value, error = _plain_decimal(numbers[0], decimal_sign)
    if error:
        return None, error, span
    if _is_negative(text[: span[0]], text[span[1]:]) and value.strip("0.") != "":
        value = "-" + value
    return value, None, span


def parse_number(text: str, locale: str | None = None) -> tuple[str | None, str | None]:
    """A count or quantity as a plain decimal string: "2", "1,5" -> "1.5", "x3" -> "3"; or (None, reason).
    `locale` settles a lone separator ("1.234": 1234 in de, 1.234 in en)."""
    facts = locale_facts(locale)
    value, error, _ = _number_span(text, facts["decimal"] if facts else None)
    return value, error


# -------------------------------------------------------------------------------------------- amounts
_CURRENCY_CODES = frozenset(
    "USD EUR GBP CHF CAD AUD NZD JPY CNY HKD SGD MYR INR IDR THB PHP VND KRW TWD SEK NOK DKK ISK PLN CZK HUF "
    "RON BGN ZAR BRL MXN ARS CLP COP RUB UAH TRY AED SAR QAR ILS EGP NGN KES PKR BDT LKR".split()
)
# Letter markers that are not ISO codes: Malaysian ringgit (SROIE receipts), Indian rupees, Swiss francs.
_CURRENCY_WORDS = {"RM": "MYR", "RS": "INR", "SFR": "CHF"}
_DOLLAR_PREFIXES = {"US": "USD", "C": "CAD", "CA": "CAD", "A": "AUD", "AU": "AUD", "NZ": "NZD", "S": "SGD",
                    "HK": "HKD", "R": "BRL", "MX": "MXN"}
# A bare "$" is read as US dollars: most invoices with a bare dollar sign are American.
_CURRENCY_SYMBOLS = {"€": "EUR", "£": "GBP", "¥": "JPY", "￥": "JPY", "₹": "INR", "₩": "KRW", "₽": "RUB",
                     "₺": "TRY", "₱": "PHP", "฿": "THB", "₫": "VND", "₪": "ILS", "₦": "NGN", "$": "USD"}


def is_bare_currency(word: str) -> bool:
    """Whether a word is a currency marker and nothing else: an ISO code ("EUR"), RM/Rs/SFr, or symbols ("$",
    "€", "US$"), without a digit."""
    text = word.strip(_EDGE_PUNCTUATION)
    if not text or any(ch.isdigit() for ch in text):
        return False
    if text.upper() in _CURRENCY_CODES or text.upper() in _CURRENCY_WORDS or text in CURRENCY_SYMBOLS:
        return True
    return bool(_currency_symbols(text)) and not re.sub(r"[A-Za-z]{0,2}\$|[^\w\s]", "", text).strip()


def _currency_codes(text: str) -> set[str]:
    """Currencies written as letters: ISO codes ("EUR", "usd") and RM, Rs, SFr."""
    codes = set()
    for word in re.findall(r"[^\W\d_]+", text):
        word = word.upper()
        if word in _CURRENCY_CODES:
            codes.add(word)
        elif word in _CURRENCY_WORDS:
            codes.add(_CURRENCY_WORDS[word])
    return codes


def _one_currency(codes, facts: dict | None) -> str | None:
    """The currency a symbol that several share stands for ("$", "kr", "¥"): the locale's when it is one of
    them, else US dollars for "$" and yen for "¥" (the most common on invoices), else None ("kr" may be
    Swedish, Norwegian or Danish)."""
    if len(codes) == 1:
        return codes[0]
    if facts and facts["currency"] in codes:
        return facts["currency"]
    for preferred in ("USD", "JPY"):
        if preferred in codes:
            return preferred
    return None


def _currency_symbols(text: str, facts: dict | None = None) -> set[str]:
    """Currencies written as symbols; "$" after a country prefix ("C$", "HK$") is that country's dollar, a
    bare "$" the locale's dollar (else USD)."""
    codes = set()
    for match in re.finditer(r"([A-Za-z]{0,2})\$", text):
        bare = _one_currency(CURRENCY_SYMBOLS["$"], facts)
        codes.add(_DOLLAR_PREFIXES.get(match[1].upper(), bare))
    for symbol, code in _CURRENCY_SYMBOLS.items():
        if symbol != "$" and symbol in text:
            codes.add(code)
    return codes


def _currency(text: str, span: tuple[int, int], facts: dict | None) -> tuple[str | None, str | None]:
    """(currency code or None, None), or (None, reason) when the text names two currencies.

    What surrounds the number, when it is one symbol as CLDR writes it in some locale ("$US", "$ US", "zł",
    "kr."), is that currency (a shared symbol: `_one_currency`). Else a code written in the text wins over a
    symbol ("CAD $5.00" is CAD)."""
    around = " ".join(f"{text[: span[0]]} {text[span[1]:]}".split()).strip(_MINUS_SIGNS + "() ")
    around = " ".join(around.split())
    if around.upper() in _CURRENCY_CODES:
        return around.upper(), None
    if around in CURRENCY_SYMBOLS:
        return _one_currency(CURRENCY_SYMBOLS[around], facts), None
    for codes in (_currency_codes(text), _currency_symbols(text, facts)):
        if len(codes) > 1:
            return None, f"more than one currency ({', '.join(sorted(codes))})"
        if codes:
            return codes.pop(), None
    return None, None


def parse_amount(text: str, locale: str | None = None) -> tuple[dict | None, str | None]:
    """({"amount": "1250.00", "currency": "USD" or None}, None), or (None, reason).

    Separators: see `_split_decimal`; spaces (also no-break and narrow no-break) and apostrophes between digit
    groups are thousands separators ("1 250,00", "1'250.00"). `locale` settles a lone separator and the
    currency of a shared symbol ("$" in en_CA is CAD, "kr" in nb_NO is NOK); without one a bare "$" is USD.
    An ISO code in the text wins over a symbol.
    """
    if "%" in text:
        return None, "a percentage, not an amount"
    facts = locale_facts(locale)
    amount, error, span = _number_span(text, facts["decimal"] if facts else None)
    if error:
        return None, error
    currency, error = _currency(text, span, facts)
    if error:
        return None, error
    return {"amount": amount, "currency": currency}, None


# ------------------------------------------------------------------------------------------ normalising
def _collapse_whitespace(text: str) -> str:
    return " ".join(text.split())


def normalize_value(text: str, spec: FieldSpec, schema: FieldSchema | None = None) -> dict:
    """{"normalized": ...} for one value, plus "currency" for amounts, "error" when it does not parse and
    "ambiguous": True for a numeric date read M/D only because neither the schema's `day_first` nor its
    `locale` settles the order."""
    schema = schema or FieldSchema()
    if spec.type == "date":
        reading = read_date(text, schema.day_first, schema.locale)
        result = {"normalized": reading.iso}
        if reading.error:
            result["error"] = reading.error
        elif reading.ambiguous:
            result["ambiguous"] = True
        return result
    if spec.type == "amount":
        parsed, error = parse_amount(text, schema.locale)
        if error:
            return {"normalized": None, "currency": None, "error": error}
        return {"normalized": parsed["amount"], "currency": parsed["currency"]}
    if spec.type == "number":
        number, error = parse_number(text, schema.locale)
        return {"normalized": number} if error is None else {"normalized": None, "error": error}
    return {"normalized": _collapse_whitespace(text)}


# --------------------------------------------------------------------------------------------- merging
def _box_height(box) -> float:
    return max(1.0, box[3] - box[1])


def _on_next_line(last_box, box) -> bool:
    """`box` starts on the text line below `last_box` (within one line height) and in its column."""
    line_height = _box_height(last_box)
    gap = box[1] - last_box[3]
    below = box[1] >= last_box[1] + line_height / 2
    overlaps = min(box[2], last_box[2]) > max(box[0], last_box[0])
    aligned = abs(box[0] - last_box[0]) <= line_height
    return below and gap <= line_height and (overlaps or aligned)


def _continues(current: dict, last_box, entity: dict, mergeable) -> bool:
    if entity.get("entity_group") != current.get("entity_group") or entity.get("page") != current.get("page"):
        return False
    if not mergeable(entity.get("entity_group")):
        return False
    if entity.get("start") is not None and entity.get("start") == current.get("end"):
        return True
    return last_box is not None and entity.get("box") is not None and _on_next_line(last_box, entity["box"])


def _previous_of_type(merged: list[dict], entity: dict) -> int | None:
    """The index of the last merged span of `entity`'s type and page, or None."""
    for index in range(len(merged) - 1, -1, -1):
        if merged[index].get("entity_group") == entity.get("entity_group") and \
                merged[index].get("page") == entity.get("page"):
            return index
    return None


def _weight(entity: dict) -> float:
    if "num_words" in entity:
        return max(1, entity["num_words"])
    try:
        return max(1, entity["end"] - entity["start"])
    except (KeyError, TypeError):
        return 1


def _merge_pair(current: dict, entity: dict) -> dict:
    merged = dict(current)
    weight, extra = _weight(current), _weight(entity)
    merged["word"] = f"{current.get('word', '')} {entity.get('word', '')}".strip()
    merged["score"] = (current["score"] * weight + entity["score"] * extra) / (weight + extra)
    for key, pick in (("start", min), ("end", max)):
        if current.get(key) is not None and entity.get(key) is not None:
            merged[key] = pick(current[key], entity[key])
    boxes = [box for box in (current.get("box"), entity.get("box")) if box is not None]
    merged["box"] = union_box(boxes) if boxes else None
    if "num_words" in current or "num_words" in entity:
        merged["num_words"] = weight + extra
    return merged


def merge_continuations(entities: list[dict], mergeable=None) -> list[dict]:
    """Merge spans of one entity type that continue each other: adjacent in word order, or the next one on the
    text line below (a vendor name or address broken over lines), for the types `mergeable(type)` accepts
    (default: all). Returns new dicts.

    Spans from the pipeline say whether the model opened them with a B- tag (`"continuation": False`, a new
    value: never merged into an earlier one) or with an I- tag that follows no span of its type
    (`"continuation": True`: the rest of an earlier value). A continuation joins the last span of its type on the
    page, however many spans of other types lie between them in word order: OCR reads an item table line by
    line, so the second line of a description comes after the first line's quantity and amounts. Spans without
    the key (entities from elsewhere) merge only with the span just before them.

    The merged span joins the words with spaces, covers both start/end ranges and boxes, and scores the
    word-weighted mean ("num_words" when given, else end - start). Spans on different pages never merge.
    """
    mergeable = mergeable or (lambda name: True)
    merged: list[dict] = []
    last_boxes: list = []  # per merged span, the box of its last piece: a multi-line span's union is no line height
    for entity in entities:
        entity = {**entity, "box": list(entity["box"])} if entity.get("box") is not None else dict(entity)
        continuation = entity.pop("continuation", None)
        target = None
        if continuation is None and merged:
            target = len(merged) - 1
        elif continuation:
            target = _previous_of_type(merged, entity)
        if target is not None and _continues(merged[target], last_boxes[target], entity, mergeable):
            merged[target] = _merge_pair(merged[target], entity)
            last_boxes[target] = entity.get("box")
        else:
            merged.append(entity)
            last_boxes.append(entity.get("box"))
    return merged


def join_split_values(entities: list[dict], schema: FieldSchema) -> list[dict]:
    """Join two spans of one date, amount or number field that are adjacent in word order on one text line when
    one of them does not parse alone and the two together do: the model opened a second span inside one value
    ("Jul" + "27, 2023", "EUR" + "1.234,56"), which happens on OCR words whose boxes differ from the training
    data's. Values that parse alone (two amounts of a column side by side) stay apart. Returns new dicts."""
    joined: list[dict] = []
    for entity in entities:
        previous = joined[-1] if joined else None
        spec = schema.spec(entity.get("entity_group"))
        if (previous is not None and spec.type != "text"
                and previous.get("entity_group") == entity.get("entity_group")
                and previous.get("page") == entity.get("page")
                and entity.get("start") is not None and entity.get("start") == previous.get("end")
                and _same_line(previous, entity)):
            pieces = (previous.get("word", ""), entity.get("word", ""))
            if (any("error" in normalize_value(piece, spec, schema) for piece in pieces)
                    and "error" not in normalize_value(" ".join(pieces), spec, schema)):
                joined[-1] = _merge_pair(previous, entity)
                continue
        joined.append(entity)
    return joined


# ------------------------------------------------------------------------------------------- extracting
def _reading_order(candidates: list[dict]) -> list[dict]:
    """Sorted by page, then in boxes.reading_order (text lines top to bottom, each left to right; a plain (top,
    left) sort would put a 1-pixel-higher right word first). Candidates without a box come first on their page."""
    ordered = []
    for page in sorted({candidate["page"] for candidate in candidates}):
        on_page = [candidate for candidate in candidates if candidate["page"] == page]
        boxed = [candidate for candidate in on_page if candidate.get("box")]
        ordered += [candidate for candidate in on_page if not candidate.get("box")]
        ordered += [boxed[i] for i in reading_order([candidate["box"] for candidate in boxed])]
    return ordered


def _same_line(anchor: dict, candidate: dict) -> bool:
    if not anchor.get("box") or not candidate.get("box"):
        return False
    middle = (candidate["box"][1] + candidate["box"][3]) / 2
    return anchor["box"][1] <= middle <= anchor["box"][3]


def _candidate(entity: dict) -> dict:
    return {"text": entity.get("word", ""), "score": round(float(entity["score"]), 4), "box": entity.get("box"),
            "page": entity["page"]}


def _pages(entities: list[dict]) -> dict[int, list[dict]]:
    """Entities by page (default 1), each page in word order when every entity has a start index."""
    pages: dict[int, list[dict]] = {}
    for entity in entities:
        page = entity.get("page") or 1
        pages.setdefault(page, []).append({**entity, "page": page})
    for page, members in pages.items():
        if all(isinstance(entity.get("start"), int) for entity in members):
            members.sort(key=lambda entity: entity["start"])
    return pages


def _single_field(spec: FieldSpec, candidates: list[dict], schema: FieldSchema) -> dict:
    """The highest-scoring candidate (the earlier one on ties), even when it does not parse and another does:
    the model's choice stays visible, with its "error", rather than being swapped silently."""
    for candidate in candidates:
        candidate.update(normalize_value(candidate["text"], spec, schema))
    best = candidates[0]
    for candidate in candidates[1:]:
        if candidate["score"] > best["score"]:
            best = candidate
    normalized = {key: value for key, value in best.items() if key not in ("text", "score", "box", "page")}
    box = list(best["box"]) if best["box"] is not None else None
    return {"type": spec.type, "value": best["text"], **normalized, "score": best["score"], "box": box,
            "page": best["page"], "candidates": candidates}


def _multiple_field(spec: FieldSpec, candidates: list[dict], schema: FieldSchema) -> dict:
    values = []
    for candidate in candidates:
        normalized = normalize_value(candidate["text"], spec, schema)
        values.append({"text": candidate["text"], **normalized, "score": candidate["score"], "box": candidate["box"],
                       "page": candidate["page"]})
    return {"type": spec.type, "multiple": True, "values": values}


def extract_fields(entities: list[dict], schema=None) -> dict[str, dict]:
    """One entry per entity type of a document (all pages), ordered by name.

    Single-valued fields: {"type", "value" (raw text), "normalized", ["currency"], ["error"], ["ambiguous"],
    "score", "box", "page", "candidates": [{"text", "score", "box", "page", "normalized", ...}]}.
    `multiple` fields: {"type", "multiple": True, "values": [{"text", "normalized", ..., "score", "box",
    "page"}]}. Candidates and values are in reading order. `schema`: anything `FieldSchema.load` takes.
    """
    schema = FieldSchema.load(schema)
    pages = _pages(entities)
    by_type: dict[str, list[dict]] = {}
    # Only text continues over spans: amounts, dates and numbers next to or below one another are separate
    # values (a table column read top to bottom), not one value broken in two.
    def is_text(name: str) -> bool:
        return schema.spec(name).type == "text"

    for page in sorted(pages):
        for entity in join_split_values(merge_continuations(pages[page], is_text), schema):
            by_type.setdefault(entity["entity_group"], []).append(_candidate(entity))
    result = {}
    for name in sorted(by_type):
        spec = schema.spec(name)
        candidates = _reading_order(by_type[name])
        build = _multiple_field if spec.multiple else _single_field
        result[name] = build(spec, candidates, schema)
    return result
