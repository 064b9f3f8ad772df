"""--help of every command at 80 columns: each default shown once, in Typer's one style, nothing
cut off; and `attn cache list`'s table keeps what tells its entries apart."""

import json
import re

import pytest
import typer.main
from typer.testing import CliRunner

from attn_cli.cli.main import app

runner = CliRunner()


def commands(cmd=None, path=()):
    """(path, click command) of every command and subcommand of attn."""
    cmd = cmd or typer.main.get_command(app)
    for name, sub in getattr(cmd, "commands", {}).items():
        yield from commands(sub, path + (name,))
    if not getattr(cmd, "commands", None):
        yield list(path), cmd


def flat(text: str) -> str:
    """Help output without the panels' box drawing, wrapped lines joined."""
    return re.sub(r"\s+", " ", re.sub(r"[│╭╮╰╯─]", " ", text))


COMMANDS = {tuple(path): cmd for path, cmd in commands()}


def help80(*path):
    return runner.invoke(app, [*path, "--help"], env={"COLUMNS": "80"})


@pytest.mark.parametrize("path", sorted(COMMANDS), ids=" ".join)
def test_every_help_shows_each_default_once_in_one_style(path):
    r = help80(*path)
    assert r.exit_code == 0, r.output
    assert "(default:" not in r.output, r.output  # one style: Typer's [default: X]
    assert "…" not in r.output, r.output  # nothing cut at 80 columns (--src-field's default was)
    assert "<bool>" not in r.output, r.output  # flags take no value (cache list showed -h <bool>)
    for p in COMMANDS[path].params:  # a default is Typer's to show, never also written in the help text
        assert "default:" not in (getattr(p, "help", None) or "").lower(), (path, p.name)


def test_defaults_that_were_wrong_or_doubled():
    beam = flat(help80("eval").output).split("--beam ")[1].split("--length-penalty")[0]
    assert beam == "<int> Beam size for translate/summarize; 1 = greedy. [default: the task's, see attn info] "
    task = flat(help80("tokenizer", "train").output)
    assert "translate, summarize or sentiment. [default: inferred from the options and columns]" in task
    train = flat(help80("train").output)
    assert "[default: the first of document, article, dialogue, text]" in train
    assert "[default: auto; with --init-from, that run's shape]" in train
    assert "[default: 4096 on a CPU; on a GPU ~1024 per GiB of memory, x processes]" in train
    assert "[default: $ATTN_CACHE, else ~/.cache/attn]" in train


@pytest.mark.parametrize("command", ["train", "pretrain"])
def test_warmup_help_names_its_cap(command):
    text = flat(help80(command).output)
    assert "[default: 800, at most a tenth of --max-steps or of a --time-budget's steps]" in text


def test_cache_list_shows_what_tells_entries_apart(tmp_path):
    from attn_cli.data.store import META_FILE

    deep = tmp_path / "experiments" / "2026" / "italian-english" / "corpora"
    for name, file in (("a" * 24, "corpus-version-a.jsonl"), ("b" * 24, "corpus-version-b.jsonl")):
        entry = tmp_path / "cache" / "tokenized" / name
        entry.mkdir(parents=True)
        source = {"kind": "file", "split": "train", "subset": None, "paths": [str(deep / file)]}
        (entry / META_FILE).write_text(json.dumps({"rows": 332, "key": {"source": source, "role": "train"}}))
    r = runner.invoke(app, ["cache", "list", "--data-cache", tmp_path / "cache"], env={"COLUMNS": "80"})
    assert r.exit_code == 0, r.output
    assert "corpus-version-a.jsonl" in r.stdout and "corpus-version-b.jsonl" in r.stdout, r.stdout
    assert f"(sources under {deep})" in r.stdout.replace("\n", ""), r.stdout
