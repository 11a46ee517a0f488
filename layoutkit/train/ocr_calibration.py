"""`layoutkit calibrate`: fit a checkpoint's field confidence on validation pages read by OCR, as it will be used.

    layoutkit calibrate --model runs/invoices --data_dir data/sample_invoices --dataset_path data/invoices \
        --split validation --ocr_engine rapidocr

Training fits the calibration and review threshold (`field_trust`, `field_trust.fit_trust`) on the validation split's
own words: the annotated words, exact and in the annotation's order. Words read by OCR carry misread characters, split
or merged words and another word order, and on them the model is surer of itself than it should be (on the quick
start's model: ECE 0.014 on RapidOCR's words with the given-words fit, 0.005 with this one). This command reads the `--split` pages of an
annotation folder with the OCR engine (cached as `dataset_loader build --ocr` caches them), runs the checkpoint's
pipeline on each page exactly as predict.py does (OCR's words with their line ids and confidences), builds the fields
(`review.assess_document`, uncalibrated), compares each value with the annotation's (`field_trust.entity_outcomes`:
the gold values come from the annotated words, not from OCR's), fits calibration and review threshold
(`field_trust.fit_calibration`) and writes them into the checkpoint's config.json under
`field_trust.words_sources["ocr:ENGINE"]`. Every inference path then uses that fit for documents whose words that
engine read (`review.trust_for_words`); given words and PDF text layers keep the training-time fit.

Calibration is selection: the test split is refused.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..pipelines.review import effective_schema, trust_settings
from .field_trust import entities_from_words, entity_outcomes, fit_calibration


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True,
                        help="a checkpoint folder trained by run_invoice_ner.py (its config.json is updated)")
    parser.add_argument("--data_dir", type=Path, required=True, help="the annotation folder (images/ + annotations/)")
    parser.add_argument("--dataset_path", type=Path,
                        help="the dataset built from --data_dir: calibrate on its --split documents (recommended)")
    parser.add_argument("--split", default="validation", help="the split of --dataset_path (never test)")
    parser.add_argument("--max_docs", type=int, help="calibrate on the first N documents only")
    parser.add_argument("--ocr_engine", default="rapidocr", help="the engine that will read the pages (default rapidocr)")
    parser.add_argument("--ocr_preset", help="RapidOCR preset (default: the engine's default, as predict.py uses)")
    parser.add_argument("--ocr_workers", type=int, help="pages OCR'd at once (default: one per core, at most 2)")
    parser.add_argument("--review_precision", type=float,
                        help="precision of the values accepted without review (default: the checkpoint's)")
    parser.add_argument("--review_confidence", type=float,
                        help="confidence of that precision (default: the checkpoint's, else 0.95)")
    parser.add_argument("--schema", help="a schema file (default: the checkpoint's field types and checks)")
    args = parser.parse_args(argv)
    if args.split == "test":
        parser.error("--split test: calibration picks a threshold, which is selection; use validation (or train)")
    if not (args.model / "config.json").is_file():
        parser.error(f"--model {args.model}: no config.json there; give a checkpoint folder run_invoice_ner.py wrote")
    return args


def document_outcomes(extractor, document, words, engine: str, schema) -> list[tuple[str, float, bool]]:
    """(group, model score, exactly right) of each value the pipeline extracts from one page whose words the OCR
    `engine` read (`words`, an OcrResult), against the annotation's own values."""
    from ..apps.read_ahead import ReadWords

    # The words reach the pipeline as if its engine had read the page (line ids, confidences), as in predict.py.
    output = extractor({"image": document.load_image()}, ocr_engine=ReadWords(words, engine), return_words=True)
    gold = entities_from_words(document.words, document.boxes, document.labels)
    return entity_outcomes(output["entities"], gold, schema)


def main(argv=None) -> int:
    args = parse_args(argv)
    from transformers import pipeline

    from dataset_loader.annotations import read_annotation
    from dataset_loader.ocr_build import OcrBuild

    from ..apps.end_to_end import annotation_files
    from ..apps.read_ahead import parallel_ocr_options
    from ..pipelines.ocr import get_ocr_engine
    from ..pipelines.token_classification_pipeline import LayoutTokenClassificationPipeline

    extractor = pipeline("token-classification", model=str(args.model),
                         pipeline_class=LayoutTokenClassificationPipeline, device="cpu")
    trust = trust_settings(extractor.model.config)
    if not trust:
        raise SystemExit(f"{args.model}: config.json has no field_trust; train it with this version of layoutkit")
    schema = effective_schema(args.schema, trust)
    paths = annotation_files(args.data_dir, args.dataset_path, args.split, args.max_docs)
    if not paths:
        raise SystemExit(f"{args.data_dir}: no annotation files to calibrate on")
    options = {"preset": args.ocr_preset} if args.ocr_preset else {}
    # `workers` pages at once, each engine instance on cores / workers threads (read_ahead.parallel_ocr_options).
    parallel, workers = parallel_ocr_options(get_ocr_engine(args.ocr_engine, **options), args.ocr_workers)
    ocr = OcrBuild(get_ocr_engine(args.ocr_engine, **options, **parallel), workers=workers)
    documents = {path: read_annotation(path, args.data_dir / "images") for path in paths}
    ocr.read_all(paths, documents.__getitem__)  # `workers` pages at once, into the cache
    outcomes = []
    for document in documents.values():
        words = ocr.read(document)  # from the cache now
        outcomes += document_outcomes(extractor, document, words, ocr.engine.name, schema)

    words_source = f"ocr:{ocr.engine.name}"
    fitted, metrics = fit_calibration(
        outcomes, args.review_precision or trust.get("review_precision", 0.99),
        args.review_confidence if args.review_confidence is not None else trust.get("review_confidence", 0.95))
    fitted["fitted_on"] = {"data_dir": str(args.data_dir), "split": args.split if args.dataset_path else None,
                           "documents": len(documents), "ocr": ocr.engine.settings()}
    config_path = args.model / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["field_trust"].setdefault("words_sources", {})[words_source] = fitted
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    print(json.dumps({"words_source": words_source, "documents": len(documents), **metrics}, indent=2))
    print(f"{config_path}: field_trust.words_sources[{words_source!r}] written", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
