#!/usr/bin/env python
"""OCR quality per engine and setting, against gold words and boxes: FUNSD test pages and rendered synthetic invoices.

    python benchmarks/ocr_quality.py --funsd ../shared/datasets/funsd --invoices data/sample_invoices --max_pages 20

For every page: word recall (gold words found by an OCR word with the same text whose box overlaps the gold box by
half the smaller box), word precision (OCR words that are such a match), character error rate of each gold word
against its best-overlapping OCR word, seconds per page (wall), CPU seconds per page (the process's user + system
time around the engine call: the work a page takes, robust to a busy machine when ONNX Runtime runs one thread,
`--rapidocr_threads 1`) and the process's peak memory (RSS, MiB, after the setting ran, each setting in a fresh
process; RapidOCR's models are loaded and run once on the first page before timing). Prints a Markdown table;
--output_json keeps the numbers.

Settings (`--settings`, comma-separated names of `SETTINGS` below) vary one thing at a time from Tesseract's
defaults, so each row says what that choice is worth.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from PIL import Image

from layoutkit.pipelines.boxes import load_page
from layoutkit.pipelines.ocr import get_ocr_engine
from layoutkit.train.ocr_alignment import QualityCounts, ocr_quality

# name -> (engine, options)
SETTINGS = {
    "tesseract": ("tesseract", {}),  # the defaults: psm 3 (fallback 6), pages under 2000 px upscaled
    "tesseract-no-upscale": ("tesseract", {"min_height": 0}),
    "tesseract-upscale-3000": ("tesseract", {"min_height": 3000}),
    "tesseract-gray": ("tesseract", {"preprocess": "gray"}),
    "tesseract-threshold": ("tesseract", {"preprocess": "threshold"}),
    "tesseract-psm6": ("tesseract", {"psm": 6, "fallback_psms": []}),
    "tesseract-psm4": ("tesseract", {"psm": 4, "fallback_psms": []}),
    "rapidocr": ("rapidocr", {}),  # the default preset, "fast"
    "rapidocr-accurate": ("rapidocr", {"preset": "accurate"}),  # RapidOCR's own configuration
    "rapidocr-fast": ("rapidocr", {"preset": "fast"}),  # no angle classifier, detection 960, lines at own width
    "rapidocr-fast-openvino": ("rapidocr", {"preset": "fast-openvino"}),  # "fast", detection on OpenVINO
    "rapidocr-fastest-openvino": ("rapidocr", {"preset": "fastest-openvino"}),  # both models on OpenVINO
    "rapidocr-fast-rec-batch-16": ("rapidocr", {"preset": "accurate",  # the first "fast" preset, 16 lines a batch
                                                "params": {"Global.use_cls": False, "Rec.rec_batch_num": 16}}),
    "rapidocr-no-cls": ("rapidocr", {"preset": "accurate", "params": {"Global.use_cls": False}}),
    # One lever of the "fast" preset at a time, on top of no angle classifier (the first "fast", = rapidocr-no-cls;
    # params go on top of a preset, so these start from "accurate", RapidOCR's own configuration):
    "rapidocr-det-max-960": ("rapidocr", {"preset": "accurate", "params": {
        "Global.use_cls": False, "Det.limit_type": "max", "Det.limit_side_len": 960}}),
    "rapidocr-det-max-736": ("rapidocr", {"preset": "accurate", "params": {
        "Global.use_cls": False, "Det.limit_type": "max", "Det.limit_side_len": 736}}),
    "rapidocr-rec-min-width-48": ("rapidocr", {"preset": "accurate", "params": {
        "Global.use_cls": False, "Rec.rec_img_shape": [3, 48, 48]}}),
    "rapidocr-1-thread": ("rapidocr", {"threads": 1}),
}


def funsd_pages(root: Path, limit: int | None):
    for path in sorted((root / "testing_data" / "annotations").glob("*.json"))[:limit]:
        form = json.loads(path.read_text(encoding="utf-8"))["form"]
        words = [w for entity in form for w in entity["words"] if w["text"].strip()]
        image = root / "testing_data" / "images" / f"{path.stem}.png"
        yield path.stem, image, [w["text"] for w in words], [w["box"] for w in words]


def invoice_pages(root: Path, limit: int | None):
    # The last pages of the folder: the quick start trains on the first ones.
    for path in sorted((root / "annotations").glob("*.json"))[-limit if limit else None:]:
        data = json.loads(path.read_text(encoding="utf-8"))
        yield path.stem, root / "images" / data["image"], data["words"], data["boxes"]


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def read_page(image_path) -> Image.Image:
    with Image.open(image_path) as image:
        return load_page(image)


def measure(engine_name: str, options: dict, pages) -> dict:
    """Run in a fresh process (see main), so peak memory and CPU time are this setting's own."""
    engine = get_ocr_engine(engine_name, **options)
    if pages:
        engine(read_page(pages[0][1]))  # RapidOCR loads its models on its first page: not a page's work
    counts, seconds, cpu_seconds = QualityCounts(), 0.0, 0.0
    for _, image_path, words, boxes in pages:
        page = read_page(image_path)
        started, cpu_started = time.perf_counter(), time.process_time()
        result = engine(page)
        seconds += time.perf_counter() - started
        cpu_seconds += time.process_time() - cpu_started
        counts.add(ocr_quality(words, boxes, result.words, result.boxes))
    count = len(pages)
    return {"pages": count, "recall": counts.recall, "precision": counts.precision, "cer": counts.cer,
            "seconds_per_page": seconds / max(1, count), "cpu_seconds_per_page": cpu_seconds / max(1, count),
            "peak_rss_mib": peak_rss_mib()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--funsd", type=Path, help="FUNSD root (testing_data/ is used)")
    parser.add_argument("--invoices", type=Path, help="a folder of synthetic invoices (images/ + annotations/)")
    parser.add_argument("--max_pages", type=int, default=20, help="pages per data set (default 20)")
    parser.add_argument("--settings", default=",".join(SETTINGS), help=f"comma-separated, from {', '.join(SETTINGS)}")
    parser.add_argument("--rapidocr_threads", type=int,
                        help="ONNX Runtime threads of every RapidOCR setting (default: ONNX Runtime's, one per core); "
                             "1 makes CPU seconds the work of a page")
    parser.add_argument("--output_json", type=Path)
    args = parser.parse_args(argv)
    names = [name.strip() for name in args.settings.split(",") if name.strip()]
    unknown = sorted(set(names) - set(SETTINGS))
    if unknown:
        parser.error(f"unknown settings {unknown}")
    datasets = {}
    if args.funsd:
        datasets["FUNSD test"] = list(funsd_pages(args.funsd, args.max_pages))
    if args.invoices:
        datasets["synthetic invoices"] = list(invoice_pages(args.invoices, args.max_pages))
    if not datasets:
        parser.error("give --funsd and/or --invoices")

    rows = []
    for name in names:
        engine_name, options = SETTINGS[name]
        if engine_name == "rapidocr" and args.rapidocr_threads:
            options = {**options, "threads": args.rapidocr_threads}
        for dataset, pages in datasets.items():
            with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
                measured = pool.submit(measure, engine_name, options, pages).result()
            row = {"setting": name, "data": dataset, **measured}
            rows.append(row)
            print(json.dumps(row), file=sys.stderr)

    print("| data | setting | pages | word recall | word precision | CER | s/page | CPU s/page | peak RSS MiB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for row in sorted(rows, key=lambda r: (r["data"], names.index(r["setting"]))):
        print(f"| {row['data']} | {row['setting']} | {row['pages']} | {row['recall']:.3f} | {row['precision']:.3f} "
              f"| {row['cer']:.3f} | {row['seconds_per_page']:.2f} | {row['cpu_seconds_per_page']:.2f} "
              f"| {row['peak_rss_mib']:.0f} |")
    if args.output_json:
        args.output_json.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
