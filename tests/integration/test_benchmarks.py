"""The benchmark scripts' pure parts: rebuilding a run's command, merging results files."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import baselines  # noqa: E402
import quality  # noqa: E402

from attn_cli.config import TrainConfig  # noqa: E402


def fake_run(path: Path, **options) -> Path:
    path.mkdir()
    cfg = TrainConfig(task="sentiment", **options)
    (path / "train_config.json").write_text(json.dumps(cfg.to_dict()))
    (path / "config.json").write_text(json.dumps({
        "task": "sentiment", "languages": {"src": None, "tgt": None},
        "data": {"train": "data/sst2", "valid": None}}))
    return path


def test_recorded_command_lists_only_non_default_options(tmp_path):
    run = fake_run(tmp_path / "r", lr=3e-4, ema=0.999, time_budget=900.0, compile=True)
    cmd, cfg = quality.recorded_command(run)
    assert cmd == (f"attn train sentiment --data data/sst2 --lr 0.0003 --ema 0.999 --time-budget 15m "
                   f"--compile --out {run}")
    assert cfg["ema"] == 0.999


def test_report_merges_results_files_later_wins(tmp_path, capsys):
    def results(path, task, acc, date):
        meta = {"date": date, "budget": "cpu", "hardware": "cpu", "torch": "t", "attn": "a",
                "command": f"quality.py --tasks {task}"}
        row = {"task": task, "split": "test", "preset": "small", "metrics": {"accuracy": acc, "macro_f1": acc},
               "time_budget": "1m"}
        path.write_text(json.dumps({"meta": meta, "baselines": {}, "results": [row]}))
        return path

    a = results(tmp_path / "a.json", "sst2", 80.0, "2026-11-25T10:00:00")
    b = results(tmp_path / "b.json", "imdb", 85.0, "2026-11-26T10:00:00")
    c = results(tmp_path / "c.json", "sst2", 81.0, "2026-11-26T11:00:00")
    assert quality.main(["--tasks", "sst2,imdb", "--report", str(a), str(b), str(c), "--md", "-"]) == 0
    out = capsys.readouterr().out
    assert "acc 81.0" in out and "acc 80.0" not in out and "acc 85.0" in out
    assert "2026-11-25, 2026-11-26" in out


def test_run_option_rejects_a_directory_that_is_not_a_run(tmp_path):
    with pytest.raises(SystemExit):
        quality.main(["--tasks", "sst2", "--run", f"sst2={tmp_path}", "--dry-run"])


def test_sentiment_errors_buckets_and_ensemble():
    import sentiment_errors as se

    assert [se.bucket_of(n) for n in (0, 9, 10, 29, 30, 500)] == [0, 0, 1, 2, 3, 3]
    gold, pred, words = [1, 0, 1, 1, 0], [1, 1, 1, 0, 0], [3, 4, 12, 40, 41]
    overall, per = se.accuracy_by_bucket(gold, pred, words)
    assert overall == 60.0 and per == [50.0, 100.0, None, 50.0]
    # the mean of the probabilities, not a majority vote: two 0.6 votes for class 0 lose to one 1.0
    a = [[0.6, 0.4], [0.2, 0.8]]
    b = [[0.6, 0.4], [0.9, 0.1]]
    c = [[0.0, 1.0], [0.9, 0.1]]
    assert se.ensemble([a]) == [0, 1]
    assert se.ensemble([a, b, c]) == [1, 0]


def test_tfidf_probabilities_match_its_predictions(tmp_path):
    pytest.importorskip("sklearn", reason="the TF-IDF baseline needs scikit-learn (pip install -e '.[dev]')")
    good = ["a fine warm film", "a warm and fine story", "fine acting , warm heart", "warm fine fun"]
    bad = ["a dull cold film", "a cold and dull story", "dull acting , cold heart", "cold dull mess"]
    rows = [{"text": t, "label": 1} for t in good] + [{"text": t, "label": 0} for t in bad]
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    test = [{"text": "warm fine film", "label": 1}, {"text": "cold dull film", "label": 0}]
    (tmp_path / "test.jsonl").write_text("\n".join(json.dumps(r) for r in test) + "\n")
    labels, probs = baselines.tfidf_probabilities(tmp_path, "test")
    assert labels == [0, 1] and all(abs(sum(p) - 1) < 1e-9 for p in probs)
    assert probs[0][1] > 0.5 > probs[1][1]  # label order: column 1 is label 1
    assert baselines.tfidf_predictions(tmp_path, "test") == [1, 0]


def test_quality_pretrain_runs_the_recipes_pipeline(capsys):
    """--pretrain SHARE: attn pretrain with the task's recipe for SHARE of the budget, then
    attn train --init-from it for the rest, and the test split evaluated on the fine-tuned run."""
    assert quality.main(["--tasks", "imdb", "--pretrain", "0.25", "--time", "40m", "--dry-run"]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if not ln.startswith("#")]
    pre, ft, ev = lines
    assert " pretrain sentiment " in pre and "imdb-pretrain-cpu.toml" in pre and "--time-budget 10m" in pre
    pre_dir = pre.split("--out ")[1].split()[0]
    assert f"--init-from {pre_dir}" in ft and "imdb-small-cpu.toml" in ft and "--time-budget 30m" in ft
    assert ev.split("--model ")[1].split()[0] == ft.split("--out ")[1].split()[0]
    with pytest.raises(SystemExit):
        quality.main(["--tasks", "multi30k", "--pretrain", "0.5", "--dry-run"])  # no recipe
    assert "no pretraining recipe for multi30k" in capsys.readouterr().err


def test_budget_study_commands_and_report(tmp_path):
    import budget

    args = budget.parse_args(["--data-root", "/d"])
    task = budget.TASKS["dialogsum"]
    auto = budget.train_command(task, args, tmp_path / "r", "10m", "auto", 2)
    assert "--preset" not in auto and "--max-len" not in auto  # all options default: auto by default
    assert auto[auto.index("--time-budget") + 1] == "10m" and auto[auto.index("--seed") + 1] == "2"
    assert budget.train_command(task, args, tmp_path / "r", "10m", "small", 1)[-2:] == ["--preset", "small"]
    run = tmp_path / "run"
    (run / "last").mkdir(parents=True)
    (run / "last/state.json").write_text(json.dumps({"step": 90, "horizon": 100}))
    (run / "train_config.json").write_text(json.dumps({"warmup": 10, "max_steps": None}))
    assert budget.final_lr_share(run) == pytest.approx(1 - 80 / 90)
    row = {"task": "sst2", "budget": "10m", "preset": "auto", "seed": 1, "test": {"accuracy": 81.27, "macro_f1": 81.2},
           "baseline": {"name": "TF-IDF", "accuracy": 83.09}, "shape": "d=192 L=3 ff=768", "params": 2.9e6,
           "steps": 913, "epochs": 4.71, "best_valid": 80.62, "final_lr_share": 0.0, "load_before": 0.5,
           "load_after": 1.9, "date": "2026-12-07"}
    table = budget.report([row, {**row, "preset": "tiny", "error": "attn train exited 1"}])
    assert "| 10m | auto | 1 | 81.27 | 81.20 | 83.09 (TF-IDF) | d=192 L=3 ff=768 | 2.90M | 913 |" in table
    assert "tiny" not in table  # failed runs are left out
