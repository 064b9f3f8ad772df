"""--preset auto's measurements: the data's size (from the cache's lengths) and the machine's
speed (a few timed training steps of two shapes on real batches of typical length), and the
resolution of the run's shape from them (``attn_cli.train.sizing`` holds the rule)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import numpy as np
import torch

from attn_cli.config import AUTO, ModelConfig, TrainConfig
from attn_cli.data.batching import plan_batches
from attn_cli.device import autocast, pick_precision
from attn_cli.model.transformer import build_model
from attn_cli.train import sizing
from attn_cli.train.optim import make_optimizer
from attn_cli.train.units import TaskContext, TaskUnit

PROBE_SHAPES = (sizing.LADDER[1], sizing.LADDER[5])  # timed to fit the speed line (tiny and d=192)
PROBE_STEPS = 4  # timed steps per shape, after one untimed


def data_size(cfg: TrainConfig, mcfg: ModelConfig, lengths: np.ndarray) -> sizing.DataSize:
    """The training data as the rule sees it (``lengths``: each row's padded cost), with the
    number of batches an epoch's plan makes of it."""
    tgt_vocab = mcfg.tgt_vocab_size if mcfg.is_seq2seq else None
    steps = len(plan_batches(lengths, cfg.max_tokens, seed=cfg.seed, epoch=0)) if len(lengths) else None
    return sizing.DataSize(task=mcfg.task, epoch_tokens=int(lengths.sum(dtype=np.int64)),
                           length=float(np.median(lengths)) if len(lengths) else 1.0,
                           vocab=mcfg.vocab_size, tgt_vocab=tgt_vocab,
                           epoch_steps=max(1, steps // cfg.accum) if steps else None)


def typical_rows(train, lengths: np.ndarray, max_tokens: int) -> list:
    """A full batch of training rows around the median length (the lengths' middle rows)."""
    order = np.argsort(lengths, kind="stable")
    length = max(int(np.median(lengths)), 1)
    n = max(1, min(len(order), max_tokens // length))
    start = max(0, len(order) // 2 - n // 2)
    return train.gather(order[start:start + n].tolist())


def time_steps(mcfg: ModelConfig, cfg: TrainConfig, rows: list, device: torch.device,
               make_unit: Callable[[TaskContext], TaskUnit], toks=None, steps: int = PROBE_STEPS) -> float:
    """Median seconds per optimizer step of a fresh ``mcfg`` model on ``rows`` (after one untimed step)."""
    model = build_model(mcfg).to(device).train()
    unit = make_unit(TaskContext(cfg, mcfg, toks, device))
    optimizer = make_optimizer(model, cfg, device)
    batch, count = unit.prepare(unit.collate(rows, 0).to(device))
    dtype = pick_precision(cfg.precision, device)
    times = []
    for _ in range(steps + 1):  # the first is untimed (allocations, thread pools, kernels)
        _sync(device)
        started = time.perf_counter()
        with autocast(device, dtype):
            loss = unit.loss_sum(model, batch, cfg.smoothing) / max(count, 1.0)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        _sync(device)
        times.append(time.perf_counter() - started)
    return float(np.median(times[1:]))  # (the median: a step slowed by another process does not count)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_speed(mcfg: ModelConfig, cfg: TrainConfig, size: sizing.DataSize, rows: list,
                  device: torch.device, make_unit: Callable[[TaskContext], TaskUnit], toks=None) -> sizing.Speed:
    """Fit seconds per step = a + b x FLOPs through two probed shapes (b alone if noise makes
    the line fall)."""
    points = []
    for shape in PROBE_SHAPES:
        probe_cfg = dataclasses.replace(mcfg, **shape.dims(mcfg.task))
        seconds = time_steps(probe_cfg, cfg, rows, device, make_unit, toks)
        points.append((sizing.step_flops(shape, size, cfg.max_tokens), seconds))
    (f1, t1), (f2, t2) = points
    slope = (t2 - t1) / (f2 - f1)
    if slope <= 0 or t1 - slope * f1 < 0:
        return sizing.Speed(0.0, t2 / f2)
    return sizing.Speed(t1 - slope * f1, slope)


def resolve_shape(cfg: TrainConfig, mcfg: ModelConfig, train, device: torch.device,
                  make_unit: Callable[[TaskContext], TaskUnit], note: Callable[[str], None], toks=None
                  ) -> tuple[TrainConfig, dict | None]:
    """(the config with its shape filled in, the choice for config.json) for --preset auto: the
    dims given explicitly win; the rest come from the rule. A config with every dim set (a
    resumed auto run) is returned as it is: never re-probed into another model."""
    given = cfg.shape()
    if cfg.preset != AUTO or len(given) >= 4:
        return cfg, None
    lengths = getattr(train, "lengths", None)
    budget = sizing.Budget(cfg.max_tokens * cfg.accum, cfg.time_budget, cfg.max_steps, cfg.epochs)
    if lengths is None or (budget.seconds is None and budget.steps is None and budget.epochs is None):
        shape = sizing.LADDER[6]  # the small preset's shape
        why = ("no --time-budget, --max-steps or --epochs to size it by" if lengths is not None
               else "a --stream run's size is unknown")
        note(f"auto: {shape.describe(mcfg.task)} (the small preset): {why}")
        return _with_shape(cfg, shape, mcfg.task), {"why": why}
    size = data_size(cfg, mcfg, np.asarray(lengths))
    speed = None
    if budget.steps is None and budget.seconds is not None:
        started = time.perf_counter()
        speed = measure_speed(mcfg, cfg, size, typical_rows(train, np.asarray(lengths), cfg.max_tokens),
                              device, make_unit, toks)
        note(f"auto: measured this machine's training speed in {time.perf_counter() - started:.1f} s")
    choice = sizing.choose(size, budget, speed)
    note(choice.line(mcfg.task) + (f" (given: {', '.join(f'{k}={v}' for k, v in given.items())})"
                                   if given else ""))
    return _with_shape(cfg, choice.option.shape, mcfg.task), choice.to_dict()


def _with_shape(cfg: TrainConfig, shape: sizing.Shape, task: str) -> TrainConfig:
    """``cfg`` with every dim set: the given ones, else ``shape``'s."""
    chosen = {"d_model": shape.d_model, "n_layers": shape.n_layers, "n_heads": shape.n_heads, "d_ff": shape.d_ff}
    chosen.update({k: getattr(cfg, k) for k in chosen if getattr(cfg, k) is not None})
    if chosen["d_model"] % chosen["n_heads"]:  # a given width the ladder's heads do not divide
        chosen["n_heads"] = next(h for h in (8, 4, 2, 1) if chosen["d_model"] % h == 0)
    return dataclasses.replace(cfg, **chosen)
