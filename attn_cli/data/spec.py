"""Data loading for every command: one data SPEC -> a normalized `datasets.Dataset`.

A SPEC is a local file (jsonl/json/csv/tsv/parquet/txt, optionally .gz), a directory of split
files (train.*, validation|valid|val|dev.*, test.*), a parallel-text prefix (`path/train` with
src/tgt codes -> `path/train.de` + `path/train.en`), or a Hugging Face Hub dataset name.
Everything is read through `datasets`, so it is cached as Arrow and memory-mapped.

After field detection each task has fixed column names:
  translate / summarize: "src", "tgt" (and "references" when the data has them)
  sentiment:             "text", "label" (int index into TaskData.label_names)
"""

from __future__ import annotations

import codecs
import gzip
import json
import logging
import os
from dataclasses import dataclass, field
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

TASKS = ("translate", "summarize", "sentiment")
TEXT_DTYPES = ("string", "large_string")  # CSV/TSV columns load as large_string (pandas >= 3)
BUILDERS = {"jsonl": "json", "json": "json", "csv": "csv", "tsv": "csv", "parquet": "parquet",
            "txt": "text"}
SPLIT_NAMES = {
    "train": ("train",),
    "validation": ("validation", "valid", "val", "dev"),
    "test": ("test",),
}
SRC_FIELDS = ("document", "article", "dialogue", "text", "source", "src")
TGT_FIELDS = ("summary", "highlights", "title", "target", "tgt")
TEXT_FIELDS = ("text", "sentence", "review", "content")
LABEL_FIELDS = ("label", "labels", "sentiment")
HOLDOUT_FRACTION = 0.01
HOLDOUT_MAX = 2000


@dataclass
class Fields:
    """Which columns hold what; None means detect."""

    src_lang: str | None = None  # translate: source language code (column or file suffix)
    tgt_lang: str | None = None  # translate: target language code
    src_field: str | None = None  # summarize: document column
    tgt_field: str | None = None  # summarize: summary column
    text_field: str | None = None  # sentiment: text column
    label_field: str | None = None  # sentiment: label column


@dataclass
class TaskData:
    """Normalized training (and validation) data for one task."""

    task: str
    train: Dataset
    valid: Dataset | None
    label_names: list[str] | None = None  # sentiment: index -> name
    notes: list[str] = field(default_factory=list)  # what was decided, to show the user


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


# ---------------------------------------------------------------------------- fields


def _pick(columns: list[str], wanted: str | None, candidates: tuple[str, ...], what: str,
          option: str) -> str:
    if wanted is not None:
        if wanted not in columns:
            raise DataError(f"field '{wanted}' not found; the data has columns: {', '.join(columns)}",
                            f"pass one of them with {option}")
        return wanted
    for c in candidates:
        if c in columns:
            return c
    raise DataError(f"could not find the {what} field; the data has columns: {', '.join(columns)}",
                    f"name it with {option}")


def _flatten_translation(ds: Dataset) -> Dataset:
    """The Hub's {"translation": {"de": ..., "en": ...}} -> one column per language."""
    if "translation" not in ds.column_names:
        return ds
    flat = ds.flatten()
    return flat.rename_columns({c: c.split(".", 1)[1] for c in flat.column_names
                                if c.startswith("translation.")})


def normalize_seq2seq(ds: Dataset, task: str, fields: Fields) -> Dataset:
    """Rename the source/target columns to src/tgt and drop rows with an empty side."""
    ds = _flatten_translation(ds)
    cols = ds.column_names
    if task == "translate":
        if not (fields.src_lang and fields.tgt_lang):
            raise DataError(f"translation needs the language codes; the data has columns: {', '.join(cols)}",
                            "pass --src and --tgt, e.g. --src de --tgt en")
        src = _pick(cols, fields.src_lang, (), "source", "--src")
        tgt = _pick(cols, fields.tgt_lang, (), "target", "--tgt")
    else:
        src = _pick(cols, fields.src_field, SRC_FIELDS, "document", "--src-field")
        tgt = _pick(cols, fields.tgt_field, TGT_FIELDS, "summary", "--tgt-field")
    keep = [src, tgt] + (["references"] if "references" in cols else [])
    ds = ds.select_columns(keep).rename_columns({src: "src", tgt: "tgt"})
    for col in ("src", "tgt"):
        if ds.features[col].dtype not in TEXT_DTYPES:
            raise DataError(f"field '{src if col == 'src' else tgt}' holds {ds.features[col].dtype}, not text",
                            "point the field option at a text column")
    ds = ds.filter(lambda s, t: bool(s and s.strip()) and bool(t and t.strip()),
                   input_columns=["src", "tgt"])
    return ds


def normalize_sentiment(ds: Dataset, fields: Fields, label_names: list[str] | None = None
                        ) -> tuple[Dataset, list[str]]:
    """Rename to text/label, map labels to ints 0..K-1; returns (dataset, label_names).

    Integer labels keep their values (names from a ClassLabel feature, else "0", "1", ...);
    string labels are sorted so the mapping is stable. With ``label_names`` given (validation
    data), the training mapping is reused and an unseen label is an error.
    """
    cols = ds.column_names
    text = _pick(cols, fields.text_field, TEXT_FIELDS, "text", "--text-field")
    label = _pick(cols, fields.label_field, LABEL_FIELDS, "label", "--label-field")
    ds = ds.select_columns([text, label]).rename_columns({text: "text", label: "label"})
    feat = ds.features["label"]
    dtype = getattr(feat, "dtype", "")
    if not isinstance(feat, _hf().ClassLabel) and not (dtype.startswith("int") or dtype in TEXT_DTYPES):
        found = dtype or ("a mix of types" if type(feat).__name__ == "Json" else type(feat).__name__)
        raise DataError(f"labels in '{label}' must be all integers or all strings (found {found})",
                        "use 0/1/... or names like positive/negative")
    values = ds.unique("label")
    if any(v is None for v in values):
        raise DataError(f"some examples have no '{label}' value", "give every example a label")
    if isinstance(feat, _hf().ClassLabel):
        names = label_names or list(feat.names)
        values = [int(v) for v in values]
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        if min(values) < 0:
            raise DataError(f"negative label {min(values)} in '{label}'", "use labels 0..K-1 or names")
        names = label_names or [str(i) for i in range(max(values) + 1)]
        if max(values) >= len(names):
            raise DataError(f"label {max(values)} is out of range for the labels {names}",
                            "use the same label set for training and evaluation")
    elif all(isinstance(v, str) for v in values):
        names = label_names or sorted(values)
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise DataError(f"label(s) {unknown[:5]} not among the known labels {names}",
                            "use the same label set for training and evaluation")
        index = {n: i for i, n in enumerate(names)}
        ds = ds.map(lambda b: {"label": [index[v] for v in b["label"]]}, batched=True,
                    features=_hf().Features({"text": ds.features["text"],
                                                "label": _hf().Value("int64")}))
    else:
        raise DataError(f"labels in '{label}' must be all integers or all strings (found "
                        f"{', '.join(map(repr, values[:5]))})", "use 0/1/... or names like positive")
    ds = ds.filter(lambda t: bool(t and t.strip()), input_columns=["text"])
    return ds, names


def normalize(ds: Dataset, task: str, fields: Fields, label_names: list[str] | None = None
              ) -> tuple[Dataset, list[str] | None]:
    if task not in TASKS:
        raise DataError(f"unknown task '{task}'", f"use one of {', '.join(TASKS)}")
    if task == "sentiment":
        return normalize_sentiment(ds, fields, label_names)
    return normalize_seq2seq(ds, task, fields), None


# ---------------------------------------------------------------------------- task data


def load_task_data(spec: str, task: str, fields: Fields | None = None, *,
                   valid_spec: str | None = None, split: str = "train", subset: str | None = None,
                   seed: int = 0, need_valid: bool = True) -> TaskData:
    """Training data plus validation data, normalized for ``task``.

    Validation comes from ``valid_spec``, else the SPEC's own validation split, else a
    fixed-seed 1% (at most 2,000) held out of train; ``notes`` says which.
    """
    fields = fields or Fields()
    raw = load_spec(spec, split, fields=fields, subset=subset)
    train, names = normalize(raw, task, fields)
    _check_nonempty(train, spec, task)
    notes: list[str] = []
    valid = None
    if need_valid:
        if valid_spec is not None:
            raw_valid = load_spec(valid_spec, "validation", fields=fields, subset=subset)
            notes.append(f"validation: {valid_spec}")
        else:
            is_file = Path(os.path.expanduser(spec)).is_file()
            raw_valid = None if is_file else load_spec(spec, "validation", fields=fields,
                                                       subset=subset, required=False)
            if raw_valid is not None:
                notes.append(f"validation: the '{'validation'}' split of {spec}")
        if raw_valid is not None:
            valid, _ = normalize(raw_valid, task, fields, names)
            _check_nonempty(valid, valid_spec or spec, task)
        else:
            n = max(1, min(HOLDOUT_MAX, round(len(train) * HOLDOUT_FRACTION)))
            if len(train) < 2:
                raise DataError(f"only {len(train)} usable example in {spec}", "give more data or --valid")
            parts = train.train_test_split(test_size=n, seed=seed, shuffle=True)
            train, valid = parts["train"], parts["test"]
            notes.append(f"validation: held out {n} examples of train (seed {seed}); "
                         "pass --valid to choose")
    if task == "sentiment" and len(present := train.unique("label")) < 2:
        raise DataError(f"the training data has only one label ({names[present[0]]})",
                        "sentiment needs at least two classes")
    return TaskData(task=task, train=train, valid=valid, label_names=names, notes=notes)


def load_eval_data(spec: str, task: str, fields: Fields | None = None, *, split: str = "test",
                   subset: str | None = None, label_names: list[str] | None = None) -> Dataset:
    """One split for evaluation, normalized (sentiment labels mapped with the model's names)."""
    ds, _ = normalize(load_spec(spec, split, fields=fields, subset=subset), task,
                      fields or Fields(), label_names)
    _check_nonempty(ds, spec, task)
    return ds


def _check_nonempty(ds: Dataset, spec: str, task: str) -> None:
    if len(ds) == 0:
        raise DataError(f"{spec} has no usable {task} examples (all empty)",
                        "check the fields hold text")


def texts_for_tokenizer(data: Dataset, task: str) -> tuple[list[str], list[str]]:
    """Column names whose text trains the tokenizer: (source-side columns, target-side columns).
    Pretraining text (one "text" column, :mod:`textdata`) trains one joint vocabulary."""
    if task == "sentiment" or "src" not in data.column_names:
        return ["text"], []
    return ["src"], ["tgt"]


def encode_examples(ds: Dataset, task: str, toks, max_len: int,
                    batch_size: int = 8192) -> tuple[list[tuple], int]:
    """Tokenize normalized data: seq2seq -> [(src_ids, tgt_ids)], sentiment -> [(ids, label)].

    Sources are cut to ``max_len`` tokens and targets to ``max_len - 1`` (room for BOS/EOS);
    returns the examples and how many were truncated.
    """
    examples: list[tuple] = []
    cut = 0
    cols = ["text", "label"] if task == "sentiment" else ["src", "tgt"]
    for batch in ds.select_columns(cols).iter(batch_size=batch_size):
        if task == "sentiment":
            ids = toks.src.encode_batch(batch["text"])
            cut += sum(len(x) > max_len for x in ids)
            examples += [(x[:max_len], y) for x, y in zip(ids, batch["label"], strict=True)]
        else:
            src = toks.src.encode_batch(batch["src"])
            tgt = toks.tgt.encode_batch(batch["tgt"])
            cut += sum(len(s) > max_len or len(t) > max_len - 1 for s, t in zip(src, tgt, strict=True))
            examples += [(s[:max_len], t[:max_len - 1]) for s, t in zip(src, tgt, strict=True)]
    return examples, cut
