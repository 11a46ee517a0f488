"""Hugging Face Inference Endpoints custom handler, saved as `handler.py` in every checkpoint and every ONNX export
folder (see `attach.py`).

Pushed to the Hub, a checkpoint deploys as a custom Inference Endpoint without writing code: the endpoint's
toolkit imports `handler.py` from the repository, builds `EndpointHandler(path)` once and calls it with each request
body. The handler loads the checkpoint's own custom pipeline (`pipeline(task, model=path, trust_remote_code=True)`,
the same code users run in Python), so its answers are the pipeline's answers. `requirements.txt` beside it lists
what the endpoint installs on top of torch and transformers (the OCR engine, PDF rendering, onnxruntime).

A folder written by `python -m layoutkit.apps.export_onnx` (fp32 or `--quantize int8`) holds `model.onnx` instead of
PyTorch weights, with `onnx_model.py` beside the pipeline files: there the handler builds the same pipeline class
around the ONNX Runtime model (`onnx_model.onnx_pipeline`, what `predict.py --backend onnx` runs), on the CPU.

Request bodies (`data`), as the toolkit hands them over:

- an image sent with an `image/*` content type: `{"inputs": PIL.Image}`;
- JSON `{"inputs": "<base64 of an image or a PDF>", "parameters": {...}}` (a `data:...;base64,` prefix is allowed);
- raw bytes of an image or a PDF as `inputs`;
- JSON words and pixel boxes (no OCR): `{"inputs": {"image": "<base64>", "words": [...], "boxes": [[x0, y0, x1, y1],
  ...]}}`, optional `"segment_boxes"` or `"line_ids"`;
- a list of any of these as `inputs`.

`parameters` are the pipeline's call options (`return_words`, `return_fields`, `rules`, `top_k`, `ocr_engine`, ...),
plus `dpi` (PDF rendering resolution, default 200) and `pdf_text` (auto, always, never: a PDF page's words from its
text layer where that covers the page, as predict.py; docs/pdf.md). An image returns the pipeline's output for it; a
PDF returns a list with one output per page (with return_words, each says its `words_source`: pdf_text,
pdf_invisible_text, ocr:ENGINE); a list of inputs returns a list of outputs. Strings are never read as file paths or
URLs: a request cannot make the endpoint open files on its disk or fetch from the network.

Like the other files shipped in a checkpoint, this one imports only the standard library, PIL, torch and transformers
(pypdfium2 only when a PDF arrives; onnxruntime, through onnx_model.py, only in an ONNX export).
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import os
from typing import Any

import torch
from PIL import Image
from transformers import pipeline

DEFAULT_PDF_DPI = 200
# The graph of an ONNX export folder (onnx_model.ONNX_FILE; this file imports no sibling module at module level).
ONNX_FILE = "model.onnx"
PDF_MAGIC = b"%PDF-"
# Call options that return something JSON cannot carry.
REFUSED_PARAMETERS = {"draw": "draw=True returns an image, which a JSON response cannot carry"}


def custom_pipelines(path: str) -> dict:
    """config.json's `custom_pipelines`: task -> {"impl": "module.Class", ...}."""
    with open(os.path.join(path, "config.json"), encoding="utf-8") as handle:
        return json.load(handle).get("custom_pipelines") or {}


def checkpoint_task(path: str) -> str:
    """The task of the custom pipeline registered in the checkpoint's config.json."""
    tasks = sorted(custom_pipelines(path))
    if len(tasks) != 1:
        raise ValueError(f"{os.path.join(path, 'config.json')}: expected one task under 'custom_pipelines', found "
                         f"{tasks or 'none'}")
    return tasks[0]


def load_pipeline(path: str, task: str):
    """The checkpoint's custom pipeline: on its PyTorch weights (GPU when there is one), or, in an ONNX export folder,
    the same pipeline class around the ONNX Runtime model (CPU). Both classes come from the files in the folder,
    loaded the way `trust_remote_code=True` loads them."""
    if not os.path.isfile(os.path.join(path, ONNX_FILE)):
        return pipeline(task, model=path, trust_remote_code=True, device=0 if torch.cuda.is_available() else -1)
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    if not os.path.isfile(os.path.join(path, "onnx_model.py")):
        raise ValueError(f"{path}: an ONNX export without onnx_model.py; export it again with "
                         "`python -m layoutkit.apps.export_onnx`, which ships it")
    pipeline_class = get_class_from_dynamic_module(custom_pipelines(path)[task]["impl"], path)
    onnx_pipeline = get_class_from_dynamic_module("onnx_model.onnx_pipeline", path)
    return onnx_pipeline(path, pipeline_class, task)  # ImportError naming onnxruntime where it is missing


def decode_base64(text: str, where: str) -> bytes:
    if text.startswith("data:") and "," in text:  # a data URL: data:image/png;base64,....
        text = text.split(",", 1)[1]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as error:
        raise ValueError(f"{where}: a string must be a base64-encoded image or PDF ({error}); file paths and URLs "
                         "are not read") from None


def image_from_bytes(data: bytes, where: str) -> Image.Image:
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return image.copy()
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise ValueError(f"{where}: not a readable image or PDF ({error})") from None


def pdf_pages(data: bytes, dpi: int, where: str, pipe=None, pdf_text: str = "auto") -> list:
    """Every page of a PDF as an input of `pipe`: with the checkpoint's pipeline, `pipe.pdf_page_inputs` (the
    page image rendered at `dpi` with the words of its text layer where that covers the page, `pdf_text`, as
    predict.py reads PDFs); else (an older pipeline) the page images, read by OCR."""
    try:
        import pypdfium2 as pdfium
    except ImportError:
        raise ValueError(f"{where}: PDF input needs pypdfium2 (listed in requirements.txt)") from None
    try:
        document = pdfium.PdfDocument(data)
    except pdfium.PdfiumError as error:
        raise ValueError(f"{where}: not a readable PDF ({error})") from None
    try:
        if len(document) == 0:
            raise ValueError(f"{where}: the PDF has no pages")
        if hasattr(pipe, "pdf_page_inputs"):
            return pipe.pdf_page_inputs(document, dpi=dpi, pdf_text=pdf_text, where=where)
        return [document[index].render(scale=dpi / 72).to_pil() for index in range(len(document))]
    finally:
        document.close()


def read_pages(value, dpi: int, where: str, pipe=None, pdf_text: str = "auto") -> Image.Image | list:
    """An image, or the pages of a PDF (a list, `pdf_pages`), from a PIL image, bytes or a base64 string."""
    if isinstance(value, Image.Image):
        return value
    if isinstance(value, str):
        value = decode_base64(value, where)
    if isinstance(value, (bytes, bytearray)):
        data = bytes(value)
        if data.lstrip()[:5] == PDF_MAGIC:
            return pdf_pages(data, dpi, where, pipe, pdf_text)
        return image_from_bytes(data, where)
    raise ValueError(f"{where}: expected an image (PIL, bytes or base64), a PDF (bytes or base64) or a dict with "
                     f"'image', 'words' and 'boxes', got {type(value).__name__}")


class EndpointHandler:
    """`EndpointHandler(path)(data)`: see the module docstring for the request and response formats."""

    def __init__(self, path: str = ""):
        path = path or os.path.dirname(os.path.abspath(__file__))
        self.task = checkpoint_task(path)
        self.pipeline = load_pipeline(path, self.task)

    def __call__(self, data: dict[str, Any]) -> Any:
        inputs = data.pop("inputs", data) if isinstance(data, dict) else data
        parameters = dict((data.get("parameters") if isinstance(data, dict) else None) or {})
        for name, reason in REFUSED_PARAMETERS.items():
            if parameters.get(name):
                raise ValueError(f"parameters.{name}: {reason}")
        dpi = int(parameters.pop("dpi", DEFAULT_PDF_DPI))
        pdf_text = str(parameters.pop("pdf_text", "auto"))  # checked by the pipeline's pdf_page_inputs
        if isinstance(inputs, list):
            return [self.predict(item, dpi, parameters, f"inputs[{i}]", pdf_text) for i, item in enumerate(inputs)]
        return self.predict(inputs, dpi, parameters, "inputs", pdf_text)

    def predict(self, value, dpi: int, parameters: dict, where: str, pdf_text: str = "auto"):
        if isinstance(value, dict):  # words and boxes given: OCR is skipped
            if "image" not in value:
                raise ValueError(f"{where}: a dict needs 'image' (base64), plus 'words' and 'boxes'")
            image = read_pages(value["image"], dpi, f"{where}.image")
            if isinstance(image, list):
                raise ValueError(f"{where}.image: words and boxes describe one page; send an image, not a PDF")
            return self.pipeline({**value, "image": image}, **parameters)
        pages = read_pages(value, dpi, where, self.pipeline, pdf_text)
        if isinstance(pages, list):
            return [self.predict_page(page, parameters) for page in pages]
        return self.pipeline(pages, **parameters)

    def predict_page(self, page, parameters: dict):
        """One PDF page (an image, or a `pdf_page_inputs` dict, itself a pipeline input): the pipeline's output, with
        the page's `warnings` when the output is a dict (return_words, return_fields)."""
        output = self.pipeline(page, **parameters)
        if isinstance(page, dict) and page.get("warnings") and isinstance(output, dict):
            output["warnings"] = page["warnings"]
        return output
