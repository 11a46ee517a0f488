"""Arithmetic and consistency every invoice obeys, checked on a document's typed fields.

    checks = run_checks(fields, line_items, CheckConfig.load(schema.checks))
    # [{"name": "subtotal_plus_tax_is_total", "ok": False, "detail": "120.00 + 24.00 = 144.00, total is 114.00",
    #   "fields": ["subtotal", "tax", "total"]}, ...]

The checks (`CHECKS`; each names the fields it reads, configurable in the schema file's "checks"):

- `items_sum_to_subtotal`: the item amounts add up to the subtotal;
- `subtotal_plus_tax_is_total`: subtotal + tax = total;
- `quantity_times_unit_price`: quantity x unit price = amount on every line item that has all three;
- `due_after_invoice_date`: the due date is not before the invoice date;
- `one_currency`: every amount that names a currency names the same one.

A check whose fields the document lacks (or whose values do not parse) is left out rather than failed: missing
fields are the review's business (`review.py`). Amounts compare within `tolerance` (default 0.005: half a cent).

`choose_by_checks` picks, among the candidates of the single-valued fields the checks read, the combination that
passes the most checks, the highest scores breaking ties: a misread total has a runner-up candidate that adds up.

Copied into saved checkpoints beside the custom pipeline: the standard library only.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

# check name -> {role: default field name}
CHECKS = {
    "items_sum_to_subtotal": {"items": "item_amount", "subtotal": "subtotal"},
    "subtotal_plus_tax_is_total": {"subtotal": "subtotal", "tax": "tax", "total": "total"},
    "quantity_times_unit_price": {},  # reads the line items' rows
    "due_after_invoice_date": {"invoice_date": "invoice_date", "due_date": "due_date"},
    "one_currency": {},  # reads every amount field
}
# Half a cent: invoices round each line, the tax and nothing else, so their sums add up to the cent; a misread
# digit moves a value by at least 0.01.
DEFAULT_TOLERANCE = "0.005"
CANDIDATES_PER_FIELD = 3  # the highest-scoring candidates of each field that `choose_by_checks` combines
LINE_ITEM_COLUMNS = ("quantity", "unit_price", "amount")


@dataclass
class CheckConfig:
    """Which checks run and which fields each reads: `fields[check][role]` = field name."""

    fields: dict[str, dict[str, str]] = field(
        default_factory=lambda: {name: dict(roles) for name, roles in CHECKS.items()}
    )
    tolerance: Decimal = Decimal(DEFAULT_TOLERANCE)

    @classmethod
    def load(cls, value=None, where: str = "schema") -> "CheckConfig":
        """From the schema file's "checks": None or true (all checks, default field names), false (none), or
        an object: {"tolerance": 0.01, "<check>": false | true | {"<role>": "<field name>"}}; checks it does not
        name keep their defaults."""
        if isinstance(value, CheckConfig):
            return value
        config = cls()
        if value is None or value is True:
            return config
        if value is False:
            return cls(fields={})
        if not isinstance(value, dict):
            raise ValueError(f"{where}: checks: must be true, false or an object like "
                             f'{{"subtotal_plus_tax_is_total": {{"total": "amount_due"}}, "one_currency": false}}')
        for name, setting in value.items():
            if name == "tolerance":
                try:
                    config.tolerance = Decimal(str(setting))
                except InvalidOperation:
                    raise ValueError(f"{where}: checks.tolerance: must be a number, got {setting!r}") from None
                continue
            if name not in CHECKS:
                raise ValueError(f"{where}: checks: unknown check {name!r}; known: {', '.join(CHECKS)}, tolerance")
            if setting is False:
                config.fields.pop(name)
            elif isinstance(setting, dict):
                unknown = set(setting) - set(CHECKS[name])
                if unknown:
                    raise ValueError(f"{where}: checks.{name}: unknown role {sorted(unknown)[0]!r}; roles: "
                                     f"{', '.join(CHECKS[name]) or 'none'}")
                config.fields[name].update(setting)
            elif setting is not True:
                raise ValueError(f"{where}: checks.{name}: must be true, false or an object of role -> field name")
        return config

    def to_dict(self) -> dict:
        return {"tolerance": float(self.tolerance),
                **{name: dict(self.fields.get(name, {})) if name in self.fields else False for name in CHECKS}}


# ------------------------------------------------------------------------------------------------ values
def _decimal(value) -> Decimal | None:
    try:
        return Decimal(value) if value is not None else None
    except InvalidOperation:
        return None


def _single(fields: dict, name: str, key: str = "normalized"):
    entry = fields.get(name)
    if not entry or entry.get("multiple"):
        return None
    return entry.get(key)


def _amounts(fields: dict, name: str) -> list[Decimal] | None:
    """The parsed values of a field: all values of a `multiple` field, else its one value; None when a value
    does not parse or the field is absent."""
    entry = fields.get(name)
    if not entry:
        return None
    values = [value.get("normalized") for value in entry["values"]] if entry.get("multiple") else [
        entry.get("normalized")]
    parsed = [_decimal(value) for value in values]
    return None if not parsed or None in parsed else parsed


# ------------------------------------------------------------------------------------------------ checks
def _result(name: str, ok: bool, detail: str, names) -> dict:
    return {"name": name, "ok": bool(ok), "detail": detail, "fields": list(names)}


def _items_sum(fields, roles, tolerance):
    items, subtotal = _amounts(fields, roles["items"]), _amounts(fields, roles["subtotal"])
    if items is None or subtotal is None or len(subtotal) != 1:
        return None
    total = sum(items, Decimal(0))
    ok = abs(total - subtotal[0]) <= tolerance
    return _result("items_sum_to_subtotal", ok, f"{len(items)} item amounts add up to {total}, "
                   f"{roles['subtotal']} is {subtotal[0]}", (roles["items"], roles["subtotal"]))


def _subtotal_tax_total(fields, roles, tolerance):
    values = [_amounts(fields, roles[role]) for role in ("subtotal", "tax", "total")]
    if any(value is None or len(value) != 1 for value in values):
        return None
    (subtotal,), (tax,), (total,) = values
    ok = abs(subtotal + tax - total) <= tolerance
    return _result("subtotal_plus_tax_is_total", ok, f"{subtotal} + {tax} = {subtotal + tax}, "
                   f"{roles['total']} is {total}", (roles["subtotal"], roles["tax"], roles["total"]))


def _line_arithmetic(line_items, tolerance):
    rows = []
    for number, row in enumerate(line_items or [], start=1):
        values = [_decimal(row.get(column)) for column in LINE_ITEM_COLUMNS]
        if None not in values:
            rows.append((number, *values))
    if not rows:
        return None
    wrong = [f"row {n}: {q} x {p} = {q * p}, amount {a}" for n, q, p, a in rows if abs(q * p - a) > tolerance]
    detail = "; ".join(wrong) if wrong else f"{len(rows)} rows: quantity x unit price = amount"
    return _result("quantity_times_unit_price", not wrong, detail, ("line_items",))


def _due_after_issue(fields, roles, tolerance):
    issued, due = _single(fields, roles["invoice_date"]), _single(fields, roles["due_date"])
    if not issued or not due:
        return None
    return _result("due_after_invoice_date", due >= issued, f"{roles['invoice_date']} {issued}, "
                   f"{roles['due_date']} {due}", (roles["invoice_date"], roles["due_date"]))


def _one_currency(fields):
    currencies: dict[str, set[str]] = {}
    for name, entry in fields.items():
        if entry.get("type") != "amount":
            continue
        values = entry["values"] if entry.get("multiple") else [entry]
        for value in values:
            if value.get("currency"):
                currencies.setdefault(value["currency"], set()).add(name)
    if not currencies:
        return None
    detail = ", ".join(f"{code} ({', '.join(sorted(names))})" for code, names in sorted(currencies.items()))
    names = sorted(set().union(*currencies.values())) if len(currencies) > 1 else []
    return _result("one_currency", len(currencies) == 1, detail, names)


def run_checks(fields: dict, line_items: list[dict] | None, config: CheckConfig | None = None) -> list[dict]:
    """[{"name", "ok", "detail", "fields": names of the fields it read}] for each configured check the document
    has the values for, in `CHECKS` order."""
    config = config or CheckConfig()
    results = []
    for name, roles in config.fields.items():
        if name == "items_sum_to_subtotal":
            result = _items_sum(fields, roles, config.tolerance)
        elif name == "subtotal_plus_tax_is_total":
            result = _subtotal_tax_total(fields, roles, config.tolerance)
        elif name == "quantity_times_unit_price":
            result = _line_arithmetic(line_items, config.tolerance)
        elif name == "due_after_invoice_date":
            result = _due_after_issue(fields, roles, config.tolerance)
        else:
            result = _one_currency(fields)
        if result is not None:
            results.append(result)
    return results


# -------------------------------------------------------------------------------------- choosing candidates
_VALUE_KEYS = ("normalized", "currency", "error", "ambiguous")


def use_candidate(entry: dict, candidate: dict) -> None:
    """Make `candidate` the value of a single-valued field (in place)."""
    for key in _VALUE_KEYS:
        entry.pop(key, None)
    entry.update({key: candidate[key] for key in _VALUE_KEYS if key in candidate})
    entry.update(value=candidate["text"], score=candidate["score"], box=candidate.get("box"),
                 page=candidate.get("page"))
    if "model_score" in candidate:
        entry["model_score"] = candidate["model_score"]


def _checked_single_fields(config: CheckConfig) -> list[str]:
    names = []
    for check, roles in config.fields.items():
        for role, name in roles.items():
            if not (check == "items_sum_to_subtotal" and role == "items") and name not in names:
                names.append(name)
    return names


def choose_by_checks(fields: dict, line_items: list[dict] | None, config: CheckConfig | None = None) -> list[str]:
    """Among the `CANDIDATES_PER_FIELD` best candidates of each single-valued field the checks read, use the
    combination that passes the most checks (ties: the highest summed score; the model's choice when nothing
    passes more). The fields whose value changed get "chosen_by": "checks"; returns their names."""
    config = config or CheckConfig()
    names = [name for name in _checked_single_fields(config)
             if fields.get(name) and not fields[name].get("multiple") and len(fields[name].get("candidates", [])) > 1]
    if not names:
        return []
    options = []
    for name in names:
        ranked = sorted(fields[name]["candidates"], key=lambda candidate: -candidate["score"])
        options.append(ranked[:CANDIDATES_PER_FIELD])

    def passed(combination) -> int:
        trial = dict(fields)
        for name, candidate in zip(names, combination):
            trial[name] = dict(fields[name])
            use_candidate(trial[name], candidate)
        return sum(result["ok"] for result in run_checks(trial, line_items, config))

    baseline = passed([_as_candidate(fields[name]) for name in names])
    best, best_key = None, (baseline, float("-inf"))
    for combination in itertools.product(*options):
        key = (passed(combination), sum(candidate["score"] for candidate in combination))
        if key[0] > baseline and key > best_key:
            best, best_key = combination, key
    if best is None:
        return []
    changed = []
    for name, candidate in zip(names, best):
        if candidate["text"] != fields[name]["value"] or candidate.get("box") != fields[name].get("box"):
            use_candidate(fields[name], candidate)
            fields[name]["chosen_by"] = "checks"
            changed.append(name)
    return changed


def _as_candidate(entry: dict) -> dict:
    return {"text": entry["value"], "score": entry["score"], "box": entry.get("box"), "page": entry.get("page"),
            **{key: entry[key] for key in _VALUE_KEYS if key in entry}}
