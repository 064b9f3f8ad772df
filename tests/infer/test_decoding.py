"""Tests for decoding: beam search on hand-built log-probability tables and against brute
force, and greedy / beam / sampling on tiny random Seq2Seq models (CPU)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from attn_cli.config import model_config_from_preset
from attn_cli.infer.decoding import (
    DecodeConfig,
    ban_repeated_ngrams,
    beam_search,
    beam_step,
    decode,
    filter_logprobs,
    greedy_decode,
    length_penalty,
    max_lengths,
    next_token_logprobs,
    run_beam_search,
    sample_decode,
    to_lists,
)
from attn_cli.model.transformer import Seq2Seq

NEG_INF = float("-inf")

# --------------------------------------------------------------------------- toy step functions

# toy vocabulary for the hand-built tables
PAD, UNK, BOS, EOS, A, B, C = range(7)
TOY_V = 7


def logp_row(probs: dict[int, float]) -> torch.Tensor:
    """(V,) log-probabilities: log p for the listed tokens, -inf for the others."""
    row = torch.full((TOY_V,), NEG_INF)
    for tok, p in probs.items():
        row[tok] = math.log(p)
    return row


class TableStep:
    """A step function with a fixed next-token distribution per (sentence, prefix).

    It follows the search's rows through ``index`` the way a KV cache does, which also checks
    the row bookkeeping (reordering, dropped sentences)."""

    def __init__(self, logp_fn, n_sent: int, k: int) -> None:
        self.logp_fn = logp_fn  # (sentence, prefix tuple) -> (V,) log-probs
        self.sent = torch.arange(n_sent).repeat_interleave(k)  # (N,) sentence of each row
        self.calls = 0

    def __call__(self, tokens: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        self.sent = self.sent[index]
        self.calls += 1
        return torch.stack([self.logp_fn(int(s), tuple(row[1:].tolist()))
                            for s, row in zip(self.sent, tokens, strict=True)])


def table_fn(table: dict[tuple, dict[int, float]], default: dict[int, float]):
    return lambda sent, prefix: logp_row(table.get(prefix, default))


def toy_search(logp_fn, max_lens: list[int], **kw):
    cfg = DecodeConfig(**{"length_penalty": 0.0, **kw})
    step = TableStep(logp_fn, len(max_lens), cfg.beam)
    return run_beam_search(step, torch.tensor(max_lens), cfg, BOS, EOS)


def table_greedy(logp_fn, max_len: int) -> tuple[list[int], float]:
    """Greedy search on a table, written out: argmax until EOS or max_len."""
    out, total = [], 0.0
    for _ in range(max_len):
        row = logp_fn(0, tuple(out))
        tok = int(row.argmax())
        total += float(row[tok])
        if tok == EOS:
            break
        out.append(tok)
    return out, total


# greedy takes a (0.4) and ends with a a (0.4 * 0.5 * 0.4 = 0.08); beam 2 keeps b (0.33) and
# finds b EOS (0.33 * 0.55 = 0.1815); only beam 3 keeps c (0.27) and finds c EOS (0.2565),
# the best sequence of all (every other prefix is already below 0.2565 after two tokens).
TABLE = {
    (): {A: 0.4, B: 0.33, C: 0.27},
    (A,): {A: 0.5, B: 0.3, EOS: 0.1, C: 0.1},
    (B,): {EOS: 0.55, A: 0.25, B: 0.1, C: 0.1},
    (C,): {EOS: 0.95, A: 0.03, B: 0.02},
}
DEFAULT = {EOS: 0.4, A: 0.3, B: 0.2, C: 0.1}


def test_greedy_is_not_optimal_and_beam_finds_the_best():
    fn = table_fn(TABLE, DEFAULT)
    assert table_greedy(fn, 10) == ([A, A], pytest.approx(math.log(0.08)))
    expected = {1: ([A, A], 0.08), 2: ([B], 0.33 * 0.55), 3: ([C], 0.27 * 0.95),
                5: ([C], 0.27 * 0.95)}
    for k, (tokens, p) in expected.items():
        hyps, scores = toy_search(fn, [10], beam=k)
        assert hyps == [tokens], k
        assert scores.tolist() == pytest.approx([math.log(p)], abs=1e-6), k


def test_beam_step_on_a_hand_table():
    # two sentences, K = 2; vocab [pad, unk, bos, eos, a, b, c]
    scores = torch.tensor([[-1.0, -2.0], [0.0, NEG_INF]])
    logp = torch.full((2, 2, TOY_V), NEG_INF)
    logp[0, 0, [EOS, A, B]] = torch.tensor([-0.1, -0.5, -3.0])  # beam 0: eos -1.1, a -1.5
    logp[0, 1, [EOS, A, C]] = torch.tensor([-0.2, -0.3, -2.0])  # beam 1: eos -2.2, a -2.3
    logp[1, 0, [EOS, B, C]] = torch.tensor([-0.5, -1.0, -2.0])  # beam 1 of sentence 2 is dead
    st = beam_step(scores, logp, EOS)
    # sentence 1: ranks eos(-1.1) a(-1.5) eos(-2.2) a(-2.3): only the first EOS is in the top K
    assert st.eos_scores[0].tolist() == pytest.approx([-1.1, NEG_INF])
    assert st.eos_beam[0, 0] == 0
    assert st.scores[0].tolist() == pytest.approx([-1.5, -2.3])
    assert st.beam[0].tolist() == [0, 1] and st.token[0].tolist() == [A, A]
    # sentence 2: eos(-0.5) ends, b and c live; the dead beam contributes nothing
    assert st.eos_scores[1].tolist() == pytest.approx([-0.5, NEG_INF])
    assert st.scores[1].tolist() == pytest.approx([-1.0, -2.0])
    assert st.token[1].tolist() == [B, C] and st.beam[1].tolist() == [0, 0]


# a a EOS has the higher log-prob (0.55 * 0.9 = 0.495 against 0.45 * 0.99^3 = 0.4366), but
# b b b EOS is longer: with alpha = 1 it wins (-0.8287 / 1.5 > -0.7032 / (7/6)).
LP_TABLE = {
    (): {A: 0.55, B: 0.45},
    (A,): {EOS: 0.9},
    (B,): {B: 0.99},
    (B, B): {B: 0.99},
    (B, B, B): {EOS: 0.99},
}


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_length_penalty_changes_the_winner(alpha):
    hyps, scores = toy_search(table_fn(LP_TABLE, {EOS: 1.0}), [10], beam=2,
                              length_penalty=alpha)
    short, long_ = math.log(0.55 * 0.9), math.log(0.45 * 0.99**3)
    assert short > long_ and short / (7 / 6) < long_ / (9 / 6)
    if alpha == 0.0:
        assert hyps == [[A]] and scores.item() == pytest.approx(short, abs=1e-6)
    else:
        assert hyps == [[B, B, B]] and scores.item() == pytest.approx(long_ / 1.5, abs=1e-6)
    assert length_penalty(torch.tensor([1, 7]), 1.0).tolist() == pytest.approx([1.0, 2.0])


def random_table(seed: int):
    """A toy with vocab [eos, bos, x, y, z]: a fixed random distribution per (sentence, prefix)."""
    memo: dict[tuple, torch.Tensor] = {}

    def fn(sent: int, prefix: tuple) -> torch.Tensor:
        key = (seed, sent, *prefix)
        if key not in memo:
            gen = torch.Generator().manual_seed(hash(key) % 2**31)
            logits = torch.randn(5, generator=gen) * 1.5
            logits[1] = NEG_INF  # bos is never generated
            memo[key] = torch.log_softmax(logits, dim=-1)
        return memo[key]

    return fn


def brute_force(fn, sent: int, max_len: int, alpha: float) -> tuple[list[int], float]:
    """The best of all hypotheses: up to max_len-1 tokens + EOS, or max_len tokens."""
    best: tuple[list[int], float] = ([], NEG_INF)
    for n in range(max_len + 1):
        for seq in itertools.product([2, 3, 4], repeat=n):
            raw = sum(float(fn(sent, seq[:i])[tok]) for i, tok in enumerate(seq))
            if n < max_len:
                raw, length = raw + float(fn(sent, seq)[0]), n + 1
            elif n == max_len:
                length = n
            score = raw / ((5 + length) / 6) ** alpha
            if score > best[1]:
                best = (list(seq), score)
    return best


@pytest.mark.parametrize("alpha", [0.0, 0.6, 2.0])
def test_wide_beam_equals_brute_force_with_per_sentence_limits(alpha):
    fn = random_table(seed=int(alpha * 10))
    limits = [3, 4, 1]
    cfg = DecodeConfig(beam=108, length_penalty=alpha)  # >= every candidate: nothing is pruned
    hyps, scores = run_beam_search(TableStep(fn, 3, 108), torch.tensor(limits), cfg, 1, 0)
    for sent, limit in enumerate(limits):
        tokens, score = brute_force(fn, sent, limit, alpha)
        assert hyps[sent] == tokens
        assert scores[sent].item() == pytest.approx(score, abs=1e-5)


def test_early_stop_when_no_live_beam_can_win():
    # alpha = 0: c EOS (0.2565) is found at step 2 and beats every live beam: stop there
    step = TableStep(table_fn(TABLE, DEFAULT), 1, 3)
    run_beam_search(step, torch.tensor([50]), DecodeConfig(beam=3, length_penalty=0.0), BOS, EOS)
    assert step.calls == 2


# --------------------------------------------------------------------------- tiny models

V = 50
M_EOS, M_PAD, M_BOS = 3, 0, 2


class EosRamp(Seq2Seq):
    """A random Seq2Seq whose EOS logit grows by ``ramp`` per target position."""

    ramp: float = 0.0

    def decode(self, tgt_in_ids, memory, src_mask, cache=None, padded=None):
        offset = cache.length if cache is not None else 0
        logits = super().decode(tgt_in_ids, memory, src_mask, cache, padded)  # (B, T, V)
        pos = offset + torch.arange(tgt_in_ids.size(1), device=logits.device)  # (T,)
        logits[..., self.cfg.eos_id] += self.ramp * pos.to(logits.dtype)
        return logits


def tiny_model(ramp: float = 0.0, seed: int = 0) -> EosRamp:
    torch.manual_seed(seed)
    model = EosRamp(model_config_from_preset("tiny", "translate", vocab_size=V, dropout=0.0))
    model.ramp = ramp
    return model.double().eval()


def sources(lengths: list[int], seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    src = torch.randint(4, V, (len(lengths), max(lengths)), generator=gen)
    for i, n in enumerate(lengths):
        src[i, n:] = M_PAD
    return src


def test_beam_one_equals_greedy():
    model, src = tiny_model(ramp=0.4), sources([7, 5, 7, 3])
    cfg = DecodeConfig(beam=1, length_penalty=0.0, max_len_a=0.0, max_len_b=12)
    ids, raw = greedy_decode(model, src, max_len=12)
    hyps, scores = beam_search(model, src, cfg)
    assert hyps == to_lists(ids, M_EOS, M_PAD)
    torch.testing.assert_close(scores, raw, atol=1e-5, rtol=0)
    assert len({len(h) for h in hyps}) > 1 and min(len(h) for h in hyps) < 12  # EOS varies
    for alpha in (0.0, 0.6):  # decode's greedy path scores like a beam of 1
        cfg = DecodeConfig(length_penalty=alpha, max_len_a=1.0, max_len_b=4, no_repeat_ngram=2)
        g_hyps, g_scores = decode(model, src, cfg)
        b_hyps, b_scores = beam_search(model, src, cfg)
        assert g_hyps == b_hyps
        torch.testing.assert_close(g_scores, b_scores, atol=1e-5, rtol=0)


def test_batched_beam_equals_one_sentence_at_a_time():
    model = tiny_model(ramp=0.3)
    lengths = [7, 4, 2, 6]
    src = sources(lengths, seed=1)
    cfg = DecodeConfig(beam=3, max_len_a=1.0, max_len_b=3)  # limits 10, 7, 5, 9
    assert max_lengths(src, cfg, model.cfg).tolist() == [10, 7, 5, 9]
    hyps, scores = beam_search(model, src, cfg)
    for i, n in enumerate(lengths):
        alone, alone_score = beam_search(model, src[i:i + 1, :n], cfg)
        assert alone == [hyps[i]]
        torch.testing.assert_close(alone_score, scores[i:i + 1], atol=1e-5, rtol=0)
        assert len(hyps[i]) <= max_lengths(src, cfg, model.cfg)[i]


class NoCacheStep:
    """Reference step function: recompute the whole prefix at every step, no KV cache."""

    def __init__(self, model: Seq2Seq, memory: torch.Tensor, src_mask: torch.Tensor) -> None:
        self.model, self.memory, self.src_mask = model, memory, src_mask

    def __call__(self, tokens: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        self.memory, self.src_mask = self.memory[index], self.src_mask[index]
        logits = self.model.decode(tokens, self.memory, self.src_mask)[:, -1]  # (N, V)
        return next_token_logprobs(logits, self.model, block_eos=False)


@pytest.mark.parametrize("kw", [dict(beam=4), dict(beam=3, no_repeat_ngram=2, min_len=3)])
def test_cached_beam_equals_recompute_everything(kw):
    model, src = tiny_model(ramp=0.35), sources([6, 3, 5], seed=2)
    cfg = DecodeConfig(max_len_a=1.0, max_len_b=2, **kw)
    hyps, scores = beam_search(model, src, cfg)
    with torch.no_grad():
        memory, src_mask = model.encode(src)
        step = NoCacheStep(model, memory.repeat_interleave(cfg.beam, 0),
                           src_mask.repeat_interleave(cfg.beam, 0))
        ref_hyps, ref_scores = run_beam_search(step, max_lengths(src, cfg, model.cfg), cfg,
                                               M_BOS, M_EOS)
    assert hyps == ref_hyps
    torch.testing.assert_close(scores, ref_scores, atol=1e-5, rtol=0)


def ngrams(seq: list[int], n: int) -> list[tuple[int, ...]]:
    return [tuple(seq[i:i + n]) for i in range(len(seq) - n + 1)]


def test_ban_repeated_ngrams_on_a_hand_history():
    hist = torch.tensor([[5, 6, 7, 5, 6], [5, 6, 5, 0, 0]])
    logp = torch.zeros(2, 10)
    banned = [set(torch.isinf(row).nonzero()[:, 0].tolist())
              for row in ban_repeated_ngrams(logp, hist, 3)]
    assert banned == [{7}, set()]  # (5, 6) was followed by 7; (0, 0) is new
    banned2 = ban_repeated_ngrams(logp, hist[:, :3], 2)  # suffixes 7 and 5
    assert torch.isinf(banned2[0]).sum() == 0 and banned2[1, 6] == NEG_INF
    assert torch.isinf(ban_repeated_ngrams(logp, hist[:1], 1)[0]).nonzero()[:, 0].tolist() == [5, 6, 7]
    assert torch.equal(ban_repeated_ngrams(logp, hist, 0), logp)


@pytest.mark.parametrize("n", [2, 3])
def test_no_repeat_ngram(n):
    model, src = tiny_model(), sources([6, 6, 4], seed=3)
    base = dict(max_len_a=0.0, max_len_b=25, no_repeat_ngram=n)
    repeats_without = any(len(set(ngrams(h, n))) < len(ngrams(h, n))
                          for h in decode(model, src, DecodeConfig(max_len_a=0.0, max_len_b=25))[0])
    assert repeats_without  # the random model does loop when nothing stops it
    for kw in (dict(), dict(beam=3), dict(sample=True, seed=4)):
        for h in decode(model, src, DecodeConfig(**base, **kw))[0]:
            assert len(h) > 10 and len(set(ngrams(h, n))) == len(ngrams(h, n)), kw


def test_min_len():
    model, src = tiny_model(ramp=3.0), sources([5, 3, 6], seed=5)  # EOS wins from position 2
    free = decode(model, src, DecodeConfig(beam=3))[0]
    assert min(len(h) for h in free) < 5
    for kw in (dict(), dict(beam=3), dict(sample=True)):
        hyps = decode(model, src, DecodeConfig(min_len=5, **kw))[0]
        assert min(len(h) for h in hyps) >= 5, kw
        capped = decode(model, src, DecodeConfig(min_len=10, max_len_a=0.0, max_len_b=6, **kw))[0]
        assert [len(h) for h in capped] == [6, 6, 6], kw


# --------------------------------------------------------------------------- sampling


def test_filter_logprobs():
    logp = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    torch.testing.assert_close(filter_logprobs(logp, top_k=2).softmax(-1),
                               torch.tensor([[0.625, 0.375, 0.0, 0.0]]))
    torch.testing.assert_close(filter_logprobs(logp, top_p=0.75).softmax(-1),
                               torch.tensor([[0.625, 0.375, 0.0, 0.0]]))
    torch.testing.assert_close(filter_logprobs(logp, top_p=0.45).softmax(-1),
                               torch.tensor([[1.0, 0.0, 0.0, 0.0]]))
    root = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).sqrt()
    torch.testing.assert_close(filter_logprobs(logp, temperature=2.0).softmax(-1),
                               root / root.sum())
    shuffled = logp[:, [2, 0, 3, 1]]  # the nucleus does not depend on the order of the vocab
    assert torch.isfinite(filter_logprobs(shuffled, top_p=0.75)).tolist() == [
        [False, True, False, True]]


def test_sampling_is_seeded_and_top_k_one_is_greedy():
    model, src = tiny_model(ramp=0.4), sources([6, 4, 5, 6], seed=6)
    cfg = DecodeConfig(sample=True, seed=7, max_len_a=0.0, max_len_b=10)
    first, s1 = sample_decode(model, src, cfg)
    again, s2 = decode(model, src, cfg)
    other, _ = decode(model, src, DecodeConfig(sample=True, seed=8, max_len_a=0.0, max_len_b=10))
    assert first == again and torch.equal(s1, s2) and other != first
    greedy, g_scores = decode(model, src, DecodeConfig(max_len_a=0.0, max_len_b=10))
    assert first != greedy
    for kw in (dict(top_k=1), dict(top_p=1e-6), dict(top_k=5, temperature=1e-4)):
        hyps, scores = decode(model, src, DecodeConfig(sample=True, seed=9, max_len_a=0.0,
                                                       max_len_b=10, **kw))
        assert hyps == greedy, kw
        torch.testing.assert_close(scores, g_scores, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "kw, field",
    [
        (dict(beam=0), "beam"),
        (dict(beam="4"), "beam"),
        (dict(temperature=0.0), "temperature"),
        (dict(top_p=0.0), "top_p"),
        (dict(top_p=1.5), "top_p"),
        (dict(top_k=-1), "top_k"),
        (dict(min_len=-1), "min_len"),
        (dict(no_repeat_ngram=-2), "no_repeat_ngram"),
        (dict(length_penalty=-0.5), "length_penalty"),
        (dict(max_len_a=-1.0), "max_len_a"),
        (dict(max_len_b=-1), "max_len_b"),
        (dict(sample=True, beam=3), "sample"),
    ],
)
def test_decode_config_validation(kw, field):
    with pytest.raises(ValueError, match=field):
        DecodeConfig(**kw)
    assert isinstance(DecodeConfig(max_len_a=1, top_p=1).max_len_a, float)  # ints accepted
