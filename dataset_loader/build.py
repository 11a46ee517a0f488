"""Build a DatasetDict from a folder in the user annotation format (DIR/images, DIR/annotations)."""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from datasets import DatasetDict

from dataset_loader.annotations import AnnotationError, Document, annotation_pages, read_annotation
from dataset_loader.ocr_build import OcrBuild
from dataset_loader.preprocessing import DEFAULT_KEEP_ASPECT, DEFAULT_PAD, DEFAULT_SIZE
from dataset_loader.report import BuildReport
from dataset_loader.splits import DEFAULT_RATIOS, assign_splits
from dataset_loader.writer import (
    BuildError,
    DocumentRef,
    Reader,
    abort_with_report,
    scan_documents,
    start_build,
    write_dataset,
)
from layoutkit.pipelines.labels import OUTSIDE, is_bio_tag, label_list_from_tags, label_list_from_types


def build_dataset(
    data_dir: str | Path,
    output: str | Path,
    *,
    size: tuple[int, int] = DEFAULT_SIZE,
    keep_aspect: bool = DEFAULT_KEEP_ASPECT,
    pad: bool = DEFAULT_PAD,
    seed: int = 42,
    ratios: Sequence[float] = DEFAULT_RATIOS,
    labels: Sequence[str] | None = None,
    strict: bool = False,
    overwrite: bool = False,
    ocr: OcrBuild | None = None,
) -> DatasetDict:
    """Check, split, resize and save the folder's documents to `output`; returns the saved DatasetDict.

    `labels` fixes the label list (and its order); by default it is made from the tags in the data.
    `ocr`: replace the annotated words by the OCR engine's, with the labels carried over (`ocr_build`).
    Lenient (default): bad documents are skipped and listed in build_report.json. Strict: the first
    problem raises AnnotationError.
    """
    data_dir, output = Path(data_dir), Path(output)
    images_dir, annotations_dir = data_dir / "images", data_dir / "annotations"
    for folder in (images_dir, annotations_dir):
        if not folder.is_dir():
            raise BuildError(f"{folder} is not a folder; a data folder holds images/ and annotations/ (see FORMAT.md)")
    report = start_build(data_dir, "folder", output, size=size, keep_aspect=keep_aspect, seed=seed, strict=strict,
                         overwrite=overwrite, pad=pad)
    paths = sorted(annotations_dir.glob("*.json"))
    if not paths:
        raise BuildError(f"no *.json annotation files in {annotations_dir}")
    # An annotation of a whole PDF (word_pages) is read page by page.
    paths = [key for path in paths for key in annotation_pages(path, images_dir)]

    label_names = list(labels) if labels is not None else None
    reader = functools.partial(read_annotation, images_dir=images_dir, label_names=label_names)
    return build_documents(paths, reader, report, output, source_name=str(annotations_dir), size=size,
                           keep_aspect=keep_aspect, seed=seed, ratios=ratios, labels=label_names, strict=strict,
                           ocr=ocr)


def build_documents(
    paths: Sequence[Path],
    reader: Reader,
    report: BuildReport,
    output: Path,
    *,
    source_name: str,
    size: tuple[int, int],
    keep_aspect: bool,
    seed: int,
    ratios: Sequence[float],
    labels: Sequence[str] | None,
    strict: bool,
    ocr: OcrBuild | None,
) -> DatasetDict:
    """The folder build after its annotation files are listed, for any source whose `reader` turns a path into a
    checked Document (the user format, a Label Studio export): check every document (warnings, --strict), keep
    duplicate pages in one split, assign splits and write the dataset."""
    label_names = list(labels) if labels is not None else None
    image_files: dict[Path, PageSource] = {}
    kept, tags = scan_documents(paths, _first_pass_reader(reader, report, strict, image_files), report, strict)
    if not kept:
        raise abort_with_report(output, report, f"no valid document in {source_name}")

    duplicates = duplicate_images(kept, image_files)
    report_duplicates(duplicates, image_files, report)
    by_id = {ref.id: ref for ref in kept}
    # A page annotated twice, and the pages of one document (same document_id), stay in one split.
    together = [[ref.id for ref in group] for group in duplicates] + document_pages(kept, image_files)
    assignment = assign_splits(list(by_id), ratios, seed, together=together)
    splits = {name: [by_id[i] for i in ids] for name, ids in assignment.items()}
    return write_dataset(
        splits,
        reader,
        label_names or label_list_from_tags(tags),
        output,
        size,
        keep_aspect,
        report,
        strict,
        ocr,
    )


@dataclass(frozen=True)
class PageSource:
    """Where a document's page comes from: an image file, or a page of a PDF; and the document it belongs to."""

    file: Path
    page: int | None = None
    document_id: str | None = None

    def __str__(self) -> str:
        return str(self.file) if self.page is None else f"{self.file} page {self.page}"


def _first_pass_reader(
    reader: Reader, report: BuildReport, strict: bool, image_files: dict[Path, PageSource]
) -> Reader:
    """`reader` for pass 1 (checking): it also reports each document's warnings, or refuses the document with
    --strict, and records its image file for the duplicate check. Pass 2 reads with the plain `reader`, so a
    warning is reported once."""

    def read(path: Path) -> Document:
        document = reader(path)
        for field, message in document.warnings:
            if strict:
                raise AnnotationError(path, field, message)
            report.warn(path, f"{field}: {message}")
        image_files[path] = PageSource(document.image_file, document.page if document.is_pdf else None,
                                       document.document_id)
        return document

    return read


def duplicate_images(refs: Sequence[DocumentRef], image_files: dict[Path, PageSource]) -> list[list[DocumentRef]]:
    """Groups of documents whose annotations describe the same image: the same file (the same page of a PDF), or
    files with identical bytes (a page exported twice under two names)."""
    digests: dict[Path, str] = {}  # one read per file, however many annotations name it
    by_content: dict[tuple[str, int | None], list[DocumentRef]] = {}
    for ref in refs:
        source = image_files[ref.path]
        image = source.file.resolve()
        if image not in digests:
            with open(image, "rb") as handle:
                digests[image] = hashlib.file_digest(handle, "sha256").hexdigest()
        by_content.setdefault((digests[image], source.page), []).append(ref)
    return [group for group in by_content.values() if len(group) > 1]


def document_pages(refs: Sequence[DocumentRef], image_files: dict[Path, PageSource]) -> list[list[str]]:
    """The ids of the pages of each document of several pages: annotations sharing a `document_id`, or pages of
    one PDF."""
    by_document: dict[str, list[str]] = {}
    for ref in refs:
        source = image_files[ref.path]
        document = source.document_id or (str(source.file.resolve()) if source.page is not None else None)
        if document is not None:
            by_document.setdefault(document, []).append(ref.id)
    return [ids for ids in by_document.values() if len(ids) > 1]


def report_duplicates(groups: list[list[DocumentRef]], image_files: dict[Path, PageSource], report: BuildReport) -> None:
    for group in groups:
        first, others = group[0], group[1:]
        images = sorted({str(image_files[ref.path]) for ref in group})
        what = f"the same image file {images[0]}" if len(images) == 1 else f"identical images ({', '.join(images)})"
        report.warn(
            first.path,
            f"describes {what} as {', '.join(str(ref.path) for ref in others)}; the documents are kept in one split "
            "(a page must not be in train and test); remove the copies unless they are meant to be there",
        )


def parse_labels(value: str) -> list[str]:
    """The --labels option: a file (JSON list, or one label per line) or a comma-separated list.

    Either full BIO tags ("O,B-total,I-total", order kept) or entity types ("total,vendor", expanded to
    the canonical list "O", B-/I- per type sorted).
    """
    path = Path(value)
    if path.is_file():
        text = path.read_text(encoding="utf-8")
        try:
            items = json.loads(text)
        except json.JSONDecodeError:
            items = text.splitlines()
        if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
            raise ValueError(f"--labels file {value} must hold a JSON list of strings or one label per line")
    else:
        items = value.split(",")
    items = [item.strip() for item in items if item.strip()]
    if not items:
        raise ValueError("--labels is empty")
    if len(set(items)) != len(items):
        raise ValueError(f"--labels has duplicates: {items}")
    bio = [is_bio_tag(item) for item in items]
    if all(bio):
        if OUTSIDE not in items:
            raise ValueError(f"--labels must include {OUTSIDE!r}: {items}")
        return items
    if any(bio):
        raise ValueError(f"--labels mixes BIO tags and entity types; give one kind: {items}")
    for name in items:
        # A type is what follows B-/I-: "B-B-total" or "I-" are not types.
        if not is_bio_tag(f"B-{name}"):
            raise ValueError(f"--labels: {name!r} is neither a BIO tag nor an entity type (e.g. 'total', 'B-total')")
    return label_list_from_types(items)
