"""Command line: python -m dataset_loader {build,funsd,labelstudio,synth,classify,synth-classes,push} ..."""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

from dataset_loader.annotations import AnnotationError
from dataset_loader.deprecated_flags import snake_case_options
from dataset_loader.preprocessing import DEFAULT_SIZE
from dataset_loader.writer import BuildError
from layoutkit.cli import program_name
from layoutkit.pipelines.boxes import RESIZE_MODES, parse_size
from layoutkit.pipelines.ocr import parse_engine_option
from layoutkit.pipelines.pdf_text import PDF_TEXT_MODES


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(snake_case_options(sys.argv[1:] if argv is None else argv, parser))
    try:
        return args.run(args)
    except (AnnotationError, BuildError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=program_name("python -m dataset_loader"),
        description="Build LayoutLM-ready Hugging Face datasets from annotated document images.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    build = _add_folder_command(
        commands, "build",
        help="build a DatasetDict from DIR/images + DIR/annotations (format: dataset_loader/FORMAT.md)",
        data_dir_help="folder with images/ and annotations/",
        split_help="TRAIN,VALIDATION,TEST ratios (normalised; default 0.8,0.1,0.1); a split with no document is "
        "left out",
    )
    build.add_argument(
        "--labels", type=_argument(_labels),
        help="label list: a file (JSON list or one per line) or comma list; BIO tags (order kept) or entity "
        "types (expanded to O, B-/I- per type sorted). Default: the tags found in the data",
    )
    _add_ocr_options(build)
    build.set_defaults(run=_run_build)

    funsd = commands.add_parser("funsd", help="import FUNSD (training_data -> train+validation, testing_data -> test)")
    funsd.add_argument("--input", required=True, type=Path, help="FUNSD root with training_data/ and testing_data/")
    _add_output_options(funsd)
    funsd.add_argument("--validation_ratio", type=float, default=0.1, help="share of training_data for validation")
    funsd.add_argument("--max_docs", type=int, help="use only the first N documents of each folder (quick tests)")
    _add_ocr_options(funsd)
    funsd.set_defaults(run=_run_funsd)

    _add_labelstudio_command(commands)

    synth = commands.add_parser("synth", help="write synthetic invoices in the annotation format")
    synth.add_argument("--output", required=True, type=Path, help="folder to write images/ and annotations/ into")
    synth.add_argument("--num_docs", type=int, default=200, help="number of invoices (default 200)")
    synth.add_argument("--seed", type=int, default=42, help="same seed, same invoices (default 42)")
    synth.add_argument("--workers", type=int, help="processes (default: all CPU cores)")
    synth.add_argument("--overwrite", action="store_true", help="replace invoices already in --output")
    synth.add_argument("--links", action="store_true",
                       help="also write entity_ids, relations (keyword -> value, description -> quantity, unit price, "
                       "amount) and line-item row_ids into each annotation")
    synth.add_argument("--multi_page", type=float, default=0.0, metavar="SHARE",
                       help="share of invoices (0-1) whose item table continues on a second page image "
                       "(<name>_p2.png; both pages carry document_id and page); default 0")
    synth.add_argument("--format", choices=["png", "pdf"], default="png",
                       help="png: one image per page (default); pdf: one PDF per invoice (born-digital: its text "
                       "layer holds the annotation's words) in images/, one annotation per page with page, "
                       "document_id and source (pdf_text or scanned); boxes are pixels at 200 DPI")
    synth.add_argument("--scanned_share", type=float, default=0.0, metavar="SHARE",
                       help="with --format pdf: share of invoices (0-1) written as scans (page images with scan "
                       "noise, no text layer); half of those with two pages are mixed (one page scanned); default 0")
    synth.set_defaults(run=_run_synth)

    _add_classification_commands(commands)

    push = commands.add_parser("push", help="push a dataset built here to the Hugging Face Hub, with its card")
    push.add_argument("--dataset", required=True, type=Path, help="folder written by build or funsd")
    push.add_argument("--repo", required=True, help="Hub dataset repo id, e.g. me/invoices")
    push.add_argument("--private", action="store_true", help="create the repo as private")
    push.set_defaults(run=_run_push)
    return parser


def _add_labelstudio_command(commands) -> None:
    """`labelstudio`: a Label Studio export of the OCR template (docs/labelstudio.md)."""
    studio = commands.add_parser(
        "labelstudio", help="build a DatasetDict from a Label Studio JSON or JSON-MIN export (OCR template)"
    )
    studio.add_argument("--input", required=True, type=Path, help="the export file (JSON or JSON-MIN)")
    studio.add_argument("--images", required=True, type=Path,
                        help="folder holding the tasks' images (found by file name, sub-folders searched)")
    _add_output_options(studio)
    studio.add_argument("--split", default="0.8,0.1,0.1", type=_argument(_ratios),
                        help="TRAIN,VALIDATION,TEST ratios (default 0.8,0.1,0.1)")
    studio.add_argument("--labels", type=_argument(_labels),
                        help="label list (as for build); a region whose label is not in it is reported")
    studio.add_argument("--image_key", help="task data key of the image (default: image, ocr, ... or the one image "
                        "path in the data)")
    studio.add_argument("--textarea_name", default="transcription",
                        help="JSON-MIN: the TextArea tag's name (default transcription, the OCR template's)")
    studio.add_argument("--unlabeled_regions", choices=["outside", "error"], default="outside",
                        help="a region without a label: its words are O (default), or the task is reported")
    _add_ocr_options(studio)
    studio.set_defaults(run=_run_labelstudio)


def _run_labelstudio(args: argparse.Namespace) -> int:
    from dataset_loader.labelstudio import import_labelstudio

    import_labelstudio(
        args.input, args.images, args.output, ratios=args.split, labels=args.labels, ocr=_ocr_build(args),
        image_key=args.image_key, textarea_name=args.textarea_name, unlabeled=args.unlabeled_regions,
        **_build_options(args),
    )
    return _finish(args)


def _add_classification_commands(commands) -> None:
    """`classify` (imagefolder -> classification DatasetDict) and `synth-classes` (sample data)."""
    classify = _add_folder_command(
        commands, "classify",
        help="build a document-classification DatasetDict from DIR/<class>/<image> (imagefolder layout)",
        data_dir_help="folder with one subfolder per class",
        split_help="TRAIN,VALIDATION,TEST ratios, applied per class (stratified; default 0.8,0.1,0.1)",
    )
    classify.add_argument("--ocr", action="store_true", help="run Tesseract once on images without a words JSON")
    classify.add_argument("--ocr_lang", default="eng", help="Tesseract language(s) for --ocr (default eng)")
    classify.set_defaults(run=_run_classify)

    sample = commands.add_parser("synth-classes", help="write a synthetic invoice/receipt/letter sample (imagefolder)")
    sample.add_argument("--output", required=True, type=Path, help="folder to write <class>/ subfolders into")
    sample.add_argument("--num_docs", type=int, default=60, help="documents, classes in turn (default 60)")
    sample.add_argument("--seed", type=int, default=42, help="same seed, same documents (default 42)")
    sample.set_defaults(run=_run_synth_classes)


def _run_classify(args: argparse.Namespace) -> int:
    from dataset_loader.classify import build_classification_dataset

    build_classification_dataset(
        args.data_dir, args.output, ratios=args.split, ocr=args.ocr, ocr_lang=args.ocr_lang, **_build_options(args)
    )
    repo_id = args.push_to_hub
    _finish(argparse.Namespace(**{**vars(args), "push_to_hub": None}))
    if repo_id:  # the dataset card of `push` describes NER data; a classification dataset goes up as is
        from datasets import load_from_disk

        load_from_disk(str(args.output)).push_to_hub(repo_id, private=args.private)
        print(f"pushed {args.output} to https://huggingface.co/datasets/{repo_id}")
    return 0


def _run_synth_classes(args: argparse.Namespace) -> int:
    from dataset_loader.synth_classes import generate_classes

    counts = generate_classes(args.output, args.num_docs, seed=args.seed)
    print(f"wrote {sum(counts.values())} documents to {args.output}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return 0


def _add_folder_command(
    commands, name: str, *, help: str, data_dir_help: str, split_help: str
) -> argparse.ArgumentParser:
    """A command that builds a DatasetDict from --data_dir cut by --split ratios (build, classify)."""
    parser = commands.add_parser(name, help=help)
    parser.add_argument("--data_dir", required=True, type=Path, help=data_dir_help)
    _add_output_options(parser)
    parser.add_argument("--split", default="0.8,0.1,0.1", type=_argument(_ratios), help=split_help)
    return parser


def _add_output_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", required=True, type=Path, help="folder to save the DatasetDict to")
    parser.add_argument(
        "--resize", default="x".join(map(str, DEFAULT_SIZE)), type=_argument(parse_size),
        help="page size WIDTHxHEIGHT in pixels, width first (default 1000x1000, see --resize_mode)",
    )
    parser.add_argument(
        "--resize_mode", choices=list(RESIZE_MODES), default="fit",
        help="fit: scale to fit inside --resize keeping the aspect ratio (default: the longest side becomes 1000); "
        "pad: fit, then pad with white to exactly --resize; stretch: stretch to exactly --resize",
    )
    parser.add_argument("--keep_aspect", action="store_true", help="same as --resize_mode pad (earlier versions)")
    parser.add_argument("--seed", type=int, default=42, help="seed of the split assignment (default 42)")
    parser.add_argument("--strict", action="store_true", help="stop at the first invalid document (exit code 1)")
    parser.add_argument("--overwrite", action="store_true", help="replace a dataset already saved in --output")
    parser.add_argument("--push_to_hub", metavar="REPO", help="also push the dataset and its card to this Hub repo")
    parser.add_argument("--private", action="store_true", help="with --push_to_hub: create a private repo")


def _add_ocr_options(parser: argparse.ArgumentParser) -> None:
    from layoutkit.pipelines.ocr import OCR_ENGINES

    group = parser.add_argument_group("OCR (train on the words inference will see)")
    group.add_argument(
        "--ocr", metavar="ENGINE", choices=sorted(OCR_ENGINES),
        help="read every page with this OCR engine (%(choices)s) and carry the gold labels onto its words",
    )
    group.add_argument("--ocr_lang", help="the engine's language(s), e.g. eng, deu+eng (default: eng)")
    group.add_argument(
        "--ocr_option", action="append", default=[], metavar="KEY=VALUE", type=_argument(parse_engine_option),
        help="an engine setting, repeatable, e.g. min_height=2000 psm=6 (values read as JSON when they parse)",
    )
    group.add_argument("--ocr_workers", type=int, help="pages read at once (default: CPU cores)")
    group.add_argument("--ocr_cache", type=Path, help="OCR result cache (default ~/.cache/layoutkit/ocr)")
    group.add_argument(
        "--pdf_text", choices=PDF_TEXT_MODES, default="auto",
        help="with --ocr, a PDF page's words: auto (default) its text layer where that covers the page, else the "
        "engine (as predict.py decides); always: the text layer; never: the engine",
    )


def _ocr_build(args: argparse.Namespace):
    """The OcrBuild of --ocr and its options, or None."""
    if not getattr(args, "ocr", None):
        return None
    from dataset_loader.ocr_build import OcrBuild

    try:
        return OcrBuild.create(args.ocr, args.ocr_cache, args.ocr_workers, pdf_text=args.pdf_text, lang=args.ocr_lang,
                               **dict(args.ocr_option))
    except ValueError as error:
        raise BuildError(f"--ocr {args.ocr}: {error}") from None


def _build_options(args: argparse.Namespace) -> dict:
    """The keyword arguments of the options `_add_output_options` adds, as every build function takes them."""
    keep_aspect, pad = RESIZE_MODES["pad" if args.keep_aspect else args.resize_mode]
    return {"size": args.resize, "keep_aspect": keep_aspect, "pad": pad, "seed": args.seed, "strict": args.strict,
            "overwrite": args.overwrite}


def _run_build(args: argparse.Namespace) -> int:
    from dataset_loader.build import build_dataset

    build_dataset(args.data_dir, args.output, ratios=args.split, labels=args.labels, ocr=_ocr_build(args),
                  **_build_options(args))
    return _finish(args)


def _run_funsd(args: argparse.Namespace) -> int:
    from dataset_loader.funsd import import_funsd

    import_funsd(
        args.input, args.output, validation_ratio=args.validation_ratio, max_docs=args.max_docs, ocr=_ocr_build(args),
        **_build_options(args),
    )
    return _finish(args)


def _finish(args: argparse.Namespace) -> int:
    from dataset_loader.report import read_report

    report = read_report(args.output) or {}
    splits = ", ".join(f"{name} {count}" for name, count in report.get("splits", {}).items())
    print(
        f"saved {args.output} ({splits}); skipped {report.get('documents_skipped')}, empty "
        f"{report.get('empty_documents')}, blank words dropped {report.get('dropped_blank_words')}; "
        f"report: {args.output / 'build_report.json'}"
    )
    if args.push_to_hub:
        return _push(args.output, args.push_to_hub, args.private)
    return 0


def _run_synth(args: argparse.Namespace) -> int:
    from dataset_loader.synth import generate

    existing = list((args.output / "annotations").glob("*.json"))
    if existing and not args.overwrite:
        raise BuildError(
            f"{args.output} already holds {len(existing)} annotations; choose a new folder or pass --overwrite"
        )
    for folder in ("images", "annotations"):
        if args.overwrite:
            shutil.rmtree(args.output / folder, ignore_errors=True)
    start = time.perf_counter()
    try:
        generate(args.output, args.num_docs, seed=args.seed, workers=args.workers, links=args.links,
                 multi_page=args.multi_page, format=args.format, scanned_share=args.scanned_share)
    except ValueError as error:
        raise BuildError(str(error)) from None
    print(f"wrote {args.num_docs} invoices to {args.output} in {time.perf_counter() - start:.1f} s")
    return 0


def _run_push(args: argparse.Namespace) -> int:
    return _push(args.dataset, args.repo, args.private)


def _push(dataset: Path, repo_id: str, private: bool) -> int:
    from dataset_loader.card import PushError, push_dataset

    try:
        push_dataset(dataset, repo_id, private=private)
    except PushError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"pushed {dataset} to https://huggingface.co/datasets/{repo_id}")
    return 0


def _argument(parse: Callable[[str], object]) -> Callable[[str], object]:
    """Turn a parser's ValueError into an argparse error that shows the parser's own message."""

    def convert(text: str) -> object:
        try:
            return parse(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    convert.__name__ = parse.__name__
    return convert


def _ratios(text: str) -> tuple[float, float, float]:
    from dataset_loader.splits import parse_ratios

    return parse_ratios(text)


def _labels(text: str) -> list[str]:
    from dataset_loader.build import parse_labels

    return parse_labels(text)


if __name__ == "__main__":
    sys.exit(main())
