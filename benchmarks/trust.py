#!/usr/bin/env python
"""Fields a finance team can trust, measured on held-out invoices: calibration, review routing, checks, locales.

    python benchmarks/trust.py --model runs/invoices --data_dir data/heldout_invoices --max_docs 200
    python benchmarks/trust.py --model runs/invoices --data_dir data/sample_invoices --dataset_path data/invoices \
        --split test --ocr_engine rapidocr

For each document of `--data_dir` (an annotation folder: images/ + annotations/, e.g. `dataset_loader synth
--seed 777`, invoices the model never saw; or, with `--dataset_path`, the `--split` documents of the dataset built
from it) the checkpoint's pipeline tags the words of the page, and `review.assess_document` builds the fields with the
checkpoint's recorded `field_trust`. The words are the annotated ones, or with `--ocr_engine` what that engine reads
on the page image (cached as `dataset_loader build --ocr` caches them); the annotation's labels are carried over to
the OCR words by the builder's label transfer, only to know which words are amounts for the injected errors. Gold
values come from the annotated words and labels through the same `extract_fields`. Reported:

- ECE (10 bins) of the model's field scores and of the calibrated ones; a value counts as right when its
  normalised value equals the gold one;
- precision and coverage of the values accepted without review: (a) by score alone (calibrated score >= the
  threshold recorded for --review_precision), (b) by the full routing (`needs_review` false: score, checks,
  ambiguous dates, unparsed values);
- the checks: on the clean documents, the share with a failed check (any cause) and of false alarms (a check that
  fails although every value it reads was extracted right and none is missing), and the catch rate of injected
  single-digit errors (one digit of one amount word, chosen at random among the words labelled item_amount,
  item_unit_price, subtotal, tax or total, changed to another digit after OCR, before the model reads the page);
- what choosing candidates by the checks gains: exact values of the checked single fields, model choice vs checks;
- the locale suite (`layoutkit.apps.locale_suite`, needs babel): share of CLDR-formatted dates and amounts read back.

Prints a markdown table; --output_json writes every number.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from dataclasses import replace
from pathlib import Path

from transformers import pipeline

from dataset_loader.annotations import read_annotation
from dataset_loader.ocr_build import OcrBuild
from layoutkit.apps.end_to_end import annotation_files
from layoutkit.apps.read_ahead import ReadWords
from layoutkit.pipelines.calibration import expected_calibration_error
from layoutkit.pipelines.field_checks import CheckConfig
from layoutkit.pipelines.fields import extract_fields
from layoutkit.pipelines.review import (
    assess_document,
    document_schema,
    effective_schema,
    trust_for_words,
    trust_settings,
)
from layoutkit.pipelines.token_classification_pipeline import LayoutTokenClassificationPipeline
from layoutkit.train.field_trust import entities_from_words, value_key, value_outcomes
from layoutkit.train.ocr_alignment import transfer_labels

AMOUNT_LABELS = ("item_amount", "item_unit_price", "subtotal", "tax", "total")
# The fields behind the line-item check.
LINE_ITEM_FIELDS = ("item_quantity", "item_unit_price", "item_amount")


def inject_digit_error(words, labels, rng: random.Random):
    """A copy of `words` with one digit of one amount word changed, and the word's index; None when the page has
    no amount word with a digit."""
    choices = [i for i, (word, label) in enumerate(zip(words, labels))
               if label != "O" and label[2:] in AMOUNT_LABELS and any(ch.isdigit() for ch in word)]
    if not choices:
        return None, None
    index = rng.choice(choices)
    word = words[index]
    positions = [i for i, ch in enumerate(word) if ch.isdigit()]
    position = rng.choice(positions)
    digit = rng.choice([d for d in "0123456789" if d != word[position]])
    changed = list(words)
    changed[index] = word[:position] + digit + word[position + 1:]
    return changed, index


def ocr_options(args) -> dict:
    # One ONNX Runtime thread: the benchmark reads one page at a time (threads do not change the words or the cache).
    return {"threads": 1, **({"preset": args.ocr_preset} if args.ocr_preset else {})}


def value_count(entry: dict | None) -> int:
    if not entry:
        return 0
    return len(entry["values"]) if entry.get("multiple") else 1


def checked_single_fields(config: CheckConfig) -> set[str]:
    return {name for check, roles in config.fields.items() for role, name in roles.items() if role != "items"}


def run(args) -> dict:
    extractor = pipeline("token-classification", model=args.model, pipeline_class=LayoutTokenClassificationPipeline,
                         device="cpu")
    trust = trust_settings(extractor.model.config)
    if not trust:
        raise SystemExit(f"{args.model}: config.json has no field_trust; train it with this version of layoutkit")
    schema = effective_schema(args.schema, trust)
    paths = annotation_files(args.data_dir, args.dataset_path, args.split, args.max_docs)
    ocr = OcrBuild.create(args.ocr_engine, workers=1, **ocr_options(args)) if args.ocr_engine else None
    rng = random.Random(args.seed)
    words_source = f"ocr:{ocr.engine.name}" if ocr else "given"
    calibration = trust_for_words(trust, words_source)
    rows = []  # one per predicted value: (model score, calibrated score, right, needs_review)
    documents = {"clean": 0, "clean_failed_check": 0, "clean_false_alarm": 0, "clean_auto": 0, "injected": 0,
                 "caught": 0, "injected_review": 0}
    selection = {"model": 0, "checks": 0, "values": 0, "changed": 0}
    seconds = 0.0
    for path in paths:
        document = read_annotation(path, args.data_dir / "images")
        image = document.load_image()
        gold_entities = entities_from_words(document.words, document.boxes, document.labels)
        gold = extract_fields(gold_entities, document_schema(gold_entities, schema))

        if ocr is None:
            read = None
            words, boxes, labels = document.words, document.boxes, document.labels
        else:
            read = ocr.read(document, image)
            words, boxes = read.words, read.boxes
            labels, _ = transfer_labels(document.words, document.boxes, document.labels, words, boxes)

        def extract(page_words, image=image, boxes=boxes, read=read):
            """The pipeline on the page as predict.py runs it: given words, or OCR's (with their line ids and
            confidences, and the calibration fitted on that engine's words where the checkpoint has one)."""
            if read is None:
                output = extractor({"image": image, "words": page_words, "boxes": boxes}, return_words=True)
            else:
                output = extractor({"image": image}, return_words=True,
                                   ocr_engine=ReadWords(replace(read, words=list(page_words)), ocr.engine.name))
            return output, assess_document(output["entities"], schema, trust, words_source=output["words_source"])

        started = time.perf_counter()
        output, assessed = extract(words)
        seconds += time.perf_counter() - started
        documents["clean"] += 1
        documents["clean_failed_check"] += any(not check["ok"] for check in assessed["checks"])
        documents["clean_auto"] += assessed["review_status"] == "auto"
        # Fields extracted wrong: a wrong value, or fewer or more values than the gold field has.
        wrong_fields = {name for name in gold if value_count(gold[name]) != value_count(assessed["fields"].get(name))}
        for name, value, right in value_outcomes(assessed["fields"], gold):
            rows.append((value.get("model_score", value["score"]), value["score"], right, value["needs_review"]))
            if not right:
                wrong_fields.add(name)
        # A false alarm: a check fails although every value it reads was extracted right (and none is missing).
        documents["clean_false_alarm"] += any(
            not check["ok"] and not wrong_fields & {field for name in check["fields"]
                                                    for field in (LINE_ITEM_FIELDS if name == "line_items" else (name,))}
            for check in assessed["checks"])
        # What choosing by the checks changed: the model's own choice of the same fields.
        model_choice = extract_fields(output["entities"], document_schema(output["entities"], schema))
        for name in checked_single_fields(schema.checks):
            if name in gold and name in assessed["fields"] and not gold[name].get("multiple"):
                selection["values"] += 1
                selection["model"] += value_key(model_choice[name]) == value_key(gold[name])
                selection["checks"] += value_key(assessed["fields"][name]) == value_key(gold[name])
                selection["changed"] += assessed["fields"][name].get("chosen_by") == "checks"

        injected_words, _ = inject_digit_error(words, labels, rng)
        if injected_words is None:
            continue
        _, injected = extract(injected_words)
        documents["injected"] += 1
        documents["caught"] += any(not check["ok"] for check in injected["checks"])
        documents["injected_review"] += injected["review_status"] == "review"

    if args.reliability_plot:
        from layoutkit.pipelines.calibration import reliability_bins
        from layoutkit.train.field_trust import plot_reliability

        correct = [row[2] for row in rows]
        plot_reliability({"model": reliability_bins([row[0] for row in rows], correct),
                          "calibrated": reliability_bins([row[1] for row in rows], correct)}, args.reliability_plot,
                         title=f"Field confidence, {words_source} words")
    model_scores = [row[0] for row in rows]
    calibrated = [row[1] for row in rows]
    correct = [row[2] for row in rows]
    threshold = calibration["review_threshold"]
    by_score = [right for score, right in zip(calibrated, correct) if score >= threshold]
    by_routing = [row[2] for row in rows if not row[3]]
    result = {
        "model": str(args.model), "documents": documents["clean"],
        "words": words_source,
        "calibration": calibration["calibration"].get("chosen", calibration["calibration"]["method"]),
        "calibration_fitted_on": "validation OCR words" if calibration is not trust else "validation given words",
        "review_threshold": threshold, "review_precision_target": calibration.get("review_precision"),
        "values": len(rows), "values_right": sum(correct) / len(rows),
        "ece_model": expected_calibration_error(model_scores, correct),
        "ece_calibrated": expected_calibration_error(calibrated, correct),
        "auto_precision_score": sum(by_score) / len(by_score) if by_score else float("nan"),
        "auto_coverage_score": len(by_score) / len(rows),
        "auto_precision_routing": sum(by_routing) / len(by_routing) if by_routing else float("nan"),
        "auto_coverage_routing": len(by_routing) / len(rows),
        "documents_auto": documents["clean_auto"] / documents["clean"],
        "clean_documents_failing_a_check": documents["clean_failed_check"] / documents["clean"],
        "check_false_alarms": documents["clean_false_alarm"] / documents["clean"],
        "injected_documents": documents["injected"],
        "injected_caught": documents["caught"] / max(1, documents["injected"]),
        "injected_routed_to_review": documents["injected_review"] / max(1, documents["injected"]),
        "checked_values": selection["values"],
        "checked_values_right_model_choice": selection["model"] / max(1, selection["values"]),
        "checked_values_right_with_checks": selection["checks"] / max(1, selection["values"]),
        "values_changed_by_checks": selection["changed"],
        "model_seconds_per_document": seconds / max(1, documents["clean"]),
    }
    if not args.skip_locale_suite:
        from layoutkit.apps.locale_suite import generate_cases, run_suite

        suite = run_suite(generate_cases(seed=args.seed))
        result.update(locale_cases=suite["cases"], locale_locales=suite["locales"], locale_pass_rate=suite["pass_rate"])
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a checkpoint trained with field_trust recorded")
    parser.add_argument("--data_dir", type=Path, required=True, help="held-out annotation folder (images/ + annotations/)")
    parser.add_argument("--dataset_path", type=Path,
                        help="the dataset built from --data_dir: measure its --split documents (default: the folder's)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--max_docs", type=int, default=200)
    parser.add_argument("--ocr_engine", help="read the pages with this engine (rapidocr, tesseract) instead of "
                        "giving the annotated words")
    parser.add_argument("--ocr_preset", help="RapidOCR preset (default: the engine's default)")
    parser.add_argument("--schema", help="a schema file (default: types from the field names, all checks)")
    parser.add_argument("--seed", type=int, default=0, help="which digit of which amount word is changed")
    parser.add_argument("--skip_locale_suite", action="store_true")
    parser.add_argument("--output_json", type=Path)
    parser.add_argument("--reliability_plot", type=Path,
                        help="write the reliability diagram (model scores and calibrated) of the measured values here")
    args = parser.parse_args(argv)
    result = run(args)
    print(json.dumps(result, indent=2), file=sys.stderr)
    rows = [
        (f"held-out documents (words: {result['words']})", f"{result['documents']}"),
        ("field values scored / share exactly right", f"{result['values']} / {result['values_right']:.3f}"),
        ("ECE, model scores (10 bins)", f"{result['ece_model']:.4f}"),
        (f"ECE, calibrated ({result['calibration']}, fitted on {result['calibration_fitted_on']})",
         f"{result['ece_calibrated']:.4f}"),
        (f"auto-accepted by score >= {result['review_threshold']:.4f}: precision / coverage",
         f"{result['auto_precision_score']:.4f} / {result['auto_coverage_score']:.4f}"),
        ("auto-accepted by routing (score, checks, dates): precision / coverage",
         f"{result['auto_precision_routing']:.4f} / {result['auto_coverage_routing']:.4f}"),
        ("documents routed auto", f"{result['documents_auto']:.3f}"),
        ("clean documents with a failed check (any cause, incl. extraction errors)",
         f"{result['clean_documents_failing_a_check']:.3f}"),
        ("checks: false alarms on clean documents (failed on values extracted right)",
         f"{result['check_false_alarms']:.3f}"),
        (f"checks: injected digit errors caught ({result['injected_documents']} documents)",
         f"{result['injected_caught']:.3f}"),
        ("injected digit errors routed to review", f"{result['injected_routed_to_review']:.3f}"),
        ("checked single fields right: model choice -> with checks",
         (f"{result['checked_values_right_model_choice']:.4f} -> {result['checked_values_right_with_checks']:.4f} "
          f"({result['values_changed_by_checks']} changed of {result['checked_values']})")),
    ]
    if "locale_pass_rate" in result:
        rows.append((f"locale suite ({result['locale_cases']} cases, {result['locale_locales']} locales)",
                     f"{result['locale_pass_rate']:.4f}"))
    print("| measure | value |\n|---|---:|")
    for name, value in rows:
        print(f"| {name} | {value} |")
    if args.output_json:
        args.output_json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
