"""Length coverage (--concat): some training examples are 2-3 pairs joined end to end.

A model trained only on short sentences translates the first sentence of a longer input and
stops: its outputs follow the lengths it saw in training (Varis & Bojar 2021, "Sequence Length
is a Domain"). Joining random training pairs, source to source and target to target in the same
order, covers longer inputs without new data (concatenation augmentation: Nguyen et al. 2021,
Kondo et al. 2021; OpenNMT-py's ``docify``, OpusTrainer's ``Merge``).

Each epoch, a share ``P`` of the training *examples* are joined ones. The joining is planned
from the cached per-side lengths alone: :func:`plan_joins` returns *items*, each 1-3 example
indices, and their padded costs, which the token-budget plan (:func:`batching.plan_batches`)
cuts into batches in place of the examples. Every pair still appears exactly once an epoch;
the grouping is drawn from ``(seed, epoch)`` only, so ``--resume`` replays it exactly. A group
whose joined source would pass ``max_len`` (or target ``max_len - 1``) keeps only the members
that fit; the rest train alone. Only the batch being collated is turned into Python lists
(:func:`join_rows`). Validation data never goes through here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

SIZES = (2, 3)  # pairs in a joined example, drawn uniformly
MEAN_SIZE = sum(SIZES) / len(SIZES)
SEED_SALT = 7_919  # keeps the joining's draws apart from the batch plan's (same seed, epoch)


@dataclass(frozen=True)
class Joins:
    """One epoch's training items: item ``k`` is the examples ``members[starts[k]:starts[k + 1]]``
    joined in that order (one example when the span is 1)."""

    members: np.ndarray  # (N,) example indices, items back to back: a permutation of 0..N-1
    starts: np.ndarray  # (n_items + 1,) int64 offsets into members
    lengths: np.ndarray  # (n_items,) int32 padded cost: max(joined source, joined target + 1)

    def __len__(self) -> int:
        return len(self.lengths)

    @property
    def joined(self) -> int:
        """Items made of more than one example."""
        return int((np.diff(self.starts) > 1).sum())

    def expand(self, items: Sequence[int]) -> tuple[list[int], list[int]]:
        """(the example indices of ``items``, back to back; how many each item has)."""
        idx = np.asarray(items, dtype=np.int64)
        lo, spans = self.starts[idx], self.starts[idx + 1] - self.starts[idx]  # (n,) each
        within = np.arange(spans.sum()) - np.repeat(np.cumsum(spans) - spans, spans)  # 0.. in each item
        return self.members[np.repeat(lo, spans) + within].tolist(), spans.tolist()


def joined_pairs(n: int, share: float) -> int:
    """Examples to put into joined items so that about ``share`` of the items are joined: with
    J joined items of mean size m and S single ones, J / (J + S) = share and m J + S = n."""
    if share <= 0 or n < 2:
        return 0
    return min(n, round(n * MEAN_SIZE * share / (1 + (MEAN_SIZE - 1) * share)))


def plan_joins(src_lens: np.ndarray, tgt_lens: np.ndarray, share: float, max_len: int, *,
               seed: int, epoch: int) -> Joins:
    """Epoch ``epoch``'s items over examples with these per-side lengths (targets without
    BOS/EOS): about ``share`` of them joined from 2-3 random examples, none past ``max_len``."""
    src = np.asarray(src_lens, dtype=np.int64)  # (N,)
    tgt = np.asarray(tgt_lens, dtype=np.int64)  # (N,)
    n = len(src)
    rng = np.random.default_rng((seed * 1_000_003 + epoch) * SEED_SALT)
    perm = rng.permutation(n)  # (N,)
    m = joined_pairs(n, share)
    sizes = rng.choice(SIZES, size=m // min(SIZES) + 1)  # more groups than can be needed
    ends = np.cumsum(sizes)
    ends = ends[ends <= m]  # (G,) group g is perm[ends[g-1]:ends[g]]; a short tail trains alone
    used = int(ends[-1]) if len(ends) else 0
    group = np.searchsorted(ends, np.arange(used), side="right")  # (used,) each member's group
    first = np.r_[0, ends[:-1]] if len(ends) else ends[:0]  # (G,) where each group starts
    members = perm[:used]
    fits = (_group_cumsum(src[members], first, group) <= max_len) & (
        _group_cumsum(tgt[members], first, group) <= max_len - 1)  # a prefix of each group (lengths >= 0)
    fits[first] = True  # a group's first example alone is as long as the data allows
    kept, kept_group = members[fits], group[fits]
    alone = np.concatenate([members[~fits], perm[used:]])  # examples trained on their own
    counts = np.bincount(kept_group, minlength=len(ends))  # (G,) >= 1 each
    spans = np.concatenate([counts, np.ones(len(alone), dtype=np.int64)])  # (n_items,)
    order = np.concatenate([kept, alone]).astype(np.int32 if n < (1 << 31) else np.int64)
    starts = np.r_[0, np.cumsum(spans)].astype(np.int64)
    heads = starts[:-1]
    joined_src = np.add.reduceat(src[order], heads) if n else src[:0]  # (n_items,)
    joined_tgt = np.add.reduceat(tgt[order], heads) if n else tgt[:0]
    return Joins(order, starts, np.maximum(joined_src, joined_tgt + 1).astype(np.int32))


def _group_cumsum(values: np.ndarray, first: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Running sums of ``values`` restarting at each group (groups back to back: ``first`` their
    starts, ``group`` each value's group)."""
    running = np.r_[0, np.cumsum(values)]  # (n + 1,)
    return running[1:] - running[first][group]


def join_rows(rows: Sequence[tuple], spans: Sequence[int]) -> list[tuple[list[int], list[int]]]:
    """Rows ``(src ids, tgt ids)`` back to back in items of ``spans`` examples, joined: each
    item's sources end to end, its targets end to end, in the same order."""
    out, at = [], 0
    for span in spans:
        if span == 1:
            out.append(rows[at])
        else:
            group = rows[at:at + span]
            out.append(([i for s, _ in group for i in s], [i for _, t in group for i in t]))
        at += span
    return out
