"""Run directories on disk: atomic writes, output-directory checks.

Every write goes to a temporary name in the same directory and is then moved into place with
``os.replace``, so a kill at any moment leaves the previous good file readable.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path

from attn_cli.errors import AttnError, RunFailure

_UMASK = os.umask(0o022)
os.umask(_UMASK)  # read once: mkstemp/mkdtemp create 0600/0700; finished files get the usual modes
_NOT_ALLOWED = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOENT)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file + fsync + os.replace).

    A SIGKILL before the rename leaves the previous ``path`` untouched and at most a hidden
    ``.NAME.XXXXXXXX.tmp`` beside it (removed by :func:`remove_stale_temps` in run directories).
    A directory that cannot be written to is a usage error (exit 2); a write that fails midway
    (disk full, I/O error) is a runtime failure (exit 1).
    """
    path = Path(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), 0o666 & ~_UMASK)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as e:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if tmp is None and e.errno in _NOT_ALLOWED:
            raise AttnError(f"cannot write to {path.parent}: {e.strerror or e}",
                            "choose a writable location") from None
        raise RunFailure(f"could not write {path}: {e.strerror or e}",
                         "check free disk space and permissions") from None


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def prepare_out_dir(out: Path, overwrite: bool, what: str = "output") -> None:
    """Refuse an existing non-empty directory unless ``overwrite``; create missing parents and
    check the directory can be written."""
    if out.exists() and not out.is_dir():
        raise AttnError(f"{what} path {out} exists and is not a directory", "choose another --out")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise AttnError(f"{what} directory {out} exists and is not empty",
                        "choose another --out, or pass --overwrite")
    parent = out.resolve().parent
    try:  # missing parents are created, like mkdir -p (runs/it-en on a fresh checkout)
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise AttnError(f"cannot create {parent}: {e.strerror or e}", "choose a writable --out") from None
    try:  # os.access is not enough: root, read-only mounts, /proc
        os.rmdir(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=parent))
    except OSError as e:
        raise AttnError(f"cannot write to {parent}: {e.strerror or e}", "choose a writable --out") from None


def stage_dir(out: Path) -> Path:
    """A fresh temporary directory beside ``out`` to build it in (see :func:`commit_dir`)."""
    staged = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.resolve().parent))
    os.chmod(staged, 0o777 & ~_UMASK)
    return staged


def commit_dir(staged: Path, out: Path) -> None:
    """Move a fully written staging directory to ``out``, replacing what was there."""
    replace_dir(staged, out)


# ------------------------------------------------------------------ weights and run directories

CONFIG_FILE, WEIGHTS_FILE, TRAIN_CONFIG_FILE = "config.json", "model.safetensors", "train_config.json"
LAST_DIR, METRICS_FILE, CARD_FILE = "last", "metrics.jsonl", "README.md"


def unwrap(model):
    """The plain nn.Module under DDP and torch.compile wrappers."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


def save_weights(model, path: Path) -> None:
    """Atomically write the model's weights as safetensors."""
    from safetensors.torch import save

    state = {k: v.detach().contiguous().cpu() for k, v in unwrap(model).state_dict().items()}
    atomic_write_bytes(path, save(state))


def load_weights(model, path: Path) -> None:
    """Load safetensors weights into ``model``; any name or shape mismatch is an AttnError."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise AttnError(f"cannot read {path}: {e}", "the file is corrupt; retrain or restore it") from None
    expected = unwrap(model).state_dict()
    for name, tensor in expected.items():
        if name not in state:
            raise AttnError(f"{path} lacks tensor '{name}'", "the weights do not match config.json")
        if state[name].shape != tensor.shape:
            raise AttnError(f"{path}: tensor '{name}' has shape {tuple(state[name].shape)}, config.json "
                            f"implies {tuple(tensor.shape)}", "the weights do not match config.json")
    extra = sorted(set(state) - set(expected))
    if extra:
        raise AttnError(f"{path} has unexpected tensor '{extra[0]}'", "the weights do not match config.json")
    unwrap(model).load_state_dict(state)


def save_torch_state(obj, path: Path) -> None:
    """Atomically torch.save tensors/numbers/lists/dicts (loaded back with weights_only=True)."""
    import io

    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_torch_state(path: Path):
    """torch.load with weights_only=True: refuses anything that would run code."""
    import pickle
    import warnings

    import torch

    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": the error says enough
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, OSError, EOFError, ValueError) as e:
        raise AttnError(f"refusing to load {path}: {_unpickle_reason(e)}",
                        "it is corrupt or holds more than tensors (which could run code); "
                        "only resume runs you trust, restore last/ or retrain") from None


def _unpickle_reason(e: Exception) -> str:
    """The informative line of torch.load's long weights_only message."""
    boiler = ("Weights only load failed", "Please file an issue", "Check the documentation")
    lines = [x.strip() for x in str(e).splitlines() if x.strip() and not x.strip().startswith(boiler)]
    return (lines[0] if lines else type(e).__name__)[:200]


def replace_dir(staged: Path, target: Path) -> None:
    """Swap a fully written directory into place; a kill between the two renames leaves
    ``.NAME.old`` behind, which :func:`find_dir` falls back to."""
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    os.replace(staged, target)
    shutil.rmtree(old, ignore_errors=True)


def find_dir(target: Path) -> Path | None:
    """``target`` if present, else the ``.old`` copy a kill mid-swap may have left."""
    if target.is_dir():
        return target
    old = target.with_name(f".{target.name}.old")
    return old if old.is_dir() else None


LOCK_FILE = ".lock"


class RunLock:
    """One writer per run directory: a lock file holding the owner's pid and host.

    A lock whose process is gone (same host, pid not alive) is stale and taken over.
    """

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK_FILE
        self.held = False

    def acquire(self) -> None:
        import socket

        me = f"{os.getpid()} {socket.gethostname()}"
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._owner()
                if owner is not None:
                    raise AttnError(f"{self.path.parent} is being trained by another process (pid {owner})",
                                    "wait for it to finish, or use another --out") from None
                self.path.unlink(missing_ok=True)  # stale: its process is gone
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(me + "\n")
            self.held = True
            remove_stale_temps(self.path.parent)
            return
        raise AttnError(f"cannot lock {self.path.parent}", "remove its .lock file if no run is active")

    def _owner(self) -> int | None:
        """The live owner's pid, or None when the lock is stale or unreadable."""
        import socket

        try:
            pid_text, host = self.path.read_text().split()[:2]
            pid = int(pid_text)
        except (OSError, ValueError):
            return None
        if host != socket.gethostname():
            return pid  # another machine's process: assume alive
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return pid
        return pid

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False


def remove_stale_temps(run_dir: Path) -> None:
    """Delete the ``.NAME.XXXXXXXX.tmp`` files and staging directories a killed writer left in
    ``run_dir``. Call only while holding its :class:`RunLock` (no other writer is active)."""
    for p in Path(run_dir).glob(".*.tmp"):
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
