"""The Typer app every command registers on, and how every command runs.

Every command runs inside :func:`command`, which turns an :class:`AttnError` into one red line on
stderr with the error's exit code (2 bad usage/data, 1 runtime failure, 130 Ctrl-C), and shows a
traceback only with ``--debug`` or ``ATTN_DEBUG=1``. Command modules import from here (and from
``options``), never from ``main``, which is the one place that registers them.
"""

from __future__ import annotations

import functools
import os
from typing import Annotated

import typer
from typer.core import TyperCommand, TyperGroup

from attn_cli import __version__
from attn_cli.cli import console as ui
from attn_cli.errors import EXIT_INTERRUPTED, EXIT_RUNTIME, AttnError


def _without_flag_placeholders(params: list) -> list:
    """On/off options (ours, and Typer's own --help and completion flags) show no ``<bool>``
    value placeholder in --help: they take no value. A default given in words
    (``show_default="small"``, for an option whose None means it) shows as Typer's own
    ``[default: small]``, like every literal default, not click's ``[default: (small)]``."""
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
        if isinstance(getattr(param, "show_default", None), str):
            param._get_default_string = functools.partial(_words, param.show_default)
    return params


def _words(text: str, **_) -> str:
    return text


class _NoFlagPlaceholders:
    def get_params(self, ctx):
        return _without_flag_placeholders(super().get_params(ctx))


class AttnGroup(_NoFlagPlaceholders, TyperGroup):
    """The attn app and its sub-apps."""


class AttnCommand(_NoFlagPlaceholders, TyperCommand):
    """Every attn command."""


app = typer.Typer(
    name="attn",
    cls=AttnGroup,
    help="Train and run your own transformer for [bold]translation[/], [bold]sentiment[/] and "
    "[bold]summarization[/], from scratch, on one CPU or many GPUs.",
    epilog="Examples:  attn train translate --data data/translate.it-en.jsonl --src it --tgt en "
    "--out runs/it-en --preset tiny --max-steps 800  ·  attn translate -m runs/it-en \"Sabato partirò per Londra.\"",
    rich_markup_mode="rich",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

_state = {"debug": os.environ.get("ATTN_DEBUG", "") not in ("", "0")}


def command(fn):
    """Run a command with user-facing error handling (see the module docstring)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except AttnError as e:
            if _state["debug"]:
                raise
            ui.error(str(e))
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            ui.error("interrupted")
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except Exception as e:  # noqa: BLE001 - the last line of defence for users
            if _state["debug"]:
                raise
            ui.error(f"{type(e).__name__}: {e} (this is a bug in attn; rerun with --debug for the "
                     "traceback and report it)")
            raise typer.Exit(EXIT_RUNTIME) from None

    return wrapper


def flag(*decls: str, **kw):
    """A typer on/off option shown without a value placeholder in --help."""
    return typer.Option(*decls, metavar="", **kw)


def _version(value: bool) -> None:
    if value:
        ui.out.print(f"attn {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[bool, flag("--version", callback=_version, is_eager=True,
                                  help="Print the version and exit.")] = False,
    debug: Annotated[bool, flag("--debug", envvar="ATTN_DEBUG",
                                help="Show full tracebacks on errors.")] = False,
) -> None:
    """Train and run your own transformer."""
    _state["debug"] = debug  # set on every invocation (ATTN_DEBUG arrives through envvar)
