"""The training loop's bookkeeping: the statistics window behind each progress report and
metrics.jsonl ``train`` row, one session's clock, and the stop conditions (--max-steps,
--epochs, --time-budget, --patience). Pure; the Trainer calls it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from attn_cli.config import TrainConfig
from attn_cli.train.state import TrainState


@dataclass
class Window:
    """Training statistics since the last ``train`` row of metrics.jsonl."""

    t: float = field(default_factory=time.perf_counter)  # when the window opened
    tokens: int = 0  # target tokens (examples for sentiment) of the finite steps
    loss: float = 0.0  # sum of the finite steps' mean losses
    n: int = 0  # finite steps
    real: int = 0  # non-pad slots of the batches (finite or not)
    slots: int = 0  # all slots of those batches
    wait: float = 0.0  # seconds the steps waited on data

    def reset(self, now: float) -> None:
        """Start a new window at ``now`` (after a ``train`` row)."""
        self.t, self.tokens, self.loss, self.n, self.real, self.slots, self.wait = now, 0, 0.0, 0, 0, 0, 0.0

    def stats(self, state: TrainState, lr: float, epoch: float, now: float) -> dict:
        """The progress report of the step just done (``epoch``: with the fraction done)."""
        return {"step": state.step, "epoch": epoch, "lr": lr,
                "loss": self.loss / max(self.n, 1),
                "tokens_per_s": self.tokens / max(now - self.t, 1e-9) * 1.0,
                "pad_fraction": 1 - self.real / max(self.slots, 1),
                "data_wait": self.wait / max(now - self.t, 1e-9),  # share of time
                "best": state.best, "elapsed": state.train_seconds}


@dataclass
class Session:
    """One call of Trainer.run: when it started and what it has done."""

    started: float  # time.perf_counter() at the start
    seconds_before: float  # TrainState.train_seconds of the earlier sessions
    last_eval_step: int  # the step of the last evaluation (or of the start)
    window: Window = field(default_factory=Window)  # reset in place after each train row
    start_step: int = 0  # TrainState.step at the start
    last_eval_seconds: float = 0.0  # TrainState.train_seconds at the last evaluation (or the start)
    eval_seconds: float = 0.0  # wall time the budget-spaced evaluations took (this session)
    evals: int = 0  # how many there were
    epoch: float = 0.0  # the epoch (with its fraction) of the last step reported

    def elapsed(self) -> float:
        return time.perf_counter() - self.started


EVALS_PER_RUN = 10  # a budgeted run without --eval-every evaluates about this many times
MIN_EVAL_STEPS = 50  # ... but never within fewer steps than this of the last evaluation
EVAL_EVERY = 500  # steps between evaluations of a run without a budget (CPU)
EVAL_SECONDS = 300.0  # training seconds between evaluations of a run without a budget on a GPU


def clock_spaced(cfg: TrainConfig, by_time: bool) -> bool:
    """Whether :func:`eval_due` decides by the clock (not by steps alone)."""
    return cfg.eval_every is None and (cfg.time_budget is not None or (by_time and cfg.max_steps is None))


def eval_due(cfg: TrainConfig, state: TrainState, session: Session, by_time: bool = False) -> bool:
    """Whether to evaluate after this step: every --eval-every steps; else about EVALS_PER_RUN
    times a run, spaced by time for a --time-budget and by steps for --max-steps; else every
    EVAL_EVERY steps, or (``by_time``: a fast device, where 500 steps can take seconds) every
    EVAL_SECONDS of training. Without --eval-every, the training between two evaluations is
    never shorter than the last evaluations took (their mean), so a run never spends more time
    evaluating than training."""
    since = state.step - session.last_eval_step
    if cfg.eval_every is not None:
        return since >= cfg.eval_every
    trained = state.train_seconds - session.last_eval_seconds
    if since < MIN_EVAL_STEPS or (session.evals and trained < session.eval_seconds / session.evals):
        return False
    if cfg.time_budget is not None:
        return trained >= cfg.time_budget / EVALS_PER_RUN
    if cfg.max_steps is not None:
        return since >= cfg.max_steps / EVALS_PER_RUN
    return trained >= EVAL_SECONDS if by_time else since >= EVAL_EVERY


def fixed_stop(cfg: TrainConfig, state: TrainState, epoch: int) -> str | None:
    """The stop conditions every process agrees on without talking (--max-steps, --epochs)."""
    if cfg.max_steps is not None and state.step >= cfg.max_steps:
        return f"reached --max-steps {cfg.max_steps}"
    if cfg.epochs is not None and epoch >= cfg.epochs:
        return f"finished {cfg.epochs} epoch(s)"
    return None


def stop_reason(cfg: TrainConfig, state: TrainState, epoch: int) -> str | None:
    """Why training stops now (``epoch``: the epoch about to be trained), or None. The time
    budget counts the run's training time, every session's together (a resume continues it)."""
    fixed = fixed_stop(cfg, state, epoch)
    if fixed:
        return fixed
    if cfg.time_budget is not None and (state.train_seconds >= cfg.time_budget or
                                        (state.horizon is not None and state.step >= state.horizon)):
        return f"time budget of {cfg.time_budget:.0f} s used"
    if cfg.patience and state.bad_evals >= cfg.patience:
        return f"no improvement in {cfg.patience} evaluations (--patience)"
    return None


def budget_horizon(cfg: TrainConfig, state: TrainState, session: Session, done: int) -> int:
    """A --time-budget run: the step at which the budget will be used, at this session's
    training speed so far (``done`` steps), less the time the evaluations still due will take at
    their measured cost. The schedule decays to zero there."""
    left = cfg.time_budget - state.train_seconds
    per_step = max(session.elapsed() - session.eval_seconds, 1e-9) / max(done, 1)  # training only
    each = session.eval_seconds / session.evals if session.evals else 0.0
    evals_left = int(left / (cfg.time_budget / EVALS_PER_RUN)) if cfg.eval_every is None else 0
    return state.step + max(1, int((left - evals_left * each) / per_step))


def warmup_cap(cfg: TrainConfig, step_seconds: float, probe_steps: int) -> tuple[int, float]:
    """(warmup steps, steps the budget allows): a --time-budget run without --warmup warms up
    for warmup_share of the steps the budget allows at ``step_seconds`` a step, never for fewer
    than twice the ``probe_steps`` already taken (the schedule stays continuous)."""
    allowed = cfg.time_budget / max(step_seconds, 1e-9)
    return max(2 * probe_steps, int(allowed * cfg.warmup_share)), allowed
