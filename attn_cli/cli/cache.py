"""`attn cache list|clear`: the tokenized-data cache that `attn train` fills (see attn_cli/data/store.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from attn_cli.cli import console as ui
from attn_cli.cli.app import AttnCommand, AttnGroup, app, command, flag
from attn_cli.cli.options import CACHE_DEFAULT

cache_app = typer.Typer(help="Show or free the tokenized-data cache (--data-cache, $ATTN_CACHE or "
                        "~/.cache/attn).", no_args_is_help=True, rich_markup_mode="rich", cls=AttnGroup)
app.add_typer(cache_app, name="cache")

DirOpt = Annotated[Path | None, typer.Option("--data-cache", show_default=CACHE_DEFAULT, help="Cache directory.")]


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return str(n)


def _sources(entries: list[dict]) -> tuple[list[str], str | None]:
    """Each entry's source files (or Hub name), and the directory all the files share when there
    are several entries: the table names it once and shows each path below it, so what tells two
    entries apart (their last directories and file names) is never cut off."""
    paths = [list((e["source"] or {}).get("paths") or []) for e in entries]
    files = [p for ps in paths for p in ps]
    under = None
    if len(entries) > 1 and len(files) == sum(bool(ps) for ps in paths) == len(entries):
        common = os.path.commonpath(files) if all(os.path.isabs(f) for f in files) else ""
        under = common if common not in ("", os.sep) and common not in files else None
    wheres = []
    for e, ps in zip(entries, paths, strict=True):
        shown = [os.path.relpath(p, under) if under else p for p in ps]
        wheres.append(", ".join(shown) or (e["source"] or {}).get("hub") or "?")
    return wheres, under


@cache_app.command("list", cls=AttnCommand, epilog="Example:  attn cache list  ·  attn cache list --json")
@command
def list_(data_cache: DirOpt = None,
          as_json: Annotated[bool, flag("--json", help="One JSON object per entry.")] = False) -> None:
    """List the cached tokenized datasets: source files, split, examples and size on disk."""
    from attn_cli.data.store import default_root, list_entries

    root = default_root(data_cache)
    entries = list_entries(root)
    if as_json:
        for e in entries:
            ui.out.print(json.dumps(e), markup=False)
        return
    if not entries:
        ui.note(f"the cache in {root} is empty")
        return
    wheres, under = _sources(entries)
    table = Table(title=f"Tokenized data in {root}" + (f" (sources under {under})" if under else ""),
                  title_justify="left")
    table.add_column("entry", no_wrap=True)
    table.add_column("source", overflow="fold", ratio=1)  # whole: the end is what tells entries apart
    table.add_column("split (use)")
    table.add_column("examples", justify="right")
    table.add_column("size", justify="right", no_wrap=True)
    for e, where in zip(entries, wheres, strict=True):
        src = e["source"] or {}
        rows = f"{e['rows']:,}" if e["rows"] is not None else "incomplete"
        table.add_row(e["name"][:12], where, f"{src.get('split', '?')} ({e['role'] or '?'})", rows,
                      _size(e["bytes"]))
    ui.out.print(table)
    ui.note(f"{len(entries)} entries, {_size(sum(e['bytes'] for e in entries))}; free them with attn cache clear")


@cache_app.command("clear", cls=AttnCommand, epilog="Example:  attn cache clear")
@command
def clear(data_cache: DirOpt = None) -> None:
    """Delete every cached tokenized dataset (the next run tokenizes its data again)."""
    from attn_cli.data.store import clear as clear_cache
    from attn_cli.data.store import default_root

    root = default_root(data_cache)
    n, freed = clear_cache(root)
    ui.note(f"removed {n} entries ({_size(freed)}) from {root}")
