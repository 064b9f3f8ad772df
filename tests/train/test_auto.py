"""--preset auto through `attn train`: the note and config.json, explicit dims winning, the bad
inputs of a budget (too short, none at all), the held-out share and its standard error."""

import json

from conftest import DATA_DIR, cli

from attn_cli.data.tasks import holdout_size

SENTIMENT = f"{DATA_DIR}/sentiment.jsonl"
COMMON = ("--max-tokens", 600, "--vocab-size", 500)


def run_meta(path):
    return json.loads((path / "config.json").read_text())


def test_auto_sizes_by_max_steps_says_so_and_records_it(tmp_path):
    r = cli("train", "sentiment", "--data", SENTIMENT, "--out", tmp_path / "a", "--max-steps", 3, *COMMON)
    assert r.exit_code == 0, r.output
    meta = run_meta(tmp_path / "a")
    assert meta["preset"] == "auto" and meta["auto"]["steps"] == 3
    line = next(x for x in r.stderr.splitlines() if x.startswith("auto: d="))
    assert f"d={meta['model']['d_model']}, {meta['model']['n_enc_layers']} layer" in line
    saved = json.loads((tmp_path / "a/train_config.json").read_text())  # a resume rebuilds this shape
    assert saved["d_model"] == meta["model"]["d_model"] and saved["n_layers"] == meta["model"]["n_enc_layers"]
    evals = [json.loads(x) for x in (tmp_path / "a/metrics.jsonl").read_text().splitlines()]
    se = [e["accuracy_se"] for e in evals if e["event"] == "eval"][-1]
    assert f"± {se:.2g}" in r.stderr  # beside the best validation accuracy
    info = cli("info", tmp_path / "a")
    assert info.exit_code == 0 and "auto size" in info.stdout


def test_given_dims_win_over_auto(tmp_path):
    r = cli("train", "sentiment", "--data", SENTIMENT, "--out", tmp_path / "a", "--max-steps", 2, *COMMON,
            "--d-model", 48, "--heads", 3, "--layers", 3)
    assert r.exit_code == 0, r.output
    m = run_meta(tmp_path / "a")["model"]
    assert (m["d_model"], m["n_heads"], m["n_enc_layers"]) == (48, 3, 3)
    assert "(given: d_model=48, n_heads=3, n_enc_layers=3)" in r.stderr


def test_a_time_budget_too_short_for_the_smallest_model_is_refused_and_leaves_nothing(tmp_path):
    r = cli("train", "sentiment", "--data", SENTIMENT, "--out", tmp_path / "a", "--time-budget", "0.1s", *COMMON)
    assert r.exit_code == 2, r.output
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: --time-budget 0.1s is too short for even the smallest model") and "about" in last
    assert "Traceback" not in r.output and not (tmp_path / "a").exists()


def test_epochs_size_auto_from_the_tokens_of_those_epochs(tmp_path):
    r = cli("train", "sentiment", "--data", SENTIMENT, "--out", tmp_path / "a", "--epochs", 1, *COMMON)
    assert r.exit_code == 0, r.output  # --epochs sizes it too: from the epoch's tokens
    assert run_meta(tmp_path / "a")["auto"]["epochs"] is not None


def test_holdout_rule_for_classification_and_seq2seq():
    assert holdout_size(25_000, "sentiment") == 2_000  # IMDB: 2,000, not 1% (250)
    assert holdout_size(67_000, "sentiment") == 3_350  # 5%
    assert holdout_size(5_000, "sentiment") == 1_000  # never more than 20%
    assert holdout_size(29_000, "translate") == 290 and holdout_size(10**6, "summarize") == 2_000


def test_validation_reports_the_standard_error_of_the_accuracy():
    from attn_cli.eval.metrics import classification

    m = classification([1] * 80 + [0] * 20, [1] * 100, 2)
    assert m["accuracy"] == 80.0 and abs(m["accuracy_se"] - 4.0) < 1e-9  # sqrt(.8 * .2 / 100)


def test_ten_examples_with_a_time_budget_get_the_smallest_model_and_a_note(tmp_path):
    rows = [json.loads(x) for x in open(SENTIMENT, encoding="utf-8")][:10]
    data = tmp_path / "ten.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    r = cli("train", "sentiment", "--data", data, "--out", tmp_path / "a", "--time-budget", "3s",
            "--max-tokens", 600, "--vocab-size", 300)
    assert r.exit_code == 0, r.output
    assert "the data is very small" in r.stderr and "the smallest model" in r.stderr
    assert run_meta(tmp_path / "a")["model"]["d_model"] == 64


def test_a_time_budget_run_ends_with_its_learning_rate_near_zero(tmp_path):
    """The schedule decays to zero at the estimated end of the budget, re-estimated every 10
    steps with the evaluations still due (at most 10% of the peak left here: a short run on a
    shared machine; the 10-minute study runs end under 1%: docs/benchmarks-budget.md)."""
    r = cli("train", "sentiment", "--data", SENTIMENT, "--out", tmp_path / "a", "--time-budget", "10s",
            "--log-every", 1, *COMMON)
    assert r.exit_code == 0, r.output
    rows = [json.loads(x) for x in (tmp_path / "a/metrics.jsonl").read_text().splitlines()]
    lrs = [x["lr"] for x in rows if x["event"] == "train"]
    assert len(lrs) > 30 and lrs[-1] <= 0.1 * max(lrs), (lrs[-1], max(lrs))
    assert sum(x["event"] == "eval" for x in rows) <= 11  # about 10 evaluations, not one per 500 steps
