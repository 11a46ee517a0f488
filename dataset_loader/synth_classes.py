"""Synthetic multi-class documents for document classification: the built-in sample of the classify quick start.

`python -m dataset_loader synth-classes --output DIR --num_docs N --seed S` writes, in the `imagefolder`
layout (one subfolder per class),

    DIR/invoice/invoice_00000.png  + invoice_00000.json   (synth.py's invoice renderer)
    DIR/receipt/receipt_00001.png  + receipt_00001.json   (narrow, long, monospace: items, TOTAL, CASH)
    DIR/letter/letter_00002.png    + letter_00002.json    (address block, "Dear ...", paragraphs, signature)

Document i belongs to class `CLASSES[i % 3]`, so the classes are balanced. Every image has a JSON beside
it, `{"words": [...], "boxes": [[x0, y0, x1, y1], ...]}` in the image's pixels, so building the dataset
needs no OCR. Deterministic: document i depends only on (seed, i).
"""

from __future__ import annotations

import datetime
import json
import os
import random
from pathlib import Path

from dataset_loader import synth
from dataset_loader.synth import CITIES, FIRST_NAMES, LAST_NAMES, STREET_TYPES, STREETS, Page, _font, scan_effects

CLASSES = ("invoice", "receipt", "letter")

STORES = ("QuickMart", "Corner Deli", "Fresh Foods", "City Pharmacy", "Green Grocer", "Coffee House", "Book Nook",
          "Hardware Hub", "Bakery Bros", "Super Saver")
RECEIPT_ITEMS = ("MILK 1L", "BREAD", "EGGS 12", "COFFEE", "APPLES", "BANANAS", "CHEESE", "WATER 6PK", "SOAP",
                 "PASTA", "RICE 1KG", "TEA", "BUTTER", "JUICE", "CHIPS", "YOGURT", "TOMATOES", "SUGAR")
LETTER_SENTENCES = (
    "I am writing to follow up on our conversation last week regarding the proposed schedule.",
    "We would be grateful if you could confirm the arrangements at your earliest convenience.",
    "Please find enclosed the documents you requested for your records.",
    "Our team has reviewed your application and we are pleased to inform you of our decision.",
    "Should you have any questions, do not hesitate to contact me directly.",
    "I would like to thank you for your kind hospitality during my recent visit.",
    "We regret to inform you that the meeting has been postponed until further notice.",
    "It was a pleasure to meet you and discuss the opportunities for collaboration.",
    "The committee will consider your request at its next meeting and reply in writing.",
    "I look forward to hearing from you and to working together in the coming months.",
)
CLOSINGS = ("Sincerely,", "Yours sincerely,", "Kind regards,", "Best regards,", "Yours faithfully,")
MONO = ("DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf")


def _mono_font(size: int, bold: bool = False):
    name = MONO[1] if bold else MONO[0]
    for folder in synth.FONT_DIRS:
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return _font(path, size)
    return _font(None, size)


def _person(rng: random.Random) -> str:
    return f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"


def _address(rng: random.Random) -> list[str]:
    city, postcode = rng.choice(CITIES)
    return [f"{rng.randint(1, 999)} {rng.choice(STREETS)} {rng.choice(STREET_TYPES)}", f"{city} {postcode}"]


def render_receipt(rng: random.Random) -> Page:
    """A till receipt: narrow and long, monospace, store header, items with prices, TOTAL, payment, thanks."""
    size = rng.randint(13, 16)
    font, bold = _mono_font(size), _mono_font(size, bold=True)
    line = round(size * 1.5)
    items = [(rng.choice(RECEIPT_ITEMS), rng.randint(50, 2500)) for _ in range(rng.randint(3, 12))]
    height = 380 + line * (len(items) + 8)
    page = Page((rng.randint(340, 420), max(height, rng.randint(700, 900))), (255, 255, 255))
    ink, margin = (0, 0, 0), rng.randint(15, 25)
    center, right = page.width / 2, page.width - margin
    y = margin
    page.write(center, y, rng.choice(STORES).upper(), bold, ink, align="center")
    y += line
    for text in _address(rng):
        page.write(center, y, text, font, ink, align="center")
        y += line
    date = datetime.date(2020, 1, 1) + datetime.timedelta(days=rng.randint(0, 2000))
    page.write(margin, y + line // 2, f"{date:%d/%m/%Y} {rng.randint(7, 21):02d}:{rng.randint(0, 59):02d}", font, ink)
    y += 2 * line
    page.write(margin, y, "-" * 24, font, ink)
    y += line
    subtotal = 0
    for name, cents in items:
        page.write(margin, y, name, font, ink)
        page.write(right, y, f"{cents / 100:.2f}", font, ink, align="right")
        subtotal += cents
        y += line
    tax = round(subtotal * 0.08)
    page.write(margin, y, "-" * 24, font, ink)
    y += line
    for label, cents, face in (("SUBTOTAL", subtotal, font), ("TAX", tax, font), ("TOTAL", subtotal + tax, bold)):
        page.write(margin, y, label, face, ink)
        page.write(right, y, f"{cents / 100:.2f}", face, ink, align="right")
        y += line
    paid = -(-(subtotal + tax) // 1000) * 1000
    page.write(margin, y, rng.choice(("CASH", "VISA", "CARD")), font, ink)
    page.write(right, y, f"{paid / 100:.2f}", font, ink, align="right")
    y += line
    page.write(margin, y, "CHANGE", font, ink)
    page.write(right, y, f"{(paid - subtotal - tax) / 100:.2f}", font, ink, align="right")
    y += 2 * line
    page.write(center, y, rng.choice(("THANK YOU!", "THANK YOU FOR SHOPPING", "PLEASE COME AGAIN")), font, ink,
               align="center")
    return page


def render_letter(rng: random.Random) -> Page:
    """A business letter: sender block, date, recipient block, "Dear ...", paragraphs, closing and signature."""
    style = synth.make_style(rng)
    page = Page((rng.randint(820, 880), rng.randint(1060, 1140)), (255, 255, 255))
    margin = rng.randint(60, 90)
    ink, line = style.ink, style.line
    sender = _person(rng)
    y = margin
    for text in [sender, *_address(rng)]:
        page.write(page.width - margin, y, text, style.regular, ink, align="right")
        y += line
    date = datetime.date(2020, 1, 1) + datetime.timedelta(days=rng.randint(0, 2000))
    y += line
    page.write(page.width - margin, y, f"{date:%B %d, %Y}", style.regular, ink, align="right")
    y += 2 * line
    recipient = _person(rng)
    for text in [recipient, *_address(rng)]:
        page.write(margin, y, text, style.regular, ink)
        y += line
    y += line
    page.write(margin, y, f"Dear {rng.choice(('Mr.', 'Ms.', 'Dr.'))} {recipient.split()[1]},", style.regular, ink)
    y += 2 * line
    width = page.width - 2 * margin
    for _ in range(rng.randint(2, 4)):
        words = " ".join(rng.sample(LETTER_SENTENCES, rng.randint(2, 4))).split()
        current: list[str] = []
        for word in words:
            if current and page.measure(" ".join(current + [word]), style.regular) > width:
                page.write(margin, y, " ".join(current), style.regular, ink)
                y += line
                current = []
            current.append(word)
        if current:
            page.write(margin, y, " ".join(current), style.regular, ink)
            y += line
        y += line
    page.write(margin, y + line, rng.choice(CLOSINGS), style.regular, ink)
    page.write(margin, y + 3 * line, sender, style.bold, ink)
    return page


def make_class_document(seed: int, index: int) -> tuple[str, str, object, dict]:
    """(class name, file stem, image, {"words", "boxes"}) of document `index`."""
    name = CLASSES[index % len(CLASSES)]
    if name == "invoice":
        image, annotation = synth.make_document(seed, index)
        words = {"words": annotation["words"], "boxes": annotation["boxes"]}
    else:
        rng = synth.document_rng(seed * 7919 + 17, index)
        page = render_receipt(rng) if name == "receipt" else render_letter(rng)
        image, words = scan_effects(page.image, rng), {"words": page.words, "boxes": page.boxes}
    return name, f"{name}_{index:05d}", image, words


def generate_classes(output: str | Path, num_docs: int, seed: int = 42) -> dict[str, int]:
    """Write `num_docs` documents (classes in turn) to OUTPUT/<class>/; returns documents per class."""
    if num_docs < len(CLASSES):
        raise ValueError(f"--num_docs must be at least {len(CLASSES)} (one document per class)")
    output = Path(output)
    counts = {name: 0 for name in CLASSES}
    for index in range(num_docs):
        name, stem, image, words = make_class_document(seed, index)
        folder = output / name
        folder.mkdir(parents=True, exist_ok=True)
        image.save(folder / f"{stem}.png", compress_level=3)
        (folder / f"{stem}.json").write_text(json.dumps(words) + "\n", encoding="utf-8")
        counts[name] += 1
    return counts
