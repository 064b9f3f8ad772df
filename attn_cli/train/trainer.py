"""The training loop: token-budget batches, AMP, accumulation, clipping, schedule, evaluation,
best-weights selection, early stopping, exact resume, DDP. The library never prints: it calls
a :class:`Reporter`.

Step order (nanoGPT): autocast forward, scaled backward (``no_sync`` on accumulation
micro-steps), unscale, clip, step, scheduler, ``zero_grad(set_to_none=True)``.
Losses are summed over tokens (examples for sentiment) and divided by the global count of the
whole optimizer step, so N processes with split batches compute the same update as one.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from attn_cli import rundir as ckpt
from attn_cli.config import ModelConfig, TrainConfig, check_field_types, task_decode_config
from attn_cli.data.batching import (
    Batch,
    DataPosition,
    collate_classify,
    collate_seq2seq,
    example_lengths,
    iterate_epoch,
    make_batches,
    plan_batches,
    split_batch_indices,
)
from attn_cli.data.prefetch import PREFETCH_DEPTH, Prefetch, mark_last
from attn_cli.data.store import InMemoryExamples
from attn_cli.data.stream import StreamSource
from attn_cli.data.tokenizer import BOS_ID, EOS_ID, PAD_ID, Tokenizers
from attn_cli.device import pick_precision
from attn_cli.errors import AttnError, RunFailure
from attn_cli.eval.metrics import PRIMARY_METRIC, bleu_chrf, classification, rouge
from attn_cli.infer.predict import classify, generate
from attn_cli.train import distributed as dd
from attn_cli.train.optim import lr_factor, make_optimizer, step_seed

PRIMARY = PRIMARY_METRIC  # the validation metric (higher is better) that picks the best weights
EMA_FILE = "ema.safetensors"  # in last/, with --ema
WARMUP_PROBE = 10  # steps timed before a --time-budget run's warmup is capped (warmup_share)


class Reporter(Protocol):
    def step(self, stats: dict) -> None: ...
    def evaluated(self, metrics: dict, is_best: bool) -> None: ...
    def note(self, message: str) -> None: ...


class Interrupted(AttnError):
    """Ctrl-C: last/ was saved; exit code 130."""

    exit_code = 130


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

    def to_dict(self) -> dict:
        return {**self.__dict__, "data": self.data.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> TrainState:
        return cls(**{**d, "data": DataPosition.from_dict(d["data"])})


class Trainer:
    """One training run over encoded examples. Call :meth:`run`."""

    def __init__(self, cfg: TrainConfig, model_cfg: ModelConfig, model: nn.Module, toks: Tokenizers,
                 train, valid: list[tuple], valid_refs: list, run_dir: Path,
                 reporter: Reporter, dist: dd.Dist, device: torch.device):
        """``train``: a TokenStore (the cache's files) or a list of examples; ``valid``: a list."""
        self.cfg, self.model_cfg, self.toks = cfg, model_cfg, toks
        if isinstance(train, list):
            train = InMemoryExamples(train, model_cfg.is_seq2seq)
        self.stream = train if isinstance(train, StreamSource) else None  # --stream
        self.train_ex, self.valid_ex, self.valid_refs = train, valid, valid_refs
        self.run_dir, self.reporter, self.dist, self.device = run_dir, reporter, dist, device
        self.seq2seq = model_cfg.is_seq2seq
        self.primary = PRIMARY[model_cfg.task]  # the metric that picks the best weights
        self.amp_dtype = pick_precision(cfg.precision, device)
        self.raw_model = model.to(device)
        self.optimizer = make_optimizer(self.raw_model, cfg, device)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, functools.partial(lr_factor, cfg=cfg))
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
        self.collate = (functools.partial(collate_seq2seq, pad_id=PAD_ID, bos_id=BOS_ID, eos_id=EOS_ID)
                        if self.seq2seq else functools.partial(collate_classify, pad_id=PAD_ID))
        self.lengths = None if self.stream else train.lengths  # (N,) int32: all that planning reads
        self.state = TrainState()
        self.stop_requested = False
        self.saved_at = time.perf_counter()  # when last/ was last written (--save-every)

    @property
    def eval_model(self) -> nn.Module:
        """The weights that are evaluated and kept as the best: the --ema average, or the model."""
        return self.ema.module if self.ema is not None else self.raw_model

    # ------------------------------------------------------------------ state

    def save_last(self) -> None:
        """Write last/ (weights, optimizer, scheduler, RNG, data position) atomically; rank 0 only."""
        if not self.dist.is_main:
            return
        staged = ckpt.stage_dir(self.run_dir / ckpt.LAST_DIR)
        try:
            self._write_last(staged)
        except BaseException:
            shutil.rmtree(staged, ignore_errors=True)
            raise
        ckpt.replace_dir(staged, self.run_dir / ckpt.LAST_DIR)
        self.saved_at = time.perf_counter()

    def _write_last(self, staged: Path) -> None:
        ckpt.save_weights(self.raw_model, staged / ckpt.WEIGHTS_FILE)
        if self.ema is not None:
            ckpt.save_weights(self.ema.module, staged / EMA_FILE)
        # (training draws are reseeded every step by step_seed; the generators are kept so that
        # any other draw between steps resumes exactly too)
        rng = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        ckpt.save_torch_state({"optimizer": self.optimizer.state_dict(),
                               "scheduler": self.scheduler.state_dict(),
                               "scaler": self.scaler.state_dict(), "rng": rng,
                               "ema_updates": int(self.ema.n_averaged) if self.ema is not None else 0},
                              staged / "optimizer.pt")
        ckpt.atomic_write_text(staged / "state.json", json.dumps(self.state.to_dict(), indent=2))

    def load_last(self) -> bool:
        """Restore last/; False when the run never saved one (it then starts from step 0)."""
        last = ckpt.find_dir(self.run_dir / ckpt.LAST_DIR)
        if last is None:
            return False
        ckpt.load_weights(self.raw_model, last / ckpt.WEIGHTS_FILE)
        extra = ckpt.load_torch_state(last / "optimizer.pt")
        self.optimizer.load_state_dict(extra["optimizer"])
        self.scheduler.load_state_dict(extra["scheduler"])
        self.scaler.load_state_dict(extra["scaler"])
        torch.set_rng_state(extra["rng"]["torch"])
        if "cuda" in extra["rng"] and self.device.type == "cuda":
            torch.cuda.set_rng_state(extra["rng"]["cuda"], self.device)
        if self.ema is not None and (last / EMA_FILE).is_file():
            ckpt.load_weights(self.ema.module, last / EMA_FILE)
            self.ema.n_averaged.fill_(int(extra.get("ema_updates", 1)))
        # (--ema newly given on resume: the average starts from the resumed weights)
        try:
            self.state = TrainState.from_dict(json.loads((last / "state.json").read_text()))
            check_field_types(self.state)
        except (ValueError, TypeError, KeyError, AttributeError, OSError) as e:
            raise AttnError(f"{last / 'state.json'} is damaged ({e})",
                            "restore it, or start a new run without --resume") from None
        return True

    # ------------------------------------------------------------------ one optimizer step

    def _loss_sum(self, batch: Batch, smoothing: float, model: nn.Module | None = None) -> torch.Tensor:
        """Summed cross-entropy of a batch on the device: over target tokens (seq2seq) or
        examples (sentiment)."""
        model = model or self.model
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                            enabled=self.amp_dtype is not None):
            if self.seq2seq:  # the model computes it: no (B, T, V) logits in memory (losses.py)
                return model(batch.src, batch.tgt_in, target=batch.tgt_out, smoothing=smoothing)
            logits = model(batch.src)  # (B, C)
        return F.cross_entropy(logits.float(), batch.labels, label_smoothing=smoothing, reduction="sum")

    def _local_batch(self, indices, examples: list[tuple] | None = None, draw: int = 0) -> tuple[Batch, float]:
        """This process's part of a global batch (example ``indices`` into the training data,
        or the ``examples`` themselves), and its weight. A rank whose part is empty runs one
        example with weight 0, so every rank still joins DDP's gradient all-reduce. ``draw``
        numbers the batch in the run (for noise drawn while collating: pretraining)."""
        weight = 1.0
        if self.dist.enabled:
            part = split_batch_indices(indices, self.dist.rank, self.dist.world_size)
            indices, weight = (part, 1.0) if part else (indices[:1], 0.0)
        rows = [examples[i] for i in indices] if examples is not None else self.train_ex.gather(indices)
        return self._collate(rows, draw), weight

    def _seen(self, batch: Batch) -> int:
        """What a batch adds to the run's count: target tokens (seq2seq) or examples."""
        return batch.n_tokens if self.seq2seq else batch.n_examples

    def _collate(self, rows: list, draw: int) -> Batch:
        """Training rows -> a Batch (``draw``: see _local_batch; unused here)."""
        return self.collate(rows)

    def _prepare(self, batch: Batch) -> tuple[Batch, float]:
        """The batch on the device and its loss count (target tokens or examples)."""
        batch = batch.to(self.device)
        return batch, float(batch.n_tokens if self.seq2seq else batch.n_examples)

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
        target tokens (seq2seq) or examples (sentiment))."""
        torch.manual_seed(step_seed(self.cfg.seed, self.dist.rank, self.state.step + self.state.skipped))
        prepared = [(*self._prepare(batch), weight) for batch, weight in micro]
        seen = sum(w * self._seen(b) for b, w in micro)
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
        """Validation loss (no smoothing) and the task metric, on the unwrapped (or averaged) model."""
        model = self.eval_model
        model.eval()
        plan = make_batches(example_lengths(self.valid_ex, self.seq2seq), self.cfg.max_tokens,
                            seed=0, epoch=0, shuffle=False)
        loss, count = 0.0, 0
        for _, batch in iterate_epoch(self.valid_ex, plan, self.collate):
            batch = batch.to(self.device)
            loss += self._loss_sum(batch, 0.0, model).item()
            count += batch.n_tokens if self.seq2seq else batch.n_examples
        metrics = {"valid_loss": loss / max(count, 1)}
        if self.seq2seq:
            metrics["valid_ppl"] = math.exp(min(metrics["valid_loss"], 50))
            metrics.update(self._decode_metrics(model))
        else:
            probs = classify(model, self.device, [x for x, _ in self.valid_ex], self.cfg.max_tokens)
            preds = [max(range(len(p)), key=p.__getitem__) for p in probs]
            metrics.update(classification(preds, [y for _, y in self.valid_ex], self.model_cfg.num_labels))
            metrics.pop("confusion", None)
        model.train()
        return metrics

    def _decode_metrics(self, model: nn.Module) -> dict:
        n = min(self.cfg.eval_samples, len(self.valid_ex))
        srcs = [s for s, _ in self.valid_ex[:n]]
        # the task's decoding (length rules, n-gram blocking) with greedy search, for speed
        cfg = task_decode_config(self.model_cfg.task, beam=1)
        outs = generate(model, self.device, srcs, cfg, self.cfg.max_tokens, amp_dtype=self.amp_dtype)
        hyps = [self.toks.tgt.decode(ids) for ids, _ in outs]
        refs = self.valid_refs[:n]
        if self.model_cfg.task == "translate":
            return {k: v for k, v in bleu_chrf(hyps, refs).items() if k in ("bleu", "chrf")}
        return rouge(hyps, refs)

    # ------------------------------------------------------------------ the loop

    def _stop_reason(self, started: float, epoch: int) -> str | None:
        cfg, st = self.cfg, self.state
        if cfg.max_steps is not None and st.step >= cfg.max_steps:
            return f"reached --max-steps {cfg.max_steps}"
        if cfg.epochs is not None and epoch >= cfg.epochs:
            return f"finished {cfg.epochs} epoch(s)"
        if cfg.time_budget is not None and time.perf_counter() - started >= cfg.time_budget:
            return f"time budget of {cfg.time_budget:.0f} s used"
        if cfg.patience and st.bad_evals >= cfg.patience:
            return f"no improvement in {cfg.patience} evaluations (--patience)"
        return None

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

    def run(self, log) -> str:
        """Train until a stop condition; returns why it stopped. ``log(dict)`` appends to metrics."""
        cfg, st = self.cfg, self.state
        started, last_eval_step = time.perf_counter(), st.step
        self.saved_at = started
        session_start_seconds = st.train_seconds
        self.raw_model.train()
        window = {"tokens": 0, "t": time.perf_counter(), "loss": 0.0, "n": 0, "real": 0, "slots": 0,
                  "wait": 0.0}
        reason = self._stop_reason(started, st.data.epoch)  # e.g. resumed at --max-steps already
        previous = signal.signal(signal.SIGINT, self._on_sigint) if _main_thread() else None
        ahead = None
        try:
            while reason is None:
                epoch = st.data.epoch
                micro: list[tuple[Batch, float]] = []
                ahead = Prefetch(mark_last(self._collated(st.data)), PREFETCH_DEPTH)
                for (after, fraction, local), last in ahead:
                    window["wait"] += ahead.waited  # time the step waited on data
                    ahead.waited = 0.0
                    micro.append(local)
                    if len(micro) < cfg.accum and not last:
                        continue
                    loss, count = self.train_step(micro)
                    window["real"] += sum(b.n_real for b, _ in micro)
                    window["slots"] += sum(b.n_slots for b, _ in micro)
                    micro = []
                    if not math.isfinite(loss):
                        if not cfg.skip_nonfinite:
                            raise RunFailure(
                                f"the loss became {loss} at step {st.step + 1}; training stopped and "
                                f"last/ holds step {self._last_saved_step()}",
                                "lower --lr, raise --warmup, or pass --skip-nonfinite")
                        st.skipped += 1
                        log({"event": "skipped_nonfinite", "step": st.step + 1, "skipped": st.skipped})
                    else:
                        st.step += 1
                        st.tokens += count
                        window["tokens"] += count
                        window["loss"] += loss
                        window["n"] += 1
                    st.data = after
                    st.train_seconds = session_start_seconds + time.perf_counter() - started
                    if cfg.warmup_share and st.step == WARMUP_PROBE:
                        self._cap_warmup(time.perf_counter() - started, log)
                    self._report_step(window, log, epoch + fraction)
                    if st.step - last_eval_step >= cfg.eval_every:
                        self._evaluate_and_save(log)
                        last_eval_step = st.step
                    elif cfg.save_every and time.perf_counter() - self.saved_at >= cfg.save_every:
                        self.save_last()  # bounded loss between evaluations (--save-every)
                    reason = self._shared_stop(self._stop_reason(started, epoch))
                    if reason:
                        break
                ahead.close()
                if reason is None:
                    st.data = DataPosition(epoch + 1, 0)
                    reason = self._shared_stop(self._stop_reason(started, epoch + 1))
        except Interrupted:
            self.save_last()
            raise
        finally:
            if ahead is not None:
                ahead.close()
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
        if st.step != last_eval_step or st.best is None:
            self._evaluate_and_save(log)
        else:
            self.save_last()
        return reason

    def _collated(self, start: DataPosition):
        """(data position after it, fraction of the epoch done, (this process's collated batch,
        weight)) for the rest of ``start``'s epoch; pinned for an asynchronous copy on CUDA."""
        epoch = start.epoch
        if self.stream is not None:  # the epoch's length is unknown: its fraction reads 0
            items = ((DataPosition(epoch, position, consumed), 0.0, examples)
                     for consumed, position, examples in
                     self.stream.batches(epoch, start.consumed, start.position))
        else:
            plan = plan_batches(self.lengths, self.cfg.max_tokens, seed=self.cfg.seed, epoch=epoch)
            items = ((DataPosition(epoch, k + 1), (k + 1) / len(plan), plan[k])
                     for k in range(start.position, len(plan)))
        for after, fraction, rows in items:
            draw = (after.epoch << 32) + after.position
            if self.stream is not None:
                batch, weight = self._local_batch(range(len(rows)), rows, draw)
            else:
                batch, weight = self._local_batch(rows, draw=draw)
            if self.device.type == "cuda":
                batch = batch.pin_memory()
            yield after, fraction, (batch, weight)

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

    def _last_saved_step(self) -> int:
        state = ckpt.find_dir(self.run_dir / ckpt.LAST_DIR)
        if state is None:
            return 0
        return json.loads((state / "state.json").read_text())["step"]

    def _on_sigint(self, signum, frame) -> None:
        if self.stop_requested:  # second Ctrl-C: stop at once, last/ keeps the previous save
            raise KeyboardInterrupt
        self.stop_requested = True

    def _report_step(self, window: dict, log, epoch: float) -> None:
        st = self.state
        now = time.perf_counter()
        stats = {"step": st.step, "epoch": epoch,
                 "lr": self.scheduler.get_last_lr()[0],
                 "loss": window["loss"] / max(window["n"], 1),
                 "tokens_per_s": window["tokens"] / max(now - window["t"], 1e-9) * 1.0,
                 "pad_fraction": 1 - window["real"] / max(window["slots"], 1),
                 "data_wait": window["wait"] / max(now - window["t"], 1e-9),  # share of time
                 "best": st.best, "elapsed": st.train_seconds}
        self.reporter.step(stats)
        if st.step % self.cfg.log_every == 0 and window["n"]:
            log({"event": "train", **stats})
            window.update(tokens=0, t=now, loss=0.0, n=0, real=0, slots=0, wait=0.0)


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


# ------------------------------------------------------------------ batched inference helpers
