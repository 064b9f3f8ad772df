"""Building a large cache entry in a child process.

Tokenizing a big file grows the heap (parser buffers, per-batch lists) and a process keeps what
it once grew: built in the training process, that memory would stay with it for the whole run.
A spawned child does the work and exits, so the run starts with only what reading the cache
costs. Small files are built in-process (a child costs about a second to start).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue as queue_mod
import signal
from collections.abc import Callable
from pathlib import Path

from attn_cli.data import store as store_mod
from attn_cli.errors import AttnError, DataError, RunFailure

CHILD_MIN_BYTES = 64 << 20  # files from this size on are tokenized in a child process


def _child(args: tuple, done, results) -> None:
    """The child's work: read, tokenize and write the entry; report errors as plain tuples."""
    from attn_cli.data.spec import Fields  # noqa: F401 (unpickling the request's Fields)
    from attn_cli.data.stream import stream_rows
    from attn_cli.data.tokenizer import Tokenizer

    source, task, fields, text_only, protos, spec_fields, directory, key, identity, root = args
    encoders = {name: Tokenizer(proto) for name, proto in protos.items()}
    spec = store_mod.BuildSpec(encoders=encoders, **spec_fields)
    try:
        meta = store_mod.build_entry(stream_rows(source, task, fields, text_only), spec, directory, key, identity,
                                     {"label_names": None}, lambda n, _total: setattr(done, "value", n))
        results.put(("ok", meta))
    except AttnError as e:
        results.put(("attn", type(e).__name__, e.message, e.hint))
    except OSError as e:
        failure = store_mod.write_failure(root, e)
        results.put(("attn", "RunFailure", failure.message, failure.hint))
    except KeyboardInterrupt:
        results.put(("interrupted",))
    except Exception as e:  # a bug: say what and where
        results.put(("bug", f"{type(e).__name__}: {e}"))


def build_in_child(source, task: str, fields, text_only: bool, toks, spec: store_mod.BuildSpec,
                   directory: Path, key: dict, identity: list, root: Path, total: int | None,
                   progress: Callable[[int, int | None], None] | None) -> dict:
    """:func:`datastore.build_entry` on :func:`stream.stream_rows` in a spawned process; returns
    the entry's meta and raises the child's error here (one line, as in-process). The first
    four arguments are stream_rows's (a :class:`datastore.Rows` recipe)."""
    ctx = mp.get_context("spawn")
    done, results = ctx.Value("q", 0), ctx.Queue()
    protos = {name: tok.proto for name, tok in spec.encoders.items()}
    spec_fields = {"columns": spec.columns, "limits": spec.limits, "seq2seq": spec.seq2seq,
                   "num_proc": spec.num_proc, "name": spec.name, "text_only": spec.text_only,
                   "length_extra": spec.length_extra}
    args = (source, task, fields, text_only, protos, spec_fields, directory, key, identity, root)
    proc = ctx.Process(target=_child, args=(args, done, results), name="attn-tokenize")
    proc.start()
    outcome, shown = None, -1
    try:
        while outcome is None:
            try:
                outcome = results.get(timeout=0.25)
            except queue_mod.Empty:
                if not proc.is_alive():
                    break
            if progress and done.value != shown and (total is None or done.value < total):
                shown = done.value
                progress(shown, total)
        proc.join()
    except BaseException:  # Ctrl-C, or a signal to this process alone: the child stops too and
        if proc.is_alive():  # removes its partial entry (its own KeyboardInterrupt)
            os.kill(proc.pid, signal.SIGINT)
        proc.join(timeout=10)
        if proc.is_alive():
            proc.terminate()
        raise
    if outcome is None:
        raise RunFailure(f"the tokenizing process stopped (exit code {proc.exitcode}) before {source.describe()} "
                         "was cached", "run again; if it repeats, pass --debug and report it")
    if outcome[0] == "ok":
        if progress:
            progress(outcome[1]["rows"], outcome[1]["rows"])  # the last call: done == total
        return outcome[1]
    if outcome[0] == "interrupted":
        raise KeyboardInterrupt
    if outcome[0] == "bug":
        raise RuntimeError(outcome[1])
    _, kind, message, hint = outcome
    raise {"DataError": DataError, "RunFailure": RunFailure}.get(kind, AttnError)(message, hint)
