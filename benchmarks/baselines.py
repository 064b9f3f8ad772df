"""The benchmarks' baselines on a data directory's split files (``train.jsonl[.gz]``,
``test.jsonl[.gz]``): the TF-IDF + logistic regression classifier and lead-3, through attn's own
``attn_cli.eval.baselines`` so they score what ``attn eval --baseline`` reports. Shared by
quality.py, pretrain_gain.py and sentiment_errors.py."""

from __future__ import annotations

import gzip
import json
from pathlib import Path


def read_jsonl(path: Path) -> list[dict]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def split_file(directory: Path, split: str) -> Path:
    for name in (f"{split}.jsonl", f"{split}.jsonl.gz"):
        if (directory / name).is_file():
            return directory / name
    raise FileNotFoundError(f"no {split}.jsonl[.gz] in {directory}")


def tfidf_probabilities(directory: Path, split: str = "test") -> tuple[list, list[list[float]]]:
    """(labels, class probabilities per ``split`` example in that label order) of
    :func:`attn_cli.eval.baselines.fit_tfidf` (TF-IDF 1-2-grams, min_df 2, sublinear tf + logistic
    regression, C=4) fit on train."""
    from attn_cli.eval.baselines import fit_tfidf

    train, test = read_jsonl(split_file(directory, "train")), read_jsonl(split_file(directory, split))
    clf = fit_tfidf([r["text"] for r in train], [r["label"] for r in train])
    return clf.classes, clf.predict_proba([r["text"] for r in test]).tolist()


def tfidf_predictions(directory: Path, split: str = "test") -> list:
    """Labels predicted for ``split`` by :func:`tfidf_probabilities`' model."""
    labels, probs = tfidf_probabilities(directory, split)
    return [labels[max(range(len(p)), key=p.__getitem__)] for p in probs]


def tfidf_baseline(directory: Path, split: str = "test") -> dict:
    """Accuracy and macro-F1 of :func:`attn_cli.eval.baselines.sentiment_baseline` (fit on train,
    raw text) on ``split``, with its time: what ``attn eval --baseline`` reports."""
    from attn_cli.eval.baselines import sentiment_baseline

    train, test = read_jsonl(split_file(directory, "train")), read_jsonl(split_file(directory, split))
    names = sorted({r["label"] for r in train} | {r["label"] for r in test}, key=str)
    index = {name: i for i, name in enumerate(names)}
    result = sentiment_baseline([r["text"] for r in train], [index[r["label"]] for r in train],
                                [r["text"] for r in test], [index[r["label"]] for r in test], len(names))
    return {**result, "split": split}


def lead3_baseline(directory: Path, split: str = "test") -> dict:
    """The first three turns of each dialogue (:func:`attn_cli.eval.baselines.lead`), ROUGE against
    all references (best per example).

    The headline variant drops the ``#PersonN#:`` speaker tags, which reproduces the data
    README's lead-3 (27.3/10.6/21.6, measured here as 27.2/10.6/21.6). Keeping the tags scores
    higher (the references name people ``#Person1#``), so that variant is reported beside it.
    """
    from attn_cli.eval.baselines import summarize_baseline

    rows = read_jsonl(split_file(directory, split))
    docs = [r["dialogue"] for r in rows]
    refs = [r.get("references") or [r["summary"]] for r in rows]
    scores = summarize_baseline(docs, refs)
    tagged = summarize_baseline(docs, refs, strip_speakers=False)
    tagged = {k: v for k, v in tagged.items() if k.startswith("rouge")}
    return {**scores, "name": "lead-3 (first three turns, speaker tags removed)", "split": split,
            "with_speaker_tags": tagged, "references_per_example": max(len(x) for x in refs)}
