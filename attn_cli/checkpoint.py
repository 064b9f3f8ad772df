"""Run directories on disk: atomic writes, output-directory checks.

Every write goes to a temporary name in the same directory and is then moved into place with
``os.replace``, so a kill at any moment leaves the previous good file readable.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from .errors import AttnError, RunFailure


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file + fsync + os.replace)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise RunFailure(f"could not write {path}: {e.strerror or e}",
                         "check free disk space and permissions") from None


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def prepare_out_dir(out: Path, overwrite: bool, what: str = "output") -> None:
    """Refuse an existing non-empty directory unless ``overwrite``; check it can be created."""
    if out.exists() and not out.is_dir():
        raise AttnError(f"{what} path {out} exists and is not a directory", "choose another --out")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise AttnError(f"{what} directory {out} exists and is not empty",
                        "choose another --out, or pass --overwrite")
    parent = out.resolve().parent
    if not parent.exists():
        raise AttnError(f"parent directory {parent} does not exist", "create it first")
    if not os.access(parent, os.W_OK):
        raise AttnError(f"cannot write to {parent}", "choose a writable --out")


def stage_dir(out: Path) -> Path:
    """A fresh temporary directory beside ``out`` to build it in (see :func:`commit_dir`)."""
    return Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.resolve().parent))


def commit_dir(staged: Path, out: Path) -> None:
    """Move a fully written staging directory to ``out``, replacing what was there."""
    if out.exists():
        old = out.with_name(f".{out.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
        os.replace(staged, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staged, out)
