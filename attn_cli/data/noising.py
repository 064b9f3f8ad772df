"""Noising for self-supervised pretraining (`attn pretrain`): BERT's masked-LM corruption for
the encoder, BART's text infilling and sentence permutation for the encoder-decoder.

Every function is pure: its randomness comes only from the generator it is given, so the same
seed gives the same noise. Seed one generator per training step from
:func:`train.optim.step_seed` (``np.random.default_rng(step_seed(seed, rank, draw))``, or
``torch.Generator().manual_seed(...)``), as every other training draw is, and a resumed or DDP
run draws exactly what an uninterrupted one would.

Special ids (pad 0, unk 1, bos 2, eos 3: every id below FIRST_PIECE) are never masked, never
drawn as random replacements and never moved inside a sentence. The mask symbol is <unk>
(MASK_ID): the vocabulary has no <mask> piece, and a pretrained model and its fine-tuned
successor share the vocabulary (a real <unk> in the data is rare with byte fallback).

The defaults live here once: the module constants below, which :class:`NoiseConfig` and the
functions' keyword defaults both use.

Shapes: B = rows in a batch, S = longest row, V = vocabulary size, L = one row's length.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from attn_cli.data.tokenizer import EOS_ID, UNK_ID

FIRST_PIECE = EOS_ID + 1  # ids below are pad, unk, bos and eos
MASK_ID = UNK_ID  # the mask symbol (see the module docstring)
MLM_RATE = 0.15  # masked LM: share of ordinary pieces picked (hidden and predicted)
MLM_MASK = 0.8  # ... of the picked pieces, the share replaced by MASK_ID
MLM_RANDOM = 0.1  # ... the share replaced by a random ordinary piece (the rest stay as they are)
INFILL_RATE = 0.3  # text infilling: share of ordinary pieces covered by masked spans
MEAN_SPAN = 3.0  # text infilling: Poisson mean of a span's length (a 0-length span inserts a mask)
SENTENCE_FINAL = (".", "!", "?", "…", "。", "！", "？")  # a piece ending so ends a sentence
CLOSERS = "\"'”’»)]"  # ... also when these follow it (`."`, `!)`)


@dataclass(frozen=True)
class NoiseConfig:
    """The pretraining objectives' noise: masked LM (encoder) and denoising (encoder-decoder)."""

    mlm_rate: float = MLM_RATE  # masked LM: share of ordinary pieces picked
    mlm_mask: float = MLM_MASK  # masked LM: of those, share replaced by the mask symbol
    mlm_random: float = MLM_RANDOM  # masked LM: of those, share replaced by a random piece
    whole_word: bool = False  # masked LM: pick whole words (every piece of a picked word)
    infill_rate: float = INFILL_RATE  # denoising: share of ordinary pieces covered by spans
    mean_span: float = MEAN_SPAN  # denoising: Poisson mean span length
    permute: bool = False  # denoising: shuffle the sentences before infilling (BART)

    def __post_init__(self) -> None:
        for name in ("mlm_rate", "mlm_mask", "mlm_random", "infill_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {getattr(self, name)}")
        if self.mlm_mask + self.mlm_random > 1.0:
            raise ValueError(f"mlm_mask + mlm_random must be at most 1, got {self.mlm_mask} + {self.mlm_random}")
        if not self.mean_span > 0.0:
            raise ValueError(f"mean_span must be positive, got {self.mean_span}")


# ---------------------------------------------------------------------------- vocabulary tables


def word_starts(tokenizer) -> np.ndarray:
    """(V,) bool: which ids begin a word (SentencePiece pieces starting with "▁"), for
    whole-word masking. Specials and byte pieces do not (a byte continues the word it is in).
    ``tokenizer``: a :class:`tokenizer.Tokenizer` (anything with ``vocab_size`` and
    ``id_to_piece``)."""
    starts = np.array([tokenizer.id_to_piece(i).startswith("\u2581")
                       for i in range(tokenizer.vocab_size)], dtype=bool)  # (V,)
    starts[:FIRST_PIECE] = False
    return starts


def sentence_ends(tokenizer) -> np.ndarray:
    """The ids of pieces that end a sentence (".", "!", "?", ... possibly followed by a closing
    quote or bracket), sorted: the ``ends`` of :func:`permute_sentences`."""
    found = [i for i in range(FIRST_PIECE, tokenizer.vocab_size)
             if tokenizer.id_to_piece(i).rstrip(CLOSERS).endswith(SENTENCE_FINAL)]
    return np.asarray(found, dtype=np.int64)


# ---------------------------------------------------------------------------- masked LM


def mlm_mask(ids: torch.Tensor, vocab_size: int, generator: torch.Generator | None = None,
             rate: float = MLM_RATE, word_starts: np.ndarray | torch.Tensor | None = None, *,
             mask_share: float = MLM_MASK, random_share: float = MLM_RANDOM
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's corruption: ids (B, S) -> (inputs (B, S), at (B, S) bool).

    Each ordinary piece (id >= FIRST_PIECE; padding and the other specials never) is picked
    with probability ``rate`` (``at``: the positions to predict); of the picked, ``mask_share``
    become MASK_ID, ``random_share`` a random ordinary piece and the rest stay. With
    ``word_starts`` ((V,) bool, :func:`word_starts`), whole words are picked instead: each word
    with probability ``rate``, and every piece of it together, so the expected share of picked
    pieces is still ``rate`` (a word starts at a "▁" piece, at the row's start and after a
    special); the 80/10/10 split stays per piece.

    The draws come from ``generator`` on its own device (then moved to ``ids``' device, so a
    CPU generator gives the same masks on any device), or from torch's global generator on
    ``ids``' device when it is None.
    """
    if vocab_size <= FIRST_PIECE:
        raise ValueError(f"vocab_size must exceed {FIRST_PIECE} (the specials), got {vocab_size}")
    device = generator.device if generator is not None else ids.device
    shape = tuple(ids.shape)
    pick = torch.rand(shape, generator=generator, device=device).to(ids.device)  # (B, S)
    roll = torch.rand(shape, generator=generator, device=device).to(ids.device)  # (B, S)
    other = torch.randint(FIRST_PIECE, vocab_size, shape, generator=generator,
                          device=device).to(ids.device)  # (B, S)
    ordinary = ids.ge(FIRST_PIECE)  # (B, S)
    if word_starts is not None:
        table = torch.as_tensor(word_starts, dtype=torch.bool, device=ids.device)  # (V,)
        starts = table.index_select(0, ids.reshape(-1)).view(shape)  # (B, S) (50x faster than table[ids])
        after_special = torch.zeros_like(ordinary)
        after_special[:, 1:] = ~ordinary[:, :-1]
        starts = starts | ~ordinary | after_special
        starts[:, 0] = True
        pos = torch.arange(shape[1], device=ids.device).expand(shape)  # (B, S)
        first = torch.where(starts, pos, torch.zeros_like(pos)).cummax(dim=1).values  # (B, S) word's start
        pick = pick.gather(1, first)  # (B, S): one draw per word
    at = (pick < rate) & ordinary  # (B, S)
    inputs = ids.masked_fill(at & (roll < mask_share), MASK_ID)
    swap = at & (roll >= mask_share) & (roll < mask_share + random_share)  # (B, S)
    return torch.where(swap, other, inputs), at


# ---------------------------------------------------------------------------- denoising


def _span_lengths(rng: np.random.Generator, target: int, mean_span: float) -> np.ndarray:
    """Poisson(mean_span) lengths drawn until they cover ``target`` pieces, the last one cut so
    that they sum to exactly ``target`` (BART); zeros stay (insertions)."""
    chunks, total = [], 0
    while total < target:
        draw = rng.poisson(mean_span, size=int(np.ceil(target / mean_span)) + 8)  # (k,)
        chunks.append(draw)
        total += int(draw.sum())
    lengths = np.concatenate(chunks)  # (K,)
    cum = np.cumsum(lengths)
    last = int(np.searchsorted(cum, target))  # first length reaching the target
    lengths = lengths[: last + 1].copy()
    lengths[last] -= int(cum[last]) - target
    return lengths


def span_infill(ids: Sequence[int] | np.ndarray, rng: np.random.Generator, rate: float = INFILL_RATE,
                mean_span: float = MEAN_SPAN, mask_id: int = MASK_ID) -> np.ndarray:
    """BART's text infilling: ids (L,) -> noised ids (L',) int64.

    ``round(rate * ordinary pieces)`` pieces (stochastically rounded, so the expected share
    is exactly ``rate``) are covered by non-overlapping spans whose lengths are drawn from
    Poisson(``mean_span``); each span is replaced by ONE ``mask_id``, and each 0-length span
    inserts a ``mask_id`` at a random place. Spans are placed uniformly over the ordinary
    pieces (special ids are never covered; a span that straddles one leaves a mask on each
    side). Guarantees: non-empty input -> non-empty output, and ``L' <= L + 1`` (insertions
    beyond that are dropped: only very short rows can reach it), so a denoising pair costs
    ``L + 1`` slots (the target plus EOS) when planned.
    """
    ids = np.asarray(ids, dtype=np.int64)  # (L,)
    n = len(ids)
    ordinary = np.flatnonzero(ids >= FIRST_PIECE)  # (N,) positions that may be covered
    if len(ordinary) == 0 or rate <= 0.0:
        return ids.copy()
    target = int(np.floor(rate * len(ordinary) + rng.random()))
    if target == 0:
        return ids.copy()
    lengths = _span_lengths(rng, target, mean_span)
    spans = rng.permutation(lengths[lengths > 0])  # (m,) (the cut last one lands anywhere)
    inserts = int((lengths == 0).sum())
    # the N - target uncovered pieces and the m spans are N - target + m items in a row;
    # choosing which m of them are spans places the spans uniformly without overlap
    items = len(ordinary) - target + len(spans)
    is_span = np.zeros(items, dtype=bool)
    is_span[rng.choice(items, size=len(spans), replace=False)] = True
    item_len = np.ones(items, dtype=np.int64)
    item_len[is_span] = spans
    label = np.zeros(n, dtype=np.int64)  # (L,) 0: kept, k: inside span k
    label[ordinary] = np.repeat(np.where(is_span, np.cumsum(is_span), 0), item_len)
    first = label > 0
    first[1:] &= label[1:] != label[:-1]  # a span's first position (in the full row)
    keep = (label == 0) | first
    out = np.where(first, mask_id, ids)[keep]  # (L - covered + masks,)
    inserts = min(inserts, n + 1 - len(out), len(out) + 1)
    if inserts > 0:
        where = np.sort(rng.choice(len(out) + 1, size=inserts, replace=False))
        out = np.insert(out, where, mask_id)
    return out


def permute_sentences(ids: Sequence[int] | np.ndarray, rng: np.random.Generator,
                      ends: Iterable[int] | np.ndarray) -> np.ndarray:
    """BART's sentence permutation: ids (L,) -> the same ids (L,) with its sentences in a
    random order. A sentence ends after each id in ``ends`` (:func:`sentence_ends`); the text
    after the last such id is a sentence too."""
    ids = np.asarray(ids, dtype=np.int64)  # (L,)
    if len(ids) == 0:
        return ids.copy()
    is_end = np.isin(ids, np.fromiter(ends, dtype=np.int64))  # (L,)
    sentences = np.split(ids, np.flatnonzero(is_end[:-1]) + 1)
    return np.concatenate([sentences[i] for i in rng.permutation(len(sentences))])


def denoise_pair(ids: Sequence[int] | np.ndarray, rng: np.random.Generator,
                 cfg: NoiseConfig = NoiseConfig(), ends: Iterable[int] | np.ndarray | None = None
                 ) -> tuple[list[int], list[int]]:
    """One denoising example: (noised source, target) id lists, ready for
    :func:`batching.collate_seq2seq` (which adds BOS/EOS to the target). The target is ``ids``
    itself; the source is ``ids`` with its sentences permuted (when ``cfg.permute``; needs
    ``ends``) and then span-infilled. ``len(source) <= len(ids) + 1``."""
    target = np.asarray(ids, dtype=np.int64)  # (L,)
    source = target
    if cfg.permute:
        if ends is None:
            raise ValueError("sentence permutation needs the sentence-end ids (noising.sentence_ends)")
        source = permute_sentences(source, rng, ends)
    source = span_infill(source, rng, cfg.infill_rate, cfg.mean_span)
    return source.tolist(), target.tolist()


def denoise_rows(rows: Iterable[Sequence[int]], rng: np.random.Generator, cfg: NoiseConfig = NoiseConfig(),
                 ends: Iterable[int] | np.ndarray | None = None) -> list[tuple[list[int], list[int]]]:
    """:func:`denoise_pair` over a batch's rows, in order, from one generator."""
    ends = None if ends is None else np.fromiter(ends, dtype=np.int64)
    return [denoise_pair(r, rng, cfg, ends) for r in rows]
