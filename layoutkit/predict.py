"""Extract fields from invoices with a token-classification checkpoint trained by run_invoice_ner.py.

    layoutkit predict --model_name_or_path runs/invoices --input scans/ --output_dir predictions/
    python predict.py ...            (the same, from a checkout)

--input is an image (PNG, JPEG, TIFF including multi-page TIFF, BMP, WebP), a PDF (every page, rendered at
--dpi) or a folder of them (its top level). Words come from OCR (--ocr_engine: by default the engine and
settings the model's training data was read with, else RapidOCR), or with --words_json from a JSON in the
annotation format ({"image": ..., "words": [...], "boxes": [...]}, or a list of such objects for several
pages), in which case OCR is skipped.

Inference goes through the same pipeline class the checkpoint ships (layoutkit's
LayoutTokenClassificationPipeline), so preprocessing is exactly the training preprocessing recorded in the
checkpoint's config.json; a page's windows run in batches of --batch_size with dynamic padding. --backend onnx runs
the model with ONNX Runtime from a folder written by `python -m layoutkit.export_onnx` (same pipeline otherwise).

Many processes or GPUs: `accelerate launch --num_processes N predict.py ...` (or `... -m layoutkit predict ...`)
gives each process its share of the documents (each document once); the main process merges the shares into one
summary.jsonl, in input order.

Output: one JSON per document in --output_dir (see docs/inference.md): `fields` holds one typed value per field
(normalised by --schema: dates to ISO 8601, amounts to a decimal string and currency) with its candidates,
`line_items` the rows of the item table (layoutkit/line_items.py: description, quantity, unit price,
amount), `entities` every predicted span, `words` every word; --draw also writes one PNG per page with the words and
entities drawn on it; --labelstudio writes the predictions as Label Studio pre-annotations (docs/labelstudio.md). And
--output_dir/summary.jsonl with one line per document, status "ok" or "error". A document that cannot be
read (corrupt or unsupported file, encrypted or empty PDF, an image above --max_image_pixels, no text on
any page) is reported in the summary and the others are still processed. Exit code: 0 when at least one
document succeeded, 1 when every document failed or none was found, 2 for invalid arguments.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
from accelerate import PartialState
from accelerate.utils import gather_object
from PIL import Image

from layoutkit.documents import (
    DEFAULT_MAX_PIXELS,
    IMAGE_SUFFIXES,
    PDF_SUFFIXES,
    DocumentError,
    check_words_pages,
    image_pages,
    pdf_pages,
)
from layoutkit.fields import FieldSchema
from layoutkit.labelstudio import document_tasks
from layoutkit.ocr import DEFAULT_RAPIDOCR_PRESET, OCR_ENGINES, RAPIDOCR_PRESETS, parse_engine_option
from layoutkit.postprocess import RULES, RuleConfig
from layoutkit.prediction import predict_document
from layoutkit.predictor import BACKENDS, load_predictor
from layoutkit.read_ahead import parallel_ocr_options, read_ahead
from layoutkit.relation_extraction import load_relation_pipeline


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_name_or_path", required=True, help="checkpoint folder or Hub id")
    parser.add_argument("--input", help="an image, a PDF or a folder of them (optional with --words_json)")
    parser.add_argument("--output_dir", required=True, help="where the JSON files and summary.jsonl go")
    parser.add_argument("--words_json", help="words and pixel boxes in the annotation format; skips OCR")
    parser.add_argument(
        "--ocr_engine", choices=sorted(OCR_ENGINES),
        help="OCR engine (default: the one the model's training data was read with, else rapidocr)",
    )
    parser.add_argument("--ocr_lang", help='OCR language(s), e.g. "eng", "deu+eng" (default eng)')
    parser.add_argument("--ocr_config", help='extra tesseract options, e.g. "--oem 1"')
    parser.add_argument(
        "--ocr_option", action="append", default=[], metavar="KEY=VALUE",
        help="an OCR engine setting, repeatable, e.g. min_height=0 (values read as JSON when they parse)",
    )
    parser.add_argument(
        "--ocr_preset", choices=sorted(RAPIDOCR_PRESETS),
        help="RapidOCR settings by name: accurate (RapidOCR's own) or fast (no angle classifier, larger recognition "
        "batches); default: what the model records, else " + DEFAULT_RAPIDOCR_PRESET + " (docs/performance.md)",
    )
    parser.add_argument(
        "--ocr_workers", type=int, default=None,
        help="pages OCR'd at once, ahead of the model, each with cores/workers ONNX Runtime threads (RapidOCR; "
        "default: one per core up to 2); 0 reads each page inside the pipeline, one at a time",
    )
    parser.add_argument("--schema", help="JSON file of field types (date, amount, number, text); see docs/inference.md")
    parser.add_argument("--draw", action="store_true", help="also write <name>.page<N>.png with words and entities")
    parser.add_argument(
        "--labelstudio", metavar="TASKS.json",
        help="also write the predictions as Label Studio tasks with pre-annotations (one-page images; see "
        "docs/labelstudio.md)",
    )
    parser.add_argument(
        "--labelstudio_image_prefix", default="/data/local-files/?d=",
        help="prefix of the tasks' image references, before the file name (default: Label Studio local files)",
    )
    parser.add_argument("--dpi", type=int, default=200, help="resolution PDF pages are rendered at")
    parser.add_argument(
        "--max_image_pixels", type=int, default=DEFAULT_MAX_PIXELS,
        help="pages above this many pixels are refused (decompression-bomb guard; default PIL's limit)",
    )
    parser.add_argument("--batch_size", type=int, default=8, help="windows per forward pass")
    parser.add_argument("--mixed_precision", choices=["no", "bf16"], default="no", help="bf16 autocast (CPU or GPU)")
    parser.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available")
    parser.add_argument("--relation_model", help="a run_relation_extraction.py checkpoint: adds `pairs`, the key -> "
                        "value links between the predicted entities (docs/relations.md)")
    parser.add_argument(
        "--line_item_grouping", choices=["rule", "relations"], default="rule",
        help="rows of `line_items` by the row rule, or by --relation_model's description -> quantity / unit price / "
        "amount links (docs/line_items.md: with the scratch models measured there the rule is better)",
    )
    parser.add_argument(
        "--backend", choices=BACKENDS, default="torch",
        help="torch, or onnx: ONNX Runtime (CPU) on a folder written by `python -m layoutkit.export_onnx`",
    )
    parser.add_argument(
        "--rules", default=None,
        help=f"post-processing rules: comma-separated ({', '.join(RULES)}, or all) or a JSON file of settings",
    )
    args = parser.parse_args(argv)
    if args.input is None and args.words_json is None:
        parser.error("give --input (image, PDF or folder) or --words_json")
    if args.ocr_preset and args.ocr_engine == "tesseract":
        parser.error("--ocr_preset names RapidOCR settings; Tesseract's are --ocr_option KEY=VALUE (docs/ocr.md)")
    if args.ocr_workers is not None and args.ocr_workers < 0:
        parser.error("--ocr_workers must be 0 or more")
    if args.batch_size < 1 or args.dpi < 1 or args.max_image_pixels < 1:
        parser.error("--batch_size, --dpi and --max_image_pixels must be positive")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    if args.backend == "onnx" and args.device == "cuda":
        parser.error("--backend onnx runs on the CPU; drop --device cuda")
    if args.line_item_grouping == "relations" and not args.relation_model:
        parser.error("--line_item_grouping relations needs --relation_model")
    if args.backend == "onnx" and args.mixed_precision != "no":
        parser.error("--mixed_precision is torch autocast; the ONNX backend runs the exported fp32 graph")
    try:
        args.rule_config = RuleConfig.from_value(args.rules)
    except (ValueError, TypeError, OSError) as error:
        parser.error(f"--rules: {error}")
    try:
        args.field_schema = FieldSchema.load(args.schema)
    except ValueError as error:
        parser.error(f"--schema: {error}")
    try:
        args.ocr_options = dict(parse_engine_option(text) for text in args.ocr_option)
    except ValueError as error:
        parser.error(f"--ocr_option: {error}")
    if args.ocr_preset:
        args.ocr_options["preset"] = args.ocr_preset
    return args



# ------------------------------------------------------------------------------------------- inputs
def find_documents(path: Path) -> list[Path]:
    """The file itself, or the supported files at the top level of a folder, sorted by name."""
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES | PDF_SUFFIXES)
    return [path]


def document_pages(path: Path, args):
    if not path.exists():
        raise DocumentError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix in PDF_SUFFIXES:
        return pdf_pages(path, args.dpi, args.max_image_pixels)
    if suffix in IMAGE_SUFFIXES or path.is_file():
        return image_pages(path, args.max_image_pixels)
    raise DocumentError(f"{path}: unsupported input (expected an image or a PDF)")


def read_words_json(path: Path) -> list[dict]:
    """Pages of a words file (`check_words_pages`); a page's "image" is absolute, relative to the JSON file or to
    an images/ folder beside it."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise DocumentError(f"{path}: cannot read the words file ({error})") from None
    pages = check_words_pages(data, str(path))
    for page in pages:
        if page.get("image"):
            name = Path(page["image"])
            for candidate in (name, path.parent / name, path.parent.parent / "images" / name):
                if candidate.is_file():
                    page["image_path"] = candidate
                    break
    return pages


# ----------------------------------------------------------------------------------------- inference
def output_names(sources: list[Path]) -> dict[Path, str]:
    """`<stem>.json`, or `<file name>.json` when two inputs share a stem."""
    stems: dict[str, int] = {}
    for source in sources:
        stems[source.stem] = stems.get(source.stem, 0) + 1
    return {s: (f"{s.stem}.json" if stems[s.stem] == 1 else f"{s.name}.json") for s in sources}


def main(argv=None) -> int:
    args = parse_args(argv)
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    # PIL refuses (above 2x) or warns about (above 1x) images over this size when opening them.
    Image.MAX_IMAGE_PIXELS = args.max_image_pixels

    # ---- documents
    words_pages = None
    if args.words_json:
        try:
            words_pages = read_words_json(Path(args.words_json))
        except DocumentError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
    if args.input:
        sources = find_documents(Path(args.input))
    else:
        missing = [i + 1 for i, page in enumerate(words_pages) if "image_path" not in page]
        if missing:
            print(f"error: {args.words_json}: the image of page(s) {missing} was not found; pass it with --input",
                  file=sys.stderr)
            return 1
        sources = [words_pages[0]["image_path"]]
    if not sources:
        print(f"error: no image or PDF found in {args.input}", file=sys.stderr)
        return 1
    if words_pages is not None and len(sources) > 1:
        print("error: --words_json describes one document; give a single file as --input", file=sys.stderr)
        return 1

    # ---- model: the pipeline class the checkpoint ships, imported from layoutkit (no remote code runs); under
    # `accelerate launch`, each process on its own device
    on_cpu = args.backend == "onnx" or args.device == "cpu" or not torch.cuda.is_available()
    state = PartialState(cpu=on_cpu or os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes"))
    if args.backend == "onnx":
        device = "cpu"
    else:
        device = state.device if args.device in (None, state.device.type) else torch.device(args.device)
    extractor = load_predictor(args.model_name_or_path, backend=args.backend, task="token-classification",
                               device=device)

    linker = load_relation_pipeline(args.relation_model, device) if args.relation_model else None

    # ---- predict, one document at a time; each process takes its share of the documents
    names = output_names(sources)  # from every document, so names do not depend on the number of processes
    with state.split_between_processes(sources) as share:
        shard = list(share)
    labelstudio_tasks = []  # (source, its tasks) of this process's documents
    summary_path = output_dir / ("summary.jsonl" if state.num_processes == 1 else
                                 f"summary.process{state.process_index}.jsonl.partial")
    if words_pages is None and args.ocr_workers != 0:
        engine, workers = read_ahead_engine(extractor, args, state.num_processes)
        documents = read_ahead(shard, lambda source: document_pages(source, args), engine, workers)
    else:
        documents = ((source, None, None) for source in shard)
    with open(summary_path, "w", encoding="utf-8") as summary:
        for source, read_pages, read_error in documents:
            started = time.perf_counter()
            row = {"source": str(source)}
            try:
                if read_error is not None:
                    raise read_error
                if read_pages is not None:
                    pages = read_pages
                elif words_pages is not None and not args.input:
                    pages = (next(image_pages(p["image_path"], args.max_image_pixels)) for p in words_pages)
                else:
                    pages = document_pages(source, args)
                result, drawings = predict_document(extractor, source, pages, words_pages, args, linker)
                path = output_dir / names[source]
                path.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
                for number, drawing in enumerate(drawings, start=1):
                    drawing.save(path.with_suffix(f".page{number}.png"))
                found: dict[str, int] = {}
                for entity in result["entities"]:
                    found[entity["entity_group"]] = found.get(entity["entity_group"], 0) + 1
                row.update(status="ok", output=str(path), pages=len(result["pages"]), words=len(result["words"]),
                           fields=found)
                if args.labelstudio and len(result["pages"]) == 1 and source.suffix.lower() in IMAGE_SUFFIXES:
                    labelstudio_tasks.append((str(source), document_tasks(
                        result, args.labelstudio_image_prefix + source.name, args.model_name_or_path)))
                elif args.labelstudio:
                    row["labelstudio"] = "not exported: Label Studio tasks are one image; convert the pages to images"
            except DocumentError as error:
                row.update(status="error", message=str(error))
            except Exception as error:  # a bug or an unexpected file problem must not stop the other documents
                row.update(status="error", message=f"{source}: {type(error).__name__}: {error}")
            row["seconds"] = round(time.perf_counter() - started, 3)
            summary.write(json.dumps(row, ensure_ascii=False) + "\n")
            summary.flush()
            if row["status"] == "ok":
                found = ", ".join(f"{k} x{v}" for k, v in row["fields"].items()) or "no fields"
                print(f"[ok] {source}: {row['pages']} page(s), {found} ({row['seconds']} s)", file=sys.stderr)
            else:
                print(f"[error] {row['message']}", file=sys.stderr)
    state.wait_for_everyone()
    if state.num_processes > 1 and state.is_main_process:
        merge_summaries(output_dir, state.num_processes, sources)
    if args.labelstudio:
        labelstudio_tasks = gather_object(labelstudio_tasks)  # every process's, on every process
        if state.is_main_process:
            order = {str(source): index for index, source in enumerate(sources)}
            tasks = [task for _, doc_tasks in sorted(labelstudio_tasks, key=lambda item: order[item[0]])
                     for task in doc_tasks]
            Path(args.labelstudio).write_text(json.dumps(tasks, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
            print(f"{len(tasks)} Label Studio tasks: {args.labelstudio}", file=sys.stderr)
    state.wait_for_everyone()
    rows = [json.loads(line) for line in (output_dir / "summary.jsonl").read_text(encoding="utf-8").splitlines()]
    succeeded = sum(row["status"] == "ok" for row in rows)
    if state.is_main_process:
        print(f"{succeeded}/{len(sources)} documents processed; summary: {output_dir / 'summary.jsonl'}",
              file=sys.stderr)
    return 0 if succeeded else 1


def read_ahead_engine(extractor, args, num_processes: int = 1):
    """The OCR engine that reads pages ahead of the model, with --ocr_workers pages at once (parallel_ocr_options),
    and that number."""
    overrides = {"engine": args.ocr_engine, "lang": args.ocr_lang, "config": args.ocr_config,
                 "options": args.ocr_options}
    speed, workers = parallel_ocr_options(extractor.ocr_engine(overrides), args.ocr_workers, num_processes)
    return extractor.ocr_engine({**overrides, "options": {**args.ocr_options, **speed}}), workers


def merge_summaries(output_dir: Path, num_processes: int, sources: list[Path]) -> None:
    """The processes' summary shares into one summary.jsonl, in input order (as one process writes it)."""
    order = {str(source): index for index, source in enumerate(sources)}
    shares = [output_dir / f"summary.process{index}.jsonl.partial" for index in range(num_processes)]
    lines = [line for share in shares for line in share.read_text(encoding="utf-8").splitlines()]
    lines.sort(key=lambda line: order[json.loads(line)["source"]])
    (output_dir / "summary.jsonl").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    for share in shares:
        share.unlink()


if __name__ == "__main__":
    sys.exit(main())
