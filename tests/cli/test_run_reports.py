"""What a run says about itself: validation reused from training data is never called held out
(train's final table, attn info, the model card), integer labels become named classes, eval on
a single file says it scores every row, the card names the run as given and its real shape,
and a weak run ends with a hint."""

import csv
import json
import re
import shutil
from types import SimpleNamespace

import pytest
from conftest import DATA_DIR, cli, one_line_error

REUSED = "reused training examples, not held out"


def flat(text):
    """Rich tables' text on one line: borders gone, wrapped cells joined."""
    return " ".join(re.sub(r"[│┃┌┐└┘├┤┬┴┼─━┏┓┗┛┡┩╇]", " ", text).split())


@pytest.fixture(scope="module")
def stars(tmp_path_factory):
    """A sentiment run on a CSV whose labels are stars 1 and 5 (300 rows: validation reused)."""
    root = tmp_path_factory.mktemp("stars")
    rows = [json.loads(line) for line in open(f"{DATA_DIR}/sentiment.jsonl", encoding="utf-8")][:300]
    with open(root / "stars.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "stars"])
        w.writerows([r["text"], 5 if r["label"] == "positive" else 1] for r in rows)
    out = root / "runs" / "stars"
    r = cli("train", "sentiment", "--data", root / "stars.csv", "--label-field", "stars", "--out", out,
            "--preset", "tiny", "--max-steps", "10", "--eval-every", "10", "--vocab-size", "500",
            "--warmup", "5", "--max-tokens", "2000")
    assert r.exit_code == 0, r.output
    return SimpleNamespace(root=root, out=out, data=root / "stars.csv", result=r)


def test_integer_labels_train_as_named_classes(stars):
    assert "the integers 1, 5 are 2 classes" in stars.result.stderr
    meta = json.loads((stars.out / "config.json").read_text())
    assert meta["label_names"] == ["1", "5"] and meta["model"]["num_labels"] == 2
    assert meta["data"]["valid_reused"] is True and meta["data"]["valid_examples"] == 200


def test_final_table_info_and_card_say_validation_is_reused(stars):
    assert f"step 10; on {REUSED}" in flat(stars.result.stderr)
    r = cli("info", stars.out)
    assert r.exit_code == 0 and f"validation 200 {REUSED}" in flat(r.stdout), r.stdout
    assert f"step 10; on {REUSED}" in flat(r.stdout) and "validation held out" not in flat(r.stdout)
    card = (stars.out / "README.md").read_text()
    assert f"validation: 200 {REUSED}" in card and "see notes" not in card


def test_card_names_the_run_as_given_and_its_real_shape(stars):
    card = (stars.out / "README.md").read_text()
    m = json.loads((stars.out / "config.json").read_text())["model"]
    assert f"`attn eval --model {stars.out} --data SPEC" in card
    assert f"layers {m['n_enc_layers']}+0," in card and "n_dec_layers" not in card
    assert f"d_model {m['d_model']}, heads {m['n_heads']}," in card


def test_eval_and_predictions_use_the_label_names(stars, tmp_path):
    hyp = tmp_path / "hyp.txt"
    r = cli("eval", "-m", stars.out, "--data", stars.data, "-o", hyp)
    assert r.exit_code == 0, r.output
    assert set(hyp.read_text().split()) <= {"1", "5"} and len(hyp.read_text().splitlines()) == 300
    assert "confusion" in r.stdout and re.search(r"┃\s+┃\s+1 ┃\s+5 ┃", r.stdout), r.stdout
    r = cli("sentiment", "-m", stars.out, "--json", "a fine product")
    assert json.loads(r.stdout)["label"] in ("1", "5")


def test_eval_on_one_file_scores_every_row_with_a_note(stars, tmp_path):
    r = cli("eval", "-m", stars.out, "--data", stars.data, "--split", "test_2016", "--json")
    res = json.loads(r.stdout)
    assert r.exit_code == 0 and res["split"] is None and res["examples"] == 300
    assert "one file with no splits: scoring all its 300 rows" in flat(r.stderr), r.stderr
    assert len(res["confusion"]) == 2
    split_dir = tmp_path / "splits"
    split_dir.mkdir()
    lines = stars.data.read_text().splitlines()
    (split_dir / "test.csv").write_text("\n".join(lines[:41]) + "\n")
    r = cli("eval", "-m", stars.out, "--data", split_dir, "--json")
    res = json.loads(r.stdout)
    assert res["split"] == "test" and res["examples"] == 40 and "no splits" not in r.stderr
    one_line_error(cli("eval", "-m", stars.out, "--data", split_dir, "--split", "validation"),
                   "no 'validation' split")


def test_config_without_or_with_a_bad_valid_reused(stars, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(stars.out, old)
    meta = json.loads((old / "config.json").read_text())
    for key in ("valid_reused", "valid_majority"):  # runs of earlier versions
        meta["data"].pop(key)
    (old / "config.json").write_text(json.dumps(meta))
    r = cli("info", old)
    assert r.exit_code == 0 and "validation held out (200)" in flat(r.stdout), r.stdout
    meta["data"]["valid_reused"] = "yes"
    (old / "config.json").write_text(json.dumps(meta))
    one_line_error(cli("info", old), "field 'data.valid_reused' has the wrong type (str)")


def test_num_labels_is_for_sentiment(tmp_path):
    one_line_error(cli("train", "translate", "--data", f"{DATA_DIR}/translate.it-en.jsonl", "--src", "it",
                       "--tgt", "en", "--out", tmp_path / "r", "--num-labels", "3"),
                   "--num-labels is for sentiment")


def test_weak_run_ends_with_a_hint(tmp_path, capsys):
    from attn_cli.cli.train import _summary
    from attn_cli.train.records import weak_hint

    assert weak_hint("translate", 25.8, None) is None and weak_hint("sentiment", 80.0, 50.0) is None
    assert "BLEU 3.2, under 10" in weak_hint("translate", 3.2, None)
    assert "ROUGE-1 9.0, under 15" in weak_hint("summarize", 9.0, None)
    assert "within 5 points of the 60.0" in weak_hint("sentiment", 62.0, 60.0)
    assert weak_hint("sentiment", 62.0, None) is None  # (a run of an earlier version)

    (tmp_path / "config.json").write_text(json.dumps({"data": {"valid_reused": True, "valid_majority": 60.0}}))
    state = {"step": 52, "train_seconds": 30.0, "tokens": 1000, "best": 61.0, "best_step": 50}
    result = SimpleNamespace(state=state, reason="reached --max-steps 52", run_dir=tmp_path, params=10)
    _summary(result, SimpleNamespace(task="sentiment", objective=None))
    err = capsys.readouterr().err
    assert f"step 50; on {REUSED}" in flat(err)
    hint = [line for line in err.splitlines() if line.startswith("hint:")]
    assert len(hint) == 1 and "more steps (--max-steps, --time-budget) and more data" in hint[0]
    (tmp_path / "config.json").write_text(json.dumps({"data": {"valid_majority": 50.0}}))
    _summary(result, SimpleNamespace(task="sentiment", objective=None))
    err = capsys.readouterr().err
    assert "hint:" not in err and "reused" not in err  # 61 is 11 points above always answering one label
