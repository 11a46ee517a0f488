#!/usr/bin/env python
"""End to end: page images in, field values out, compared with the gold values. What a user gets from a scan.

    python benchmarks/end_to_end.py --model runs/invoices-words --model runs/invoices-ocr \
        --data_dir data/sample_invoices --dataset_path data/invoices --engines given,tesseract,rapidocr
    python benchmarks/end_to_end.py --model runs/funsd --funsd ../shared/datasets/funsd --engines given,tesseract

Documents: the `--split` (default test) of the dataset built from `--data_dir` (its ids; the words, labels and
images are read from the annotation folder, before any resize), or FUNSD's testing_data. For each model and each
word source (`given`: the annotated words and boxes; an engine name: that OCR engine with the settings the model
records, or the engine's defaults) the page goes through the model's pipeline and `layoutkit.fields.extract_fields`
(one value per single-valued field, every value of a multiple one).

Gold values are the annotated entities' texts. A gold value is extracted exactly when a predicted value of the same
field has the same text (whitespace collapsed; each predicted value matches one gold value). Reported per field and
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
from collections import Counter
from pathlib import Path

from dataset_loader.annotations import read_annotation
from dataset_loader.funsd import read_funsd
from dataset_loader.ocr_build import OcrBuild
from layoutkit.labels import bio_spans
from layoutkit.pipeline_inputs import recorded_preprocessing, resolve_ocr_engine
from layoutkit.predictor import load_predictor


def squeeze(text: str) -> str:
    return " ".join(text.split())


def gold_values(document) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for span in bio_spans(document.labels):
        values.setdefault(span.label, []).append(squeeze(" ".join(document.words[span.start : span.end])))
    return values


def predicted_values(fields: dict) -> dict[str, list[str]]:
    values = {}
    for name, field in fields.items():
        texts = [v["text"] for v in field["values"]] if field.get("multiple") else [field["value"]]
        values[name] = [squeeze(text) for text in texts]
    return values


def load_documents(args) -> list:
    if args.funsd:
        paths = sorted((args.funsd / "testing_data" / "annotations").glob("*.json"))
        return [read_funsd(path) for path in paths[: args.max_docs]]
    from datasets import load_from_disk

    ids = load_from_disk(str(args.dataset_path))[args.split]["id"][: args.max_docs]
    return [read_annotation(args.data_dir / "annotations" / f"{i}.json", args.data_dir / "images") for i in ids]


class Tally:
    def __init__(self):
        self.gold, self.predicted, self.exact = Counter(), Counter(), Counter()
        self.seconds, self.pages = 0.0, 0

    def add(self, gold: dict[str, list[str]], predicted: dict[str, list[str]]) -> None:
        for name in set(gold) | set(predicted):
            expected, found = Counter(gold.get(name, [])), Counter(predicted.get(name, []))
            self.gold[name] += sum(expected.values())
            self.predicted[name] += sum(found.values())
            self.exact[name] += sum((expected & found).values())

    def row(self, name: str | None = None) -> dict:
        gold = sum(self.gold.values()) if name is None else self.gold[name]
        predicted = sum(self.predicted.values()) if name is None else self.predicted[name]
        exact = sum(self.exact.values()) if name is None else self.exact[name]
        return {"gold": gold, "predicted": predicted, "exact": exact,
                "recall": exact / gold if gold else 0.0, "precision": exact / predicted if predicted else 0.0}


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
    parser.add_argument("--max_docs", type=int)
    parser.add_argument("--ocr_cache", type=Path, help="reuse OCR results of `dataset_loader build --ocr-cache DIR`")
    parser.add_argument("--output_json", type=Path)
    args = parser.parse_args(argv)
    if not args.funsd and not (args.data_dir and args.dataset_path):
        parser.error("give --funsd, or --data_dir with --dataset_path")
    sources = [name.strip() for name in args.engines.split(",") if name.strip()]

    documents = load_documents(args)
    pages = {document.id: document.load_image() for document in documents}
    golds = {document.id: gold_values(document) for document in documents}
    ocr_cache: dict[str, dict] = {}  # engine settings -> document id -> (OcrResult, seconds)

    results = []
    for model in args.model:
        # An export folder of `python -m layoutkit.export_onnx` (fp32 or --quantize int8) runs on ONNX Runtime.
        backend = "onnx" if (Path(model) / "model.onnx").is_file() else "torch"
        extractor = load_predictor(model, backend=backend, task="token-classification", device="cpu")
        for source in sources:
            tally, ocr_seconds_total = Tally(), 0.0
            if source != "given":
                engine = resolve_ocr_engine(recorded_preprocessing(extractor.model.config).get("ocr"),
                                            {"engine": source})
                key = json.dumps(engine.settings(), sort_keys=True)
                if key not in ocr_cache:
                    ocr_cache[key] = {}
                    cached = OcrBuild(engine, args.ocr_cache) if args.ocr_cache else None
                    for document in documents:
                        started = time.perf_counter()
                        result = cached.read(document, pages[document.id]) if cached else engine(pages[document.id])
                        ocr_cache[key][document.id] = (result, None if cached else time.perf_counter() - started)
            for document in documents:
                started = time.perf_counter()
                if source == "given":
                    inputs = {"image": pages[document.id], "words": document.words, "boxes": document.boxes}
                    ocr_seconds = 0.0
                else:
                    ocr, ocr_seconds = ocr_cache[key][document.id]
                    inputs = {"image": pages[document.id], "words": ocr.words, "boxes": ocr.boxes,
                              "line_ids": ocr.line_ids}
                output = extractor(inputs, return_fields=True) if inputs["words"] else {"fields": {}}
                tally.seconds += time.perf_counter() - started
                ocr_seconds_total = None if ocr_seconds is None or ocr_seconds_total is None else (
                    ocr_seconds_total + ocr_seconds)
                tally.pages += 1
                tally.add(golds[document.id], predicted_values(output["fields"]))
            fields = sorted(tally.gold)
            results.append({
                "model": model, "words": source, "documents": len(documents),
                "model_seconds_per_page": tally.seconds / max(1, tally.pages),
                "ocr_seconds_per_page": None if ocr_seconds_total is None else ocr_seconds_total / max(1, tally.pages),
                "overall": tally.row(),
                "fields": {name: tally.row(name) for name in fields},
            })
            print(json.dumps(results[-1]["overall"] | {"model": model, "words": source}), file=sys.stderr)

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
