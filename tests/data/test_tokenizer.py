"""Tokenizer training, saving/loading, special ids, round trips and errors (CLI and library)."""

import json

import pytest
from conftest import DATA_DIR
from typer.testing import CliRunner

from attn_cli.cli.main import app
from attn_cli.data.tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID, Tokenizers

runner = CliRunner()
IT_EN = f"{DATA_DIR}/translate.it-en.jsonl"


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def joint_tok(tmp_path_factory):
    out = tmp_path_factory.mktemp("tok") / "joint"
    r = run("tokenizer", "train", "--data", IT_EN, "--src", "it", "--tgt", "en", "--vocab-size", 600,
            "--out", out)
    assert r.exit_code == 0, r.output
    return out


def test_joint_tokenizer_files_and_specials(joint_tok):
    assert {p.name for p in joint_tok.iterdir()} == {"tokenizer.model", "tokenizer.json"}
    toks = Tokenizers.load(joint_tok)
    assert toks.joint and toks.src.vocab_size == 600
    sp = toks.src.sp
    assert (sp.pad_id(), sp.unk_id(), sp.bos_id(), sp.eos_id()) == (PAD_ID, UNK_ID, BOS_ID, EOS_ID)
    info = json.loads((joint_tok / "tokenizer.json").read_text())
    assert info["joint"] is True and info["model_type"] == "unigram"


def test_round_trip_both_languages_and_unseen_characters(joint_tok):
    tok = Tokenizers.load(joint_tok).src
    for text in ("Dov'è la stazione? Vorrei un caffè.", "Where is the station? I'd like a coffee.",
                 "Zürich — naïve 東京 ✓"):
        ids = tok.encode(text)
        assert UNK_ID not in ids  # byte fallback covers unseen characters
        assert tok.decode(ids) == text


def test_encode_command_prints_pieces_ids_and_round_trip(joint_tok):
    r = run("tokenizer", "encode", "--tokenizer", joint_tok, "Buongiorno a tutti.")
    assert r.exit_code == 0
    lines = r.stdout.splitlines()
    assert lines[0] == "Buongiorno a tutti." and lines[1].startswith("pieces: ▁")
    ids = [int(x) for x in lines[2].split()[1:]]
    assert Tokenizers.load(joint_tok).src.decode(ids) == "Buongiorno a tutti."
    assert lines[3] == "round trip: exact"


def test_encode_json(joint_tok):
    r = run("tokenizer", "encode", "-t", joint_tok, "--json", "ciao", "hello")
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [row["text"] for row in rows] == ["ciao", "hello"] and all(row["round_trip"] for row in rows)


def test_separate_vocab_bpe(tmp_path):
    out = tmp_path / "sep"
    r = run("tokenizer", "train", "--data", IT_EN, "--src", "it", "--tgt", "en", "--vocab-size", 400,
            "--model-type", "bpe", "--separate-vocab", "--out", out)
    assert r.exit_code == 0, r.output
    toks = Tokenizers.load(out)
    assert not toks.joint and (out / "tokenizer.tgt.model").is_file()
    assert toks.src.pieces("la casa") != [] and toks.tgt.decode(toks.tgt.encode("the house")) == "the house"


def test_task_inferred_for_sentiment_and_summarize(tmp_path):
    for name in ("sentiment", "summarize"):
        r = run("tokenizer", "train", "--data", f"{DATA_DIR}/{name}.jsonl", "--vocab-size", 400,
                "--out", tmp_path / name)
        assert r.exit_code == 0, r.output
        assert name[:6] in r.stderr  # the summary table names the task


def test_max_sentences_samples(tmp_path):
    r = run("tokenizer", "train", "--data", IT_EN, "--src", "it", "--tgt", "en", "--vocab-size", 400,
            "--max-sentences", 100, "--out", tmp_path / "t")
    assert r.exit_code == 0, r.output


def test_lowercase_folds_case_in_training_and_encoding(tmp_path, joint_tok):
    r = run("tokenizer", "train", "--data", f"{DATA_DIR}/sentiment.jsonl", "--vocab-size", 400,
            "--lowercase", "--out", tmp_path / "lc")
    assert r.exit_code == 0, r.output
    assert "unigram, lowercase" in r.stderr
    lc, cased = Tokenizers.load(tmp_path / "lc").src, Tokenizers.load(joint_tok).src
    assert lc.encode("The Film Was GREAT .") == lc.encode("the film was great .")
    assert lc.decode(lc.encode("The Film")) == "the film"
    assert cased.encode("The Film") != cased.encode("the film")  # the default keeps case
    assert not any(c.isupper() for i in range(lc.vocab_size) for c in lc.id_to_piece(i)
                   if not lc.id_to_piece(i).startswith("<"))


# ----------------------------------------------------------------- bad input (exit 2, one line)


def assert_user_error(r, *fragments):
    assert r.exit_code == 2, r.output
    assert r.stderr.startswith("Error: ") and r.stderr.count("\n") == 1, r.stderr
    assert "Traceback" not in r.output
    for f in fragments:
        assert f in r.stderr, r.stderr


def test_vocab_too_large_names_the_maximum(tmp_path):
    r = run("tokenizer", "train", "--data", IT_EN, "--src", "it", "--tgt", "en", "--vocab-size", 50000,
            "--out", tmp_path / "t")
    assert_user_error(r, "--vocab-size 50000 is too large", "at most")
    assert not (tmp_path / "t").exists()
    maximum = int(r.stderr.split("at most ")[1].split()[0])
    assert run("tokenizer", "train", "--data", IT_EN, "--src", "it", "--tgt", "en", "--vocab-size",
               maximum, "--out", tmp_path / "t").exit_code == 0


def test_refuses_non_empty_out_unless_overwrite(tmp_path, joint_tok):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    args = ["tokenizer", "train", "--data", IT_EN, "--src", "it", "--tgt", "en", "--vocab-size", 400,
            "--out", out]
    assert_user_error(run(*args), "exists and is not empty", "--overwrite")
    assert (out / "keep.txt").read_text() == "mine"
    assert run(*args, "--overwrite").exit_code == 0
    assert (out / "tokenizer.model").is_file() and not (out / "keep.txt").exists()


@pytest.mark.parametrize("make,fragments", [
    (lambda p: str(p / "missing.jsonl"), ["no such file or directory"]),
    (lambda p: (p / "a.xml").write_text("<a/>") and str(p / "a.xml"), ["unknown file extension '.xml'"]),
    (lambda p: (p / "e.jsonl").write_text("") == 0 and str(p / "e.jsonl"), ["is empty"]),
    (lambda p: (p / "l.jsonl").write_bytes(b'{"it": "caf\xe8", "en": "x"}\n') and str(p / "l.jsonl"),
     ["l.jsonl is not UTF-8"]),
    (lambda p: "nobody/no-such-dataset", ["could not reach the Hugging Face Hub", "no local path"]),
])
def test_bad_data_specs(tmp_path, make, fragments):
    r = run("tokenizer", "train", "--data", make(tmp_path), "--src", "it", "--tgt", "en",
            "--out", tmp_path / "t")
    assert_user_error(r, *fragments)
    assert not (tmp_path / "t").exists()


def test_missing_field_lists_columns(tmp_path):
    r = run("tokenizer", "train", "--data", IT_EN, "--src", "fr", "--tgt", "en", "--out", tmp_path / "t")
    assert_user_error(r, "field 'fr' not found", "columns: it, en")


def test_parallel_mismatch(tmp_path):
    (tmp_path / "x.it").write_text("a\nb\n")
    (tmp_path / "x.en").write_text("a\n")
    r = run("tokenizer", "train", "--data", tmp_path / "x", "--src", "it", "--tgt", "en",
            "--out", tmp_path / "t")
    assert_user_error(r, "has 2 lines", "has 1")


def test_missing_tokenizer_dir(tmp_path):
    assert_user_error(run("tokenizer", "encode", "-t", tmp_path, "ciao"), "no tokenizer in")


def test_debug_shows_traceback(tmp_path):
    r = run("--debug", "tokenizer", "encode", "-t", tmp_path, "ciao")
    assert r.exit_code != 0 and r.exception is not None and "no tokenizer" in str(r.exception)
