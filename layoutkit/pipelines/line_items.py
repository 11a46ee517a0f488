"""Line items: the rows of an invoice's item table, from the entity spans of all pages of one document.

The token-classification model tags words (`item_description`, `item_quantity`, `item_unit_price`,
`item_amount`); an accounts-payable system wants rows:

    [{"description": "Premium Web Hosting (12 months)", "quantity": "2", "unit_price": "12.50",
      "amount": "25.00", "currency": "USD", "box": [60, 410, 790, 448], "page": 1, "score": 0.97,
      "cells": {"description": {"text": ..., "score": ..., "box": ...}, "quantity": {"text": "2",
                "normalized": "2", ...}, ...}}]

`group_line_items(entities, links=None)` builds them. Values are typed with `fields.py`'s parsers: the
quantity a number, unit price and amount a plain decimal string, with the currency the amount (else the unit
price) names; a value that does not parse is None at the top level and keeps its text and an "error" in
"cells".

The row-grouping rule (used for every cell no link places):

1. Cells are the spans of the four line-item types (`COLUMN_TYPES` maps entity types to columns; the sample's
   `item_*` names and plain `description`, `quantity`, `qty`, `unit_price`, `amount`, ... are known).
2. Rows are anchored on the one-line number cells (amount, quantity, unit price): on each page, those cells
   are sorted top to bottom and a cell that overlaps the current row's vertical band by at least half of the
   smaller height joins it; otherwise it starts a new row. Several number cells of one column in one row: the
   highest-scoring is the value.
3. Each description piece joins the row it overlaps most vertically (same visual row). A piece that overlaps
   no row (a description wrapped onto the next line) joins the nearest row above it on its page when it lies
   within two of that row's line heights below the row's last piece; a piece above the first row or too far
   away starts a row of its own (a description without numbers). The pieces of one row are joined top to
   bottom, left to right, with spaces.
4. Rows never cross pages; the rows of a document are in page order, top to bottom.

Links from a relation model (`links`: pairs of indices into `entities`, head -> tail, e.g. description ->
amount; `links_from_pairs` turns a relation-extraction pipeline's pairs into them) take precedence: cells
connected by links form one row. A cell no link mentions joins the linked row the rule put it with, unless that
row already has a linked cell of its column (a description piece still joins when it lies below all of the
row's cells: a wrapped line); otherwise it stays in a row with the other unlinked cells of its rule row. Links
between cells of different pages and links that touch a non-line-item entity are ignored.

Copied into saved checkpoints beside the custom pipeline: the standard library, `boxes.py` and `fields.py` only.
"""

from __future__ import annotations

from .boxes import union_box
from .fields import parse_amount, parse_number

COLUMNS = ("description", "quantity", "unit_price", "amount")
# Entity type names (lower case) of each column.
COLUMN_TYPES = {
    "description": ("item_description", "description", "line_description", "item_name", "item"),
    "quantity": ("item_quantity", "quantity", "qty", "item_qty", "line_quantity"),
    "unit_price": ("item_unit_price", "unit_price", "item_price", "price", "rate", "line_unit_price"),
    "amount": ("item_amount", "line_amount", "line_total", "item_total", "amount"),
}
ANCHOR_COLUMNS = ("amount", "quantity", "unit_price")
MIN_OVERLAP = 0.5  # share of the smaller height two boxes must share to be on one visual row
WRAP_DISTANCE = 2.0  # a wrapped description line lies within this many line heights below its row


def column_of(entity_type: str | None, column_types: dict | None = None) -> str | None:
    """The line-item column of an entity type, or None when it is not a line-item type."""
    if not entity_type:
        return None
    lowered = entity_type.lower()
    for column, names in (column_types or COLUMN_TYPES).items():
        if lowered in names:
            return column
    return None


def _height(box) -> float:
    return max(1.0, box[3] - box[1])


def _overlap(box, band) -> float:
    """Vertical overlap of `box` with `band` ([top, bottom]) as a share of the smaller height."""
    shared = min(box[3], band[1]) - max(box[1], band[0])
    return max(0.0, shared) / max(1.0, min(_height(box), band[1] - band[0]))


class _Row:
    def __init__(self, page: int, cell: int, box):
        self.page = page
        self.cells = [cell]
        self.band = [box[1], box[3]]  # vertical extent of the anchor cells
        self.bottom = box[3]  # lowest point of any piece (wrapped lines extend it)
        self.line_height = _height(box)

    def add(self, cell: int, box, anchor: bool) -> None:
        self.cells.append(cell)
        if anchor:
            self.band = [min(self.band[0], box[1]), max(self.band[1], box[3])]
        self.bottom = max(self.bottom, box[3])


def rule_rows(cells: list[dict]) -> list[list[int]]:
    """The row-grouping rule (module docstring) over `cells` ({"column", "box", "page"}): lists of cell indices,
    one per row, in page order then top to bottom."""
    rows: list[_Row] = []
    pages = sorted({cell["page"] for cell in cells})
    for page in pages:
        on_page = [i for i, cell in enumerate(cells) if cell["page"] == page and cell.get("box")]
        anchors = sorted((i for i in on_page if cells[i]["column"] in ANCHOR_COLUMNS),
                         key=lambda i: (cells[i]["box"][1] + cells[i]["box"][3], cells[i]["box"][0]))
        page_rows: list[_Row] = []
        for i in anchors:
            box = cells[i]["box"]
            if page_rows and _overlap(box, page_rows[-1].band) >= MIN_OVERLAP:
                page_rows[-1].add(i, box, anchor=True)
            else:
                page_rows.append(_Row(page, i, box))
        pieces = sorted((i for i in on_page if cells[i]["column"] not in ANCHOR_COLUMNS),
                        key=lambda i: (cells[i]["box"][1], cells[i]["box"][0]))
        for i in pieces:
            box = cells[i]["box"]
            best = max(page_rows, key=lambda row: _overlap(box, row.band), default=None)
            if best is not None and _overlap(box, best.band) >= MIN_OVERLAP:
                best.add(i, box, anchor=False)
                continue
            above = [row for row in page_rows if row.band[0] <= box[1]]
            row = above[-1] if above else None
            if row is not None and box[1] - row.bottom <= WRAP_DISTANCE * row.line_height:
                row.add(i, box, anchor=False)
            else:
                page_rows.append(_Row(page, i, box))
                page_rows.sort(key=lambda row: row.band[0])
        rows.extend(page_rows)
    # Cells without a box cannot be placed on a row: each is a row of its own, after its page's rows.
    placed = {i for row in rows for i in row.cells}
    groups = [row.cells for row in rows]
    groups += [[i] for i in range(len(cells)) if i not in placed]
    return groups


def _linked_rows(cells: list[dict], rule: list[list[int]], links, cell_of_entity: dict[int, int]) -> list[list[int]]:
    """Rows from links: linked cells (`cell_of_entity`: entity index -> cell index) form one row per connected
    group; an unlinked cell joins the linked group its rule row holds when that group has no linked cell of its
    column (or, for a description piece, when it lies below all of the group's cells: a wrapped line), else it
    stays with the other such cells of its rule row."""
    parent = list(range(len(cells)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    linked = set()
    for head, tail in links:
        if head in cell_of_entity and tail in cell_of_entity:
            a, b = cell_of_entity[head], cell_of_entity[tail]
            if cells[a]["page"] == cells[b]["page"] and a != b:
                parent[find(a)] = find(b)
                linked.update((a, b))
    members: dict[int, list[int]] = {}
    for i in linked:
        members.setdefault(find(i), []).append(i)

    def fits(i: int, root: int) -> bool:
        group = members[root]
        if all(cells[j]["column"] != cells[i]["column"] for j in group):
            return True
        box = cells[i].get("box")
        return (cells[i]["column"] == "description" and box is not None
                and all(cells[j].get("box") and box[1] >= cells[j]["box"][3] for j in group))

    groups: dict = {}
    for rule_row in rule:
        root = next((find(i) for i in rule_row if i in linked), None)
        for i in rule_row:
            if i in linked:
                key = find(i)
            elif root is not None and fits(i, root):
                key = root
            else:
                key = ("rule", rule_row[0])
            groups.setdefault(key, []).append(i)  # dicts keep insertion order: rows stay in rule order
    return list(groups.values())


def _row_output(cells: list[dict], members: list[int], locale: str | None = None) -> dict:
    by_column: dict[str, list[dict]] = {}

    def reading(i: int):
        box = cells[i].get("box")
        return (box[1], box[0]) if box else (0, 0)

    for i in sorted(members, key=reading):
        by_column.setdefault(cells[i]["column"], []).append(cells[i])
    row: dict = {column: None for column in COLUMNS}
    row["currency"] = None
    details: dict[str, dict] = {}
    pieces = by_column.get("description", [])
    if pieces:
        text = " ".join(" ".join(piece["text"].split()) for piece in pieces)
        score = sum(piece["score"] for piece in pieces) / len(pieces)
        row["description"] = text
        details["description"] = {"text": text, "score": round(score, 4), "box": _union(pieces)}
    for column in ("quantity", "unit_price", "amount"):
        candidates = by_column.get(column, [])
        if not candidates:
            continue
        best = max(candidates, key=lambda cell: cell["score"])
        detail = {"text": best["text"], "score": round(best["score"], 4), "box": best.get("box")}
        if column == "quantity":
            value, error = parse_number(best["text"], locale)
            detail["normalized"] = value
        else:
            parsed, error = parse_amount(best["text"], locale)
            value = parsed["amount"] if parsed else None
            detail.update(normalized=value, currency=parsed["currency"] if parsed else None)
            if parsed and parsed["currency"] and (row["currency"] is None or column == "amount"):
                row["currency"] = parsed["currency"]
        if error:
            detail["error"] = error
        if len(candidates) > 1:
            detail["others"] = [cell["text"] for cell in candidates if cell is not best]
        row[column] = value
        details[column] = detail
    all_cells = [cells[i] for i in members]
    row["box"] = _union(all_cells)
    row["page"] = all_cells[0]["page"]
    row["score"] = round(sum(cell["score"] for cell in all_cells) / len(all_cells), 4)
    row["cells"] = details
    return row


def _union(cells: list[dict]):
    boxes = [cell["box"] for cell in cells if cell.get("box") is not None]
    return [round(v) for v in union_box(boxes)] if boxes else None


def links_from_pairs(entities: list[dict], pairs: list[dict], page: int | None = None) -> list[tuple[int, int]]:
    """`links` for `group_line_items` from a relation-extraction pipeline's pairs
    (`[{"key": {"words": [word indices], ...}, "value": {"words": [...], ...}, "score", ["page"]}]`): each side is
    the entity (index into `entities`) whose `start`-`end` word range holds its first word, on the pair's page
    (its "page", else `page`, else 1). Pairs whose words fall in no entity are left out."""
    links = []
    for pair in pairs:
        pair_page = pair.get("page") or page or 1
        ends = []
        for side in (pair.get("key") or {}, pair.get("value") or {}):
            words = side.get("words") or []
            found = next((index for index, entity in enumerate(entities)
                          if words and (entity.get("page") or 1) == pair_page
                          and entity.get("start") is not None and entity["start"] <= words[0] < entity["end"]), None)
            ends.append(found)
        if None not in ends:
            links.append((ends[0], ends[1]))
    return links


def group_line_items(entities: list[dict], links=None, column_types: dict | None = None,
                     locale: str | None = None) -> list[dict]:
    """The line items of one document from its entities (all pages; each with "entity_group", "word",
    "score", "box" and "page", default 1).

    `links`: optional (head, tail) pairs of indices into `entities` from a relation model; cells they connect
    form one row (see the module docstring). `column_types`: entity type names per column (default
    `COLUMN_TYPES`). `locale`: how numbers and currency symbols are read (`fields.parse_amount`). Returns one
    dict per row: "description", "quantity", "unit_price", "amount" (typed values or None), "currency", "box",
    "page", "score" (mean of the cells' scores) and "cells"."""
    cells = []
    index_of_entity: dict[int, int] = {}
    for index, entity in enumerate(entities):
        column = column_of(entity.get("entity_group"), column_types)
        if column is None:
            continue
        index_of_entity[index] = len(cells)
        box = entity.get("box")
        cells.append({"column": column, "text": entity.get("word", ""), "score": float(entity.get("score", 1.0)),
                      "box": list(box) if box is not None else None, "page": entity.get("page") or 1})
    rows = rule_rows(cells)
    if links:
        rows = _linked_rows(cells, rows, links, index_of_entity)
    return [_row_output(cells, members, locale) for members in rows]
