"""The service's checks of a request before it joins the worker queue: what can be refused from the bytes and
headers alone, in milliseconds, however busy the workers are with OCR (layoutkit/apps/serve.py runs these on its event
loop, or in a small pool of their own for large bodies and PDFs). Nothing here decodes pixels or renders a page:

- an upload is a PDF (`%PDF-` in its first 1024 bytes, as PDFium accepts) or an image Pillow recognises from its
  header; its page count and every page's size (from the image header, or the PDF's page sizes at `--dpi`) are
  checked against the limits, and a PNG's chunks against their checksums (`Image.verify`: a truncated or damaged
  PNG is refused here, not after it waited for a worker);
- a words request (JSON) parses, has the shape of predict.py's `--words_json`, and each page's words are strings
  with valid pixel boxes on its page (the image's header size, or `width` x `height`), as `check_words` checks them.

The errors are the documents' (`DocumentError`, `LimitError`, with the same messages as when the pages are read).
"""

from __future__ import annotations

import base64
import binascii
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

from PIL import ExifTags, Image

from .documents import (
    IMAGE_SUFFIXES,
    PDFIUM_LOCK,
    DocumentError,
    LimitError,
    bomb_error,
    check_pixels,
    check_words_pages,
    open_pdf,
)
from ..pipelines.input_validation import FieldError, check_box

# EXIF orientations 5-8 turn the page by 90 degrees: the upright page has width and height swapped.
TRANSPOSED_ORIENTATIONS = {5, 6, 7, 8}
PAGE_FIELDS = ("words", "boxes", "segment_boxes", "image", "width", "height")


@dataclass
class CheckedUpload:
    """An upload that passed the checks: its file name (no folders), bytes, kind and page count."""

    name: str
    data: bytes
    is_pdf: bool
    pages: int


@dataclass
class CheckedWords:
    """A words request that passed the checks: its pages (each page's image as bytes in `image_data`), its
    `source`, and the warnings of the checks ({"page", "message"})."""

    pages: list[dict]
    source: str | None
    warnings: list[dict] = field(default_factory=list)


@dataclass
class Limits:
    max_pages: int
    max_image_pixels: int
    dpi: int


def check_upload(data: bytes, filename: str | None, content_type: str | None, limits: Limits) -> CheckedUpload:
    """The upload's kind from its content (declared types only shape the message), its pages and their sizes."""
    # A path-like name ("../../etc/x.png", "..\\x.png") is only its last part: the upload is never a file here.
    name = Path((filename or "upload").replace("\\", "/")).name or "upload"
    content_type = (content_type or "").split(";")[0].strip().lower()
    declared_pdf = Path(name).suffix.lower() == ".pdf" or content_type == "application/pdf"
    if looks_like_pdf(data):
        return CheckedUpload(name, data, True, check_pdf(name, data, limits))
    pages = check_image(name, data, limits)
    if pages is not None:
        return CheckedUpload(name, data, False, pages)
    if declared_pdf:
        raise DocumentError(f"{name}: not a readable PDF (no %PDF- header); re-export or repair it")
    if content_type.startswith("image/") or Path(name).suffix.lower() in IMAGE_SUFFIXES:
        raise DocumentError(f"{name}: not a readable image (Pillow does not recognise its header)")
    raise UnsupportedFile(f"{name}: unsupported file (content type {content_type or 'none'!r}); send an image "
                          "(PNG, JPEG, TIFF, BMP, GIF, WebP) or a PDF")


class UnsupportedFile(DocumentError):
    """Neither an image nor a PDF (the service answers 415)."""


def looks_like_pdf(data: bytes) -> bool:
    """A PDF header in the first 1024 bytes, where PDFium looks for it."""
    return b"%PDF-" in data[:1024]


def check_pages(name: str, count: int, limits: Limits) -> None:
    if count > limits.max_pages:
        raise LimitError(f"{name}: {count} pages, above the limit of {limits.max_pages} pages per document; "
                         "start the server with a larger --max_pages", "--max_pages")


def check_pdf(name: str, data: bytes, limits: Limits) -> int:
    """The page count, every page's size at `dpi` checked against the pixel limit (PDFium reads the sizes from the
    page tree without loading the pages)."""
    with PDFIUM_LOCK:
        pdf = open_pdf(Path(name), data)
        try:
            count = len(pdf)
            check_pages(name, count, limits)
            scale = limits.dpi / 72
            for index in range(count):
                width, height = pdf.get_page_size(index)
                check_pixels(Path(name), width * scale, height * scale, limits.max_image_pixels, index + 1)
        finally:
            pdf.close()
    return count


def open_image_header(name: str, data: bytes, max_pixels: int) -> Image.Image | None:
    """The image with only its header read, or None when Pillow does not recognise the bytes."""
    try:
        return Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise bomb_error(name, max_pixels, error) from None
    except Exception:  # Pillow raises many kinds on bytes that are no image it knows
        return None


def check_image(name: str, data: bytes, limits: Limits) -> int | None:
    """The frame count of an image upload with each frame's header size checked, or None when the bytes are no
    image Pillow recognises."""
    # Between 1x and 2x the limit Pillow only warns (once, to the log); check_pixels refuses it below. No
    # warnings.catch_warnings here: it swaps process-wide state, unsafe beside the worker threads.
    image = open_image_header(name, data, limits.max_image_pixels)
    if image is None:
        return None
    with image:
        try:
            count = int(getattr(image, "n_frames", 1))
            check_pages(name, count, limits)
            # TIFF frames each have their own size (read from their directory entry); other formats' frames share
            # the first one's.
            for number in range(1, (count if image.format == "TIFF" else 1) + 1):
                image.seek(number - 1)
                check_pixels(Path(name), image.width, image.height, limits.max_image_pixels, number)
            image.seek(0)
            if image.format == "PNG":
                image.verify()  # every chunk's CRC, up to IEND, without decompressing the pixels
        except DocumentError:
            raise
        except Exception as error:
            raise DocumentError(f"{name}: not a readable image ({error or type(error).__name__})") from None
    return count


def upright_sizes(image: Image.Image) -> list[tuple[int, int]]:
    """(width, height) of the page as displayed (EXIF orientation applied); both orientations when the header does
    not tell (a PNG may store its EXIF after the pixels, read only when decoding)."""
    if image.format == "PNG" and "exif" not in image.info:
        return [image.size, image.size[::-1]]
    orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
    return [image.size[::-1] if orientation in TRANSPOSED_ORIENTATIONS else image.size]


def check_words_request(body: bytes, image_model: str | None, limits: Limits) -> CheckedWords:
    """A words request: parsed, shaped as predict.py's --words_json, each page's image decoded from base64 (its
    header checked) or its width and height given, and the words and boxes valid on that page. `image_model`: the
    model type when the model reads the page image (then every page needs it), else None."""
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DocumentError(f"request: the JSON body does not parse ({error})") from None
    pages = check_words_pages(payload, "request")
    check_pages("request", len(pages), limits)
    top_level = set(payload) - {"pages", "source"} if isinstance(payload, dict) and "pages" in payload else set()
    source = payload.get("source") if isinstance(payload, dict) else None
    if source is not None and not isinstance(source, str):
        raise DocumentError("request: 'source' must be a string (the document's name)")
    checked = CheckedWords([], source)
    for name in sorted(top_level):
        checked.warnings.append({"page": None, "message": unknown_field(name, ("pages", "source"))})
    for number, page in enumerate(pages, start=1):
        where = f"request: page {number}"
        known = PAGE_FIELDS + (("source",) if page is payload else ())
        for name in sorted(set(page) - set(known)):
            checked.warnings.append({"page": number, "message": unknown_field(name, known)})
        page = dict(page)
        if page.get("image"):
            try:
                page["image_data"] = base64.b64decode(page.pop("image"), validate=True)
            except (binascii.Error, TypeError, ValueError) as error:
                raise DocumentError(f"{where}: 'image' is not base64 ({error})") from None
            image_name = f"{where}: image"
            if check_image(image_name, page["image_data"], limits) is None:
                raise DocumentError(f"{image_name}: not a readable image (Pillow does not recognise its header)")
            with Image.open(io.BytesIO(page["image_data"])) as image:
                sizes = upright_sizes(image)
        elif image_model:
            raise DocumentError(f"{where}: this {image_model} model reads the page image; send it base64-encoded "
                                "as 'image'")
        else:
            width, height = page.get("width"), page.get("height")
            if not (_is_int(width) and _is_int(height) and width > 0 and height > 0):
                raise DocumentError(f"{where}: give the page's 'image' (base64), or its 'width' and 'height' in "
                                    "pixels (the boxes' coordinate space)")
            check_pixels(Path("request"), width, height, limits.max_image_pixels, number)
            sizes = [(width, height)]
        check_page_words(page, sizes, where)
        checked.pages.append(page)
    return checked


def check_page_words(page: dict, sizes: list[tuple[int, int]], where: str) -> None:
    """Words are strings, boxes (and segment boxes) valid pixel boxes on a page of one of `sizes` (the page's size
    in either orientation when the header does not say which): the messages of `pipeline_inputs.check_words`."""
    errors = []
    for size in sizes:
        try:
            return check_words_on_page(page, size, where)
        except DocumentError as error:
            errors.append(error)
    raise errors[0]


def check_words_on_page(page: dict, size: tuple[int, int], where: str) -> None:
    width, height = size
    try:
        for index, word in enumerate(page["words"]):
            if not isinstance(word, str):
                raise FieldError(f"words[{index}]",
                                 f"{word!r} is {type(word).__name__}; every word must be a string")
        for name in ("boxes", "segment_boxes"):
            boxes = page.get(name)
            if boxes is None and name == "segment_boxes":
                continue
            if not isinstance(boxes, list):
                raise TypeError(f"'words' and '{name}' must be lists")
            if len(boxes) != len(page["words"]):
                raise ValueError(f"{len(page['words'])} words but {len(boxes)} {name}: give one box per word")
            for index, box in enumerate(boxes):
                check_box(box, f"{name}[{index}]", width, height)
    except (TypeError, ValueError) as error:
        raise DocumentError(f"{where}: {error}") from None


def unknown_field(name: str, known) -> str:
    """The dataset builder's message for a key it does not know."""
    return f"unknown field {name!r} ignored (known fields: {', '.join(known)})"


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
