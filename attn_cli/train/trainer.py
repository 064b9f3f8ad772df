"""The training loop: token-budget batches, AMP, accumulation, clipping, schedule, evaluation,
best-weights selection, early stopping, exact resume, DDP. What differs by task (collating,
masking, the loss, what a batch counts, validation) is the :class:`~attn_cli.train.units.TaskUnit`'s.
The library never prints: it calls a :class:`Reporter`.

Step order (nanoGPT): autocast forward, scaled backward (``no_sync`` on accumulation
micro-steps), unscale, clip, step, scheduler, ``zero_grad(set_to_none=True)``.
Losses are summed over what the unit counts (target tokens, examples, masked pieces) and divided
by the global count of the whole optimizer step, so N processes with split batches compute the
same update as one. The batches come from ``attn_cli.train.feed``, last/ is written by
``attn_cli.train.state``, the stop conditions and progress statistics are
``attn_cli.train.progress``'s.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Protocol

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from attn_cli import rundir as ckpt
from attn_cli.config import ModelConfig, TrainConfig
from attn_cli.data.batching import Batch, DataPosition
from attn_cli.data.prefetch import PREFETCH_DEPTH, Prefetch, mark_last
from attn_cli.data.tokenizer import Tokenizers
from attn_cli.device import autocast, pick_precision
from attn_cli.errors import AttnError, RunFailure
from attn_cli.eval.metrics import PRIMARY_METRIC
from attn_cli.train import distributed as dd
from attn_cli.train.feed import BatchFeed
from attn_cli.train.optim import lr_factor, make_optimizer, step_seed
from attn_cli.train.progress import EVALS_PER_RUN, Session, eval_due, stop_reason
from attn_cli.train.state import Resumable, TrainState, read_last, saved_step, write_last
from attn_cli.train.units import TaskContext, TaskUnit, finetune_unit

PRIMARY = PRIMARY_METRIC  # the validation metric (higher is better) that picks the best weights
WARMUP_PROBE = 10  # steps timed before a --time-budget run's warmup is capped (warmup_share)


class Reporter(Protocol):
    def step(self, stats: dict) -> None: ...
    def evaluated(self, metrics: dict, is_best: bool) -> None: ...
    def note(self, message: str) -> None: ...


class Interrupted(AttnError):
    """Ctrl-C: last/ was saved; exit code 130."""

    exit_code = 130


class Trainer:
    """One training run over encoded examples with a task unit. Call :meth:`run`."""

    def __init__(self, cfg: TrainConfig, model_cfg: ModelConfig, model: nn.Module, toks: Tokenizers,
                 train, valid: list[tuple], valid_refs: list, run_dir: Path,
                 reporter: Reporter, dist: dd.Dist, device: torch.device, unit: TaskUnit | None = None):
        """``train``: a TokenStore (the cache's files), a StreamSource (--stream) or a list of
        examples; ``valid``: a list. ``unit``: the task's (None: `attn train`'s for the model's
        task, :func:`~attn_cli.train.units.finetune_unit`)."""
        self.cfg, self.model_cfg, self.toks = cfg, model_cfg, toks
        self.valid_ex, self.valid_refs = valid, valid_refs
        self.run_dir, self.reporter, self.dist, self.device = run_dir, reporter, dist, device
        self.unit = unit or finetune_unit(TaskContext(cfg, model_cfg, toks, device, dist.rank))
        self.feed = BatchFeed(train, model_cfg.is_seq2seq, cfg, self.unit, dist, device)
        self.amp_dtype = pick_precision(cfg.precision, device)
        self.raw_model = model.to(device)
        self.optimizer = make_optimizer(self.raw_model, cfg, device)
        self.state = TrainState()  # (the schedule reads its horizon)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_factor(step, cfg, self.state.horizon))
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp_dtype == torch.float16)
        # --ema: a moving average of the weights (every rank keeps an identical copy); it is
        # what evaluation scores and what model.safetensors holds
        self.ema = (AveragedModel(self.raw_model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema))
                    if cfg.ema > 0 else None)
        self.model = self.raw_model
        if dist.enabled:
            self.model = nn.parallel.DistributedDataParallel(
                self.raw_model, device_ids=[device.index] if device.type == "cuda" else None)
        if cfg.compile:
            self.model = torch.compile(self.model, dynamic=True)
        self.stop_requested = False
        self.saved_at = time.perf_counter()  # when last/ was last written (--save-every)

    @property
    def primary(self) -> str:
        """The validation metric that picks the best weights (the unit's)."""
        return self.unit.primary

    @property
    def eval_model(self) -> nn.Module:
        """The weights that are evaluated and kept as the best: the --ema average, or the model."""
        return self.ema.module if self.ema is not None else self.raw_model

    # ------------------------------------------------------------------ state

    def _resumable(self) -> Resumable:
        return Resumable(self.raw_model, self.ema, self.optimizer, self.scheduler, self.scaler, self.device)

    def save_last(self) -> None:
        """Write last/ (weights, optimizer, scheduler, RNG, data position) atomically; rank 0 only."""
        if not self.dist.is_main:
            return
        staged = ckpt.stage_dir(self.run_dir / ckpt.LAST_DIR)
        try:
            write_last(staged, self._resumable(), self.state)
        except BaseException:
            shutil.rmtree(staged, ignore_errors=True)
            raise
        ckpt.replace_dir(staged, self.run_dir / ckpt.LAST_DIR)
        self.saved_at = time.perf_counter()

    def load_last(self) -> bool:
        """Restore last/; False when the run never saved one (it then starts from step 0)."""
        last = ckpt.find_dir(self.run_dir / ckpt.LAST_DIR)
        if last is None:
            return False
        self.state = read_last(last, self._resumable())
        return True

    # ------------------------------------------------------------------ one optimizer step

    def _loss_sum(self, batch: Batch, smoothing: float, model: nn.Module | None = None) -> torch.Tensor:
        """The unit's summed loss of a device batch under autocast, on the training model (or
        ``model``)."""
        with autocast(self.device, self.amp_dtype):
            return self.unit.loss_sum(model or self.model, batch, smoothing)

    def _backward(self, prepared: list[tuple[Batch, float, float]], scale: float) -> torch.Tensor:
        """Forward and backward every prepared micro-batch, gradients accumulated (all-reduced
        on the last one under DDP); returns this process's weighted loss sum."""
        total = torch.zeros((), device=self.device)
        for i, (batch, _, weight) in enumerate(prepared):
            sync = i == len(prepared) - 1 or not self.dist.enabled
            ctx = contextlib.nullcontext() if sync else self.model.no_sync()
            with ctx:
                loss = self._loss_sum(batch, self.cfg.smoothing) * weight
                self.scaler.scale(loss * scale).backward()
            total += loss.detach()
        return total

    def train_step(self, micro: list[tuple[Batch, float]]) -> tuple[float, int]:
        """One optimizer step over weighted ``micro`` batches; returns (mean loss, global count of
        what the unit's batches count: target tokens, examples or pieces read)."""
        torch.manual_seed(step_seed(self.cfg.seed, self.dist.rank, self.state.step + self.state.skipped))
        # every micro-batch is prepared (masked LM: masked) before any forward pass
        prepared = [(*self.unit.prepare(batch.to(self.device)), weight) for batch, weight in micro]
        seen = sum(w * self.unit.seen(b) for b, w in micro)
        counts = torch.tensor([sum(w * n for _, n, w in prepared), float(seen)], device=self.device)
        global_count, global_seen = dd.all_reduce_sum(counts, self.dist).tolist()
        scale = self.dist.world_size / max(global_count, 1.0)
        total = self._backward(prepared, scale)
        loss_value = dd.all_reduce_sum(total, self.dist).item() / max(global_count, 1.0)
        if not math.isfinite(loss_value):
            self.optimizer.zero_grad(set_to_none=True)
            return loss_value, int(global_seen)
        self.scaler.unscale_(self.optimizer)
        if self.cfg.clip > 0:
            nn.utils.clip_grad_norm_(self.raw_model.parameters(), self.cfg.clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update_parameters(self.raw_model)
        return loss_value, int(global_seen)

    # ------------------------------------------------------------------ evaluation

    @torch.inference_mode()
    def evaluate(self) -> dict:
        """The unit's validation metrics on the unwrapped (or averaged) model, in eval mode."""
        model = self.eval_model
        model.eval()
        metrics = self.unit.validate(model, self.valid_ex, self.valid_refs)
        model.train()
        return metrics

    def _evaluate_and_save(self, log) -> None:
        if self.dist.is_main:
            metrics = self.evaluate()
            value = metrics[self.primary]
            is_best = self.state.best is None or value > self.state.best
            if is_best:
                self.state.best, self.state.best_step, self.state.bad_evals = value, self.state.step, 0
                ckpt.save_weights(self.eval_model, self.run_dir / ckpt.WEIGHTS_FILE)
            else:
                self.state.bad_evals += 1
            log({"event": "eval", "step": self.state.step, **metrics, "best": self.state.best})
            self.reporter.evaluated({"step": self.state.step, **metrics}, is_best)
            self.save_last()
        dd.barrier(self.dist)

    # ------------------------------------------------------------------ the loop

    def run(self, log) -> str:
        """Train until a stop condition; returns why it stopped. ``log(dict)`` appends to metrics."""
        st = self.state
        session = Session(started=time.perf_counter(), seconds_before=st.train_seconds, last_eval_step=st.step,
                          start_step=st.step, last_eval_seconds=st.train_seconds)
        self.saved_at = session.started
        self.raw_model.train()
        reason = stop_reason(self.cfg, st, st.data.epoch)  # e.g. resumed at --max-steps
        previous = signal.signal(signal.SIGINT, self._on_sigint) if _main_thread() else None
        try:
            while reason is None:
                reason = self._run_epoch(session, log)
        except Interrupted:
            self.save_last()
            raise
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
        self._report_step(session, log, session.epoch, final=True)  # the last steps' row (their lr)
        if st.step != session.last_eval_step or st.best is None:
            self._evaluate_and_save(log)
        else:
            self.save_last()
        return reason

    def _run_epoch(self, session: Session, log) -> str | None:
        """Train on the rest of the current epoch (batches collated ahead in a thread, ``accum``
        of them per optimizer step); returns why training stops, or None at the epoch's end."""
        st, window = self.state, session.window
        epoch = st.data.epoch
        micro: list[tuple[Batch, float]] = []
        ahead = Prefetch(mark_last(self.feed.epoch(st.data)), PREFETCH_DEPTH)
        try:
            for (after, fraction, local), last in ahead:
                window.wait += ahead.waited  # time the step waited on data
                ahead.waited = 0.0
                micro.append(local)
                if len(micro) < self.cfg.accum and not last:
                    continue
                self._optimizer_step(micro, session, log)
                micro = []
                st.data = after
                self._after_step(session, log, epoch + fraction)
                reason = self._shared_stop(stop_reason(self.cfg, st, epoch))
                if reason:
                    return reason
        finally:
            ahead.close()
        st.data = DataPosition(epoch + 1, 0)
        return self._shared_stop(stop_reason(self.cfg, st, epoch + 1))

    def _optimizer_step(self, micro: list[tuple[Batch, float]], session: Session, log) -> None:
        """One step and its counts; a non-finite loss stops the run, or is skipped and counted
        with --skip-nonfinite."""
        st, window = self.state, session.window
        loss, count = self.train_step(micro)
        window.real += sum(b.n_real for b, _ in micro)
        window.slots += sum(b.n_slots for b, _ in micro)
        if not math.isfinite(loss):
            if not self.cfg.skip_nonfinite:
                raise RunFailure(
                    f"the loss became {loss} at step {st.step + 1}; training stopped and "
                    f"last/ holds step {saved_step(self.run_dir)}",
                    "lower --lr, raise --warmup, or pass --skip-nonfinite")
            st.skipped += 1
            log({"event": "skipped_nonfinite", "step": st.step + 1, "skipped": st.skipped})
            return
        st.step += 1
        st.tokens += count
        window.tokens += count
        window.loss += loss
        window.n += 1

    def _after_step(self, session: Session, log, epoch: float) -> None:
        """After each step: the clock, the warmup cap, the report, then an evaluation when due
        (or a --save-every save)."""
        st, cfg = self.state, self.cfg
        st.train_seconds = session.seconds_before + time.perf_counter() - session.started
        done = st.step - session.start_step
        if cfg.warmup_share and done == WARMUP_PROBE:
            self._cap_warmup(session.elapsed(), log)
        if cfg.time_budget is not None and done >= WARMUP_PROBE and done % WARMUP_PROBE == 0:
            self._estimate_horizon(session, done)
        self._report_step(session, log, epoch)
        if eval_due(cfg, st, session):
            started = time.perf_counter()
            self._evaluate_and_save(log)
            session.eval_seconds += time.perf_counter() - started
            session.evals += 1
            session.last_eval_step, session.last_eval_seconds = st.step, st.train_seconds
        elif cfg.save_every and time.perf_counter() - self.saved_at >= cfg.save_every:
            self.save_last()  # bounded loss between evaluations (--save-every)

    def _estimate_horizon(self, session: Session, done: int) -> None:
        """A --time-budget run: the step at which the budget will be used, at this session's
        training speed so far, less the time the evaluations still due will take at their
        measured cost (rank 0's estimate for every rank). The schedule decays to zero there;
        re-estimated every 10 steps and kept in last/ (a resume continues it)."""
        left = self.cfg.time_budget - self.state.train_seconds
        per_step = max(session.elapsed() - session.eval_seconds, 1e-9) / max(done, 1)  # training only
        each = session.eval_seconds / session.evals if session.evals else 0.0
        evals_left = int(left / (self.cfg.time_budget / EVALS_PER_RUN)) if self.cfg.eval_every is None else 0
        horizon = self.state.step + max(1, int((left - evals_left * each) / per_step))
        self.state.horizon = dd.broadcast_int(horizon, self.dist, self.device)

    def _cap_warmup(self, seconds: float, log) -> None:
        """A --time-budget run without --warmup: cap warmup at warmup_share of the steps the
        budget allows at the speed of the first WARMUP_PROBE steps (rank 0's estimate for every
        rank), never below twice those steps (the schedule stays continuous). The capped value
        goes into train_config.json, so a resume keeps it."""
        cfg = self.cfg
        allowed = cfg.time_budget / max(seconds / WARMUP_PROBE, 1e-9)
        cap = dd.broadcast_int(max(2 * WARMUP_PROBE, int(allowed * cfg.warmup_share)), self.dist, self.device)
        cfg.warmup_share = 0.0
        if cap >= cfg.warmup:
            return
        cfg.warmup = cap  # (the scheduler reads this config at every step)
        self.reporter.note(f"warmup: {cap} steps (a tenth of the about {allowed:,.0f} steps --time-budget "
                           "allows at this speed; --warmup N sets it)")
        log({"event": "warmup", "step": self.state.step, "warmup": cap})
        if self.dist.is_main:
            ckpt.atomic_write_text(self.run_dir / ckpt.TRAIN_CONFIG_FILE, json.dumps(cfg.to_dict(), indent=2))

    def _shared_stop(self, reason: str | None) -> str | None:
        """Rank 0's stop decision for every rank; raises Interrupted after Ctrl-C."""
        code = 2 if self.stop_requested else (1 if reason else 0)
        code = dd.broadcast_int(code, self.dist, self.device)
        if code == 2:
            raise Interrupted(f"interrupted at step {self.state.step}; last/ saved")
        return (reason or "stopped by rank 0") if code == 1 else None

    def _on_sigint(self, signum, frame) -> None:
        if self.stop_requested:  # second Ctrl-C: stop at once, last/ keeps the previous save
            raise KeyboardInterrupt
        self.stop_requested = True

    def _report_step(self, session: Session, log, epoch: float, final: bool = False) -> None:
        """The progress report of a step; a metrics.jsonl row every --log-every steps, and
        (``final``) one for the steps since the last row when training ends."""
        window = session.window
        now = time.perf_counter()
        session.epoch = epoch
        stats = window.stats(self.state, self.scheduler.get_last_lr()[0], epoch, now)
        if not final:
            self.reporter.step(stats)
        if (final or self.state.step % self.cfg.log_every == 0) and window.n:
            log({"event": "train", **stats})
            window.reset(now)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()
