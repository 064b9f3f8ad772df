"""Decoding for Seq2Seq models: pure functions ``model, src_ids, options -> ids, scores``.

They never change the model's train/eval mode: call ``model.eval()`` first for deterministic
output. ``decode(model, src_ids, DecodeConfig)`` is the entry point of the commands; it dispatches
to greedy search, beam search or sampling, and returns one list of token ids per sentence (no
BOS, no EOS) with its length-normalised log-probability.

Lengths: a hypothesis's length ``|Y|`` counts its generated tokens, EOS included, so with a limit
of ``max_len`` it holds at most ``max_len`` tokens (``max_len - 1`` plus EOS, or ``max_len``
without EOS when the limit cut it). Scores are ``log P(Y) / lp(Y)`` with the GNMT length
penalty ``lp(Y) = ((5 + |Y|) / 6) ** alpha``.

Beam search is built from pure parts that tests drive with hand-built log-probability tables:
``beam_step`` (one ``topk`` over beam x vocabulary) and ``run_beam_search`` (the search over any
``step_fn(tokens, index) -> logprobs``); ``beam_search`` plugs a cached Seq2Seq into them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from attn_cli.config import DecodeConfig, ModelConfig  # DecodeConfig lives in config (no torch)
from attn_cli.model.layers import sdpa_mask
from attn_cli.model.transformer import Seq2Seq

NEG_INF = float("-inf")

# step_fn(tokens (N, 1+t) BOS and the tokens so far, index (N,) the row of the previous call
# that each row continues) -> next-token log-probabilities (N, V). A stateful step function (a
# KV cache) reorders its state by ``index`` before computing.
StepFn = Callable[[Tensor, Tensor], Tensor]


# --------------------------------------------------------------------------- shared pieces


def next_token_logprobs(logits: Tensor, model: Seq2Seq, block_eos: bool) -> Tensor:
    """Log-probabilities (B, V) in float32 from logits (B, V), with the tokens that may never be
    generated (pad, bos; eos while ``block_eos``) set to -inf."""
    cfg = model.cfg
    logp = torch.log_softmax(logits.float(), dim=-1)  # (B, V)
    logp[:, cfg.pad_id] = NEG_INF
    logp[:, cfg.bos_id] = NEG_INF
    if block_eos:
        logp[:, cfg.eos_id] = NEG_INF
    return logp


def length_penalty(length: Tensor | int, alpha: float) -> Tensor:
    """GNMT length penalty ((5 + |Y|) / 6) ** alpha, float32 (1 everywhere when alpha = 0)."""
    return ((5.0 + torch.as_tensor(length, dtype=torch.float32)) / 6.0) ** alpha


def max_lengths(src_ids: Tensor, cfg: DecodeConfig, model_cfg: ModelConfig) -> Tensor:
    """Per-sentence output limits (B,) long: floor(a * real source length + b), in [1, max_len]."""
    src_len = (src_ids != model_cfg.pad_id).sum(dim=1).double()  # (B,)
    limit = torch.floor(cfg.max_len_a * src_len + cfg.max_len_b).long()  # (B,)
    return limit.clamp(1, model_cfg.max_len)


def ban_repeated_ngrams(logp: Tensor, hist: Tensor, n: int) -> Tensor:
    """logp (N, V) with -inf at every token that would complete an n-gram already present in
    the generated tokens hist (N, t). n = 0 (or too short a history) changes nothing."""
    t = hist.size(1)
    windows = t - n + 1  # earlier n-grams: hist[:, j:j+n] for j < windows
    if n <= 0 or windows <= 0:
        return logp
    follow = hist[:, n - 1:]  # (N, W) the last token of each earlier n-gram
    if n == 1:
        match = torch.ones_like(follow, dtype=torch.bool)  # (N, W)
    else:
        heads = hist.unfold(1, n - 1, 1)[:, :windows]  # (N, W, n-1)
        match = (heads == hist[:, None, t - n + 1:]).all(dim=-1)  # (N, W) head == our suffix
    hits = torch.zeros_like(logp).scatter_add_(1, follow, match.to(logp.dtype))  # (N, V)
    return logp.masked_fill(hits > 0, NEG_INF)


def to_lists(ids: Tensor, eos_id: int, pad_id: int) -> list[list[int]]:
    """(B, T) ids -> one list per row, cut at its first EOS, without pad."""
    out = []
    for row in ids.tolist():
        if eos_id in row:
            row = row[:row.index(eos_id)]
        out.append([i for i in row if i != pad_id])
    return out


# --------------------------------------------------------------------------- greedy and sampling


def _incremental_decode(model: Seq2Seq, src_ids: Tensor, max_lens: Tensor, min_len: int,
                        pick: Callable[[Tensor], Tensor],
                        no_repeat_ngram: int = 0) -> tuple[Tensor, Tensor]:
    """One token per row and step, chosen by ``pick(logp (B, V)) -> (B,)``, with the KV cache.

    Row i stops at its first EOS or after max_lens[i] tokens; later positions hold pad.
    Returns (ids (B, T), scores (B,) float32 sums of the chosen tokens' log-probabilities).
    """
    cfg = model.cfg
    b, device = src_ids.size(0), src_ids.device
    memory, src_mask = model.encode(src_ids)  # (B, S, D), (B, 1, 1, S)
    src_mask = sdpa_mask(src_mask)  # decided once (None without padding), not at every step
    cache = model.new_cache()
    inp = torch.full((b, 1), cfg.bos_id, dtype=torch.long, device=device)  # (B, 1)
    scores = torch.zeros(b, dtype=torch.float32, device=device)  # (B,)
    finished = torch.zeros(b, dtype=torch.bool, device=device)  # (B,)
    out: list[Tensor] = []
    for step in range(int(max_lens.max())):
        logits = model.decode(inp, memory, src_mask, cache, padded=src_mask is not None)[:, -1]  # (B, V)
        logp = next_token_logprobs(logits, model, block_eos=step < min_len)  # (B, V)
        if no_repeat_ngram and out:
            logp = ban_repeated_ngrams(logp, torch.stack(out, dim=1), no_repeat_ngram)
        tok = pick(logp)  # (B,)
        tok_logp = logp.gather(1, tok[:, None])[:, 0]  # (B,)
        tok = tok.masked_fill(finished, cfg.pad_id)
        scores += tok_logp.masked_fill(finished, 0.0)
        out.append(tok)
        finished |= (tok == cfg.eos_id) | (max_lens <= step + 1)
        if bool(finished.all()):
            break
        inp = tok[:, None]  # (B, 1)
    return torch.stack(out, dim=1), scores  # (B, T), (B,)


def _argmax(logp: Tensor) -> Tensor:
    return logp.max(dim=-1).indices  # (B,)


@torch.inference_mode()
def greedy_decode(model: Seq2Seq, src_ids: Tensor, max_len: int,
                  min_len: int = 0) -> tuple[Tensor, Tensor]:
    """Batched greedy search with the decoder's KV cache.

    src_ids (B, S) -> (ids (B, T) with T <= max_len, scores (B,) float32 sums of the chosen
    tokens' log-probabilities, EOS included). EOS is blocked for the first ``min_len`` tokens.
    ``max_len`` is capped at the model's ``max_len`` positions. Stops when every row has
    emitted EOS. Outputs exclude BOS; a row ends at its first EOS, and positions after it hold
    ``pad_id``; a row that reaches ``max_len`` without EOS is returned as is.
    """
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    max_len = min(max_len, model.cfg.max_len)
    max_lens = torch.full((src_ids.size(0),), max_len, device=src_ids.device)  # (B,)
    return _incremental_decode(model, src_ids, max_lens, min_len, _argmax)


def filter_logprobs(logp: Tensor, top_k: int = 0, top_p: float = 1.0,
                    temperature: float = 1.0) -> Tensor:
    """Sampling logits (N, V): logp / temperature, then -inf outside the top_k tokens (0 = all)
    and outside the nucleus (the fewest most likely tokens whose probability reaches top_p)."""
    x = logp / temperature  # (N, V)
    if 0 < top_k < x.size(-1):
        kth = x.topk(top_k, dim=-1).values[:, -1:]  # (N, 1)
        x = x.masked_fill(x < kth, NEG_INF)
    if top_p < 1.0:
        sorted_x, order = x.sort(dim=-1, descending=True)  # (N, V)
        probs = sorted_x.softmax(dim=-1)  # (N, V)
        outside = probs.cumsum(dim=-1) - probs >= top_p  # the mass before it already reaches p
        x = x.scatter(1, order, sorted_x.masked_fill(outside, NEG_INF))
    return x


@torch.inference_mode()
def sample_decode(model: Seq2Seq, src_ids: Tensor,
                  cfg: DecodeConfig) -> tuple[list[list[int]], Tensor]:
    """Batched sampling (temperature, top-k, top-p) with the KV cache and a generator seeded
    from ``cfg.seed``. Scores are the model's own log-probabilities of the sampled tokens
    (before temperature and filtering), divided by the length penalty."""
    gen = torch.Generator(device=src_ids.device).manual_seed(cfg.seed)

    def pick(logp: Tensor) -> Tensor:
        probs = filter_logprobs(logp, cfg.top_k, cfg.top_p, cfg.temperature).softmax(-1)
        return torch.multinomial(probs, 1, generator=gen)[:, 0]  # (B,)

    return _lists_and_scores(model, src_ids, cfg, pick)


def _lists_and_scores(model: Seq2Seq, src_ids: Tensor, cfg: DecodeConfig,
                      pick: Callable[[Tensor], Tensor]) -> tuple[list[list[int]], Tensor]:
    """Greedy or sampled decoding under ``cfg``'s limits, as lists and normalised scores."""
    mc = model.cfg
    max_lens = max_lengths(src_ids, cfg, mc)  # (B,)
    ids, raw = _incremental_decode(model, src_ids, max_lens, cfg.min_len, pick,
                                   cfg.no_repeat_ngram)  # (B, T), (B,)
    lengths = (ids != mc.pad_id).sum(dim=1)  # (B,) generated tokens, EOS included
    scores = raw / length_penalty(lengths, cfg.length_penalty).to(raw.device)
    return to_lists(ids, mc.eos_id, mc.pad_id), scores


# --------------------------------------------------------------------------- beam search


class BeamStep(NamedTuple):
    """What one beam-search step decided, per sentence (B) and beam (K)."""

    scores: Tensor  # (B, K) cumulative log-probs of the new live beams, best first
    beam: Tensor  # (B, K) the parent beam each live beam extends
    token: Tensor  # (B, K) the (non-EOS) token each live beam appends
    eos_scores: Tensor  # (B, K) log-probs of hypotheses ended by EOS now; -inf = none
    eos_beam: Tensor  # (B, K) the parent beam of each of those


def beam_step(scores: Tensor, logprobs: Tensor, eos_id: int) -> BeamStep:
    """One step over scores (B, K) of the live beams and their next-token logprobs (B, K, V).

    One ``topk`` over the flattened K x V continuations takes the 2K best (fairseq): an EOS
    among the first K ends a hypothesis, and the K best non-EOS ones stay live (there are at
    least K, since each beam has one EOS). Beams or continuations at -inf are dead.
    """
    b, k, v = logprobs.shape
    total = (scores[:, :, None] + logprobs).reshape(b, k * v)  # (B, K*V)
    n = min(2 * k, k * v)
    cand, flat = total.topk(n, dim=-1)  # (B, 2K), best first
    beam, tok = flat // v, flat % v  # (B, 2K)
    is_eos = tok == eos_id  # (B, 2K)
    ends = is_eos[:, :k] & torch.isfinite(cand[:, :k])  # (B, K)
    rank = torch.arange(n, device=scores.device)  # (2K,)
    live = (rank + is_eos * n).argsort(dim=-1)[:, :k]  # (B, K) non-EOS first, in rank order
    return BeamStep(cand.gather(1, live), beam.gather(1, live), tok.gather(1, live),
                    cand[:, :k].masked_fill(~ends, NEG_INF), beam[:, :k])


@dataclass
class _Best:
    """The best finished hypothesis of each sentence so far, vectorised over sentences."""

    score: Tensor  # (B,) its length-normalised log-prob; -inf = none yet
    tokens: Tensor  # (B, T) its tokens (no BOS/EOS), then filler
    length: Tensor  # (B,) how many of ``tokens`` are its own
    count: Tensor  # (B,) hypotheses that ended with EOS so far

    @classmethod
    def empty(cls, b: int, t: int, device: torch.device) -> _Best:
        zeros = torch.zeros(b, dtype=torch.long, device=device)
        return cls(torch.full((b,), NEG_INF, device=device),
                   torch.zeros(b, t, dtype=torch.long, device=device), zeros, zeros.clone())

    def offer(self, sent: Tensor, score: Tensor, tokens: Tensor) -> None:
        """Keep candidates score (A,) with tokens (A, t) of sentences sent (A,) that beat the
        best so far."""
        better = score > self.score[sent]  # (A,)
        idx = sent[better]
        self.score[idx] = score[better]
        self.tokens[idx, :tokens.size(1)] = tokens[better]
        self.length[idx] = tokens.size(1)

    def lists(self) -> list[list[int]]:
        return [row[:n] for row, n in zip(self.tokens.tolist(), self.length.tolist(), strict=True)]


def _constrain(logp: Tensor, hist: Tensor, step: int, cfg: DecodeConfig, eos_id: int) -> Tensor:
    """Apply min_len (no EOS before it) and n-gram blocking to logp (N, V); hist (N, t)."""
    if step < cfg.min_len:
        logp = logp.index_fill(1, torch.tensor([eos_id], device=logp.device), NEG_INF)
    return ban_repeated_ngrams(logp, hist, cfg.no_repeat_ngram)


@torch.inference_mode()
def run_beam_search(step_fn: StepFn, max_lens: Tensor, cfg: DecodeConfig, bos_id: int,
                    eos_id: int) -> tuple[list[list[int]], Tensor]:
    """Beam search of width K = cfg.beam for B sentences with limits max_lens (B,) at once.

    Rows are sentence-major: row a*K + j is beam j of the a-th sentence still searching, and
    ``step_fn(tokens (N, 1+t), index (N,))`` sees N = (sentences still searching) * K rows,
    continuing the rows ``index`` of its previous call (sentences that are done are dropped).
    A sentence is done when (a) K hypotheses have ended with EOS (fairseq's rule), or (b) its
    best finished score beats what any live beam could still reach (log P only falls and lp
    grows at most to lp(max_len), so a live beam is bounded by its log P / lp(max_len); this
    never changes the answer), or (c) it reaches its limit: then its live beams are finished.
    Returns (best tokens per sentence without BOS/EOS, their scores (B,) log P / lp(Y)).
    """
    b, k, alpha, device = max_lens.numel(), cfg.beam, cfg.length_penalty, max_lens.device
    best = _Best.empty(b, int(max_lens.max()), device)
    active = torch.arange(b, device=device)  # (A,) sentences still searching
    scores = torch.full((b, k), NEG_INF, device=device)  # (A, K)
    scores[:, 0] = 0.0  # only beam 0 is live at first: the K beams start identical
    tokens = torch.full((b * k, 1), bos_id, dtype=torch.long, device=device)  # (A*K, 1+t)
    index = torch.arange(b * k, device=device)  # (A*K,)
    for step in range(int(max_lens.max())):
        logp = _constrain(step_fn(tokens, index).float(), tokens[:, 1:], step, cfg, eos_id)
        st = beam_step(scores, logp.view(active.numel(), k, -1), eos_id)
        lp = length_penalty(step + 1, alpha).to(device)  # every candidate now has |Y| = step+1
        first = torch.arange(active.numel(), device=device)[:, None] * k  # (A, 1) rows of beam 0
        ended, j = (st.eos_scores / lp).max(dim=-1)  # (A,) the best hypothesis ended now
        best.count[active] += torch.isfinite(st.eos_scores).sum(dim=-1)
        best.offer(active, ended, tokens[first[:, 0] + st.eos_beam.gather(1, j[:, None])[:, 0], 1:])
        index = (first + st.beam).view(-1)  # (A*K,) parent rows
        tokens = torch.cat([tokens[index], st.token.view(-1, 1)], dim=1)  # (A*K, 2+t)
        scores = st.scores  # (A, K)
        at_max = max_lens[active] <= step + 1  # (A,)
        best.offer(active, torch.where(at_max, scores[:, 0] / lp, NEG_INF), tokens[first[:, 0], 1:])
        reach = scores[:, 0] / length_penalty(max_lens[active], alpha).to(device)  # (A,)
        done = at_max | (best.count[active] >= k) | (best.score[active] >= reach)  # (A,)
        if bool(done.all()):
            break
        if bool(done.any()):
            keep = (~done).repeat_interleave(k)  # (A*K,)
            active, scores, tokens, index = active[~done], scores[~done], tokens[keep], index[keep]
    return best.lists(), best.score


class _CachedStep:
    """A Seq2Seq step function over B*K rows with the decoder's KV cache."""

    def __init__(self, model: Seq2Seq, memory: Tensor, src_mask: Tensor | None) -> None:
        self.model, self.memory, self.src_mask = model, memory, src_mask
        self.cache = model.new_cache()

    def __call__(self, tokens: Tensor, index: Tensor) -> Tensor:
        if index.numel() != self.memory.size(0):  # sentences left: drop their rows everywhere
            self.memory = self.memory.index_select(0, index)  # (N, S, D)
            if self.src_mask is not None:
                self.src_mask = self.src_mask.index_select(0, index)  # (N, 1, 1, S)
            self.cache.reorder(index)
        else:  # a parent is in its child's sentence, whose cross-attention rows are all equal
            for c in self.cache.self_attn:
                c.reorder(index)
        logits = self.model.decode(tokens[:, -1:], self.memory, self.src_mask, self.cache,
                                   padded=self.src_mask is not None)
        return next_token_logprobs(logits[:, -1], self.model, block_eos=False)  # (N, V)


@torch.inference_mode()
def beam_search(model: Seq2Seq, src_ids: Tensor,
                cfg: DecodeConfig) -> tuple[list[list[int]], Tensor]:
    """Batched beam search: src_ids (B, S) -> (best tokens per sentence, scores (B,)).

    The source is encoded once and its memory expanded once to B*K rows; the KV cache follows
    the beams by index. Each sentence has its own limit (``max_lengths``).
    """
    memory, src_mask = model.encode(src_ids)  # (B, S, D), (B, 1, 1, S)
    memory = memory.repeat_interleave(cfg.beam, dim=0)  # (B*K, S, D)
    src_mask = sdpa_mask(src_mask)  # decided once (None without padding), not at every step
    if src_mask is not None:
        src_mask = src_mask.repeat_interleave(cfg.beam, dim=0)  # (B*K, 1, 1, S)
    step_fn = _CachedStep(model, memory, src_mask)
    max_lens = max_lengths(src_ids, cfg, model.cfg)  # (B,)
    return run_beam_search(step_fn, max_lens, cfg, model.cfg.bos_id, model.cfg.eos_id)


@torch.inference_mode()
def decode(model: Seq2Seq, src_ids: Tensor, cfg: DecodeConfig) -> tuple[list[list[int]], Tensor]:
    """src_ids (B, S) -> (token ids per sentence without BOS/EOS, scores (B,) log P / lp(Y)):
    sampling when ``cfg.sample``, beam search when ``cfg.beam > 1``, greedy search otherwise."""
    if src_ids.size(0) == 0:
        return [], torch.zeros(0, device=src_ids.device)
    if cfg.sample:
        return sample_decode(model, src_ids, cfg)
    if cfg.beam > 1:
        return beam_search(model, src_ids, cfg)
    return _lists_and_scores(model, src_ids, cfg, _argmax)
