"""Inference commands (translate, summarize, sentiment), eval and info on tiny models trained on
the sample data: every input mode, JSON, attention pictures, and bad model directories."""

import json
import shutil

import pytest
from conftest import DATA_DIR, cli, one_line_error, train_tiny_runs
from typer.testing import CliRunner


runner = CliRunner()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return train_tiny_runs(tmp_path_factory.mktemp("runs"))


def test_translate_arguments_file_stdin_and_order(runs, tmp_path):
    m = runs / "translate"
    r = cli("translate", "-m", m, "--beam", "1", "Ho fame.", "Dov'è la stazione?")
    assert r.exit_code == 0, r.output
    assert len(r.stdout.splitlines()) == 2
    inp = tmp_path / "in.txt"
    inp.write_text("Ho fame.\n\nDov'è la stazione?\n")
    by_file = cli("translate", "-m", m, "--beam", "1", "-i", inp)
    by_stdin = cli("translate", "-m", m, "--beam", "1", input=inp.read_text())
    lines = by_file.stdout.split("\n")[:-1]
    assert by_file.stdout == by_stdin.stdout and len(lines) == 3 and lines[1] == ""
    assert [lines[0], lines[2]] == r.stdout.splitlines()  # batching restores input order


def test_translate_json_output_file_and_beam(runs, tmp_path):
    out = tmp_path / "o.jsonl"
    r = cli("translate", "-m", runs / "translate", "--json", "--beam", "3", "-o", out, "Ciao.", "Grazie.")
    assert r.exit_code == 0 and r.stdout == ""
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["input"] for x in rows] == ["Ciao.", "Grazie."]
    assert all(isinstance(x["output"], str) and x["score"] <= 0 for x in rows)


def test_show_attention_and_plot(runs, tmp_path):
    pytest.importorskip("matplotlib", reason="--plot needs matplotlib (pip install 'attn[plot]')")
    png = tmp_path / "a.png"
    r = cli("translate", "-m", runs / "translate", "--show-attention", "--plot", png, "Ho fame.")
    assert r.exit_code == 0, r.output
    assert "Ho" in r.stderr and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("task, text", [("translate", "Ho fame."), ("summarize", "A short document.")])
def test_plot_without_matplotlib_fails_before_any_work(runs, tmp_path, monkeypatch, task, text):
    import sys

    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)  # import now raises ImportError
    r = cli(task, "-m", runs / task, "--plot", tmp_path / "a.png", text)
    one_line_error(r, "--plot needs matplotlib")
    assert r.stdout == "" and "attn[plot]" in r.stderr and not (tmp_path / "a.png").exists()


def test_summarize_jsonl_and_paragraphs(runs):
    m = runs / "summarize"
    docs = json.dumps({"document": "The team met on Monday. They chose a new logo."}) + "\n" + \
        json.dumps({"document": "Rain is expected all week in the north."}) + "\n"
    r = cli("summarize", "-m", m, "--beam", "2", "--max-len-b", "10", input=docs)
    assert r.exit_code == 0, r.output and len(r.stdout.splitlines()) == 2
    r = cli("summarize", "-m", m, "--max-len-b", "10", "--json", input="First doc.\nStill first.\n\nSecond doc.\n")
    assert r.exit_code == 0 and [json.loads(x)["input"] for x in r.stdout.splitlines()] == \
        ["First doc.\nStill first.", "Second doc."]
    r = cli("summarize", "-m", m, "--sample", "--top-p", "0.9", "--seed", "3", "--max-len-b", "8", "A doc.")
    r2 = cli("summarize", "-m", m, "--sample", "--top-p", "0.9", "--seed", "3", "--max-len-b", "8", "A doc.")
    assert r.exit_code == 0 and r.stdout == r2.stdout


def test_sentiment_json_probabilities_and_explain(runs):
    m = runs / "sentiment"
    r = cli("sentiment", "-m", m, "--json", "I loved it.", "Terrible service.")
    rows = [json.loads(x) for x in r.stdout.splitlines()]
    assert len(rows) == 2
    for row in rows:
        assert set(row["probabilities"]) == {"negative", "positive"}  # the HTTP API's name
        assert abs(sum(row["probabilities"].values()) - 1) < 1e-3
        assert row["confidence"] == max(row["probabilities"].values())
    r = cli("sentiment", "-m", m, "--explain", "I loved it.")
    assert r.exit_code == 0 and r.stdout.strip() in ("negative", "positive")
    assert "most important:" in r.stderr


def test_eval_each_task(runs, tmp_path):
    r = cli("eval", "-m", runs / "sentiment", "--data", f"{DATA_DIR}/sentiment.jsonl", "--json")
    res = json.loads(r.stdout)
    assert r.exit_code == 0 and 0 <= res["accuracy"] <= 100 and len(res["confusion"]) == 2
    assert res["examples"] == 340
    hyp = tmp_path / "hyp.txt"
    r = cli("eval", "-m", runs / "translate", "--data", f"{DATA_DIR}/translate.it-en.jsonl", "--beam", "1",
            "-o", hyp)
    assert r.exit_code == 0, r.output
    assert "bleu" in r.stdout and "chrf" in r.stdout and len(hyp.read_text().splitlines()) == 332
    r = cli("eval", "-m", runs / "summarize", "--data", f"{DATA_DIR}/summarize.jsonl", "--json", "--beam", "1")
    assert r.exit_code == 0 and {"rouge1", "rouge2", "rougeL", "rougeLsum"} <= set(json.loads(r.stdout))


def test_info(runs):
    r = cli("info", runs / "sentiment")
    assert r.exit_code == 0 and "negative, positive" in r.stdout and "30 steps" in r.stdout


def test_wrong_task_missing_dir_and_corrupt_weights(runs, tmp_path):
    one_line_error(cli("translate", "-m", runs / "sentiment", "ciao"), "is a sentiment model, not a translate")
    one_line_error(cli("sentiment", "-m", tmp_path / "nope", "x"), "does not exist")
    bad = tmp_path / "bad"
    shutil.copytree(runs / "sentiment", bad)
    (bad / "model.safetensors").write_bytes(b"\x00" * 64)
    one_line_error(cli("sentiment", "-m", bad, "x"), "model.safetensors")


def test_hostile_config_fields(runs, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(runs / "translate", bad)
    meta = json.loads((bad / "config.json").read_text())
    for change, fragment in (({"evil": 1}, "unknown field 'evil'"),
                             ({"model": {**meta["model"], "d_model": -4}}, "d_model must be positive"),
                             ({"model": {**meta["model"], "n_heads": "4"}}, "n_heads")):
        (bad / "config.json").write_text(json.dumps({**meta, **change}))
        one_line_error(cli("translate", "-m", bad, "ciao"), fragment)


def test_output_is_atomic_on_failure(runs, tmp_path):
    out = tmp_path / "o.txt"
    out.write_text("previous\n")
    r = cli("translate", "-m", runs / "sentiment", "-o", out, "ciao")
    assert r.exit_code == 2 and out.read_text() == "previous\n"
