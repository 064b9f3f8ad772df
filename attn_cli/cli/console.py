"""The shared rich consoles and progress bars. Only the CLI layer prints; the library reports
progress through callbacks."""

from __future__ import annotations

import os

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

# stdout is for results (so inference composes in pipes); stderr for messages and progress.
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def is_main_process() -> bool:
    """True unless this is a non-zero rank of a torchrun job (only rank 0 prints)."""
    return os.environ.get("RANK", "0") == "0"


def error(message: str) -> None:
    """Print a one-line red error on stderr."""
    err.print(f"[bold red]Error:[/] {escape(message)}", markup=True, highlight=False, soft_wrap=True)


def warn(message: str) -> None:
    if is_main_process():
        err.print(f"[yellow]Warning:[/] {escape(message)}", soft_wrap=True)


def note(message: str) -> None:
    if is_main_process():
        err.print(f"[dim]{escape(message)}[/]", soft_wrap=True)


def progress(*, total_known: bool = True, transient: bool = False) -> Progress:
    """A progress bar on stderr; off on non-zero ranks and when stderr is not a terminal."""
    columns = [SpinnerColumn(), TextColumn("{task.description}")]
    if total_known:
        columns += [BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()]
    columns += [TimeElapsedColumn(), TextColumn("{task.fields[info]}")]
    return Progress(*columns, console=err, transient=transient, disable=not (is_main_process() and err.is_terminal))
