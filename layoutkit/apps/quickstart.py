"""The offline quick start, from any folder: sample invoices -> dataset -> a small model trained from scratch ->
its test scores -> its field confidence calibrated on validation pages read by OCR -> an unseen invoice's fields
-> end to end on test pages, with the words given and with OCR.

    layoutkit quickstart [--output_dir ./layoutkit-quickstart]      (scripts/quickstart.sh runs the same)
    layoutkit quickstart --small                                     (a one-minute version, few documents)

Everything goes under --output_dir: data/ (the sample invoices and the dataset built from them), runs/ (the
tokenizer and config, the trained model with its MLflow store when mlflow is installed, the unseen invoice's
predictions), summary.md and summary.json (the final table). Each step prints a banner and its time; the end is one
summary table: test entity F1 per field, and end-to-end exact match per field with the words given (the annotated
words, what the test F1 measures) and read by OCR (what a scan gives), on the sample version it names.

Why this recipe (see the README): LayoutLM v1 reads no page image, so it trains several times faster than
LayoutLMv3 on a CPU; a model without pretraining learns the keyword -> value pairs from many documents rather than
many passes over few (240 invoices plateau at F1 0.6), hence 2000 invoices and 6 epochs; one augmented copy of
each training invoice (`--augment`: boxes moved, scaled, tilted and jittered by a pixel or two, and half of the copies
with their words in reading order), because a model that only ever saw the generator's exact boxes and word order
loses values on the slightly different boxes of a PDF's text layer and on the line-by-line order of an OCR engine;
fp32, because at this size autocast's casts cost more than bf16 products save on a CPU.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

from ..cli import program_name, progress_bars_on_terminal_only


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=program_name("python -m layoutkit.apps.quickstart"), description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", type=Path, default=Path("layoutkit-quickstart"),
                        help="where data, runs and the summary go (default ./layoutkit-quickstart)")
    parser.add_argument("--num_docs", type=int, default=2000, help="sample invoices to generate (default 2000)")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--model_type", default="layoutlm", help="layoutlm (default), layoutlmv3, lilt, ...")
    parser.add_argument("--size", default="small", help="the from-scratch model's size (layoutkit scratch --size)")
    parser.add_argument("--ocr", help="train on the words this OCR engine reads (tesseract, rapidocr) instead of the "
                                      "annotated ones (slower to build; docs/ocr.md)")
    parser.add_argument("--e2e_engine", default="rapidocr",
                        help="OCR engine of the end-to-end step (default rapidocr; `none` for words given only)")
    parser.add_argument("--e2e_docs", type=int, default=50, help="test invoices of the end-to-end step (default 50)")
    parser.add_argument("--augment_copies", type=int, default=1,
                        help="augmented copies of each training invoice (train-ner --augment; 0: none)")
    parser.add_argument("--mixed_precision", default="no", help="no (fp32, default), bf16, fp16")
    parser.add_argument("--small", action="store_true",
                        help="a one-minute run: 40 invoices, a tiny model, 3 epochs, 3 end-to-end pages (checks the "
                             "installation, not the model)")
    args = parser.parse_args(argv)
    if args.small:
        args.num_docs, args.epochs, args.size, args.e2e_docs = 40, 3, "tiny", 3
    args.vocab_size = 600 if args.size == "tiny" else 4000
    if args.num_docs < 10:
        parser.error("--num_docs must be at least 10 (train, validation and test splits)")
    return args


class Steps:
    """Numbered step banners with each step's time."""

    def __init__(self, total: int):
        self.number, self.total, self.times = 0, total, {}

    def start(self, name: str, detail: str = "") -> None:
        self.number += 1
        self.name, self.started = name, time.perf_counter()
        print(f"\n==> [{self.number}/{self.total}] {name}" + (f": {detail}" if detail else ""), flush=True)

    def done(self, note: str = "") -> None:
        seconds = time.perf_counter() - self.started
        self.times[self.name] = seconds
        print(f"    {self.name} done in {duration(seconds)}" + (f"; {note}" if note else ""), flush=True)


def duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes} min {seconds:02d} s" if minutes else f"{seconds} s"


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    progress_bars_on_terminal_only()
    from dataset_loader.__main__ import main as dataset_main
    from dataset_loader.synth import ENTITY_TYPES, SAMPLE_VERSION

    out = args.output_dir.resolve()
    data, runs = out / "data", out / "runs"
    sample, dataset = data / "sample_invoices", data / "invoices"
    scratch = runs / f"scratch-{args.model_type}-{args.size}"
    model = runs / f"invoices-{args.model_type}-{args.size}"
    sample_name = f"dataset_loader synth v{SAMPLE_VERSION}, {len(ENTITY_TYPES)} field types"
    print(f"layoutkit quick start into {out}: {args.num_docs} synthetic invoices ({sample_name}); "
          f"{args.model_type} {args.size} from scratch, {args.epochs} epochs")
    # OCR's words get a calibration of their own (`layoutkit calibrate`) where the end-to-end step reads with OCR.
    ocr_engine = None if args.e2e_engine in ("", "none") else args.e2e_engine
    if ocr_engine == "rapidocr" and importlib.util.find_spec("rapidocr") is None:
        print("    (rapidocr is not installed: no OCR calibration or OCR column; pip install 'layoutkit[ocr]')")
        ocr_engine = None
    steps = Steps(8 if ocr_engine else 7)

    steps.start("generate", f"{args.num_docs} synthetic invoices, seed 0 -> {sample}")
    check(dataset_main(["synth", "--output", str(sample), "--num_docs", str(args.num_docs), "--seed", "0",
                        "--overwrite"]), "generating the sample")
    steps.done()

    steps.start("build", f"the dataset (train/validation/test) -> {dataset}")
    build = ["build", "--data_dir", str(sample), "--output", str(dataset), "--seed", "0", "--overwrite"]
    check(dataset_main(build + (["--ocr", args.ocr] if args.ocr else [])), "building the dataset")
    steps.done()

    steps.start("scratch", f"a {args.size} {args.model_type} config and a tokenizer trained on the words -> {scratch}")
    from .scratch import main as scratch_main

    check(scratch_main(["--model_type", args.model_type, "--size", args.size, "--vocab_size", str(args.vocab_size),
                        "--dataset_path", str(dataset), "--output_dir", str(scratch)]), "the scratch model")
    steps.done()

    steps.start("train", f"{args.epochs} epochs, one line per epoch, then the test split -> {model}")
    tracking = importlib.util.find_spec("mlflow") is not None
    if not tracking:
        print("    (mlflow is not installed: no tracking; pip install 'layoutkit[tracking]' to record the run)")
    # Through the `layoutkit train-ner` command, as a user runs it (the apps import no training code themselves).
    from ..cli import main as layoutkit_command

    check(layoutkit_command([
        "train-ner", "--dataset_path", str(dataset), "--config_name", str(scratch), "--output_dir", str(model),
        "--num_train_epochs", str(args.epochs), "--learning_rate", "1e-3", "--warmup_ratio", "0.1",
        "--per_device_train_batch_size", "8", "--early_stopping_patience", "3",
        *(["--augment", "--augment_copies", str(args.augment_copies)] if args.augment_copies > 0 else []),
        "--mixed_precision", args.mixed_precision, *(["--with_tracking"] if tracking else [])]), "training")
    steps.done()

    steps.start("test", "the kept model on the held-out test split (entity F1 per field)")
    results = json.loads((model / "all_results.json").read_text())
    print(f"    test entity F1 {results['test_f1']:.3f} (precision {results['test_precision']:.3f}, recall "
          f"{results['test_recall']:.3f}, word accuracy {results['test_accuracy']:.3f}); per field in the summary")
    steps.done()

    if ocr_engine:
        steps.start("calibrate", f"field confidence on the validation invoices read by {ocr_engine} (`layoutkit "
                                 "calibrate`: config.json), for pages whose words OCR reads")
        check(layoutkit_command(["calibrate", "--model", str(model), "--data_dir", str(sample), "--dataset_path",
                                 str(dataset), "--split", "validation", "--ocr_engine", ocr_engine]), "calibrating")
        steps.done()

    steps.start("unseen invoice", "a new invoice (seed 12345) with its words given, through `layoutkit predict`")
    unseen = unseen_invoice(model, data / "unseen_invoice", runs / "predictions")
    steps.done(f"{unseen['exact']} of {unseen['gold']} values as annotated")

    engines = ["given"] + ([ocr_engine] if ocr_engine else [])
    steps.start("end to end", f"{args.e2e_docs} test invoices, page image in, field values out; words: "
                              + ", ".join(engines))
    end_to_end = end_to_end_scores(model, sample, dataset, engines, args.e2e_docs)
    steps.done()

    summary = {"sample_version": SAMPLE_VERSION, "sample": sample_name, "num_docs": args.num_docs,
               "model_type": args.model_type, "size": args.size, "epochs": args.epochs,
               "augment_copies": args.augment_copies, "test": {k: v for k, v in results.items() if k.startswith("test_")}, "end_to_end": end_to_end,
               "unseen_invoice": unseen, "seconds": steps.times}
    table = summary_table(summary)
    (out / "summary.md").write_text(table + "\n", encoding="utf-8")
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(f"\n==> Summary (also in {out / 'summary.md'})\n\n{table}")
    return 0


def check(code, what: str) -> None:
    if code not in (0, None):
        raise SystemExit(f"quick start: {what} failed (exit code {code}); see the messages above")


def unseen_invoice(model: Path, folder: Path, predictions: Path) -> dict:
    """Generate one invoice the model never saw, run `layoutkit predict` on it, print its fields as a table."""
    from dataset_loader.__main__ import main as dataset_main

    from .end_to_end import gold_values
    from .predict import main as predict_main

    check(dataset_main(["synth", "--output", str(folder), "--num_docs", "1", "--seed", "12345", "--overwrite"]),
          "generating the unseen invoice")
    annotation = folder / "annotations" / "invoice_00000.json"
    check(predict_main(["--model_name_or_path", str(model), "--input", str(folder / "images" / "invoice_00000.png"),
                        "--words_json", str(annotation), "--output_dir", str(predictions), "--draw"]),
          "predicting the unseen invoice")
    path = predictions / "invoice_00000.json"
    fields = json.loads(path.read_text())["fields"]
    from dataset_loader.annotations import read_annotation

    gold = gold_values(read_annotation(annotation, folder / "images"))
    rows, exact, total = [], 0, 0
    for name in dict.fromkeys([*gold, *fields]):
        field = fields.get(name, {})
        values = field.get("values", []) if field.get("multiple") else [field] if field else []
        found = [(" ".join((v.get("text") if field.get("multiple") else v.get("value")).split()), v.get("score"))
                 for v in values]
        expected = list(gold.get(name, []))
        total += len(expected)
        missed = [text for text in expected if text not in [f for f, _ in found]]
        for text, score in found:
            right = text in expected
            if right:
                expected.remove(text)
                exact += 1
            annotated = text if right else (missed.pop(0) if missed else "")
            rows.append((name, text, "" if score is None else f"{score:.2f}", annotated, "yes" if right else "no"))
        rows += [(name, "(not found)", "", text, "no") for text in missed]
    print(text_table(["field", "predicted", "score", "annotated", "same"], rows))
    print(f"    JSON (fields with candidates and boxes, line items, entities, words): {path}")
    print(f"    drawing (words and fields on the page): {path.with_suffix('.page1.png')}")
    return {"exact": exact, "gold": total, "json": str(path)}


def end_to_end_scores(model: Path, sample: Path, dataset: Path, engines: list[str], max_docs: int) -> dict:
    """Exact match per field on the first `max_docs` test invoices, per word source (layoutkit/apps/end_to_end.py)."""
    from transformers import pipeline

    from dataset_loader.annotations import read_annotation

    from ..pipelines.pipeline_inputs import recorded_preprocessing, resolve_ocr_engine
    from ..pipelines.token_classification_pipeline import LayoutTokenClassificationPipeline
    from .end_to_end import annotation_files, measure

    documents = [read_annotation(path, sample / "images") for path in annotation_files(sample, dataset, "test", max_docs)]
    pages = {document.id: document.load_image() for document in documents}
    extractor = pipeline("token-classification", model=str(model), pipeline_class=LayoutTokenClassificationPipeline,
                         device="cpu")
    scores = {}
    for source in engines:
        if source == "given":
            def inputs_of(document):
                return {"image": pages[document.id], "words": document.words, "boxes": document.boxes}
        else:
            engine = resolve_ocr_engine(recorded_preprocessing(extractor.model.config).get("ocr"), {"engine": source})

            def inputs_of(document, engine=engine):
                result = engine(pages[document.id])
                return {"image": pages[document.id], "words": result.words, "boxes": result.boxes,
                        "line_ids": result.line_ids}

        tally = measure(extractor, documents, inputs_of, progress=Progress(f"words {source}", len(documents)))
        overall = tally.row()
        print(f"    words {source}: {overall['exact']} of {overall['gold']} values exact ({overall['recall']:.3f}), "
              f"{tally.seconds / max(1, tally.pages):.2f} s per page")
        scores[source] = {"overall": overall, "fields": {name: tally.row(name) for name in sorted(tally.gold)},
                          "documents": len(documents), "seconds_per_page": tally.seconds / max(1, tally.pages)}
    return scores


class Progress:
    """`done` of `total` pages: redrawn in place on a terminal, a line at each quarter in a log."""

    def __init__(self, label: str, total: int):
        self.label, self.total = label, total
        self.terminal = sys.stdout.isatty()
        self.marks = {max(1, round(total * q / 4)) for q in (1, 2, 3, 4)}

    def __call__(self, done: int) -> None:
        if self.terminal:
            print(f"\r    {self.label}: {done}/{self.total} pages", end="\n" if done == self.total else "", flush=True)
        elif done in self.marks:
            print(f"    {self.label}: {done}/{self.total} pages", flush=True)


def text_table(header: list[str], rows: list[tuple]) -> str:
    """A plain aligned table, values cut at 36 characters."""
    cells = [[str(c) if len(str(c)) <= 36 else str(c)[:35] + "…" for c in row] for row in [header, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join("    " + line for line in lines)


def augmented(copies: int) -> str:
    return f", {copies} augmented cop{'y' if copies == 1 else 'ies'} of each training invoice" if copies else ""


def summary_table(summary: dict) -> str:
    """The Markdown table the README shows: per field, test entity F1 and end-to-end exact match per word source;
    then the sample version marker and the steps' times."""
    test, e2e = summary["test"], summary["end_to_end"]
    sources = list(e2e)
    names = [n for n in dict.fromkeys([*sorted(k[5:-3] for k in test if k.endswith("_f1") and k != "test_f1"),
                                       *(n for s in sources for n in e2e[s]["fields"])])]

    def source_name(source: str) -> str:
        return "words given" if source == "given" else f"OCR ({source})"

    documents = e2e[sources[0]]["documents"] if sources else 0
    header = ["field", "test F1"] + [f"end to end, {source_name(s)}" for s in sources]
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for name in names:
        f1 = test.get(f"test_{name}_f1")
        row = [name.replace("_", " "), "-" if f1 is None else f"{f1:.3f}"]
        for source in sources:
            field = e2e[source]["fields"].get(name)
            row.append("-" if field is None else f"{field['recall']:.3f}")
        lines.append("| " + " | ".join(row) + " |")
    overall = ["**all fields**", f"**{test['test_f1']:.3f}**"]
    for source in sources:
        total = e2e[source]["overall"]
        overall.append(f"**{total['recall']:.3f}** ({total['exact']}/{total['gold']})")
    lines.append("| " + " | ".join(overall) + " |")
    times = ", ".join(f"{name} {duration(seconds)}" for name, seconds in summary["seconds"].items())
    lines += [
        "",
        f"<!-- quickstart-sample: v{summary['sample_version']} -->",
        (f"Sample: {summary['sample']}; {summary['num_docs']} invoices, seed 0. Model: "
         f"{summary['model_type']} {summary['size']} from scratch, {summary['epochs']} epochs"
         f"{augmented(summary.get('augment_copies', 0))}. Test F1: entity F1 on "
         f"the test split's annotated words; end to end: exact-match recall of the field values on {documents} test "
         f"pages (image in, values out). Unseen invoice: {summary['unseen_invoice']['exact']} of "
         f"{summary['unseen_invoice']['gold']} values as annotated."),
        f"Steps: {times}; {duration(sum(summary['seconds'].values()))} in all.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
