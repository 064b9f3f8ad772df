"""User-facing errors: one line saying what is wrong, plus how to fix it.

The CLI turns an :class:`AttnError` into ``Error: <message> (<hint>)`` on stderr and exits with
:attr:`AttnError.exit_code`; no traceback unless ``--debug`` or ``ATTN_DEBUG=1``.
"""

from __future__ import annotations

EXIT_RUNTIME = 1  # the work itself failed (NaN loss, disk full, ...)
EXIT_USAGE = 2  # bad usage or bad data: the user can fix the command or the input
EXIT_INTERRUPTED = 130  # Ctrl-C


class AttnError(Exception):
    """An error the user can act on. ``hint`` says how to fix it."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class DataError(AttnError):
    """Bad input data or a bad data SPEC (exit code 2)."""


class RunFailure(AttnError):
    """A runtime failure that is not the user's input (exit code 1)."""

    exit_code = EXIT_RUNTIME
