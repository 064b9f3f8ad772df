"""Input and output of the inference commands: reading texts, writing results atomically, and
opening the engine with its notes on stderr."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from attn_cli.cli import console as ui
from attn_cli.errors import AttnError


def open_engine(model: Path, task: str | None, engine: str, compute_type: str, threads: int, device: str):
    """The engine for the command, with any note on why it is not the export on stderr."""
    from attn_cli.infer.engine import EngineOptions
    from attn_cli.infer.engines import open_engine as _open

    eng = _open(model, task, EngineOptions(engine, compute_type, threads, device))
    for n in eng.notes:
        ui.note(n)
    return eng


def read_inputs(texts: list[str] | None, path: Path | None, paragraphs: bool = False) -> list[str]:
    """TEXT arguments, else the file, else stdin: one input per line; for ``paragraphs``
    (summarize) JSONL objects or blank-line-separated documents."""
    if texts:
        return list(texts)
    if path is not None:
        if path.is_dir():
            raise AttnError(f"input {path} is a directory", "give a text file to -i")
        if not path.is_file():
            raise AttnError(f"input file {path} not found", "check -i")
        try:
            raw = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise AttnError(f"{path} is not UTF-8 text", "convert it, e.g. iconv -t utf-8") from None
        except OSError as e:
            raise AttnError(f"cannot read {path}: {e.strerror or e}", "check its permissions") from None
    else:
        if sys.stdin.isatty():  # a person at a terminal, not a pipe: say what the wait is for
            what = "documents separated by blank lines" if paragraphs else "one text per line"
            end = "Ctrl-Z then Enter" if os.name == "nt" else "Ctrl-D"
            ui.note(f"reading from standard input ({what}); {end} to end")
        raw = sys.stdin.read()
    if not paragraphs:
        return raw.split("\n")[:-1] if raw.endswith("\n") else raw.split("\n") if raw else []
    lines = [x for x in raw.splitlines() if x.strip()]
    if lines and all(x.lstrip().startswith("{") for x in lines):
        return [_document(x, i) for i, x in enumerate(lines, 1)]
    return [p.strip() for p in raw.split("\n\n") if p.strip()]


def _document(line: str, number: int) -> str:
    from attn_cli.data.tasks import SRC_FIELDS

    try:
        obj = json.loads(line)
    except ValueError:
        raise AttnError(f"input line {number} is not valid JSON", "fix that line") from None
    for key in SRC_FIELDS:
        if isinstance(obj.get(key), str):
            return obj[key]
    raise AttnError(f"input line {number} has no document field", f"use one of {', '.join(SRC_FIELDS)}")


def check_output(path: Path | None) -> None:
    """Refuse an unusable -o before any work is done (the write itself is atomic)."""
    if path is None:
        return
    if path.is_dir():
        raise AttnError(f"output {path} is a directory", "give a file name to -o")
    parent = path.resolve().parent
    if not parent.is_dir():
        raise AttnError(f"the directory of {path} does not exist", "create it first")
    if not os.access(parent, os.W_OK):  # (root passes this; the atomic write still checks)
        raise AttnError(f"cannot write to {parent}", "choose a writable -o")


def check_max_tokens(max_tokens: int) -> None:
    if max_tokens <= 0:
        raise AttnError(f"--max-tokens must be positive, got {max_tokens}", "e.g. --max-tokens 6000")


def write_outputs(lines: list[str], path: Path | None) -> None:
    text = "".join(line + "\n" for line in lines)
    if path is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    from attn_cli.rundir import atomic_write_text

    check_output(path)
    atomic_write_text(path, text)
