"""`--ocr ENGINE` for the builders: train on the words inference will see.

Every page is read with the OCR engine (and settings) that inference will use, and the gold labels are carried
onto the OCR words (`layoutkit.ocr_alignment.transfer_labels`): the model then learns the engine's reading
order, its line boxes (the segment boxes of OCR-built datasets) and its typical errors. The settings go into
preprocessing.json, and from there into the trained checkpoint, so the pipeline reads pages the same way.

OCR results are cached on disk by image content and engine settings (`--ocr-cache`, default
~/.cache/layoutkit/ocr), so a rebuild with another resize or split does not read the pages again; pages are
read by `--ocr-workers` threads before the dataset is written.
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

from dataset_loader.annotations import AnnotationError, Document
from layoutkit.boxes import segment_boxes
from layoutkit.ocr import OcrEngine, OcrError, OcrResult, get_ocr_engine
from layoutkit.ocr_alignment import TransferStats, overlapping_pairs, transfer_labels


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

    @classmethod
    def create(cls, engine: str, cache_dir: str | Path | None = None, workers: int | None = None,
               **options: Any) -> "OcrBuild":
        build = cls(get_ocr_engine(engine, **options))
        if cache_dir is not None:
            build.cache_dir = Path(cache_dir)
        if workers is not None:
            build.workers = max(1, int(workers))
        return build

    def cache_path(self, image_file: Path) -> Path:
        digest = hashlib.sha256(image_file.read_bytes())
        digest.update(json.dumps(self.engine.settings(), sort_keys=True).encode())
        return self.cache_dir / digest.hexdigest()[:2] / f"{digest.hexdigest()}.json"

    def read(self, document: Document, page=None) -> OcrResult:
        """The OCR words of a document's page, from the cache or read now (and cached)."""
        path = self.cache_path(document.image_file)
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
            result = self.read(document, page)
        except OcrError as error:
            raise AnnotationError(document.annotation_file, "image", f"OCR failed: {error}") from None
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
