"""Batched generation and classification over token ids: inputs sorted by length into
token-budget batches, outputs restored to input order. Used by the torch engine and by the
Trainer's validation."""

from __future__ import annotations

from collections.abc import Callable

import torch

from attn_cli.data.batching import collate_classify, make_batches
from attn_cli.data.tokenizer import EOS_ID, PAD_ID
from attn_cli.device import autocast
from attn_cli.infer.decoding import DecodeConfig, decode


def _batches(lengths: list[int], max_tokens: int) -> list[list[int]]:
    return make_batches([n + 1 for n in lengths], max_tokens, seed=0, epoch=0, shuffle=False)



@torch.inference_mode()
def generate(model: torch.nn.Module, device: torch.device, ids: list[list[int]], cfg: DecodeConfig,
             max_tokens: int = 6000, on_batch: Callable[[int], None] | None = None,
             amp_dtype: torch.dtype | None = None) -> list[tuple[list[int], float]]:
    """(output ids, score) per input, in input order, from a Seq2Seq in eval mode; empty inputs
    give empty outputs. ``amp_dtype``: decode under autocast (validation during training)."""
    results: list[tuple[list[int], float]] = [([], 0.0)] * len(ids)
    todo = [i for i, x in enumerate(ids) if x]
    for batch in _batches([len(ids[i]) for i in todo], max(1, max_tokens // max(1, cfg.beam))):
        idx = [todo[j] for j in batch]
        src = collate_classify([(ids[i], 0) for i in idx], PAD_ID).src.to(device)
        with autocast(device, amp_dtype):
            outs, scores = decode(model, src, cfg)
        for i, out, score in zip(idx, outs, scores.tolist(), strict=True):
            results[i] = (out, score)
        if on_batch:
            on_batch(len(idx))
    return results


@torch.inference_mode()
def classify(model: torch.nn.Module, device: torch.device, ids: list[list[int]], max_tokens: int = 16000,
             on_batch: Callable[[int], None] | None = None) -> list[list[float]]:
    """Class probabilities per input, in input order, from a Classifier in eval mode (empty
    inputs are classified as a lone EOS)."""
    probs: list[list[float]] = [[] for _ in ids]
    for idx in _batches([len(x) for x in ids], max_tokens):
        src = collate_classify([(ids[i] or [EOS_ID], 0) for i in idx], PAD_ID).src.to(device)
        for i, p in zip(idx, model(src).float().softmax(-1).tolist(), strict=True):
            probs[i] = p
        if on_batch:
            on_batch(len(idx))
    return probs
