"""--stream: batches from a shuffle buffer, exact resume, epochs, DDP, and the options it refuses."""

import json
import os
import subprocess

import pytest
import torch
from conftest import DATA_DIR, Quiet, write_jsonl
from conftest import assert_same_weights, torchrun_cmd, train_cmd, weights

from attn_cli.config import TrainConfig
from attn_cli.data.spec import Fields
from attn_cli.data.stream import StreamSource
from attn_cli.data.tasks import load_task_data
from attn_cli.data.tokenizer import TokenizerConfig, train_tokenizers
from attn_cli.errors import AttnError
from attn_cli.train.setup import RunRequest, train_run

IT_EN = f"{DATA_DIR}/translate.it-en.jsonl"
TR = Fields(src_lang="it", tgt_lang="en")
BASE = dict(task="translate", preset="tiny", max_tokens=600, eval_every=1000, eval_samples=3,
            warmup=5, log_every=1, stream=True, shuffle_buffer=100)


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("tok")
    data = load_task_data(IT_EN, "translate", TR, need_valid=False)
    train_tokenizers(data.train, ["src"], ["tgt"], TokenizerConfig(vocab_size=400)).save(out)
    return out


def stream_train(out, tok_dir, resume=False, **kw):
    cfg = TrainConfig(**{**BASE, **kw})
    return train_run(RunRequest(data=IT_EN, out=out, fields=TR, valid=IT_EN, tokenizer=tok_dir,
                                resume=resume), cfg, Quiet())


def test_stream_batches_cover_every_row_once_per_epoch_within_the_budget(tok_dir):
    from attn_cli.data.spec import locate
    from attn_cli.data.tokenizer import Tokenizers

    toks = Tokenizers.load(tok_dir)
    src = StreamSource(locate(IT_EN, fields=TR), "translate", TR, toks, 256, 300, 64, seed=3)
    n_rows = sum(1 for _ in open(IT_EN, encoding="utf-8"))
    seen = []
    for consumed, position, examples in src.batches(epoch=0):
        assert consumed % 64 == 0 and position >= 1
        assert len(examples) * max(max(len(s), len(t) + 1) for s, t in examples) <= 300 or len(examples) == 1
        seen += examples
    assert len(seen) == n_rows
    again = [ex for *_, batch in src.batches(epoch=0) for ex in batch]
    other = [ex for *_, batch in src.batches(epoch=1) for ex in batch]
    assert again == seen and other != seen and sorted(map(repr, other)) == sorted(map(repr, seen))
    # resuming inside the third buffer replays exactly the rest
    rest = list(src.batches(epoch=0, consumed=128, position=2))
    full = list(src.batches(epoch=0))
    k = next(i for i, (c, p, _) in enumerate(full) if (c, p) == (128, 2))
    assert rest == full[k + 1:]


def test_stream_resume_is_exact_and_crosses_epochs(tmp_path, tok_dir):
    kw = dict(max_tokens=2000, schedule="inverse_sqrt")  # a few batches a buffer, 4 buffers an epoch
    stream_train(tmp_path / "full", tok_dir, max_steps=14, **kw)
    stream_train(tmp_path / "half", tok_dir, max_steps=6, **kw)
    stream_train(tmp_path / "half", tok_dir, resume=True, max_steps=14, **kw)
    assert_same_weights(tmp_path / "full", tmp_path / "half")
    state = json.loads((tmp_path / "full/last/state.json").read_text())
    assert state["data"]["epoch"] >= 1, state  # the small file ends and the stream starts over
    assert state["data"]["consumed"] % 100 == 0
    card = (tmp_path / "full/README.md").read_text()
    assert "(streamed)" in card


def test_stream_refuses_what_it_cannot_do(tmp_path, tok_dir):
    cfg = TrainConfig(**{**BASE, "max_steps": 2})
    with pytest.raises(AttnError, match="--stream needs a tokenizer"):
        train_run(RunRequest(data=IT_EN, out=tmp_path / "a", fields=TR, valid=IT_EN), cfg, Quiet())
    with pytest.raises(AttnError, match="--stream needs validation data that is not streamed"):
        train_run(RunRequest(data=IT_EN, out=tmp_path / "b", fields=TR, tokenizer=tok_dir), cfg, Quiet())
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_stream_sentiment_uses_the_validation_labels(tmp_path, tok_dir):
    rows = [{"text": f"film {i} was {'great' if i % 2 else 'dull'}", "label": "pos" if i % 2 else "neg"}
            for i in range(80)]
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    valid = write_jsonl(tmp_path / "valid.jsonl", rows[:10])
    cfg = TrainConfig(**{**BASE, "task": "sentiment", "max_steps": 3})
    train_run(RunRequest(data=str(train), out=tmp_path / "s", valid=str(valid), tokenizer=tok_dir), cfg, Quiet())
    assert json.loads((tmp_path / "s/config.json").read_text())["label_names"] == ["neg", "pos"]
    bad = write_jsonl(tmp_path / "bad.jsonl", rows + [{"text": "odd", "label": "meh"}])
    with pytest.raises(AttnError, match="not among the labels"):
        train_run(RunRequest(data=str(bad), out=tmp_path / "t", valid=str(valid), tokenizer=tok_dir),
                  TrainConfig(**{**BASE, "task": "sentiment", "max_steps": 50}), Quiet())


@pytest.mark.slow
def test_stream_two_gloo_processes_equal_one(tmp_path, tok_dir):
    extra = ["--max-steps", "4", "--dropout", "0", "--eval-every", "1000", "--stream", "--tokenizer",
             str(tok_dir), "--valid", IT_EN, "--shuffle-buffer", "100"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run(train_cmd(tmp_path / "one", *extra), capture_output=True, text=True, env=env,
                         timeout=300)
    assert one.returncode == 0, one.stderr
    two = subprocess.run(torchrun_cmd(tmp_path / "two", *extra), capture_output=True, text=True, env=env,
                         timeout=300)
    assert two.returncode == 0, two.stderr
    a, b = weights(tmp_path / "one/last/model.safetensors"), weights(tmp_path / "two/last/model.safetensors")
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-5, rtol=0)
