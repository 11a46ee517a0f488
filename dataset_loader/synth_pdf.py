"""PDFs of the synthetic invoices (`python -m dataset_loader synth --format pdf`).

A born-digital page replays the drawing the page image was made from (`synth.Page.operations`) with reportlab:
vector rules and boxes, and every word as text in the TrueType font it was drawn with (embedded, with its
unicode map), so the page's text layer holds exactly the annotation's words. The page measures the image's
pixels at `dpi` (a W x H px page is W*72/dpi x H*72/dpi points), so rendered at `dpi` it is the page image
again, and a word's text-layer box, scaled by dpi/72, is its annotated pixel box (within a pixel or two: the
annotation's box is Pillow's, whose horizontal extent runs from the pen position to the advance). Each word is
stretched horizontally to the width Pillow drew it at (Pillow lays text out with hinting and kerning), so the
words of a line keep their gaps.

A scanned page is the page image (with scan noise) embedded as a JPEG over the whole page, with no text at all:
what a scanner writes before any OCR.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from layoutkit.apps.documents import DEFAULT_PDF_DPI


def _reportlab():
    try:
        from reportlab.pdfbase import pdfmetrics
        from reportlab.pdfbase.ttfonts import TTFont
        from reportlab.pdfgen import canvas
    except ImportError:
        raise ImportError("writing PDFs (synth --format pdf) needs reportlab: pip install 'layoutkit[pdf]'") from None
    return canvas, pdfmetrics, TTFont


def write_pdf(path: str | Path, pages: Sequence, dpi: int = DEFAULT_PDF_DPI) -> None:
    """Write `pages` to one PDF: a `synth.Page` becomes a born-digital page (text layer), a PIL image a scanned
    page (image only). Deterministic: the same pages give the same bytes."""
    canvas_module, pdfmetrics, TTFont = _reportlab()
    scale = 72 / dpi
    document = canvas_module.Canvas(str(path), invariant=True)  # invariant: no timestamp or random id
    for page in pages:
        image = page if isinstance(page, Image.Image) else page.image
        width, height = _points(image.width, scale), _points(image.height, scale)
        document.setPageSize((width, height))
        if isinstance(page, Image.Image):
            _draw_scan(document, page, width, height)
        else:
            _draw_operations(document, page, scale, height, pdfmetrics, TTFont)
        document.showPage()
    document.save()


def _points(pixels: int, scale: float) -> float:
    """A page side in points that renders to exactly `pixels` at 1/scale. PDFium renders ceil(points / scale)
    pixels of a float32 page size, so 1095 px * 72/200 = 394.2 pt would come back as 1095.00003 -> 1096 px;
    reportlab writes two decimals: a hundredth of a point less (0.03 px)."""
    return math.floor(pixels * scale * 100 - 1) / 100


def _draw_scan(document, image: Image.Image, width: float, height: float) -> None:
    from reportlab.lib.utils import ImageReader

    data = io.BytesIO()
    image.convert("RGB").save(data, format="JPEG", quality=85)  # a JPEG passes into the PDF as is (DCTDecode)
    data.seek(0)
    document.drawImage(ImageReader(data), 0, 0, width=width, height=height)


def _draw_operations(document, page, scale: float, height: float, pdfmetrics, TTFont) -> None:
    """Replay the page's drawing: pixel (x, y) from the top left is PDF (x * scale, height - y * scale)."""

    def colour(rgb) -> tuple[float, float, float]:
        return tuple(value / 255 for value in rgb)

    document.setFillColorRGB(*colour(page.paper))
    document.rect(0, 0, page.image.width * scale, height, stroke=0, fill=1)  # overshoots the page a little
    for operation in page.operations:
        kind = operation[0]
        if kind == "rectangle":
            (x0, y0, x1, y1), fill, outline, width = operation[1:]
            if fill is not None:
                document.setFillColorRGB(*colour(fill))
            if outline is not None:
                document.setStrokeColorRGB(*colour(outline))
                document.setLineWidth(width * scale)
            # Pillow's corners are inclusive pixels: the rectangle covers x0 .. x1 + 1.
            document.rect(x0 * scale, height - (y1 + 1) * scale, (x1 + 1 - x0) * scale, (y1 + 1 - y0) * scale,
                          stroke=int(outline is not None), fill=int(fill is not None))
        elif kind == "line":
            (x0, y0, x1, y1), fill, width = operation[1:]
            document.setStrokeColorRGB(*colour(fill))
            document.setLineWidth(width * scale)
            # Pillow centres a line of width w on the pixel row/column: its middle lies half a pixel further on.
            document.line((x0 + 0.5) * scale, height - (y0 + 0.5) * scale, (x1 + 0.5) * scale,
                          height - (y1 + 0.5) * scale)
        elif kind == "text":
            x, y, word, font, fill = operation[1:]
            name = _font_name(font, pdfmetrics, TTFont)
            size = font.size * scale
            ascent = font.getmetrics()[0]  # Pillow places the ascender line at y; PDF text sits on its baseline
            natural = pdfmetrics.stringWidth(word, name, size)
            text = document.beginText()
            text.setFont(name, size)
            if natural > 0:
                text.setHorizScale(100 * font.getlength(word) * scale / natural)
            text.setFillColorRGB(*colour(fill))
            text.setTextOrigin(x * scale, height - (y + ascent) * scale)
            text.textOut(word)
            document.drawText(text)
        else:
            raise ValueError(f"unknown drawing operation {kind!r}")


def _font_name(font, pdfmetrics, TTFont) -> str:
    """The reportlab name of a Pillow font's TrueType file, registered (embedded as a subset) on first use."""
    path = getattr(font, "path", None)
    if not isinstance(path, (str, Path)):
        raise ValueError(
            "synth --format pdf needs TrueType fonts on disk (DejaVu: apt-get install fonts-dejavu-core); "
            "Pillow's built-in font cannot be embedded in a PDF"
        )
    name = f"synth-{Path(path).stem}"
    if name not in pdfmetrics.getRegisteredFontNames():
        pdfmetrics.registerFont(TTFont(name, str(path)))
    return name
