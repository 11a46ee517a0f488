"""`preprocessing.json`: the resize settings a dataset was built with, so inference can repeat them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

PREPROCESSING_FILE = "preprocessing.json"
# Every page is scaled to fit inside (width, height), keeping its aspect ratio and orientation (--resize_mode fit):
# the longest side becomes 1000 px. LayoutLMv2/v3 image processors then resize to 224x224 themselves, as in
# pretraining; the stored page stays undistorted (for viewing, augmentation's rotations and drawing).
DEFAULT_SIZE = (1000, 1000)
DEFAULT_KEEP_ASPECT, DEFAULT_PAD = True, False


def save_preprocessing(dataset_path: str | Path, size: tuple[int, int], keep_aspect: bool, pad: bool = True,
                       ocr: dict[str, Any] | None = None) -> Path:
    """`ocr`: the OCR engine settings of a dataset built on OCR words (inference then reads pages the same way)."""
    settings: dict[str, Any] = {"resize": list(size), "keep_aspect": keep_aspect, "pad": pad}
    if ocr is not None:
        settings["ocr"] = ocr
    path = Path(dataset_path) / PREPROCESSING_FILE
    path.write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
    return path


def load_preprocessing(dataset_path: str | Path) -> dict[str, Any] | None:
    """`{"resize": [width, height], "keep_aspect": bool, "pad": bool}` (plus `"ocr"`: engine settings, when built
    with --ocr) of a dataset saved by this package, or None when the
    file is absent (a Hub repo id, a dataset built elsewhere)."""
    path = Path(dataset_path) / PREPROCESSING_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError:  # missing file, or not a local folder at all
        return None
    width, height = data["resize"]
    settings = {"resize": [int(width), int(height)], "keep_aspect": bool(data.get("keep_aspect", False)),
                "pad": bool(data.get("pad", True))}
    if data.get("ocr"):
        settings["ocr"] = data["ocr"]
    return settings
