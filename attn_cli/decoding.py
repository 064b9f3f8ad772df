"""Decoding for Seq2Seq models: pure functions ``model, src_ids, options -> ids, scores``.

They never change the model's train/eval mode: call ``model.eval()`` first for deterministic
output. Outputs exclude BOS; a sequence ends at its first EOS, and positions after it hold
``pad_id``. A sequence that reaches ``max_len`` without EOS is returned as is.
"""

from __future__ import annotations

import torch
from torch import Tensor

from attn_cli.model import Seq2Seq


def next_token_logprobs(logits: Tensor, model: Seq2Seq, block_eos: bool) -> Tensor:
    """Log-probabilities (B, V) in float32 from logits (B, V), with the tokens that may never be
    generated (pad, bos; eos while ``block_eos``) set to -inf."""
    cfg = model.cfg
    logp = torch.log_softmax(logits.float(), dim=-1)  # (B, V)
    logp[:, cfg.pad_id] = float("-inf")
    logp[:, cfg.bos_id] = float("-inf")
    if block_eos:
        logp[:, cfg.eos_id] = float("-inf")
    return logp


@torch.inference_mode()
def greedy_decode(model: Seq2Seq, src_ids: Tensor, max_len: int,
                  min_len: int = 0) -> tuple[Tensor, Tensor]:
    """Batched greedy search with the decoder's KV cache.

    src_ids (B, S) -> (ids (B, T) with T <= max_len, scores (B,) float32 sums of the chosen
    tokens' log-probabilities, EOS included). EOS is blocked for the first ``min_len`` tokens.
    ``max_len`` is capped at the model's ``max_len`` positions. Stops when every row has
    emitted EOS.
    """
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    cfg = model.cfg
    max_len = min(max_len, cfg.max_len)
    b, device = src_ids.size(0), src_ids.device
    memory, src_mask = model.encode(src_ids)  # (B, S, D), (B, 1, 1, S)
    cache = model.new_cache()
    inp = torch.full((b, 1), cfg.bos_id, dtype=torch.long, device=device)  # (B, 1)
    scores = torch.zeros(b, dtype=torch.float32, device=device)  # (B,)
    finished = torch.zeros(b, dtype=torch.bool, device=device)  # (B,)
    out: list[Tensor] = []
    for step in range(max_len):
        logits = model.decode(inp, memory, src_mask, cache)[:, -1]  # (B, V)
        logp = next_token_logprobs(logits, model, block_eos=step < min_len)  # (B, V)
        tok_logp, tok = logp.max(dim=-1)  # (B,), (B,)
        tok = tok.masked_fill(finished, cfg.pad_id)
        scores += tok_logp.masked_fill(finished, 0.0)
        out.append(tok)
        finished |= tok == cfg.eos_id
        if bool(finished.all()):
            break
        inp = tok[:, None]  # (B, 1)
    return torch.stack(out, dim=1), scores  # (B, T), (B,)
