"""Baselines shown beside every score: what a model has to beat to be worth its training.

- sentiment: TF-IDF over word 1-2-grams (min_df 2, sublinear tf) + logistic regression (C=4),
  fit on the training texts (scikit-learn; about 10 s for SST-2's 67k sentences on 2 cores);
- summarize: lead-3, the first three sentences of the document (of a dialogue, its first three
  turns, with DialogSum's ``#Person1#:`` speaker tags removed), ROUGE against the references;
- translate: the source copied as the translation, BLEU/chrF against the references
  (meaningful only for related languages; near 0 otherwise).

Each ``*_baseline`` function takes plain texts and returns a JSON-ready dict: ``name``, the
task's metrics (0-100, as :mod:`attn_cli.eval.metrics`), ``examples`` scored and ``seconds``.

:func:`for_run` computes the baseline of a training run on the data that run used: its training
rows (the held-out part excluded) and the validation examples its model is scored on. Those rows
are token ids in the cache, so it decodes them back to text with the run's tokenizer: the
baseline reads what the model read (truncated to ``--max-len``, after SentencePiece's
normalization, which turns newlines into spaces) rather than the raw files. Fitting uses at
most ``FIT_ROWS`` training rows, a seeded sample of larger corpora (``fit_rows`` <
``train_rows`` in the result says so). ``attn eval --baseline`` instead reads raw text from the
SPEC (:func:`sentiment_baseline` on its train split), as ``benchmarks/quality.py`` does.

Nothing here prints.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from attn_cli.eval.metrics import PRIMARY_METRIC, bleu_chrf, classification, rouge, split_sentences

FIT_ROWS = 200_000  # training rows the TF-IDF baseline is fit on at most (a seeded sample beyond)
LEAD_N = 3
NAMES = {"sentiment": "TF-IDF 1-2-grams + LR", "summarize": "lead-3", "translate": "copy the source"}
METRICS = {"sentiment": ("accuracy", "macro_f1"), "summarize": ("rouge1", "rouge2", "rougeL", "rougeLsum"),
           "translate": ("bleu", "chrf")}

# DialogSum's anonymised speaker tag, "#Person1#:"; also found inside a line whose newlines a
# tokenizer has turned into spaces.
SPEAKER_TAG = re.compile(r"#[A-Za-z]+\d*#:\s*")
# A dialogue line starts with a speaker: "#Person1#: ..." or "Amanda: ..." (SAMSum).
TURN_START = re.compile(r"^(#[A-Za-z]+\d*#|[^\s:][^:\n]{0,30}):\s")


# ------------------------------------------------------------------------------ sentiment


@dataclass
class TfidfClassifier:
    """A fitted TF-IDF vectorizer and logistic regression (scikit-learn objects)."""

    vectorizer: Any  # sklearn TfidfVectorizer
    model: Any  # sklearn LogisticRegression

    @property
    def classes(self) -> list:
        """The labels, in the column order of :meth:`predict_proba`."""
        return self.model.classes_.tolist()

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """(N, classes) probabilities."""
        return self.model.predict_proba(self.vectorizer.transform(list(texts)))

    def predict(self, texts: Sequence[str]) -> list:
        """The most probable label of each text."""
        return self.model.predict(self.vectorizer.transform(list(texts))).tolist()


def fit_tfidf(texts: Sequence[str], labels: Sequence) -> TfidfClassifier:
    """TF-IDF (word 1-2-grams, min_df 2, sublinear tf) + logistic regression (C=4, lbfgs) fit
    on ``texts``. Data too small for min_df 2 to keep any n-gram is fit with min_df 1."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    texts = list(texts)
    try:
        vec = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
        x = vec.fit_transform(texts)
    except ValueError:  # "empty vocabulary": every n-gram occurs once
        vec = TfidfVectorizer(ngram_range=(1, 2), min_df=1, sublinear_tf=True)
        x = vec.fit_transform(texts)
    model = LogisticRegression(C=4.0, max_iter=2000)
    model.fit(x, list(labels))
    return TfidfClassifier(vec, model)


def sample_rows(n: int, cap: int = FIT_ROWS, seed: int = 1) -> np.ndarray:
    """Positions of the rows to fit on: all ``n``, or a sorted seeded sample of ``cap``."""
    if n <= cap:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=cap, replace=False))


def sentiment_baseline(train_texts: Sequence[str], train_labels: Sequence[int], eval_texts: Sequence[str],
                       eval_labels: Sequence[int], num_labels: int, *, max_rows: int = FIT_ROWS,
                       seed: int = 1, train_rows: int | None = None) -> dict:
    """Accuracy and macro-F1 of :func:`fit_tfidf` (fit on at most ``max_rows`` of the training
    texts, a seeded sample) on the evaluation texts. Labels are class ids below ``num_labels``.
    ``train_rows``: the size of the corpus the texts were drawn from, when already sampled."""
    start = time.perf_counter()
    total = len(train_texts) if train_rows is None else train_rows
    keep = sample_rows(len(train_texts), max_rows, seed)
    if len(keep) < len(train_texts):
        train_texts = [train_texts[i] for i in keep.tolist()]
        train_labels = [train_labels[i] for i in keep.tolist()]
    clf = fit_tfidf(train_texts, train_labels)
    preds = [int(p) for p in clf.predict(eval_texts)]
    scores = classification(preds, [int(y) for y in eval_labels], num_labels)
    return {"name": NAMES["sentiment"], "accuracy": scores["accuracy"], "macro_f1": scores["macro_f1"],
            "examples": len(eval_texts), "fit_rows": len(train_texts), "train_rows": total,
            "seconds": round(time.perf_counter() - start, 2)}


# ------------------------------------------------------------------------------ summarize


def is_dialogue(lines: Sequence[str]) -> bool:
    """Two or more lines, most of them starting with a speaker ("#Person1#: ", "Amanda: ")."""
    return len(lines) >= 2 and sum(bool(TURN_START.match(x)) for x in lines) * 2 >= len(lines)


def lead(text: str, n: int = LEAD_N, strip_speakers: bool = True) -> str:
    """The first ``n`` sentences of ``text``, one per line; of a dialogue, its first ``n`` turns.

    A dialogue is text whose lines mostly start with a speaker, or a single line holding two or
    more ``#Person1#:`` tags (a DialogSum dialogue decoded from token ids, newlines gone).
    ``strip_speakers`` removes the ``#PersonN#:`` tags (the published DialogSum lead-3 does)."""
    lines = [x.strip() for x in text.splitlines() if x.strip()]
    if len(lines) <= 1 and len(SPEAKER_TAG.findall(text)) >= 2:
        lines = [t.strip() for t in re.split(r"(?=#[A-Za-z]+\d*#:)", text) if t.strip()]
    units = lines[:n] if is_dialogue(lines) else split_sentences(text)[:n]
    if strip_speakers:
        units = [SPEAKER_TAG.sub("", u).strip() for u in units]
    return "\n".join(units)


def summarize_baseline(docs: Sequence[str], refs: Sequence[str] | Sequence[Sequence[str]],
                       n: int = LEAD_N, strip_speakers: bool = True) -> dict:
    """ROUGE-1/2/L/Lsum of :func:`lead` against the references (best of several per example)."""
    start = time.perf_counter()
    scores = rouge([lead(d, n, strip_speakers) for d in docs], list(refs))
    return {"name": NAMES["summarize"] if n == LEAD_N else f"lead-{n}", **scores, "examples": len(docs),
            "seconds": round(time.perf_counter() - start, 2)}


# ------------------------------------------------------------------------------ translate


def translate_baseline(srcs: Sequence[str], refs: Sequence[str] | Sequence[Sequence[str]]) -> dict:
    """BLEU and chrF of the sources themselves as translations."""
    start = time.perf_counter()
    scores = bleu_chrf(list(srcs), list(refs))
    return {"name": NAMES["translate"], "bleu": scores["bleu"], "chrf": scores["chrf"], "examples": len(srcs),
            "seconds": round(time.perf_counter() - start, 2)}


# ------------------------------------------------------------------------------ a run's data


def _gather(rows, positions: np.ndarray) -> list:
    """Examples at ``positions`` of a TokenStore, InMemoryExamples or list."""
    if not hasattr(rows, "gather"):
        return [rows[i] for i in positions.tolist()]
    out: list = []
    for start in range(0, len(positions), 4096):
        out += rows.gather(positions[start:start + 4096].tolist())
    return out


def for_run(task: str, train, valid: Sequence[tuple], refs: Sequence, toks, *, eval_samples: int,
            num_labels: int = 0, max_rows: int = FIT_ROWS, seed: int = 1) -> dict:
    """The task's baseline on a training run's own data (token ids decoded with ``toks``).

    sentiment: fit on ``train`` (``(ids, label)`` rows, at most ``max_rows`` of them), scored
    on all of ``valid``, as the run's validation scores the model. summarize/translate: the
    first ``eval_samples`` of ``valid`` (``(src_ids, tgt_ids)``) against ``refs``, the
    examples the run decodes to score the model. The result says ``fit_on`` what it read."""
    if task == "sentiment":
        keep = sample_rows(len(train), max_rows, seed)
        rows = _gather(train, keep)
        texts = [toks.src.decode(list(x)) for x, _ in rows]
        result = sentiment_baseline(texts, [y for _, y in rows], [toks.src.decode(list(x)) for x, _ in valid],
                                    [y for _, y in valid], num_labels, max_rows=max_rows, seed=seed,
                                    train_rows=len(train))
        return {**result, "fit_on": "the run's own rows, token ids decoded to text"}
    n = min(eval_samples, len(valid))
    srcs = [toks.src.decode(list(s)) for s, _ in valid[:n]]
    result = (summarize_baseline if task == "summarize" else translate_baseline)(srcs, list(refs[:n]))
    return {**result, "fit_on": "the validation sources, token ids decoded to text"}


def run_baseline(cfg, data, toks, note: Callable[[str], None]) -> dict | None:
    """:func:`for_run` for a finished training run (``cfg`` a TrainConfig, ``data`` its RunData),
    or None with one ``note`` when it cannot be computed: pretraining (no task labels),
    sentiment under ``--stream`` (the training rows are not on disk), or scikit-learn failing."""
    if getattr(cfg, "objective", None) is not None or cfg.task not in NAMES or not data.valid:
        return None
    if cfg.task == "sentiment" and cfg.stream:
        note("baseline: skipped under --stream (the TF-IDF baseline needs the training rows; "
             "attn eval --baseline computes it from the SPEC)")
        return None
    try:
        return for_run(cfg.task, data.train, data.valid, data.refs, toks, eval_samples=cfg.eval_samples,
                       num_labels=len(data.label_names or []), seed=cfg.seed)
    except Exception as e:  # noqa: BLE001 - a baseline must never fail the run it describes
        note(f"baseline: skipped ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'no message'})")
        return None


# ------------------------------------------------------------------------------ reporting


def primary(task: str) -> str:
    """The metric the model and its baseline are compared on (the checkpoint-selection metric)."""
    return PRIMARY_METRIC[task]


def wins(task: str, baseline: dict, model_value: float | None) -> bool:
    """True when the baseline scores above the model on the task's primary metric."""
    return model_value is not None and baseline.get(primary(task), float("-inf")) > model_value


def fit_note(baseline: dict) -> str:
    """'fit on 200,000 of 3,450,020 training rows (a seeded sample: the cap)', 'fit on 67,349
    training rows', or '' for a baseline that fits nothing."""
    if "fit_rows" not in baseline:
        return ""
    total = baseline.get("train_rows", baseline["fit_rows"])
    if baseline["fit_rows"] >= total:
        return f"fit on {baseline['fit_rows']:,} training rows"
    return f"fit on {baseline['fit_rows']:,} of {total:,} training rows (a seeded sample: the cap)"


def describe(baseline: dict) -> str:
    """The baseline's name and what it was fit on."""
    note = fit_note(baseline)
    return baseline["name"] + (f", {note}" if note else "")


def verdict(task: str, baseline: dict, model_value: float | None, where: str = "validation") -> str | None:
    """One line when the baseline beats the model, else None."""
    if not wins(task, baseline, model_value):
        return None
    key = primary(task)
    return (f"the baseline beats the model on {where} {key}: {baseline['name']} {baseline[key]:.1f} vs "
            f"the model's {model_value:.1f}")


def card_section(task: str, baseline: dict, best: dict | None) -> str:
    """The model card's baseline section: the baseline beside the model's best validation row."""
    best = best or {}
    rows = "".join(f"| {k} | {best[k]:.2f} | {baseline[k]:.2f} |\n" if isinstance(best.get(k), float)
                   else f"| {k} | — | {baseline[k]:.2f} |\n" for k in METRICS[task] if k in baseline)
    line = verdict(task, baseline, best.get(primary(task)))
    return (f"## Baseline on the same validation data\n\n{describe(baseline)}, scored on {baseline['examples']:,} "
            f"validation examples; it read {baseline.get('fit_on', 'see metrics.jsonl')}.\n\n"
            f"| metric | model (best step) | baseline |\n|---|---|---|\n{rows}\n"
            + (f"Note: {line}.\n\n" if line else ""))
