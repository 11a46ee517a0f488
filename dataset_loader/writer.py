"""The two passes shared by every source format.

Pass 1 (`scan_documents`) reads and checks each annotation and keeps only its id and path, so memory does
not grow with the words or pixels of the folder. Pass 2 (`write_dataset`) reads each document again,
decodes its image, resizes page and boxes together and streams the examples to disk with
`Dataset.from_generator`, one split at a time (`save_splits`, which the classification builder uses too).
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import datasets
from datasets import Dataset, DatasetDict, load_from_disk
from datasets.exceptions import DatasetGenerationError
from PIL import Image
from tqdm.auto import tqdm

from dataset_loader.annotations import AnnotationError, Document
from dataset_loader.features import encoded_page, ner_features, optional_columns_of
from dataset_loader.ocr_build import OcrBuild
from dataset_loader.preprocessing import save_preprocessing
from dataset_loader.report import BuildReport
from layoutkit.pipelines.boxes import group_lines, resize_document, segment_boxes

# Reads one annotation file into a checked Document, raising AnnotationError.
Reader = Callable[[Path], Document]


class BuildError(RuntimeError):
    """A problem with the whole build (missing folder, no usable document, output in the way)."""


@dataclass(frozen=True)
class DocumentRef:
    """What pass 1 keeps of a valid document: no words, no pixels."""

    id: str
    path: Path


def check_output(output: Path, overwrite: bool) -> None:
    """Fail before any work if the output folder holds something we would clobber."""
    if not output.exists() or not any(output.iterdir()):
        return
    if not overwrite:
        raise BuildError(f"output folder {output} is not empty; choose a new folder or pass --overwrite")
    if not (output / "dataset_dict.json").is_file():
        raise BuildError(f"output folder {output} is not a dataset built by dataset_loader; refusing to delete it")


def start_build(
    source: Path,
    source_format: str,
    output: Path,
    *,
    size: tuple[int, int],
    keep_aspect: bool,
    seed: int,
    strict: bool,
    overwrite: bool,
    pad: bool = True,
    report_type: type[BuildReport] = BuildReport,
    **report_fields: Any,
) -> BuildReport:
    """The prologue of every build: refuse an output folder in the way, then open the report.

    Every source format records the same settings in build_report.json, so they are filled in here once;
    `report_type` and `report_fields` let a format report more (classify: ClassifyReport, ocr=...).
    """
    check_output(output, overwrite)
    return report_type(
        source=str(source), source_format=source_format, strict=strict, resize=list(size), keep_aspect=keep_aspect,
        pad=pad, seed=seed, **report_fields,
    )


def abort_with_report(output: Path, report: BuildReport, problem: str) -> BuildError:
    """Write the report alone to `output` (why nothing was built) and return the error to raise."""
    _clear(output)
    output.mkdir(parents=True, exist_ok=True)
    path = report.write(output)
    return BuildError(f"{problem}; see {path}")


def _clear(output: Path) -> None:
    """Remove what check_output allowed us to replace: an empty folder or a previous build (--overwrite)."""
    if output.exists():
        shutil.rmtree(output)


def scan_documents(
    paths: Sequence[Path], reader: Reader, report: BuildReport, strict: bool
) -> tuple[list[DocumentRef], set[str]]:
    """Pass 1: check every document; return the valid ones and the set of tags they use."""
    kept: list[DocumentRef] = []
    tags: set[str] = set()
    for path in tqdm(paths, desc="Checking annotations", unit="doc", disable=None):
        report.documents_found += 1
        try:
            document = reader(path)
        except AnnotationError as error:
            if strict:
                raise
            report.skip(error)
            continue
        for name in document.unknown_fields:
            report.warn(path, f"unknown field {name!r} ignored (known fields: see FORMAT.md)")
        tags.update(document.labels)
        # Columns such as entity_ids/relations exist in the dataset as soon as one document annotates them.
        report.optional_columns = sorted(set(report.optional_columns) | set(optional_columns_of(document)))
        kept.append(DocumentRef(document.id, path))
    return kept, tags


def write_dataset(
    splits: dict[str, list[DocumentRef]],
    reader: Reader,
    label_names: Sequence[str],
    output: Path,
    size: tuple[int, int],
    keep_aspect: bool,
    report: BuildReport,
    strict: bool,
    ocr: OcrBuild | None = None,
) -> DatasetDict:
    """Pass 2 for annotated documents: stream every split's examples to `output` (see `save_splits`).

    With `ocr`, every page is read by the OCR engine first and the examples carry the OCR words with the gold
    labels transferred onto them (`dataset_loader.ocr_build`)."""
    features = ner_features(label_names, report.optional_columns)
    report.labels = list(label_names)
    if ocr is not None:
        report.ocr_build = ocr
        ocr.read_all([ref.path for refs in splits.values() for ref in refs], reader)
    split_kwargs = {
        # Tuples, not lists: datasets would shard a list and call the generator once per item.
        name: dict(refs=tuple(refs), reader=reader, label_names=tuple(label_names), size=size,
                   keep_aspect=keep_aspect, pad=report.pad, report=report, strict=strict, ocr=ocr,
                   optional_columns=tuple(report.optional_columns))
        for name, refs in splits.items()
    }
    return save_splits(output, features, _generate_examples, split_kwargs, size, keep_aspect, report)


def save_splits(
    output: Path,
    features: datasets.Features,
    generate: Callable[..., Iterator[dict[str, Any]]],
    split_kwargs: dict[str, dict[str, Any]],
    size: tuple[int, int],
    keep_aspect: bool,
    report: BuildReport,
) -> DatasetDict:
    """Stream each split's `generate(split=..., written=..., **kwargs)` examples to a cache, save the
    DatasetDict to `output` (save_to_disk), then write preprocessing.json and the report.

    Every builder ends here, so they share one behaviour: a split with no document is left out, a build
    whose train split is empty is refused with the report written, and a build error raised inside the
    generator comes out unchanged.
    """
    output.parent.mkdir(parents=True, exist_ok=True)
    # A private cache beside the output: from_generator would otherwise reuse stale shared-cache results,
    # and the arrow files land on the same disk as the dataset.
    with tempfile.TemporaryDirectory(prefix=".dataset_loader-", dir=output.parent) as cache_dir:
        parts = {}
        for name, gen_kwargs in split_kwargs.items():
            part = _write_split(name, features, generate, gen_kwargs, cache_dir)
            report.splits[name] = len(part) if part is not None else 0
            if part is not None:  # a split with no documents is left out (datasets cannot store it)
                parts[name] = part
        if "train" not in parts:
            raise abort_with_report(output, report, "no document could be written to the train split")
        _clear(output)
        DatasetDict(parts).save_to_disk(str(output))
    save_preprocessing(output, size, keep_aspect, report.pad,
                       ocr=report.ocr_build.engine.settings() if report.ocr_build else None)
    report.write(output)
    return load_from_disk(str(output))


def _write_split(
    name: str,
    features: datasets.Features,
    generate: Callable[..., Iterator[dict[str, Any]]],
    gen_kwargs: dict[str, Any],
    cache_dir: str,
) -> Dataset | None:
    """Stream one split to the cache; None when it ends up with no document."""
    if not gen_kwargs["refs"]:
        return None
    written = {"count": 0}
    try:
        with _quiet_datasets():
            return Dataset.from_generator(
                generate,
                features=features,
                cache_dir=cache_dir,
                split=datasets.NamedSplit(name),
                gen_kwargs={"split": name, "written": written, **gen_kwargs},
            )
    except DatasetGenerationError as error:
        # datasets wraps errors raised inside the generator; surface ours unchanged (strict mode, OCR).
        if isinstance(error.__cause__, (AnnotationError, BuildError)):
            raise error.__cause__ from None
        raise
    except ValueError:
        if written["count"]:  # datasets refuses a generator that yields nothing; anything else is real
            raise
        return None


def _generate_examples(
    split: str,
    refs: tuple[DocumentRef, ...],
    reader: Reader,
    label_names: tuple[str, ...],
    size: tuple[int, int],
    keep_aspect: bool,
    report: BuildReport,
    strict: bool,
    written: dict[str, int],
    pad: bool = True,
    ocr: OcrBuild | None = None,
    optional_columns: tuple[str, ...] = (),
) -> Iterator[dict[str, Any]]:
    label_ids = {label: index for index, label in enumerate(label_names)}
    for ref in tqdm(refs, desc=f"Writing {split}", unit="doc", disable=None):
        try:
            document = reader(ref.path)
            image = document.load_image()  # corrupt pixel data is only found here
            if ocr is not None:
                document = ocr.apply(document, image)
        except AnnotationError as error:
            if strict:
                raise
            report.skip(error)
            continue
        if document.dropped_words:
            report.dropped_words[document.id] = document.dropped_words
        if document.dropped_relations:
            report.dropped_relations[document.id] = document.dropped_relations
        if not document.words:
            report.empty_document_ids.append(document.id)  # kept: a page with no text is still a page
        written["count"] += 1
        yield to_example(document, image, size, keep_aspect, label_ids, pad, optional_columns)


def to_example(
    document: Document, image: Image.Image, size: tuple[int, int], keep_aspect: bool, label_ids: dict[str, int],
    pad: bool = True, optional_columns: Sequence[str] = (),
) -> dict[str, Any]:
    """One dataset row: page and both box lists resized together through layoutkit's single resize path."""
    segments = document.segment_boxes
    if segments is None:
        # No segments in the annotation: use lines, as inference does when the OCR gives none.
        segments = segment_boxes(document.boxes, group_lines(document.boxes))
    resized, (word_boxes, segment_bboxes) = resize_document(image, [document.boxes, segments], size, keep_aspect, pad)
    example = {
        "id": document.id,
        "words": document.words,
        "bboxes": word_boxes,
        "segment_bboxes": segment_bboxes,
        "ner_tags": [label_ids[label] for label in document.labels],
        "image": encoded_page(resized),
    }
    for name in ("entity_ids", "row_ids"):
        if name in optional_columns:  # a document without them, in a dataset whose others have them: all -1
            values = getattr(document, name) or [None] * len(document.words)
            example[name] = [-1 if value is None else int(value) for value in values]
    if "relations" in optional_columns:
        example["relations"] = [list(map(int, pair)) for pair in document.relations or []]
    return example


@contextlib.contextmanager
def _quiet_datasets() -> Iterator[None]:
    """Hide datasets' own "Generating split" bar; ours counts documents with a known total."""
    was_disabled = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            datasets.enable_progress_bars()
