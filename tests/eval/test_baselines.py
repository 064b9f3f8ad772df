"""Baselines (attn_cli/eval/baselines.py): TF-IDF + LR, lead-3 and copy-the-source on hand-made data,
beside the model in attn train (summary table, metrics.jsonl, model card) and attn eval --baseline."""

import json
from types import SimpleNamespace

import pytest
from conftest import DATA_DIR, write_jsonl
from typer.testing import CliRunner

from attn_cli.cli.main import app
from attn_cli.eval import baselines as B

runner = CliRunner()
POS = ["a good film", "great acting and a good story", "good fun", "a great cast", "great and good"]
NEG = ["a bad film", "awful acting and a bad story", "bad fun", "an awful cast", "awful and bad"]


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


# ----------------------------------------------------------------- the functions


def test_tfidf_on_a_separable_toy_set_is_perfect_and_the_cap_is_stated():
    texts, labels = POS + NEG, [1] * 5 + [0] * 5
    r = B.sentiment_baseline(texts, labels, ["good good", "bad awful"], [1, 0], 2)
    assert r["accuracy"] == 100.0 and r["macro_f1"] == 100.0 and r["examples"] == 2
    assert r["fit_rows"] == r["train_rows"] == 10 and B.fit_note(r) == "fit on 10 training rows"
    capped = B.sentiment_baseline(texts * 3, labels * 3, ["good", "bad"], [1, 0], 2, max_rows=12)
    assert (capped["fit_rows"], capped["train_rows"]) == (12, 30)
    assert "12 of 30 training rows" in B.describe(capped) and "the cap" in B.describe(capped)
    assert list(B.sample_rows(30, 12, seed=1)) == list(B.sample_rows(30, 12, seed=1))  # seeded
    clf = B.fit_tfidf(["cold rain", "warm sun"], ["neg", "pos"])  # every n-gram once: min_df 1
    assert clf.classes == ["neg", "pos"] and clf.predict(["cold rain"]) == ["neg"]


def test_lead_takes_three_sentences_or_three_dialogue_turns():
    assert B.lead("One is here. Two! Three? Four. Five.") == "One is here.\nTwo!\nThree?"
    assert B.lead("Short.") == "Short."
    dialogue = "#Person1#: Hi. How are you?\n#Person2#: Fine.\n#Person1#: Good.\n#Person2#: Bye."
    assert B.lead(dialogue) == "Hi. How are you?\nFine.\nGood."
    assert B.lead(dialogue, strip_speakers=False).splitlines()[0] == "#Person1#: Hi. How are you?"
    # the same dialogue decoded from token ids: SentencePiece turned its newlines into spaces
    assert B.lead(dialogue.replace("\n", " ")) == "Hi. How are you?\nFine.\nGood."
    samsum = "Amanda: hi. ok\nJerry: hello\nAmanda: fine\nJerry: bye"
    assert B.lead(samsum) == "Amanda: hi. ok\nJerry: hello\nAmanda: fine"
    # paragraphs are not turns: lead-3 counts sentences across them
    assert B.lead("First one. Second one.\nThird one. Fourth one.") == "First one.\nSecond one.\nThird one."


def test_summarize_and_translate_baselines_score_against_references():
    doc = "The cat sat on the mat. It was warm. Then it slept. Later it left."
    r = B.summarize_baseline([doc], [["The cat sat on the mat. It was warm. Then it slept.", "other"]])
    assert r["name"] == "lead-3" and r["rouge1"] == pytest.approx(100.0) and r["examples"] == 1
    t = B.translate_baseline(["the cat sat on the mat .", "a dog"], ["the cat sat on the mat .", "a dog"])
    assert t["bleu"] == pytest.approx(100.0) and t["chrf"] == pytest.approx(100.0)
    assert B.translate_baseline(["der Hund"], ["the dog"])["bleu"] < 10


def test_verdict_only_when_the_baseline_wins():
    base = {"name": "TF-IDF 1-2-grams + LR", "accuracy": 83.1}
    assert B.wins("sentiment", base, 81.2) and not B.wins("sentiment", base, 85.0)
    assert not B.wins("sentiment", base, None)
    assert B.verdict("sentiment", base, 81.2) == ("the baseline beats the model on validation accuracy: "
                                                  "TF-IDF 1-2-grams + LR 83.1 vs the model's 81.2")
    assert B.verdict("sentiment", base, 90.0) is None


class Toks:
    """A stand-in tokenizer: id i is the word WORDS[i]."""

    WORDS = ["good", "bad", "film", "great", "awful"]
    src = SimpleNamespace(decode=lambda ids: " ".join(Toks.WORDS[i] for i in ids))


def test_for_run_decodes_the_runs_ids_and_run_baseline_skips_with_a_note(monkeypatch):
    train = [([0, 2], 1), ([3, 2], 1), ([0, 3], 1), ([1, 2], 0), ([4, 2], 0), ([1, 4], 0)]
    valid = [([0], 1), ([4], 0)]
    r = B.for_run("sentiment", train, valid, [], Toks, eval_samples=1, num_labels=2)
    assert r["accuracy"] == 100.0 and r["fit_rows"] == 6 and "decoded" in r["fit_on"]
    s = B.for_run("translate", [], [([0, 2], [9]), ([1], [9])], ["good film", "x"], Toks, eval_samples=1)
    assert s["examples"] == 1 and s["chrf"] == pytest.approx(100.0)  # only the first eval_samples
    notes = []
    cfg = SimpleNamespace(task="sentiment", stream=False, eval_samples=5, seed=1, objective=None)
    data = SimpleNamespace(train=train, valid=valid, refs=[], label_names=["neg", "pos"])
    assert B.run_baseline(cfg, data, Toks, notes.append)["accuracy"] == 100.0
    assert B.run_baseline(SimpleNamespace(**{**vars(cfg), "objective": "mlm"}), data, Toks, notes.append) is None
    assert B.run_baseline(SimpleNamespace(**{**vars(cfg), "stream": True}), data, Toks, notes.append) is None
    monkeypatch.setattr(B, "fit_tfidf", lambda *a: (_ for _ in ()).throw(ValueError("solver failed\nmore")))
    assert B.run_baseline(cfg, data, Toks, notes.append) is None
    assert notes == ["baseline: skipped under --stream (the TF-IDF baseline needs the training rows; "
                     "attn eval --baseline computes it from the SPEC)",
                     "baseline: skipped (ValueError: solver failed)"]


# ----------------------------------------------------------------- attn train and attn eval


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Tiny sentiment and translate runs through the CLI (2 steps: only the baseline matters),
    with their summary output."""
    root = tmp_path_factory.mktemp("baseline-runs")
    out = {}
    for task, data, extra in (("sentiment", "sentiment.jsonl", []),
                              ("translate", "translate.it-en.jsonl", ["--src", "it", "--tgt", "en"])):
        r = cli("train", task, "--data", f"{DATA_DIR}/{data}", "--out", root / task, "--preset", "tiny",
                "--max-steps", 2, "--vocab-size", 500, "--max-tokens", 1000, "--eval-samples", 4, *extra)
        assert r.exit_code == 0, r.output
        out[task] = r.stderr
    return root, out


def test_train_shows_records_and_cards_the_baseline(runs):
    root, stderr = runs
    for task, name, key in (("sentiment", "TF-IDF 1-2-grams + LR", "accuracy"),
                            ("translate", "copy the source", "bleu")):
        rows = [json.loads(x) for x in (root / task / "metrics.jsonl").read_text().splitlines()]
        base = [r for r in rows if r["event"] == "baseline"]
        assert len(base) == 1 and base[0]["name"] == name and base[0]["step"] == 2
        best = max(r[key] for r in rows if r["event"] == "eval")
        assert f"baseline ({name})" in stderr[task] and f"{base[0][key]:.2f} vs model {best:.2f}" in stderr[task]
        card = (root / task / "README.md").read_text()
        assert "## Baseline on the same validation data" in card
        assert f"| {key} | {best:.2f} | {base[0][key]:.2f} |" in card
    sentiment = [json.loads(x) for x in (root / "sentiment/metrics.jsonl").read_text().splitlines()][-1]
    assert sentiment["examples"] == 200 and sentiment["fit_rows"] == 340  # the 200 reused validation rows
    # two steps of a tiny model lose to TF-IDF on the sentences it was fit on: said in one line
    assert "The baseline beats the model on validation accuracy: TF-IDF 1-2-grams + LR 100.0" in stderr["sentiment"]
    assert "Note: the baseline beats the model" in (root / "sentiment/README.md").read_text()


def test_eval_baseline_table_and_json(runs, tmp_path):
    root, _ = runs
    r = cli("eval", "-m", root / "sentiment", "--data", f"{DATA_DIR}/sentiment.jsonl", "--baseline", "--json")
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert res["baseline"]["accuracy"] == 100.0 and res["baseline"]["wins"] is True
    assert "the evaluated rows themselves" in res["baseline"]["fit_on"]
    assert "baseline" not in json.loads(cli("eval", "-m", root / "sentiment", "--data",
                                            f"{DATA_DIR}/sentiment.jsonl", "--json").stdout)
    rows = [json.loads(x) for x in open(f"{DATA_DIR}/sentiment.jsonl")]
    fit, test = write_jsonl(tmp_path / "fit.jsonl", rows[:300]), write_jsonl(tmp_path / "test.jsonl", rows[300:])
    r = cli("eval", "-m", root / "sentiment", "--data", test, "--baseline", "--baseline-train", fit)
    assert r.exit_code == 0, r.output
    assert "baseline (TF-IDF 1-2-grams + LR)" in r.stdout and "fit on 300 training rows" in r.stdout
    assert "themselves" not in r.stdout
    r = cli("eval", "-m", root / "translate", "--data", f"{DATA_DIR}/translate.it-en.jsonl", "--beam", 1,
            "--baseline", "--json")
    assert r.exit_code == 0, r.output
    base = json.loads(r.stdout)["baseline"]
    assert base["name"] == "copy the source" and base["examples"] == 332 and 0 <= base["bleu"] < 20
