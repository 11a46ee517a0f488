"""`build_report.json`: every skipped document and why, split counts, empty documents, dropped words.

Nothing is removed from a dataset without landing here.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from dataset_loader.annotations import AnnotationError

REPORT_FILE = "build_report.json"


@dataclass
class BuildReport:
    source: str
    source_format: str  # "folder" (the user format) or "funsd"
    strict: bool
    resize: list[int]
    keep_aspect: bool
    seed: int
    pad: bool = True
    documents_found: int = 0
    skipped: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[dict[str, Any]] = field(default_factory=list)
    splits: dict[str, int] = field(default_factory=dict)
    empty_document_ids: list[str] = field(default_factory=list)
    dropped_words: dict[str, int] = field(default_factory=dict)  # document id -> blank words removed
    labels: list[str] = field(default_factory=list)
    # Optional columns some document annotates (entity_ids, relations, row_ids): the dataset gets them.
    optional_columns: list[str] = field(default_factory=list)
    dropped_relations: dict[str, int] = field(default_factory=dict)  # document id -> links to all-blank entities
    ocr_build: Any = None  # the OcrBuild of an --ocr build: its settings and what the label transfer kept

    def skip(self, error: AnnotationError) -> None:
        self.skipped.append(error.to_dict())
        tqdm.write(f"skipped {error}", file=sys.stderr)

    def warn(self, file: str | Path, message: str) -> None:
        self.warnings.append({"file": str(file), "message": message})
        tqdm.write(f"warning: {file}: {message}", file=sys.stderr)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "source_format": self.source_format,
            "strict": self.strict,
            "resize": self.resize,
            "keep_aspect": self.keep_aspect,
            "pad": self.pad,
            "seed": self.seed,
            "documents_found": self.documents_found,
            "documents_kept": sum(self.splits.values()),
            "documents_skipped": len(self.skipped),
            "skipped": self.skipped,
            "splits": self.splits,
            "empty_documents": len(self.empty_document_ids),
            "empty_document_ids": self.empty_document_ids,
            "dropped_blank_words": sum(self.dropped_words.values()),
            "dropped_blank_words_by_document": self.dropped_words,
            "labels": self.labels,
            **({"optional_columns": self.optional_columns} if self.optional_columns else {}),
            **({"dropped_relations_by_document": self.dropped_relations} if self.dropped_relations else {}),
            "warnings": self.warnings,
            **({"ocr": self.ocr_build.report()} if self.ocr_build is not None else {}),
        }

    def write(self, output: str | Path) -> Path:
        path = Path(output) / REPORT_FILE
        path.write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return path

    def summary(self) -> str:
        splits = ", ".join(f"{name} {count}" for name, count in self.splits.items())
        return (
            f"{sum(self.splits.values())} of {self.documents_found} documents kept ({splits}); "
            f"{len(self.skipped)} skipped, {len(self.empty_document_ids)} empty, "
            f"{sum(self.dropped_words.values())} blank words dropped"
        )


def read_report(dataset_path: str | Path) -> dict[str, Any] | None:
    try:
        return json.loads((Path(dataset_path) / REPORT_FILE).read_text(encoding="utf-8"))
    except OSError:
        return None
