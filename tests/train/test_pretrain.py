"""attn pretrain on the shipped samples with tiny models: masked LM and denoising runs, their
fine-tuning through --init-from, exact resume, and the refusals (inference on a pretraining run,
an objective that does not fit the task)."""

import json

import pytest
import torch
from conftest import DATA_DIR, Quiet
from safetensors.torch import load_file
from conftest import cli, one_line_error

from attn_cli.config import TrainConfig
from attn_cli.data.spec import Fields
from attn_cli.train.setup import RunRequest, train_run

IT_EN = f"{DATA_DIR}/translate.it-en.jsonl"
SENTIMENT = f"{DATA_DIR}/sentiment.jsonl"
FIELDS = Fields(src_lang="it", tgt_lang="en")
BASE = dict(preset="tiny", max_tokens=600, eval_every=1000, eval_samples=2, vocab_size=500, warmup=5,
            log_every=1)


def pretrain(out, task="sentiment", resume=False, **kw):
    cfg = TrainConfig(**{**BASE, "task": task, "objective": "mlm" if task == "sentiment" else "denoise", **kw})
    data, fields = (SENTIMENT, Fields()) if task == "sentiment" else (IT_EN, FIELDS)
    return train_run(RunRequest(data=data, out=out, fields=fields, resume=resume), cfg, Quiet())


def finetune(out, init_from, task="sentiment", **kw):
    cfg = TrainConfig(**{**BASE, "task": task, **kw})
    data, fields = (SENTIMENT, Fields()) if task == "sentiment" else (IT_EN, FIELDS)
    return train_run(RunRequest(data=data, out=out, fields=fields, init_from=init_from), cfg, Quiet())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrain")
    pretrain(root / "enc", max_steps=6, eval_every=3)
    pretrain(root / "s2s", task="translate", max_steps=6, eval_every=3)
    return root


@pytest.mark.parametrize("name, task, metric", [("enc", "sentiment", "masked_accuracy"),
                                                ("s2s", "translate", "token_accuracy")])
def test_pretraining_run_records_what_it_is(runs, name, task, metric):
    meta = json.loads((runs / name / "config.json").read_text())
    assert meta["pretrain"]["objective"] == ("mlm" if task == "sentiment" else "denoise")
    assert meta["pretrain"]["texts"] > 0
    evals = [json.loads(x) for x in (runs / name / "metrics.jsonl").read_text().splitlines()
             if json.loads(x)["event"] == "eval"]
    assert [e["step"] for e in evals] == [3, 6] and all(0 <= e[metric] <= 100 for e in evals)
    assert "a pretraining run" in (runs / name / "README.md").read_text()
    if task == "sentiment":  # the encoder has no classifier head; its LM output is the embedding
        assert meta["model"]["num_labels"] == 0
        assert not any(k.startswith("head.") for k in load_file(str(runs / name / "model.safetensors")))


@pytest.mark.parametrize("name, task", [("enc", "sentiment"), ("s2s", "translate")])
def test_finetuning_starts_from_the_pretrained_weights(runs, tmp_path, name, task):
    from attn_cli.config import ModelConfig
    from attn_cli.model.transformer import build_model
    from attn_cli.train.setup import init_weights

    best = load_file(str(runs / name / "model.safetensors"))
    meta = json.loads((runs / name / "config.json").read_text())
    mcfg = ModelConfig.from_dict({**meta["model"], **({"num_labels": 2} if task == "sentiment" else {})})
    model = build_model(mcfg)
    init_weights(model, mcfg, runs / name)
    for key, value in model.state_dict().items():
        assert key.startswith("head.") or torch.equal(value, best[key]), key
    finetune(tmp_path / "ft", runs / name, task=task, max_steps=2)
    ft = json.loads((tmp_path / "ft/config.json").read_text())
    assert "pretrain" not in ft and ft["pretrained"]["objective"] == meta["pretrain"]["objective"]
    assert ft["pretrained"]["steps"] == 6 and ft["pretrained"]["tokens_seen"] > 0
    assert "that run was pretrained" in (tmp_path / "ft/README.md").read_text()
    r = cli("info", tmp_path / "ft")
    assert r.exit_code == 0 and "pretrained" in r.stdout
    # the fine-tuned model is an ordinary one: it runs
    r = cli("sentiment" if task == "sentiment" else "translate", "-m", tmp_path / "ft", "good")
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize("task, objective", [("sentiment", "mlm-whole-word"), ("translate", "denoise-permute")])
def test_pretraining_resumes_exactly(tmp_path, task, objective):
    """Masks drawn per step (masked LM) and noise drawn per batch while collating (denoising,
    in the prefetch thread) are both functions of the seed and the position: 3 steps and a
    resume to 6 equal 6 steps."""
    kw = dict(task=task, objective=objective, eval_every=3)
    pretrain(tmp_path / "full", max_steps=6, **kw)
    pretrain(tmp_path / "half", max_steps=3, **kw)
    pretrain(tmp_path / "half", resume=True, max_steps=6, **kw)
    a = load_file(str(tmp_path / "full/last/model.safetensors"))
    b = load_file(str(tmp_path / "half/last/model.safetensors"))
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=0)
    other = pretrain(tmp_path / "seed2", max_steps=6, seed=2, **kw)
    assert other.state["step"] == 6
    c = load_file(str(tmp_path / "seed2/last/model.safetensors"))
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_inference_and_export_refuse_a_pretraining_run(runs):
    for args in (["sentiment", "-m", runs / "enc", "good"], ["translate", "-m", runs / "s2s", "Ciao."],
                 ["eval", "-m", runs / "enc", "--data", SENTIMENT], ["export", runs / "s2s"]):
        r = cli(*args)
        one_line_error(r, "is a pretraining run")
        assert "attn train" in r.stderr and "--init-from" in r.stderr
    r = cli("info", runs / "enc")
    assert r.exit_code == 0 and "pretraining run" in r.stdout and "masked_accuracy" in r.stdout


def test_pretrain_command_and_its_refusals(tmp_path):
    r = cli("pretrain", "sentiment", "--data", SENTIMENT, "--out", tmp_path / "e", "--preset", "tiny",
            "--max-steps", 2, "--vocab-size", 500)
    assert r.exit_code == 0, r.output
    assert "attn train sentiment --init-from" in r.stderr
    one_line_error(cli("pretrain", "translate", "--data", IT_EN, "--src", "it", "--tgt", "en", "--out",
                       tmp_path / "x", "--objective", "mlm"), "objective for translate must be one of")
    one_line_error(cli("pretrain", "poetry", "--data", SENTIMENT, "--out", tmp_path / "y"), "unknown task")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
    r = cli("train", "sentiment", "--data", SENTIMENT, "--out", tmp_path / "t", "--preset", "tiny",
            "--max-steps", 1, "--vocab-size", 500)
    assert r.exit_code == 0, r.output
    one_line_error(cli("pretrain", "sentiment", "--data", SENTIMENT, "--out", tmp_path / "t", "--resume"),
                   "not a pretraining run")


def test_objective_comes_from_config_and_a_resume_keeps_it(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text('objective = "mlm-whole-word"\npreset = "tiny"\nvocab-size = 500\n')
    r = cli("pretrain", "sentiment", "--data", SENTIMENT, "--out", tmp_path / "e", "--config", recipe,
            "--max-steps", 2)
    assert r.exit_code == 0, r.output
    saved = json.loads((tmp_path / "e/train_config.json").read_text())
    assert saved["objective"] == "mlm-whole-word"  # not the command line's default (mlm)
    r = cli("pretrain", "sentiment", "--data", SENTIMENT, "--out", tmp_path / "e", "--resume", "--max-steps", 3)
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "e/train_config.json").read_text())["objective"] == "mlm-whole-word"


def test_finetuning_without_preset_takes_the_pretraining_runs(runs, tmp_path):
    """attn train --init-from a --preset tiny run, with no --preset: trained at tiny, not refused
    for the default small's d_model; an explicit --preset that does not fit is the one-line error."""
    r = cli("train", "sentiment", "--data", SENTIMENT, "--out", tmp_path / "clf", "--max-steps", 2,
            "--max-tokens", 600, "--init-from", runs / "enc")
    assert r.exit_code == 0, r.output
    meta = json.loads((tmp_path / "clf/config.json").read_text())
    assert meta["preset"] == "tiny" and meta["model"]["d_model"] == 64
    assert f"the shape of {runs / 'enc'} (tiny: d=64, 2 layers), whose weights start this run" in r.stderr
    one_line_error(cli("train", "sentiment", "--data", SENTIMENT, "--out", tmp_path / "big", "--max-steps", 2,
                       "--init-from", runs / "enc", "--preset", "small"), "its d_model is 64, this run's 256")
