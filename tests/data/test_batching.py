"""Tests for attn_cli.data.batching: plans, padding, DDP splitting, collation, exact resume."""

from __future__ import annotations

import functools
import random

import pytest
import torch

from attn_cli.data.batching import (
    Batch,
    DataPosition,
    classify_lengths,
    collate_classify,
    collate_seq2seq,
    iterate_epoch,
    make_batches,
    padding_stats,
    seq2seq_lengths,
    shard_batches,
    split_batch_indices,
)

PAD, BOS, EOS = 0, 1, 2


def lognormal_lengths(n: int, seed: int = 0, lo: int = 5, hi: int = 60) -> list[int]:
    rng = random.Random(seed)
    return [min(hi, max(lo, round(rng.lognormvariate(3.0, 0.5)))) for _ in range(n)]


def seq2seq_examples(n: int, seed: int = 0) -> list[tuple[list[int], list[int]]]:
    """Pairs with correlated lengths, like translation: tgt length ~ src length +- 20%."""
    rng = random.Random(seed)
    out = []
    for length in lognormal_lengths(n, seed):
        t_len = max(1, round(length * rng.uniform(0.8, 1.2)))
        out.append(
            (
                [rng.randint(3, 99) for _ in range(length)],
                [rng.randint(3, 99) for _ in range(t_len)],
            )
        )
    return out


# ------------------------------------------------------------------------------- make_batches


@pytest.mark.parametrize("bucket_size", [None, 500])
@pytest.mark.parametrize("max_sentences", [None, 7])
def test_every_example_once_and_budget_kept(bucket_size, max_sentences):
    lengths = lognormal_lengths(2000) + [300, 0]  # one over-long example, one empty one
    plan = make_batches(
        lengths, 256, seed=3, epoch=1, max_sentences=max_sentences, bucket_size=bucket_size
    )
    flat = [i for b in plan for i in b]
    assert sorted(flat) == list(range(len(lengths)))
    for batch in plan:
        assert batch, "no empty batches"
        if max_sentences is not None:
            assert len(batch) <= max_sentences
        padded = len(batch) * max(lengths[i] for i in batch)
        assert padded <= 256 or len(batch) == 1
    assert [len(lengths) - 2] in plan  # the over-long example sits alone


def test_plan_deterministic_and_varies_by_epoch():
    lengths = lognormal_lengths(1000)
    a = make_batches(lengths, 512, seed=7, epoch=0)
    assert a == make_batches(lengths, 512, seed=7, epoch=0)
    assert a != make_batches(lengths, 512, seed=7, epoch=1)
    assert a != make_batches(lengths, 512, seed=8, epoch=0)
    # contents (not only order) vary: length ties are broken differently per epoch
    b = make_batches(lengths, 512, seed=7, epoch=1)
    assert sorted(map(sorted, a)) != sorted(map(sorted, b))


def test_no_shuffle_is_sorted_and_fixed():
    lengths = lognormal_lengths(300)
    a = make_batches(lengths, 128, seed=1, epoch=0, shuffle=False)
    assert a == make_batches(lengths, 128, seed=2, epoch=5, shuffle=False)
    flat = [lengths[i] for b in a for i in b]
    assert flat == sorted(flat)


def test_invalid_arguments_raise():
    with pytest.raises(ValueError):
        make_batches([3, 4], 0, seed=0, epoch=0)
    with pytest.raises(ValueError):
        make_batches([3, 4], 10, seed=0, epoch=0, max_sentences=0)
    assert make_batches([], 10, seed=0, epoch=0) == []


def test_padding_fraction_realistic(capsys):
    lengths = lognormal_lengths(5000, seed=11)
    plan = make_batches(lengths, 4096, seed=0, epoch=0)
    frac = padding_stats(plan, lengths)
    bucketed = padding_stats(
        make_batches(lengths, 4096, seed=0, epoch=0, bucket_size=2500), lengths
    )
    with capsys.disabled():
        print(f"\nplan pad fraction: global sort {frac:.4f}, bucket_size=2500 {bucketed:.4f}")
    assert frac < 0.10
    assert bucketed < 0.10


def test_padding_fraction_of_collated_seq2seq(capsys):
    examples = seq2seq_examples(5000, seed=5)
    lengths = seq2seq_lengths(examples)
    plan = make_batches(lengths, 4096, seed=0, epoch=0)
    real = slots = 0
    for _, batch in iterate_epoch(examples, plan, functools.partial(collate_seq2seq, **IDS)):
        assert batch.src.numel() <= 4096 and batch.tgt_out.numel() <= 4096
        real, slots = real + batch.n_real, slots + batch.n_slots
    frac = 1 - real / slots
    with capsys.disabled():
        print(f"collated seq2seq pad fraction (src+tgt slots): {frac:.4f}")
    assert frac < 0.12  # sorting by max(src, tgt+1) leaves the shorter side a bit padded


# ------------------------------------------------------------------------------- distributed


@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
def test_shard_batches_equal_and_disjoint(world_size):
    plan = make_batches(lognormal_lengths(700), 256, seed=0, epoch=0)
    shards = [shard_batches(plan, r, world_size) for r in range(world_size)]
    assert len({len(s) for s in shards}) == 1
    assert len(shards[0]) == len(plan) // world_size
    seen = [i for s in shards for b in s for i in b]
    assert len(seen) == len(set(seen))
    with pytest.raises(ValueError):
        shard_batches(plan, world_size, world_size)


@pytest.mark.parametrize("n", [0, 1, 5, 8, 13])
@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
def test_split_batch_indices_roundtrip(n, world_size):
    indices = random.Random(n).sample(range(100), n)
    parts = [split_batch_indices(indices, r, world_size) for r in range(world_size)]
    assert [i for p in parts for i in p] == indices
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1


def test_split_iteration_covers_single_process():
    examples = seq2seq_examples(200)
    plan = make_batches(seq2seq_lengths(examples), 200, seed=0, epoch=0)
    collate = functools.partial(collate_classify_ids, pad_id=PAD)
    single = [b.labels.tolist() for _, b in iterate_epoch(range(200), plan, collate)]
    ranks = [
        [
            b.labels.tolist()
            for _, b in iterate_epoch(range(200), plan, collate, rank=r, world_size=3)
        ]
        for r in range(3)
    ]
    assert all(len(r) == len(single) for r in ranks)
    for step, want in enumerate(single):
        assert [i for r in ranks for i in r[step]] == want


def collate_classify_ids(indices, pad_id):
    """Collate example indices as labels, to trace which examples each step saw."""
    return collate_classify([([5], i) for i in indices], pad_id)


# ------------------------------------------------------------------------------- collation

IDS = {"pad_id": PAD, "bos_id": BOS, "eos_id": EOS}


def test_collate_seq2seq_values():
    batch = collate_seq2seq([([5, 6, 7], [8, 9]), ([10], [11, 12, 13])], **IDS)
    assert batch.src.tolist() == [[5, 6, 7], [10, PAD, PAD]]
    assert batch.tgt_in.tolist() == [[BOS, 8, 9, PAD], [BOS, 11, 12, 13]]
    assert batch.tgt_out.tolist() == [[8, 9, EOS, PAD], [11, 12, 13, EOS]]
    assert batch.src.dtype == batch.tgt_in.dtype == batch.tgt_out.dtype == torch.long
    assert batch.labels is None
    assert (batch.n_examples, batch.n_tokens) == (2, 7)
    assert (batch.n_real, batch.n_slots) == (4 + 7, 2 * 3 + 2 * 4)
    assert batch.pad_fraction == pytest.approx(1 - 11 / 14)
    assert batch.src_mask.tolist() == [[True] * 3, [True, False, False]]
    # teacher forcing: the decoder input is the label sequence shifted right by one
    body = (batch.tgt_out[:, :-1] != PAD) & (batch.tgt_out[:, :-1] != EOS)
    assert torch.equal(batch.tgt_in[:, 1:][body], batch.tgt_out[:, :-1][body])


def test_collate_seq2seq_edge_cases():
    batch = collate_seq2seq([([], [])], **IDS)
    assert batch.src.shape == (1, 1) and batch.src.item() == PAD
    assert batch.tgt_in.tolist() == [[BOS]] and batch.tgt_out.tolist() == [[EOS]]
    empty = collate_seq2seq([], **IDS)  # a DDP rank's empty part of a tiny global batch
    assert empty.src.shape == (0, 1) and empty.tgt_in.shape == (0, 1)
    assert (empty.n_examples, empty.n_tokens, empty.pad_fraction) == (0, 0, 0.0)


def test_collate_classify_values():
    batch = collate_classify([([4, 5], 1), ([6, 7, 8, 9], 0), ([3], 2)], pad_id=PAD)
    assert batch.src.tolist() == [[4, 5, PAD, PAD], [6, 7, 8, 9], [3, PAD, PAD, PAD]]
    assert batch.labels.tolist() == [1, 0, 2] and batch.labels.shape == (3,)
    assert batch.tgt_in is None and batch.tgt_out is None
    assert (batch.n_examples, batch.n_tokens, batch.n_real, batch.n_slots) == (3, 7, 7, 12)
    assert classify_lengths([([4, 5], 1), ([6], 0)]) == [2, 1]
    assert collate_classify([], pad_id=PAD).src.shape == (0, 1)


def test_batch_to_device():
    batch = collate_seq2seq([([5, 6], [7])], **IDS)
    moved = batch.to("cpu", non_blocking=True)
    assert isinstance(moved, Batch)
    assert torch.equal(moved.tgt_out, batch.tgt_out) and moved.n_tokens == batch.n_tokens
    assert moved.labels is None


# ------------------------------------------------------------------------------- resume


def test_resume_mid_epoch_matches_uninterrupted():
    examples = seq2seq_examples(400, seed=2)
    lengths = seq2seq_lengths(examples)
    collate = functools.partial(collate_seq2seq, **IDS)
    plan = make_batches(lengths, 300, seed=4, epoch=2)
    full = list(iterate_epoch(examples, plan, collate))
    assert [p for p, _ in full] == list(range(len(plan)))
    p = len(plan) // 2
    state = DataPosition.from_dict(DataPosition(epoch=2, position=p).to_dict())
    resumed_plan = make_batches(lengths, 300, seed=4, epoch=state.epoch)  # rebuilt after restart
    resumed = list(iterate_epoch(examples, resumed_plan, collate, start=state.position))
    assert len(resumed) == len(full) - p
    for (pa, a), (pb, b) in zip(full[p:], resumed, strict=True):
        assert pa == pb
        assert torch.equal(a.src, b.src) and torch.equal(a.tgt_out, b.tgt_out)
    assert list(iterate_epoch(examples, plan, collate, start=len(plan))) == []
    with pytest.raises(ValueError):
        DataPosition(epoch=-1)
