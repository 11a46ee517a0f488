#!/usr/bin/env python
"""CPU latency per page, PyTorch against ONNX Runtime (fp32), for LayoutLM v1 and LayoutLMv3 token classification.

    python benchmarks/onnx_latency.py --pages 20 --threads 2

For each model type and size: a model from scratch (random weights: latency does not depend on them) on a
tokenizer trained on synthetic invoices' words, exported with `python -m layoutkit.apps.export_onnx`'s `export_onnx`, then
the same pages through `load_predictor(..., backend="torch")` and `backend="onnx"`: the whole pipeline per page
(resize, windows, forward, word merging, entities) with the invoices' given words (no OCR, which costs the same on
both backends), and the model calls alone. Torch and ONNX Runtime use `--threads` intra-op threads each. Prints a
Markdown table.
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
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="intra-op threads per backend")
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


def measure(extractor, pages: list[dict], warmup: int) -> dict:
    for page in pages[:warmup]:
        extractor(page)
    extractor.model = TimedModel(extractor.model)
    latencies = []
    for page in pages[warmup:]:
        started = time.perf_counter()
        extractor(page)
        latencies.append(time.perf_counter() - started)
    return {"mean": statistics.mean(latencies), "p50": statistics.median(latencies),
            "model": extractor.model.seconds / len(latencies)}


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="onnx-latency-"))
    pages = synthetic_pages(work / "invoices", args.pages + args.warmup)
    words = [word for page in pages for word in page["words"]]
    rows = []
    for model_type in args.model_types.split(","):
        for size in args.sizes.split(","):
            checkpoint = build_model(work / f"{model_type}-{size}", model_type, size, words)
            export = work / f"{model_type}-{size}-onnx"
            info = export_onnx(str(checkpoint), export)
            parity = max(p["max_abs_diff"] for p in info["parity"])
            parameters = None
            results = {}
            for backend, folder in (("torch", checkpoint), ("onnx", export)):
                extractor = load_predictor(folder, backend=backend, task="token-classification", device="cpu",
                                           num_threads=args.threads)
                if parameters is None and backend == "torch":
                    parameters = sum(p.numel() for p in extractor.model.parameters())
                results[backend] = measure(extractor, pages, args.warmup)
            rows.append((model_type, size, parameters, results, parity))
            print(f"done: {model_type} {size}", file=sys.stderr)

    print(f"\nCPU latency per page, fp32, {args.threads} intra-op thread(s) per backend, {args.pages} pages after "
          f"{args.warmup} warm-up pages; synthetic invoices with their given words (no OCR).\n")
    print("| model | size | parameters | backend | page mean (ms) | page p50 (ms) | model calls (ms) | speed-up (page) "
          "| max abs logits diff |")
    print("|---|---|---|---|---|---|---|---|---|")
    for model_type, size, parameters, results, parity in rows:
        for backend in ("torch", "onnx"):
            r = results[backend]
            speedup = results["torch"]["mean"] / r["mean"]
            print(f"| {model_type} | {size} | {parameters / 1e6:.2f}M | {backend} | {1000 * r['mean']:.1f} | "
                  f"{1000 * r['p50']:.1f} | {1000 * r['model']:.1f} | {speedup:.2f}x | "
                  f"{f'{parity:.1e}' if backend == 'onnx' else ''} |")


if __name__ == "__main__":
    main()
