#!/usr/bin/env python
"""LayoutLMv2 / LayoutXLM from-scratch sizes: parameters, checkpoint size and seconds per training step.

    python benchmarks/layoutlmv2_backbone.py                       # tiny-resnext101, tiny, small
    python benchmarks/layoutlmv2_backbone.py --variants tiny,small,base --steps 5

Variants are `layoutkit.apps.scratch` sizes (`tiny`, `small`, `base`), and `tiny-resnext101`: the tiny transformer
with transformers' default detectron2 backbone (the ResNeXt-101 32x8d FPN of the published checkpoints), which
is what `--size tiny` gave before it sized the backbone. A step is forward + backward + AdamW on a batch of
--batch_size windows of --seq_len tokens with 224x224 page images (random ids and boxes: the speed does not
depend on the values). The first step (allocation) is not timed; wall seconds and CPU seconds (all threads) per
step are printed, the latter being the fairer figure on a shared machine. Needs detectron2.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForTokenClassification, LayoutLMv2Config

from layoutkit.apps.scratch import build_scratch_checkpoint

WORDS = ["Invoice", "Total", "Date:", "Due", "Amount", "2024-01-03", "$1,250.00", "ACME", "Corp", "Qty"] * 50


def variant_config(variant: str, folder: str, num_labels: int):
    size = variant.split("-")[0]
    build_scratch_checkpoint(folder, "layoutlmv2", WORDS, size=size, vocab_size=300)
    config = AutoConfig.from_pretrained(folder, num_labels=num_labels)
    if variant.endswith("-resnext101"):
        default = LayoutLMv2Config()
        config.detectron2_config_args = default.detectron2_config_args
        config.image_feature_pool_shape = list(default.image_feature_pool_shape)
    return config


def measure(variant: str, batch_size: int, seq_len: int, steps: int, num_labels: int = 19) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        torch.manual_seed(0)
        config = variant_config(variant, os.path.join(folder, "scratch"), num_labels)
        model = AutoModelForTokenClassification.from_config(config)
        parameters = sum(p.numel() for p in model.parameters())
        backbone = sum(p.numel() for p in model.layoutlmv2.visual.parameters())
        model.save_pretrained(os.path.join(folder, "model"))
        size = sum(f.stat().st_size for f in Path(folder, "model").iterdir())
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        x0 = torch.randint(0, 900, (batch_size, seq_len, 2))
        batch = {
            "input_ids": torch.randint(5, config.vocab_size, (batch_size, seq_len)),
            "bbox": torch.cat([x0, x0 + torch.randint(1, 100, (batch_size, seq_len, 2))], dim=-1),
            "attention_mask": torch.ones(batch_size, seq_len, dtype=torch.long),
            "image": torch.randint(0, 255, (batch_size, 3, 224, 224), dtype=torch.uint8),
            "labels": torch.randint(0, num_labels, (batch_size, seq_len)),
        }
        times, cpu_times = [], []
        for _ in range(steps + 1):
            start, cpu_start = time.perf_counter(), time.process_time()
            model(**batch).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            times.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - cpu_start)
        return {"variant": variant, "parameters": parameters, "backbone": backbone, "size_mb": size / 1e6,
                "step_s": sum(times[1:]) / steps, "step_cpu_s": sum(cpu_times[1:]) / steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default="tiny-resnext101,tiny,small")
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--seq_len", type=int, default=128)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    print(f"batch {args.batch_size} x {args.seq_len} tokens + 224x224 images, {torch.get_num_threads()} threads, "
          f"mean of {args.steps} steps after the first")
    # CPU seconds (all threads) as well: on a shared machine the wall time depends on the other processes.
    print(f"| {'variant':<16} | {'parameters':>11} | {'of which backbone':>17} | {'checkpoint MB':>13} | {'s/step':>7} "
          f"| {'CPU s/step':>10} |")
    print(f"|{'-' * 18}|{'-' * 13}|{'-' * 19}|{'-' * 15}|{'-' * 9}|{'-' * 12}|")
    for variant in args.variants.split(","):
        row = measure(variant, args.batch_size, args.seq_len, args.steps)
        print(f"| {row['variant']:<16} | {row['parameters'] / 1e6:>10.1f}M | {row['backbone'] / 1e6:>16.1f}M "
              f"| {row['size_mb']:>13.1f} | {row['step_s']:>7.2f} | {row['step_cpu_s']:>10.2f} |", flush=True)


if __name__ == "__main__":
    main()
