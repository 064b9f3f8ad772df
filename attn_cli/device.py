"""Where the work runs: the device (auto, cpu, cuda, cuda:N), the autocast precision and its context.

Shared by training and inference; a GPU that is not there is an AttnError, not a torch traceback."""

from __future__ import annotations

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
