"""attn train end to end on the sample data with tiny models: run directory, exact resume,
DDP equivalence, kills, and bad options."""

import json
import os
import random
import re
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import DATA_DIR, Quiet, assert_same_weights, torchrun_cmd, train_cmd, weights
from safetensors.torch import load_file
from typer.testing import CliRunner

from attn_cli.cli.main import app
from attn_cli.config import TrainConfig
from attn_cli.data.spec import Fields
from attn_cli.data.tokenizer import Tokenizers
from attn_cli.train.setup import RunRequest, train_run

runner = CliRunner()
IT_EN = f"{DATA_DIR}/translate.it-en.jsonl"
SENTIMENT = f"{DATA_DIR}/sentiment.jsonl"
FIELDS = Fields(src_lang="it", tgt_lang="en")
BASE = dict(task="translate", preset="tiny", max_tokens=600, eval_every=1000, eval_samples=3,
            vocab_size=500, warmup=5, log_every=1)


def train(out, resume=False, **kw):
    cfg = TrainConfig(**{**BASE, **kw})
    return train_run(RunRequest(data=IT_EN, out=out, fields=FIELDS, resume=resume), cfg, Quiet())


def train_sentiment(out, resume=False, **kw):
    """A tiny sentiment run on the shipped sample data."""
    cfg = TrainConfig(**{**BASE, "task": "sentiment", "eval_samples": 2, **kw})
    return train_run(RunRequest(data=SENTIMENT, out=out, resume=resume), cfg, Quiet())


def test_run_directory_layout_and_card(tmp_path):
    res = train(tmp_path / "run", max_steps=4)
    run = tmp_path / "run"
    names = {p.name for p in run.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.model", "metrics.jsonl", "README.md",
            "last", "train_config.json"} <= names
    assert not [n for n in names if n.endswith(".tmp")]
    meta = json.loads((run / "config.json").read_text())
    assert meta["task"] == "translate" and meta["languages"] == {"src": "it", "tgt": "en"}
    assert meta["model"]["d_model"] == 64 and meta["parameters"] == res.params
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["event"] == "train"] == [1, 2, 3, 4]
    evals = [r for r in rows if r["event"] == "eval"]  # (the last line is the baseline: test_baselines.py)
    assert evals[-1]["step"] == 4 and "bleu" in evals[-1] and "chrf" in evals[-1]
    assert "4 steps" in (run / "README.md").read_text()
    assert json.loads((run / "last" / "state.json").read_text())["step"] == 4


def test_stop_and_resume_equals_uninterrupted(tmp_path):
    """Resumed with a larger --max-steps; inverse_sqrt, whose steps do not depend on it (a
    decaying schedule follows --max-steps: test_interrupted_auto_run_resumes_to_the_same_weights)."""
    k = 6
    train(tmp_path / "full", max_steps=2 * k, schedule="inverse_sqrt")
    train(tmp_path / "half", max_steps=k, schedule="inverse_sqrt")
    train(tmp_path / "half", resume=True, max_steps=2 * k, schedule="inverse_sqrt")
    a, b = weights(tmp_path / "full/last/model.safetensors"), weights(tmp_path / "half/last/model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-6, rtol=0)
    loss = [[r["loss"] for r in map(json.loads, (tmp_path / d / "metrics.jsonl").read_text().splitlines())
             if r["event"] == "train"] for d in ("full", "half")]
    assert loss[0] == pytest.approx(loss[1], abs=1e-6)


class StopAt(Quiet):
    """A reporter that presses Ctrl-C after step ``k`` (the Trainer saves last/ and stops)."""

    def __init__(self, k):
        self.k = k

    def step(self, stats):
        if stats["step"] == self.k:
            os.kill(os.getpid(), signal.SIGINT)


def test_interrupted_auto_run_resumes_to_the_same_weights(tmp_path):
    """--preset auto sized by --max-steps, its schedule decaying to zero there: killed at step
    5 and resumed, it ends with the uninterrupted run's shape, weights and last learning rate 0."""
    from attn_cli.train.trainer import Interrupted

    kw = dict(preset="auto", max_steps=12, warmup=2)
    train(tmp_path / "full", **kw)
    cfg = TrainConfig(**{**BASE, **kw})
    with pytest.raises(Interrupted):
        train_run(RunRequest(data=IT_EN, out=tmp_path / "half", fields=FIELDS), cfg, StopAt(5))
    assert json.loads((tmp_path / "half/last/state.json").read_text())["step"] == 5
    train(tmp_path / "half", resume=True, **kw)
    a, b = weights(tmp_path / "full/last/model.safetensors"), weights(tmp_path / "half/last/model.safetensors")
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-6, rtol=0)
    metas = [json.loads((tmp_path / d / "config.json").read_text()) for d in ("full", "half")]
    assert metas[0]["model"] == metas[1]["model"] and metas[0]["auto"]["steps"] == 12
    rows = [json.loads(x) for x in (tmp_path / "half/metrics.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in rows if r["event"] == "train"][-1] == 0.0


def test_resume_crosses_epochs_and_accumulation(tmp_path):
    kw = dict(accum=2, max_tokens=300, schedule="inverse_sqrt")
    train(tmp_path / "full", max_steps=14, **kw)
    train(tmp_path / "half", max_steps=7, **kw)
    train(tmp_path / "half", resume=True, max_steps=14, **kw)
    a, b = weights(tmp_path / "full/last/model.safetensors"), weights(tmp_path / "half/last/model.safetensors")
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-6, rtol=0)


def test_ema_is_the_moving_average_evaluated_and_kept_and_resumes_exactly(tmp_path):
    d = 0.9
    train(tmp_path / "r", max_steps=1, ema=d)
    w1 = weights(tmp_path / "r/last/model.safetensors")
    # one update: the average is the weights themselves
    for name, t in weights(tmp_path / "r/last/ema.safetensors").items():
        assert torch.equal(t, w1[name])
    train(tmp_path / "r", resume=True, max_steps=3, ema=d)
    train(tmp_path / "full", max_steps=3, ema=d)
    train(tmp_path / "two", max_steps=2, ema=d)
    w2, w3 = weights(tmp_path / "two/last/model.safetensors"), weights(tmp_path / "full/last/model.safetensors")
    ema = weights(tmp_path / "full/last/ema.safetensors")
    for name in w1:  # the average after 3 steps, by hand
        want = d * (d * w1[name] + (1 - d) * w2[name]) + (1 - d) * w3[name]
        torch.testing.assert_close(ema[name], want, atol=1e-6, rtol=0)
        assert not torch.equal(ema[name], w3[name]) or torch.equal(w1[name], w3[name])
    # resumed == uninterrupted, the average included
    for f in ("last/model.safetensors", "last/ema.safetensors"):
        a, b = weights(tmp_path / "full" / f), weights(tmp_path / "r" / f)
        for name in a:
            torch.testing.assert_close(a[name], b[name], atol=1e-6, rtol=0)
    assert "moving average of the weights, decay 0.9" in (tmp_path / "full/README.md").read_text()
    # the only evaluation (the final one) is the best, and model.safetensors holds the average
    best = weights(tmp_path / "full/model.safetensors")
    for name in best:
        assert torch.equal(best[name], ema[name])


def test_step_seed_gives_every_rank_and_step_its_own_draws():
    from attn_cli.train.optim import step_seed

    seeds = {step_seed(1, rank, draw) for rank in range(4) for draw in range(100)}
    assert len(seeds) == 400 and step_seed(1, 2, 7) == step_seed(1, 2, 7) != step_seed(2, 2, 7)
    masks = []
    for rank in (0, 1):  # two DDP ranks at the same step: different dropout masks
        torch.manual_seed(step_seed(1, rank, 5))
        masks.append(torch.rand(64) < 0.5)
    assert not torch.equal(*masks)
    assert step_seed(-3, 0, 0) >= 0  # any --seed is usable


def test_training_reseeds_each_step_from_seed_rank_and_step(tmp_path, monkeypatch):
    """Under DDP every rank would otherwise share one stream (and so one set of masks)."""
    import attn_cli.train.trainer as tr

    calls = []
    real = tr.step_seed
    monkeypatch.setattr(tr, "step_seed", lambda *a: calls.append(a) or real(*a))
    train(tmp_path / "r", max_steps=3, seed=4)
    assert calls == [(4, 0, 0), (4, 0, 1), (4, 0, 2)]


def test_sentiment_and_summarize_train(tmp_path):
    for task, data in (("sentiment", "sentiment.jsonl"), ("summarize", "summarize.jsonl")):
        cfg = TrainConfig(**{**BASE, "task": task, "max_steps": 3, "eval_samples": 2})
        res = train_run(RunRequest(data=f"{DATA_DIR}/{data}", out=tmp_path / task), cfg, Quiet())
        rows = [json.loads(x) for x in (tmp_path / task / "metrics.jsonl").read_text().splitlines()]
        key = "accuracy" if task == "sentiment" else "rouge1"
        assert key in [r for r in rows if r["event"] == "eval"][-1] and res.state["step"] == 3


def test_nan_loss_stops_and_keeps_last_good(tmp_path, monkeypatch):
    from attn_cli.errors import RunFailure
    from attn_cli.train import trainer as T

    train(tmp_path / "r", max_steps=3)
    good = weights(tmp_path / "r/last/model.safetensors")
    real = T.Trainer._loss_sum

    def poisoned(self, batch, smoothing, model=None, **kw):
        loss = real(self, batch, smoothing, model, **kw)
        return loss * float("nan") if self.state.step >= 4 and model is None else loss

    monkeypatch.setattr(T.Trainer, "_loss_sum", poisoned)
    with pytest.raises(RunFailure, match="loss became non-finite at step 5.*last/ holds step 3"):
        train(tmp_path / "r", resume=True, max_steps=8)
    after = weights(tmp_path / "r/last/model.safetensors")
    for name in good:
        assert torch.equal(good[name], after[name])


# ----------------------------------------------------------------- CLI


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_lowercase_makes_the_run_tokenizer_fold_case(tmp_path):
    train_sentiment(tmp_path / "lc", max_steps=1, lowercase=True)
    train_sentiment(tmp_path / "cased", max_steps=1)
    lc, cased = Tokenizers.load(tmp_path / "lc").src, Tokenizers.load(tmp_path / "cased").src
    assert lc.encode("The FILM") == lc.encode("the film") and cased.encode("The FILM") != cased.encode("the film")
    r = cli("train", "sentiment", "--data", SENTIMENT, "--out", tmp_path / "c", "--preset", "tiny",
            "--max-steps", 1, "--vocab-size", 500, "--lowercase")
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "c/train_config.json").read_text())["lowercase"] is True


def test_cli_train_and_refuse_existing(tmp_path):
    out = tmp_path / "run"
    args = ["train", "translate", "--data", IT_EN, "--src", "it", "--tgt", "en", "--out", out,
            "--preset", "tiny", "--max-steps", 2, "--vocab-size", 500, "--max-tokens", 600]
    r = cli(*args)
    assert r.exit_code == 0, r.output
    assert "Training finished: reached --max-steps 2" in r.stderr
    # the tokenizer it trains itself is announced and timed (about 33 s of silence on IMDB before)
    assert "training a SentencePiece tokenizer (500 pieces)" in r.stderr and "tokenizer trained in" in r.stderr
    r = cli(*args)
    assert r.exit_code == 2 and "exists and is not empty" in r.stderr and "--overwrite" in r.stderr
    r = cli(*args[:-6], "--resume", "--max-steps", 3)
    assert r.exit_code == 0, r.output
    assert f"resuming {out} at step 2" in r.stderr
    assert json.loads((out / "last/state.json").read_text())["step"] == 3
    assert "SentencePiece" not in r.stderr  # resumed with the run's own tokenizer
    r = cli("train", "translate", "--data", IT_EN, "--src", "it", "--tgt", "en", "--out", tmp_path / "again",
            "--preset", "tiny", "--max-steps", 1, "--tokenizer", out)
    assert r.exit_code == 0, r.output
    assert "SentencePiece" not in r.stderr


def test_cli_train_shrinks_a_vocabulary_the_data_cannot_fill(tmp_path):
    r = cli("train", "sentiment", "--data", SENTIMENT, "--out", tmp_path / "r", "--preset", "tiny",
            "--max-steps", 1, "--vocab-size", 50000)
    assert r.exit_code == 0, r.output
    maximum = int(re.search(r"allows at most ([\d,]+) pieces", r.stderr).group(1).replace(",", ""))
    assert maximum < 50000
    assert Tokenizers.load(tmp_path / "r").src.vocab_size == maximum
    assert json.loads((tmp_path / "r/config.json").read_text())["model"]["vocab_size"] == maximum


def test_cli_config_toml_and_option_override(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('preset = "tiny"\nmax-tokens = 500\nmax_steps = 2\nvocab-size = 400\nlr = 0.002\n')
    r = cli("train", "translate", "--data", IT_EN, "--src", "it", "--tgt", "en", "--out", tmp_path / "r",
            "--config", toml, "--lr", "0.001")
    assert r.exit_code == 0, r.output
    saved = json.loads((tmp_path / "r/train_config.json").read_text())
    assert saved["max_tokens"] == 500 and saved["lr"] == 0.001 and saved["preset"] == "tiny"


@pytest.mark.parametrize("args,fragment", [
    (["--max-steps", "0"], "max_steps must be positive"),
    (["--preset", "huge"], "preset must be one of"),
    (["--time-budget", "soon"], "cannot read the duration 'soon'"),
    (["--device", "cuda"], "no CUDA GPU is available"),
    (["--lr", "-1"], "lr must be positive"),
])
def test_cli_bad_options(tmp_path, args, fragment):
    if "cuda" in args and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    r = cli("train", "translate", "--data", IT_EN, "--src", "it", "--tgt", "en", "--out", tmp_path / "r",
            "--preset", "tiny", *args)
    assert r.exit_code == 2, r.output
    assert fragment in r.stderr and r.stderr.count("\n") == 1 and "Traceback" not in r.output
    assert not (tmp_path / "r").exists()


# ----------------------------------------------------------------- processes


@pytest.mark.slow
@pytest.mark.parametrize("task, extra, atol", [
    ("translate", [], 1e-5),
    ("sentiment", [], 1e-5),
], ids=["translate", "sentiment"])
def test_two_process_gloo_equals_one_process(tmp_path, task, extra, atol):
    common = ["--max-steps", "4", "--dropout", "0", "--eval-every", "1000", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run(train_cmd(tmp_path / "one", *common, task=task), capture_output=True,
                         text=True, env=env, timeout=300)
    assert one.returncode == 0, one.stderr
    two = subprocess.run(torchrun_cmd(tmp_path / "two", *common, task=task), capture_output=True,
                         text=True, env=env, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = weights(tmp_path / "one/last/model.safetensors"), weights(tmp_path / "two/last/model.safetensors")
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=atol, rtol=0)
    assert "x 2 processes" in two.stderr
    assert two.stderr.count("Training finished") == 1  # only rank 0 prints
    assert not list((tmp_path / "two").glob(".*tmp")) and not list(tmp_path.glob(".two*"))


@pytest.mark.slow
def test_sigkill_leaves_a_loadable_run(tmp_path):
    from attn_cli.config import ModelConfig
    from attn_cli.model.transformer import build_model
    from attn_cli.rundir import find_dir, load_weights

    out = tmp_path / "run"
    proc = subprocess.Popen(train_cmd(out, "--max-steps", "100000", "--eval-every", "3"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (out / "last").exists() and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(random.uniform(0.0, 2.0))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    meta = json.loads((out / "config.json").read_text())
    model = build_model(ModelConfig.from_dict(meta["model"]))
    load_weights(model, out / "model.safetensors")
    load_weights(model, find_dir(out / "last") / "model.safetensors")
    r = subprocess.run(train_cmd(out, "--resume", "--max-steps", "1", "--eval-every", "3"),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_live_lock_refuses_second_writer_and_stale_lock_is_taken_over(tmp_path):
    import socket

    out = tmp_path / "run"
    train(out, max_steps=2)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / ".lock").write_text(f"{sleeper.pid} {socket.gethostname()}\n")
        r = cli("train", "translate", "--data", IT_EN, "--src", "it", "--tgt", "en", "--out", out,
                "--resume", "--max-steps", 3)
        assert r.exit_code == 2 and f"being trained by another process (pid {sleeper.pid})" in r.stderr
    finally:
        sleeper.kill()
        sleeper.wait()
    r = cli("train", "translate", "--data", IT_EN, "--src", "it", "--tgt", "en", "--out", out,
            "--resume", "--max-steps", 3)
    assert r.exit_code == 0, r.output
    assert not (out / ".lock").exists()


def test_a_data_error_is_shown_alone(tmp_path):
    """A short run's warmup note waits until the data is checked: a bad SPEC shows only its error."""
    for task, data in (("translate", tmp_path / "missing.jsonl"), ("sentiment", IT_EN)):
        r = cli("train", task, "--data", data, "--out", tmp_path / "r", "--max-steps", 10,
                *(["--src", "it", "--tgt", "en"] if task == "translate" else []))
        assert r.exit_code == 2 and r.stderr.startswith("Error: ") and r.stderr.count("\n") == 1, r.stderr
        assert not (tmp_path / "r").exists()


def test_failed_new_run_leaves_no_directory(tmp_path):
    r = cli("train", "translate", "--data", IT_EN, "--src", "fr", "--tgt", "en", "--out", tmp_path / "r",
            "--preset", "tiny")
    assert r.exit_code == 2 and "field 'fr' not found" in r.stderr
    assert not (tmp_path / "r").exists()


def test_missing_parent_directories_are_created(tmp_path):
    out = tmp_path / "runs" / "deeper" / "it-en"
    r = cli("train", "translate", "--data", IT_EN, "--src", "it", "--tgt", "en", "--out", out,
            "--preset", "tiny", "--max-steps", 1, "--vocab-size", 500, "--max-tokens", 600)
    assert r.exit_code == 0, r.output
    assert (out / "model.safetensors").is_file()


def test_shipped_recipes_resolve_to_valid_train_configs():
    """docs/recipes/*.toml must stay loadable as the TrainConfig keys change."""
    from pathlib import Path

    from attn_cli.cli.train import load_toml, resolve_config

    recipes = sorted((Path(__file__).resolve().parents[2] / "docs" / "recipes").glob("*.toml"))
    assert recipes
    for path in recipes:
        task = ("sentiment" if "sst2" in path.name or "imdb" in path.name
                else "summarize" if "dialogsum" in path.name else "translate")
        cfg = resolve_config(task, {}, load_toml(path), None)
        assert cfg.time_budget and cfg.time_budget > 0
    recipe = next(p for p in recipes if p.name == "sst2-small-cpu.toml")
    sst2 = resolve_config("sentiment", {"lr": 1e-3}, load_toml(recipe), None)
    assert (sst2.ema, sst2.max_tokens, sst2.time_budget, sst2.lr) == (0.999, 1024, 900.0, 1e-3)


@pytest.mark.slow
def test_compile_on_cpu_trains_like_eager_and_saves_plain_weights(tmp_path):
    """--compile (inductor on CPU, ~1 min) tracks the eager run and writes the same weight names.

    Dropout draws differ between inductor and eager, and the compiled run pads batch widths to
    multiples of 8 (other shapes, other draws), so the losses agree closely, not exactly.
    """
    losses, keys = {}, {}
    for name, extra in (("eager", []), ("compiled", ["--compile"])):
        out = tmp_path / name
        r = subprocess.run([sys.executable, "-m", "attn_cli", "train", "sentiment", "--data",
                            f"{DATA_DIR}/sentiment.jsonl", "--out", str(out), "--preset", "tiny",
                            "--max-steps", "6", "--eval-every", "3", "--device", "cpu", "--schedule",
                            "inverse_sqrt", *extra],
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-2000:]
        rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
        losses[name] = [x["valid_loss"] for x in rows if x.get("event") == "eval"]
        keys[name] = sorted(load_file(out / "model.safetensors"))
    assert keys["compiled"] == keys["eager"]
    assert len(losses["compiled"]) == len(losses["eager"]) == 2
    for a, b in zip(losses["compiled"], losses["eager"], strict=True):
        assert abs(a - b) < 2e-2


def test_resume_refuses_options_that_change_the_model(tmp_path):
    """--max-len (or --preset) on --resume would load the weights into another architecture
    while config.json kept describing the old one."""
    from attn_cli.errors import AttnError

    run = tmp_path / "run"
    train_sentiment(run, max_steps=2)
    before = (run / "last" / "state.json").read_text()
    with pytest.raises(AttnError, match="max_len was 256, now 64"):
        train_sentiment(run, resume=True, max_steps=4, max_len=64)
    with pytest.raises(AttnError, match="d_model was 64, now 256"):
        train_sentiment(run, resume=True, max_steps=4, preset="small")
    assert (run / "last" / "state.json").read_text() == before
    train_sentiment(run, resume=True, max_steps=4, dropout=0.3)  # training-only: allowed
    assert json.loads((run / "last" / "state.json").read_text())["step"] == 4


# ----------------------------------------------------------------- --init-from


def train_from(out, init_from, resume=False, **kw):
    cfg = TrainConfig(**{**BASE, "task": "sentiment", "eval_samples": 2, **kw})
    return train_run(RunRequest(data=SENTIMENT, out=out, init_from=init_from, resume=resume), cfg, Quiet())


def test_init_from_copies_the_best_weights_and_the_tokenizer(tmp_path):
    from attn_cli.config import ModelConfig
    from attn_cli.model.transformer import build_model
    from attn_cli.train.setup import init_weights

    train_sentiment(tmp_path / "a", max_steps=20, eval_every=10)
    best = weights(tmp_path / "a/model.safetensors")
    meta = json.loads((tmp_path / "a/config.json").read_text())
    mcfg = ModelConfig.from_dict({**meta["model"], "num_labels": 3})  # a head for other labels
    model = build_model(mcfg)
    note = init_weights(model, mcfg, tmp_path / "a")
    fresh = {"head.3.weight", "head.3.bias"}
    assert fresh and note.endswith("new: " + ", ".join(n for n in model.state_dict() if n in fresh))
    for name, t in model.state_dict().items():
        assert name in fresh or torch.equal(t, best[name])
    # a run started from it: its tokenizer, a lower first loss than from scratch, and it says so
    train_from(tmp_path / "b", tmp_path / "a", max_steps=2)
    train_sentiment(tmp_path / "c", max_steps=2)
    assert (tmp_path / "b/tokenizer.model").read_bytes() == (tmp_path / "a/tokenizer.model").read_bytes()
    first = [next(json.loads(x)["loss"] for x in (tmp_path / r / "metrics.jsonl").read_text().splitlines()
                  if json.loads(x)["event"] == "train") for r in ("b", "c")]
    assert first[0] < first[1] - 0.05, first
    assert json.loads((tmp_path / "b/config.json").read_text())["init_from"] == str(tmp_path / "a")
    assert f"started from the best weights of `{tmp_path / 'a'}`" in (tmp_path / "b/README.md").read_text()
    assert "init_from" not in json.loads((tmp_path / "c/config.json").read_text())


def test_init_from_then_resume_equals_uninterrupted(tmp_path):
    train_sentiment(tmp_path / "a", max_steps=4)
    train_from(tmp_path / "full", tmp_path / "a", max_steps=6)
    train_from(tmp_path / "half", tmp_path / "a", max_steps=3)
    train_from(tmp_path / "half", tmp_path / "a", resume=True, max_steps=6)  # weights from last/
    assert_same_weights(tmp_path / "full", tmp_path / "half")


def test_init_from_a_seq2seq_run_copies_its_encoder_into_a_classifier(tmp_path):
    from attn_cli.config import model_config_from_preset
    from attn_cli.infer.runs import load_run
    from attn_cli.model.transformer import build_model
    from attn_cli.train.setup import init_weights

    train(tmp_path / "mt", max_steps=3)
    best = weights(tmp_path / "mt/model.safetensors")
    vocab = load_run(tmp_path / "mt").model_cfg.vocab_size
    mcfg = model_config_from_preset("tiny", "sentiment", vocab, None, 2)
    model = build_model(mcfg)
    note = init_weights(model, mcfg, tmp_path / "mt")
    state = model.state_dict()
    assert torch.equal(state["embed.weight"], best["src_embed.weight"])
    encoder = [n for n in state if n.startswith("encoder.")]
    assert encoder and all(torch.equal(state[n], best[n]) for n in encoder)
    assert "(translate encoder); new: head." in note
    assert note.startswith(f"initialised {len(encoder) + 1} of {len(state)} weight tensors")
    # end to end: the classifier trains from it, with its tokenizer, and the run loads
    r = cli("train", "sentiment", "--data", SENTIMENT, "--out", tmp_path / "clf", "--preset", "tiny",
            "--max-steps", 2, "--init-from", tmp_path / "mt")
    assert r.exit_code == 0, r.output
    assert "(translate encoder)" in r.output
    assert (tmp_path / "clf/tokenizer.model").read_bytes() == (tmp_path / "mt/tokenizer.model").read_bytes()
    assert load_run(tmp_path / "clf").model_cfg.task == "sentiment"


@pytest.mark.parametrize("args, fragment", [
    (["sentiment", "--data", SENTIMENT, "--preset", "small"], "its d_model is 64, this run's 256"),
    (["translate", "--data", IT_EN, "--src", "it", "--tgt", "en"], "a translate model from"),
    (["sentiment", "--data", SENTIMENT, "--init-from", "nowhere"], "is not a run directory"),
])
def test_init_from_refuses_what_does_not_fit(tmp_path, args, fragment):
    train_sentiment(tmp_path / "a", max_steps=1)
    r = cli("train", *args[:1], "--out", tmp_path / "r", "--preset", "tiny", "--max-steps", 1,
            "--init-from", tmp_path / "a", *args[1:])
    assert r.exit_code == 2, r.output
    error = r.stderr.splitlines()[-1]  # (after the note on the held-out validation examples)
    assert error.startswith("Error:") and fragment in error and "Traceback" not in r.output
    assert not (tmp_path / "r").exists()



def test_init_from_refuses_another_tokenizer(tmp_path):
    train_sentiment(tmp_path / "a", max_steps=1)
    train_sentiment(tmp_path / "b", max_steps=1, vocab_size=400)
    r = cli("train", "sentiment", "--data", SENTIMENT, "--out", tmp_path / "r", "--preset", "tiny",
            "--init-from", tmp_path / "a", "--tokenizer", tmp_path / "b")
    assert r.exit_code == 2 and "is not the tokenizer of --init-from" in r.stderr.splitlines()[-1]
    r = cli("train", "sentiment", "--data", SENTIMENT, "--out", tmp_path / "r", "--preset", "tiny",
            "--init-from", tmp_path / "a", "--tokenizer", tmp_path / "a", "--max-steps", 1)
    assert r.exit_code == 0, r.output  # its own tokenizer, named, is fine


def test_pick_device_refuses_a_gpu_index_the_machine_lacks(monkeypatch):
    from attn_cli.device import pick_device
    from attn_cli.errors import AttnError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert pick_device("cuda:1") == torch.device("cuda", 1)
    assert pick_device("cuda") == torch.device("cuda")
    with pytest.raises(AttnError, match="has 2 GPU"):
        pick_device("cuda:2")


# ----------------------------------------------------------------- no resume trap


def test_resume_of_a_run_that_never_saved_starts_from_step_0(tmp_path):
    train(tmp_path / "never", resume=True, max_steps=2)  # no directory at all: a new run
    assert json.loads((tmp_path / "never/last/state.json").read_text())["step"] == 2
    train(tmp_path / "nolast", max_steps=2)
    import shutil
    shutil.rmtree(tmp_path / "nolast/last")  # as if killed before its first save
    notes = []
    quiet = Quiet()
    quiet.note = notes.append
    train_run(RunRequest(data=IT_EN, out=tmp_path / "nolast", fields=FIELDS, resume=True),
              TrainConfig(**{**BASE, "max_steps": 3}), quiet)
    assert any("no saved state yet" in n and "step 0" in n for n in notes), notes
    assert json.loads((tmp_path / "nolast/last/state.json").read_text())["step"] == 3
    (tmp_path / "other").mkdir()
    (tmp_path / "other/notes.txt").write_text("mine")
    r = cli("train", "translate", "--data", IT_EN, "--src", "it", "--tgt", "en", "--out", tmp_path / "other",
            "--preset", "tiny", "--resume")
    assert r.exit_code == 2 and "holds no run" in r.stderr and "notes.txt" in r.stderr
    assert (tmp_path / "other/notes.txt").read_text() == "mine"


def test_save_every_writes_last_between_evaluations(tmp_path, monkeypatch):
    from attn_cli.train.trainer import Trainer

    saves = []
    real = Trainer.save_last

    def counting(self):
        saves.append(self.state.step)
        real(self)

    monkeypatch.setattr(Trainer, "save_last", counting)
    train(tmp_path / "a", max_steps=4, save_every=1e-6)  # every step is "late"
    assert saves[:3] == [1, 2, 3], saves
    saves.clear()
    train(tmp_path / "b", max_steps=4, save_every=0)  # off: only the final save
    assert saves == [4], saves
    with pytest.raises(ValueError, match="save_every must be >= 0"):
        TrainConfig(**{**BASE, "save_every": -1})


@pytest.mark.slow
def test_sigkill_before_the_first_save_then_resume_trains_to_the_end(tmp_path):
    out = tmp_path / "k"
    cmd = train_cmd(out, "--max-steps", "4", "--eval-every", "1000", "--save-every", "0")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and not (out / "config.json").is_file():
        time.sleep(0.01)
    proc.kill()  # SIGKILL: after the run directory exists, before any evaluation or save
    proc.wait()
    assert (out / "config.json").is_file() and not (out / "last").exists()
    again = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "no saved state yet" in again.stderr
    assert json.loads((out / "last/state.json").read_text())["step"] == 4


# ----------------------------------------------------------------- stop conditions and schedules


def test_patience_stops_after_evaluations_without_improvement(tmp_path):
    # a learning rate too small to change BLEU: the second evaluation is no better than the first
    result = train(tmp_path / "p", max_steps=50, eval_every=1, patience=1, lr=1e-12)
    assert result.reason == "no improvement in 1 evaluations (--patience)"
    assert result.state["step"] == 2 and result.state["bad_evals"] == 1


def test_epochs_stop_at_the_end_of_the_epoch(tmp_path):
    from attn_cli.data.batching import plan_batches

    result = train(tmp_path / "e", epochs=1)
    assert result.reason == "finished 1 epoch(s)"
    state = result.state
    assert state["data"] == {"epoch": 1, "position": 0, "consumed": 0}
    lengths = json.loads((tmp_path / "e/config.json").read_text())["data"]["train_examples"]
    assert lengths == 332  # small data: every example trains (validation reuses some)
    from attn_cli.data.rundata import DataRequest, load_run_data

    data, _ = load_run_data(DataRequest(spec=IT_EN, task="translate", fields=FIELDS, seed=1),
                            Tokenizers.load(tmp_path / "e"), None, lambda m: None)
    assert state["step"] == len(plan_batches(data.train.lengths, BASE["max_tokens"], seed=1, epoch=0))


def test_time_budget_stops_training(tmp_path):
    result = train(tmp_path / "t", time_budget=1.0)
    assert result.reason == "time budget of 1 s used"
    assert 1 <= result.state["step"] and result.state["train_seconds"] < 30


def test_cosine_schedule_warms_up_then_decays_to_the_floor():
    from attn_cli.train.optim import lr_factor

    cfg = TrainConfig(**{**BASE, "schedule": "cosine", "max_steps": 100, "warmup": 10, "min_lr_ratio": 0.05})
    factors = [lr_factor(s, cfg) for s in range(101)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[9:], factors[10:], strict=False))  # decays after warmup
    assert factors[55] == pytest.approx(0.05 + 0.95 * 0.5, abs=1e-9)  # half way: half of the range
    assert factors[100] == pytest.approx(0.05)
    with pytest.raises(ValueError, match="cosine needs max_steps"):
        TrainConfig(**{**BASE, "schedule": "cosine"})


def test_time_budget_run_caps_its_default_warmup_after_the_first_steps(tmp_path):
    """Without --warmup, a --time-budget run measures its first steps and caps warmup at a tenth
    of the steps the budget allows (at least twice the probe), and saves it for a resume."""
    from attn_cli.train.trainer import WARMUP_PROBE

    # (--max-steps only ends the test early: 30 s allow far fewer than 8,000 steps at any speed)
    res = train(tmp_path / "r", time_budget=30.0, max_steps=WARMUP_PROBE + 2, warmup=800, warmup_share=0.1,
                eval_every=10_000)
    assert res.state["step"] == WARMUP_PROBE + 2
    rows = [json.loads(x) for x in (tmp_path / "r/metrics.jsonl").read_text().splitlines()]
    capped = [r for r in rows if r["event"] == "warmup"]
    assert len(capped) == 1 and capped[0]["step"] == WARMUP_PROBE
    saved = json.loads((tmp_path / "r/train_config.json").read_text())
    assert saved["warmup"] == capped[0]["warmup"] and 2 * WARMUP_PROBE <= saved["warmup"] < 800
    assert saved["warmup_share"] == 0.0
    lrs = [r["lr"] for r in rows if r["event"] == "train"]  # the schedule follows the new warmup
    assert lrs[-1] == pytest.approx(7e-4 * (WARMUP_PROBE + 3) / saved["warmup"], rel=1e-6)  # (next step)


@pytest.mark.slow
def test_sigkill_before_any_evaluation_then_the_same_command_with_resume_trains_to_the_end(tmp_path):
    """The issue's trap: killed a few seconds into a fresh run (no evaluation, no last/ yet),
    the same command with --resume must train the run to its end, not refuse."""
    out = tmp_path / "run"
    cmd = train_cmd(out, "--max-steps", "40", "--eval-every", "100000", "--save-every", "0")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (out / "config.json").exists() and time.time() < deadline:  # the run has started
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (out / "config.json").exists() and not (out / "last").exists()
    r = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "no saved state yet" in r.stderr
    assert json.loads((out / "last/state.json").read_text())["step"] == 40
