#!/usr/bin/env python
"""Pages per second through predict.py over a folder of invoice images, and the field exact match of its output.

    python benchmarks/predict_throughput.py --model runs/invoices-layoutlm-small --data_dir data/sample_invoices \
        --dataset_path data/invoices --max_docs 50 --config "before=--ocr_workers 0 --ocr_preset accurate" --config "after="

Each `--config NAME=FLAGS` runs `predict.py --model_name_or_path MODEL --input FOLDER --output_dir ...
FLAGS` in a fresh process on the same images (the first --max_docs of --data_dir/images, linked into one folder);
the configurations take turns for --repeats rounds, so a change in the machine's load falls on all of them alike.
Pages per second are the pages over the command's wall time, model and OCR loading included. Field exact match is
benchmarks/end_to_end.py's: a gold value (an annotated entity's text) counts when a predicted value of that field
has exactly its text; reported as recall over all gold values.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dataset_loader.annotations import read_annotation
from layoutkit.apps.end_to_end import Tally, annotation_files, gold_values, predicted_values

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--data_dir", type=Path, required=True, help="annotation folder (images/ + annotations/)")
    parser.add_argument("--dataset_path", type=Path,
                        help="the dataset built from --data_dir: take --split's documents (default: the first files)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--max_docs", type=int, default=50)
    parser.add_argument("--config", action="append", required=True, metavar="NAME=FLAGS")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--output_json", type=Path)
    args = parser.parse_args(argv)
    configs = [text.partition("=")[::2] for text in args.config]

    annotations = annotation_files(args.data_dir, args.dataset_path, args.split, args.max_docs)
    documents = [read_annotation(path, args.data_dir / "images") for path in annotations]
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "pages"
        folder.mkdir()
        for document in documents:
            (folder / document.image_file.name).symlink_to(document.image_file.resolve())
        results = {name: {"seconds": [], "exact": []} for name, _ in configs}
        for _ in range(args.repeats):
            for name, flags in configs:
                output = Path(scratch) / name
                command = [sys.executable, str(ROOT / "predict.py"), "--model_name_or_path", args.model, "--input",
                           str(folder), "--output_dir", str(output), *shlex.split(flags)]
                started = time.perf_counter()
                subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                results[name]["seconds"].append(time.perf_counter() - started)
                tally = Tally()
                for document in documents:
                    prediction = json.loads((output / f"{document.image_file.stem}.json").read_text(encoding="utf-8"))
                    tally.add(gold_values(document), predicted_values(prediction["fields"]))
                results[name]["exact"].append(tally.row())
                print(json.dumps({"config": name, "seconds": results[name]["seconds"][-1],
                                  "load": os.getloadavg()[0], **tally.row()}), file=sys.stderr)

    baseline = statistics.median(results[configs[0][0]]["seconds"])
    print(f"{len(documents)} pages; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; "
          f"median of {args.repeats} run(s)")
    print("| configuration | flags | s (median) | pages/s | speed-up | field exact match |")
    print("|---|---|---|---|---|---|")
    for name, flags in configs:
        seconds = statistics.median(results[name]["seconds"])
        row = results[name]["exact"][-1]
        print(f"| {name} | `{flags}` | {seconds:.0f} | {len(documents) / seconds:.3f} | {baseline / seconds:.2f}x "
              f"| {row['recall']:.3f} ({row['exact']}/{row['gold']}) |")
    if args.output_json:
        args.output_json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
