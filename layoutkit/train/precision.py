"""Choosing autocast precision by measuring the device (`--mixed_precision auto`).

bf16 autocast pays only where the hardware multiplies bf16 natively: NVIDIA GPUs from Ampere on, and CPUs with
AVX512-BF16 or AMX. Elsewhere PyTorch falls back to a reference kernel; on an AVX2 CPU a bf16 matrix product
measured 40-300x slower than fp32 (README, Speed). So "auto" asks the GPU for bf16 support and, on a CPU, times
one matrix product of a transformer layer's shape in both precisions.
"""

from __future__ import annotations

import time

import torch

# Inputs of a small transformer layer: 1024 tokens of width 256 through a 256 x 1024 projection.
PROBE_SHAPE = (1024, 256, 1024)
# bf16 is chosen when its product takes at most this share of fp32's time.
BF16_TIME_SHARE = 0.8


def matmul_seconds(dtype: torch.dtype, device: str = "cpu", repeats: int = 3) -> float:
    rows, inner, cols = PROBE_SHAPE
    left, right = torch.randn(rows, inner, dtype=dtype, device=device), torch.randn(inner, cols, dtype=dtype,
                                                                                     device=device)
    left @ right  # warm-up: kernel selection, allocations
    start = time.perf_counter()
    for _ in range(repeats):
        left @ right
    return (time.perf_counter() - start) / repeats


def choose_mixed_precision(device: torch.device) -> tuple[str, str]:
    """("bf16" or "no", why) for training on `device`."""
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return "bf16", f"{torch.cuda.get_device_name(device)} supports bf16"
        return "no", f"{torch.cuda.get_device_name(device)} has no bf16 support"
    if device.type != "cpu":
        return "no", f"no bf16 measurement for {device.type}"
    fp32, bf16 = matmul_seconds(torch.float32), matmul_seconds(torch.bfloat16)
    choice = "bf16" if bf16 <= BF16_TIME_SHARE * fp32 else "no"
    return choice, (f"a bf16 matrix product takes {bf16 / fp32:.2f}x the fp32 time on this CPU "
                    f"({torch.backends.cpu.get_cpu_capability()})")
