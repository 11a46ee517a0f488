"""The `layoutkit` command: one entry point that forwards to the toolkit's command-line programs.

    layoutkit COMMAND [ARGS ...]        (also `python -m layoutkit COMMAND ...`)

Each command runs the `main(argv)` of one module with the rest of the command line, so `layoutkit predict ARGS`
is `python predict.py ARGS` and `layoutkit dataset ARGS` is `python -m dataset_loader ARGS`. The modules are
imported only for the command that runs, so `layoutkit --help` stays fast and a command whose optional
dependencies are missing does not break the others. Several processes or GPUs: `accelerate launch [...] -m
layoutkit train-ner ARGS` (or `... -m layoutkit predict ARGS`).
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from layoutkit import __version__


@dataclass(frozen=True)
class Command:
    target: str  # "module:function"; the function takes argv (a list of strings) and returns an exit code or None
    help: str


COMMANDS: dict[str, Command] = {
    "train-ner": Command("layoutkit.train.ner_task:main",
                         "fine-tune for key-information extraction (one BIO label per word); run_invoice_ner.py"),
    "train-classifier": Command("layoutkit.train.classification_task:main",
                                "fine-tune for document-image classification; run_doc_classification.py"),
    "train-relations": Command("layoutkit.train.relation_task:main",
                               "fine-tune key -> value linking between entities; run_relation_extraction.py"),
    "train-pretraining": Command("layoutkit.train.pretraining_task:main",
                                 "masked-LM pretraining with layout on unlabeled documents; run_pretraining.py"),
    "pretraining-corpus": Command("layoutkit.train.pretraining_corpus:main",
                                  "a folder of unlabeled page images/PDFs into a pretraining dataset (OCR, cached)"),
    "calibrate": Command("layoutkit.train.ocr_calibration:main",
                         "fit a checkpoint's field confidence on validation pages read by OCR (config.json)"),
    "predict": Command("layoutkit.apps.predict:main",
                       "images, PDFs or a folder into structured JSON (fields, line items, words, boxes)"),
    "dataset": Command("dataset_loader.__main__:main",
                       "build datasets: build, funsd, labelstudio, synth, classify, synth-classes, push"),
    "scratch": Command("layoutkit.apps.scratch:main",
                       "a from-scratch model config and a tokenizer trained on a dataset's words (offline start)"),
    "serve": Command("layoutkit.apps.serve:main", "the HTTP service over a checkpoint (needs the serve extra)"),
    "export-onnx": Command("layoutkit.apps.export_onnx:main",
                           "export a checkpoint to ONNX, checked against PyTorch (needs the onnx extra)"),
    "compare": Command("layoutkit.apps.compare:main",
                       "compare finished training runs: a Markdown report with metrics and confusion matrices"),
    "postprocess": Command("layoutkit.apps.rule_measurement:main",
                           "measure the post-processing rules on a run's test predictions"),
    "quickstart": Command("layoutkit.apps.quickstart:main",
                          "the offline quick start: sample invoices, train from scratch, test, predict, end to end"),
}


def program_name(default: str) -> str:
    """argparse's `prog` for a command's parser: "layoutkit COMMAND" when the `layoutkit` command runs it (see `main`),
    else `default`, the way the module is run directly ("python -m dataset_loader")."""
    return sys.argv[0] if sys.argv and sys.argv[0].startswith("layoutkit ") else default


def progress_bars_on_terminal_only() -> None:
    """Hugging Face's progress bars (datasets, the Hub, transformers' loading and saving) only when stderr is a
    terminal: in a log file each redraw is a line. Set before those libraries are imported; a variable the user set
    wins."""
    if not sys.stderr.isatty():
        os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


USAGE = "usage: layoutkit [--help] [--version] COMMAND [ARGS ...]"


def usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = [
        USAGE,
        "",
        "LayoutLM-family training and inference on documents. `layoutkit COMMAND --help` shows a command's options.",
        "",
        "commands:",
        *(f"  {name.ljust(width)}  {command.help}" for name, command in COMMANDS.items()),
    ]
    return "\n".join(lines) + "\n"


def resolve(target: str):
    """The function named by "module:function", imported now."""
    module_name, _, function_name = target.partition(":")
    module = importlib.import_module(module_name)
    try:
        return getattr(module, function_name)
    except AttributeError:
        raise LookupError(f"{module_name} has no {function_name}() in this version of layoutkit") from None


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage(), end="", file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    if argv[0] == "--version":
        print(f"layoutkit {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"{USAGE}\nlayoutkit: error: unknown command {name!r} (`layoutkit --help` lists the commands)",
              file=sys.stderr)
        return 2
    try:
        function = resolve(COMMANDS[name].target)
    except LookupError as error:
        print(f"layoutkit {name}: error: {error}", file=sys.stderr)
        return 2
    progress_bars_on_terminal_only()
    # The commands' argparse parsers name the program after sys.argv[0] (in usage lines and errors).
    saved = sys.argv
    sys.argv = [f"layoutkit {name}", *rest]
    try:
        code = function(rest)
    finally:
        sys.argv = saved
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
