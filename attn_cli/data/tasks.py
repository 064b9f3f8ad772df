"""A task's examples from a SPEC's raw rows: fields picked, columns renamed, labels mapped.

After field detection each task has fixed column names:
  translate / summarize: "src", "tgt" (and "references" when the data has them)
  sentiment:             "text", "label" (int index into TaskData.label_names)

:func:`load_task_data` gives training and validation data (:class:`TaskData`),
:func:`load_eval_data` one split for evaluation, and :func:`encode_examples` tokenizes them in
memory. Reading the SPEC itself is :mod:`spec`'s.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from attn_cli.data.spec import Fields, _hf, load_spec
from attn_cli.errors import DataError

if TYPE_CHECKING:
    from datasets import Dataset

TASKS = ("translate", "summarize", "sentiment")
TEXT_DTYPES = ("string", "large_string")  # CSV/TSV columns load as large_string (pandas >= 3)
SRC_FIELDS = ("document", "article", "dialogue", "text", "source", "src")
TGT_FIELDS = ("summary", "highlights", "title", "target", "tgt")
TEXT_FIELDS = ("text", "sentence", "review", "content")
LABEL_FIELDS = ("label", "labels", "sentiment")
HOLDOUT_FRACTION = 0.01  # translate/summarize: 1% of train held out for validation ...
HOLDOUT_MAX = 2000  # ... at most this many (decoding scores only --eval-samples of them)
# sentiment: enough for the best of ~10 evaluations to be chosen on signal, not noise: 5%, at
# least 2,000 (standard error of an accuracy near 85%: 0.8 points) but never more than 20% of train
CLASSIFY_HOLDOUT = (0.05, 2000, 0.2)


def holdout_size(n: int, task: str) -> int:
    """Examples held out of ``n`` training rows for validation when the data has no validation
    split (HOLDOUT_FRACTION / HOLDOUT_MAX for seq2seq, CLASSIFY_HOLDOUT for sentiment)."""
    if task == "sentiment":
        share, least, most = CLASSIFY_HOLDOUT
        return max(1, round(n * share), min(least, round(n * most)))
    return max(1, min(HOLDOUT_MAX, round(n * HOLDOUT_FRACTION)))


@dataclass
class TaskData:
    """Normalized training (and validation) data for one task."""

    task: str
    train: Dataset
    valid: Dataset | None
    label_names: list[str] | None = None  # sentiment: index -> name
    notes: list[str] = field(default_factory=list)  # what was decided, to show the user


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

    Integer labels 0..K-1 are class ids (names "0", "1", ...); other integers (stars 1 and 5)
    are names, in sorted order (:func:`int_label_names`; ``fields.num_labels`` keeps them as
    ids); string labels are sorted so the mapping is stable. With ``label_names`` given
    (validation data), the training mapping is reused and an unseen label is an error.
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
    if isinstance(feat, _hf().ClassLabel):  # the feature's own names; its integers are class ids
        values = [int(v) for v in values]
        label_names = label_names or list(feat.names)
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        names = label_names or int_label_names(values, fields.num_labels)
        index = int_label_index(names)
        if index is None:  # named classes (given): the integers are class ids
            bad = [v for v in values if not 0 <= v < len(names)]
            if bad:
                raise DataError(f"label {bad[0]} is out of range for the labels {names}",
                                "use the same label set for training and evaluation")
            return _nonempty_texts(ds), names
    elif all(isinstance(v, str) for v in values):
        if fields.num_labels is not None and label_names is None:
            raise DataError(f"--num-labels keeps integer labels, but the labels in '{label}' are names",
                            "leave out --num-labels")
        names = label_names or sorted(values)
        index = {n: i for i, n in enumerate(names)}
    else:
        raise DataError(f"labels in '{label}' must be all integers or all strings (found "
                        f"{', '.join(map(repr, values[:5]))})", "use 0/1/... or names like positive")
    unknown = sorted(set(values) - set(index))
    if unknown:
        raise DataError(f"label(s) {unknown[:5]} not among the known labels {names}",
                        "use the same label set for training and evaluation")
    if any(index[v] != v for v in values):
        ds = ds.map(lambda b: {"label": [index[v] for v in b["label"]]}, batched=True,
                    features=_hf().Features({"text": ds.features["text"], "label": _hf().Value("int64")}))
    return _nonempty_texts(ds), names


def _nonempty_texts(ds: Dataset) -> Dataset:
    return ds.filter(lambda t: bool(t and t.strip()), input_columns=["text"])


def int_label_names(values, num_labels: int | None = None) -> list[str]:
    """Class names of the integer labels of training data: 0..K-1 stay class ids ("0".."K-1");
    other integers (stars 1 and 5) are names in sorted order ("1", "5": two classes, never
    phantom ones); ``num_labels`` K keeps them as class ids 0..K-1 (one outside is an error)."""
    found = sorted(set(values))
    if found and found[0] < 0:
        raise DataError(f"negative label {found[0]}", "use labels 0..K-1 or names")
    if num_labels is None:
        return [str(v) for v in found]
    if found and found[-1] >= num_labels:
        raise DataError(f"label {found[-1]} is out of range for --num-labels {num_labels}",
                        f"use labels 0..{num_labels - 1}, or leave out --num-labels")
    return [str(i) for i in range(num_labels)]


def int_label_index(names: list[str]) -> dict[int, int] | None:
    """Integer label -> class id when the class names are integers (see :func:`int_label_names`);
    None for named classes, whose integer labels are class ids."""
    try:
        index = {int(n): i for i, n in enumerate(names)}
    except ValueError:
        return None
    return index if [str(v) for v in index] == names else None


def label_note(names: list[str] | None) -> str | None:
    """The one-line note for integer labels that became names (None when they are 0..K-1)."""
    if not names or int_label_index(names) is None or names == [str(i) for i in range(len(names))]:
        return None
    shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
    return (f"labels: the integers {shown} are {len(names)} classes, named by their values in sorted "
            "order (--num-labels K keeps integer labels as classes 0..K-1)")


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
    fixed-seed share held out of train (:func:`holdout_size`); ``notes`` says which.
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
            n = holdout_size(len(train), task)
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
    Pretraining text (one "text" column, :mod:`text`) trains one joint vocabulary."""
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
