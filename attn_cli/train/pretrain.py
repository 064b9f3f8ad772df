"""Self-supervised pretraining (`attn pretrain`): the Trainer's loop on unlabelled text.

    sentiment          -> MaskedLM (the classifier's encoder): BERT masked LM, 15% of pieces,
                          80/10/10; ``mlm-whole-word`` picks whole words
    translate/summarize -> Seq2Seq: BART text infilling (Poisson(3) spans over 30% of pieces,
                          one mask each), ``denoise-permute`` also shuffles sentences

Everything else is the Trainer's: token-budget batches from the cache, AMP, DDP, exact resume,
time budget, metrics.jsonl, the best weights by the validation metric (masked-token accuracy, or
the denoiser's teacher-forced token accuracy). Masks are drawn per optimizer step from the step's
seed (masked LM) or per batch from (--seed, rank, batch number) while collating (denoising), so a
resumed run draws what an uninterrupted one would. Validation draws the same noise at every
evaluation (fixed seeds), so its numbers compare across steps.

A pretraining run directory loads as a model only to initialise another run (`attn train
--init-from`); config.json's ``pretrain`` entry says what it is, and inference refuses it.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F

from attn_cli.data.batching import Batch, collate_classify, collate_seq2seq, make_batches
from attn_cli.data.noising import NoiseConfig, denoise_rows, mlm_mask, sentence_ends, word_starts
from attn_cli.data.text import text_cost
from attn_cli.data.tokenizer import BOS_ID, EOS_ID, PAD_ID
from attn_cli.eval.metrics import PRETRAIN_METRIC
from attn_cli.train.trainer import Trainer

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


class PretrainTrainer(Trainer):
    """The Trainer with a self-supervised objective on id-list rows (``TrainConfig.objective``)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.mlm = not self.model_cfg.is_seq2seq
        self.noise = noise_config(self.cfg.objective or ("mlm" if self.mlm else "denoise"))
        self.primary = PRETRAIN_METRIC[self.model_cfg.task]
        src = self.toks.src
        self.starts = torch.from_numpy(word_starts(src)) if self.noise.whole_word else None  # (V,)
        self.ends = sentence_ends(src) if self.noise.permute else None
        self.cost = text_cost(self.model_cfg.task)

    # ------------------------------------------------------------------ batches

    def _collate(self, rows: list, draw: int) -> Batch:
        """Id-list rows -> a Batch: whole texts (masked LM: masks come per step, in _prepare) or
        (noised, original) pairs drawn from (--seed, rank, ``draw``)."""
        if self.mlm:
            return collate_classify([(r or [EOS_ID], 0) for r in rows], PAD_ID)
        rng = np.random.default_rng([self.cfg.seed % 2**63, self.dist.rank, draw])
        return collate_seq2seq(denoise_rows(rows, rng, self.noise, self.ends), PAD_ID, BOS_ID, EOS_ID)

    def _seen(self, batch: Batch) -> int:
        return batch.n_tokens  # pieces of text read (masked LM) or target tokens (denoising)

    def _mask(self, batch: Batch, generator: torch.Generator | None = None) -> tuple[Batch, float]:
        """Masked LM: inputs with hidden pieces; ``labels`` (B, S) hold the originals there and
        IGNORE elsewhere. Count = pieces to predict."""
        inputs, at = mlm_mask(batch.src, self.model_cfg.vocab_size, generator, self.noise.mlm_rate,
                              self.starts, mask_share=self.noise.mlm_mask, random_share=self.noise.mlm_random)
        labels = batch.src.masked_fill(~at, IGNORE)  # (B, S)
        return dataclasses.replace(batch, src=inputs, labels=labels), float(at.sum().item())

    def _prepare(self, batch: Batch) -> tuple[Batch, float]:
        batch = batch.to(self.device)
        if self.mlm:  # torch's generator was seeded for this step (step_seed)
            return self._mask(batch)
        return batch, float(batch.n_tokens)

    def _loss_sum(self, batch: Batch, smoothing: float, model: torch.nn.Module | None = None) -> torch.Tensor:
        """Summed cross-entropy of the predicted pieces (masked LM, no smoothing); denoising is
        a seq2seq batch, scored as attn train scores one (pads ignored)."""
        if not self.mlm:
            return super()._loss_sum(batch, smoothing, model)
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                            enabled=self.amp_dtype is not None):
            at = batch.labels.ne(IGNORE)  # (B, S)
            return (model or self.model)(batch.src, at, target=batch.labels[at])

    def _logits(self, batch: Batch, model: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits (N, V), targets (N,)) of the predicted pieces (masked LM) or of every target
        position, pads included (validation, which also scores their accuracy)."""
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                            enabled=self.amp_dtype is not None):
            if self.mlm:
                at = batch.labels.ne(IGNORE)  # (B, S)
                return model(batch.src, at), batch.labels[at]  # (N, V), (N,)
            logits = model(batch.src, batch.tgt_in)  # (B, T, V)
        return logits.flatten(0, 1), batch.tgt_out.flatten()

    # ------------------------------------------------------------------ validation

    @torch.inference_mode()
    def evaluate(self) -> dict:
        """Validation loss and accuracy of the predicted pieces, under the same noise each time."""
        model = self.eval_model
        model.eval()
        plan = make_batches([len(x) + self.cost for x in self.valid_ex], self.cfg.max_tokens,
                            seed=0, epoch=0, shuffle=False)
        loss, count, right = 0.0, 0, 0
        for k, idx in enumerate(plan):
            rows = [self.valid_ex[i] for i in idx]
            if self.mlm:
                gen = torch.Generator().manual_seed(VALID_SEED + k)
                batch, _ = self._mask(collate_classify([(r or [EOS_ID], 0) for r in rows], PAD_ID), gen)
            else:
                rng = np.random.default_rng([VALID_SEED, k])
                batch = collate_seq2seq(denoise_rows(rows, rng, self.noise, self.ends), PAD_ID, BOS_ID, EOS_ID)
            batch = batch.to(self.device)
            logits, target = self._logits(batch, model)
            keep = target.ne(IGNORE if self.mlm else PAD_ID)  # (N,)
            loss += F.cross_entropy(logits.float()[keep], target[keep], reduction="sum").item()
            right += int((logits.argmax(-1)[keep] == target[keep]).sum().item())
            count += int(keep.sum().item())
        model.train()
        mean = loss / max(count, 1)
        return {"valid_loss": mean, "valid_ppl": float(np.exp(min(mean, 50.0))),
                self.primary: 100.0 * right / max(count, 1)}
