"""--concat: the joined-example plan (shares, lengths, order, seeding, --max-len), the feed that
trains on it (resume-exact, validation never joined), --stream, and the option's bad values."""

import json

import numpy as np
import pytest
import torch
from conftest import DATA_DIR, Quiet, assert_same_weights
from typer.testing import CliRunner

from attn_cli.cli.main import app
from attn_cli.config import TrainConfig
from attn_cli.data.joining import SIZES, join_rows, joined_pairs, plan_joins
from attn_cli.data.spec import Fields
from attn_cli.data.store import InMemoryExamples
from attn_cli.train import distributed as dd
from attn_cli.train.feed import BatchFeed
from attn_cli.train.setup import RunRequest, train_run

IT_EN = f"{DATA_DIR}/translate.it-en.jsonl"
FIELDS = Fields(src_lang="it", tgt_lang="en")


def lengths(n, seed=0, high=30):
    rng = np.random.default_rng(seed)
    return rng.integers(1, high, n), rng.integers(1, high, n)


def items_of(joins):
    return [joins.members[a:b].tolist() for a, b in zip(joins.starts[:-1], joins.starts[1:], strict=True)]


@pytest.mark.parametrize("share", [0.1, 0.5, 0.9])
def test_about_the_share_of_items_is_joined_and_every_pair_once(share):
    src, tgt = lengths(20_000)
    joins = plan_joins(src, tgt, share, max_len=10_000, seed=1, epoch=0)
    items = items_of(joins)
    assert sorted(i for item in items for i in item) == list(range(20_000))  # each pair once an epoch
    assert {len(item) for item in items} == {1, *SIZES}
    assert joins.joined / len(joins) == pytest.approx(share, abs=0.02)
    in_groups = sum(len(item) for item in items if len(item) > 1)
    assert joined_pairs(20_000, share) - 2 <= in_groups <= joined_pairs(20_000, share)  # a short tail trains alone
    off = plan_joins(src, tgt, 0.0, max_len=10_000, seed=1, epoch=0)
    assert len(off) == 20_000 and off.joined == 0
    assert (np.sort(off.lengths) == np.sort(np.maximum(src, tgt + 1))).all()


def test_item_lengths_and_max_len_hold():
    src, tgt = lengths(3_000, high=60)
    joins = plan_joins(src, tgt, 0.8, max_len=64, seed=2, epoch=3)
    split_off = 0
    for item, cost in zip(items_of(joins), joins.lengths.tolist(), strict=True):
        s, t = int(src[item].sum()), int(tgt[item].sum())
        assert cost == max(s, t + 1)
        if len(item) > 1:
            assert s <= 64 and t <= 63
        split_off += len(item) == 1
    assert joins.joined / len(joins) < 0.8  # groups that would pass 64 left some pairs alone
    assert split_off > 0


def test_joining_is_seeded_by_seed_and_epoch():
    src, tgt = lengths(500)
    a = plan_joins(src, tgt, 0.5, 256, seed=4, epoch=2)
    b = plan_joins(src, tgt, 0.5, 256, seed=4, epoch=2)
    assert items_of(a) == items_of(b)
    assert items_of(plan_joins(src, tgt, 0.5, 256, seed=4, epoch=3)) != items_of(a)
    assert items_of(plan_joins(src, tgt, 0.5, 256, seed=5, epoch=2)) != items_of(a)


def test_tiny_inputs():
    assert len(plan_joins(np.array([], int), np.array([], int), 0.5, 64, seed=1, epoch=0)) == 0
    one = plan_joins(np.array([3]), np.array([4]), 1.0, 64, seed=1, epoch=0)
    assert items_of(one) == [[0]] and one.lengths.tolist() == [5]


def test_join_rows_keeps_the_order_on_both_sides():
    rows = [([1, 2], [10]), ([3], [11, 12]), ([4], [13]), ([5, 6], [14])]
    assert join_rows(rows, [3, 1]) == [([1, 2, 3, 4], [10, 11, 12, 13]), ([5, 6], [14])]


def feed(examples, concat, max_len=256, max_tokens=200, world=(0, 1)):
    cfg = TrainConfig(task="translate", max_tokens=max_tokens, concat=concat, max_len=max_len, seed=3)
    dist = dd.Dist(rank=world[0], world_size=world[1], local_rank=world[0]) if world[1] > 1 else dd.Dist()
    collate = type("Unit", (), {"collate": staticmethod(lambda rows, draw: rows)})()
    return BatchFeed(InMemoryExamples(examples, True), True, cfg, collate, dist, torch.device("cpu"))


def toy_examples(n=300):
    """Example k has source [k, k] and target [k] (so joined rows show their members)."""
    return [([k, k], [k]) for k in range(1, n + 1)]


def epoch_rows(f, start):
    return [(after.to_dict(), rows) for after, _, (rows, _w) in f.epoch(start)]


def test_the_feed_trains_on_joined_items_and_resumes_exactly():
    from attn_cli.data.batching import DataPosition

    examples = toy_examples()
    f = feed(examples, concat=0.5)
    full = epoch_rows(f, DataPosition(epoch=1))
    seen = [row for _, rows in full for row in rows]
    joined = [row for row in seen if len(row[1]) > 1]
    assert 0.4 < len(joined) / len(seen) < 0.6
    for src, tgt in joined:  # the sources and targets of the same pairs, in the same order
        assert src == [k for k in tgt for _ in (0, 1)]
    assert sorted(k for _, tgt in seen for k in tgt) == list(range(1, 301))
    rest = epoch_rows(f, DataPosition(epoch=1, position=5))
    assert rest == full[5:]
    assert epoch_rows(feed(examples, concat=0.5), DataPosition(epoch=1)) == full  # a new process agrees
    assert all(len(row[1]) == 1 for _, rows in epoch_rows(feed(examples, concat=0.0), DataPosition()) for row in rows)


def test_ranks_split_the_same_joined_batches():
    from attn_cli.data.batching import DataPosition

    examples = toy_examples(120)
    one = [rows for _, rows in epoch_rows(feed(examples, 0.7), DataPosition())]
    parts = [[rows for _, rows in epoch_rows(feed(examples, 0.7, world=(r, 2)), DataPosition())] for r in (0, 1)]
    for k, rows in enumerate(one):
        if len(rows) > 1:
            assert parts[0][k] + parts[1][k] == rows


def train(out, resume=False, **kw):
    cfg = TrainConfig(**{**dict(task="translate", preset="tiny", max_tokens=300, eval_every=1000, eval_samples=3,
                                vocab_size=500, warmup=5, log_every=1, schedule="inverse_sqrt"), **kw})
    return train_run(RunRequest(data=IT_EN, out=out, fields=FIELDS, resume=resume), cfg, Quiet())


def test_a_concat_run_resumes_to_the_same_weights_across_epochs(tmp_path):
    kw = dict(concat=1.0, max_tokens=2000)  # about 10 steps an epoch
    train(tmp_path / "full", max_steps=16, **kw)
    train(tmp_path / "half", max_steps=7, **kw)
    train(tmp_path / "half", resume=True, max_steps=16, **kw)
    assert_same_weights(tmp_path / "full", tmp_path / "half")
    state = json.loads((tmp_path / "full/last/state.json").read_text())
    assert state["data"]["epoch"] >= 1, state
    meta = json.loads((tmp_path / "full/config.json").read_text())
    assert meta["data"]["concat"] == 1.0
    assert "--concat 1)" in (tmp_path / "full/README.md").read_text()


def test_validation_is_never_joined(tmp_path, monkeypatch):
    import attn_cli.train.trainer as trainer_mod

    seen = {}
    real = trainer_mod.Trainer.evaluate

    def spy(self):
        seen[self.cfg.concat] = list(self.valid_ex)
        return real(self)

    monkeypatch.setattr(trainer_mod.Trainer, "evaluate", spy)
    train(tmp_path / "joined", max_steps=2, concat=1.0)
    train(tmp_path / "alone", max_steps=2, concat=0.0)
    assert len(seen[1.0]) > 0 and seen[1.0] == seen[0.0]


runner = CliRunner()


@pytest.mark.parametrize("args,fragment", [
    (["translate", "--concat", "1.5"], "concat must be in [0, 1] (a share of the training examples), got 1.5"),
    (["translate", "--concat", "-0.1"], "concat must be in [0, 1]"),
    (["sentiment", "--concat", "0.3"], "concat joins translate and summarize pairs; sentiment examples are not"),
])
def test_bad_concat_is_a_one_line_error(tmp_path, args, fragment):
    data = IT_EN if args[0] == "translate" else f"{DATA_DIR}/sentiment.jsonl"
    extra = ["--src", "it", "--tgt", "en"] if args[0] == "translate" else []
    r = runner.invoke(app, ["train", args[0], "--data", data, *extra, "--out", str(tmp_path / "r"),
                            "--preset", "tiny", "--max-steps", "2", *args[1:]])
    assert r.exit_code == 2, r.output
    assert fragment in r.stderr and r.stderr.count("\n") == 1 and "Traceback" not in r.output
    assert not (tmp_path / "r").exists()


def test_defaults_by_task_and_old_runs_resume_without_joining(monkeypatch):
    import attn_cli.config as config_mod
    from attn_cli.cli.train import resolve_config

    assert TrainConfig(task="translate").concat == 0.0  # off: measured (docs/benchmarks-quality.md)
    assert TrainConfig(task="translate", concat=0.3).concat == 0.3
    assert TrainConfig(task="summarize").concat == 0.0
    assert TrainConfig(task="sentiment").concat == 0.0
    monkeypatch.setitem(config_mod.CONCAT_DEFAULTS, "translate", 0.5)  # were the default on ...
    assert TrainConfig(task="translate").concat == 0.5
    assert TrainConfig(task="translate", objective="denoise").concat == 0.0  # ... pretraining joins nothing
    saved = TrainConfig(task="translate", concat=0.4).to_dict()
    del saved["concat"]  # ... and a run directory written before --concat existed resumes without it
    assert resolve_config("translate", {}, {}, saved).concat == 0.0
    assert resolve_config("translate", {}, {}, None).concat == 0.5


def test_stream_joins_inside_each_shuffle_buffer_and_resumes_exactly(tmp_path):
    from attn_cli.data.spec import locate
    from attn_cli.data.stream import StreamSource
    from attn_cli.data.tasks import load_task_data
    from attn_cli.data.tokenizer import TokenizerConfig, Tokenizers, train_tokenizers

    data = load_task_data(IT_EN, "translate", FIELDS, need_valid=False)
    train_tokenizers(data.train, ["src"], ["tgt"], TokenizerConfig(vocab_size=400)).save(tmp_path)
    toks = Tokenizers.load(tmp_path)
    def source(max_len, concat):
        return StreamSource(locate(IT_EN, fields=FIELDS), "translate", FIELDS, toks, max_len, 600, 64, seed=3,
                            concat=concat)

    plain, joined, short = source(256, 0.0), source(256, 0.5), source(40, 0.5)
    rows = [ex for *_, batch in plain.batches(epoch=0) for ex in batch]
    full = list(joined.batches(epoch=0))
    items = [ex for *_, batch in full for ex in batch]
    assert 0.3 < (len(rows) - len(items)) / len(rows) < 0.7  # fewer, longer examples
    assert sum(len(t) for _, t in items) == sum(len(t) for _, t in rows)  # every row's target once
    assert all(len(s) <= 40 and len(t) <= 39 for *_, batch in short.batches(epoch=0) for s, t in batch)
    assert max(len(t) for _, t in items) > max(len(t) for _, t in rows)
    k = next(i for i, (c, p, _) in enumerate(full) if c == 128 and p == 2)
    assert list(joined.batches(epoch=0, consumed=128, position=2)) == full[k + 1:]
    assert [b for *_, b in joined.batches(epoch=1)] != [b for *_, b in full]
