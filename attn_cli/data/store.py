"""The tokenized-data cache: token ids tokenized once, read from disk per batch, checked on every open.

Format, one directory per cache entry (fairseq's indexed-dataset idea)::

    ENTRY/
      meta.json           key, source identity, counts, file sizes and digests (written last)
      src.bin, tgt.bin    translate/summarize: every row's ids back to back (uint16, or uint32
                          when a vocabulary has more than 65,535 pieces)
      text.bin            sentiment, and pretraining text (meta "text_only"): the same for the text
      COL.idx.npy         offsets, N + 1 of them (uint32, int64 past 4G ids): row i is
                          COL.bin[idx[i]:idx[i + 1]]
      lengths.npy         int32, each row's padded cost (what batching plans with)
      labels.npy          sentiment: int64 class ids (pretraining text has none)
      refs.json           validation entries of seq2seq data: the reference texts for BLEU/ROUGE

Why flat arrays rather than `datasets` Arrow files: the ids take half the bytes (uint16), a
batch is gathered with a few numpy slices and no per-row Python objects, lengths come from the
offsets without reading any ids, and the files need nothing but numpy to open and check.
`datasets` still does what it is best at: reading the SPEC (JSON, CSV, parquet, the Hub).

Only ``lengths`` (2 bytes a row) is read into memory; a batch's ids are read with ``pread``
from the page cache, which holds one copy for every process reading the same files (all ranks
of a DDP job on one machine) and counts in none of their resident sets.

Entries are written into a temporary directory beside their final name and renamed into place,
so a reader never sees a half-written entry; a lock file makes concurrent builders of the same
entry take turns (the second finds the first one's entry). On open, every file's size is
checked against meta.json, the index files are hashed in full and the id files in sampled
blocks, so a truncated or damaged entry is found and rebuilt.

Writing an entry (tokenizing, the temporary directory, the swap-in) is :mod:`cachebuild`'s; this
module is the format's reading side: keys and source identity, opening and checking an entry,
the lock, listing and clearing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from attn_cli.errors import RunFailure

FORMAT = 1  # bump when the layout changes: older entries then miss and are rebuilt
META_FILE = "meta.json"
FULL_HASH_LIMIT = 2 << 30  # source files up to 2 GiB are hashed whole; larger ones in samples
SAMPLE_BLOCKS, BLOCK = 64, 1 << 20  # sampled hashing: first, last and 62 evenly spaced 1 MiB blocks


def default_root(option: str | Path | None = None) -> Path:
    """The cache directory: ``--data-cache``, else ``$ATTN_CACHE``, else the user's cache dir."""
    if option:
        return Path(os.path.expanduser(str(option)))
    if os.environ.get("ATTN_CACHE"):
        return Path(os.path.expanduser(os.environ["ATTN_CACHE"]))
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "attn"


# ---------------------------------------------------------------------------------- identity


def _hash_blocks(path: Path, size: int, full: bool) -> str:
    """sha1 of the whole file, or of SAMPLE_BLOCKS blocks spread over it (first and last included)."""
    h = hashlib.sha1()
    with open(path, "rb") as fh:
        if full:
            while chunk := fh.read(1 << 22):
                h.update(chunk)
        else:
            for k in range(SAMPLE_BLOCKS):
                fh.seek((size - BLOCK) * k // (SAMPLE_BLOCKS - 1))
                h.update(fh.read(BLOCK))
    return h.hexdigest()


def file_identity(path: Path) -> dict:
    """What says a data file is unchanged: its path, size, mtime and a content hash (the whole
    file up to FULL_HASH_LIMIT, else sampled blocks: an in-place edit of a huge file that keeps
    its size and mtime and misses every sampled block would go unseen)."""
    st = path.stat()
    full = st.st_size <= FULL_HASH_LIMIT
    return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "sha1": _hash_blocks(path, st.st_size, full), "hashed": "whole" if full else "sampled"}


def entry_name(key: dict) -> str:
    """The entry directory's name: a digest of everything that decides its content but the
    source files' current state (that is checked separately, so a change is reported)."""
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]


# ---------------------------------------------------------------------------------- reading


class _Column:
    """One column's rows, read with ``os.pread`` from its id and offset files.

    Reads rather than a memory map: the pages still come from the page cache, shared by every
    process reading the same files (all ranks of a DDP job), but they never count in this
    process's resident set. A map's would: on each fault the kernel maps up to 16 neighbouring
    pages (fault-around), so a batch of a few hundred random rows put ~50 MB of id and offset
    pages into the training process's RSS.
    """

    def __init__(self, directory: Path, name: str, dtype: str, tokens: bool):
        self.directory = directory
        idx_path = directory / f"{name}.idx.npy"
        with open(idx_path, "rb") as fh:  # the .npy header: where the offsets start, their type
            version = np.lib.format.read_magic(fh)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            _, _, self.idx_dtype = read_header(fh)
            self.idx_start = fh.tell()
        self.dtype = np.dtype(dtype)
        self.idx = os.open(idx_path, os.O_RDONLY)
        self.ids = os.open(directory / f"{name}.bin", os.O_RDONLY) if tokens else None

    def rows(self, rows: Iterable[int]) -> list[list[int]]:
        """The id lists of entry rows ``rows``: two reads a row (its offsets, its ids)."""
        isize, size, out = self.idx_dtype.itemsize, self.dtype.itemsize, []
        for r in rows:
            start, end = np.frombuffer(self._read(self.idx, 2 * isize, self.idx_start + r * isize),
                                       self.idx_dtype).tolist()
            out.append(np.frombuffer(self._read(self.ids, (end - start) * size, start * size),
                                     self.dtype).tolist() if self.ids is not None and end > start else [])
        return out

    def _read(self, fd: int, n: int, offset: int) -> bytes:
        data = os.pread(fd, n, offset)
        if len(data) != n:  # the entry was checked on open: only a file cut since then does this
            raise RunFailure(f"the cached tokens in {self.directory} were cut while training read them",
                             "run the same command again: the damaged entry is found and rebuilt")
        return data

    def close(self) -> None:
        for fd in (self.idx, self.ids):
            if fd is not None:
                os.close(fd)
        self.idx = self.ids = None

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


def _lengths_in_ram(lengths: np.ndarray) -> np.ndarray:
    """``lengths`` as uint16 when every value fits (2 bytes a row instead of 4)."""
    return lengths.astype(np.uint16) if len(lengths) and int(lengths.max()) < (1 << 16) else lengths


class TokenStore:
    """Rows of token ids read from a cache entry's files.

    ``rows`` (optional) selects and orders a subset of the entry's rows (a held-out split);
    ``lengths`` always matches the selection and is all that stays in memory (2 bytes a row;
    ``rows`` 4 more). Rows come out as the training code's examples: ``(src_ids, tgt_ids)``
    for seq2seq, ``(ids, label)`` for sentiment, and ``ids`` (a list of ints) for pretraining
    text (``text_only``).
    """

    def __init__(self, directory: Path, meta: dict, rows: np.ndarray | None = None,
                 lengths: np.ndarray | None = None, labels: np.ndarray | None = None):
        self.directory, self.meta, self.rows = directory, meta, rows
        self.columns = list(meta["columns"])
        self.seq2seq = self.columns == ["src", "tgt"]
        self.text_only = bool(meta.get("text_only"))  # pretraining rows: one text's ids each
        self._cols = {c: _Column(directory, c, meta["columns"][c]["dtype"], meta["columns"][c]["tokens"])
                      for c in self.columns}
        if lengths is None:  # (all rows') lengths, int32 on disk; given: the selection's already
            lengths = _lengths_in_ram(np.load(directory / "lengths.npy"))
            lengths = lengths if rows is None else lengths[rows]
        self.lengths = lengths  # (N,)
        if labels is None and "labels.npy" in meta["files"]:  # (all rows,) int64 class ids (sentiment)
            labels = np.load(directory / "labels.npy")
        self._labels = labels

    def __len__(self) -> int:
        return len(self.lengths)

    @property
    def size(self) -> int:
        """Rows in the whole entry (before any ``rows`` selection)."""
        return int(self.meta["rows"])

    def _row_ids(self, indices: Sequence[int]) -> np.ndarray:
        idx = np.asarray(indices, dtype=np.int64)
        return idx if self.rows is None else self.rows[idx]

    def gather(self, indices: Sequence[int]) -> list[tuple]:
        """The examples at ``indices`` (positions in this selection), read from the files."""
        rows = self._row_ids(indices).tolist()
        cols = [self._cols[c].rows(rows) for c in self.columns]
        if self.seq2seq:
            return list(zip(cols[0], cols[1], strict=True))
        if self.text_only:
            return cols[0]
        return list(zip(cols[0], self._labels[rows].tolist(), strict=True))

    def __getitem__(self, i: int) -> tuple:
        return self.gather([i])[0]

    def __iter__(self) -> Iterator[tuple]:
        for start in range(0, len(self), 4096):
            yield from self.gather(range(start, min(start + 4096, len(self))))

    def subset(self, positions: np.ndarray) -> TokenStore:
        """A selection of this selection's rows (e.g. train minus a held-out part)."""
        positions = np.asarray(positions)
        rows = self._row_ids(positions).astype(np.int32 if self.size < (1 << 31) else np.int64)
        return TokenStore(self.directory, self.meta, rows, self.lengths[positions], self._labels)

    def side_lengths(self) -> tuple[np.ndarray, np.ndarray]:
        """(source, target) ids per selected row, (N,) each, from the offset files (seq2seq)."""
        sides = []
        for c in self.columns:
            offsets = np.load(self.directory / f"{c}.idx.npy", mmap_mode="r")  # (all rows + 1,)
            per_row = np.diff(offsets).astype(np.int32)
            sides.append(per_row if self.rows is None else per_row[self.rows])
        return sides[0], sides[1]

    def labels(self) -> np.ndarray:
        """Class ids of the selected rows (sentiment)."""
        return np.asarray(self._labels[self._row_ids(np.arange(len(self)))])

    def refs(self) -> list | None:
        """Reference texts of a validation entry (seq2seq), in row order; None when not kept."""
        path = self.directory / "refs.json"
        if not path.is_file():
            return None
        refs = json.loads(path.read_text(encoding="utf-8"))
        return refs if self.rows is None else [refs[i] for i in self.rows.tolist()]


class InMemoryExamples:
    """A list of already-tokenized examples behind TokenStore's interface (tests, small data).
    ``text_cost`` not None: the examples are pretraining rows (id lists), each costing its
    length plus ``text_cost`` (:func:`text.text_cost`), as a text_only TokenStore plans."""

    def __init__(self, examples: list, seq2seq: bool, text_cost: int | None = None):
        self.examples = examples
        self.text_only = text_cost is not None
        if self.text_only:
            self.lengths = np.asarray([len(x) + text_cost for x in examples], dtype=np.int32)  # (N,)
            return
        from attn_cli.data.batching import example_lengths  # (batching imports torch: not at module level, so
        # that a tokenizing child process does not pay for it)

        self.lengths = np.asarray(example_lengths(examples, seq2seq), dtype=np.int32)  # (N,)

    def __len__(self) -> int:
        return len(self.examples)

    def gather(self, indices: Sequence[int]) -> list[tuple]:
        return [self.examples[int(i)] for i in indices]

    def side_lengths(self) -> tuple[np.ndarray, np.ndarray]:
        """(source, target) ids per example, (N,) each (seq2seq)."""
        return (np.asarray([len(s) for s, _ in self.examples], dtype=np.int32),
                np.asarray([len(t) for _, t in self.examples], dtype=np.int32))

    def __getitem__(self, i: int) -> tuple:
        return self.examples[i]

    def __iter__(self) -> Iterator[tuple]:
        return iter(self.examples)


def file_digest(path: Path, sampled: bool) -> str:
    """A file's digest as meta.json records it: whole, or (``sampled``: id files) sampled blocks."""
    size = path.stat().st_size
    return _hash_blocks(path, size, full=not sampled or size <= SAMPLE_BLOCKS * BLOCK)


def check_entry(directory: Path, key: dict) -> tuple[dict | None, str | None]:
    """(meta, None) for a complete entry made for ``key``; (None, why not) otherwise."""
    try:
        meta = json.loads((directory / META_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, "missing"
    except (OSError, ValueError) as e:
        return None, f"unreadable meta.json ({e})"
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("key") != key:
        return None, "made by another version of attn"
    for name, want in meta.get("files", {}).items():
        path = directory / name
        try:
            size = path.stat().st_size
        except OSError:
            return None, f"{name} is missing"
        if size != want["size"]:
            return None, f"{name} is {size} bytes, expected {want['size']}"
        if file_digest(path, sampled=name.endswith(".bin")) != want["sha1"]:
            return None, f"{name} does not match its digest"
    return meta, None


# ---------------------------------------------------------------------------------- building


@dataclass
class Rows:
    """Normalized rows to tokenize, in batches of pairs: (src, tgt) texts, or (text, label
    code); pretraining text: 1-tuples (text,). What :func:`cachebuild.build_entry` writes; here
    rather than there because :mod:`stream` makes them and cachebuild's child process reads them
    again through :mod:`stream` (which would be an import cycle)."""

    batches: Iterable[list[tuple]]
    total: int | None = None  # rows, when known beforehand (progress)
    refs: list | None = None  # validation entries of seq2seq data: the reference texts
    labels: Callable[[], tuple[list[str] | None, np.ndarray | None]] | None = None  # after the
    # batches: (label names, code -> class id table, or None when codes are class ids)
    recipe: tuple | None = None  # (Source, task, Fields, text_only) when another process can
    # read them again (stream.stream_rows's arguments; cachebuild.build_in_child)


@contextlib.contextmanager
def entry_lock(directory: Path):
    """Hold ``ENTRY.lock`` exclusively: concurrent builders of one entry take turns. Holding
    it, no live process is building the entry, so its leftover ``.ENTRY.*`` directories go."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # Windows: no lock; entries are still renamed into place whole
        yield
        return
    with open(directory.with_name(directory.name + ".lock"), "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        for stale in directory.parent.glob(f".{directory.name}.*"):  # the staging or old
            shutil.rmtree(stale, ignore_errors=True)  # directory of a builder that was killed
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


# ---------------------------------------------------------------------------------- listing


def list_entries(root: Path) -> list[dict]:
    """Every entry under ``root`` with its size on disk and what it holds."""
    found = []
    base = root / "tokenized"
    if not base.is_dir():
        return found
    for d in sorted(base.iterdir()):
        if not d.is_dir() or d.name.startswith("."):
            continue
        try:
            meta = json.loads((d / META_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            meta = {}
        size = sum(p.stat().st_size for p in d.iterdir() if p.is_file())
        found.append({"name": d.name, "bytes": size, "rows": meta.get("rows"),
                      "source": (meta.get("key") or {}).get("source"),
                      "role": (meta.get("key") or {}).get("role"),
                      "complete": bool(meta)})
    return found


def clear(root: Path) -> tuple[int, int]:
    """Remove every entry (and stale temporaries); returns (entries, bytes) freed."""
    base = root / "tokenized"
    n = freed = 0
    if not base.is_dir():
        return 0, 0
    for d in base.iterdir():
        if d.is_dir():
            freed += sum(p.stat().st_size for p in d.iterdir() if p.is_file())
            n += not d.name.startswith(".")
            shutil.rmtree(d, ignore_errors=True)
        elif d.suffix == ".lock":
            d.unlink(missing_ok=True)
    return n, freed
