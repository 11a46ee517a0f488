#!/usr/bin/env python
"""Where a page's time goes, stage by stage, from the image file to the prediction JSON.

    python benchmarks/page_latency.py --model runs/invoices-layoutlm-small --invoices data/sample_invoices \
        --funsd ../shared/datasets/funsd --engines rapidocr,rapidocr:fast,tesseract --max_pages 10

Stages, per page, in the order predict.py runs them:
- decode: open the image file and make it an upright RGB page (`load_page`);
- OCR: RapidOCR split into its own stages (`elapse_list`): detection, angle classification, recognition, and the
  rest of its call ("ocr other": image to array, cropping the text lines, word boxes from the recognizer's
  character positions); Tesseract is one stage (a subprocess per page);
- encoding: the pipeline's preprocess on the OCR words (resize to the 0-1000 grid, tokenize, windows);
- forward: the model on the page's windows (`--batch_size` per pass);
- fields: post-processing (entities, words), typed fields and line items;
- JSON: the document's JSON text.

Each engine (`NAME` or `NAME:PRESET`, presets from layoutkit.pipelines.ocr.RAPIDOCR_PRESETS) is loaded and run once on a
page before timing (model loading is not a page's cost). Without --model only decode and OCR are timed. Prints
one Markdown table per data set: mean milliseconds per stage, the page total and OCR's share of it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ocr_quality import funsd_pages, invoice_pages

from layoutkit.pipelines.boxes import load_page
from layoutkit.pipelines.fields import extract_fields
from layoutkit.pipelines.line_items import group_line_items
from layoutkit.pipelines.ocr import RapidOcrEngine, get_ocr_engine

STAGES = ("decode", "detection", "angle cls", "recognition", "ocr other", "tesseract", "encoding", "forward",
          "fields", "JSON")
OCR_STAGES = ("detection", "angle cls", "recognition", "ocr other", "tesseract")


def parse_engine(text: str):
    """`rapidocr`, `rapidocr:fast`, `tesseract` -> (label, engine)."""
    name, _, preset = text.partition(":")
    options = {"preset": preset} if preset else {}
    return text, get_ocr_engine(name, **options)


def time_ocr(engine, page) -> tuple[dict[str, float], object]:
    """Seconds per OCR stage and the OCR words of one page."""
    started = time.perf_counter()
    if isinstance(engine, RapidOcrEngine):
        output = engine.run(page)
        result = engine.words(output, page)
        wall = time.perf_counter() - started
        det, cls, rec = ([*(output.elapse_list or []), 0, 0, 0])[:3] if output.txts else (wall, 0, 0)
        det, cls, rec = det or 0.0, cls or 0.0, rec or 0.0
        return {"detection": det, "angle cls": cls, "recognition": rec,
                "ocr other": max(0.0, wall - det - cls - rec)}, result
    result = engine(page)
    return {"tesseract": time.perf_counter() - started}, result


def profile_page(image_path: Path, engine, extractor, batch_size: int) -> dict[str, float]:
    seconds = {}
    started = time.perf_counter()
    with Image.open(image_path) as image:
        page = load_page(image)
    seconds["decode"] = time.perf_counter() - started
    ocr_seconds, ocr = time_ocr(engine, page)
    seconds.update(ocr_seconds)
    if extractor is None:
        return seconds
    started = time.perf_counter()
    inputs = extractor.preprocess({"image": page, "words": ocr.words, "boxes": ocr.boxes, "line_ids": ocr.line_ids})
    seconds["encoding"] = time.perf_counter() - started
    started = time.perf_counter()
    with torch.inference_mode():
        outputs = extractor._forward(inputs, window_batch_size=batch_size)
    seconds["forward"] = time.perf_counter() - started
    started = time.perf_counter()
    output = extractor.postprocess(outputs, return_words=True)
    document = {"pages": [{"page": 1, "width": output["width"], "height": output["height"]}],
                "entities": [{**entity, "page": 1} for entity in output["entities"]],
                "words": [{**word, "page": 1} for word in output["words"]]}
    document["fields"] = extract_fields(document["entities"])
    document["line_items"] = group_line_items(document["entities"])
    seconds["fields"] = time.perf_counter() - started
    started = time.perf_counter()
    json.dumps(document, indent=2, ensure_ascii=False)
    seconds["JSON"] = time.perf_counter() - started
    return seconds


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a token-classification checkpoint (encoding, forward, fields are timed)")
    parser.add_argument("--funsd", type=Path, help="FUNSD root (testing_data/ is used)")
    parser.add_argument("--invoices", type=Path, help="a folder of synthetic invoices (images/ + annotations/)")
    parser.add_argument("--engines", default="rapidocr,tesseract",
                        help="comma-separated NAME or NAME:PRESET (default rapidocr,tesseract)")
    parser.add_argument("--max_pages", type=int, default=10, help="pages per data set (default 10)")
    parser.add_argument("--batch_size", type=int, default=8, help="windows per forward pass (predict.py's default)")
    parser.add_argument("--output_json", type=Path)
    args = parser.parse_args(argv)
    datasets = {}
    if args.invoices:
        datasets["synthetic invoices"] = [page[1] for page in invoice_pages(args.invoices, args.max_pages)]
    if args.funsd:
        datasets["FUNSD test"] = [page[1] for page in funsd_pages(args.funsd, args.max_pages)]
    if not datasets:
        parser.error("give --invoices and/or --funsd")
    extractor = None
    if args.model:
        from layoutkit.apps.pipeline_loader import load_predictor

        extractor = load_predictor(args.model, device="cpu")
    engines = [parse_engine(text.strip()) for text in args.engines.split(",") if text.strip()]
    first = next(iter(datasets.values()))[0]
    for _, engine in engines:  # load the models and warm up
        profile_page(first, engine, extractor, args.batch_size)

    rows = []
    for dataset, paths in datasets.items():
        totals = {label: [] for label, _ in engines}
        # Engines take turns page by page, so a change in the machine's load falls on all of them alike.
        for path in paths:
            for label, engine in engines:
                totals[label].append(profile_page(path, engine, extractor, args.batch_size))
        for label, pages in totals.items():
            mean = {stage: 1000 * sum(page.get(stage, 0.0) for page in pages) / len(pages) for stage in STAGES}
            total = sum(mean.values())
            rows.append({"data": dataset, "engine": label, "pages": len(pages), "ms": mean, "total_ms": total,
                         "ocr_share": sum(mean[s] for s in OCR_STAGES) / total if total else 0.0})
            print(json.dumps(rows[-1]), file=sys.stderr)

    shown = [stage for stage in STAGES if any(row["ms"][stage] > 0 for row in rows)]
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; torch threads {torch.get_num_threads()}")
    print("| data | engine | pages | " + " | ".join(f"{stage} ms" for stage in shown) + " | page ms | OCR share |")
    print("|---|---|---|" + "---|" * len(shown) + "---|---|")
    for row in rows:
        cells = " | ".join(f"{row['ms'][stage]:.0f}" if row["ms"][stage] >= 1 else f"{row['ms'][stage]:.1f}"
                           for stage in shown)
        print(f"| {row['data']} | {row['engine']} | {row['pages']} | {cells} | {row['total_ms']:.0f} "
              f"| {100 * row['ocr_share']:.0f}% |")
    if args.output_json:
        args.output_json.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
