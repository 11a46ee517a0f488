"""`preprocessing.json`: the resize settings a dataset was built with, so inference can repeat them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

PREPROCESSING_FILE = "preprocessing.json"
DEFAULT_SIZE = (1000, 700)  # (width, height) every page is resized to, unless --resize says otherwise


def save_preprocessing(dataset_path: str | Path, size: tuple[int, int], keep_aspect: bool) -> Path:
    path = Path(dataset_path) / PREPROCESSING_FILE
    path.write_text(json.dumps({"resize": list(size), "keep_aspect": keep_aspect}, indent=2) + "\n", encoding="utf-8")
    return path


def load_preprocessing(dataset_path: str | Path) -> dict[str, Any] | None:
    """`{"resize": [width, height], "keep_aspect": bool}` of a dataset saved by this package, or None when the
    file is absent (a Hub repo id, a dataset built elsewhere)."""
    path = Path(dataset_path) / PREPROCESSING_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError:  # missing file, or not a local folder at all
        return None
    width, height = data["resize"]
    return {"resize": [int(width), int(height)], "keep_aspect": bool(data.get("keep_aspect", False))}
