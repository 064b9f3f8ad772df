"""How the weights move: AdamW, the learning-rate schedule (linear warmup, then a decay to zero
at the end of the budget, or inverse square root without one), and the seed of each step's
draws. Device and precision are in ``attn_cli.device``."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from attn_cli.config import TrainConfig


def lr_factor(step: int, cfg: TrainConfig, horizon: int | None = None) -> float:
    """Multiplier of cfg.lr at ``step``: linear warmup, then (cfg.decay) a linear or cosine decay
    that reaches zero (cosine: min_lr_ratio) at ``horizon`` steps (--max-steps, or the Trainer's
    estimate of the steps a --time-budget allows), or 1/sqrt decay. Budgeted training: Li et
    al., ICLR 2020 (a schedule that ends with the budget beats one that does not)."""
    warm = max(1, cfg.warmup)
    if step < warm:
        return (step + 1) / warm
    total = horizon or cfg.max_steps
    if cfg.decay == "inverse_sqrt" or total is None:
        return math.sqrt(warm / (step + 1))
    progress = min(1.0, (step - warm) / max(1, total - warm))
    if cfg.decay == "linear":
        return 1.0 - progress
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def make_optimizer(model: nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """AdamW (0.9, 0.98); weight decay on matrices only; fused on CUDA and CPU (its ``found_inf``
    skips a non-finite step on the device: ``attn_cli.train.stepping``)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.98), eps=1e-9,
                             fused=device.type in ("cuda", "cpu"))


def step_seed(seed: int, rank: int, draw: int) -> int:
    """The torch seed of a training step's random draws (dropout, pretraining masks): a pure
    function of --seed, the DDP rank and the step's number (optimizer steps plus skipped ones),
    so each rank draws its own and a resumed run draws exactly what an uninterrupted one would,
    with any number of processes."""
    return int(np.random.SeedSequence([seed % 2**64, rank, draw]).generate_state(1, np.uint64)[0])
