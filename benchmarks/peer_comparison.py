#!/usr/bin/env python
"""Our training next to the transformers LayoutLMv3 research example, same model, same data, one invocation.

The research example (`examples/research_projects/layoutlmv3/run_funsd_cord.py` in transformers) encodes each
FUNSD form with `LayoutLMv3Processor(..., padding="max_length", truncation=True, max_length=512)` through
`Dataset.map` (pixel arrays stored as Arrow lists of floats), and trains with `Trainer` in fp32 with
`default_data_collator`: every document padded to 512 tokens, text beyond 512 tokens cut off. Its recipe is
reproduced below in those few lines (the script itself downloads its data from the Hub, which is not reachable
here); everything else is Trainer's defaults. Our side is `run_invoice_ner.py`, run as a user runs it, once per
`--ours` setting.

Each run is its own process, measured alone, one after the other: training documents/s (training loop only,
evaluation excluded, as both scripts report it), peak resident memory of the process (`wait4`), test F1.
The research recipe trains on train + validation (the 149 FUNSD training forms, as the example does) and
scores seqeval on the first sub-token of each word of the truncated test windows, as its `compute_metrics`
does; ours trains on the 134 forms left after the 15 kept for choosing the epoch, and scores every word. So that
both train on as many documents, ours runs the research recipe's number of optimizer steps (`--max_train_steps`:
ceil(149 / batch) x epochs), a little over 16 epochs of its 134 forms; `--equal_epochs` runs the epochs instead.

    python -m dataset_loader funsd --input ../shared/datasets/funsd --output data/funsd
    python -m layoutkit.apps.scratch --model_type layoutlmv3 --dataset_path data/funsd --output_dir runs/scratch-v3
    python benchmarks/peer_comparison.py --dataset_path data/funsd --config_name runs/scratch-v3 --epochs 15 \
        --ours "defaults=" --ours "fast=--attention_dropout 0 --group_by_length"

Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def run_measured(command: list[str], env: dict | None = None) -> tuple[float, float]:
    """Run `command` to completion; (wall seconds, peak RSS in MiB of that process)."""
    started = time.perf_counter()
    process = subprocess.Popen([str(c) for c in command], env={**os.environ, **(env or {})})
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise SystemExit(f"{command[:3]} failed with exit code {process.returncode}")
    return time.perf_counter() - started, usage.ru_maxrss / 1024  # Linux reports KiB


# ------------------------------------------------------------------------------- the research example's recipe
def research_recipe(args) -> None:
    """run_funsd_cord.py's data preparation and Trainer set-up on a saved FUNSD dataset; writes results JSON."""
    import numpy as np
    from datasets import concatenate_datasets, load_from_disk
    from seqeval.metrics import f1_score
    from transformers import (
        AutoConfig,
        AutoModelForTokenClassification,
        AutoProcessor,
        Trainer,
        TrainingArguments,
        default_data_collator,
    )

    from layoutkit.pipelines.boxes import normalize_boxes

    dataset = load_from_disk(args.dataset_path)
    train = concatenate_datasets([dataset["train"], dataset["validation"]])
    label_list = train.features["ner_tags"].feature.names
    config = AutoConfig.from_pretrained(args.config_name, num_labels=len(label_list),
                                        id2label=dict(enumerate(label_list)),
                                        label2id={label: i for i, label in enumerate(label_list)})
    processor = AutoProcessor.from_pretrained(args.config_name, apply_ocr=False)
    model = AutoModelForTokenClassification.from_config(config)

    def prepare_examples(examples):
        images = examples["image"]
        # The example's Hub dataset stores segment boxes on the 0-1000 grid already.
        boxes = [normalize_boxes(b, image.width, image.height) for b, image in zip(examples["segment_bboxes"], images)]
        return processor([image.convert("RGB") for image in images], examples["words"], boxes=boxes,
                         word_labels=examples["ner_tags"], truncation=True, padding="max_length", max_length=512)

    columns = train.column_names
    train_dataset = train.map(prepare_examples, batched=True, remove_columns=columns)
    test_dataset = dataset["test"].map(prepare_examples, batched=True, remove_columns=columns)

    training_args = TrainingArguments(
        output_dir=args.output_dir, per_device_train_batch_size=args.batch_size, num_train_epochs=args.epochs,
        learning_rate=args.learning_rate, seed=args.seed, save_strategy="no", report_to="none",
        logging_strategy="no", use_cpu=True, disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=training_args, train_dataset=train_dataset,
                      processing_class=processor, data_collator=default_data_collator)
    train_metrics = trainer.train().metrics
    output = trainer.predict(test_dataset)
    predictions = np.argmax(output.predictions, axis=2)
    true_predictions = [[label_list[p] for p, label in zip(row, labels) if label != -100]
                        for row, labels in zip(predictions, output.label_ids)]
    true_labels = [[label_list[label] for label in labels if label != -100] for labels in output.label_ids]
    results = {
        "train_documents_per_second": train_metrics["train_samples_per_second"],
        "train_documents": len(train_dataset),
        "test_f1": f1_score(true_labels, true_predictions),
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    Path(args.output_dir, "results.json").write_text(json.dumps(results, indent=2))


# ------------------------------------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset_path", required=True, help="FUNSD saved by `python -m dataset_loader funsd`")
    parser.add_argument("--config_name", required=True, help="a LayoutLMv3 folder from `python -m layoutkit.apps.scratch`")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--learning_rate", type=float, default=5e-5, help="Trainer's default; used by both")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--ours", action="append", metavar='NAME="FLAGS"',
        help='a run_invoice_ner.py setting to measure: a name, "=", extra flags (repeatable); default: defaults=',
    )
    parser.add_argument("--skip_research", action="store_true", help="measure only our settings")
    parser.add_argument("--equal_epochs", action="store_true",
                        help="run ours for --epochs over its 134 forms, not the research recipe's step count")
    parser.add_argument("--output_dir", help="keep the runs here (default: a temporary folder)")
    parser.add_argument("--research_recipe", action="store_true", help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()

    if args.research_recipe:
        research_recipe(args)
        return

    workdir = Path(args.output_dir or tempfile.mkdtemp(prefix="peer-comparison-"))
    rows = []
    common = ["--dataset_path", args.dataset_path, "--epochs", args.epochs, "--batch_size", args.batch_size,
              "--learning_rate", args.learning_rate, "--seed", args.seed, "--config_name", args.config_name]
    if not args.skip_research:
        output = workdir / "research"
        seconds, peak = run_measured([sys.executable, __file__, "--research_recipe", *common, "--output_dir", output])
        result = json.loads((output / "results.json").read_text())
        rows.append(("research example (pad to 512, fp32, Trainer)", result["train_documents_per_second"], peak,
                     result["test_f1"], seconds))

    length = ["--num_train_epochs", args.epochs]
    if not args.equal_epochs:
        from datasets import load_from_disk

        dataset = load_from_disk(args.dataset_path)
        research_documents = len(dataset["train"]) + len(dataset["validation"])
        length = ["--max_train_steps", math.ceil(research_documents / args.batch_size) * args.epochs]
    for setting in args.ours or ["defaults="]:
        name, _, flags = setting.partition("=")
        output = workdir / f"ours-{name}"
        command = [
            sys.executable, REPO_ROOT / "run_invoice_ner.py", "--dataset_path", args.dataset_path,
            "--config_name", args.config_name, "--output_dir", output, "--box_level", "segment", *length,
            "--per_device_train_batch_size", args.batch_size,
            "--learning_rate", args.learning_rate, "--seed", args.seed, "--overwrite_cache", *shlex.split(flags),
        ]
        seconds, peak = run_measured(command, env={"PYTHONPATH": str(REPO_ROOT)})
        result = json.loads((output / "all_results.json").read_text())
        rows.append((f"run_invoice_ner.py {name}" + (f" (`{flags}`)" if flags else ""),
                     result["train_documents_per_second"], peak, result["test_f1"], seconds))

    base_speed, base_peak = (rows[0][1], rows[0][2]) if not args.skip_research else (None, None)
    budget = f"{args.epochs} epochs" if args.equal_epochs else f"{length[1]} steps ({args.epochs} research epochs)"
    print(f"\n{budget}, batch {args.batch_size}, learning rate {args.learning_rate:g}, seed {args.seed}\n")
    print("| setting | train docs/s | peak RSS MiB | test F1 | wall s | speed vs research | memory vs research |")
    print("|---|---|---|---|---|---|---|")
    for name, speed, peak, f1, seconds in rows:
        speed_ratio = f"{speed / base_speed:.2f}x" if base_speed else "-"
        memory_ratio = f"{peak / base_peak:.2f}x" if base_peak else "-"
        print(f"| {name} | {speed:.2f} | {peak:.0f} | {f1:.4f} | {seconds:.0f} | {speed_ratio} | {memory_ratio} |")


if __name__ == "__main__":
    main()
