"""One way to build the inference pipeline of a checkpoint, on either backend:

    from layoutkit.apps.pipeline_loader import load_predictor
    extractor = load_predictor("runs/invoices")                          # PyTorch
    extractor = load_predictor("exports/invoices-onnx", backend="onnx")  # python -m layoutkit.apps.export_onnx
    extractor("invoice.png", return_words=True)

Both return the layoutkit pipeline of the checkpoint's task (`LayoutTokenClassificationPipeline` for
token classification, `LayoutDocumentClassificationPipeline` for document classification), so inputs, options and
outputs are the same; with the ONNX backend the model call goes to `OnnxLayoutModel`
(`layoutkit.pipelines.onnx_model.onnx_pipeline`, which the Inference Endpoints handler of an export folder calls too).

`load_relation_pipeline(folder)` builds a relation checkpoint's `LayoutRelationExtractionPipeline` (predict.py's
--relation_model) the same way, from layoutkit's own classes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..pipelines.document_classification_pipeline import LayoutDocumentClassificationPipeline
from ..pipelines.token_classification_pipeline import LayoutTokenClassificationPipeline
from .settings import BACKENDS

PIPELINE_CLASSES = {
    "token-classification": LayoutTokenClassificationPipeline,
    "image-classification": LayoutDocumentClassificationPipeline,
}
# Architecture name suffix -> task (config.json `architectures`).
ARCHITECTURE_TASKS = {"ForTokenClassification": "token-classification",
                      "ForSequenceClassification": "image-classification"}


def task_of(config: dict, where: str = "config.json") -> str:
    """The layoutkit task of a model config (as a dict): its registered custom pipeline, else its architecture."""
    tasks = sorted(set(config.get("custom_pipelines") or {}) & set(PIPELINE_CLASSES))
    if len(tasks) == 1:
        return tasks[0]
    for architecture in config.get("architectures") or []:
        for suffix, task in ARCHITECTURE_TASKS.items():
            if architecture.endswith(suffix):
                return task
    raise ValueError(f"{where}: cannot tell the task (no custom pipeline, architectures "
                     f"{config.get('architectures')}); expected a token- or sequence-classification model")


def load_predictor(model: str | os.PathLike, backend: str = "torch", task: str | None = None, device=None,
                   batch_size: int | None = None, num_threads: int | None = None, pipeline_class=None):
    """The pipeline of `model` (a checkpoint folder or Hub id for "torch"; an export folder for "onnx").
    `batch_size` is windows per forward pass; `num_threads` ONNX Runtime's intra-op threads (default torch's);
    `pipeline_class` a subclass of the task's pipeline to build instead (the HTTP service's batching one)."""
    from transformers import pipeline

    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    model = str(model)
    if backend == "torch":
        if task is None:
            from transformers import AutoConfig

            task = task_of(AutoConfig.from_pretrained(model).to_dict(), model)
        return pipeline(task, model=model, pipeline_class=pipeline_class or PIPELINE_CLASSES[task], device=device,
                        batch_size=batch_size)

    from ..pipelines.onnx_model import onnx_path, onnx_pipeline

    onnx_path(model)  # a clear error before anything else is loaded
    if device is not None and str(device) != "cpu":
        raise ValueError(f"the ONNX backend runs on the CPU; got device {device}")
    config_path = Path(model) / "config.json"
    task = task or task_of(json.loads(config_path.read_text(encoding="utf-8")), str(config_path))
    return onnx_pipeline(model, pipeline_class or PIPELINE_CLASSES[task], task, num_threads=num_threads,
                         batch_size=batch_size)


def load_relation_pipeline(name_or_path: str, device=None):
    """The relation-extraction pipeline of a checkpoint, built from layoutkit's own classes (no remote code runs)."""
    from ..pipelines.modeling import load_processing
    from ..pipelines.relation_extraction_pipeline import LayoutRelationExtractionPipeline
    from ..pipelines.relation_model import LayoutRelationModel

    model = LayoutRelationModel.from_pretrained(name_or_path)
    tokenizer, image_processor, _ = load_processing(name_or_path)
    return LayoutRelationExtractionPipeline(model=model, tokenizer=tokenizer, image_processor=image_processor,
                                            device=device)
