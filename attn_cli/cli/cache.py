"""`attn cache list|clear`: the tokenized-data cache that `attn train` fills (see attn_cli/data/store.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from attn_cli.cli import console as ui
from attn_cli.cli.app import AttnGroup, app, command, flag

cache_app = typer.Typer(help="Show or free the tokenized-data cache (--data-cache, $ATTN_CACHE or "
                        "~/.cache/attn).", no_args_is_help=True, rich_markup_mode="rich", cls=AttnGroup)
app.add_typer(cache_app, name="cache")

DirOpt = Annotated[Path | None, typer.Option("--data-cache", help=(
    "Cache directory (default: $ATTN_CACHE, else ~/.cache/attn)."))]


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return str(n)


@cache_app.command("list", epilog="Example:  attn cache list  ·  attn cache list --json")
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
    table = Table(title=f"Tokenized data in {root}", title_justify="left")
    for col in ("entry", "source", "split (use)", "examples", "size"):
        table.add_column(col, justify="right" if col in ("examples", "size") else "left")
    for e in entries:
        src = e["source"] or {}
        where = ", ".join(src.get("paths") or []) or src.get("hub") or "?"
        rows = f"{e['rows']:,}" if e["rows"] is not None else "incomplete"
        table.add_row(e["name"], where, f"{src.get('split', '?')} ({e['role'] or '?'})", rows, _size(e["bytes"]))
    ui.out.print(table)
    ui.note(f"{len(entries)} entries, {_size(sum(e['bytes'] for e in entries))}; free them with attn cache clear")


@cache_app.command("clear", epilog="Example:  attn cache clear")
@command
def clear(data_cache: DirOpt = None) -> None:
    """Delete every cached tokenized dataset (the next run tokenizes its data again)."""
    from attn_cli.data.store import clear as clear_cache
    from attn_cli.data.store import default_root

    root = default_root(data_cache)
    n, freed = clear_cache(root)
    ui.note(f"removed {n} entries ({_size(freed)}) from {root}")
