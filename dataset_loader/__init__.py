"""dataset_loader: build LayoutLM-ready Hugging Face datasets from annotated document images.

Run `python -m dataset_loader --help`. Training and inference code import from here:

- `ner_features(label_names)`: the datasets.Features of every split;
- `load_preprocessing(dataset_path)`: the resize settings a dataset was built with (or None);
- `AnnotationError`: raised for an invalid document (file, field, message);
- `build_dataset`, `import_funsd`, `import_labelstudio`, `push_dataset`: the commands as functions.

Heavy modules (datasets, huggingface_hub) load on first use, so `import dataset_loader` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

from dataset_loader.annotations import AnnotationError, Document, read_annotation
from dataset_loader.preprocessing import DEFAULT_SIZE, load_preprocessing

_LAZY = {
    "ner_features": "dataset_loader.features",
    "label_names_of": "dataset_loader.features",
    "SPLITS": "dataset_loader.features",
    "BuildError": "dataset_loader.writer",
    "build_dataset": "dataset_loader.build",
    "parse_labels": "dataset_loader.build",
    "import_funsd": "dataset_loader.funsd",
    "FUNSD_LABELS": "dataset_loader.funsd",
    "import_labelstudio": "dataset_loader.labelstudio",
    "make_dataset_card": "dataset_loader.card",
    "push_dataset": "dataset_loader.card",
    "generate": "dataset_loader.synth",
    "ENTITY_TYPES": "dataset_loader.synth",
}

__all__ = ["AnnotationError", "Document", "read_annotation", "DEFAULT_SIZE", "load_preprocessing", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dataset_loader' has no attribute {name!r}")
