"""Extract fields from invoices with a token-classification checkpoint trained by run_invoice_ner.py.

    layoutkit predict --model_name_or_path runs/invoices --input scans/ --output_dir predictions/
    python predict.py ...            (the same, from a checkout)

--input is an image (PNG, JPEG, TIFF including multi-page TIFF, BMP, WebP), a PDF (every page, rendered at
--dpi) or a folder of them (its top level). A PDF page's words come from its text layer where that covers the page
(--pdf_text auto, the default; docs/pdf.md), other pages' words from OCR (--ocr_engine: by default the engine and
settings the model's training data was read with, else RapidOCR); each page of the JSON says which
(`words_source`). Or with --words_json from a JSON in the annotation format ({"image": ..., "words": [...], "boxes": [...]}, or a list of such objects for several
pages), in which case OCR is skipped.

Inference goes through the same pipeline class the checkpoint ships (layoutkit's
LayoutTokenClassificationPipeline), so preprocessing is exactly the training preprocessing recorded in the
checkpoint's config.json; a page's windows run in batches of --batch_size with dynamic padding. --backend onnx runs
the model with ONNX Runtime from a folder written by `python -m layoutkit.apps.export_onnx` (same pipeline otherwise).

Many processes or GPUs: `accelerate launch --num_processes N predict.py ...` (or `... -m layoutkit predict ...`)
gives each process its share of the documents (each document once); the main process merges the shares into one
summary.jsonl, in input order.

Output: one JSON per document in --output_dir (see docs/inference.md): `fields` holds one typed value per field
(normalised by --schema: dates to ISO 8601, amounts to a decimal string and currency) with its candidates,
`line_items` the rows of the item table (layoutkit/pipelines/line_items.py: description, quantity, unit price,
amount), `entities` every predicted span, `words` every word; --draw also writes one PNG per page with the words and
entities drawn on it (tags clear of the words, a colour legend; `--draw panel` lists the entities beside the page);
--labelstudio writes the predictions as Label Studio pre-annotations (docs/labelstudio.md). And
--output_dir/summary.jsonl with one line per document, status "ok" or "error". A document that cannot be
read (corrupt or unsupported file, encrypted or empty PDF, an image above --max_image_pixels, no text on
any page) is reported in the summary and the others are still processed. Exit code: 0 when at least one
document succeeded, 1 when every document failed or none was found, 2 for invalid arguments.
"""

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from PIL import Image

from layoutkit.apps.document_prediction import predict_document
from layoutkit.apps.documents import (
    IMAGE_SUFFIXES,
    PDF_SUFFIXES,
    DocumentError,
    check_words_pages,
    image_pages,
    pdf_page_inputs,
)
from layoutkit.apps.labelstudio_format import UNCERTAINTY_MEASURES, document_tasks, uncertainty_rank
from layoutkit.apps.read_ahead import parallel_ocr_options, read_ahead
from layoutkit.apps.settings import InferenceSettings, parse_inference_args
from layoutkit.flags import flag


@dataclass
class PredictArguments:
    _argument_group_name = "documents in, JSON out"

    output_dir: str = field(metadata={"help": "where the JSON files and summary.jsonl go"})
    input: str | None = flag("an image, a PDF or a folder of them (optional with --words_json)")
    words_json: str | None = flag("words and pixel boxes in the annotation format; skips OCR")
    ocr_workers: int | None = flag("pages OCR'd at once, ahead of the model, each with cores/workers ONNX Runtime "
                                   "threads (RapidOCR; default: one per core up to 2); 0 reads each page inside the "
                                   "pipeline, one at a time")
    batch_size: int = flag("windows per forward pass", 8)
    draw: str | None = flag("also write <name>.page<N>.png: the page with its words and entities and a legend of the "
                            "field colours; --draw panel: with a side panel listing the entities instead",
                            nargs="?", const="page", choices=["page", "panel"])
    labelstudio: str | None = flag("also write the predictions as Label Studio tasks with pre-annotations (one-page "
                                   "images; see docs/labelstudio.md)", metavar="TASKS.json")
    order: Literal["input", "uncertainty"] = flag(
        "order of the --labelstudio tasks: as the inputs, or the most uncertain document first (--uncertainty), for "
        "labelling what teaches the model most", "input")
    uncertainty: Literal["lowest_score", "expected_corrections", "word_errors"] = flag(
        "how --order uncertainty measures a document: " + "; ".join(
            f"{name}: {meaning}" for name, meaning in UNCERTAINTY_MEASURES.items()), "lowest_score")
    labelstudio_image_prefix: str = flag("prefix of the tasks' image references, before the file name (default: "
                                         "Label Studio local files)", "/data/local-files/?d=")
    relation_model: str | None = flag("a run_relation_extraction.py checkpoint: adds `pairs`, the key -> value links "
                                      "between the predicted entities (docs/relations.md)")
    line_item_grouping: Literal["rule", "relations"] = flag(
        "rows of `line_items` by the row rule, or by --relation_model's description -> quantity / unit price / "
        "amount links (docs/line_items.md: with the scratch models measured there the rule is better)", "rule"
    )

    def __post_init__(self):
        if self.input is None and self.words_json is None:
            raise ValueError("give --input (image, PDF or folder) or --words_json")
        if self.batch_size < 1:
            raise ValueError("--batch_size must be positive")
        if self.line_item_grouping == "relations" and not self.relation_model:
            raise ValueError("--line_item_grouping relations needs --relation_model")
        if self.ocr_workers is not None and self.ocr_workers < 0:
            raise ValueError("--ocr_workers must be 0 or more")


def parse_args(argv=None) -> tuple[InferenceSettings, PredictArguments]:
    return parse_inference_args(PredictArguments, argv, __doc__)


# ------------------------------------------------------------------------------------------- inputs
def find_documents(path: Path) -> list[Path]:
    """The file itself, or the supported files at the top level of a folder, sorted by name."""
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES | PDF_SUFFIXES)
    return [path]


def document_pages(path: Path, settings: InferenceSettings):
    if not path.exists():
        raise DocumentError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix in PDF_SUFFIXES:
        return pdf_page_inputs(path, settings.dpi, settings.max_image_pixels, settings.pdf_text)
    if suffix in IMAGE_SUFFIXES or path.is_file():
        return image_pages(path, settings.max_image_pixels)
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
    settings, args = parse_args(argv)
    # Imported once the command line is read, so that `--help` and flag errors answer without loading torch.
    import torch
    from accelerate import PartialState
    from accelerate.utils import gather_object

    from layoutkit.apps.pipeline_loader import load_predictor, load_relation_pipeline

    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    # PIL refuses (above 2x) or warns about (above 1x) images over this size when opening them.
    Image.MAX_IMAGE_PIXELS = settings.max_image_pixels

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
    on_cpu = settings.backend == "onnx" or settings.device == "cpu" or not torch.cuda.is_available()
    state = PartialState(cpu=on_cpu or os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes"))
    if settings.backend == "onnx":
        device = "cpu"
    else:
        device = state.device if settings.device in (None, state.device.type) else torch.device(settings.device)
    extractor = load_predictor(settings.model_name_or_path, backend=settings.backend, task="token-classification",
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
        engine, workers = read_ahead_engine(extractor, settings, args.ocr_workers, state.num_processes)
        documents = read_ahead(shard, lambda source: document_pages(source, settings), engine, workers)
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
                    pages = (next(image_pages(p["image_path"], settings.max_image_pixels)) for p in words_pages)
                else:
                    pages = document_pages(source, settings)
                result, drawings = predict_document(
                    extractor, source, pages, words_pages, settings, args.batch_size, draw=args.draw, linker=linker,
                    line_item_grouping=args.line_item_grouping, words_source=args.words_json)
                path = output_dir / names[source]
                path.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
                for number, drawing in enumerate(drawings, start=1):
                    drawing.save(path.with_suffix(f".page{number}.png"))
                found: dict[str, int] = {}
                for entity in result["entities"]:
                    found[entity["entity_group"]] = found.get(entity["entity_group"], 0) + 1
                row.update(status="ok", output=str(path), pages=len(result["pages"]), words=len(result["words"]),
                           fields=found, words_source=[page["words_source"] for page in result["pages"]],
                           warnings=result["warnings"])
                if args.labelstudio and len(result["pages"]) == 1 and source.suffix.lower() in IMAGE_SUFFIXES:
                    labelstudio_tasks.append((str(source), document_tasks(
                        result, args.labelstudio_image_prefix + source.name, settings.model_name_or_path),
                        uncertainty_rank(result, args.uncertainty)))
                elif args.labelstudio:
                    row["labelstudio"] = "not exported: Label Studio tasks are one image; convert the pages to images"
            except DocumentError as error:
                row.update(status="error", message=str(error))
            except Exception as error:  # a bug or an unexpected file problem must not stop the other documents
                row.update(status="error", message=f"{source}: {type(error).__name__}: {error}")
            row["seconds"] = round(time.perf_counter() - started, 3)
            summary.write(json.dumps(row, ensure_ascii=False) + "\n")
            summary.flush()
            for warning in row.get("warnings", ()):
                message = warning["message"]
                where = "" if message.startswith(str(source)) else f"{source}: page {warning['page']}: "
                print(f"[warning] {where}{message}", file=sys.stderr)
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

            def position(item):
                rank = tuple(-value for value in item[2]) if args.order == "uncertainty" else ()
                return (*rank, order[item[0]])

            tasks = [task for _, doc_tasks, _ in sorted(labelstudio_tasks, key=position) for task in doc_tasks]
            Path(args.labelstudio).write_text(json.dumps(tasks, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
            print(f"{len(tasks)} Label Studio tasks: {args.labelstudio}", file=sys.stderr)
    state.wait_for_everyone()
    rows = [json.loads(line) for line in (output_dir / "summary.jsonl").read_text(encoding="utf-8").splitlines()]
    succeeded = sum(row["status"] == "ok" for row in rows)
    if state.is_main_process:
        print(f"{succeeded}/{len(sources)} documents processed; summary: {output_dir / 'summary.jsonl'}",
              file=sys.stderr)
    return 0 if succeeded else 1


def read_ahead_engine(extractor, settings: InferenceSettings, ocr_workers: int | None, num_processes: int = 1):
    """The OCR engine that reads pages ahead of the model, with `ocr_workers` pages at once (parallel_ocr_options),
    and that number."""
    overrides = settings.ocr_overrides()
    speed, workers = parallel_ocr_options(extractor.ocr_engine(overrides), ocr_workers, num_processes)
    return extractor.ocr_engine({**overrides, "options": {**settings.ocr_options, **speed}}), workers


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
