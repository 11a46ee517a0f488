"""`--ocr ENGINE` for the builders: train on the words inference will see.

Every page is read with the OCR engine (and settings) that inference will use, and the gold labels are carried
onto the OCR words (`layoutkit.train.ocr_alignment.transfer_labels`): the model then learns the engine's reading
order, its line boxes (the segment boxes of OCR-built datasets) and its typical errors. The settings go into
preprocessing.json, and from there into the trained checkpoint, so the pipeline reads pages the same way.

A page of a PDF takes the words of its text layer where the layer covers it (`--pdf_text auto`, as predict.py
and the service decide: `layoutkit.pipelines.pdf_text.page_words`), and is read by the engine otherwise; the report counts
the pages of each words source, and the labels are carried onto text-layer words the same way.

OCR results are cached on disk by image content (and PDF page) and engine settings (`--ocr_cache`, default
~/.cache/layoutkit/ocr), so a rebuild with another resize or split does not read the pages again; pages are
read by `--ocr_workers` threads before the dataset is written.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from tqdm.auto import tqdm

from dataset_loader.annotations import PDFIUM_LOCK, AnnotationError, Document
from layoutkit.pipelines.boxes import segment_boxes
from layoutkit.apps.documents import DEFAULT_PDF_DPI
from layoutkit.pipelines.ocr import OcrEngine, OcrError, OcrResult, get_ocr_engine
from layoutkit.train.ocr_alignment import TransferStats, overlapping_pairs, transfer_labels


def default_cache_dir() -> Path:
    return Path(os.environ.get("LAYOUTKIT_CACHE", Path.home() / ".cache" / "layoutkit")) / "ocr"


@dataclass
class OcrBuild:
    """The OCR engine of a build, its cache, and what the label transfer kept."""

    engine: OcrEngine
    cache_dir: Path = field(default_factory=default_cache_dir)
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    stats: TransferStats = field(default_factory=TransferStats)
    # document id -> the gold entities that OCR lost or changed, for the report
    losses: dict[str, list[dict]] = field(default_factory=dict)
    # A PDF page's words: its text layer where it covers the page ("auto"), always ("always") or never ("never").
    pdf_text: str = "auto"
    # words source (pdf_text, pdf_invisible_text, ocr:ENGINE) -> pages, and the text-layer warnings (document id ->
    # message: a garbage text layer read by OCR instead), for the report
    sources: dict[str, int] = field(default_factory=dict)
    pdf_warnings: dict[str, str] = field(default_factory=dict)

    @classmethod
    def create(cls, engine: str, cache_dir: str | Path | None = None, workers: int | None = None,
               pdf_text: str = "auto", **options: Any) -> "OcrBuild":
        build = cls(get_ocr_engine(engine, **options), pdf_text=pdf_text)
        if cache_dir is not None:
            build.cache_dir = Path(cache_dir)
        if workers is not None:
            build.workers = max(1, int(workers))
        return build

    def cache_path(self, image_file: Path, page: int | None = None) -> Path:
        digest = hashlib.sha256(image_file.read_bytes())
        if page is not None:  # a page of a PDF
            digest.update(f"page {page} at {DEFAULT_PDF_DPI} dpi".encode())
        digest.update(json.dumps(self.engine.settings(), sort_keys=True).encode())
        return self.cache_dir / digest.hexdigest()[:2] / f"{digest.hexdigest()}.json"

    def read(self, document: Document, page=None) -> OcrResult:
        """The words of a document's page: a PDF page's text layer where it is used (`pdf_text`), else the OCR
        engine's, from the cache or read now (and cached). `page`: the page image, when already loaded."""
        return self.read_page(document, page)[0]

    def read_page(self, document: Document, page=None) -> tuple[OcrResult, str, str | None]:
        """`read`, with the words source (pdf_text, pdf_invisible_text, ocr:ENGINE) and a text-layer warning."""
        warning = None
        if document.is_pdf:
            from layoutkit.pipelines.pdf_text import OCR_NEEDED, PdfPageError, page_words

            if page is None:
                page = document.load_image()
            try:
                with PDFIUM_LOCK:  # text layer only (engine=None): the OCR below runs outside the lock
                    words = page_words(document.image_file, (document.page or 1) - 1, self.pdf_text, engine=None,
                                       dpi=DEFAULT_PDF_DPI, image=page)
            except PdfPageError as error:
                raise AnnotationError(document.annotation_file, "page", str(error)) from None
            if words.source != OCR_NEEDED:
                return words.result, words.source, words.warning
            warning = words.warning
        return self._ocr(document, page), f"ocr:{self.engine.name}", warning

    def _ocr(self, document: Document, page=None) -> OcrResult:
        path = self.cache_path(document.image_file, document.page if document.is_pdf else None)
        if path.is_file():
            return OcrResult.from_dict(json.loads(path.read_text(encoding="utf-8")))
        result = self.engine(page if page is not None else document.load_image())
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(f".{os.getpid()}.partial")
        temporary.write_text(json.dumps(result.to_dict()), encoding="utf-8")
        temporary.replace(path)  # atomic: a killed build never leaves half a cache entry
        return result

    def read_all(self, paths: Sequence[Path], reader: Callable[[Path], Document]) -> None:
        """Read every page ahead of writing, `workers` at a time (Tesseract runs as a subprocess per page)."""

        def read_one(path: Path) -> None:
            try:
                self.read(reader(path))
            except (AnnotationError, OcrError):
                pass  # reported by the writer, which reads the document again and meets the same problem

        with ThreadPoolExecutor(self.workers) as pool:
            for _ in tqdm(pool.map(read_one, paths), total=len(paths), desc=f"OCR ({self.engine.name})", unit="page",
                          disable=None):
                pass

    def apply(self, document: Document, page) -> Document:
        """The document with OCR words, their line boxes as segment boxes, and the gold labels carried over."""
        try:
            result, source, warning = self.read_page(document, page)
        except OcrError as error:
            raise AnnotationError(document.annotation_file, "image", f"OCR failed: {error}") from None
        self.sources[source] = self.sources.get(source, 0) + 1
        if warning:
            self.pdf_warnings[document.id] = warning
        labels, stats = transfer_labels(document.words, document.boxes, document.labels, result.words, result.boxes)
        self.stats.add(stats)
        if stats.lost_entities:
            self.losses[document.id] = stats.lost_entities
        structure = {name: transfer_word_ids(document.boxes, getattr(document, name), result.boxes)
                     for name in ("entity_ids", "row_ids")}
        relations = document.relations
        if relations is not None:  # links whose entity OCR lost entirely are gone with it
            remaining = set(structure["entity_ids"] or [])
            relations = [pair for pair in relations if pair[0] in remaining and pair[1] in remaining]
        return replace(
            document, words=result.words, boxes=[list(map(float, box)) for box in result.boxes], labels=labels,
            segment_boxes=segment_boxes(result.boxes, result.line_ids), dropped_words=0, relations=relations,
            **structure,
        )

    def report(self) -> dict[str, Any]:
        """The build report's `ocr` section."""
        table = self.stats.to_dict()
        total = sum(row["entities"] for row in table.values())
        exact = sum(row["exact"] for row in table.values())
        return {
            "settings": self.engine.settings(),
            # PDF pages: their text layer where it covers them (pdf_text), the engine otherwise; images: the engine
            "pdf_text": self.pdf_text,
            "pages_by_words_source": dict(sorted(self.sources.items())),
            "pdf_text_warnings": self.pdf_warnings,
            "entities_exact": f"{exact}/{total}",
            "entities_by_label": table,
            "documents_with_changed_entities": len(self.losses),
            "changed_entities_by_document": self.losses,
        }


def transfer_word_ids(gold_boxes, gold_ids, ocr_boxes) -> list[int | None] | None:
    """Per-word ids (entity or row) carried onto OCR words: each OCR word takes the id of the gold word its box
    overlaps most (None when it overlaps no gold word that has an id)."""
    if gold_ids is None:
        return None
    best: dict[int, tuple[float, int]] = {}
    for ocr_index, gold_index, value in overlapping_pairs(ocr_boxes, gold_boxes):
        if gold_ids[gold_index] is not None and value > best.get(ocr_index, (0.0, -1))[0]:
            best[ocr_index] = (value, gold_ids[gold_index])
    return [best[i][1] if i in best else None for i in range(len(ocr_boxes))]
