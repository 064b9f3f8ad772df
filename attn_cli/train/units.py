"""Task units: what differs by task inside the Trainer's loop (fairseq2's TrainUnit idea).

The :class:`~attn_cli.train.trainer.Trainer` owns the loop (steps, accumulation, autocast,
clipping, schedule, DDP, evaluation cadence, saving, exact resume, stopping); a
:class:`TaskUnit` supplies the rest:

    collate(rows, draw)            training rows -> a Batch on the CPU (the prefetch thread);
                                   ``draw`` numbers the batch in the run (noise drawn here)
    prepare(batch)                 the batch on the device -> (batch ready for the loss, the count
                                   its loss sum is divided by)
    seen(batch)                    what the batch adds to the run's count (TrainState.tokens)
    loss_sum(model, batch, smooth) the summed loss (the Trainer runs it under autocast)
    validate(model, examples, refs) the validation metrics, ``primary`` among them

Here: :class:`Seq2SeqUnit` (translate, summarize) and :class:`ClassifyUnit` (sentiment), picked
by :func:`finetune_unit`. The pretraining objectives (masked LM, denoising) are in
``attn_cli.train.pretrain``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from attn_cli.config import ModelConfig, TrainConfig, task_decode_config
from attn_cli.data.batching import (
    Batch,
    collate_classify,
    collate_seq2seq,
    example_lengths,
    iterate_epoch,
    make_batches,
)
from attn_cli.data.tokenizer import BOS_ID, EOS_ID, PAD_ID, Tokenizers
from attn_cli.device import autocast, pick_precision
from attn_cli.eval.metrics import PRIMARY_METRIC, bleu_chrf, classification, rouge
from attn_cli.infer.predict import classify, generate


class TaskUnit(Protocol):
    """What a training task supplies to the Trainer's loop (see the module docstring)."""

    primary: str  # the validation metric (higher is better) that picks the best weights

    def collate(self, rows: list, draw: int) -> Batch: ...
    def prepare(self, batch: Batch) -> tuple[Batch, float]: ...
    def seen(self, batch: Batch) -> int: ...
    def loss_sum(self, model: nn.Module, batch: Batch, smoothing: float) -> torch.Tensor: ...
    def validate(self, model: nn.Module, examples: list, refs: list) -> dict: ...


PAD_MULTIPLE = 8  # training batch widths are rounded up to this on a GPU


@dataclass(frozen=True)
class TaskContext:
    """What a unit needs besides its batches: the run's settings, tokenizers and place."""

    cfg: TrainConfig
    model_cfg: ModelConfig
    toks: Tokenizers
    device: torch.device
    rank: int = 0  # this process's DDP rank (noise drawn while collating differs per rank)

    @property
    def amp_dtype(self) -> torch.dtype | None:
        """The autocast dtype (None: fp32), as the Trainer picks it."""
        return pick_precision(self.cfg.precision, self.device)

    @property
    def pad(self) -> dict:
        """How training batches are padded (collate's ``multiple`` and ``limit``): widths rounded
        up to multiples of PAD_MULTIPLE on a GPU, so batch shapes repeat (fewer shapes for a
        compiled model) and suit tensor cores; exact widths on a CPU, where the rounding raised
        Multi30k's padding from 8% to 22-29% and slowed compiled training
        (docs/benchmarks-speed.md)."""
        multiple = PAD_MULTIPLE if self.device.type == "cuda" else 1
        return {"multiple": multiple, "limit": self.model_cfg.max_len}


def finetune_unit(ctx: TaskContext) -> TaskUnit:
    """The unit of `attn train`: seq2seq for translate/summarize, classification for sentiment."""
    return Seq2SeqUnit(ctx) if ctx.model_cfg.is_seq2seq else ClassifyUnit(ctx)


def validation_loss(unit: TaskUnit, ctx: TaskContext, model: nn.Module, examples: list) -> float:
    """Mean loss (no smoothing) over the validation examples, per counted token or example."""
    plan = make_batches(example_lengths(examples, ctx.model_cfg.is_seq2seq), ctx.cfg.max_tokens,
                        seed=0, epoch=0, shuffle=False)
    loss, count = 0.0, 0
    for _, batch in iterate_epoch(examples, plan, functools.partial(unit.collate, draw=0)):
        batch = batch.to(ctx.device)
        with autocast(ctx.device, ctx.amp_dtype):
            loss += unit.loss_sum(model, batch, 0.0).item()
        count += unit.seen(batch)
    return loss / max(count, 1)


class Seq2SeqUnit:
    """translate / summarize: (source ids, target ids) pairs, loss over the target tokens;
    validation adds perplexity and BLEU/chrF or ROUGE of greedy decodes."""

    def __init__(self, ctx: TaskContext) -> None:
        self.ctx = ctx
        self.primary = PRIMARY_METRIC[ctx.model_cfg.task]

    def collate(self, rows: list, draw: int) -> Batch:
        """(src, tgt) rows -> a seq2seq Batch (``draw`` unused: nothing random here)."""
        return collate_seq2seq(rows, pad_id=PAD_ID, bos_id=BOS_ID, eos_id=EOS_ID, **self.ctx.pad)

    def prepare(self, batch: Batch) -> tuple[Batch, float]:
        return batch, float(batch.n_tokens)

    def seen(self, batch: Batch) -> int:
        return batch.n_tokens  # target tokens

    def loss_sum(self, model: nn.Module, batch: Batch, smoothing: float) -> torch.Tensor:
        """Summed cross-entropy over the target tokens; the model computes it, so no (B, T, V)
        logits are kept in memory (``attn_cli.model.losses``)."""
        return model(batch.src, batch.tgt_in, target=batch.tgt_out, smoothing=smoothing, padded=batch.src_padded)

    def validate(self, model: nn.Module, examples: list, refs: list) -> dict:
        """valid_loss, valid_ppl and the task's decoding metrics on the first eval_samples."""
        metrics = {"valid_loss": validation_loss(self, self.ctx, model, examples)}
        metrics["valid_ppl"] = math.exp(min(metrics["valid_loss"], 50))
        metrics.update(self._decode_metrics(model, examples, refs))
        return metrics

    def _decode_metrics(self, model: nn.Module, examples: list, refs: list) -> dict:
        ctx = self.ctx
        n = min(ctx.cfg.eval_samples, len(examples))
        srcs = [s for s, _ in examples[:n]]
        # the task's decoding (length rules, n-gram blocking) with greedy search, for speed
        cfg = task_decode_config(ctx.model_cfg.task, beam=1)
        outs = generate(model, ctx.device, srcs, cfg, ctx.cfg.max_tokens, amp_dtype=ctx.amp_dtype)
        hyps = [ctx.toks.tgt.decode(ids) for ids, _ in outs]
        if ctx.model_cfg.task == "translate":
            return {k: v for k, v in bleu_chrf(hyps, refs[:n]).items() if k in ("bleu", "chrf")}
        return rouge(hyps, refs[:n])


class ClassifyUnit:
    """sentiment: (text ids, label) pairs, loss over the examples; validation adds accuracy
    and macro F1."""

    def __init__(self, ctx: TaskContext) -> None:
        self.ctx = ctx
        self.primary = PRIMARY_METRIC[ctx.model_cfg.task]

    def collate(self, rows: list, draw: int) -> Batch:
        """(ids, label) rows -> a classification Batch (``draw`` unused)."""
        return collate_classify(rows, pad_id=PAD_ID, **self.ctx.pad)

    def prepare(self, batch: Batch) -> tuple[Batch, float]:
        return batch, float(batch.n_examples)

    def seen(self, batch: Batch) -> int:
        return batch.n_examples

    def loss_sum(self, model: nn.Module, batch: Batch, smoothing: float) -> torch.Tensor:
        """Summed cross-entropy over the examples, from float32 logits."""
        logits = model(batch.src, padded=batch.src_padded)  # (B, C)
        return F.cross_entropy(logits.float(), batch.labels, label_smoothing=smoothing, reduction="sum")

    def validate(self, model: nn.Module, examples: list, refs: list) -> dict:
        """valid_loss and the classification metrics (the confusion matrix left out), from one
        forward pass over the examples."""
        ctx = self.ctx
        with autocast(ctx.device, ctx.amp_dtype):
            probs = classify(model, ctx.device, [x for x, _ in examples], ctx.cfg.max_tokens)
        # the loss from the same forward pass (one pass per evaluation, not two)
        metrics = {"valid_loss": -sum(math.log(max(p[y], 1e-12)) for p, (_, y) in zip(probs, examples, strict=True))
                   / max(len(examples), 1)}
        preds = [max(range(len(p)), key=p.__getitem__) for p in probs]
        metrics.update(classification(preds, [y for _, y in examples], ctx.model_cfg.num_labels))
        metrics.pop("confusion", None)
        return metrics
