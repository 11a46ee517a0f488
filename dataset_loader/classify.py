"""Build a document-classification DatasetDict from an `imagefolder`-style folder: one subfolder per class.

    DIR/invoice/a.png          DIR/letter/c.jpg
    DIR/invoice/a.json         (optional: {"words": [...], "boxes": [[x0, y0, x1, y1], ...]} in a.png's pixels)

Columns: `id` ("<class>/<file stem>"), `image` (the page, resized with layoutkit's single resize path),
`label` (ClassLabel, class names sorted), `words` and `bboxes` (pixels of the resized page). Words come from
the JSON beside the image when there is one, otherwise from OCR with `ocr=True` (the default engine, as the
classification pipeline uses at inference; run once, here, and
stored, so training never runs OCR); otherwise the document has no words (reported as a warning).

The split is stratified: each class's documents are shuffled with the seed and cut by the ratios, so
every split keeps the class proportions. Problems follow the annotation loader's rules: an unreadable image
or a broken JSON is skipped and listed in build_report.json (lenient) or stops the build (`strict`); empty
class folders are reported; fewer than two classes with images is an error ("nothing to learn").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

from datasets import ClassLabel, DatasetDict, Features, Image as ImageFeature, Sequence as DatasetSequence, Value
from PIL import Image
from tqdm.auto import tqdm

from dataset_loader.annotations import AnnotationError, image_size, read_json
from dataset_loader.features import encoded_page
from dataset_loader.preprocessing import DEFAULT_KEEP_ASPECT, DEFAULT_PAD, DEFAULT_SIZE
from dataset_loader.report import BuildReport
from dataset_loader.splits import DEFAULT_RATIOS, assign_splits
from dataset_loader.writer import BuildError, abort_with_report, save_splits, start_build
from layoutkit.pipelines.boxes import load_page, resize_document

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp"}


def classification_features(class_names: Sequence[str]) -> Features:
    return Features({
        "id": Value("string"),
        "image": ImageFeature(),
        "label": ClassLabel(names=list(class_names)),
        "words": DatasetSequence(Value("string")),
        "bboxes": DatasetSequence(DatasetSequence(Value("int32"), length=4)),
    })


@dataclass(frozen=True)
class PageRef:
    id: str
    label: str
    image: Path
    words_file: Path | None


@dataclass
class ClassifyReport(BuildReport):
    """build_report.json of a classification build: the NER report plus per-class counts and OCR use."""

    class_counts: dict[str, int] | None = None
    empty_classes: list[str] | None = None
    ocr: bool = False
    ocr_documents: int = 0
    documents_without_words: list[str] | None = None

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        data.update(
            class_counts=self.class_counts or {},
            empty_classes=self.empty_classes or [],
            ocr=self.ocr,
            ocr_documents=self.ocr_documents,
            documents_without_words=self.documents_without_words or [],
        )
        return data


def read_words(path: Path, width: int, height: int) -> tuple[list[str], list[list[float]]]:
    """Words and pixel boxes of a `<stem>.json` beside an image; AnnotationError when malformed."""
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("words"), list) or not isinstance(data.get("boxes"), list):
        raise AnnotationError(path, None, 'expected {"words": [...], "boxes": [[x0, y0, x1, y1], ...]}')
    words, boxes = data["words"], data["boxes"]
    if len(words) != len(boxes):
        raise AnnotationError(path, "boxes", f"{len(words)} words but {len(boxes)} boxes; give one box per word")
    kept_words, kept_boxes = [], []
    for index, (word, box) in enumerate(zip(words, boxes)):
        if not isinstance(word, str):
            raise AnnotationError(path, f"words[{index}]", f"must be a string, got {word!r}")
        if not isinstance(box, list) or len(box) != 4 or not all(isinstance(v, (int, float)) for v in box):
            raise AnnotationError(path, f"boxes[{index}]", f"must be [x0, y0, x1, y1] in pixels, got {box!r}")
        x0, y0, x1, y1 = (float(v) for v in box)
        if x1 < x0 or y1 < y0:
            raise AnnotationError(path, f"boxes[{index}]", f"x1 < x0 or y1 < y0 in {box!r}")
        if not word.strip():
            continue  # blank words carry nothing
        kept_words.append(word.strip())
        kept_boxes.append([min(max(x0, 0), width), min(max(y0, 0), height), min(max(x1, 0), width),
                           min(max(y1, 0), height)])
    return kept_words, kept_boxes


def scan_class_folders(data_dir: Path, report: ClassifyReport, strict: bool) -> list[PageRef]:
    """Pass 1: every image of every class folder, checked (decodable, JSON well-formed)."""
    classes = sorted(p for p in data_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise BuildError(f"{data_dir} has no class subfolders; expected DIR/<class>/<image> (imagefolder layout)")
    refs: list[PageRef] = []
    counts: dict[str, int] = {}
    empty: list[str] = []
    for folder in classes:
        images = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        kept = 0
        for image in tqdm(images, desc=f"Checking {folder.name}", unit="doc", leave=False, disable=None):
            report.documents_found += 1
            words_file = image.with_suffix(".json")
            try:
                width, height = image_size(image, image)
                if words_file.is_file():
                    read_words(words_file, width, height)
            except AnnotationError as error:
                if strict:
                    raise
                report.skip(error)
                continue
            refs.append(PageRef(f"{folder.name}/{image.stem}", folder.name, image,
                                words_file if words_file.is_file() else None))
            kept += 1
        if kept:
            counts[folder.name] = kept
        else:
            empty.append(folder.name)
            report.warn(folder, "class folder has no readable image; the class is left out")
    report.class_counts, report.empty_classes = counts, empty
    return refs


def build_classification_dataset(
    data_dir: str | Path,
    output: str | Path,
    *,
    size: tuple[int, int] = DEFAULT_SIZE,
    keep_aspect: bool = DEFAULT_KEEP_ASPECT,
    pad: bool = DEFAULT_PAD,
    seed: int = 42,
    ratios: Sequence[float] = DEFAULT_RATIOS,
    ocr: bool = False,
    ocr_lang: str = "eng",
    strict: bool = False,
    overwrite: bool = False,
) -> DatasetDict:
    """Check, split (stratified by class), resize, OCR if asked, and save to `output`; returns the DatasetDict."""
    data_dir, output = Path(data_dir), Path(output)
    if not data_dir.is_dir():
        raise BuildError(f"{data_dir} is not a folder; expected DIR/<class>/<image> (imagefolder layout)")
    report = start_build(data_dir, "imagefolder", output, size=size, keep_aspect=keep_aspect, seed=seed, strict=strict,
                         overwrite=overwrite, pad=pad, report_type=ClassifyReport, ocr=ocr)
    refs = scan_class_folders(data_dir, report, strict)
    class_names = sorted(report.class_counts)
    if len(class_names) < 2:
        where = f"{data_dir / class_names[0]}" if class_names else str(data_dir)
        raise abort_with_report(
            output, report,
            f"nothing to learn: only {len(class_names)} class with images ({where}); a classifier needs at least "
            "two class folders with images",
        )
    report.labels = class_names

    by_id = {ref.id: ref for ref in refs}
    splits: dict[str, list[PageRef]] = {"train": [], "validation": [], "test": []}
    for name in class_names:  # stratified: every class is cut by the ratios on its own
        ids = [ref.id for ref in refs if ref.label == name]
        for split, chosen in assign_splits(ids, ratios, seed).items():
            splits[split].extend(by_id[i] for i in chosen)

    without_words: list[str] = []
    report.documents_without_words = without_words  # filled as the pages are written
    split_kwargs = {
        # Tuples, not lists: datasets would shard a list and call the generator once per item.
        split: dict(refs=tuple(sorted(split_refs, key=lambda ref: ref.id)), class_names=tuple(class_names),
                    size=size, keep_aspect=keep_aspect, ocr=ocr, ocr_lang=ocr_lang, report=report, strict=strict,
                    without_words=without_words)
        for split, split_refs in splits.items()
    }
    return save_splits(output, classification_features(class_names), _generate, split_kwargs, size, keep_aspect,
                       report)


def _generate(split, refs, class_names, size, keep_aspect, ocr, ocr_lang, report, strict, written, without_words
              ) -> Iterator[dict[str, Any]]:
    label_ids = {name: i for i, name in enumerate(class_names)}
    for ref in tqdm(refs, desc=f"Writing {split}", unit="doc", disable=None):
        try:
            example = page_example(ref, label_ids, size, keep_aspect, ocr, ocr_lang, report)
        except AnnotationError as error:
            if strict:
                raise
            report.skip(error)
            continue
        if not example["words"]:
            without_words.append(ref.id)
            if ref.words_file is None and not ocr:
                report.warn(ref.image, "no words: no JSON beside the image and no --ocr")
        written["count"] += 1
        yield example


def page_example(ref: PageRef, label_ids: dict[str, int], size, keep_aspect: bool, ocr: bool, ocr_lang: str,
                 report: ClassifyReport) -> dict[str, Any]:
    """One row: the upright page with its words (JSON or OCR on the original page), resized together."""
    try:
        with Image.open(ref.image) as image:
            page = load_page(image)
    except Exception as error:
        raise AnnotationError(ref.image, "image", f"image could not be decoded ({error}); re-export or replace it") from None
    words: list[str] = []
    boxes: list[list[float]] = []
    if ref.words_file is not None:
        words, boxes = read_words(ref.words_file, page.width, page.height)
    elif ocr:
        from layoutkit.pipelines.ocr import OcrError, ocr_page

        try:
            result = ocr_page(page, lang=ocr_lang)
        except OcrError as error:
            raise BuildError(f"--ocr: {error}") from None
        words, boxes = result.words, result.boxes
        report.ocr_documents += 1
    resized, (scaled,) = resize_document(page, [boxes], size, keep_aspect, report.pad)
    return {
        "id": ref.id, "image": encoded_page(resized), "label": label_ids[ref.label], "words": words, "bboxes": scaled
    }
