"""Export a LayoutLM v1 or LayoutLMv3 checkpoint (token classification or document classification) to ONNX.

    python -m layoutkit.apps.export_onnx --model runs/invoices --output exports/invoices-onnx

The output folder holds `model.onnx` (inputs `input_ids`, `attention_mask`, `bbox` and, for LayoutLMv3 with its
visual embedding, `pixel_values`; output `logits`; batch and sequence axes dynamic), the model's `config.json`
(label maps and the `document_preprocessing` training recorded), its tokenizer / processor files, and
`onnx_export.json` (inputs, opset, versions and the parity measured at export). `predict.py --backend onnx` and
`layoutkit.apps.pipeline_loader.load_predictor(folder, backend="onnx")` run it with ONNX Runtime through the same pipeline.
Like a checkpoint, the folder also carries the pipeline files, `onnx_model.py`, the Inference Endpoints `handler.py`
and its `requirements.txt` (`layoutkit.pipelines.attach.attach_onnx_export`): pushed to the Hub, it deploys as an
Inference Endpoint that runs the graph (fp32 or int8) with ONNX Runtime.

Exporter: `torch.onnx.export(..., dynamo=False)`, the TorchScript-based exporter. Measured with torch 2.13: the
dynamo exporter exports LayoutLM v1 (in about 20 s against 1.5 s) but fails on LayoutLMv3 (a view over the
symbolic text + 197 patch tokens length cannot be decomposed), and optimum's ONNX exporters (optimum-onnx 0.1)
require transformers < 4.58 while layoutkit needs transformers 5. After writing the graph, the export runs it with
ONNX Runtime against PyTorch on two batches of different sizes and sequence lengths and fails above `--atol`.

`--quantize int8` then quantizes the verified graph with ONNX Runtime's dynamic quantization (int8 weights of the
matrix products, activations quantized per batch at run time; no calibration data): `model.onnx` is the int8
graph, the fp32 one is not kept, and `onnx_export.json` records the int8 graph's largest logits difference and how
often its per-token label (argmax) agrees with PyTorch's. Measured in docs/performance.md (speed and field
exact match).

LayoutLMv2 and LayoutXLM cannot be exported: their visual backbone is detectron2's ResNeXt-FPN, which is not on
PyPI (it builds from source against one torch version), so nothing here can load, trace or verify it; their
export is refused with that reason.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..pipelines.attach import attach_onnx_export
from ..pipelines.encoding import LayoutCollator, encode_documents, window_page_images
from ..pipelines.modeling import load_processing, model_family
from ..pipelines.onnx_model import EXPORT_INFO_FILE, ONNX_FILE, OnnxLayoutModel
from .pipeline_loader import task_of

DEFAULT_OPSET = 17
DEFAULT_ATOL = 1e-4
EXPORTABLE = ("layoutlm", "layoutlmv3")
NOT_EXPORTABLE = {
    "layoutlmv2": "LayoutLMv2 and LayoutXLM read the page through detectron2's ResNeXt-FPN backbone, which is not on "
                  "PyPI (it is built from source against one torch version) and cannot be traced or verified here; "
                  "export a LayoutLM v1 or LayoutLMv3 model instead",
}
# Example windows the graph is traced with (two documents of different lengths, so padding is exercised) and the
# parity batches checked after export: (words per document, ...) x window length.
TRACE_WORDS, TRACE_LENGTH = (14, 5), 32
PARITY_BATCHES = (((3,), 16), ((40, 9, 21), 64))
QUANTIZATIONS = ("no", "int8")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="checkpoint folder (or Hub id) of a LayoutLM / LayoutLMv3 "
                        "token- or sequence-classification model")
    parser.add_argument("--output", required=True, help="export folder (model.onnx, config, processor)")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    parser.add_argument("--atol", type=float, default=DEFAULT_ATOL,
                        help=f"largest logits difference ONNX Runtime vs PyTorch accepted (default {DEFAULT_ATOL})")
    parser.add_argument("--quantize", choices=QUANTIZATIONS, default="no",
                        help="int8: ONNX Runtime dynamic quantization of the verified graph (default no)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing export folder")
    return parser.parse_args(argv)


class LogitsModel(torch.nn.Module):
    """The model with positional inputs in a fixed order and the logits as its only output: what the tracer needs
    (keyword inputs would be bound to graph input names by position in forward's signature, not by name)."""

    def __init__(self, model, input_names: list[str]):
        super().__init__()
        self.model = model
        self.input_names = input_names

    def forward(self, *tensors):
        return self.model(**dict(zip(self.input_names, tensors))).logits


def load_classification_model(name_or_path: str):
    """(model in eval mode, its config) for a token- or sequence-classification checkpoint; refuses model types that
    cannot be exported, with the reason."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoModelForTokenClassification

    config = AutoConfig.from_pretrained(name_or_path)
    family = model_family(config)
    if family.model_type in NOT_EXPORTABLE:
        raise ValueError(f"{name_or_path}: {NOT_EXPORTABLE[family.model_type]}")
    architectures = config.architectures or []
    if any(a.endswith("ForTokenClassification") for a in architectures):
        auto = AutoModelForTokenClassification
    elif any(a.endswith("ForSequenceClassification") for a in architectures):
        auto = AutoModelForSequenceClassification
    else:
        raise ValueError(f"{name_or_path}: architectures {architectures} are not a token- or sequence-classification "
                         "model (train one with run_invoice_ner.py or run_doc_classification.py)")
    return auto.from_pretrained(name_or_path).eval(), config


def example_batch(tokenizer, image_processor, family, words_per_document, max_length: int) -> dict[str, torch.Tensor]:
    """Model inputs built the way the pipelines build them (`encode_documents`, `window_page_images`,
    `LayoutCollator`), for synthetic documents of the given word counts: one window each, padded to the longest."""
    rng = np.random.default_rng(len(words_per_document))
    words, boxes = [], []
    for count in words_per_document:
        words.append([f"w{index}" for index in range(count)])
        x0, y0 = rng.integers(0, 800, count), rng.integers(0, 900, count)  # on the 0-1000 grid
        boxes.append([[int(a), int(b), int(a + rng.integers(10, 200)), int(b + rng.integers(5, 100))]
                      for a, b in zip(x0, y0)])
    columns = encode_documents(words, boxes, tokenizer, family, max_length=max_length, stride=0)
    pages = [Image.fromarray(rng.integers(0, 255, (120, 90, 3), dtype=np.uint8)) for _ in words_per_document]
    columns.update(window_page_images(pages, image_processor, family, columns["doc_index"]))
    windows = [{key: values[i] for key, values in columns.items()} for i in range(len(columns["input_ids"]))]
    batch = LayoutCollator(tokenizer.pad_token_id, None, family.image_input)(windows)
    return {key: value for key, value in batch.items() if key not in ("word_ids", "doc_index", "labels")}


def parity_rows(model, onnx_model: OnnxLayoutModel, tokenizer, image_processor, family) -> list[dict]:
    """Largest logits difference and argmax agreement, ONNX Runtime against PyTorch, on the parity batches."""
    rows = []
    for words_per_document, length in PARITY_BATCHES:
        batch = example_batch(tokenizer, image_processor, family, words_per_document, length)
        with torch.no_grad():
            expected = model(**batch).logits
        logits = onnx_model(**batch).logits
        rows.append({"batch": int(batch["input_ids"].shape[0]), "sequence": int(batch["input_ids"].shape[1]),
                     "max_abs_diff": float((logits - expected).abs().max()),
                     "argmax_agreement": float((logits.argmax(-1) == expected.argmax(-1)).float().mean())})
    return rows


def quantize_int8(path: Path) -> None:
    """Replace the graph at `path` by its dynamically quantized int8 version (ONNX Runtime)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantized = path.with_name("model.int8.onnx")
    quantize_dynamic(str(path), str(quantized), weight_type=QuantType.QInt8)
    quantized.replace(path)


def export_onnx(model_name_or_path: str, output_dir: str | Path, opset: int = DEFAULT_OPSET,
                atol: float = DEFAULT_ATOL, quantize: str = "no") -> dict:
    """Write the export folder (see the module docstring) and return what `onnx_export.json` records."""
    missing = [name for name in ("onnx", "onnxruntime") if importlib.util.find_spec(name) is None]
    if missing:
        raise RuntimeError(f"the ONNX export needs {' and '.join(missing)}: pip install 'layoutkit[onnx]'")
    output_dir = Path(output_dir)
    model, config = load_classification_model(model_name_or_path)
    family = model_family(config)
    tokenizer, image_processor, processor = load_processing(model_name_or_path)
    trace_inputs = example_batch(tokenizer, image_processor, family, TRACE_WORDS, TRACE_LENGTH)
    input_names = list(trace_inputs)
    token_axes = {0: "batch", 1: "sequence"}
    dynamic_axes = {name: ({0: "batch"} if name == family.image_input else token_axes) for name in input_names}
    dynamic_axes["logits"] = token_axes if config.architectures[0].endswith("ForTokenClassification") else {0: "batch"}

    output_dir.mkdir(parents=True, exist_ok=True)
    # Written to a scratch folder inside the output and moved in once verified: a failed export or parity check
    # leaves no model.onnx behind.
    with tempfile.TemporaryDirectory(dir=output_dir) as scratch:
        torch.onnx.export(
            LogitsModel(model, input_names).eval(),  # eval: dropout off (the wrapper starts in training mode)
            tuple(trace_inputs.values()),
            str(Path(scratch) / ONNX_FILE),
            input_names=input_names,
            output_names=["logits"],
            dynamic_axes=dynamic_axes,
            opset_version=opset,
            dynamo=False,
        )
        config.save_pretrained(scratch)
        processor.save_pretrained(scratch)
        attach_onnx_export(scratch, task_of(config.to_dict(), str(model_name_or_path)))
        parity = parity_rows(model, OnnxLayoutModel(scratch), tokenizer, image_processor, family)
        worst = max(row["max_abs_diff"] for row in parity)
        if worst > atol:
            raise RuntimeError(f"{model_name_or_path}: ONNX Runtime logits differ from PyTorch by up to {worst:.3g} "
                               f"(above --atol {atol}); nothing was written to {output_dir}")
        quantized_parity = None
        if quantize == "int8":
            quantize_int8(Path(scratch) / ONNX_FILE)
            quantized_parity = parity_rows(model, OnnxLayoutModel(scratch), tokenizer, image_processor, family)
        for path in Path(scratch).iterdir():
            target = output_dir / path.name
            if target.is_dir():
                shutil.rmtree(target)
            shutil.move(str(path), target)

    import onnxruntime
    import transformers

    info = {
        "source": str(model_name_or_path),
        "model_type": family.model_type,
        "architecture": config.architectures[0],
        "inputs": input_names,
        "output": "logits",
        "dynamic_axes": {name: {str(k): v for k, v in axes.items()} for name, axes in dynamic_axes.items()},
        "opset": opset,
        "exporter": "torch.onnx.export(dynamo=False)",
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "onnxruntime": onnxruntime.__version__},
        "parity": parity,
        "quantization": None if quantize == "no" else {
            "method": "onnxruntime.quantization.quantize_dynamic, QInt8 weights", "parity": quantized_parity},
    }
    (output_dir / EXPORT_INFO_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return info


def main(argv=None) -> int:
    args = parse_args(argv)
    output = Path(args.output)
    if (output / ONNX_FILE).exists() and not args.overwrite:
        print(f"error: {output / ONNX_FILE} exists; pass --overwrite to replace it", file=sys.stderr)
        return 2
    try:
        info = export_onnx(args.model, output, args.opset, args.atol, args.quantize)
    except (ValueError, OSError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    parity = ", ".join(f"batch {p['batch']} x {p['sequence']} tokens: {p['max_abs_diff']:.2g}" for p in info["parity"])
    print(f"exported {info['architecture']} to {output / ONNX_FILE} (inputs {', '.join(info['inputs'])}); "
          f"max |ONNX Runtime - PyTorch| logits: {parity}")
    if info["quantization"]:
        rows = info["quantization"]["parity"]
        print("int8 graph: max |logits difference| " + ", ".join(f"{p['max_abs_diff']:.2g}" for p in rows)
              + "; per-token label agreement with PyTorch " + ", ".join(f"{p['argmax_agreement']:.3f}" for p in rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
