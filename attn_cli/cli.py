"""The `attn` command line: the one place that registers the commands.

Each command lives in its own module (``cli_tokenizer``, ``cli_train``, ``cli_infer``,
``cli_eval``, ``cli_cache``, ...) and registers itself on the Typer app of ``cli_app`` when
imported; they share option definitions through ``cli_options``. Nothing imports this module
but the ``attn`` entry point (and tests that drive the app).
"""

from __future__ import annotations

# The order here is the order of `attn --help`.
from . import cli_train  # noqa: F401  (registration)
from . import cli_pretrain  # noqa: F401
from . import cli_infer  # noqa: F401
from . import cli_eval  # noqa: F401
from . import cli_tokenizer  # noqa: F401
from . import cli_cache  # noqa: F401
from . import cli_serve  # noqa: F401
from .cli_app import app

__all__ = ["app", "main"]


def main() -> None:
    app()
