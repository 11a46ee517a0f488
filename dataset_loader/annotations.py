"""Read and validate one annotated document (the user format described in FORMAT.md).

Every problem raises `AnnotationError(file, field, message)`, which says what is wrong, where (file and
field, with the word index) and what to do. The build decides whether to stop (strict) or skip the
document and report it (lenient).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from PIL import ExifTags, Image

from layoutkit.pipelines.boxes import load_page
from layoutkit.apps.documents import DEFAULT_PDF_DPI, PDF_SUFFIXES, DocumentError, open_pdf
from layoutkit.pipelines.labels import is_bio_tag
from layoutkit.pipelines.pdf_text import PDFIUM_LOCK  # one lock for every PDFium call in the process
from layoutkit.pipelines.input_validation import BOX_TOLERANCE  # noqa: F401 (re-exported: the builder's tolerance is inference's)
from layoutkit.pipelines.input_validation import FieldError, check_box, is_blank_word, normalised_boxes_problem

REQUIRED_FIELDS = ("image", "words", "boxes", "labels")
OPTIONAL_FIELDS = ("segment_boxes", "entity_ids", "relations", "row_ids", "page", "document_id", "source")
# Per-word optional fields: one int (or null) per word, dropped with blank words like boxes and labels.
PER_WORD_ID_FIELDS = ("entity_ids", "row_ids")


# EXIF orientations 5-8 rotate by 90 degrees, so the upright page has width and height swapped.
_TRANSPOSED_ORIENTATIONS = {5, 6, 7, 8}


class AnnotationError(ValueError):
    """A document that cannot be used: `file` (annotation path), `field` (e.g. "boxes[3]") and `message`."""

    def __init__(self, file: str | Path, field: str | None, message: str):
        self.file = str(file)
        self.field = field
        self.message = message
        where = f"{self.file}: {field}" if field else self.file
        super().__init__(f"{where}: {message}")

    def to_dict(self) -> dict[str, str | None]:
        return {"file": self.file, "field": self.field, "reason": self.message}


@dataclass
class Document:
    """One page with word-level annotation, boxes in pixels of the upright image."""

    id: str
    annotation_file: Path
    image_file: Path
    words: list[str]
    boxes: list[list[float]]
    labels: list[str]
    segment_boxes: list[list[float]] | None = None
    # Entities and their links (relation extraction): words sharing an id form one entity (None: no entity);
    # each relation is [head entity id, tail entity id], e.g. question -> answer.
    entity_ids: list[int | None] | None = None
    relations: list[list[int]] | None = None
    # Line-item row of each word (None: not in a table row).
    row_ids: list[int | None] | None = None
    # Relations removed because blank-word dropping left one of their entities without words.
    dropped_relations: int = 0
    # Words removed because they had no visible text (counted in build_report.json).
    dropped_words: int = 0
    # Unknown top-level keys, reported as warnings (a typo such as "segment_box" must not vanish silently).
    unknown_fields: list[str] = field(default_factory=list)
    # (field, message) of what is readable but almost surely wrong (boxes that look normalised): the build
    # reports them as warnings, and --strict refuses the document.
    warnings: list[tuple[str, str]] = field(default_factory=list)
    # The page of a PDF `image_file` (1-based; None for an image file), rendered at DEFAULT_PDF_DPI: the boxes are
    # pixels of that rendering.
    page: int | None = None
    # The document the page belongs to (its pages are kept in one split); None: the page is a document of its own.
    document_id: str | None = None

    @property
    def is_pdf(self) -> bool:
        return self.image_file.suffix.lower() in PDF_SUFFIXES

    def load_image(self) -> Image.Image:
        """Decode the page as upright RGB (EXIF orientation applied, any mode converted; a PDF page rendered at
        DEFAULT_PDF_DPI)."""
        if self.is_pdf:
            return render_pdf_page(self.image_file, self.page or 1, self.annotation_file)
        try:
            with Image.open(self.image_file) as image:
                return load_page(image)
        except Exception as error:  # the file changed since it was checked
            raise AnnotationError(
                self.annotation_file,
                "image",
                f"image file {self.image_file} could not be decoded ({error}); re-export or replace the image",
            ) from None


def read_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8-sig") as handle:  # -sig: tolerate the BOM some Windows tools write
            return json.load(handle)
    except json.JSONDecodeError as error:
        raise AnnotationError(
            path, None, f"is not valid JSON (line {error.lineno}, column {error.colno}: {error.msg}); fix the syntax"
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise AnnotationError(path, None, f"cannot be read ({error}); it must be a UTF-8 JSON file") from None


def read_annotation(path: Path, images_dir: Path, label_names: Sequence[str] | None = None) -> Document:
    """Read, check and return the document described by the annotation file `path`, or by page N of it when
    `path` is `FILE#page=N` (an annotation of a whole PDF with `word_pages`, see `annotation_pages`)."""
    path = Path(path)
    file, page = split_page_key(path)
    data = read_json(file)
    dropped_relations = 0
    if page is not None:
        data, dropped_relations = page_of_document(data, page, path)
    elif isinstance(data, dict) and data.get("word_pages") is not None:
        raise AnnotationError(path, "word_pages", f"an annotation of a whole PDF needs 'image' to name a readable PDF "
                              f"in {images_dir} (got {data.get('image')!r}); for an image file, leave 'word_pages' out")
    document = parse_annotation(data, path, Path(images_dir))
    if page is not None:
        document.id = f"{file.stem}#page={page}"
        document.document_id = document.document_id or file.stem  # its pages are kept in one split
        document.dropped_relations += dropped_relations
    return validate_document(document, label_names)


PAGE_KEY = "#page="


def split_page_key(path: Path) -> tuple[Path, int | None]:
    """`FILE#page=N` -> (FILE, N); any other path -> (path, None)."""
    name, found, page = path.name.partition(PAGE_KEY)
    return (path.with_name(name), int(page)) if found and page.isdigit() else (path, None)


def annotation_pages(path: Path, images_dir: Path) -> list[Path]:
    """What the build reads an annotation file as: the file itself (one page), or, for the annotation of a whole
    PDF (`word_pages`: the page number of every word), one `FILE#page=N` per page of the PDF, pages without words
    included. A file that cannot be read this way is returned as is, for the reader to report."""
    try:
        data = read_json(path)
        if not isinstance(data, dict) or data.get("word_pages") is None or not isinstance(data.get("image"), str):
            return [path]
        pdf_file = _image_path(data["image"], images_dir, path)
        if pdf_file.suffix.lower() not in PDF_SUFFIXES or not pdf_file.is_file():
            return [path]
        with PDFIUM_LOCK:
            pdf = open_pdf(pdf_file)
            pages = len(pdf)
            pdf.close()
    except (AnnotationError, DocumentError):
        return [path]
    return [path.with_name(f"{path.name}{PAGE_KEY}{number}") for number in range(1, pages + 1)]


def page_of_document(data: Any, page: int, path: Path) -> tuple[Any, int]:
    """The annotation of page `page` of a whole-PDF annotation: its words (with their boxes, labels and ids) and
    the relations between them; and the number of relations from an entity of this page to one on another page,
    which no page can hold (dropped, counted in the report)."""
    file = split_page_key(path)[0]
    if not isinstance(data, dict):
        return data, 0  # refused by parse_annotation
    if "page" in data:
        raise AnnotationError(file, "page", "give either 'page' (an annotation per page) or 'word_pages' (one "
                              "annotation of the whole PDF), not both")
    pages = data["word_pages"]
    words = data.get("words")
    if not isinstance(pages, list) or not isinstance(words, list) or len(pages) != len(words):
        raise AnnotationError(file, "word_pages", "must be a list with the page number (1 for the first page) of "
                              "every word, as long as 'words'")
    for index, number in enumerate(pages):
        if not (_is_int(number) and number >= 1):
            raise AnnotationError(file, f"word_pages[{index}]", f"is {number!r}; it must be a page number (1 for "
                                  "the first page)")
    keep = [index for index, number in enumerate(pages) if number == page]
    result = {key: value for key, value in data.items() if key != "word_pages"}
    for name in ("words", "boxes", "labels", "segment_boxes", *PER_WORD_ID_FIELDS):
        if isinstance(data.get(name), list) and len(data[name]) == len(words):
            result[name] = [data[name][index] for index in keep]
    dropped = 0
    if isinstance(data.get("entity_ids"), list) and isinstance(data.get("relations"), list):
        here = {entity for entity in result.get("entity_ids", []) if entity is not None}
        def kept(pair) -> bool:  # a malformed pair stays, for parse_annotation to report
            return not (isinstance(pair, list) and len(pair) == 2) or (pair[0] in here and pair[1] in here)

        result["relations"] = [pair for pair in data["relations"] if kept(pair)]
        dropped = sum(1 for pair in data["relations"] if not kept(pair) and pair[0] in here)
    result["page"] = page
    return result, dropped


def parse_annotation(data: Any, path: Path, images_dir: Path) -> Document:
    """Check the JSON structure (fields and types) of a user annotation and build a Document."""
    if not isinstance(data, dict):
        raise AnnotationError(path, None, f"top level is {_type_name(data)}; it must be a JSON object {{...}}")
    for name in REQUIRED_FIELDS:
        if name not in data:
            raise AnnotationError(path, name, f"required field is missing (required: {', '.join(REQUIRED_FIELDS)})")

    image_name = data["image"]
    if not isinstance(image_name, str) or not image_name.strip():
        raise AnnotationError(path, "image", "must be the image's file name (a non-empty string)")
    for name in ("words", "labels"):
        values = data[name]
        if not isinstance(values, list):
            raise AnnotationError(path, name, f"is {_type_name(values)}; it must be a list of strings")
        for index, value in enumerate(values):
            if not isinstance(value, str):
                raise AnnotationError(path, f"{name}[{index}]", f"is {_type_name(value)}; it must be a string")
    for name in ("boxes", "segment_boxes"):
        if data.get(name) is not None and not isinstance(data[name], list):
            message = f"is {_type_name(data[name])}; it must be a list of [x0, y0, x1, y1] boxes"
            raise AnnotationError(path, name, message)

    ids = {name: _parse_word_ids(data.get(name), name, path) for name in PER_WORD_ID_FIELDS}
    page = data.get("page")
    if page is not None and not (_is_int(page) and page >= 1):
        raise AnnotationError(path, "page", f"is {page!r}; it must be the page number (1 for the first page)")
    document_id = data.get("document_id")
    if document_id is not None and (not isinstance(document_id, str) or not document_id.strip()):
        raise AnnotationError(path, "document_id", f"is {document_id!r}; it must be a non-empty string naming the "
                              "document the page belongs to")
    return Document(
        id=path.stem,
        annotation_file=path,
        image_file=_image_path(image_name, images_dir, path),
        words=list(data["words"]),
        boxes=list(data["boxes"]),
        labels=list(data["labels"]),
        segment_boxes=list(data["segment_boxes"]) if data.get("segment_boxes") is not None else None,
        entity_ids=ids["entity_ids"],
        relations=_parse_relations(data.get("relations"), path),
        row_ids=ids["row_ids"],
        unknown_fields=sorted(set(data) - set(REQUIRED_FIELDS) - set(OPTIONAL_FIELDS)),
        page=page,
        document_id=document_id,
    )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _parse_word_ids(values: Any, name: str, path: Path) -> list[int | None] | None:
    """An optional per-word id list (`entity_ids`, `row_ids`): integers or null."""
    if values is None:
        return None
    if not isinstance(values, list):
        message = f"is {_type_name(values)}; it must be a list with one integer id or null per word"
        raise AnnotationError(path, name, message)
    for index, value in enumerate(values):
        if value is not None and not (_is_int(value) and value >= 0):
            raise AnnotationError(
                path, f"{name}[{index}]",
                f"is {value!r}; it must be a non-negative integer id, or null for no {name[:-4]}",
            )
    return list(values)


def _parse_relations(values: Any, path: Path) -> list[list[int]] | None:
    """The optional `relations`: a list of [head entity id, tail entity id] pairs."""
    if values is None:
        return None
    if not isinstance(values, list):
        message = f"is {_type_name(values)}; it must be a list of [head_id, tail_id] pairs"
        raise AnnotationError(path, "relations", message)
    for index, pair in enumerate(values):
        if not (isinstance(pair, list) and len(pair) == 2 and all(_is_int(v) for v in pair)):
            raise AnnotationError(
                path, f"relations[{index}]", f"is {pair!r}; it must be [head_entity_id, tail_entity_id] (two integers)"
            )
    return [list(pair) for pair in values]


def validate_document(document: Document, label_names: Sequence[str] | None = None) -> Document:
    """Check lengths, labels, the image and the boxes; clamp boxes within the tolerance and drop blank words.

    Shared by the user format and the FUNSD importer so both obey the same rules.
    """
    file = document.annotation_file
    lengths = {"words": len(document.words), "boxes": len(document.boxes), "labels": len(document.labels)}
    for name in ("segment_boxes", *PER_WORD_ID_FIELDS):
        if getattr(document, name) is not None:
            lengths[name] = len(getattr(document, name))
    if len(set(lengths.values())) > 1:
        counts = ", ".join(f"{len_} {name}" for name, len_ in lengths.items())
        raise AnnotationError(
            file, "/".join(lengths), f"lengths differ ({counts}); give exactly one box and one label per word"
        )

    allowed = set(label_names) if label_names is not None else None
    for index, label in enumerate(document.labels):
        if not is_bio_tag(label):
            raise AnnotationError(
                file,
                f"labels[{index}]",
                f"{label!r} is not a BIO tag; use 'O' or 'B-<type>'/'I-<type>' (e.g. 'B-total')",
            )
        if allowed is not None and label not in allowed:
            raise AnnotationError(
                file,
                f"labels[{index}]",
                f"{label!r} is not in the label list ({', '.join(label_names)}); fix the tag or add it with --labels",
            )

    if document.is_pdf:
        check_pdf_page(document)
        width, height = document.load_image().size  # rendered now: a page that cannot be must fail here
    else:
        width, height = image_size(document.image_file, file)
    document.boxes = [_check_box(box, f"boxes[{i}]", width, height, file) for i, box in enumerate(document.boxes)]
    if document.segment_boxes is not None:
        document.segment_boxes = [
            _check_box(box, f"segment_boxes[{i}]", width, height, file) for i, box in enumerate(document.segment_boxes)
        ]
    problem = normalised_boxes_problem(document.boxes, width, height, document.load_image)
    if problem is not None:
        document.warnings.append(("boxes", problem))
    check_relations(document)
    _drop_blank_words(document)
    return document


def check_relations(document: Document) -> None:
    """Relations need entities: each end must be an entity id some word carries, a link joins two different
    entities, and a link is given once. Raises AnnotationError naming the relation."""
    if document.relations is None:
        return
    file = document.annotation_file
    if document.entity_ids is None:
        raise AnnotationError(
            file, "relations", "relations link entity ids, but the document has no 'entity_ids' (one id or null "
            "per word); add them or remove 'relations'"
        )
    known = {entity for entity in document.entity_ids if entity is not None}
    seen: dict[tuple[int, int], int] = {}
    for index, (head, tail) in enumerate(document.relations):
        for end, entity in (("head", head), ("tail", tail)):
            if entity not in known:
                raise AnnotationError(
                    file, f"relations[{index}]", f"{end} entity id {entity} is not carried by any word in "
                    "'entity_ids'; link existing entities or give the entity's words that id"
                )
        if head == tail:
            raise AnnotationError(file, f"relations[{index}]", f"links entity {head} to itself; a relation joins two "
                                  "different entities")
        if (head, tail) in seen:
            raise AnnotationError(file, f"relations[{index}]", f"[{head}, {tail}] is already given as "
                                  f"relations[{seen[head, tail]}]; give each link once")
        seen[head, tail] = index


def image_size(image_file: Path, annotation_file: Path) -> tuple[int, int]:
    """(width, height) of the upright page (as displayed, EXIF orientation applied)."""
    if not image_file.is_file():
        raise AnnotationError(
            annotation_file, "image", f"image file {image_file} does not exist; put the image there or fix the name"
        )
    try:
        with Image.open(image_file) as image:
            # Decode now: truncated or corrupt pixel data must fail here, before anything is written (and
            # PNG keeps EXIF after the pixels anyway). One page at a time, so memory stays flat.
            image.load()
            width, height = image.size
            orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception as error:
        raise AnnotationError(
            annotation_file, "image", f"image file {image_file} cannot be read ({error}); re-export or replace it"
        ) from None
    return (height, width) if orientation in _TRANSPOSED_ORIENTATIONS else (width, height)


def check_pdf_page(document: Document) -> None:
    """The annotation's page exists in its PDF; a PDF of several pages needs `page`. Raises AnnotationError."""
    if not document.image_file.is_file():
        raise AnnotationError(document.annotation_file, "image",
                              f"PDF {document.image_file} does not exist; put the PDF there or fix the name")
    with PDFIUM_LOCK:
        try:
            pdf = open_pdf(document.image_file)
        except DocumentError as error:
            raise AnnotationError(document.annotation_file, "image", f"{error}") from None
        pages = len(pdf)
        pdf.close()
    if document.page is None and pages > 1:
        raise AnnotationError(document.annotation_file, "page", f"{document.image_file} has {pages} pages; say which "
                              "one this annotation describes with \"page\" (1 for the first)")
    if document.page is not None and document.page > pages:
        raise AnnotationError(document.annotation_file, "page", f"is {document.page}, but {document.image_file} has "
                              f"{pages} page{'s' if pages > 1 else ''}")


def render_pdf_page(pdf_file: Path, page: int, annotation_file: Path, dpi: int = DEFAULT_PDF_DPI) -> Image.Image:
    """Page `page` (1-based) of a PDF rendered at `dpi` as RGB, as predict.py and the service render it."""
    from layoutkit.pipelines.pdf_text import PdfPageError, render_page

    where = f"{pdf_file}: page {page}"
    with PDFIUM_LOCK:
        try:
            pdf = open_pdf(pdf_file)
        except DocumentError as error:
            raise AnnotationError(annotation_file, "image", str(error)) from None
        try:
            pdf_page = pdf[page - 1]
            try:
                return render_page(pdf_page, dpi / 72, where)
            finally:
                pdf_page.close()
        except PdfPageError as error:
            raise AnnotationError(annotation_file, "page", str(error)) from None
        finally:
            pdf.close()


def _image_path(name: str, images_dir: Path, annotation_file: Path) -> Path:
    """Resolve `name` inside images/; names that escape the folder (../x.png, /abs.png) are refused."""
    candidate = Path(name)
    resolved_dir = images_dir.resolve()
    resolved = (images_dir / candidate).resolve()
    if candidate.is_absolute() or not resolved.is_relative_to(resolved_dir):
        raise AnnotationError(
            annotation_file,
            "image",
            f"{name!r} points outside {images_dir}; give a file name relative to the images folder",
        )
    return images_dir / candidate


def _check_box(value: Any, field: str, width: int, height: int, file: Path) -> list[float]:
    """The shared box rule (layoutkit.pipelines.input_validation, also applied at inference), reported against `file`."""
    try:
        return check_box(value, field, width, height)
    except FieldError as error:
        raise AnnotationError(file, error.field, error.message) from None


def _drop_blank_words(document: Document) -> None:
    """Words with no visible text (blank, or only zero-width characters) give the tokenizer nothing to tag; remove
    them (counted, not silent). Inference drops the same words (`is_blank_word`)."""
    keep = [index for index, word in enumerate(document.words) if not is_blank_word(word)]
    if len(keep) == len(document.words):
        return
    labels = list(document.labels)
    pending: str | None = None  # type of a dropped B- word whose entity continues
    for index, word in enumerate(document.words):
        if is_blank_word(word):
            pending = labels[index][2:] if labels[index].startswith("B-") else pending
            continue
        # The first kept word of an entity whose B- word was dropped becomes its B-.
        if pending is not None and labels[index] == f"I-{pending}":
            labels[index] = f"B-{pending}"
        pending = None
    document.dropped_words += len(document.words) - len(keep)
    document.words = [document.words[i] for i in keep]
    document.boxes = [document.boxes[i] for i in keep]
    document.labels = [labels[i] for i in keep]
    for name in ("segment_boxes", *PER_WORD_ID_FIELDS):
        if getattr(document, name) is not None:
            setattr(document, name, [getattr(document, name)[i] for i in keep])
    if document.relations is not None:
        # A link whose entity lost all its words (all blank) can no longer be represented: drop it, counted.
        remaining = {entity for entity in document.entity_ids if entity is not None}
        kept_relations = [pair for pair in document.relations if pair[0] in remaining and pair[1] in remaining]
        document.dropped_relations += len(document.relations) - len(kept_relations)
        document.relations = kept_relations


def _type_name(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number" if isinstance(value, (int, float)) else type(value).__name__)
