#!/usr/bin/env python
"""Training throughput on FUNSD: documents/s, tokens/s and peak memory, for one model config, with and
without dynamic padding, in fp32 and bf16 autocast.

The baseline is what the transformers LayoutLMv3 research example does: every window padded to 512
tokens, fp32. Our default is dynamic padding (to the longest window in the batch, rounded up to 8).

    python -m dataset_loader funsd --input ../shared/datasets/funsd --output data/funsd
    python -m layoutkit.apps.scratch --model_type layoutlmv3 --dataset_path data/funsd --output_dir runs/scratch-v3
    python benchmarks/train_throughput.py --dataset_path data/funsd --config_name runs/scratch-v3

Prints a Markdown table. Pass --model_name_or_path to measure a real checkpoint instead (e.g.
microsoft/layoutlmv3-base, if you have the Hub).
"""

import argparse
import json
import resource
import subprocess
import sys
import time

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from datasets import load_from_disk
from torch.utils.data import DataLoader
from transformers import AutoConfig, AutoModelForTokenClassification

from layoutkit.pipelines.encoding import LayoutCollator
from layoutkit.pipelines.modeling import load_processing, model_family
from layoutkit.train.dataloaders import LengthGroupedEpochSampler
from layoutkit.train.ner_task import encode_ner_split, model_inputs
from layoutkit.train.optimization import create_optimizer


def peak_memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


LEVERS = {
    "grouped": "windows of similar length batched together (--group_by_length)",
    "attn0": "no dropout on attention probabilities (--attention_dropout 0)",
}


def measure(args, windows, label_names, padding: str, precision: str, levers: list[str]) -> dict:
    accelerator = Accelerator(mixed_precision=precision, cpu=args.cpu)
    set_seed(args.seed)
    overrides = {"attention_probs_dropout_prob": 0.0} if "attn0" in levers else {}
    config = AutoConfig.from_pretrained(args.config_name or args.model_name_or_path, num_labels=len(label_names),
                                        **overrides)
    if args.model_name_or_path:
        model = AutoModelForTokenClassification.from_pretrained(args.model_name_or_path, config=config)
    else:
        model = AutoModelForTokenClassification.from_config(config)
    family = model_family(config)
    # Padding every window to 512 = the research example's padding="max_length".
    multiple = args.max_seq_length if padding == "max_length" else 8
    collator = LayoutCollator(args.pad_token_id, multiple, family.image_input)
    order = dict(shuffle=True)
    if "grouped" in levers:
        order = dict(sampler=LengthGroupedEpochSampler.for_windows(windows, args.batch_size, args.seed))
    dataloader = DataLoader(windows, batch_size=args.batch_size, **order, collate_fn=collator,
                            generator=torch.Generator().manual_seed(args.seed))
    optimizer = create_optimizer(model, 5e-5, 0.0)
    model, optimizer, dataloader = accelerator.prepare(model, optimizer, dataloader)
    model.train()

    def step(batch):
        loss = model(**model_inputs(batch)).loss
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad()

    batches = iter(dataloader)
    for _ in range(args.warmup_steps):
        step(next(batches))
    if accelerator.device.type == "cuda":
        torch.cuda.synchronize()
    windows_done = tokens = padded = 0
    started = time.perf_counter()
    for _ in range(args.steps):
        try:
            batch = next(batches)
        except StopIteration:
            batches = iter(dataloader)
            batch = next(batches)
        step(batch)
        windows_done += batch["input_ids"].shape[0]
        tokens += int(batch["attention_mask"].sum())
        padded += batch["input_ids"].numel()
    if accelerator.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    documents_per_window = args.num_documents / len(windows)
    return {
        "padding": padding,
        "precision": "fp32" if precision == "no" else precision,
        "levers": "+".join(levers) or "-",
        "docs/s": windows_done * documents_per_window / seconds,
        "tokens/s": tokens / seconds,
        "padded tokens/s": padded / seconds,
        "peak MiB": peak_memory_mib(accelerator.device),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset_path", required=True, help="FUNSD built with `python -m dataset_loader funsd`")
    parser.add_argument("--model_name_or_path")
    parser.add_argument("--config_name")
    parser.add_argument("--tokenizer_name")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--max_seq_length", type=int, default=512)
    parser.add_argument("--stride", type=int, default=128)
    parser.add_argument("--box_level", choices=["word", "segment"], default="segment")
    parser.add_argument("--steps", type=int, default=10, help="timed optimizer steps per configuration")
    parser.add_argument("--warmup_steps", type=int, default=2)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--cpu", action="store_true", help="measure on the CPU even if a GPU is present")
    parser.add_argument(
        "--configs", default="max_length:no,dynamic:no,max_length:bf16,dynamic:bf16",
        help="comma-separated padding:precision[:lever...] settings to measure; levers: "
        + ", ".join(f"{name} = {what}" for name, what in LEVERS.items()),
    )
    parser.add_argument("--json", action="store_true", help="measure one pair and print it as JSON")
    args = parser.parse_args()
    if not (args.model_name_or_path or args.config_name):
        parser.error("give --model_name_or_path or --config_name")

    train = load_from_disk(args.dataset_path)["train"]
    label_names = train.features["ner_tags"].feature.names
    source = args.tokenizer_name or args.model_name_or_path or args.config_name
    tokenizer, image_processor, _ = load_processing(source)
    family = model_family(AutoConfig.from_pretrained(args.config_name or args.model_name_or_path))
    windows = encode_ner_split(train, tokenizer, image_processor, family, label_names, args.max_seq_length,
                               args.stride, box_level=args.box_level)
    args.pad_token_id, args.num_documents = tokenizer.pad_token_id, len(train)

    if args.json:
        padding, precision, *levers = args.configs.split(":")
        unknown = set(levers) - set(LEVERS)
        if unknown:
            parser.error(f"unknown levers {sorted(unknown)}; known: {sorted(LEVERS)}")
        print(json.dumps(measure(args, windows, label_names, padding, precision, levers)))
        return
    # Each configuration in its own process, so peak memory is that configuration's alone.
    rows = []
    for pair in args.configs.split(","):
        command = [sys.executable, __file__, *sys.argv[1:], "--configs", pair, "--json"]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(output.strip().splitlines()[-1]))
        print(f"measured {pair}", file=sys.stderr)

    baseline = rows[0]["docs/s"]
    model = args.model_name_or_path or args.config_name
    device = "cuda" if torch.cuda.is_available() and not args.cpu else "cpu"
    print(f"\nmodel: {model} ({family.model_type}), device: {device}, batch {args.batch_size}, "
          f"{len(train)} documents in {len(windows)} windows of <= {args.max_seq_length} tokens\n")
    print("| padding | precision | levers | docs/s | tokens/s | padded tokens/s | peak MiB | speed-up |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['padding']} | {row['precision']} | {row['levers']} | {row['docs/s']:.2f} | "
              f"{row['tokens/s']:.0f} | {row['padded tokens/s']:.0f} | {row['peak MiB']:.0f} | "
              f"{row['docs/s'] / baseline:.2f}x |")


if __name__ == "__main__":
    main()
