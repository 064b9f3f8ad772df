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
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Protocol

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from attn_cli import rundir as ckpt
from attn_cli.config import ModelConfig, TrainConfig
from attn_cli.data.batching import Batch, DataPosition
from attn_cli.data.prefetch import PREFETCH_DEPTH, Prefetch, mark_last
from attn_cli.data.tokenizer import Tokenizers
from attn_cli.device import autocast, default_max_tokens, pick_precision
from attn_cli.errors import AttnError, RunFailure
from attn_cli.eval.metrics import PRIMARY_METRIC
from attn_cli.train import distributed as dd
from attn_cli.train.feed import BatchFeed
from attn_cli.train.optim import lr_factor, make_optimizer, step_seed
from attn_cli.train import progress
from attn_cli.train.progress import Session, Window, stop_reason
from attn_cli.train.state import Resumable, TrainState, read_last, saved_step, write_last
from attn_cli.train.stepping import READ_EVERY, StepTotals, apply_update, host_scalar, rewind, update_ema
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
        if cfg.max_tokens is None:
            cfg.max_tokens = default_max_tokens(device, dist.world_size)
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
        self.ema = AveragedModel(self.raw_model) if cfg.ema > 0 else None
        self.ema_fresh = True  # the average has not been taken yet (its first update copies)
        self.params = [p for p in self.raw_model.parameters() if p.requires_grad]
        self.model = self.raw_model
        if dist.enabled:  # the position table is a constant buffer: nothing to broadcast
            self.model = nn.parallel.DistributedDataParallel(
                self.raw_model, device_ids=[device.index] if device.type == "cuda" else None,
                broadcast_buffers=False, gradient_as_bucket_view=True)
        if cfg.compile:
            self.model = torch.compile(self.model, dynamic=True)
        self.totals = StepTotals(device)  # the steps' loss, skips and tokens, read every READ_EVERY
        self.window = Window()  # the statistics since the last train row (run() sets its session's)
        self.stop_requested = False
        self.saved_at = time.perf_counter()  # when last/ was last written (--save-every)

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
        self.ema_fresh = self.ema is None or int(self.ema.n_averaged) == 0
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

    def train_step(self, micro: list[tuple[Batch, float]]) -> None:
        """One optimizer step over weighted ``micro`` batches. Nothing is read back from the
        device: the step's mean loss, whether it was skipped (non-finite gradients) and its count
        of what the unit's batches count (target tokens, examples or pieces read) go into
        ``self.totals``, which :meth:`read_totals` reads."""
        torch.manual_seed(step_seed(self.cfg.seed, self.dist.rank, self.state.step + self.state.skipped))
        # every micro-batch is prepared (masked LM: masked) before any forward pass
        prepared = [(*self.unit.prepare(batch.to(self.device)), weight) for batch, weight in micro]
        seen = sum(w * self.unit.seen(b) for b, w in micro)
        count = sum(w * n for _, n, w in prepared)  # known on the host (masked LM: read from the masks)
        if self.dist.enabled:  # the whole step's count: the loss is divided by it on every rank
            count = dd.all_reduce_sum(host_scalar(count, self.device), self.dist).clamp(min=1.0)
        else:
            count = max(count, 1.0)
        total = self._backward(prepared, self.dist.world_size / count)
        bad = apply_update(self.optimizer, self.scaler, self.params, total, self.cfg.clip)
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            update_ema(self.ema, self.raw_model, self.cfg.ema, self.ema_fresh)
            self.ema_fresh = False
        self.totals.add(total / count, bad, seen)

    def read_totals(self, log) -> None:
        """Read what the steps since the last read add up to (one host read): their loss and
        tokens go into the statistics window and the state; steps found non-finite stop the run
        (their updates were skipped on the device, so last/ and the weights are intact), or with
        --skip-nonfinite are taken back from the step count and the schedule and counted."""
        if not self.totals.steps:
            return
        loss, bad, seen, steps = self.totals.read(self.dist)
        st, window = self.state, self.window
        st.tokens += seen
        window.tokens += seen
        window.loss += loss
        window.n += steps - bad
        if not bad:
            return
        if not self.cfg.skip_nonfinite:
            where = f"at step {st.step}" if steps == 1 else f"in {bad} of steps {st.step - steps + 1}-{st.step}"
            raise RunFailure(
                f"the loss became non-finite {where}; training stopped and last/ holds step "
                f"{saved_step(self.run_dir)}",
                "lower --lr, raise --warmup, or pass --skip-nonfinite")
        st.step -= bad
        rewind(self.scheduler, bad)
        for _ in range(bad):
            st.skipped += 1
            log({"event": "skipped_nonfinite", "step": st.step + 1, "skipped": st.skipped})

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
        self.read_totals(log)  # the state saved is exact
        if self.dist.is_main:
            metrics = self.evaluate()
            value = metrics[self.unit.primary]
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
        self.window = session.window
        self.raw_model.train()
        reason = stop_reason(self.cfg, st, st.data.epoch)  # e.g. resumed at --max-steps
        previous = signal.signal(signal.SIGINT, self._on_sigint) if _main_thread() else None
        try:
            while reason is None:
                reason = self._run_epoch(session, log)
        except Interrupted:
            self.read_totals(log)
            self.save_last()
            raise
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
        self.read_totals(log)
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
                evaluated = self._after_step(session, log, epoch + fraction)
                reason = self._stop(log, epoch, shared=evaluated or st.step % READ_EVERY == 0)
                if reason:
                    return reason
        finally:
            ahead.close()
        st.data = DataPosition(epoch + 1, 0)
        return self._stop(log, epoch + 1, shared=True)

    def _stop(self, log, epoch: int, shared: bool) -> str | None:
        """Why training stops after this step, or None. --max-steps and --epochs are the same
        on every process; the clock, --patience and Ctrl-C are rank 0's decision, shared only
        when ``shared`` (every READ_EVERY steps, after an evaluation, at an epoch's end) under
        DDP, so a step waits on no collective otherwise."""
        st = self.state
        if self.totals.steps and self.cfg.max_steps is not None and st.step >= self.cfg.max_steps:
            self.read_totals(log)  # a skipped step found now does not count towards --max-steps
        reason = progress.fixed_stop(self.cfg, st, epoch)
        if reason or (self.dist.enabled and not shared):
            return reason
        return self._shared_stop(stop_reason(self.cfg, st, epoch))

    def _optimizer_step(self, micro: list[tuple[Batch, float]], session: Session, log) -> None:
        """One step and its host-side counts (the device-side ones: :meth:`read_totals`)."""
        self.train_step(micro)
        self.state.step += 1  # taken back if read_totals finds the step skipped
        session.window.real += sum(b.n_real for b, _ in micro)
        session.window.slots += sum(b.n_slots for b, _ in micro)

    def _after_step(self, session: Session, log, epoch: float) -> bool:
        """After each step: the clock, the totals (every READ_EVERY or --log-every steps), the
        warmup cap, the report, then an evaluation when due (or a --save-every save). Returns
        whether it evaluated."""
        st, cfg = self.state, self.cfg
        st.train_seconds = session.seconds_before + time.perf_counter() - session.started
        if st.step % READ_EVERY == 0 or st.step % cfg.log_every == 0:
            self.read_totals(log)
        done = st.step - session.start_step
        if cfg.warmup_share and done == WARMUP_PROBE:
            self._cap_warmup(session.elapsed(), log)
        if cfg.time_budget is not None and done >= WARMUP_PROBE and done % WARMUP_PROBE == 0:
            self._estimate_horizon(session, done)
        self._report_step(session, log, epoch)
        if self._eval_now(session):
            started = time.perf_counter()
            self._evaluate_and_save(log)
            session.eval_seconds += time.perf_counter() - started
            session.evals += 1
            session.last_eval_step = st.step
            session.last_eval_seconds = session.seconds_before + session.elapsed()  # (after it)
            return True
        late = cfg.save_every and time.perf_counter() - self.saved_at >= cfg.save_every
        if late and (not self.dist.enabled or st.step % READ_EVERY == 0):  # (DDP: totals just read)
            self.read_totals(log)
            self.save_last()  # bounded loss between evaluations (--save-every)
        return False

    def _eval_now(self, session: Session) -> bool:
        """Whether to evaluate after this step (progress.eval_due; by time on a GPU). Under DDP a
        decision by the clock is rank 0's, shared every READ_EVERY steps."""
        by_time = self.device.type == "cuda"
        due = progress.eval_due(self.cfg, self.state, session, by_time)
        if not self.dist.enabled or not progress.clock_spaced(self.cfg, by_time):
            return due
        if self.state.step % READ_EVERY:
            return False
        return bool(dd.broadcast_int(int(due), self.dist, self.device))

    def _estimate_horizon(self, session: Session, done: int) -> None:
        """A --time-budget run: the schedule's end (progress.horizon), rank 0's for every rank;
        re-estimated every 10 steps and kept in last/ (a resume continues it)."""
        horizon = progress.budget_horizon(self.cfg, self.state, session, done)
        self.state.horizon = dd.broadcast_int(horizon, self.dist, self.device)

    def _cap_warmup(self, seconds: float, log) -> None:
        """A --time-budget run without --warmup: the warmup capped after the first WARMUP_PROBE
        steps took ``seconds`` (progress.warmup_cap; rank 0's for every rank). The capped value
        goes into train_config.json, so a resume keeps it."""
        cfg = self.cfg
        cap, allowed = progress.warmup_cap(cfg, seconds / WARMUP_PROBE, WARMUP_PROBE)
        cap = dd.broadcast_int(cap, self.dist, self.device)
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
