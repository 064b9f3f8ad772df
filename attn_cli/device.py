"""Where the work runs: the device (auto, cpu, cuda, cuda:N), the autocast precision and its context.

Shared by training and inference; a GPU that is not there is an AttnError, not a torch traceback."""

from __future__ import annotations

import math

import torch

from attn_cli.errors import AttnError


def pick_device(name: str) -> torch.device:
    """auto (cuda when available, else cpu), cpu, cuda or cuda:N; a GPU that is not there is an
    AttnError, not a torch traceback."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise AttnError("--device cuda was asked for, but no CUDA GPU is available",
                        "use --device cpu or auto")
    device = torch.device(name)
    count = torch.cuda.device_count() if device.type == "cuda" else None
    if count is not None and device.index is not None and device.index >= count:
        raise AttnError(f"--device {name} was asked for, but this machine has {count} GPU(s)",
                        f"use cuda:0 to cuda:{count - 1}, or cuda")
    return device


def pick_precision(name: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for fp32. auto: bf16 on CUDA when supported, else fp16."""
    if name == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[name]


def autocast(device: torch.device, amp_dtype: torch.dtype | None):
    """The forward passes' autocast context for :func:`pick_precision`'s dtype (disabled for fp32)."""
    return torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None)


CPU_MAX_TOKENS = 4096  # --max-tokens on a CPU: padded tokens per batch, all processes together
GPU_TOKENS_PER_GIB = 1024  # ... on a GPU: per GiB of its memory, for each process
GPU_MAX_TOKENS = (4096, 65536)  # ... within these bounds, a power of two


def default_max_tokens(device: torch.device, world_size: int = 1) -> int:
    """--max-tokens when it is not given. A CPU: 4,096 for all processes together. A GPU: more
    work per step than a CPU-sized batch, about 1,024 tokens per GiB of its memory as a power of
    two from 4,096 to 65,536 (80 GB: 65,536; 40 GB: 32,768; 24 GB: 16,384), for each process:
    N GPUs take N times as many tokens a step, split among them. (A rule of thumb, not yet
    measured on a GPU: benchmarks/gpu_check.sh reports the memory each size takes.)"""
    if device.type != "cuda":
        return CPU_MAX_TOKENS
    gib = torch.cuda.get_device_properties(device).total_memory / 2**30
    low, high = GPU_MAX_TOKENS
    per_gpu = 2 ** int(math.log2(max(gib * GPU_TOKENS_PER_GIB, low)))
    return min(per_gpu, high) * world_size
