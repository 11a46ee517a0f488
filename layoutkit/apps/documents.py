"""Reading documents into page images: image files (every frame of a multi-page TIFF) and PDFs (rendered with
PDFium), with the decompression-bomb guard checked before a page is decoded, and the words-and-boxes input of
the annotation format. Shared by predict.py and the HTTP service (`layoutkit/apps/serve.py`), which passes an
upload's bytes as `data` (read in memory, never written to disk; `path` then only names the document in messages).
Every PDFium call holds `pdf_text.PDFIUM_LOCK` (PDFium is not thread-safe, not even across documents)."""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

from PIL import Image, ImageSequence

from ..pipelines.pdf_text import PDFIUM_LOCK, PdfPageError
from ..pipelines.pdf_text import pdf_page_inputs as read_pdf_pages

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp"}
PDF_SUFFIXES = {".pdf"}
DEFAULT_MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485
# The resolution PDF pages are rendered at (predict.py/serve --dpi, the dataset builder, the PDF sample data):
# a page of W x H points becomes W*dpi/72 x H*dpi/72 pixels.
DEFAULT_PDF_DPI = 200


class DocumentError(Exception):
    """A document that cannot be processed; the message names the file and the problem."""


class LimitError(DocumentError):
    """A document above a size limit (pixels, pages); the message names the limit, `option` the setting that
    raises it."""

    def __init__(self, message: str, option: str):
        super().__init__(message)
        self.option = option


def check_pixels(path: Path, width: float, height: float, max_pixels: int, page: int) -> None:
    if width * height > max_pixels:
        raise LimitError(
            f"{path}: page {page} is {int(width)}x{int(height)} = {int(width * height):,} pixels, above the limit of "
            f"{max_pixels:,} (decompression-bomb guard); raise --max_image_pixels if the file is trusted",
            "--max_image_pixels",
        )


def bomb_error(path, max_pixels: int, error: Exception) -> LimitError:
    """The error for an image Pillow's decompression-bomb guard refused when opening it (`error`)."""
    return LimitError(
        f"{path}: image above the limit of {max_pixels:,} pixels (decompression-bomb guard: {error}); raise "
        "--max_image_pixels if the file is trusted",
        "--max_image_pixels",
    )


def image_pages(path: Path, max_pixels: int, data: bytes | None = None):
    """The frames of an image file (several for a multi-page TIFF), or of the image `data`, checked for size
    before decoding."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(path if data is None else io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise bomb_error(path, max_pixels, error) from None
    except (OSError, ValueError) as error:
        raise DocumentError(f"{path}: not a readable image ({error})") from None
    with image:
        for number, frame in enumerate(ImageSequence.Iterator(image), start=1):
            check_pixels(path, frame.width, frame.height, max_pixels, number)
            try:
                frame.load()
                yield frame.copy()
            except (OSError, ValueError, SyntaxError) as error:
                raise DocumentError(f"{path}: page {number} could not be decoded ({error})") from None


def import_pdfium(path: Path):
    """pypdfium2, an optional dependency (the ocr extra); DocumentError naming what to install when it is missing."""
    try:
        import pypdfium2
    except ImportError:
        raise DocumentError(f"{path}: reading PDFs needs pypdfium2: pip install 'layoutkit[ocr]'") from None
    return pypdfium2


def open_pdf(path: Path, data: bytes | None = None):
    """The PDF file, or the PDF `data` (then kept alive by the caller until the document is closed), as a pypdfium2
    document; DocumentError when it cannot be used (encrypted, malformed, no pages). It takes PDFIUM_LOCK itself.

    Opened through PDFium's own loader, not `PdfDocument(path)`: that one reports a PDF without pages as a load
    failure with PDFium's last error code, which is global and not reset by a successful load, so an empty PDF
    would take the error of the previous bad file ("Data format error", "encrypted"). Here "no pages" is read from
    the opened document, and the error code only after this file's own failed load, which always sets it."""
    pdfium = import_pdfium(path)
    import pypdfium2.raw as pdfium_c

    with PDFIUM_LOCK:
        if data is None:
            raw = pdfium_c.FPDF_LoadDocument(os.fsencode(path), None)
        else:
            raw = pdfium_c.FPDF_LoadMemDocument64(data, len(data), None)
        code = None if raw else pdfium_c.FPDF_GetLastError()
    if not raw:
        if code in (pdfium_c.FPDF_ERR_PASSWORD, pdfium_c.FPDF_ERR_SECURITY):
            raise DocumentError(f"{path}: the PDF is encrypted (password protected); decrypt it first")
        reasons = {pdfium_c.FPDF_ERR_FILE: "the file cannot be opened", pdfium_c.FPDF_ERR_FORMAT: "data format error",
                   pdfium_c.FPDF_ERR_PAGE: "page not found or content error"}
        reason = reasons.get(code, f"PDFium error code {code}")
        raise DocumentError(f"{path}: not a readable PDF ({reason}); re-export or repair it")
    with PDFIUM_LOCK:
        pdf = pdfium.PdfDocument(raw)
        if len(pdf) == 0:
            pdf.close()
            raise DocumentError(f"{path}: the PDF has no pages")
    return pdf


def pdf_page_inputs(path: Path, dpi: int, max_pixels: int, pdf_text: str = "auto", data: bytes | None = None):
    """Every page of a PDF (the file, or `data`), one at a time, as a pipeline input (`pdf_text.page_input`): its
    image rendered at `dpi` and, where its text layer covers it (`pdf_text`: auto, always, never), its words; the
    other pages are read by OCR. Each page is checked against `max_pixels` before it is rendered."""
    pdfium = import_pdfium(path)
    pdf = open_pdf(path, data)
    try:
        yield from read_pdf_pages(pdf, dpi, pdf_text, str(path),
                                  check_size=lambda width, height, number: check_pixels(path, width, height,
                                                                                        max_pixels, number))
    except PdfPageError as error:
        raise DocumentError(str(error)) from None
    except pdfium.PdfiumError as error:
        raise DocumentError(f"{path}: a page could not be read ({error})") from None
    finally:
        with PDFIUM_LOCK:
            pdf.close()


def pdf_pages(path: Path, dpi: int, max_pixels: int, data: bytes | None = None):
    """Every page of a PDF (the file, or `data`) rendered at `dpi`, one at a time (images only: no text layer)."""
    for page in pdf_page_inputs(path, dpi, max_pixels, "never", data):
        yield page["image"]


def check_words_pages(data, where: str) -> list[dict]:
    """The pages of a words input: a dict, a list of dicts or {"pages": [...]}, each with 'words' and 'boxes'
    lists of the same length (the boxes themselves are checked by the pipeline). `where` names the input."""
    pages = data.get("pages", [data]) if isinstance(data, dict) else data
    if not isinstance(pages, list) or not pages:
        raise DocumentError(f"{where}: expected an object with words and boxes, or a list of them")
    for number, page in enumerate(pages, start=1):
        if not (isinstance(page, dict) and isinstance(page.get("words"), list) and isinstance(page.get("boxes"), list)):
            raise DocumentError(f"{where}: page {number} needs 'words' and 'boxes' lists")
        if len(page["words"]) != len(page["boxes"]):
            raise DocumentError(f"{where}: page {number} has {len(page['words'])} words but {len(page['boxes'])} boxes")
    return pages
