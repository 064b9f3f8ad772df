"""Reading a data SPEC: one split of it located (:func:`locate`) and loaded as a raw
`datasets.Dataset` (:func:`load_spec`), its columns as in the data.

A SPEC is a local file (jsonl/json/csv/tsv/parquet/txt, optionally .gz), a directory of split
files (train.*, validation|valid|val|dev.*, test.*), a parallel-text prefix (`path/train` with
src/tgt codes -> `path/train.de` + `path/train.en`), or a Hugging Face Hub dataset name.
Everything is read through `datasets`, so it is cached as Arrow and memory-mapped.

:mod:`tasks` turns these raw rows into a task's examples (fixed column names).
"""

from __future__ import annotations

import codecs
import gzip
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from attn_cli.errors import DataError

if TYPE_CHECKING:
    from datasets import Dataset


def _hf():
    """The `datasets` library, imported on first use (a cached run never needs it: ~100 MB and
    a second of start-up saved), quiet: its parse errors reach the user as DataError."""
    import datasets

    if not getattr(datasets, "_attn_quiet", False):
        datasets.disable_progress_bars()
        datasets.logging.set_verbosity(datasets.logging.CRITICAL)
        logging.getLogger("huggingface_hub").setLevel(logging.ERROR)
        datasets._attn_quiet = True
    return datasets


BUILDERS = {"jsonl": "json", "json": "json", "csv": "csv", "tsv": "csv", "parquet": "parquet",
            "txt": "text"}
SPLIT_NAMES = {
    "train": ("train",),
    "validation": ("validation", "valid", "val", "dev"),
    "test": ("test",),
}


@dataclass
class Fields:
    """Which columns hold what; None means detect."""

    src_lang: str | None = None  # translate: source language code (column or file suffix)
    tgt_lang: str | None = None  # translate: target language code
    src_field: str | None = None  # summarize: document column
    tgt_field: str | None = None  # summarize: summary column
    text_field: str | None = None  # sentiment: text column
    label_field: str | None = None  # sentiment: label column
    num_labels: int | None = None  # sentiment: --num-labels K keeps integer labels as classes
    # 0..K-1 (None: integer labels that are not 0..K-1 become names, in sorted order)


# ---------------------------------------------------------------------------- raw loading


def file_format(path: Path) -> str:
    """The `datasets` builder for a file, from its extension (ignoring .gz)."""
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    ext = name.rsplit(".", 1)[-1] if "." in name else ""
    if ext not in BUILDERS:
        raise DataError(
            f"unknown file extension '.{ext}' for {path}" if ext else f"{path} has no extension",
            "use .jsonl, .json, .csv, .tsv, .parquet or .txt (optionally .gz)",
        )
    return ext


def builder_options(ext: str, documents: bool = False) -> dict:
    """Extra `load_dataset` options for a file format (TSV's delimiter, .txt documents)."""
    if ext == "tsv":
        return {"delimiter": "\t"}
    return {"sample_by": "paragraph"} if documents and ext == "txt" else {}


def _open_bytes(path: Path):
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")


def check_utf8(path: Path) -> None:
    """Raise a DataError naming the file if it is not valid UTF-8 (streamed, constant memory)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        with _open_bytes(path) as fh:
            offset = 0
            while chunk := fh.read(1 << 20):
                decoder.decode(chunk)
                offset += len(chunk)
            decoder.decode(b"", final=True)
    except UnicodeDecodeError as e:
        raise DataError(
            f"{path} is not UTF-8 text (bad byte near offset {offset + e.start})",
            "convert it, e.g. iconv -f latin1 -t utf-8",
        ) from None
    except (OSError, EOFError) as e:
        raise DataError(f"cannot read {path}: {e}", "check the file is complete and readable") from None


def _first_bad_json_line(path: Path) -> int | None:
    with _open_bytes(path) as fh:
        for i, line in enumerate(fh, 1):
            if line.strip():
                try:
                    json.loads(line)
                except ValueError:
                    return i
    return None


def load_file(path: Path, documents: bool = False) -> Dataset:
    """One local file -> Dataset. ``documents``: a .txt file's rows are its blank-line-separated
    blocks (`datasets`' paragraphs) rather than its lines."""
    ext = file_format(path)
    if not path.is_file():
        raise DataError(f"{path} is not a file", "give a data file, a directory or a prefix")
    if path.stat().st_size == 0:
        raise DataError(f"{path} is empty", "give a file with data in it")
    if ext != "parquet":
        check_utf8(path)
    try:
        ds = _hf().load_dataset(BUILDERS[ext], data_files=str(path), split="train",
                                **builder_options(ext, documents))
    except Exception as e:  # datasets wraps parser errors in its own types
        detail = first_line(e.__cause__ or e)
        if ext in ("jsonl", "json"):
            bad = _first_bad_json_line(path)
            if bad is not None:
                raise DataError(f"{path} line {bad} is not valid JSON", "fix or remove that line") from None
        raise DataError(f"could not parse {path}: {detail}", f"check it is valid {ext}") from None
    if len(ds) == 0:
        raise DataError(f"{path} holds no examples", "give a file with data in it")
    return ds


def first_line(e: BaseException) -> str:
    """The first line of an exception's message, shortened, for one-line errors."""
    lines = str(e).strip().splitlines()
    return lines[0][:200] if lines else type(e).__name__


def load_parallel(prefix: Path, src: str, tgt: str) -> Dataset:
    """`prefix.src` + `prefix.tgt`, line-aligned -> Dataset with columns src, tgt (language codes)."""
    files = [Path(f"{prefix}.{lang}") for lang in (src, tgt)]
    for f in files:
        if not f.is_file():
            raise DataError(f"parallel file {f} not found", f"expected {prefix}.{src} and {prefix}.{tgt}")
        check_utf8(f)
    sides = [_hf().load_dataset("text", data_files=str(f), split="train") for f in files]
    if len(sides[0]) != len(sides[1]):
        raise DataError(
            f"parallel files differ in length: {files[0]} has {len(sides[0])} lines, "
            f"{files[1]} has {len(sides[1])}",
            "the two files must be line-aligned",
        )
    if len(sides[0]) == 0:
        raise DataError(f"{files[0]} holds no lines", "give non-empty parallel files")
    return _hf().concatenate_datasets(
        [sides[0].rename_column("text", src), sides[1].rename_column("text", tgt)], axis=1
    )


def _split_files(directory: Path) -> dict[str, Path]:
    """Map split name -> file in a directory of split files (first matching name wins)."""
    found: dict[str, Path] = {}
    for p in sorted(directory.iterdir()):
        stem = p.name.lower().removesuffix(".gz").rsplit(".", 1)[0]
        for split, names in SPLIT_NAMES.items():
            if stem in names and split not in found and p.is_file():
                file_format(p)
                found[split] = p
    return found


@dataclass(frozen=True)
class Source:
    """Where one split of a SPEC lives, found without reading it (see :func:`locate`)."""

    spec: str  # the SPEC as given
    split: str  # the split asked for
    kind: str  # "file", "parallel" (prefix.src + prefix.tgt) or "hub"
    paths: tuple[Path, ...] = ()  # the local files (none for the Hub)
    subset: str | None = None  # Hub configuration
    documents: bool = False  # a .txt read as blank-line-separated documents (pretraining text)

    def describe(self) -> str:
        return ", ".join(str(p) for p in self.paths) if self.paths else f"{self.spec} ({self.split})"


def _parallel_source(spec: str, split: str, prefix: Path, src: str, tgt: str) -> Source:
    return Source(spec, split, "parallel", (Path(f"{prefix}.{src}"), Path(f"{prefix}.{tgt}")))


def _locate_in_dir(spec: str, directory: Path, split: str, fields: Fields) -> Source | None:
    """One split in a directory of split files or of parallel `split.lang` files."""
    names = SPLIT_NAMES.get(split, (split,))
    if fields.src_lang and fields.tgt_lang:
        for n in names:
            if (directory / f"{n}.{fields.src_lang}").is_file():
                return _parallel_source(spec, split, directory / n, fields.src_lang, fields.tgt_lang)
    files = _split_files(directory)
    if split in files:
        return Source(spec, split, "file", (files[split],))
    for p in sorted(directory.iterdir()):  # any other split name, e.g. test_2016_flickr.jsonl
        if p.is_file() and p.name.lower().removesuffix(".gz").rsplit(".", 1)[0] == split:
            return Source(spec, split, "file", (p,))
    return None


def load_hub(name: str, split: str, subset: str | None) -> Dataset:
    """A Hugging Face Hub dataset split."""
    try:
        return _hf().load_dataset(name, subset, split=split)
    except ConnectionError:
        raise DataError(
            f"could not reach the Hugging Face Hub for dataset '{name}', and no local path "
            f"'{name}' exists",
            "check the path, or go online / pre-cache the dataset",
        ) from None
    except ValueError as e:  # unknown split or config
        raise DataError(f"dataset '{name}': {first_line(e)}",
                        "check --subset and --split") from None
    except Exception as e:
        raise DataError(f"could not load dataset '{name}': {first_line(e)}",
                        "check the name, --subset and --split") from None


def looks_like_hub_name(spec: str) -> bool:
    """`name` or `owner/name`, with no file suffix and not a path that starts locally."""
    parts = spec.split("/")
    return (len(parts) <= 2 and all(parts) and not spec.startswith((".", "~"))
            and not Path(spec).suffix and not (len(parts) == 2 and Path(parts[0]).is_dir()))


def locate(spec: str, split: str = "train", *, fields: Fields | None = None,
           subset: str | None = None, required: bool = True) -> Source | None:
    """Find one split of a data SPEC without reading it. For a single file the whole file is
    the requested split. Returns None when a local split is absent and ``required`` is False
    (a Hub dataset's splits are only known once it is loaded: see :func:`load_source`)."""
    fields = fields or Fields()
    path = Path(os.path.expanduser(spec))
    if path.is_dir():
        found = _locate_in_dir(spec, path, split, fields)
        if found is None and required:
            present = sorted(_split_files(path)) or ["none"]
            raise DataError(f"no '{split}' split in directory {path} (found: {', '.join(present)})",
                            "name files train.*, validation.* or test.*, or pass a file")
        return found
    if path.is_file():
        return Source(spec, split, "file", (path,))
    if fields.src_lang and fields.tgt_lang and Path(f"{path}.{fields.src_lang}").exists():
        return _parallel_source(spec, split, path, fields.src_lang, fields.tgt_lang)
    if not looks_like_hub_name(spec):
        hint = "check the path"
        if fields.src_lang and fields.tgt_lang:
            hint += f" (a parallel prefix needs {spec}.{fields.src_lang} and {spec}.{fields.tgt_lang})"
        raise DataError(f"no such file or directory: {spec}", hint)
    return Source(spec, split, "hub", (), subset)


def single_split(spec: str, fields: Fields | None = None, subset: str | None = None) -> bool:
    """Whether a SPEC is one split only: a single file or a parallel prefix has no splits of its
    own (every split asked of it is the whole of it); a directory or a Hub dataset has them."""
    if Path(os.path.expanduser(spec)).is_dir():
        return False
    return locate(spec, "test", fields=fields, subset=subset).kind in ("file", "parallel")


def load_source(source: Source, required: bool = True) -> Dataset | None:
    """Read a located split as a raw Dataset (columns as in the data); a Hub split that does
    not exist is None when ``required`` is False."""
    if source.kind == "file":
        return load_file(source.paths[0], source.documents)
    if source.kind == "parallel":
        src, tgt = (p.name.rsplit(".", 1)[1] for p in source.paths)
        return load_parallel(Path(str(source.paths[0])[: -len(src) - 1]), src, tgt)
    if not required:
        try:
            return load_hub(source.spec, source.split, source.subset)
        except DataError as e:
            if "could not reach" in e.message:
                raise
            return None
    return load_hub(source.spec, source.split, source.subset)


def load_spec(spec: str, split: str = "train", *, fields: Fields | None = None,
              subset: str | None = None, required: bool = True) -> Dataset | None:
    """Load one split of a data SPEC as a raw Dataset (columns as in the data).

    For a single file the whole file is the requested split. Returns None when the split is
    absent and ``required`` is False.
    """
    source = locate(spec, split, fields=fields, subset=subset, required=required)
    return None if source is None else load_source(source, required)
