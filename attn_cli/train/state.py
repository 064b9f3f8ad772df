"""What a run's ``last/`` directory holds so that it resumes exactly: the weights (and the --ema
average), optimizer, scheduler, grad scaler, RNG states and the :class:`TrainState` (step, data
position, best metric, counters). The directory helpers (staging, atomic replace, safetensors)
are ``attn_cli.rundir``'s; the Trainer decides when to save.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from attn_cli import rundir as ckpt
from attn_cli.config import check_field_types
from attn_cli.data.batching import DataPosition
from attn_cli.errors import AttnError

EMA_FILE = "ema.safetensors"  # in last/, with --ema
OPTIMIZER_FILE = "optimizer.pt"  # in last/: optimizer, scheduler, scaler, RNG, EMA update count
STATE_FILE = "state.json"  # in last/: the TrainState


@dataclass
class TrainState:
    """Everything besides weights/optimizer that resume needs (saved in last/state.json)."""

    step: int = 0  # optimizer steps done
    data: DataPosition = field(default_factory=DataPosition)  # next batch to train on
    best: float | None = None  # best validation metric so far
    best_step: int = 0
    bad_evals: int = 0  # evaluations since the last improvement (for --patience)
    train_seconds: float = 0.0  # wall time spent training, all sessions together
    tokens: int = 0  # target tokens (examples for sentiment) trained on
    skipped: int = 0  # non-finite batches skipped (--skip-nonfinite)
    horizon: int | None = None  # --time-budget: the steps the budget allows (the schedule's end), estimated

    def to_dict(self) -> dict:
        return {**self.__dict__, "data": self.data.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> TrainState:
        return cls(**{**d, "data": DataPosition.from_dict(d["data"])})


@dataclass
class Resumable:
    """The training objects whose state last/ keeps besides the TrainState."""

    model: nn.Module  # the unwrapped model (not DDP, not compiled)
    ema: AveragedModel | None  # --ema's moving average
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    device: torch.device


def write_last(staged: Path, parts: Resumable, state: TrainState) -> None:
    """Fill the staged last/ directory (the caller moves it into place)."""
    ckpt.save_weights(parts.model, staged / ckpt.WEIGHTS_FILE)
    if parts.ema is not None:
        ckpt.save_weights(parts.ema.module, staged / EMA_FILE)
    # (training draws are reseeded every step by step_seed; the generators are kept so that
    # any other draw between steps resumes exactly too)
    rng = {"torch": torch.get_rng_state()}
    if parts.device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(parts.device)
    ckpt.save_torch_state({"optimizer": parts.optimizer.state_dict(),
                           "scheduler": parts.scheduler.state_dict(),
                           "scaler": parts.scaler.state_dict(), "rng": rng,
                           "ema_updates": int(parts.ema.n_averaged) if parts.ema is not None else 0},
                          staged / OPTIMIZER_FILE)
    ckpt.atomic_write_text(staged / STATE_FILE, json.dumps(state.to_dict(), indent=2))


def read_last(last: Path, parts: Resumable) -> TrainState:
    """Restore ``parts`` from a last/ directory and return its TrainState."""
    ckpt.load_weights(parts.model, last / ckpt.WEIGHTS_FILE)
    extra = ckpt.load_torch_state(last / OPTIMIZER_FILE)
    parts.optimizer.load_state_dict(extra["optimizer"])
    parts.scheduler.load_state_dict(extra["scheduler"])
    parts.scaler.load_state_dict(extra["scaler"])
    torch.set_rng_state(extra["rng"]["torch"])
    if "cuda" in extra["rng"] and parts.device.type == "cuda":
        torch.cuda.set_rng_state(extra["rng"]["cuda"], parts.device)
    if parts.ema is not None and (last / EMA_FILE).is_file():
        ckpt.load_weights(parts.ema.module, last / EMA_FILE)
        parts.ema.n_averaged.fill_(int(extra.get("ema_updates", 1)))
    # (--ema newly given on resume: the average starts from the resumed weights)
    try:
        state = TrainState.from_dict(json.loads((last / STATE_FILE).read_text()))
        check_field_types(state)
    except (ValueError, TypeError, KeyError, AttributeError, OSError) as e:
        raise AttnError(f"{last / STATE_FILE} is damaged ({e})",
                        "restore it, or start a new run without --resume") from None
    return state


def saved_step(run_dir: Path) -> int:
    """The step that the run's last/ holds (0: none saved)."""
    last = ckpt.find_dir(run_dir / ckpt.LAST_DIR)
    if last is None:
        return 0
    return json.loads((last / STATE_FILE).read_text())["step"]
