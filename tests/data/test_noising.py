"""Pretraining noise: masked-LM rates and the 80/10/10 split, whole-word masking, BART text
infilling (coverage, span lengths, one mask per span), sentence permutation, special ids,
determinism from the seed and edge cases."""

import numpy as np
import pytest
import torch

from attn_cli.data.noising import (
    FIRST_PIECE,
    MASK_ID,
    NoiseConfig,
    denoise_pair,
    denoise_rows,
    mlm_mask,
    permute_sentences,
    sentence_ends,
    span_infill,
    word_starts,
)

V = 1000


class FakeTokenizer:
    """id -> piece for the vocabulary helpers."""

    def __init__(self, pieces):
        self.pieces = pieces
        self.vocab_size = len(pieces)

    def id_to_piece(self, i):
        return self.pieces[i]


def batch(seed=0, rows=64, width=200):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(FIRST_PIECE, V, (rows, width), generator=g)  # (B, S)
    ids[:, -20:] = 0  # padding
    ids[:, 0], ids[:, 50] = 2, 3  # bos, eos
    return ids


def test_mlm_rate_and_80_10_10_split():
    ids = batch()
    inputs, at = mlm_mask(ids, V, torch.Generator().manual_seed(1))
    ordinary = ids >= FIRST_PIECE
    assert at.sum() / ordinary.sum() == pytest.approx(0.15, abs=0.01)
    picked = inputs[at]
    assert (picked == MASK_ID).float().mean() == pytest.approx(0.8, abs=0.02)
    assert (picked == ids[at]).float().mean() == pytest.approx(0.1, abs=0.02)  # kept (or drawn itself)
    swapped = picked[(picked != MASK_ID) & (picked != ids[at])]
    assert len(swapped) / len(picked) == pytest.approx(0.1, abs=0.02)
    assert swapped.min() >= FIRST_PIECE and swapped.max() < V
    assert torch.equal(inputs[~at], ids[~at])  # nothing else changes


def test_mlm_never_touches_special_ids():
    ids = batch()
    inputs, at = mlm_mask(ids, V, torch.Generator().manual_seed(2), rate=1.0)
    special = ids < FIRST_PIECE
    assert not at[special].any() and torch.equal(inputs[special], ids[special])
    assert at[~special].all()


def test_mlm_same_seed_same_masks_other_seed_other_masks():
    ids = batch()
    a = mlm_mask(ids, V, torch.Generator().manual_seed(7))
    b = mlm_mask(ids, V, torch.Generator().manual_seed(7))
    c = mlm_mask(ids, V, torch.Generator().manual_seed(8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])


def test_whole_word_masking_keeps_words_together_at_the_rate():
    starts = np.random.default_rng(0).random(V) < 0.4  # (V,) which ids begin a word
    ids = batch(rows=128)
    inputs, at = mlm_mask(ids, V, torch.Generator().manual_seed(3), word_starts=starts)
    ordinary = ids >= FIRST_PIECE
    assert at.sum() / ordinary.sum() == pytest.approx(0.15, abs=0.015)
    begins = torch.as_tensor(starts)[ids] | ~ordinary  # (B, S)
    begins[:, 1:] |= ~ordinary[:, :-1]
    begins[:, 0] = True
    for row in range(ids.shape[0]):
        word = -1
        for s in range(ids.shape[1]):
            if not ordinary[row, s]:
                assert not at[row, s]
                continue
            if begins[row, s]:
                word = bool(at[row, s])
            assert bool(at[row, s]) == word  # every piece of a word as its first piece
    assert not torch.equal(at, mlm_mask(ids, V, torch.Generator().manual_seed(3))[1])


def test_vocabulary_helpers():
    tok = FakeTokenizer(["<pad>", "<unk>", "<s>", "</s>", "▁The", "re", "▁dog", ".", "▁ran", "!\"",
                         "<0x41>", "▁", "?)", "a"])
    assert word_starts(tok).tolist() == [False] * 4 + [True, False, True, False, True, False,
                                                       False, True, False, False]
    assert sentence_ends(tok).tolist() == [7, 9, 12]


def test_infill_covers_the_rate_with_poisson_spans_one_mask_each():
    rng = np.random.default_rng(0)
    n, covered, masks = 600, 0, 0
    for _ in range(200):
        ids = np.arange(FIRST_PIECE, FIRST_PIECE + n)  # distinct pieces: what is missing is covered
        out = span_infill(ids, rng)
        kept = out[out != MASK_ID]
        assert np.all(np.diff(kept) > 0)  # the uncovered pieces, in order
        covered += n - len(kept)
        masks += int((out == MASK_ID).sum())
    assert covered / (200 * n) == pytest.approx(0.3, abs=0.005)
    assert covered / masks == pytest.approx(3.0, abs=0.15)  # mean span (0-length spans included)


def test_infill_replaces_each_span_by_one_mask():
    ids = np.arange(FIRST_PIECE, FIRST_PIECE + 40)
    out = span_infill(ids, np.random.default_rng(5), rate=0.5, mean_span=4.0)
    # walk the output against the input: a mask stands for a (possibly empty) run of pieces
    pos = 0
    for tok in out:
        if tok == MASK_ID:
            continue
        skipped = np.flatnonzero(ids[pos:] == tok)[0]
        pos += skipped + 1
    assert (out == MASK_ID).sum() >= 1 and len(out) < len(ids)


def test_infill_never_covers_special_ids():
    rng = np.random.default_rng(1)
    ids = np.arange(FIRST_PIECE, FIRST_PIECE + 100)
    ids[[0, 10, 11, 50, 99]] = [2, 0, 3, 1, 3]
    for _ in range(50):
        out = span_infill(ids, rng, rate=0.9)
        specials = out[(out < FIRST_PIECE) & (out != MASK_ID)]
        assert specials.tolist() == [2, 0, 3, 3]  # unk is the mask id: counted apart
        assert (out == MASK_ID).sum() >= 1 + 1  # the data's own unk, plus at least one span


def test_infill_edge_cases_and_length_bound():
    rng = np.random.default_rng(2)
    assert span_infill([], rng).tolist() == []
    assert span_infill([0, 1, 2, 3], rng).tolist() == [0, 1, 2, 3]  # all specials
    for length in range(1, 8):
        for _ in range(300):
            ids = np.arange(FIRST_PIECE, FIRST_PIECE + length)
            out = span_infill(ids, rng)
            assert 1 <= len(out) <= length + 1
    assert span_infill([9, 9], rng, rate=0.0).tolist() == [9, 9]


def test_infill_same_seed_same_output():
    ids = np.arange(FIRST_PIECE, 300)
    a = span_infill(ids, np.random.default_rng(11))
    assert np.array_equal(a, span_infill(ids, np.random.default_rng(11)))
    assert not np.array_equal(a, span_infill(ids, np.random.default_rng(12)))


def test_permute_sentences_moves_whole_sentences():
    ends = [7, 9]
    ids = [10, 11, 7, 12, 9, 13, 14, 15, 7, 16]  # three sentences and a tail without an end
    sentences = {(10, 11, 7), (12, 9), (13, 14, 15, 7), (16,)}
    orders = set()
    for seed in range(30):
        out = permute_sentences(ids, np.random.default_rng(seed), ends).tolist()
        assert sorted(out) == sorted(ids)
        parts, cur = [], []
        for t in out:
            cur.append(t)
            if t in ends:
                parts.append(tuple(cur))
                cur = []
        parts += [tuple(cur)] if cur else []
        assert set(parts) <= sentences | {(16, 10, 11, 7), (16, 12, 9), (16, 13, 14, 15, 7)}
        orders.add(tuple(out))
    assert len(orders) > 5
    assert permute_sentences([], np.random.default_rng(0), ends).tolist() == []
    assert permute_sentences([5, 6], np.random.default_rng(0), ends).tolist() == [5, 6]


def test_denoise_pair_and_rows():
    ids = list(range(FIRST_PIECE, 60))
    src, tgt = denoise_pair(ids, np.random.default_rng(0))
    assert tgt == ids and MASK_ID in src and len(src) <= len(ids) + 1
    assert isinstance(src[0], int) and isinstance(tgt[0], int)
    cfg = NoiseConfig(permute=True)
    with pytest.raises(ValueError, match="sentence-end"):
        denoise_pair(ids, np.random.default_rng(0), cfg)
    pairs = denoise_rows([ids, ids[:3], []], np.random.default_rng(4), cfg, ends=np.array([10, 20]))
    assert [t for _, t in pairs] == [ids, ids[:3], []] and pairs[2][0] == []
    again = denoise_rows([ids, ids[:3], []], np.random.default_rng(4), cfg, ends=[10, 20])
    assert pairs == again


def test_noise_config_checks():
    assert NoiseConfig().mlm_rate == 0.15 and NoiseConfig().infill_rate == 0.3
    for bad in ({"mlm_rate": 1.5}, {"mlm_mask": 0.95, "mlm_random": 0.1}, {"mean_span": 0.0}):
        with pytest.raises(ValueError):
            NoiseConfig(**bad)
