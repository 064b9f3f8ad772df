"""Training-time randomness: token dropout, masked-LM corruption, mixup partners, and the
per-step seed they all draw from (so that DDP ranks draw differently and resumes draw exactly)."""

from __future__ import annotations

import numpy as np
import torch

from .tokenizer import PAD_ID, UNK_ID

MLM_RATE = 0.15  # share of pieces masked-LM pretraining hides and predicts
FIRST_PIECE = 4  # ids below are pad, unk, bos and eos (never hidden or drawn as replacements)


def drop_tokens(ids: torch.Tensor, p: float) -> torch.Tensor:
    """ids (B, S) with each real (non-pad) token replaced by <unk> with probability p; draws
    from torch's global generator, seeded per step by :func:`step_seed`."""
    if p <= 0.0:
        return ids
    hit = (torch.rand(ids.shape, device=ids.device) < p) & ids.ne(PAD_ID)  # (B, S)
    return ids.masked_fill(hit, UNK_ID)


def mask_for_lm(ids: torch.Tensor, vocab_size: int, rate: float = MLM_RATE
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT-style corruption for masked-LM pretraining: ids (B, S) -> (inputs (B, S), at (B, S)
    bool). Each ordinary piece is picked with probability ``rate`` (at); of those, 80% become
    <unk> (the mask symbol), 10% a random piece and 10% stay. Draws from torch's global generator."""
    at = (torch.rand(ids.shape, device=ids.device) < rate) & ids.ge(FIRST_PIECE)  # (B, S)
    roll = torch.rand(ids.shape, device=ids.device)  # (B, S)
    inputs = ids.masked_fill(at & (roll < 0.8), UNK_ID)
    other = torch.randint(FIRST_PIECE, vocab_size, ids.shape, device=ids.device)  # (B, S)
    return torch.where(at & (roll >= 0.9), other, inputs), at


def mixup_pairs(n: int, alpha: float, device: torch.device) -> tuple[torch.Tensor, float]:
    """Mixup partners for a batch of n: (perm (n,), lam ~ Beta(alpha, alpha)), both drawn from
    torch's global generator, seeded per step by :func:`step_seed`."""
    lam = torch.distributions.Beta(alpha, alpha).sample().item()
    return torch.randperm(n).to(device), lam


def step_seed(seed: int, rank: int, draw: int) -> int:
    """The torch seed of a training step's random draws (dropout, --token-dropout, masked-LM
    masks, --mixup): a pure function of --seed, the DDP rank and the step's number (optimizer
    steps plus skipped ones), so each rank draws its own masks and a resumed run draws exactly
    what an uninterrupted one would, with any number of processes."""
    return int(np.random.SeedSequence([seed % 2**64, rank, draw]).generate_state(1, np.uint64)[0])
