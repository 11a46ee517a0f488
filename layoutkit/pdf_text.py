"""Words from a PDF page's text layer, in the pixel frame of the page image the model sees, and the per-page choice
between that text layer and OCR (`--pdf_text auto|always|never`, docs/pdf.md).

    pages = pdf_page_inputs(pdf, dpi=200, pdf_text="auto", where="invoice.pdf")   # an open pypdfium2 PdfDocument
    for page in pages:
        extractor(page)   # {"image", "words", "boxes", "line_ids", "words_source"}: text layer, no OCR; or
                          # {"image", "words_source": None, ...}: the pipeline reads the page with its OCR engine

A born-digital PDF (exported by accounting software) holds every word exactly, with its position: reading it takes a
few milliseconds a page where OCR takes seconds and damages words. The words come from PDFium (pypdfium2, the same
library that renders the page image): its characters, with their boxes mapped through the page's display matrix
(crop box and /Rotate applied, as `PdfPage.render` applies them) onto the rendered image, grouped into words at
whitespace, at PDFium's generated spaces and line breaks, and at gaps; each word's text NFKC-normalised (ligatures,
full-width and other compatibility characters), soft hyphens dropped inside a line and kept as "-" where a word
breaks at a line end. Characters of zero size or outside the crop box are not drawn on the image and are dropped,
and counted (`dropped_chars`). Text in render mode 3 (invisible) or 7 (clip only), the layer scanners' OCR writes
over a scan, is kept as words of their own source, `pdf_invisible_text`: usable, but another engine's reading.

Routing, per page (`route_page`), with `pdf_text`:
- "never": every page is read by the OCR engine (the page image only).
- "always": every page's words come from its text layer (none where it has none); no OCR.
- "auto" (default): the text layer when it covers the page, else OCR. It does not cover the page when it has no
  word; when it is garbage (`garbage_share`: at least GARBAGE_SHARE of its characters have no usable unicode --
  PDFium's unicode-map error, control, private-use, unassigned or replacement characters, the text a font without
  a usable ToUnicode map gives; the page is then read by OCR with a warning naming the file and the page); and when
  images cover at least SCAN_SHARE of the page and at least UNCOVERED_INK of the dark pixels of the rendered page
  over them lie outside every text-layer word's box (a scan carrying a few born-digital words -- a stamp, a page
  number -- whose own text only OCR can read; a letterhead image under the text, or a scan under its invisible OCR
  layer, has its ink inside the words' boxes).

Copied into saved checkpoints with the pipelines (the Endpoints handler reads PDFs through it), so it imports only
the standard library, numpy, PIL and sibling modules at module level; pypdfium2 when a PDF is read.
"""

from __future__ import annotations

import ctypes
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
from PIL import Image

from .ocr import OcrEngine, OcrResult, get_ocr_engine

PDF_TEXT_MODES = ("auto", "always", "never")
PDF_TEXT_HELP = ("where a PDF page's words come from: auto (default) its text layer when that covers the page, else "
                 "the OCR engine; always the text layer (no OCR); never the OCR engine (docs/pdf.md)")

PDF_TEXT = "pdf_text"
PDF_INVISIBLE_TEXT = "pdf_invisible_text"
OCR_NEEDED = "ocr:needed"  # page_words without an engine, for a page that needs OCR

GARBAGE_SHARE = 0.10  # share of a page's characters without usable unicode above which its text layer is garbage
MIN_GARBAGE_CHARS = 3  # ... and at least this many such characters
SCAN_SHARE = 0.5  # images covering at least this share of the page make it a scan ...
UNCOVERED_INK = 0.5  # ... when at least this share of the ink drawn over them lies outside every word's box
WORD_GAP = 0.25  # a gap wider than this many line heights between two characters' advance boxes ends a word
LINE_GAP = 1.5  # ... wider than this many line heights ends a line (a text segment, as an OCR engine's line)
INVISIBLE_RENDER_MODES = (3, 7)  # invisible, clip only
GRID = 100  # cells per side of the coarse page grid images are marked on
SPACES = {0x20, 0x09, 0x0A, 0x0D, 0xA0, 0x1680, 0x202F, 0x205F, 0x3000, *range(0x2000, 0x200B)}
LINE_BREAKS = {0x0A, 0x0D, 0x2028, 0x2029}
SOFT_HYPHENS = {0xAD, 0x02}  # PDFium reports some end-of-line hyphens as 0x02


def add_pdf_text_argument(parser) -> None:
    """`--pdf_text` on a command line (predict.py, the service): one definition."""
    parser.add_argument("--pdf_text", choices=PDF_TEXT_MODES, default="auto", help=PDF_TEXT_HELP)


def check_pdf_text_mode(mode: str) -> str:
    if mode not in PDF_TEXT_MODES:
        raise ValueError(f"pdf_text must be one of {', '.join(PDF_TEXT_MODES)}, got {mode!r}")
    return mode


class PdfPageError(ValueError):
    """A PDF page that cannot be read (zero size, not renderable); the message names the file and the page."""


def import_pdfium():
    try:
        import pypdfium2
        import pypdfium2.raw
    except ImportError:
        raise ImportError("reading PDFs needs pypdfium2: pip install pypdfium2 (pip install 'layoutkit[ocr]')") from None
    return pypdfium2


@dataclass
class TextLayer:
    """A page's text-layer words with pixel boxes [x0, y0, x1, y1] in the rendered image, and what was seen."""

    words: list[str] = field(default_factory=list)
    boxes: list[list[float]] = field(default_factory=list)
    line_ids: list[int] = field(default_factory=list)
    invisible: list[bool] = field(default_factory=list)
    chars: int = 0  # characters other than whitespace, drawn or not
    garbage_chars: int = 0  # ... without usable unicode
    # characters left out: not drawn on the page (zero size, outside the crop box), or drawn without usable unicode
    dropped: dict[str, int] = field(default_factory=lambda: {"zero_size": 0, "off_page": 0, "no_unicode": 0})
    image_cells: list[list[bool]] | None = None  # GRID x GRID cells of the page image covered by images

    @property
    def image_share(self) -> float:
        """The share of the page covered by images."""
        return sum(map(sum, self.image_cells)) / (GRID * GRID) if self.image_cells else 0.0

    @property
    def garbage_share(self) -> float:
        return self.garbage_chars / self.chars if self.chars else 0.0

    @property
    def is_garbage(self) -> bool:
        return self.garbage_chars >= MIN_GARBAGE_CHARS and self.garbage_share >= GARBAGE_SHARE

    @property
    def source(self) -> str:
        """pdf_text, or pdf_invisible_text when any word is invisible (the least trusted of its words)."""
        return PDF_INVISIBLE_TEXT if any(self.invisible) else PDF_TEXT


@dataclass
class PageRoute:
    """Where a page's words come from: the text layer (`use_text`), else OCR; why, and a warning to show."""

    use_text: bool
    reason: str
    warning: str | None = None


def route_page(layer: TextLayer | None, mode: str, where: str, image: Image.Image | None = None) -> PageRoute:
    """The routing rule of the module docstring on the page `image` (rendered); `where` names the file and page in
    the warning."""
    if mode == "never" or layer is None:
        return PageRoute(False, "pdf_text never")
    garbage = None
    if layer.is_garbage:
        garbage = (f"{where}: the text layer is garbage ({layer.garbage_chars} of {layer.chars} characters have no "
                   "usable unicode: a font without a usable ToUnicode map)")
    if mode == "always":
        return PageRoute(True, "pdf_text always", garbage and garbage + "; used anyway (--pdf_text always)")
    if not layer.words:
        return PageRoute(False, "no text layer")
    if garbage:
        return PageRoute(False, "garbage text layer", garbage + "; read by OCR instead")
    if image is not None and layer.image_share >= SCAN_SHARE and uncovered_ink(image, layer) >= UNCOVERED_INK:
        return PageRoute(False, "scan with a few text-layer words")
    return PageRoute(True, "text layer covers the page")


# ------------------------------------------------------------------------------------------- text layer
def page_to_image_transform(page, width: int, height: int) -> tuple[float, float, float, float, float, float]:
    """(a, b, c, d, e, f) with image x = a*px + c*py + e, y = b*px + d*py + f for a point (px, py) of the page in
    PDF units: PDFium's own display matrix (crop box, /Rotate) onto a `width` x `height` bitmap, as
    `PdfPage.render` draws it. Read from three points on a bitmap 64x larger, for sub-pixel precision."""
    pdfium_c = import_pdfium().raw

    zoom = 64
    x, y = ctypes.c_int(), ctypes.c_int()

    def device(px: float, py: float) -> tuple[float, float]:
        pdfium_c.FPDF_PageToDevice(page, 0, 0, width * zoom, height * zoom, 0, px, py, x, y)
        return x.value / zoom, y.value / zoom

    e, f = device(0, 0)
    ax, bx = device(1000, 0)
    cy, dy = device(0, 1000)
    return (ax - e) / 1000, (bx - f) / 1000, (cy - e) / 1000, (dy - f) / 1000, e, f


def _map_box(matrix, left: float, bottom: float, right: float, top: float) -> list[float]:
    a, b, c, d, e, f = matrix
    xs = (a * left + c * bottom + e, a * right + c * top + e)
    ys = (b * left + d * bottom + f, b * right + d * top + f)
    return [min(xs), min(ys), max(xs), max(ys)]


def is_garbage_char(code: int, category: str) -> bool:
    return code == 0 or code == 0xFFFD or category in ("Cc", "Co", "Cn", "Cs")


def read_text_layer(page, textpage, width: int, height: int) -> TextLayer:
    """The words of `page` (a pypdfium2 PdfPage; `textpage` its PdfTextPage) on its `width` x `height` image.

    Characters are read one by one (five PDFium calls each, on the raw handle: about 10 us a character). A word ends
    at whitespace (PDFium's own or the spaces and line breaks it generates from the layout), at a change of
    visibility, and where the advance boxes of two characters (their "loose" boxes: font ascent to descent, glyph
    advance) lie more than WORD_GAP of their height apart; its box is the union of its glyphs' ink boxes."""
    pdfium_c = import_pdfium().raw

    matrix = page_to_image_transform(page, width, height)
    handle = textpage.raw
    layer = TextLayer()
    left, right, bottom, top = (ctypes.c_double() for _ in range(4))
    loose = pdfium_c.FS_RECTF()
    render_modes: dict[int, bool] = {}  # text object address -> invisible
    text: list[str] = []
    box: list[float] | None = None
    invisible = False
    line = 0
    line_break = False  # a line break since the last word
    previous: list[float] | None = None  # the previous drawn character's advance box

    def end_word() -> None:
        nonlocal text, box
        if box is not None:
            word = unicodedata.normalize("NFKC", "".join(text)).strip()
            if word:
                layer.words.append(word)
                layer.boxes.append(box)
                layer.invisible.append(invisible)
                layer.line_ids.append(line)
        text, box = [], None

    count = pdfium_c.FPDFText_CountChars(handle)
    for index in range(max(count, 0)):
        code = pdfium_c.FPDFText_GetUnicode(handle, index)
        if code in SPACES:  # PDFium's generated characters are spaces and line breaks too
            end_word()
            line_break = line_break or code in LINE_BREAKS
            continue
        layer.chars += 1
        char = chr(code) if code < 0x110000 else "\ufffd"
        garbage = code not in SOFT_HYPHENS and (pdfium_c.FPDFText_HasUnicodeMapError(handle, index)
                                                or is_garbage_char(code, unicodedata.category(char)))
        layer.garbage_chars += garbage
        pdfium_c.FPDFText_GetCharBox(handle, index, left, right, bottom, top)
        char_box = _map_box(matrix, left.value, bottom.value, right.value, top.value)
        char_width, char_height = char_box[2] - char_box[0], char_box[3] - char_box[1]
        if char_width <= 0 or char_height <= 0 or (char_width < 1 and char_height < 1):
            layer.dropped["zero_size"] += 1  # flattened or below a pixel: nothing of it is drawn on the image
            end_word()
            continue
        middle_x, middle_y = (char_box[0] + char_box[2]) / 2, (char_box[1] + char_box[3]) / 2
        if not (0 <= middle_x <= width and 0 <= middle_y <= height):
            layer.dropped["off_page"] += 1
            end_word()
            continue
        char_box = [max(0.0, char_box[0]), max(0.0, char_box[1]), min(float(width), char_box[2]),
                    min(float(height), char_box[3])]
        pdfium_c.FPDFText_GetLooseCharBox(handle, index, loose)
        advance = _map_box(matrix, loose.left, loose.bottom, loose.right, loose.top)
        text_object = pdfium_c.FPDFText_GetTextObject(handle, index)
        address = ctypes.cast(text_object, ctypes.c_void_p).value or 0
        if address not in render_modes:
            render_modes[address] = bool(address) and (pdfium_c.FPDFTextObj_GetTextRenderMode(text_object)
                                                        in INVISIBLE_RENDER_MODES)
        char_invisible = render_modes[address]
        if box is not None:
            gap = _gap(previous, advance)
            size = max(previous[3] - previous[1], advance[3] - advance[1])  # the line's height
            if char_invisible != invisible or gap > WORD_GAP * size:
                end_word()
                line_break = line_break or gap > LINE_GAP * size or not _same_line(previous, advance)
        if box is None:
            if layer.words and (line_break or not _same_line(layer.boxes[-1], char_box)):
                line += 1
            line_break = False
            invisible = char_invisible
            box = list(char_box)
        else:
            box = [min(box[0], char_box[0]), min(box[1], char_box[1]), max(box[2], char_box[2]),
                   max(box[3], char_box[3])]
        if code in SOFT_HYPHENS:
            # Visible as "-" only where the word breaks at the end of a line (PDFium's hyphen flag, or a line break
            # after it); the rest of the word, on the next line, is a word of its own there.
            char = "-" if (pdfium_c.FPDFText_IsHyphen(handle, index) or _ends_line(handle, index, count)) else ""
        elif garbage:  # its glyph is drawn (the box counts) but its text is unknown: not given to the model
            char = ""
            layer.dropped["no_unicode"] += 1
        text.append(char)
        previous = advance
    end_word()
    layer.image_cells = _image_mask(page, matrix, width, height)
    return layer


def uncovered_ink(image: Image.Image, layer: TextLayer, reduce: int = 4, pad: int = 2) -> float:
    """The share of the dark pixels of the rendered page over its images that lie outside every word's box (grown by
    `pad` pixels of the image reduced `reduce` times, for speed): the text an image holds that the text layer
    does not."""
    small = np.asarray(image.convert("L").reduce(reduce)) < 128
    height, width = small.shape
    over_images = np.zeros_like(small)
    for row, cells in enumerate(layer.image_cells or ()):
        for column, covered in enumerate(cells):
            if covered:
                over_images[row * height // GRID:(row + 1) * height // GRID + 1,
                            column * width // GRID:(column + 1) * width // GRID + 1] = True
    in_words = np.zeros_like(small)
    for x0, y0, x1, y1 in layer.boxes:
        in_words[max(0, int(y0 / reduce) - pad):int(y1 / reduce) + pad + 1,
                 max(0, int(x0 / reduce) - pad):int(x1 / reduce) + pad + 1] = True
    ink = small & over_images
    return float((ink & ~in_words).sum() / ink.sum()) if ink.any() else 0.0


def _ends_line(textpage, index: int, count: int) -> bool:
    """Whether character `index` is the last one of its line (followed by a line break or nothing)."""
    pdfium_c = import_pdfium().raw

    for following in range(index + 1, count):
        code = pdfium_c.FPDFText_GetUnicode(textpage, following)
        if code in LINE_BREAKS:
            return True
        if code not in SPACES:
            return False
    return True


def _gap(a: list[float], b: list[float]) -> float:
    """The distance between two boxes (0 when they touch or overlap)."""
    return max(0.0, b[0] - a[2], a[0] - b[2], b[1] - a[3], a[1] - b[3])


def _same_line(a: list[float], b: list[float]) -> bool:
    """Whether b's vertical middle lies within a's vertical extent (horizontal text on one line)."""
    middle = (b[1] + b[3]) / 2
    return a[1] <= middle <= a[3]


def _image_mask(page, matrix, width: int, height: int) -> list[list[bool]] | None:
    """A GRID x GRID mask of the page image where image objects lie (top level and inside form XObjects, whose
    bounds are taken whole), or None when the page has no image."""
    pdfium_c = import_pdfium().raw

    boxes = []
    left, bottom, right, top = (ctypes.c_float() for _ in range(4))
    for index in range(pdfium_c.FPDFPage_CountObjects(page)):
        obj = pdfium_c.FPDFPage_GetObject(page, index)
        kind = pdfium_c.FPDFPageObj_GetType(obj)
        if kind == pdfium_c.FPDF_PAGEOBJ_FORM and not _form_has_image(obj):
            continue
        if kind in (pdfium_c.FPDF_PAGEOBJ_IMAGE, pdfium_c.FPDF_PAGEOBJ_FORM) and pdfium_c.FPDFPageObj_GetBounds(
                obj, left, bottom, right, top):
            boxes.append(_map_box(matrix, left.value, bottom.value, right.value, top.value))
    if not boxes:
        return None
    mask = [[False] * GRID for _ in range(GRID)]
    for x0, y0, x1, y1 in boxes:
        columns = range(max(0, int(x0 / width * GRID)), min(GRID, int(x1 / width * GRID + 0.999)))
        for row in range(max(0, int(y0 / height * GRID)), min(GRID, int(y1 / height * GRID + 0.999))):
            for column in columns:
                mask[row][column] = True
    return mask


def _form_has_image(form, depth: int = 0) -> bool:
    pdfium_c = import_pdfium().raw

    for index in range(pdfium_c.FPDFFormObj_CountObjects(form)):
        obj = pdfium_c.FPDFFormObj_GetObject(form, index)
        kind = pdfium_c.FPDFPageObj_GetType(obj)
        if kind == pdfium_c.FPDF_PAGEOBJ_IMAGE or (kind == pdfium_c.FPDF_PAGEOBJ_FORM and depth < 4
                                                   and _form_has_image(obj, depth + 1)):
            return True
    return False


# ------------------------------------------------------------------------------------------------ pages
def render_page(page, scale: float, where: str) -> Image.Image:
    """The page rendered at `scale` pixels per PDF unit, /Rotate and crop box applied (RGB)."""
    # PDFium shows a page whose MediaBox is empty as a US Letter page: refuse it rather than read an invented page.
    left, bottom, right, top = page.get_mediabox()
    width, height = page.get_size()
    if right - left <= 0 or top - bottom <= 0 or width * scale < 1 or height * scale < 1:
        raise PdfPageError(f"{where}: the page has zero size (MediaBox [{left:g} {bottom:g} {right:g} {top:g}]); "
                           "fix or remove the page, e.g. re-export the PDF")
    pdfium = import_pdfium()
    try:
        image = page.render(scale=scale).to_pil()
        return image if image.mode == "RGB" else image.convert("RGB")
    except pdfium.PdfiumError as error:
        raise PdfPageError(f"{where}: the page could not be rendered ({error})") from None


def page_input(page, scale: float, pdf_text: str, where: str, image: Image.Image | None = None) -> dict[str, Any]:
    """One page of an open PDF as a pipeline input. With words (text layer): {"image", "words", "boxes",
    "line_ids", "words_source", "route", "warnings", "dropped_chars"}; without (the pipeline reads it by OCR):
    {"image", "words": None, "words_source": None, "route", "warnings"}; the pipelines ignore the other keys. `where` names the file and page in warnings; `image` is the page
    already rendered at `scale` (else it is rendered here)."""
    check_pdf_text_mode(pdf_text)
    image = render_page(page, scale, where) if image is None else image if image.mode == "RGB" else image.convert("RGB")
    layer = None
    if pdf_text != "never":
        textpage = page.get_textpage()
        try:
            layer = read_text_layer(page, textpage, image.width, image.height)
        finally:
            textpage.close()
    route = route_page(layer, pdf_text, where, image)
    warnings = [route.warning] if route.warning else []
    if not route.use_text:
        return {"image": image, "words": None, "words_source": None, "route": route.reason, "warnings": warnings}
    dropped = {reason: n for reason, n in layer.dropped.items() if n}
    if dropped:
        warnings.append(f"{where}: {sum(dropped.values())} text-layer character(s) left out "
                        f"({', '.join(f'{n} {reason}' for reason, n in dropped.items())}: not drawn on the page, or "
                        "drawn without usable unicode)")
    return {"image": image, "words": layer.words, "boxes": layer.boxes, "line_ids": layer.line_ids,
            "words_source": layer.source, "route": route.reason, "warnings": warnings, "dropped_chars": dropped}


def pdf_page_inputs(pdf, dpi: float = 200, pdf_text: str = "auto", where: str = "PDF",
                    check_size=None) -> Iterator[dict[str, Any]]:
    """Every page of `pdf` (an open pypdfium2 PdfDocument) as `page_input`, one at a time, rendered at `dpi`.
    `check_size(width_px, height_px, number)`, when given, runs before a page is rendered (a pixel limit)."""
    scale = dpi / 72
    for index in range(len(pdf)):
        page = pdf[index]
        try:
            if check_size is not None:
                width, height = page.get_size()
                check_size(width * scale, height * scale, index + 1)
            yield page_input(page, scale, pdf_text, f"{where}: page {index + 1}")
        finally:
            page.close()


# --------------------------------------------------------------------------- one page, for the dataset builder
@dataclass
class PdfPageWords:
    """A page's image and words: `result` (boxes in `image` pixels; confidence 100 for text-layer words),
    `source` (pdf_text, pdf_invisible_text, ocr:ENGINE, or ocr:needed without an engine), `warning`."""

    image: Image.Image
    result: OcrResult
    source: str
    warning: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**self.result.to_dict(), "source": self.source, "warning": self.warning}


def page_words(pdf, page_index: int, pdf_text: str = "auto", engine: OcrEngine | str | None = None,
               dpi: float = 200, image: Image.Image | None = None) -> PdfPageWords:
    """The words of one PDF page (`pdf`: a path, or an open pypdfium2 PdfDocument): its text layer where it covers
    the page (`pdf_text`, as `route_page`), else `engine`'s OCR of the page rendered at `dpi` (or `image`, that
    rendering). Raises PdfPageError naming the file and page when the page cannot be read."""
    pdfium = import_pdfium()
    where = f"{pdf if not isinstance(pdf, pdfium.PdfDocument) else 'PDF'}: page {page_index + 1}"
    document = pdf if isinstance(pdf, pdfium.PdfDocument) else _open(pdfium, pdf)
    try:
        page = document[page_index]
        try:
            inputs = page_input(page, dpi / 72, pdf_text, where, image)
        finally:
            page.close()
    finally:
        if document is not pdf:
            document.close()
    warning = "; ".join(inputs["warnings"]) or None
    if inputs["words_source"] is not None:
        words = inputs["words"]
        result = OcrResult(list(words), [list(b) for b in inputs["boxes"]], [100.0] * len(words),
                           list(inputs["line_ids"]))
        return PdfPageWords(inputs["image"], result, inputs["words_source"], warning)
    if engine is None:
        return PdfPageWords(inputs["image"], OcrResult(), OCR_NEEDED, warning)
    reader = get_ocr_engine(engine)
    return PdfPageWords(inputs["image"], reader(inputs["image"]), f"ocr:{reader.name}", warning)


def _open(pdfium, path):
    try:
        return pdfium.PdfDocument(str(path))
    except pdfium.PdfiumError as error:
        raise PdfPageError(f"{path}: not a readable PDF ({error})") from None
