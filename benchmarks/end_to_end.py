#!/usr/bin/env python
"""End to end: page images in, field values out, compared with the gold values. What a user gets from a scan.

    python benchmarks/end_to_end.py --model runs/invoices-words --model runs/invoices-ocr \
        --data_dir data/sample_invoices --dataset_path data/invoices --engines given,tesseract,rapidocr
    python benchmarks/end_to_end.py --model runs/invoices-words --data_dir data/sample_invoices \
        --dataset_path data/invoices --engines rapidocr:accurate,rapidocr:fast --ocr_option threads=1
    python benchmarks/end_to_end.py --model runs/funsd --funsd ../shared/datasets/funsd --engines given,tesseract

Documents: the `--split` (default test) of the dataset built from `--data_dir` (its ids; the words, labels and
images are read from the annotation folder, before any resize), or FUNSD's testing_data. For each model and each
word source (`given`: the annotated words and boxes; an engine name: that OCR engine with the settings the model
records, or the engine's defaults; `rapidocr:PRESET`: RapidOCR with one of its presets, `--ocr_option KEY=VALUE`
for every engine's other settings) the page goes through the model's pipeline and `layoutkit.pipelines.fields.extract_fields`
(one value per single-valued field, every value of a multiple one).

Gold values are the annotated entities' texts; the measure is `layoutkit/apps/end_to_end.py`'s. Reported per field and
overall: exact-match recall (extracted exactly / gold values) and precision (exact / predicted values), plus
seconds per page for the model (pipeline and field extraction) and for OCR. OCR results are computed once per
engine setting and passed to every model as words, boxes and line ids, which is what the pipeline does with them
itself; with --ocr_cache they are read from (and written to) the cache `dataset_loader build --ocr` fills, and
OCR time is then not measured.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from dataset_loader.annotations import read_annotation
from dataset_loader.funsd import read_funsd
from dataset_loader.ocr_build import OcrBuild
from layoutkit.apps.end_to_end import annotation_files, measure
from layoutkit.apps.pipeline_loader import load_predictor
from layoutkit.pipelines.ocr import parse_engine_option
from layoutkit.pipelines.pipeline_inputs import recorded_preprocessing, resolve_ocr_engine


def load_documents(args) -> list:
    if args.funsd:
        paths = sorted((args.funsd / "testing_data" / "annotations").glob("*.json"))
        return [read_funsd(path) for path in paths[: args.max_docs]]
    paths = annotation_files(args.data_dir, args.dataset_path, args.split, args.max_docs)
    return [read_annotation(path, args.data_dir / "images") for path in paths]


def ocr_cell(result: dict) -> str:
    if result["words"] == "given":
        return "-"
    seconds = result["ocr_seconds_per_page"]
    return "cached" if seconds is None else f"{seconds:.2f}"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", required=True,
                        help="a checkpoint or an ONNX export folder (repeatable)")
    parser.add_argument("--data_dir", type=Path, help="annotation folder (images/ + annotations/)")
    parser.add_argument("--dataset_path", type=Path, help="the dataset built from --data_dir (for the split's ids)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--funsd", type=Path, help="FUNSD root instead (testing_data)")
    parser.add_argument("--engines", default="given,tesseract", help="comma-separated: given and/or OCR engine names")
    parser.add_argument("--ocr_option", action="append", default=[], metavar="KEY=VALUE",
                        help="an OCR engine setting for every engine, e.g. threads=1 (repeatable)")
    parser.add_argument("--max_docs", type=int)
    parser.add_argument("--ocr_cache", type=Path, help="reuse OCR results of `dataset_loader build --ocr_cache DIR`")
    parser.add_argument("--output_json", type=Path)
    args = parser.parse_args(argv)
    if not args.funsd and not (args.data_dir and args.dataset_path):
        parser.error("give --funsd, or --data_dir with --dataset_path")
    sources = [name.strip() for name in args.engines.split(",") if name.strip()]
    try:
        ocr_options = dict(parse_engine_option(option) for option in args.ocr_option)
    except ValueError as error:
        parser.error(f"--ocr_option: {error}")

    documents = load_documents(args)
    pages = {document.id: document.load_image() for document in documents}
    ocr_cache: dict[str, dict] = {}  # engine settings -> document id -> (OcrResult, seconds)

    results = []
    for model in args.model:
        # An export folder of `python -m layoutkit.apps.export_onnx` (fp32 or --quantize int8) runs on ONNX Runtime.
        backend = "onnx" if (Path(model) / "model.onnx").is_file() else "torch"
        extractor = load_predictor(model, backend=backend, task="token-classification", device="cpu")
        for source in sources:
            ocr_seconds_total = 0.0
            if source != "given":
                # `rapidocr:fast`: the engine's name, then its preset.
                engine_name, _, preset = source.partition(":")
                engine = resolve_ocr_engine(recorded_preprocessing(extractor.model.config).get("ocr"),
                                            {"engine": engine_name, "preset": preset or None, "options": ocr_options})
                key = json.dumps(engine.settings(), sort_keys=True)
                if key not in ocr_cache:
                    ocr_cache[key] = {}
                    cached = OcrBuild(engine, args.ocr_cache) if args.ocr_cache else None
                    for document in documents:
                        started = time.perf_counter()
                        result = cached.read(document, pages[document.id]) if cached else engine(pages[document.id])
                        ocr_cache[key][document.id] = (result, None if cached else time.perf_counter() - started)
                seconds = [ocr_cache[key][document.id][1] for document in documents]
                ocr_seconds_total = None if None in seconds else sum(seconds)

            def inputs_of(document, source=source, key=key if source != "given" else None):
                if source == "given":
                    return {"image": pages[document.id], "words": document.words, "boxes": document.boxes}
                ocr = ocr_cache[key][document.id][0]
                return {"image": pages[document.id], "words": ocr.words, "boxes": ocr.boxes, "line_ids": ocr.line_ids}

            tally = measure(extractor, documents, inputs_of)
            fields = sorted(tally.gold)
            results.append({
                "model": model, "words": source, "documents": len(documents),
                "model_seconds_per_page": tally.seconds / max(1, tally.pages),
                "ocr_seconds_per_page": None if ocr_seconds_total is None else ocr_seconds_total / max(1, tally.pages),
                "overall": tally.row(),
                "fields": {name: tally.row(name) for name in fields},
            })
            overall = results[-1]["overall"]
            print(f"{model}, words {source}: {overall['exact']}/{overall['gold']} values exact (recall "
                  f"{overall['recall']:.3f}, precision {overall['precision']:.3f})", file=sys.stderr)

    names = sorted({name for result in results for name in result["fields"]})
    print("| model | words | " + " | ".join(names) + " | **all fields** | precision | model s/page | OCR s/page |")
    print("|---|---|" + "---|" * (len(names) + 4))
    for result in results:
        cells = [f"{result['fields'][n]['recall']:.3f}" if n in result["fields"] else "-" for n in names]
        overall = result["overall"]
        print(f"| {result['model']} | {result['words']} | " + " | ".join(cells)
              + f" | **{overall['recall']:.3f}** ({overall['exact']}/{overall['gold']}) | {overall['precision']:.3f} "
              f"| {result['model_seconds_per_page']:.2f} | {ocr_cell(result)} |")
    if args.output_json:
        args.output_json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
