#!/usr/bin/env python
"""CPU latency, PyTorch fp32 against ONNX Runtime fp32 and int8, for LayoutLM v1, LiLT and LayoutLMv3.

    python benchmarks/onnx_latency.py --pages 20 --threads 2
    python benchmarks/onnx_latency.py --model_types layoutlm,lilt,layoutlmv3 --sizes base --threads 1,2 \
        --backends torch,onnx,onnx-int8 --pages 5 --repeats 10

For each model type and size: a model from scratch (random weights: latency does not depend on them) on a
tokenizer trained on synthetic invoices' words, exported with `python -m layoutkit.apps.export_onnx`'s `export_onnx`, then
the same pages through `load_predictor(..., backend="torch")` and `backend="onnx"`: the whole pipeline per page
(resize, windows, forward, word merging, entities) with the invoices' given words (no OCR, which costs the same on
both backends), and the model calls alone; then one window of exactly `--tokens` tokens (default 512, a full
window) through the model alone, `--repeats` times (p50 and p95). `onnx-int8` is the export with `--quantize int8`
(ONNX Runtime dynamic quantization). Torch and ONNX Runtime use each of `--threads` (comma list) intra-op threads in
turn. Prints a Markdown table.
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from layoutkit.apps.export_onnx import export_onnx
from layoutkit.apps.pipeline_loader import load_predictor
from layoutkit.apps.scratch import SIZES, build_scratch_checkpoint

LABELS = ["O"] + [f"{p}-{t}" for t in ("vendor", "invoice_number", "invoice_date", "due_date", "item_description",
                                       "item_amount", "subtotal", "tax", "total") for p in "BI"]


class TimedModel:
    """The pipeline's model with the time spent in its calls added up."""

    def __init__(self, model):
        self.model, self.seconds = model, 0.0

    def __getattr__(self, name):
        return getattr(self.model, name)

    def __call__(self, **inputs):
        started = time.perf_counter()
        output = self.model(**inputs)
        self.seconds += time.perf_counter() - started
        return output


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_types", default="layoutlm,layoutlmv3")
    parser.add_argument("--sizes", default="tiny,small", help=f"comma list of {', '.join(SIZES)}")
    parser.add_argument("--pages", type=int, default=20, help="timed pages per model and backend")
    parser.add_argument("--warmup", type=int, default=3, help="untimed pages first")
    parser.add_argument("--threads", default=str(torch.get_num_threads()),
                        help="intra-op threads per backend, comma list (default torch's)")
    parser.add_argument("--backends", default="torch,onnx", help="comma list of torch, onnx, onnx-int8")
    parser.add_argument("--tokens", type=int, default=512, help="tokens of the model-only window (default 512)")
    parser.add_argument("--repeats", type=int, default=10, help="timed calls of the --tokens window")
    parser.add_argument("--work_dir", help="where invoices, checkpoints and exports go (default: a temporary folder)")
    return parser.parse_args()


def synthetic_pages(folder: Path, count: int) -> list[dict]:
    import json

    from PIL import Image

    subprocess.run([sys.executable, "-m", "dataset_loader", "synth", "--output", str(folder), "--num_docs", str(count),
                    "--seed", "0", "--overwrite"], check=True, capture_output=True)
    pages = []
    for path in sorted((folder / "annotations").glob("*.json")):
        annotation = json.loads(path.read_text())
        with Image.open(folder / "images" / annotation["image"]) as image:
            image.load()
            pages.append({"image": image.copy(), "words": annotation["words"], "boxes": annotation["boxes"]})
    return pages


def build_model(folder: Path, model_type: str, size: str, words: list[str]) -> Path:
    from transformers import AutoConfig, AutoModelForTokenClassification

    build_scratch_checkpoint(str(folder), model_type, words, size=size, vocab_size=2000)
    config = AutoConfig.from_pretrained(folder, num_labels=len(LABELS), id2label=dict(enumerate(LABELS)),
                                        label2id={label: i for i, label in enumerate(LABELS)})
    torch.manual_seed(0)
    AutoModelForTokenClassification.from_config(config).save_pretrained(folder)
    return folder


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def full_window(extractor, tokens: int) -> dict:
    """Model inputs of one window of exactly `tokens` tokens (synthetic words), as the pipeline builds them."""
    from layoutkit.apps.export_onnx import example_batch
    from layoutkit.pipelines.modeling import model_family

    family = model_family(extractor.model.config)
    batch = example_batch(extractor.tokenizer, extractor.image_processor, family, (tokens,), tokens)
    batch = {name: value[:1] for name, value in batch.items()}
    if batch["input_ids"].shape[1] != tokens:
        raise RuntimeError(f"the example window has {batch['input_ids'].shape[1]} tokens, not {tokens}")
    return batch


def measure(extractor, pages: list[dict], warmup: int, tokens: int, repeats: int) -> dict:
    for page in pages[:warmup]:
        extractor(page)
    extractor.model = TimedModel(extractor.model)
    latencies = []
    for page in pages[warmup:]:
        started = time.perf_counter()
        extractor(page)
        latencies.append(time.perf_counter() - started)
    model_seconds = extractor.model.seconds / len(latencies)
    window = full_window(extractor, tokens)
    calls = []
    with torch.inference_mode():
        extractor.model.model(**window)
        for _ in range(repeats):
            started = time.perf_counter()
            extractor.model.model(**window)
            calls.append(time.perf_counter() - started)
    return {"mean": statistics.mean(latencies), "p50": statistics.median(latencies),
            "p95": percentile(latencies, 0.95), "model": model_seconds,
            "window_p50": statistics.median(calls), "window_p95": percentile(calls, 0.95)}


def main():
    args = parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    backends = [b.strip() for b in args.backends.split(",")]
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="onnx-latency-"))
    pages = synthetic_pages(work / "invoices", args.pages + args.warmup)
    words = [word for page in pages for word in page["words"]]
    rows = []
    for model_type in args.model_types.split(","):
        for size in args.sizes.split(","):
            checkpoint = build_model(work / f"{model_type}-{size}", model_type, size, words)
            folders, parity = {"torch": checkpoint}, {}
            for backend in backends:
                if backend.startswith("onnx"):
                    quantize = "int8" if backend == "onnx-int8" else "no"
                    folders[backend] = work / f"{model_type}-{size}-{backend}"
                    info = export_onnx(str(checkpoint), folders[backend], quantize=quantize)
                    checks = info["quantization"]["parity"] if info["quantization"] else info["parity"]
                    parity[backend] = (max(p["max_abs_diff"] for p in checks),
                                       min(p["argmax_agreement"] for p in checks))
            parameters = None
            for count in threads:
                torch.set_num_threads(count)
                results = {}
                # Backends take turns within each thread count, so load changes fall on all of them alike.
                for backend in backends:
                    extractor = load_predictor(folders[backend], backend="torch" if backend == "torch" else "onnx",
                                               task="token-classification", device="cpu", num_threads=count)
                    if parameters is None and backend == "torch":
                        parameters = sum(p.numel() for p in extractor.model.parameters())
                    results[backend] = measure(extractor, pages, args.warmup, args.tokens, args.repeats)
                rows.append((model_type, size, parameters, count, results, parity))
                print(f"done: {model_type} {size} {count} thread(s)", file=sys.stderr)

    import os

    print(f"\nCPU latency, {args.pages} pages after {args.warmup} warm-up pages (synthetic invoices with their given "
          f"words, no OCR) and {args.repeats} calls of one {args.tokens}-token window; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores.\n")
    print(f"| model | size | parameters | threads | backend | page p50 (ms) | page p95 (ms) | model calls per page (ms) "
          f"| {args.tokens} tokens p50 (ms) | {args.tokens} tokens p95 (ms) | speed-up vs torch ({args.tokens} tokens, "
          "p50) | max abs logits diff | label agreement |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for model_type, size, parameters, count, results, parity in rows:
        for backend in backends:
            r = results[backend]
            speedup = results["torch"]["window_p50"] / r["window_p50"] if "torch" in results else float("nan")
            diff, agreement = parity.get(backend, (None, None))
            print(f"| {model_type} | {size} | {parameters / 1e6:.1f}M | {count} | {backend} | {1000 * r['p50']:.0f} | "
                  f"{1000 * r['p95']:.0f} | {1000 * r['model']:.0f} | {1000 * r['window_p50']:.0f} | "
                  f"{1000 * r['window_p95']:.0f} | {speedup:.2f}x | {'' if diff is None else f'{diff:.1e}'} | "
                  f"{'' if agreement is None else f'{agreement:.3f}'} |")


if __name__ == "__main__":
    main()
