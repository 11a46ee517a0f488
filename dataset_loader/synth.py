"""Synthetic invoices in the user annotation format: the built-in sample data for the quick start and tests.

Fields are learnable on purpose: every value follows a consistent keyword cue ("Invoice No:", "Due Date",
"Total", ...) that is labelled O, while the value words carry the entity tags. Variety comes from
layouts (header placement, metadata style, table style with or without borders, column order, descriptions
wrapped over two lines, totals placement), fonts, sizes, formats of dates/numbers/amounts and light scan noise
(no geometric distortion, so boxes stay exact). Each word is drawn on its own, so its box comes straight from
ImageDraw.textbbox. Line items are labelled item_description, item_quantity, item_unit_price and item_amount.

With `links=True` each annotation also carries the document structure: `entity_ids` (one per word: every
labelled entity and every keyword cue that names a value; null elsewhere), `relations` ([key id, value id]
pairs: "Invoice No:" -> the number, "Total" -> the total, and within a row description -> quantity, unit price
and amount) and `row_ids` (the line-item row of each table word, null elsewhere). `multi_page` continues
some tables on a second page image (see `synth_pages`).

Every page records its drawing (`Page.operations`), so the same layout also becomes a born-digital PDF whose text
layer holds the annotation's words (`generate(format="pdf")`, `synth_pdf`), or a scanned one (`scanned_pages`).

Deterministic: document i depends only on (seed, i), so the same seed writes byte-identical
annotations, whatever --num_docs or the number of worker processes (on the same installed fonts).
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import json
import multiprocessing
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont
from tqdm.auto import tqdm

from layoutkit.pipelines.boxes import union_box

# The sample's version: raised whenever what the generator writes changes what a model learns from it (labels,
# layouts, vocabulary), so that numbers measured on the sample name the sample they came from (the quick start's
# summary prints it; the README's quick-start numbers carry it, checked by tests/test_quickstart.py).
# v1: 9 field types; v2: item_quantity and item_unit_price labelled (11 field types), varied tables; v3: grid
# tables pad their cells.
SAMPLE_VERSION = 3

ENTITY_TYPES = (
    "vendor",
    "invoice_number",
    "invoice_date",
    "due_date",
    "item_description",
    "item_quantity",
    "item_unit_price",
    "item_amount",
    "subtotal",
    "tax",
    "total",
)

FONT_DIRS = (
    "/usr/share/fonts/truetype/dejavu",  # Debian/Ubuntu fonts-dejavu-core
    "/usr/share/fonts/dejavu",
    "/usr/share/fonts/TTF",
    "/usr/local/share/fonts",
    "/Library/Fonts",
)
# (regular, bold) file names per family; families whose files are missing are skipped.
FONT_FAMILIES = (
    ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf"),
    ("DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf"),
    ("DejaVuSansCondensed.ttf", "DejaVuSansCondensed-Bold.ttf"),
    ("DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf"),
    ("DejaVuSerifCondensed.ttf", "DejaVuSerifCondensed-Bold.ttf"),
)

# ---------------------------------------------------------------- vocabulary

VENDOR_FIRST = (
    "Acme", "Globex", "Initech", "Northwind", "Contoso", "Blue River", "Summit", "Pioneer", "Silverline",
    "Brightway", "Redwood", "Oakridge", "Apex", "Vertex", "Nimbus", "Horizon", "Evergreen", "Harbor",
    "Keystone", "Lakeside", "Maple Leaf", "Quantum", "Sterling", "Atlas", "Cobalt", "Granite", "Juniper",
    "Falcon", "Orchid", "Sunrise", "Riverside", "Ironwood", "Bluebird", "Crescent", "Meridian", "Polaris",
)
VENDOR_MIDDLE = (
    "Supply", "Logistics", "Consulting", "Technologies", "Print", "Foods", "Design", "Electric", "Solutions",
    "Trading", "Industries", "Labs", "Services", "Media", "Analytics", "Hardware", "Software", "Studio",
    "Office Supplies", "Cleaning", "Engineering", "Marketing", "Systems", "",
)
VENDOR_SUFFIX = ("Inc.", "LLC", "Ltd.", "GmbH", "Co.", "Corp.", "Group", "& Sons", "S.A.", "")
FIRST_NAMES = ("Jane", "John", "Maria", "David", "Aisha", "Liam", "Sofia", "Noah", "Elena", "Omar", "Grace", "Tom")
LAST_NAMES = ("Smith", "Johnson", "Garcia", "Miller", "Chen", "Novak", "Okafor", "Rossi", "Schmidt", "Dubois")
STREETS = ("Main", "Oak", "Maple", "Cedar", "Park", "Lake", "Hill", "Station", "Market", "Church", "Mill", "River")
STREET_TYPES = ("Street", "Avenue", "Road", "Blvd", "Lane", "Way", "Drive")
CITIES = (
    ("Springfield", "IL 62701"), ("Portland", "OR 97205"), ("Austin", "TX 73301"), ("Denver", "CO 80202"),
    ("London", "EC1A 1BB"), ("Berlin", "10115"), ("Toronto", "ON M5H 2N2"), ("Dublin", "D02 X285"),
    ("Madison", "WI 53703"), ("Leeds", "LS1 4AP"), ("Lyon", "69002"), ("Boston", "MA 02108"),
)
ITEM_ADJECTIVES = ("Premium", "Standard", "Basic", "Annual", "Monthly", "Deluxe", "Custom", "Express", "", "", "")
ITEM_NOUNS = (
    "Web Hosting", "Consulting Hours", "Printer Toner", "USB-C Cable", "Office Chair", "Laptop Stand",
    "Software License", "Logo Design", "Maintenance Fee", "Shipping", "Copy Paper", "Desk Lamp",
    "Cloud Storage", "Support Plan", "Network Switch", "Training Session", "Coffee Beans", "Cleaning Service",
    "Website Audit", "Photo Editing", "Keyboard", "Monitor", "Domain Renewal", "Data Backup", "Catering",
)
ITEM_DETAILS = ("(Black)", "- 2m", "x10", "(12 months)", "- Pro", "Pack", "(A4)", "v2", "", "", "", "", "")
# Extra phrases of longer descriptions (wrapped over two lines in narrow tables).
ITEM_EXTRAS = (
    "incl. installation and setup", "for the period Jan to Mar", "as per quote Q-2291", "delivered to site",
    "with extended warranty", "billed per unit", "onsite, two technicians", "including materials",
)
FILLER_NOTES = (
    "Please include the invoice number with your payment.",
    "Goods remain our property until paid in full.",
    "Questions about this invoice? Contact our billing team.",
    "Late payments may incur a fee of 1.5% per month.",
    "All prices include delivery unless stated otherwise.",
)
TERMS = (
    "Terms and conditions: payment is due by the date shown above.",
    "Please make payments by bank transfer and quote the invoice number as reference.",
    "Goods returned within 14 days in their original packaging are refunded in full.",
    "Disputes must be raised in writing within 10 days of receipt of this invoice.",
    "Interest may be charged on overdue amounts at the statutory rate.",
    "Services are provided under our standard terms, available on request.",
)
THANKS = ("Thank you for your business!", "Thank you for your business.", "We appreciate your business.")

# Keyword cues (always labelled O) for each field; a few synonyms each, used consistently.
CUES = {
    "invoice_number": ("Invoice No:", "Invoice #:", "Invoice Number:", "Invoice No."),
    "invoice_date": ("Invoice Date:", "Date:", "Date of Issue:", "Issue Date:"),
    "due_date": ("Due Date:", "Payment Due:", "Due By:"),
    "subtotal": ("Subtotal", "Sub-total", "Net Amount"),
    "total": ("Total", "Total Due", "Amount Due", "Balance Due", "TOTAL"),
    "bill_to": ("Bill To:", "Billed To:", "Customer:", "Invoice To:"),
}
DATE_FORMATS = ("%Y-%m-%d", "%d/%m/%Y", "%m/%d/%Y", "%B %d, %Y", "%d %b %Y", "%d.%m.%Y", "%b %d, %Y")

HEADER_STYLES = ("left", "right", "banner", "centered")
META_STYLES = ("columns", "inline", "stacked")
TABLE_STYLES = ("grid", "zebra", "plain", "header_bar", "borderless")
COLUMN_ORDERS = (
    ("desc", "qty", "unit", "amount"),
    ("qty", "desc", "unit", "amount"),
    ("desc", "unit", "qty", "amount"),
    ("qty", "unit", "desc", "amount"),
    ("desc", "amount", "qty", "unit"),
)
WRAP_PROBABILITY = 0.35  # share of tables whose description column is narrow: long descriptions wrap
LONG_DESCRIPTION_PROBABILITY = 0.4  # share of invoices whose items carry a longer description
TOTALS_PLACEMENTS = ("right", "left", "boxed")


# ---------------------------------------------------------------- content


@dataclass
class Item:
    description: str
    quantity: str
    unit_price: str
    amount: str


@dataclass
class Invoice:
    """What an invoice says, before any layout."""

    vendor: str
    vendor_lines: list[str]
    customer_lines: list[str]
    invoice_number: str
    invoice_date: str
    due_date: str
    po_number: str | None
    items: list[Item]
    subtotal: str
    tax_cue: str
    tax: str
    total: str
    amount_header: str
    notes: list[str]
    thanks: str
    cues: dict[str, str] = field(default_factory=dict)


def make_invoice(rng: random.Random) -> Invoice:
    """Draw the content: consistent amounts (line = quantity x unit price, total = subtotal + tax)."""
    money = _money_style(rng)
    items = []
    subtotal_cents = 0
    long_descriptions = rng.random() < LONG_DESCRIPTION_PROBABILITY
    for _ in range(rng.randint(1, 6)):
        quantity = rng.choice((1, 1, 1, 2, 3, 4, 5, 10, 12, 20, 25))
        unit_cents = rng.choice((rng.randint(100, 9_999), rng.randint(1_000, 99_999), rng.randint(10_000, 400_000)))
        amount_cents = quantity * unit_cents
        subtotal_cents += amount_cents
        description = _item_description(rng)
        if long_descriptions:
            description += " " + rng.choice(ITEM_EXTRAS)
        items.append(Item(description, str(quantity), money(unit_cents, False), money(amount_cents, False)))
    rate = rng.choice((5, 7.5, 8, 10, 13, 19, 20))
    tax_cents = round(subtotal_cents * rate / 100)
    rate_text = f"{rate:g}%"
    issued = datetime.date(2020, 1, 1) + datetime.timedelta(days=rng.randint(0, 6 * 365))
    due = issued + datetime.timedelta(days=rng.choice((7, 14, 15, 30, 45, 60)))
    date_format = rng.choice(DATE_FORMATS)
    city, postcode = rng.choice(CITIES)
    vendor = _company(rng)
    vendor_lines = [f"{rng.randint(1, 9999)} {rng.choice(STREETS)} {rng.choice(STREET_TYPES)}", f"{city} {postcode}"]
    if rng.random() < 0.8:
        vendor_lines.append(f"Phone: +1 ({rng.randint(200, 999)}) {rng.randint(200, 999)}-{rng.randint(1000, 9999)}")
    if rng.random() < 0.7:
        domain = vendor.split()[0].lower().replace(".", "")
        vendor_lines.append(f"billing@{domain}.com")
    customer_city, customer_postcode = rng.choice(CITIES)
    customer = _company(rng) if rng.random() < 0.4 else f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"
    customer_lines = [customer, f"{rng.randint(1, 999)} {rng.choice(STREETS)} {rng.choice(STREET_TYPES)}"]
    customer_lines.append(f"{customer_city} {customer_postcode}")
    notes = []
    notes.append(rng.choice(("Payment terms:", "Terms:")) + f" Net {(due - issued).days} days")
    if rng.random() < 0.5:
        notes.append(rng.choice(FILLER_NOTES))
    if rng.random() < 0.4:
        notes.append(f"Bank: First National Bank  IBAN: GB{rng.randint(10, 99)} NWBK {rng.randint(1000, 9999)} "
                     f"{rng.randint(1000, 9999)} {rng.randint(1000, 9999)}")
    if rng.random() < 0.35:  # a longer terms paragraph: some pages carry much more filler text
        notes += rng.sample(TERMS, rng.randint(2, 4))
    return Invoice(
        vendor=vendor,
        vendor_lines=vendor_lines,
        customer_lines=customer_lines,
        invoice_number=_invoice_number(rng, issued.year),
        invoice_date=issued.strftime(date_format),
        due_date=due.strftime(date_format),
        po_number=str(rng.randint(10000, 99999)) if rng.random() < 0.3 else None,
        items=items,
        subtotal=money(subtotal_cents, True),
        tax_cue=rng.choice((f"Tax ({rate_text})", f"VAT {rate_text}", f"Sales Tax {rate_text}", "Tax")),
        tax=money(tax_cents, True),
        total=money(subtotal_cents + tax_cents, True),
        amount_header=rng.choice(("Amount", "Amount", "Line Total")) + money.header_suffix,
        notes=notes,
        thanks=rng.choice(THANKS),
        cues={name: rng.choice(options) for name, options in CUES.items()},
    )


def _company(rng: random.Random) -> str:
    parts = [rng.choice(VENDOR_FIRST), rng.choice(VENDOR_MIDDLE), rng.choice(VENDOR_SUFFIX)]
    return " ".join(part for part in parts if part)


def _item_description(rng: random.Random) -> str:
    parts = [rng.choice(ITEM_ADJECTIVES), rng.choice(ITEM_NOUNS), rng.choice(ITEM_DETAILS)]
    return " ".join(part for part in parts if part)


def _invoice_number(rng: random.Random, year: int) -> str:
    number = rng.randint(1, 99999)
    return rng.choice(
        (f"INV-{number:05d}", f"{year}-{number:04d}", f"A{number:06d}", f"INV/{year}/{number:03d}", f"{number:07d}")
    )


class _Money:
    """Formats cents in one document's currency style; `total` amounts may carry a currency code word."""

    def __init__(self, symbol: str, european: bool, code: str | None):
        self.symbol, self.european, self.code = symbol, european, code
        self.header_suffix = f" ({code})" if code else ""

    def __call__(self, cents: int, total: bool) -> str:
        text = f"{cents / 100:,.2f}"
        if self.european:
            text = text.replace(",", " ").replace(".", ",").replace(" ", ".")
        if self.code:
            return f"{self.code} {text}" if total else text
        return f"{text} {self.symbol}" if self.european else f"{self.symbol}{text}"


def _money_style(rng: random.Random) -> _Money:
    return rng.choice((_Money("$", False, None), _Money("£", False, None), _Money("€", True, None),
                       _Money("", False, "USD"), _Money("", True, "EUR"), _Money("$", False, None)))


# ---------------------------------------------------------------- drawing


@dataclass
class Style:
    regular: ImageFont.FreeTypeFont
    bold: ImageFont.FreeTypeFont
    small: ImageFont.FreeTypeFont
    heading: ImageFont.FreeTypeFont  # vendor name
    title: ImageFont.FreeTypeFont  # the word INVOICE
    ink: tuple[int, int, int]
    accent: tuple[int, int, int]
    line: int  # line height of regular text


Part = tuple[str, str | None]  # (text, entity type or None for O)


class Page:
    """A blank page that records every word it draws: text, box, BIO tag and its line (segment) box, plus the
    document structure: entity ids (every labelled part of a `write` is one entity), links and row ids."""

    def __init__(self, size: tuple[int, int], paper: tuple[int, int, int], first_entity_id: int = 0):
        self.image = Image.new("RGB", size, paper)
        self.draw = ImageDraw.Draw(self.image)
        self.paper = paper
        # The drawing as a list of operations, in order: ("text", x, y, word, font, fill), ("rectangle", box,
        # fill, outline, width), ("line", points, fill, width), in pixels of the image. The image is drawn as they
        # are recorded; the PDF writer (synth_pdf) replays them, so both formats come from one layout.
        self.operations: list[tuple] = []
        self.words: list[str] = []
        self.boxes: list[list[int]] = []
        self.labels: list[str] = []
        self.segments: list[list[int]] = []
        # Document structure (written with links=True): an entity id per word (every labelled entity, and the
        # keyword cues that name a value), keyword -> value links, and the line-item row of each table word.
        self.entity_ids: list[int | None] = []
        self.row_ids: list[int | None] = []
        self.relations: list[list[int]] = []
        self.next_entity_id = first_entity_id  # ids run on over the pages of one document
        self.last_parts: list[tuple[range, int | None]] = []  # the last write's parts: word range, entity id

    @property
    def width(self) -> int:
        return self.image.width

    def measure(self, parts: Sequence[Part] | str, font: ImageFont.FreeTypeFont) -> float:
        words = [word for text, _ in _parts(parts) for word in text.split()]
        return sum(font.getlength(word) for word in words) + font.getlength(" ") * (len(words) - 1)

    def write(
        self, x: float, y: float, parts: Sequence[Part] | str, font: ImageFont.FreeTypeFont,
        fill: tuple[int, int, int], align: str = "left", row: int | None = None,
    ) -> list[int]:
        """Draw one line of words starting at x (or ending at x for align="right", centred for "center");
        returns the line's box, which also becomes every word's segment box. Each labelled part becomes an
        entity with a new id (`last_parts`); `row` is the line-item row of the labelled parts."""
        width = self.measure(parts, font)
        x -= {"left": 0, "right": width, "center": width / 2}[align]
        y = round(y)  # integer positions give integer, exact boxes
        space = font.getlength(" ")
        start = len(self.words)
        self.last_parts = []
        for text, entity in _parts(parts):
            part_start = len(self.words)
            entity_id = None if entity is None else self._new_entity_id()
            for position, word in enumerate(text.split()):
                left = round(x)
                self.draw.text((left, y), word, font=font, fill=fill)
                self.operations.append(("text", left, y, word, font, fill))
                self.boxes.append([int(v) for v in self.draw.textbbox((left, y), word, font=font)])
                self.words.append(word)
                self.labels.append("O" if entity is None else f"{'B' if position == 0 else 'I'}-{entity}")
                self.entity_ids.append(entity_id)
                self.row_ids.append(row if entity is not None else None)
                x += font.getlength(word) + space
            self.last_parts.append((range(part_start, len(self.words)), entity_id))
        line_box = union_box(self.boxes[start:]) if len(self.boxes) > start else [round(x), y, round(x), y]
        self.segments.extend(list(line_box) for _ in range(len(self.boxes) - start))
        return line_box

    def rectangle(self, box: Sequence[float], fill=None, outline=None, width: int = 1) -> None:
        """A filled and/or outlined rectangle (ImageDraw.rectangle's box: both corners inclusive)."""
        self.draw.rectangle(list(box), fill=fill, outline=outline, width=width)
        self.operations.append(("rectangle", list(box), fill, outline, width))

    def line(self, points: Sequence[float], fill, width: int = 1) -> None:
        """A straight line from (x0, y0) to (x1, y1)."""
        self.draw.line(list(points), fill=fill, width=width)
        self.operations.append(("line", list(points), fill, width))

    def _new_entity_id(self) -> int:
        self.next_entity_id += 1
        return self.next_entity_id - 1

    def entity(self, part: int = 0) -> int:
        """The entity id of part `part` of the last write; an unlabelled part (a keyword cue, "PO Number:") gets
        one here."""
        words, entity_id = self.last_parts[part]
        if entity_id is None:
            entity_id = self._new_entity_id()
            for index in words:
                self.entity_ids[index] = entity_id
            self.last_parts[part] = (words, entity_id)
        return entity_id

    def continue_entity(self, entity_id: int, part: int = 0) -> None:
        """Join part `part` of the last write to entity `entity_id` (a description wrapped onto the next line):
        same id, and its first word tagged I- instead of B-."""
        words, own_id = self.last_parts[part]
        for index in words:
            self.entity_ids[index] = entity_id
        if words and self.labels[words[0]].startswith("B-"):
            self.labels[words[0]] = "I-" + self.labels[words[0]][2:]
        self.last_parts[part] = (words, entity_id)

    def relate(self, head: int | None, tail: int | None) -> None:
        """Link entity `head` (a key) to entity `tail` (its value)."""
        if head is not None and tail is not None:
            self.relations.append([head, tail])

    def structure(self) -> dict:
        """The structure keys of the annotation: entity_ids, relations, row_ids."""
        ids = set(self.entity_ids) - {None}
        relations = [pair for pair in self.relations if pair[0] in ids and pair[1] in ids]
        return {"entity_ids": list(self.entity_ids), "relations": relations, "row_ids": list(self.row_ids)}


def _parts(parts: Sequence[Part] | str) -> list[Part]:
    return [(parts, None)] if isinstance(parts, str) else list(parts)


@functools.lru_cache(maxsize=None)
def font_families() -> tuple[tuple[str, str], ...]:
    """(regular, bold) font files found on this system; empty means "use Pillow's built-in font"."""
    found = []
    for regular, bold in FONT_FAMILIES:
        for folder in FONT_DIRS:
            if os.path.isfile(os.path.join(folder, regular)) and os.path.isfile(os.path.join(folder, bold)):
                found.append((os.path.join(folder, regular), os.path.join(folder, bold)))
                break
    return tuple(found)


@functools.lru_cache(maxsize=256)
def _font(path: str | None, size: int) -> ImageFont.FreeTypeFont:
    if path is None:
        return ImageFont.load_default(size=size)  # scalable since Pillow 10.1: never fails for lack of fonts
    return ImageFont.truetype(path, size)


def make_style(rng: random.Random) -> Style:
    families = font_families()
    regular, bold = rng.choice(families) if families else (None, None)
    size = rng.randint(12, 15)
    ink = rng.choice(((20, 20, 20), (0, 0, 0), (40, 40, 60), (30, 30, 30)))
    accent = rng.choice(((31, 78, 121), (120, 30, 40), (30, 100, 70), (60, 60, 60), (90, 50, 130)))
    return Style(
        regular=_font(regular, size),
        bold=_font(bold, size),
        small=_font(regular, size - 2),
        heading=_font(bold, rng.randint(20, 28)),
        title=_font(bold, rng.randint(26, 36)),
        ink=ink,
        accent=accent,
        line=round(size * rng.uniform(1.45, 1.7)),
    )


def render_invoice(invoice: Invoice, rng: random.Random, split_at: int | None = None) -> list[Page]:
    """Lay the invoice out: header, bill-to and metadata, item table, totals, notes, footer. With `split_at`,
    the table continues on a second page after `split_at` items (a continuation header, the rest of the rows,
    the totals); returns the pages."""
    style = make_style(rng)
    paper = rng.choice(((255, 255, 255), (253, 252, 248), (250, 250, 250)))
    page = Page((rng.randint(820, 880), rng.randint(1060, 1140)), paper)
    margin = rng.randint(45, 70)
    header = rng.choice(HEADER_STYLES)
    y = _draw_header(page, invoice, style, header, margin, rng)
    y = _draw_parties(page, invoice, style, header, margin, y + rng.randint(20, 40), rng)
    layout = _table_layout(page, invoice, style, margin, rng)
    first_items = invoice.items[:split_at] if split_at else invoice.items
    y = _draw_table(page, layout, first_items, 0, style, y + rng.randint(20, 35), rng)
    pages = [page]
    if split_at:
        page.write(layout.right, y + 10, rng.choice(("Continued on next page", "Continued on page 2")), style.small,
                   style.ink, align="right")
        page.write(page.width / 2, page.image.height - margin - style.line, "Page 1 of 2", style.small, style.ink,
                   align="center")
        page = Page(page.image.size, paper, first_entity_id=page.next_entity_id)
        y = _draw_continuation_header(page, invoice, style, margin, rng)
        y = _draw_table(page, layout, invoice.items[split_at:], split_at, style, y + rng.randint(20, 35), rng)
        pages.append(page)
    y = _draw_totals(page, invoice, style, margin, y + rng.randint(12, 24), layout.amount_right,
                     layout.lefts["amount"], rng)
    y += rng.randint(25, 45)
    for note in invoice.notes:
        page.write(margin, y, note, style.small, style.ink)
        y += style.line
    footer_y = max(y + 20, page.image.height - margin - style.line)
    page.write(page.width / 2, footer_y, invoice.thanks, style.regular, style.ink, align="center")
    return pages


def _draw_continuation_header(page: Page, invoice: Invoice, style: Style, margin: int, rng: random.Random) -> int:
    """The top of a continuation page: the invoice number (linked to its cue) and the page number."""
    y = margin
    page.write(margin, y, [(invoice.cues["invoice_number"], None), (invoice.invoice_number, "invoice_number")],
               style.bold, style.ink)
    page.relate(page.entity(0), page.entity(1))
    page.write(page.width - margin, y, rng.choice(("Page 2 of 2", "Page 2", "(continued)")), style.small, style.ink,
               align="right")
    return y + 2 * style.line


def _draw_header(page: Page, invoice: Invoice, style: Style, header: str, margin: int, rng: random.Random) -> int:
    """Vendor name and address, and the INVOICE title; returns the y below the header."""
    right = page.width - margin
    title = rng.choice(("INVOICE", "Invoice", "TAX INVOICE"))
    vendor = [(invoice.vendor, "vendor")]
    # A long vendor name in a wide font leaves no room for the title beside it: the title then goes below.
    beside = page.measure(vendor, style.heading) + page.measure(title, style.title) + 30 <= right - margin
    if header == "banner":
        band = rng.randint(95, 120)
        page.rectangle([0, 0, page.width, band], fill=style.accent)
        page.write(margin, band / 2 - style.heading.size * 0.6, vendor, style.heading, (255, 255, 255))
        y = band + 15
        if beside:
            page.write(right, band / 2 - style.title.size * 0.6, title, style.title, (255, 255, 255), align="right")
        else:
            page.write(right, y, title, style.title, style.accent, align="right")
        for line in invoice.vendor_lines:
            page.write(margin, y, line, style.small, style.ink)
            y += style.line
        return max(y, band + 15 + round(style.title.size * 1.5))
    if header == "centered":
        y = margin
        page.write(page.width / 2, y, vendor, style.heading, style.ink, align="center")
        y += round(style.heading.size * 1.5)
        page.write(page.width / 2, y, "  |  ".join(invoice.vendor_lines), style.small, style.ink, align="center")
        y += style.line + 10
        page.line([margin, y, right, y], fill=style.accent, width=2)
        y += 15
        page.write(page.width / 2, y, title, style.title, style.accent, align="center")
        return y + round(style.title.size * 1.3)
    # "left": vendor left, title right; "right": the mirror image.
    vendor_x, vendor_align = (margin, "left") if header == "left" else (right, "right")
    title_x, title_align = (right, "right") if header == "left" else (margin, "left")
    y = margin
    page.write(vendor_x, y, vendor, style.heading, style.ink, align=vendor_align)
    y += round(style.heading.size * 1.5)
    title_y = margin if beside else y
    page.write(title_x, title_y, title, style.title, style.accent, align=title_align)
    for line in invoice.vendor_lines:
        page.write(vendor_x, y, line, style.small, style.ink, align=vendor_align)
        y += style.line
    return max(y, title_y + round(style.title.size * 1.5))


def _draw_parties(
    page: Page, invoice: Invoice, style: Style, header: str, margin: int, y: int, rng: random.Random
) -> int:
    """The bill-to block on one side and invoice number/dates on the other; returns the y below both."""
    cues = invoice.cues
    rows = [
        (cues["invoice_number"], [(invoice.invoice_number, "invoice_number")]),
        (cues["invoice_date"], [(invoice.invoice_date, "invoice_date")]),
        (cues["due_date"], [(invoice.due_date, "due_date")]),
    ]
    if invoice.po_number:
        rows.insert(1, ("PO Number:", [(invoice.po_number, None)]))  # a number that is not the invoice number
    right = page.width - margin
    half = page.width // 2
    meta_style = rng.choice(META_STYLES)
    cue_width = max(page.measure(cue, style.bold) for cue, _ in rows)
    value_width = max(page.measure(value, style.bold) for _, value in rows)
    gap = rng.randint(15, 30)
    meta_width = {
        "inline": max(page.measure([(cue, None), *value], style.regular) for cue, value in rows),
        "columns": cue_width + gap + value_width,
        "stacked": 2 * (max(cue_width, value_width) + gap),
    }[meta_style]
    if header == "right":  # vendor on the right: metadata left, bill-to right
        meta_x, bill_x = margin, half + rng.randint(0, 60)
    else:
        meta_x, bill_x = max(half, right - meta_width - rng.randint(0, 60)), margin

    bill_y = y
    page.write(bill_x, bill_y, cues["bill_to"], style.bold, style.ink)
    bill_y += style.line
    for line in invoice.customer_lines:
        page.write(bill_x, bill_y, line, style.regular, style.ink)
        bill_y += style.line

    meta_y = y
    if meta_style == "inline":
        for cue, value in rows:
            page.write(meta_x, meta_y, [(cue, None), *value], style.regular, style.ink)
            page.relate(page.entity(0), page.entity(1))
            meta_y += style.line
    elif meta_style == "columns":
        for cue, value in rows:
            page.write(meta_x, meta_y, cue, style.bold, style.ink)
            key = page.entity()
            page.write(meta_x + cue_width + gap, meta_y, value, style.regular, style.ink)
            page.relate(key, page.entity())
            meta_y += style.line
    else:  # "stacked": cue above value, two per row
        column = max(cue_width, value_width) + gap
        for index, (cue, value) in enumerate(rows):
            x = meta_x + (index % 2) * column
            row_y = y + (index // 2) * (2 * style.line + 6)
            page.write(x, row_y, cue.rstrip(":.").upper(), style.small, style.accent)
            key = page.entity()
            page.write(x, row_y + style.line, value, style.bold, style.ink)
            page.relate(key, page.entity())
            meta_y = row_y + 2 * style.line + 6
    return max(bill_y, meta_y)


@dataclass
class TableLayout:
    """How one invoice's item table looks; shared by the pages a table runs over."""

    style: str  # one of TABLE_STYLES
    order: tuple[str, ...]  # column order, one of COLUMN_ORDERS
    headers: dict[str, str]
    lefts: dict[str, int]
    widths: dict[str, int]
    margin: int
    right: int
    row_height: int
    wrap_width: float | None  # descriptions wrap onto a second line at this width; None: cut to one line
    pad: int = 6

    @property
    def amount_right(self) -> int:
        return self.lefts["amount"] + self.widths["amount"] - self.pad


def _table_layout(page: Page, invoice: Invoice, style: Style, margin: int, rng: random.Random) -> TableLayout:
    """Column order, headers, widths and style of the line-item table."""
    table_style = rng.choice(TABLE_STYLES)
    order = rng.choice(COLUMN_ORDERS)
    right = page.width - margin
    headers = {
        "desc": rng.choice(("Description", "Item", "Item Description", "Service")),
        "qty": rng.choice(("Qty", "Quantity", "Units")),
        "unit": rng.choice(("Unit Price", "Rate", "Price")),
        "amount": invoice.amount_header,
    }
    pad = 12 if table_style == "grid" else 6  # grid lines close to the text merge into it when OCR reads the page
    values = {
        "qty": [item.quantity for item in invoice.items],
        "unit": [item.unit_price for item in invoice.items],
        "amount": [item.amount for item in invoice.items],
    }
    # Number columns are at least as wide as their header and values, so no two cells overlap.
    widths = {
        name: max(
            rng.randint(*minimum),
            round(max(page.measure(headers[name], style.bold), *(page.measure(v, style.regular) for v in values[name])))
            + 2 * pad + 10,
        )
        for name, minimum in (("qty", (55, 75)), ("unit", (100, 140)), ("amount", (110, 150)))
    }
    widths["desc"] = right - margin - sum(widths.values())
    lefts, x = {}, margin
    for name in order:
        lefts[name] = x
        x += widths[name]
    wrap_width = None
    if rng.random() < WRAP_PROBABILITY:  # a narrow description column, as in tables with more columns
        wrap_width = min(widths["desc"] - 2 * pad, rng.randint(150, 230))
    return TableLayout(table_style, order, headers, lefts, widths, margin, right, style.line + rng.randint(6, 12),
                       wrap_width, pad)


def _draw_table(
    page: Page, layout: TableLayout, items: Sequence[Item], first_row: int, style: Style, y: int,
    rng: random.Random,
) -> int:
    """The table header and the line items `items` (rows numbered from `first_row`); returns the y below it.

    Every row's cells are entities in row `first_row + i`; the description is linked to its quantity, unit
    price and amount. A wrapped description is one entity over two lines."""
    margin, right, pad, row_height = layout.margin, layout.right, layout.pad, layout.row_height

    def cell(name: str, row_y: int, parts: Sequence[Part] | str, font: ImageFont.FreeTypeFont, fill,
             row: int | None = None) -> int | None:
        if name == "desc":
            page.write(layout.lefts[name] + pad, row_y, parts, font, fill, row=row)
        else:  # numbers right-aligned in their column
            page.write(layout.lefts[name] + layout.widths[name] - pad, row_y, parts, font, fill, align="right", row=row)
        return page.last_parts[0][1] if page.last_parts else None

    header_fill = style.ink
    if layout.style == "header_bar":
        page.rectangle([margin, y - 4, right, y + row_height - 4], fill=style.accent)
        header_fill = (255, 255, 255)
    for name in layout.order:
        cell(name, y, layout.headers[name], style.bold, header_fill)
    top = y - 4
    y += row_height
    if layout.style != "borderless":
        page.line([margin, y - 4, right, y - 4], fill=style.ink, width=1 if layout.style != "plain" else 2)
    for index, item in enumerate(items):
        row = first_row + index
        lines = _description_lines(page, item.description, style.regular, layout)
        height = row_height + style.line * (len(lines) - 1)
        if layout.style == "zebra" and row % 2 == 0:
            page.rectangle([margin, y - 4, right, y + height - 4], fill=(236, 238, 242))
        description = cell("desc", y, [(lines[0], "item_description")], style.regular, style.ink, row)
        for number, line in enumerate(lines[1:], start=1):
            cell("desc", y + number * style.line, [(line, "item_description")], style.regular, style.ink, row)
            page.continue_entity(description)
        columns = (("qty", item.quantity, "item_quantity"), ("unit", item.unit_price, "item_unit_price"),
                   ("amount", item.amount, "item_amount"))
        for name, text, entity in columns:
            page.relate(description, cell(name, y, [(text, entity)], style.regular, style.ink, row))
        y += height
        if layout.style == "grid":
            page.line([margin, y - 4, right, y - 4], fill=(150, 150, 150), width=1)
    if layout.style == "grid":
        for x in [margin, *[layout.lefts[name] + layout.widths[name] for name in layout.order]]:
            page.line([x, top, x, y - 4], fill=(150, 150, 150), width=1)
    elif layout.style != "borderless":
        page.line([margin, y - 4, right, y - 4], fill=style.ink, width=1)
    return y


def _description_lines(page: Page, text: str, font: ImageFont.FreeTypeFont, layout: TableLayout) -> list[str]:
    """The description on one line cut to the column, or wrapped over at most two lines of `wrap_width`."""
    if layout.wrap_width is None:
        return [_fit(page, text, font, layout.widths["desc"] - 2 * layout.pad)]
    words = text.split()
    first = _fit(page, text, font, layout.wrap_width)
    rest = words[len(first.split()):]
    return [first, _fit(page, " ".join(rest), font, layout.wrap_width)] if rest else [first]


def _fit(page: Page, text: str, font: ImageFont.FreeTypeFont, width: float) -> str:
    """Drop trailing words until the text fits `width` (at least one word stays)."""
    words = text.split()
    while len(words) > 1 and page.measure(" ".join(words), font) > width:
        words.pop()
    return " ".join(words)


def _draw_totals(
    page: Page, invoice: Invoice, style: Style, margin: int, y: int, amount_right: int, amount_left: int,
    rng: random.Random,
) -> int:
    """Subtotal, tax and total: under the amount column (right), at the left margin, or in a box."""
    placement = rng.choice(TOTALS_PLACEMENTS)
    rows = [
        (invoice.cues["subtotal"], [(invoice.subtotal, "subtotal")], style.regular),
        (invoice.tax_cue, [(invoice.tax, "tax")], style.regular),
        (invoice.cues["total"], [(invoice.total, "total")], style.bold),
    ]
    if placement == "left":
        label_x, value_right = margin, margin + rng.randint(260, 320)
    else:
        label_x, value_right = amount_left - rng.randint(130, 170), amount_right
    top = y
    for index, (cue, value, font) in enumerate(rows):
        if index == len(rows) - 1:
            page.line([label_x, y - 3, value_right, y - 3], fill=style.ink, width=1)
            y += 3
        page.write(label_x, y, cue, font, style.ink)
        key = page.entity()
        page.write(value_right, y, value, font, style.ink, align="right")
        page.relate(key, page.entity())
        y += style.line
    if placement == "boxed":
        page.rectangle([label_x - 10, top - 8, value_right + 6, y + 2], outline=style.accent, width=2)
    return y


# ---------------------------------------------------------------- scan noise


def scan_effects(image: Image.Image, rng: random.Random, clean_share: float = 0.25) -> Image.Image:
    """Light scanner look: lower contrast, gaussian grain on the ink, a little dust, slight blur.

    Purely photometric, so the boxes stay exact. The grain only touches ink pixels (a few percent of the
    page): noise over the whole page would make every PNG ten times larger for no learning benefit.
    """
    if rng.random() < clean_share:
        return image  # some pages are clean exports
    noise_rng = np.random.default_rng(rng.getrandbits(64))
    pixels = np.array(image, dtype=np.int16)
    ink_y, ink_x = np.nonzero(np.asarray(image.convert("L")) < 160)
    grain = noise_rng.normal(0.0, rng.uniform(10.0, 25.0), size=(len(ink_y), 1))
    pixels[ink_y, ink_x] += grain.astype(np.int16)
    dust = rng.randint(50, 400)
    dust_y = noise_rng.integers(0, image.height, dust)
    dust_x = noise_rng.integers(0, image.width, dust)
    pixels[dust_y, dust_x] -= noise_rng.integers(60, 160, size=(dust, 1)).astype(np.int16)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    image = ImageEnhance.Contrast(image).enhance(rng.uniform(0.8, 1.0))
    # A 3x3 gaussian-like kernel (much faster than GaussianBlur); a heavier centre blurs less.
    centre = rng.choice((4, 6, 8, 12))
    return image.filter(ImageFilter.Kernel((3, 3), [1, 2, 1, 2, centre, 2, 1, 2, 1]))


# ---------------------------------------------------------------- files


def document_rng(seed: int, index: int, purpose: str = "") -> random.Random:
    """Document i's own generator: independent of --num_docs, of worker order and of PYTHONHASHSEED. A
    `purpose` gives an independent generator for one more decision (which invoices run over two pages)."""
    suffix = f":{purpose}" if purpose else ""
    digest = hashlib.sha256(f"dataset_loader.synth:{seed}:{index}{suffix}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def make_document(seed: int, index: int) -> tuple[Image.Image, dict]:
    """The page image and its annotation (user format) for document `index` (one page, no structure keys)."""
    return make_pages(seed, index)[0]


def make_pages(seed: int, index: int, links: bool = False, multi_page: float = 0.0) -> list[tuple[Image.Image, dict]]:
    """The page images (with scan noise) and annotations of document `index` (see `synth_pages`)."""
    return [(page.image, page.annotation) for page in synth_pages(seed, index, links, multi_page)]


@dataclass
class SynthPage:
    """One page of a synthetic invoice: its drawing (`Page`: the clean image and the drawing operations the PDF
    writer replays), the page image as scanned (`scan_effects`; some pages stay clean) and its annotation."""

    drawing: Page
    image: Image.Image
    annotation: dict


def synth_pages(seed: int, index: int, links: bool = False, multi_page: float = 0.0) -> list[SynthPage]:
    """The pages of document `index`.

    `links`: the annotations also carry `entity_ids`, `relations` (keyword -> value, item description ->
    quantity, unit price and amount) and `row_ids` (the line-item row of each table word; rows are numbered
    over the document). `multi_page`: the share of invoices (with two or more items) whose table continues on
    a second page, written as `<name>_p2.png`/`.json`; both pages then carry "document_id" and "page".
    Which invoices run over two pages is drawn from a generator of its own: the other invoices are unchanged.
    """
    rng = document_rng(seed, index)
    invoice = make_invoice(rng)
    split_at = None
    pages_rng = document_rng(seed, index, "pages")
    if multi_page > 0 and pages_rng.random() < multi_page and len(invoice.items) >= 2:
        split_at = pages_rng.randint(1, len(invoice.items) - 1)
    pages = render_invoice(invoice, rng, split_at)
    name = f"invoice_{index:05d}"
    documents = []
    for number, page in enumerate(pages, start=1):
        stem = name if number == 1 else f"{name}_p{number}"
        annotation = {
            "image": f"{stem}.png",
            "words": page.words,
            "boxes": page.boxes,
            "labels": page.labels,
            "segment_boxes": page.segments,
        }
        if links:
            annotation.update(page.structure())
        if len(pages) > 1:
            annotation.update(document_id=name, page=number)
        documents.append(SynthPage(page, scan_effects(page.image, rng), annotation))
    return documents


def scanned_pages(seed: int, index: int, pages: int, scanned_share: float) -> set[int]:
    """The page numbers (1-based) of document `index` that a PDF holds as scans (image only, no text layer).

    A share `scanned_share` of the documents is scanned; of those with two or more pages, half are mixed: some of
    their pages scanned, the others born-digital. Drawn from a generator of its own, so the invoices are the
    same whatever the share."""
    rng = document_rng(seed, index, "scan")
    if scanned_share <= 0 or rng.random() >= scanned_share:
        return set()
    if pages > 1 and rng.random() < 0.5:
        return set(rng.sample(range(1, pages + 1), rng.randint(1, pages - 1)))
    return set(range(1, pages + 1))


def _write_document(job: tuple[int, int, str, bool, float]) -> int:
    seed, index, output, links, multi_page = job
    words = 0
    for image, annotation in make_pages(seed, index, links, multi_page):
        stem = Path(annotation["image"]).stem
        # compress_level 3: much faster than the default on noisy pages, files only slightly larger.
        image.save(Path(output) / "images" / annotation["image"], compress_level=3)
        _write_annotation(Path(output), stem, annotation)
        words += len(annotation["words"])
    return words


def _write_pdf_document(job: tuple[int, int, str, bool, float, float]) -> int:
    """One PDF per invoice (all its pages), one annotation per page naming the PDF, its page and its source."""
    from dataset_loader.synth_pdf import write_pdf

    seed, index, output, links, multi_page, scanned_share = job
    pages = synth_pages(seed, index, links, multi_page)
    scanned = scanned_pages(seed, index, len(pages), scanned_share)
    name = f"invoice_{index:05d}"
    contents = []
    for number, page in enumerate(pages, start=1):
        if number not in scanned:
            contents.append(page.drawing)
        elif page.image is not page.drawing.image:
            contents.append(page.image)
        else:  # a page left clean by scan_effects: a scan always carries some noise
            contents.append(scan_effects(page.drawing.image, document_rng(seed, index, f"scan:{number}"), 0.0))
    write_pdf(Path(output) / "images" / f"{name}.pdf", contents)
    for number, page in enumerate(pages, start=1):
        stem = Path(page.annotation["image"]).stem
        annotation = {**page.annotation, "image": f"{name}.pdf", "page": number, "document_id": name,
                      "source": "scanned" if number in scanned else "pdf_text"}
        _write_annotation(Path(output), stem, annotation)
    return sum(len(page.annotation["words"]) for page in pages)


def _write_annotation(output: Path, stem: str, annotation: dict) -> None:
    (output / "annotations" / f"{stem}.json").write_text(json.dumps(annotation) + "\n", encoding="utf-8")


FORMATS = ("png", "pdf")


def generate(
    output: str | Path, num_docs: int, seed: int = 42, workers: int | None = None, links: bool = False,
    multi_page: float = 0.0, format: str = "png", scanned_share: float = 0.0,
) -> Path:
    """Write `num_docs` invoices to OUTPUT/images and OUTPUT/annotations/*.json (`links`, `multi_page`: see
    `synth_pages`).

    `format` "png": one page image per page (images/<name>.png, <name>_p2.png). "pdf": one PDF per invoice
    (images/<name>.pdf, all its pages, rendered at DEFAULT_PDF_DPI they are the page images) and one annotation
    per page with "page" (1-based), "document_id" and "source": "pdf_text" (born-digital: the text layer holds
    the annotation's words) or "scanned" (the page image with scan noise, no text layer). `scanned_share`: see
    `scanned_pages`.
    """
    if num_docs < 1:
        raise ValueError("--num_docs must be at least 1")
    for option, share in (("--multi_page", multi_page), ("--scanned_share", scanned_share)):
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"{option} must be a share between 0 and 1, got {share}")
    if format not in FORMATS:
        raise ValueError(f"--format must be one of {', '.join(FORMATS)}, got {format!r}")
    if scanned_share > 0 and format != "pdf":
        raise ValueError("--scanned_share needs --format pdf (a PNG page is an image either way)")
    output = Path(output)
    (output / "images").mkdir(parents=True, exist_ok=True)
    (output / "annotations").mkdir(parents=True, exist_ok=True)
    if format == "pdf":
        write, jobs = _write_pdf_document, [(seed, i, str(output), links, multi_page, scanned_share)
                                            for i in range(num_docs)]
    else:
        write, jobs = _write_document, [(seed, i, str(output), links, multi_page) for i in range(num_docs)]
    workers = min(workers or os.cpu_count() or 1, num_docs)
    progress = tqdm(total=num_docs, desc="Generating invoices", unit="doc", disable=None)
    if workers == 1:
        for job in jobs:
            write(job)
            progress.update()
    else:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            for _ in pool.imap_unordered(write, jobs, chunksize=4):
                progress.update()
    progress.close()
    return output
