"""The `attn` command line: the one place that registers the commands.

Each command group lives in its own module of this package (``train``, ``pretrain``,
``infer``, ``eval``, ``tokenizer``, ``cache``, ``serve``) and registers itself on the Typer app
of ``app`` when imported; they share option definitions through ``options``. Nothing imports
this module but ``python -m attn_cli``, the ``attn`` entry point and tests that drive the app.
"""

from __future__ import annotations

# The order here is the order of `attn --help`.
from attn_cli.cli import train  # noqa: F401  (registration)
from attn_cli.cli import pretrain  # noqa: F401
from attn_cli.cli import infer  # noqa: F401
from attn_cli.cli import eval  # noqa: F401
from attn_cli.cli import tokenizer  # noqa: F401
from attn_cli.cli import cache  # noqa: F401
from attn_cli.cli import serve  # noqa: F401
from attn_cli.cli.app import app

__all__ = ["app", "main"]


def main() -> None:
    app()
