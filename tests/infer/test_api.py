"""The Python API (`attn_cli.load`): the same outputs as the commands on 20 inputs for both
engines and every task, attention, threads, and the CLI's errors as exceptions."""

import json
import shutil
import threading

import numpy as np
import pytest
from conftest import DATA_DIR, cli, train_tiny_runs

import attn_cli
from attn_cli.errors import AttnError

pytest.importorskip("ctranslate2")
from attn_cli.infer.export import export_run  # noqa: E402

INPUTS = {"translate": ("translate.it-en.jsonl", "it"), "summarize": ("summarize.jsonl", "document"),
          "sentiment": ("sentiment.jsonl", "text")}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = train_tiny_runs(tmp_path_factory.mktemp("apiruns"))
    for task in INPUTS:
        export_run(root / task)
    return root


def inputs(task, n=20):
    name, key = INPUTS[task]
    with open(f"{DATA_DIR}/{name}", encoding="utf-8") as fh:
        return [json.loads(x)[key].replace("\n", " ") for x in list(fh)[:n]]


def cli_lines(task, run, texts, engine, tmp_path):
    src = tmp_path / f"{task}-{engine}.txt"  # summarize reads blank-line-separated documents
    src.write_text(("\n\n" if task == "summarize" else "\n").join(texts) + "\n", encoding="utf-8")
    r = cli(task, "-m", run, "-i", src, "--engine", engine, *(["--json"] if task == "sentiment" else []))
    assert r.exit_code == 0, r.output
    return r.stdout.splitlines()


@pytest.mark.parametrize("engine", ["torch", "ctranslate2"])
@pytest.mark.parametrize("task", ["translate", "summarize"])
def test_generation_equals_the_command(runs, task, engine, tmp_path):
    texts = inputs(task)
    model = attn_cli.load(runs / task, engine=engine)
    assert model.task == task and model.engine == engine and model.info["task"] == task
    outs = getattr(model, task)(texts)
    assert [o.text.replace("\n", " ") for o in outs] == cli_lines(task, runs / task, texts, engine, tmp_path)
    assert all(isinstance(o.score, float) and o.attention is None for o in outs)


@pytest.mark.parametrize("engine", ["torch", "ctranslate2"])
def test_sentiment_equals_the_command(runs, engine, tmp_path):
    texts = inputs("sentiment")
    outs = attn_cli.load(runs / "sentiment", engine=engine).sentiment(texts)
    rows = [json.loads(x) for x in cli_lines("sentiment", runs / "sentiment", texts, engine, tmp_path)]
    assert [o.label for o in outs] == [r["label"] for r in rows]
    for o, r in zip(outs, rows, strict=True):
        assert o.confidence == pytest.approx(r["confidence"], abs=1e-5)
        assert o.probabilities == pytest.approx(r["probabilities"], abs=1e-5)
        assert o.probabilities[o.label] == max(o.probabilities.values())


def test_attention_pieces_and_matrix(runs):
    out = attn_cli.load(runs / "translate", engine="torch").translate("Ho fame.", attention=True, beam=1)[0]
    assert out.pieces[-1] == "</s>" and out.attention.shape == (len(out.pieces), len(out.source_pieces))
    assert np.allclose(out.attention.sum(axis=1), 1.0, atol=1e-4)  # each output piece's weights sum to 1


def test_decoding_options_and_threads(runs):
    model = attn_cli.load(runs / "translate", engine="torch")
    texts = inputs("translate", 8)
    one = [o.text for o in model.translate(texts, beam=1)]
    results = [None] * 4

    def work(i):
        results[i] = [o.text for o in model.translate(texts, beam=1)]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r == one for r in results)  # concurrent calls are serialized: same outputs
    with pytest.raises(AttnError, match="bad decoding option"):
        model.translate(texts, beam=0)


def test_errors_are_the_commands(runs, tmp_path):
    model = attn_cli.load(runs / "sentiment", engine="torch")
    with pytest.raises(AttnError) as e:
        model.translate(["Ho fame."])
    assert e.value.message.endswith("is a sentiment model, not a translate model")
    with pytest.raises(AttnError, match="does not exist"):
        attn_cli.load(tmp_path / "nowhere")
    with pytest.raises(AttnError, match="is not a model directory"):
        attn_cli.load(tmp_path)
    broken = tmp_path / "broken"
    shutil.copytree(runs / "translate", broken)
    (broken / "config.json").write_text("{not json")
    with pytest.raises(AttnError, match="is not valid JSON"):
        attn_cli.load(broken)
    with pytest.raises(AttnError, match="inputs must be strings"):
        model.sentiment([1, 2])
    assert "load" in attn_cli.__doc__ and attn_cli.Translation is attn_cli.Summary


def test_a_pretraining_run_is_refused(tmp_path):
    r = cli("pretrain", "sentiment", "--data", f"{DATA_DIR}/sentiment.jsonl", "--out", tmp_path / "enc",
            "--preset", "tiny", "--max-steps", 2, "--max-tokens", 600, "--vocab-size", 500)
    assert r.exit_code == 0, r.output
    with pytest.raises(AttnError, match="pretraining run"):
        attn_cli.load(tmp_path / "enc")
