"""The training progress shown on stderr: a rich progress bar on a terminal (log lines
otherwise), a table per evaluation, notes, and the tokenizing progress."""

from __future__ import annotations

import time

from rich.table import Table

from attn_cli.cli import console as ui


class RichReporter:
    """Progress bar and tables on stderr (the bar only on a terminal; log lines otherwise)."""

    def __init__(self, progress, total: int | None, log_every: int, unit: str):
        self.progress, self.log_every, self.unit = progress, log_every, unit
        self.task = progress.add_task("training", total=total, info="")
        self.tok_task, self.tok_started = None, 0.0

    def step(self, s: dict) -> None:
        best = f" best {s['best']:.4g}" if s["best"] is not None else ""
        info = (f"epoch {s['epoch']:.2f} loss {s['loss']:.3f} lr {s['lr']:.2e} "
                f"{s['tokens_per_s']:,.0f} {self.unit}/s pad {s['pad_fraction']:.1%}{best}")
        self.progress.update(self.task, completed=s["step"], description=f"step {s['step']}", info=info)
        if self.progress.disable and s["step"] % self.log_every == 0:
            ui.err.print(f"step {s['step']} {info}", markup=False)

    def evaluated(self, m: dict, is_best: bool) -> None:
        table = Table(title=f"Validation at step {m['step']}" + (" (new best)" if is_best else ""),
                      title_justify="left")
        for k in m:
            if k != "step":
                table.add_column(k, justify="right")
        table.add_row(*(f"{v:.4g}" if isinstance(v, float) else str(v) for k, v in m.items() if k != "step"))
        (self.progress.console if not self.progress.disable else ui.err).print(table)

    def note(self, message: str) -> None:
        ui.note(message)

    def tokenizing(self, done: int, total: int | None) -> None:
        """Progress of tokenizing data into the cache, in examples/s (``total`` None: unknown
        until the data is read; the last call has ``done == total``)."""
        if self.tok_task is None:
            self.tok_task = self.progress.add_task("tokenizing", total=total, info="", start=True)
            self.tok_started = time.perf_counter()
        rate = done / max(time.perf_counter() - self.tok_started, 1e-9)
        self.progress.update(self.tok_task, completed=done, total=total, info=f"{rate:,.0f} examples/s")
        if total is not None and done >= total:
            self.progress.remove_task(self.tok_task)
            self.tok_task = None
            took = time.perf_counter() - self.tok_started
            if took >= 1.0:  # (a rate over a few milliseconds says nothing)
                ui.note(f"tokenized {total:,} examples in {took:.1f} s ({rate:,.0f} examples/s)")
