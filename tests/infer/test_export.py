"""`attn export` and the ctranslate2 engine on tiny models: float32 CTranslate2 gives torch's
tokens and scores (greedy and beam 4) and sentiment
probabilities, and every bad export or option is a one-line error (exit 2)."""

import json
import os
import shutil
import sys

import pytest
from conftest import DATA_DIR, Quiet
from conftest import cli, one_line_error

pytest.importorskip("ctranslate2")

from attn_cli.config import TrainConfig  # noqa: E402
from attn_cli.data.spec import Fields  # noqa: E402
from attn_cli.errors import AttnError  # noqa: E402
from attn_cli.infer.decoding import DecodeConfig  # noqa: E402
from attn_cli.infer.engine import EngineOptions  # noqa: E402
from attn_cli.infer.engines import open_engine  # noqa: E402
from attn_cli.infer.export import export_run  # noqa: E402
from attn_cli.infer.runs import encode_inputs  # noqa: E402
from attn_cli.train.setup import RunRequest, train_run  # noqa: E402

TR = ("translate.it-en.jsonl", Fields(src_lang="it", tgt_lang="en"))
TRAINED = {"translate": ("translate", TR), "summarize": ("summarize", ("summarize.jsonl", Fields())),
           "sentiment": ("sentiment", ("sentiment.jsonl", Fields()))}
DATA = {"translate": TR[0], "summarize": "summarize.jsonl", "sentiment": "sentiment.jsonl"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ct2runs")
    for name, (task, (data, fields)) in TRAINED.items():
        cfg = TrainConfig(task=task, preset="tiny", max_steps=30, eval_every=1000, eval_samples=2,
                          vocab_size=500, max_tokens=1000, warmup=10, lr=3e-3)
        train_run(RunRequest(data=f"{DATA_DIR}/{data}", out=root / name, fields=fields), cfg, Quiet())
    for name in TRAINED:
        export_run(root / name)
    return root


def _inputs(task, n=20):
    with open(f"{DATA_DIR}/{DATA[task]}", encoding="utf-8") as fh:
        rows = [json.loads(x) for x in fh]
    key = {"translate": "it", "summarize": "document"}.get(task, "text")
    return [r[key] for r in rows[:n]]


def _both(runs, name, task):
    torch_eng = open_engine(runs / name, task, EngineOptions("torch"))
    ct2_eng = open_engine(runs / name, task, EngineOptions("ctranslate2"))
    assert ct2_eng.name == "ctranslate2" and ct2_eng.describe() == "ctranslate2 (cpu, float32)"
    return torch_eng, ct2_eng


@pytest.mark.parametrize("name", ["translate", "summarize"])
@pytest.mark.parametrize("beam", [1, 4])
def test_float32_ctranslate2_equals_torch(runs, name, beam):
    task = "summarize" if name == "summarize" else "translate"
    torch_eng, ct2_eng = _both(runs, name, task)
    ids, _ = encode_inputs(torch_eng, _inputs(name))
    for cfg in (DecodeConfig(beam=beam, length_penalty=0.6, max_len_a=1.2, max_len_b=5),
                DecodeConfig(beam=beam, length_penalty=0.0, max_len_a=0.0, max_len_b=15)):
        want, got = torch_eng.generate(ids, cfg), ct2_eng.generate(ids, cfg)
        assert [o for o, _ in got] == [o for o, _ in want]
        assert max(abs(a - b) for (_, a), (_, b) in zip(want, got, strict=True)) < 1e-3


def test_blocking_options_keep_greedy_tokens_and_sampling_is_seeded(runs):
    torch_eng, ct2_eng = _both(runs, "summarize", "summarize")
    ids, _ = encode_inputs(torch_eng, _inputs("summarize", 8))
    cfg = DecodeConfig(beam=1, max_len_a=0.0, max_len_b=20, min_len=5, no_repeat_ngram=2)
    got = ct2_eng.generate(ids, cfg)
    assert [o for o, _ in got] == [o for o, _ in torch_eng.generate(ids, cfg)]
    for out, _ in got:  # CTranslate2's own n-gram blocking and minimum length
        assert len(out) >= 4 and len(set(zip(out, out[1:], strict=False))) == len(out) - 1
    sample = DecodeConfig(sample=True, top_k=20, top_p=0.9, temperature=0.8, max_len_a=0.0, max_len_b=10, seed=3)
    first = ct2_eng.generate(ids, sample)
    assert first == ct2_eng.generate(ids, sample) and all(len(o) <= 10 for o, _ in first)


def test_sentiment_probabilities_equal_torch(runs):
    torch_eng, ct2_eng = _both(runs, "sentiment", "sentiment")
    ids, _ = encode_inputs(torch_eng, _inputs("sentiment", 40) + [""])
    want, got = torch_eng.classify(ids), ct2_eng.classify(ids)
    assert max(abs(a - b) for p, q in zip(want, got, strict=True) for a, b in zip(p, q, strict=True)) < 1e-4


def test_cli_auto_uses_export_and_says_so(runs, tmp_path):
    m = runs / "translate"
    r = cli("translate", "-m", m, "--json", "--beam", "2", "Ho fame.", "Dov'è la stazione?")
    assert r.exit_code == 0, r.output
    rows = [json.loads(x) for x in r.stdout.splitlines()]
    assert [x["engine"] for x in rows] == ["ctranslate2"] * 2
    t = cli("translate", "-m", m, "--json", "--beam", "2", "--engine", "torch", "Ho fame.", "Dov'è la stazione?")
    assert [json.loads(x)["output"] for x in t.stdout.splitlines()] == [x["output"] for x in rows]
    r = cli("sentiment", "-m", runs / "sentiment", "--json", "--threads", "2", "I loved it.")
    assert r.exit_code == 0 and json.loads(r.stdout)["engine"] == "ctranslate2"
    r = cli("eval", "-m", runs / "sentiment", "--data", f"{DATA_DIR}/sentiment.jsonl", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["engine"] == "ctranslate2 (cpu, float32)"
    r = cli("info", runs / "sentiment")
    assert r.exit_code == 0 and "CTranslate2, none weights" not in r.stdout and "CTranslate2" in r.stdout


def test_show_attention_falls_back_to_torch_with_a_note(runs):
    r = cli("translate", "-m", runs / "translate", "--show-attention", "Ho fame.")
    assert r.exit_code == 0 and "from the torch model" in r.stderr


def test_int8_export_replaces_the_previous_one(runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(runs / "sentiment", run)
    r = cli("export", run, "--quantize", "int8")
    assert r.exit_code == 0, r.output
    assert json.loads((run / "ct2" / "attn_export.json").read_text())["quantization"] == "int8"
    assert "int8 weights" in cli("info", run).stdout and not list(run.glob(".ct2*"))
    r = cli("sentiment", "-m", run, "--json", "--compute-type", "int8", "I loved it.")
    assert r.exit_code == 0 and json.loads(r.stdout)["engine"] == "ctranslate2"


def test_export_to_out_and_bad_quantize(runs, tmp_path):
    r = cli("export", runs / "translate", "--out", tmp_path / "elsewhere")
    assert r.exit_code == 0 and (tmp_path / "elsewhere" / "model.bin").is_file()
    one_line_error(cli("export", runs / "translate", "--quantize", "int4"), "unknown --quantize 'int4'")


def _copy(runs, tmp_path, name="translate"):
    run = tmp_path / name
    shutil.copytree(runs / name, run)
    return run


def test_bad_run_dirs_and_exports(runs, tmp_path):
    one_line_error(cli("export", tmp_path), "is not a model directory")
    one_line_error(cli("translate", "-m", tmp_path / "nope", "--engine", "ctranslate2", "x"), "does not exist")
    run = _copy(runs, tmp_path)
    (run / "ct2" / "model.bin").unlink()
    one_line_error(cli("translate", "-m", run, "ciao"), "has no model.bin")
    run = _copy(runs, tmp_path, "sentiment")
    voc = run / "ct2" / "vocabulary.json"
    voc.write_text(json.dumps(json.loads(voc.read_text())[:-3]))
    one_line_error(cli("sentiment", "-m", run, "x"), "vocabulary size does not match")
    foreign = _copy(runs, tmp_path, "summarize")
    shutil.rmtree(foreign / "ct2")
    shutil.copytree(runs / "sentiment" / "ct2", foreign / "ct2")
    one_line_error(cli("summarize", "-m", foreign, "x"), "not of this run")
    (foreign / "ct2" / "attn_export.json").unlink()
    one_line_error(cli("summarize", "-m", foreign, "x"), "not written by attn export")


def test_ctranslate2_engine_errors(runs, tmp_path):
    run = _copy(runs, tmp_path)
    shutil.rmtree(run / "ct2")
    one_line_error(cli("translate", "-m", run, "--engine", "ctranslate2", "ciao"), f"run attn export {run}")
    r = cli("translate", "-m", run, "--json", "ciao")  # auto: torch, quietly
    assert r.exit_code == 0 and json.loads(r.stdout)["engine"] == "torch"
    one_line_error(cli("translate", "-m", runs / "translate", "--compute-type", "float16", "ciao"),
                   "--compute-type float16 needs a CUDA GPU")
    one_line_error(cli("translate", "-m", runs / "translate", "--engine", "onnx", "ciao"), "unknown --engine")
    one_line_error(cli("translate", "-m", runs / "translate", "--engine", "torch", "--compute-type", "int8",
                       "ciao"), "--compute-type applies to the ctranslate2 engine only")


def test_stale_export_falls_back_to_torch_with_a_note(runs, tmp_path):
    run = _copy(runs, tmp_path)
    weights = run / "model.safetensors"
    from safetensors.torch import load_file, save_file

    state = load_file(str(weights))
    state["encoder.ln_out.bias"] += 0.01  # trained on: same shapes, other weights
    save_file(state, str(weights))
    r = cli("translate", "-m", run, "--json", "ciao")
    assert r.exit_code == 0 and json.loads(r.stdout)["engine"] == "torch"
    assert "trained after the export" in r.stderr
    one_line_error(cli("translate", "-m", run, "--engine", "ctranslate2", "ciao"), "trained after the export")
    os.utime(weights)  # a copied run (new mtime, same bytes) is still fresh
    shutil.copy(runs / "translate" / "model.safetensors", weights)
    r = cli("translate", "-m", run, "--json", "ciao")
    assert json.loads(r.stdout)["engine"] == "ctranslate2"


def test_killed_export_leaves_no_ct2_and_failure_keeps_the_old(runs, tmp_path, monkeypatch):
    run = _copy(runs, tmp_path)
    shutil.rmtree(run / "ct2")
    (run / ".ct2.abc123.tmp").mkdir()  # what a SIGKILL mid-export leaves: a staging directory
    (run / ".ct2.abc123.tmp" / "model.bin").write_bytes(b"half")
    r = cli("translate", "-m", run, "--json", "ciao")
    assert r.exit_code == 0 and json.loads(r.stdout)["engine"] == "torch"
    import ctranslate2.specs.model_spec as ms

    def boom(self, output_dir):
        (open(os.path.join(output_dir, "model.bin"), "wb")).write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ms.ModelSpec, "save", boom)
    r = cli("export", run)
    one_line_error(r, "No space left on device", code=1)
    assert not (run / "ct2").exists() and [p.name for p in run.glob(".ct2*")] == [".ct2.abc123.tmp"]


def test_missing_ctranslate2_is_a_one_line_error(runs, monkeypatch):
    monkeypatch.setitem(sys.modules, "ctranslate2", None)
    one_line_error(cli("translate", "-m", runs / "translate", "--engine", "ctranslate2", "ciao"),
                   "pip install")
    r = cli("translate", "-m", runs / "translate", "--json", "ciao")
    assert r.exit_code == 0 and json.loads(r.stdout)["engine"] == "torch"
    with pytest.raises(AttnError, match="not installed"):
        export_run(runs / "translate")
