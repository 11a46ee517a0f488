#!/usr/bin/env python
"""PDFs end to end: field values from a PDF's text layer against the given words and OCR, through predict.py's code
path, and the per-page routing (`--pdf_text auto`) against the truth.

    python -m dataset_loader synth --output data/pdf --num_docs 600 --seed 0 --format pdf
    python -m dataset_loader synth --output data/pdf_mixed --num_docs 600 --seed 0 --format pdf \
        --scanned_share 0.5 --multi_page 0.3
    python benchmarks/pdf_words.py --model runs/invoices-layoutlm-small --pdf_dir data/pdf \
        --mixed_dir data/pdf_mixed --dataset_path data/invoices --sources pdf_text,given,rapidocr,tesseract

Documents: the `--split` (default test) ids of `--dataset_path`, as PDFs written by `dataset_loader synth --format
pdf` with the same seed as the dataset (the same invoices; the annotations hold the words drawn into the text layer
and their boxes at 200 DPI). Each word source runs `layoutkit.apps.documents.pdf_page_inputs` + `layoutkit.apps.document_prediction.
predict_document`, what predict.py runs per document:

- `given`: the annotation's words and boxes on the rendered page (`--words_json`);
- `pdf_text`: `--pdf_text auto` (the text layer; a page without one would go to OCR);
- an OCR engine name: `--pdf_text never --ocr_engine NAME` (the page rendered at 200 DPI, then read).

Seconds per page are wall-clock for the whole path (render, words, model, fields), per document in one process, one
after the other. Exact match is end_to_end.py's: a gold value is extracted exactly when a predicted value of the
same field has the same text; a document's gold values are those of all its pages, its predicted values those of
its one JSON. Multi-page documents (`--mixed_dir`, born-digital ones) are reported apart.

Text extractors (`--compare_extractors N`): pypdfium2 (`layoutkit.pipelines.pdf_text`) and pdfplumber (`extract_words`) on
the first N PDFs of `--pdf_dir`: milliseconds per page, and the words' agreement with the annotation (texts: share
of annotation words found, in order-free multiset terms; boxes: mean IoU of the words matched in reading order).

Routing (`--mixed_dir`): each page's `--pdf_text auto` decision (text layer or OCR) against the annotation's
`source` (pdf_text or scanned).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

from layoutkit.apps.document_prediction import predict_document
from layoutkit.apps.documents import pdf_page_inputs
from layoutkit.apps.end_to_end import Tally, predicted_values, split_ids, squeeze
from layoutkit.apps.pipeline_loader import load_predictor
from layoutkit.apps.settings import InferenceSettings
from layoutkit.pipelines.labels import bio_spans

DPI = 200
BATCH_SIZE = 8  # windows per forward pass, predict.py's default


def annotations_of(folder: Path, document_id: str) -> list[dict]:
    """The page annotations of one synthetic PDF, in page order."""
    pages = [json.loads(path.read_text(encoding="utf-8"))
             for path in sorted((folder / "annotations").glob(f"{document_id}*.json"))]
    pages = [page for page in pages if page.get("document_id", document_id) == document_id]
    return sorted(pages, key=lambda page: page.get("page", 1))


def gold_of(pages: list[dict]) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for page in pages:
        for span in bio_spans(page["labels"]):
            values.setdefault(span.label, []).append(squeeze(" ".join(page["words"][span.start:span.end])))
    return values


def settings(model: str, ocr_engine: str | None) -> InferenceSettings:
    """predict_document's settings as predict.py's command line gives them by default."""
    return InferenceSettings(model_name_or_path=model, ocr_engine=ocr_engine)


def run_source(extractor, model: str, source: str, path: Path, pages: list[dict]) -> tuple[dict, list[str]]:
    """One document through predict's path with words from `source`; its JSON and each page's words_source."""
    if source == "given":
        inputs = pdf_page_inputs(path, DPI, 10**9, "never")
        result, _ = predict_document(extractor, path, inputs, pages, settings(model, None), BATCH_SIZE,
                                     words_source="annotation")
    elif source == "pdf_text":
        result, _ = predict_document(extractor, path, pdf_page_inputs(path, DPI, 10**9, "auto"), None,
                                     settings(model, None), BATCH_SIZE)
    else:
        result, _ = predict_document(extractor, path, pdf_page_inputs(path, DPI, 10**9, "never"), None,
                                     settings(model, source), BATCH_SIZE)
    return result, [page["words_source"] for page in result["pages"]]


def compare_extractors(folder: Path, count: int) -> list[dict]:
    import pdfplumber
    import pypdfium2

    from layoutkit.pipelines.pdf_text import read_text_layer

    paths = sorted((folder / "images").glob("*.pdf"))[:count]
    rows = []
    # pdfplumber's default joins characters less than 3 pt apart into a word: on these invoices (9-10 pt text drawn
    # word by word) that merges neighbouring words, so it is also measured with a tolerance that separates them.
    for name, tolerance in (("pypdfium2", None), ("pdfplumber", 3), ("pdfplumber", 1.5)):
        seconds, found, total, ious = 0.0, 0, 0, []
        for path in paths:
            gold = annotations_of(folder, path.stem)
            for page_number, annotation in enumerate(gold):
                started = time.perf_counter()
                if name == "pypdfium2":
                    pdf = pypdfium2.PdfDocument(str(path))
                    page = pdf[page_number]
                    width, height = (int(-(-v * DPI // 72)) for v in page.get_size())
                    textpage = page.get_textpage()
                    layer = read_text_layer(page, textpage, width, height)
                    words, boxes = layer.words, layer.boxes
                    textpage.close()
                    page.close()
                    pdf.close()
                else:
                    with pdfplumber.open(path) as pdf:
                        page = pdf.pages[page_number]
                        extracted = page.extract_words(x_tolerance=tolerance)
                        scale = DPI / 72
                        words = [w["text"] for w in extracted]
                        boxes = [[w["x0"] * scale, w["top"] * scale, w["x1"] * scale, w["bottom"] * scale]
                                 for w in extracted]
                seconds += time.perf_counter() - started
                expected = Counter(annotation["words"])
                found += sum((expected & Counter(words)).values())
                total += sum(expected.values())
                ious.extend(matched_ious(annotation["words"], annotation["boxes"], words, boxes))
        pages = sum(len(annotations_of(folder, p.stem)) for p in paths)
        rows.append({"extractor": name if tolerance is None else f"{name} (x_tolerance={tolerance})", "pages": pages, "ms_per_page": 1000 * seconds / max(1, pages),
                     "words_found": found / max(1, total), "mean_box_iou": sum(ious) / max(1, len(ious))})
        print(json.dumps(rows[-1]), file=sys.stderr)
    return rows


def matched_ious(gold_words, gold_boxes, words, boxes) -> list[float]:
    """IoU of each gold word with the first unused extracted word of the same text (reading order)."""
    unused: dict[str, list[int]] = {}
    for index, word in enumerate(words):
        unused.setdefault(word, []).append(index)
    ious = []
    for word, box in zip(gold_words, gold_boxes):
        if unused.get(word):
            other = boxes[unused[word].pop(0)]
            ious.append(iou(box, other))
    return ious


def iou(a, b) -> float:
    x0, y0, x1, y1 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def route_check(folder: Path, ids: list[str]) -> dict:
    """Each page's --pdf_text auto decision against the annotation's source."""
    counts: Counter = Counter()
    wrong = []
    for document_id in ids:
        path = folder / "images" / f"{document_id}.pdf"
        truth = [page.get("source", "pdf_text") for page in annotations_of(folder, document_id)]
        for number, page in enumerate(pdf_page_inputs(path, DPI, 10**9, "auto"), start=1):
            decided = "pdf_text" if page["words_source"] else "ocr"
            expected = "pdf_text" if truth[number - 1] == "pdf_text" else "ocr"
            counts[(expected, decided)] += 1
            if expected != decided:
                wrong.append(f"{path.name} page {number}: {truth[number - 1]} routed to {decided} ({page['route']})")
    return {"pages": sum(counts.values()), "correct": counts[("pdf_text", "pdf_text")] + counts[("ocr", "ocr")],
            "counts": {f"{e} -> {d}": n for (e, d), n in sorted(counts.items())}, "wrong": wrong}


def evaluate(extractor, model: str, folder: Path, ids: list[str], sources: list[str], label: str,
             only_born_digital: bool = False) -> list[dict]:
    results = []
    documents = {i: annotations_of(folder, i) for i in ids}
    if only_born_digital:
        documents = {i: p for i, p in documents.items() if all(a.get("source", "pdf_text") == "pdf_text" for a in p)}
    groups = {"single-page": [i for i, p in documents.items() if len(p) == 1],
              "multi-page": [i for i, p in documents.items() if len(p) > 1]}
    for source in sources:
        for group, members in groups.items():
            if not members:
                continue
            tally, sources_seen = Tally(), Counter()
            for document_id in members:
                started = time.perf_counter()
                result, page_sources = run_source(extractor, model, source, folder / "images" / f"{document_id}.pdf",
                                                  documents[document_id])
                tally.seconds += time.perf_counter() - started
                tally.pages += len(page_sources)
                sources_seen.update(page_sources)
                tally.add(gold_of(documents[document_id]), predicted_values(result["fields"]))
            results.append({"set": label, "group": group, "words": source, "documents": len(members),
                            "pages": tally.pages, "seconds_per_page": tally.seconds / max(1, tally.pages),
                            "words_source": dict(sources_seen), "overall": tally.row(),
                            "fields": {name: tally.row(name) for name in sorted(tally.gold)}})
            print(json.dumps({k: v for k, v in results[-1].items() if k != "fields"}), file=sys.stderr)
    return results


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a token-classification checkpoint")
    parser.add_argument("--pdf_dir", type=Path, required=True, help="synth --format pdf output (born-digital)")
    parser.add_argument("--mixed_dir", type=Path, help="synth --format pdf --scanned_share S --multi_page M output")
    parser.add_argument("--dataset_path", type=Path, required=True, help="the dataset whose split ids are used")
    parser.add_argument("--split", default="test")
    parser.add_argument("--sources", default="pdf_text,given,rapidocr", help="comma-separated word sources")
    parser.add_argument("--max_docs", type=int)
    parser.add_argument("--compare_extractors", type=int, default=0, metavar="N")
    parser.add_argument("--output_json", type=Path)
    args = parser.parse_args(argv)
    ids = split_ids(args.dataset_path, args.split, args.max_docs)
    sources = [s.strip() for s in args.sources.split(",") if s.strip()]
    report: dict = {"model": args.model, "split": args.split, "documents": len(ids)}
    if args.compare_extractors:
        report["extractors"] = compare_extractors(args.pdf_dir, args.compare_extractors)
    extractor = load_predictor(args.model, backend="torch", task="token-classification", device="cpu")
    report["results"] = evaluate(extractor, args.model, args.pdf_dir, ids, sources, "born-digital")
    if args.mixed_dir:
        report["routing"] = route_check(args.mixed_dir, ids)
        report["results"] += evaluate(extractor, args.model, args.mixed_dir, ids, ["pdf_text"], "mixed (auto)")
        report["results"] += evaluate(extractor, args.model, args.mixed_dir, ids, ["pdf_text"],
                                      "mixed, born-digital documents", only_born_digital=True)

    if report.get("extractors"):
        print("| extractor | pages | ms/page | annotation words found | mean box IoU |\n|---|---|---|---|---|")
        for row in report["extractors"]:
            print(f"| {row['extractor']} | {row['pages']} | {row['ms_per_page']:.1f} | {row['words_found']:.4f} "
                  f"| {row['mean_box_iou']:.3f} |")
        print()
    names = sorted({name for result in report["results"] for name in result["fields"]})
    print("| set | documents | words | pages | words_source | " + " | ".join(names)
          + " | **all fields** | s/page | pages/s |")
    print("|---|---|---|---|---|" + "---|" * (len(names) + 3))
    for result in report["results"]:
        cells = [f"{result['fields'][n]['recall']:.3f}" if n in result["fields"] else "-" for n in names]
        overall = result["overall"]
        seen = ", ".join(f"{k} {v}" for k, v in result["words_source"].items())
        print(f"| {result['set']} {result['group']} | {result['documents']} | {result['words']} | {result['pages']} "
              f"| {seen} | " + " | ".join(cells)
              + f" | **{overall['recall']:.3f}** ({overall['exact']}/{overall['gold']}) "
              f"| {result['seconds_per_page']:.3f} | {1 / max(1e-9, result['seconds_per_page']):.2f} |")
    if report.get("routing"):
        routing = report["routing"]
        print(f"\nrouting (--pdf_text auto vs truth): {routing['correct']}/{routing['pages']} pages right; "
              + ", ".join(f"{k}: {v}" for k, v in routing["counts"].items()))
        for line in routing["wrong"]:
            print(f"  wrong: {line}")
    if args.output_json:
        args.output_json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
