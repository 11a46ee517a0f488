"""Ship the custom pipelines inside a saved checkpoint, so that

    pipeline("token-classification", model=DIR_OR_HUB_ID, trust_remote_code=True)

runs exactly the library's preprocessing and inference without installing layoutkit.

`attach_pipeline(output_dir, task)` does what `PIPELINE_REGISTRY.register_pipeline(...)` followed by
`pipe.save_pretrained(output_dir)` would: it copies the pipeline module and every module it imports
relatively (found with transformers' own `get_relative_import_files`, the function its loader uses) into
the folder, and records the task in `config.json` under `custom_pipelines`:

    {"token-classification": {"impl": "token_classification_pipeline.LayoutTokenClassificationPipeline",
                              "pt": ["AutoModelForTokenClassification"], "type": "multimodal"}}

Adding a task (for example "image-classification" for document classification) is one `PIPELINES` entry.

It also writes what a Hugging Face Inference Endpoint needs to serve the pushed checkpoint without code
(`attach_endpoint_handler`): `handler.py` (from `endpoint_handler.py`, which loads the pipeline above) and the
`requirements.txt` the endpoint installs on top of its torch + transformers image.

`attach_onnx_export(export_dir, task)` does the same for a folder written by `layoutkit.apps.export_onnx` (fp32 or
int8), adding `onnx_model.py` (the ONNX Runtime model behind the pipeline's call signature): the same `handler.py`
then serves the ONNX graph instead of PyTorch weights.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from transformers.dynamic_module_utils import get_imports, get_relative_import_files

PACKAGE_DIR = Path(__file__).resolve().parent
# Top-level packages a shipped module may import: what every environment that runs the model has.
ALLOWED_IMPORTS = {"numpy", "torch", "transformers", "PIL"}


@dataclass(frozen=True)
class PipelineSpec:
    module: str  # file name in layoutkit/ without .py
    class_name: str
    pt: tuple[str, ...]  # transformers Auto classes that load the model
    type: str = "multimodal"


PIPELINES = {
    "token-classification": PipelineSpec(
        "token_classification_pipeline", "LayoutTokenClassificationPipeline", ("AutoModelForTokenClassification",)
    ),
    "image-classification": PipelineSpec(
        "document_classification_pipeline", "LayoutDocumentClassificationPipeline",
        ("AutoModelForSequenceClassification",),
    ),
    # The model itself is custom code (relation_model.py), saved beside its weights by save_pretrained (auto_map).
    "relation-extraction": PipelineSpec(
        "relation_extraction_pipeline", "LayoutRelationExtractionPipeline", ("AutoModel",)
    ),
}


# handler.py of Inference Endpoints; it imports no sibling module (it loads the pipeline through transformers).
ENDPOINT_HANDLER = PACKAGE_DIR / "endpoint_handler.py"
# The ONNX Runtime model of an export folder, shipped there beside the pipeline files (not in PyTorch checkpoints).
ONNX_MODEL = PACKAGE_DIR / "onnx_model.py"
# What the endpoint installs on top of its image: the transformers major version the pipeline is written for, the
# default OCR engine (RapidOCR, its models inside the wheel, on onnxruntime, which also runs an ONNX export's
# model) and PDF rendering.
ENDPOINT_REQUIREMENTS = ("transformers>=5.0,<6", "rapidocr>=3.4,<4", "onnxruntime>=1.20", "pypdfium2>=4.30")


def pipeline_files(task: str) -> list[Path]:
    """The pipeline module of `task` and the modules it imports relatively, recursively."""
    if task not in PIPELINES:
        raise KeyError(f"no custom pipeline for task {task!r}; known: {', '.join(sorted(PIPELINES))}")
    main = PACKAGE_DIR / f"{PIPELINES[task].module}.py"
    return [main] + sorted(Path(f) for f in set(get_relative_import_files(str(main))))


def onnx_model_files() -> list[Path]:
    """onnx_model.py and the modules it imports relatively, recursively."""
    return [ONNX_MODEL] + sorted(Path(f) for f in set(get_relative_import_files(str(ONNX_MODEL))))


def third_party_imports(task: str, onnx: bool = False) -> set[str]:
    """Top-level packages (outside the standard library) the shipped files (with `onnx`, those of an ONNX export)
    import outside `try` blocks: what transformers' `check_imports` will require on the machine that loads them."""
    import sys

    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    files = [*pipeline_files(task), ENDPOINT_HANDLER, *(onnx_model_files() if onnx else [])]
    return {name for path in files for name in get_imports(str(path))} - stdlib


def check_shippable(task: str, onnx: bool = False) -> None:
    """RuntimeError when the files shipped for `task` (with `onnx`, in an ONNX export) require a package beyond
    ALLOWED_IMPORTS."""
    extra = third_party_imports(task, onnx) - ALLOWED_IMPORTS
    if extra:
        raise RuntimeError(
            f"the {task} pipeline files import {sorted(extra)}, which checkpoints cannot require; import them "
            "lazily inside a try block"
        )


def custom_pipeline_entry(task: str) -> dict:
    spec = PIPELINES[task]
    return {"impl": f"{spec.module}.{spec.class_name}", "pt": list(spec.pt), "type": spec.type}


def attach_pipeline(output_dir: str | os.PathLike, task: str = "token-classification") -> list[str]:
    """Copy `task`'s pipeline code into `output_dir` (a saved model folder with config.json) and register
    it in config.json's `custom_pipelines` (other tasks already there are kept). Returns the copied file
    names. Call it after every `save_pretrained`, which rewrites config.json. Also attaches the Inference
    Endpoints handler (`attach_endpoint_handler`)."""
    output_dir = Path(output_dir)
    config_path = output_dir / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path} not found: save the model before attaching its pipeline")
    check_shippable(task)
    copied = []
    for path in pipeline_files(task):
        shutil.copyfile(path, output_dir / path.name)
        copied.append(path.name)
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["custom_pipelines"] = {**(config.get("custom_pipelines") or {}), task: custom_pipeline_entry(task)}
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    attach_endpoint_handler(output_dir)
    return copied


def attach_endpoint_handler(output_dir: str | os.PathLike) -> list[str]:
    """Write `handler.py` (Inference Endpoints' `EndpointHandler`, serving the checkpoint's custom pipeline) and
    its `requirements.txt` into a saved model folder. Returns the file names."""
    output_dir = Path(output_dir)
    shutil.copyfile(ENDPOINT_HANDLER, output_dir / "handler.py")
    header = "# Installed by Hugging Face Inference Endpoints for handler.py (torch, transformers come with the image)."
    (output_dir / "requirements.txt").write_text("\n".join([header, *ENDPOINT_REQUIREMENTS]) + "\n", encoding="utf-8")
    return ["handler.py", "requirements.txt"]


def attach_onnx_export(export_dir: str | os.PathLike, task: str) -> list[str]:
    """Make an ONNX export folder (`model.onnx`, config.json, processor files) deployable like a checkpoint:
    `attach_pipeline` (the pipeline files, the `custom_pipelines` entry, handler.py, requirements.txt) plus
    `onnx_model.py` and what it imports, which handler.py loads when the folder holds `model.onnx`. Returns the
    copied file names."""
    export_dir = Path(export_dir)
    check_shippable(task, onnx=True)
    copied = attach_pipeline(export_dir, task)
    for path in onnx_model_files():
        if path.name not in copied:
            shutil.copyfile(path, export_dir / path.name)
            copied.append(path.name)
    return copied
