"""A LayoutLM-family model exported by `python -m layoutkit.apps.export_onnx`, run with ONNX Runtime behind the call
signature the pipelines use for the torch model: `model(input_ids=..., attention_mask=..., bbox=...,
[pixel_values=...]).logits`, with `config`, `device` and `dtype`. So the same pipeline classes (and their
preprocessing, window merging and post-processing) run either backend:

    from layoutkit.pipelines.onnx_model import OnnxLayoutModel
    model = OnnxLayoutModel.from_pretrained("exports/invoices-onnx")
    logits = model(**batch).logits  # a torch tensor, like the torch model's

`onnx_pipeline(folder, pipeline_class, task)` builds a whole pipeline around it: what
`layoutkit.apps.pipeline_loader.load_predictor(folder, backend="onnx")` (predict.py, the service) and the Inference
Endpoints handler (`endpoint_handler.py`) of an export folder both call.

Copied into every export folder beside `handler.py` and the pipeline files, so, like them, it imports only torch,
transformers and the standard library at module level; onnxruntime is imported when a model is loaded (an export's
`requirements.txt` lists it), with an error naming it where it is missing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from transformers import AutoConfig
from transformers.utils import ModelOutput

from .modeling import load_processing

ONNX_FILE = "model.onnx"
EXPORT_INFO_FILE = "onnx_export.json"


def import_onnxruntime():
    """onnxruntime, an optional dependency (layoutkit's onnx extra; listed in an export folder's requirements.txt);
    ImportError naming what to install when it is missing. Imported inside a `try` so that transformers'
    `check_imports` does not require it of every environment that loads this file."""
    try:
        import onnxruntime
    except ImportError as error:
        raise ImportError(f"the ONNX backend needs the onnxruntime package, which is not installed: pip install "
                          f"onnxruntime (with layoutkit: pip install 'layoutkit[onnx]'; an Inference Endpoint "
                          f"installs it from the export folder's requirements.txt) ({error})") from error
    return onnxruntime


def onnx_path(model_dir: str | os.PathLike) -> Path:
    """The ONNX graph of an export folder; FileNotFoundError saying how to make one when it is missing."""
    path = Path(model_dir) / ONNX_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: the ONNX backend reads a folder written by "
            f"`python -m layoutkit.apps.export_onnx --model CHECKPOINT --output {model_dir}`"
        )
    return path


class OnnxLayoutModel:
    """An exported LayoutLM / LayoutLMv3 classification model on ONNX Runtime (CPU by default).

    `num_threads` is ONNX Runtime's intra-op thread count; by default the same as torch's
    (`torch.get_num_threads()`), so both backends use the cores the same way."""

    def __init__(self, model_dir: str | os.PathLike, num_threads: int | None = None,
                 providers: list[str] | None = None):
        onnxruntime = import_onnxruntime()
        path = onnx_path(model_dir)
        self.config = AutoConfig.from_pretrained(str(model_dir))
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = int(num_threads or torch.get_num_threads())
        self.session = onnxruntime.InferenceSession(str(path), options, providers=providers or ["CPUExecutionProvider"])
        self.input_names = [graph_input.name for graph_input in self.session.get_inputs()]
        info_path = Path(model_dir) / EXPORT_INFO_FILE
        self.export_info = json.loads(info_path.read_text(encoding="utf-8")) if info_path.is_file() else {}
        self.device = torch.device("cpu")  # inputs are handed to ONNX Runtime as CPU arrays
        self.dtype = torch.float32
        self.training = False

    @classmethod
    def from_pretrained(cls, model_dir: str | os.PathLike, **kwargs) -> "OnnxLayoutModel":
        return cls(model_dir, **kwargs)

    def to(self, device) -> "OnnxLayoutModel":
        if torch.device(device).type != "cpu":
            raise ValueError(f"the ONNX backend runs on the CPU here (ONNX Runtime CPU provider); got device {device}")
        return self

    def eval(self) -> "OnnxLayoutModel":
        return self

    def __call__(self, **inputs: torch.Tensor) -> ModelOutput:
        given = {name for name, value in inputs.items() if value is not None}
        if given != set(self.input_names):
            raise ValueError(f"the ONNX graph takes {self.input_names}; got {sorted(given)}: export the model again "
                             "with this version of layoutkit")
        feed = {name: inputs[name].detach().cpu().numpy() for name in self.input_names}
        (logits,) = self.session.run(["logits"], feed)
        return ModelOutput(logits=torch.from_numpy(logits))


def onnx_pipeline(model_dir: str | os.PathLike, pipeline_class, task: str, num_threads: int | None = None,
                  batch_size: int | None = None):
    """`pipeline_class` (the layoutkit pipeline of `task`) around the export folder's `OnnxLayoutModel` and its
    tokenizer / processor: the torch pipeline's preprocessing and outputs, the model call on ONNX Runtime (CPU)."""
    onnx_path(model_dir)  # a clear error before anything else is loaded
    model = OnnxLayoutModel(model_dir, num_threads=num_threads)
    tokenizer, image_processor, _ = load_processing(str(model_dir))
    return pipeline_class(model=model, tokenizer=tokenizer, image_processor=image_processor, task=task, device="cpu",
                          batch_size=batch_size)
