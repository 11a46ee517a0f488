"""PDFs for the text-layer tests, written with reportlab: born-digital pages, scans (an image only), scans under an
invisible OCR layer, a broken font map, rotation, crop boxes, encryption, a zero-size page."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

FONT_FILE = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
PAGE = (595, 842)  # A4 in points
LINES = ["INVOICE INV-2024-0117", "Date: 2024-03-15", "Bill to: Acme GmbH, Berlin", "Widget A 2 x 12.50 25.00",
         "Total due: 1,250.00 EUR"]


def canvas(path: Path, pagesize=PAGE, **kwargs):
    from reportlab.pdfgen.canvas import Canvas

    return Canvas(str(path), pagesize=pagesize, **kwargs)


def dejavu() -> str:
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

    if "DejaVu" not in pdfmetrics.getRegisteredFontNames():
        pdfmetrics.registerFont(TTFont("DejaVu", FONT_FILE))
    return "DejaVu"


def draw_lines(c, lines=LINES, x=72, top=760, leading=24, font="Helvetica", size=12) -> None:
    c.setFont(font, size)
    for number, line in enumerate(lines):
        c.drawString(x, top - number * leading, line)


def text_image(lines=LINES, size=(1240, 1754), font_size=34) -> Image.Image:
    """A page of text as pixels (a scan's image), 150 dpi for A4."""
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.truetype(FONT_FILE, font_size)
    for number, line in enumerate(lines):
        draw.text((150, 160 + number * 60), line, fill="black", font=font)
    return image


def draw_scan(c, image: Image.Image, pagesize=PAGE) -> None:
    from reportlab.lib.utils import ImageReader

    c.drawImage(ImageReader(image), 0, 0, width=pagesize[0], height=pagesize[1])


def born_digital(path: Path, lines=LINES, rotation: int = 0) -> Path:
    """A text page; with `rotation` its /Rotate (reportlab then writes the MediaBox of the unrotated page: landscape
    for 90 and 270, drawn in those coordinates, shown portrait)."""
    c = canvas(path)
    c.setPageRotation(rotation)
    draw_lines(c, lines, top=(PAGE[0] if rotation in (90, 270) else PAGE[1]) - 80)
    c.showPage()
    c.save()
    return path


def image_only(path: Path) -> Path:
    c = canvas(path)
    draw_scan(c, text_image())
    c.showPage()
    c.save()
    return path


def scan_with_invisible_layer(c, lines=LINES) -> None:
    """A scan's image under the text an OCR program writes over it: render mode 3 (invisible), same positions."""
    draw_scan(c, text_image(lines))
    text = c.beginText()
    text.setTextRenderMode(3)
    text.setFont("Helvetica", 16)
    for number, line in enumerate(lines):
        # text_image draws at 150 dpi from (150, 160 + 60 n) px: points = px * 72 / 150
        text.setTextOrigin(150 * 72 / 150, PAGE[1] - (160 + number * 60 + 30) * 72 / 150)
        text.textOut(line)
    c.drawText(text)


def broken_font_map(path: Path) -> Path:
    """Text in an embedded TrueType subset whose ToUnicode map is removed: PDFium cannot tell the characters (the
    Cyrillic ones; reportlab's subsets keep ASCII at its own codes, so digits stay readable)."""
    c = canvas(path, pageCompression=0)
    draw_lines(c, ["Счёт-фактура № 117", "Поставщик: ООО Ромашка", "Итого к оплате: 1 250,00 руб."], font=dejavu())
    c.showPage()
    c.save()
    data = path.read_bytes()
    assert data.count(b"/ToUnicode") == 1
    path.write_bytes(data.replace(b"/ToUnicode", b"/XoUnicode"))  # same length: the xref offsets stay right
    return path


def mixed(path: Path) -> Path:
    """Page 1 born-digital, page 2 an image only, page 3 a scan under an invisible OCR layer, page 4 a scan with a
    born-digital stamp (a few visible words over the image)."""
    c = canvas(path)
    draw_lines(c)
    c.showPage()
    draw_scan(c, text_image())
    c.showPage()
    scan_with_invisible_layer(c)
    c.showPage()
    draw_scan(c, text_image())
    c.setFont("Helvetica", 9)
    c.drawString(480, 20, "Page 4 of 4")
    c.showPage()
    c.save()
    return path


def encrypted(path: Path) -> Path:
    from reportlab.lib import pdfencrypt

    c = canvas(path, encrypt=pdfencrypt.StandardEncryption("secret", canPrint=1))
    draw_lines(c)
    c.showPage()
    c.save()
    return path


def zero_size_page(path: Path) -> Path:
    """Page 1 fine, page 2 with MediaBox [0 0 0 0] (PDFium would show it as an invented US Letter page)."""
    c = canvas(path)
    draw_lines(c)
    c.showPage()
    c.setPageSize((0, 0))
    c.drawString(0, 0, "lost")
    c.showPage()
    c.save()
    return path


def ink_outside(image: Image.Image, boxes, pad: int = 3) -> float:
    """The share of the page's dark pixels that lie outside every box (grown by `pad` pixels)."""
    dark = np.asarray(image.convert("L")) < 128
    inside = np.zeros_like(dark)
    for x0, y0, x1, y1 in boxes:
        inside[max(0, int(y0) - pad):int(y1) + pad + 1, max(0, int(x0) - pad):int(x1) + pad + 1] = True
    return float((dark & ~inside).sum() / max(1, dark.sum()))


def ink_inside(image: Image.Image, box) -> float:
    """The share of dark pixels inside `box`."""
    x0, y0, x1, y1 = (round(v) for v in box)
    return float((np.asarray(image.convert("L"))[y0:y1 + 1, x0:x1 + 1] < 128).mean())
