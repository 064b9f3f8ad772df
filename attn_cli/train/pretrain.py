"""Self-supervised pretraining (`attn pretrain`): the task units of the objectives, run by the
Trainer's loop on unlabelled text (id-list rows, ``TrainConfig.objective``).

    sentiment          -> MaskedLMUnit on MaskedLM (the classifier's encoder): BERT masked LM,
                          15% of pieces, 80/10/10; ``mlm-whole-word`` picks whole words
    translate/summarize -> DenoisingUnit on Seq2Seq: BART text infilling (Poisson(3) spans over
                          30% of pieces, one mask each), ``denoise-permute`` also shuffles sentences

Everything else is the Trainer's: token-budget batches from the cache, AMP, DDP, exact resume,
time budget, metrics.jsonl, the best weights by the validation metric (masked-token accuracy, or
the denoiser's teacher-forced token accuracy). Masks are drawn per optimizer step from the step's
seed (masked LM, in ``prepare``) or per batch from (--seed, rank, batch number) while collating
(denoising), so a resumed run draws what an uninterrupted one would. Validation draws the same
noise at every evaluation (fixed seeds), so its numbers compare across steps.

A pretraining run directory loads as a model only to initialise another run (`attn train
--init-from`); config.json's ``pretrain`` entry (:func:`pretrain_meta`) says what it is, and
inference refuses it.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from attn_cli.data.batching import Batch, collate_classify, collate_seq2seq, make_batches
from attn_cli.data.noising import NoiseConfig, denoise_rows, mlm_mask, sentence_ends, word_starts
from attn_cli.data.text import text_cost
from attn_cli.data.tokenizer import BOS_ID, EOS_ID, PAD_ID
from attn_cli.eval.metrics import PRETRAIN_METRIC
from attn_cli.device import autocast
from attn_cli.train.units import TaskContext, TaskUnit

IGNORE = -100  # masked-LM labels of the positions not predicted
VALID_SEED = 12345  # the fixed noise of validation batches


def noise_config(objective: str) -> NoiseConfig:
    """The objective's noise: the standard rates, whole words or sentence permutation on top."""
    return NoiseConfig(whole_word=objective == "mlm-whole-word", permute=objective == "denoise-permute")


def pretrain_meta(objective: str, texts: int, valid: int) -> dict:
    """config.json's ``pretrain`` entry (``tokens_seen`` is filled in by the model card)."""
    cfg = noise_config(objective)
    rates = ({"mask_rate": cfg.mlm_rate, "whole_word": cfg.whole_word} if objective.startswith("mlm")
             else {"infill_rate": cfg.infill_rate, "mean_span": cfg.mean_span, "permute": cfg.permute})
    return {"objective": objective, "texts": texts, "valid_texts": valid, **rates}


def pretrain_unit(ctx: TaskContext) -> TaskUnit:
    """The unit of ``ctx.cfg.objective`` (masked LM for an encoder, denoising for a seq2seq model)."""
    return DenoisingUnit(ctx) if ctx.model_cfg.is_seq2seq else MaskedLMUnit(ctx)


class _PretrainUnit:
    """What both objectives share: the noise settings and the validation pass (loss and accuracy
    of the predicted pieces under fixed noise). Subclasses supply ``valid_batch`` and ``logits``."""

    ignore: int  # the target id that validation does not score

    def __init__(self, ctx: TaskContext, default: str) -> None:
        self.ctx = ctx
        self.noise = noise_config(ctx.cfg.objective or default)
        self.primary = PRETRAIN_METRIC[ctx.model_cfg.task]
        self.cost = text_cost(ctx.model_cfg.task)

    def seen(self, batch: Batch) -> int:
        return batch.n_tokens  # pieces of text read (masked LM) or target tokens (denoising)

    def valid_batch(self, rows: list, k: int) -> Batch:
        raise NotImplementedError

    def logits(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def validate(self, model: nn.Module, examples: list, refs: list) -> dict:
        """Validation loss and accuracy of the predicted pieces, under the same noise each time."""
        ctx = self.ctx
        plan = make_batches([len(x) + self.cost for x in examples], ctx.cfg.max_tokens,
                            seed=0, epoch=0, shuffle=False)
        loss, count, right = 0.0, 0, 0
        for k, idx in enumerate(plan):
            batch = self.valid_batch([examples[i] for i in idx], k).to(ctx.device)
            with autocast(ctx.device, ctx.amp_dtype):
                logits, target = self.logits(model, batch)  # (N, V), (N,)
            keep = target.ne(self.ignore)  # (N,)
            loss += F.cross_entropy(logits.float()[keep], target[keep], reduction="sum").item()
            right += int((logits.argmax(-1)[keep] == target[keep]).sum().item())
            count += int(keep.sum().item())
        mean = loss / max(count, 1)
        return {"valid_loss": mean, "valid_ppl": float(np.exp(min(mean, 50.0))),
                self.primary: 100.0 * right / max(count, 1)}


class MaskedLMUnit(_PretrainUnit):
    """BERT masked LM on an encoder: whole texts are collated, masks are drawn per optimizer
    step on the device from torch's generator (seeded by the Trainer with step_seed)."""

    ignore = IGNORE

    def __init__(self, ctx: TaskContext) -> None:
        super().__init__(ctx, "mlm")
        self.starts = torch.from_numpy(word_starts(ctx.toks.src)) if self.noise.whole_word else None  # (V,)

    def collate(self, rows: list, draw: int) -> Batch:
        """Id-list rows -> a Batch of whole texts (``draw`` unused: masks come in ``prepare``)."""
        return collate_classify([(r or [EOS_ID], 0) for r in rows], PAD_ID, **self.ctx.pad)

    def mask(self, batch: Batch, generator: torch.Generator | None = None) -> tuple[Batch, float]:
        """Inputs with hidden pieces; ``labels`` (B, S) hold the originals there and IGNORE
        elsewhere. Count = pieces to predict. ``generator`` None: torch's global one."""
        inputs, at = mlm_mask(batch.src, self.ctx.model_cfg.vocab_size, generator, self.noise.mlm_rate,
                              self.starts, mask_share=self.noise.mlm_mask, random_share=self.noise.mlm_random)
        labels = batch.src.masked_fill(~at, IGNORE)  # (B, S)
        return dataclasses.replace(batch, src=inputs, labels=labels), float(at.sum().item())

    def prepare(self, batch: Batch) -> tuple[Batch, float]:
        return self.mask(batch)  # torch's generator was seeded for this step (step_seed)

    def loss_sum(self, model: nn.Module, batch: Batch, smoothing: float) -> torch.Tensor:
        """Summed cross-entropy of the predicted pieces (no smoothing)."""
        at = batch.labels.ne(IGNORE)  # (B, S)
        return model(batch.src, at, target=batch.labels[at], padded=batch.src_padded)

    def valid_batch(self, rows: list, k: int) -> Batch:
        """Validation batch ``k`` with its fixed masks."""
        gen = torch.Generator().manual_seed(VALID_SEED + k)
        return self.mask(collate_classify([(r or [EOS_ID], 0) for r in rows], PAD_ID), gen)[0]

    def logits(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits (N, V), targets (N,)) of the predicted pieces."""
        at = batch.labels.ne(IGNORE)  # (B, S)
        return model(batch.src, at), batch.labels[at]


class DenoisingUnit(_PretrainUnit):
    """BART denoising on a seq2seq model: (noised, original) pairs drawn while collating, from
    (--seed, rank, ``draw``); scored as attn train scores a seq2seq batch (pads ignored)."""

    ignore = PAD_ID

    def __init__(self, ctx: TaskContext) -> None:
        super().__init__(ctx, "denoise")
        self.ends = sentence_ends(ctx.toks.src) if self.noise.permute else None

    def collate(self, rows: list, draw: int) -> Batch:
        rng = np.random.default_rng([self.ctx.cfg.seed % 2**63, self.ctx.rank, draw])
        return self._noised(rows, rng, self.ctx.pad)

    def _noised(self, rows: list, rng: np.random.Generator, pad: dict | None = None) -> Batch:
        return collate_seq2seq(denoise_rows(rows, rng, self.noise, self.ends), PAD_ID, BOS_ID, EOS_ID, **(pad or {}))

    def prepare(self, batch: Batch) -> tuple[Batch, float]:
        return batch, float(batch.n_tokens)

    def loss_sum(self, model: nn.Module, batch: Batch, smoothing: float) -> torch.Tensor:
        return model(batch.src, batch.tgt_in, target=batch.tgt_out, smoothing=smoothing, padded=batch.src_padded)

    def valid_batch(self, rows: list, k: int) -> Batch:
        """Validation batch ``k`` with its fixed noise."""
        return self._noised(rows, np.random.default_rng([VALID_SEED, k]))

    def logits(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits (N, V), targets (N,)) of every target position, pads included (validation
        also scores their accuracy; ``ignore`` leaves the pads out)."""
        logits = model(batch.src, batch.tgt_in)  # (B, T, V)
        return logits.flatten(0, 1), batch.tgt_out.flatten()
