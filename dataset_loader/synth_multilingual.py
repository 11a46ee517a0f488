"""Synthetic invoices in a non-Latin script (Russian, Cyrillic), in the user annotation format.

A test page for multilingual models (LayoutXLM): the same entity types as the English generator
(`vendor`, `invoice_number`, `invoice_date`, `tax`, `total`), written with the page writer of
`dataset_loader.synth` so boxes, BIO tags and line boxes follow the same rules. DejaVu Sans (Debian's
fonts-dejavu-core, already needed by the English generator) has the Cyrillic glyphs.

    python -m dataset_loader.synth_multilingual --output data/invoices-ru --num_docs 10
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from pathlib import Path

from PIL import ImageFont

from .deprecated_flags import snake_case_options
from .synth import FONT_DIRS, Page, document_rng, scan_effects

CYRILLIC_FONTS = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf")
VENDORS = ("ООО «Северный Ветер»", "АО «Уральские Машины»", "ООО «Ромашка»", "ИП Кузнецова Анна",
           "ООО «Сибирский Лес»", "АО «Волга Логистика»")
CUSTOMERS = ("ООО «Альфа Торг»", "ЗАО «Мир Бумаги»", "ООО «Типография Восток»", "Петров Иван Сергеевич")
ITEMS = ("Бумага офисная А4", "Картридж для принтера", "Доставка груза", "Консультационные услуги",
         "Ремонт оборудования", "Папка-регистратор", "Монтаж стеллажей", "Аренда склада")
MONTHS = ("января", "февраля", "марта", "апреля", "мая", "июня", "июля", "августа", "сентября", "октября",
          "ноября", "декабря")


def cyrillic_fonts() -> tuple[str, str]:
    """(regular, bold) font files with Cyrillic glyphs; a clear error if none is installed."""
    for folder in FONT_DIRS:
        paths = [os.path.join(folder, name) for name in CYRILLIC_FONTS]
        if all(os.path.isfile(path) for path in paths):
            return paths[0], paths[1]
    raise FileNotFoundError(
        f"no font with Cyrillic glyphs found ({', '.join(CYRILLIC_FONTS)} in {', '.join(FONT_DIRS)}); "
        "install DejaVu (Debian/Ubuntu: apt-get install fonts-dejavu-core)"
    )


def _rubles(kopecks: int) -> str:
    """Russian money format: thin groups separated by spaces, decimal comma ("12 450,00")."""
    return f"{kopecks // 100:,}".replace(",", " ") + f",{kopecks % 100:02d}"


def render_russian_invoice(rng: random.Random) -> Page:
    regular_path, bold_path = cyrillic_fonts()
    size = rng.randint(15, 18)
    regular, bold = ImageFont.truetype(regular_path, size), ImageFont.truetype(bold_path, size)
    heading = ImageFont.truetype(bold_path, rng.randint(22, 28))
    ink = (20, 20, 20)
    page = Page((850, 1100), (255, 255, 255))
    margin, line = rng.randint(50, 80), size + 14
    y = margin
    page.write(margin, y, [(rng.choice(VENDORS), "vendor")], heading, ink)
    y += 2 * line + 10
    number = f"{rng.choice(('СФ', 'РН', 'С'))}-{rng.randint(2021, 2026)}-{rng.randint(1, 9999):04d}"
    day, month, year = rng.randint(1, 28), rng.randint(1, 12), rng.randint(2021, 2026)
    date = (f"{day:02d}.{month:02d}.{year}" if rng.random() < 0.5 else f"{day} {MONTHS[month - 1]} {year} г.")
    page.write(margin, y, [("Счёт на оплату №", None), (number, "invoice_number"), ("от", None),
                           (date, "invoice_date")], bold, ink)
    y += 2 * line
    page.write(margin, y, [("Покупатель:", None), (rng.choice(CUSTOMERS), None)], regular, ink)
    y += 2 * line
    columns = (margin, margin + 360, margin + 470, margin + 590)
    for x, title in zip(columns, ("Наименование", "Кол-во", "Цена", "Сумма")):
        page.write(x, y, title, bold, ink)
    y += line
    subtotal = 0
    for item in rng.sample(ITEMS, rng.randint(2, 5)):
        quantity, price = rng.randint(1, 20), rng.randint(100, 50000) * 100
        subtotal += quantity * price
        for x, text in zip(columns, (item, str(quantity), _rubles(price), _rubles(quantity * price))):
            page.write(x, y, text, regular, ink)
        y += line
    y += line
    tax = subtotal * 20 // 120  # VAT included in the prices, as Russian invoices state it
    for cue, amount, entity, font in (("В том числе НДС 20%:", tax, "tax", regular),
                                      ("Итого к оплате:", subtotal, "total", bold)):
        page.write(columns[1], y, [(cue, None), (_rubles(amount) + " ₽", entity)], font, ink)
        y += line
    y += line
    page.write(margin, y, "Спасибо за сотрудничество!", regular, ink)
    return page


def make_russian_document(seed: int, index: int):
    """The page image and its annotation (user format) for Russian document `index`."""
    rng = document_rng(seed, 1_000_000 + index)  # not the English invoices' generators
    page = render_russian_invoice(rng)
    name = f"invoice_ru_{index:05d}"
    annotation = {"image": f"{name}.png", "words": page.words, "boxes": page.boxes, "labels": page.labels,
                  "segment_boxes": page.segments}
    return scan_effects(page.image, rng), annotation


def generate_russian(output: str | Path, num_docs: int, seed: int = 42) -> Path:
    """Write `num_docs` Russian invoices to OUTPUT/images/*.png and OUTPUT/annotations/*.json."""
    if num_docs < 1:
        raise ValueError("--num_docs must be at least 1")
    output = Path(output)
    (output / "images").mkdir(parents=True, exist_ok=True)
    (output / "annotations").mkdir(parents=True, exist_ok=True)
    for index in range(num_docs):
        image, annotation = make_russian_document(seed, index)
        image.save(output / "images" / annotation["image"], compress_level=3)
        stem = Path(annotation["image"]).stem
        (output / "annotations" / f"{stem}.json").write_text(json.dumps(annotation, ensure_ascii=False) + "\n",
                                                            encoding="utf-8")
    return output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", required=True, type=Path, help="folder to write images/ and annotations/ into")
    parser.add_argument("--num_docs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(snake_case_options(sys.argv[1:], parser))
    generate_russian(args.output, args.num_docs, args.seed)
    print(f"{args.num_docs} Russian invoices written to {args.output}")


if __name__ == "__main__":
    main()
