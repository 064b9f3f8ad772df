"""Quality metrics for the three tasks: BLEU/chrF, ROUGE, accuracy/macro-F1.

All functions take plain Python lists of detokenized text (or integer labels) and return
JSON-ready dicts of floats on a 0-100 scale. Nothing here prints.

References may be given in two shapes, for BLEU/chrF and ROUGE alike:
  * ``list[str]``: one reference per example, ``refs[i]`` belongs to ``hyps[i]``;
  * ``list[list[str]]``: several references per example, ``refs[i]`` is the list of
    references of ``hyps[i]`` (examples may have different numbers of references).

Every metric here is "higher is better" (see :func:`higher_is_better`).
"""

from __future__ import annotations

import math

import re
from collections.abc import Sequence

from sacrebleu.metrics import BLEU, CHRF

ROUGE_KEYS = ("rouge1", "rouge2", "rougeL", "rougeLsum")

# The metric that picks the best checkpoint and heads the model card, per task.
PRIMARY_METRIC = {"translate": "bleu", "summarize": "rouge1", "sentiment": "accuracy"}
# ... of a pretraining run (attn pretrain): accuracy on the masked or denoised pieces
PRETRAIN_METRIC = {"translate": "token_accuracy", "summarize": "token_accuracy", "sentiment": "masked_accuracy"}

# Every metric this module reports; all of them are better when larger.
HIGHER_IS_BETTER = {"bleu": True, "chrf": True, "accuracy": True, "macro_f1": True,
                    **{k: True for k in ROUGE_KEYS}}

# A sentence ends at . ! or ? followed by whitespace.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def primary_metric(task: str) -> str:
    """The metric name used to compare checkpoints of ``task`` (higher is better)."""
    try:
        return PRIMARY_METRIC[task]
    except KeyError:
        raise ValueError(f"unknown task {task!r} (choose from {', '.join(PRIMARY_METRIC)})")\
            from None


def higher_is_better(metric: str) -> bool:
    """True when a larger value of ``metric`` is better (true of every metric here)."""
    if metric not in HIGHER_IS_BETTER:
        raise ValueError(f"unknown metric {metric!r} (known: {', '.join(HIGHER_IS_BETTER)})")
    return HIGHER_IS_BETTER[metric]


def _per_example_refs(hyps: Sequence[str], refs: Sequence[str] | Sequence[Sequence[str]]
                      ) -> list[list[str]]:
    """Normalise ``refs`` to one non-empty list of reference strings per hypothesis."""
    if len(hyps) == 0:
        raise ValueError("no hypotheses to score")
    if len(refs) != len(hyps):
        raise ValueError(f"{len(hyps)} hypotheses but {len(refs)} references")
    out: list[list[str]] = []
    for i, r in enumerate(refs):
        group = [r] if isinstance(r, str) else list(r)
        if not group or not all(isinstance(x, str) for x in group):
            raise ValueError(f"example {i}: references must be a string or a non-empty "
                             f"list of strings")
        out.append(group)
    return out


def bleu_chrf(hyps: list[str], refs: list[str] | list[list[str]]) -> dict:
    """Corpus BLEU and chrF with sacreBLEU defaults (13a tokenization, detokenized input).

    Returns {"bleu": float, "chrf": float, "bleu_signature": str}.
    """
    per_example = _per_example_refs(hyps, refs)
    n_streams = max(len(g) for g in per_example)
    # sacreBLEU wants reference *streams* (one list per reference index); a missing
    # reference of an example with fewer references is None, which sacreBLEU skips.
    streams = [[g[k] if k < len(g) else None for g in per_example] for k in range(n_streams)]
    bleu, chrf = BLEU(), CHRF()  # what sacrebleu.corpus_bleu / corpus_chrf use, plus signature
    hyps = list(hyps)
    b = bleu.corpus_score(hyps, streams)
    c = chrf.corpus_score(hyps, streams)
    return {"bleu": float(b.score), "chrf": float(c.score),
            "bleu_signature": str(bleu.get_signature())}


def split_sentences(text: str) -> list[str]:
    """Split on ., ! or ? followed by whitespace (a simple rule, good enough for ROUGE-Lsum)."""
    return [s for s in (p.strip() for p in _SENTENCE_END.split(text.strip())) if s]


def _lsum_text(text: str) -> str:
    """One sentence per line, which rouge-score's rougeLsum needs."""
    return "\n".join(split_sentences(text))


def rouge(hyps: list[str], refs: list[str] | list[list[str]]) -> dict:
    """ROUGE-1/2/L/Lsum F1 (x100, Porter stemming) averaged over examples.

    With several references per example, each metric takes the best F1 over that example's
    references (independently per metric), as the DialogSum and CNN/DM evaluations do.
    Returns {"rouge1", "rouge2", "rougeL", "rougeLsum"} -> float.
    """
    from rouge_score.rouge_scorer import RougeScorer

    per_example = _per_example_refs(hyps, refs)
    scorer = RougeScorer(list(ROUGE_KEYS), use_stemmer=True)
    totals = dict.fromkeys(ROUGE_KEYS, 0.0)
    for hyp, group in zip(hyps, per_example, strict=True):
        # Newlines only matter to rougeLsum; the other metrics tokenize them as spaces.
        best = scorer.score_multi([_lsum_text(r) for r in group], _lsum_text(hyp))
        for k in ROUGE_KEYS:
            totals[k] += best[k].fmeasure
    n = len(per_example)
    return {k: 100.0 * v / n for k, v in totals.items()}


def confusion_matrix(preds: Sequence[int], golds: Sequence[int], num_labels: int
                     ) -> list[list[int]]:
    """Counts (num_labels x num_labels): rows = gold label, columns = predicted label."""
    if len(preds) != len(golds):
        raise ValueError(f"{len(preds)} predictions but {len(golds)} gold labels")
    if num_labels < 1:
        raise ValueError(f"num_labels must be positive, got {num_labels}")
    matrix = [[0] * num_labels for _ in range(num_labels)]
    for p, g in zip(preds, golds, strict=True):
        for name, v in (("prediction", p), ("gold label", g)):
            if not 0 <= int(v) < num_labels:
                raise ValueError(f"{name} {v} is outside [0, {num_labels})")
        matrix[int(g)][int(p)] += 1
    return matrix


def classification(preds: list[int], golds: list[int], num_labels: int) -> dict:
    """Accuracy and macro-F1 (both x100), the standard error of the accuracy (x100,
    sqrt(p(1-p)/n): how far a rerun on other examples of the same size may move it) and the
    confusion matrix (rows gold, cols pred).

    Macro-F1 averages per-class F1 over the classes that occur in the gold labels or the
    predictions; a class with zero precision and recall denominators scores F1 = 0.
    """
    if len(golds) == 0:
        raise ValueError("no examples to score")
    matrix = confusion_matrix(preds, golds, num_labels)
    correct = sum(matrix[c][c] for c in range(num_labels))
    f1s = []
    for c in range(num_labels):
        tp = matrix[c][c]
        gold_c = sum(matrix[c])  # tp + fn
        pred_c = sum(row[c] for row in matrix)  # tp + fp
        if gold_c == 0 and pred_c == 0:
            continue  # class absent from both: not part of the average
        f1s.append(2.0 * tp / (gold_c + pred_c))  # = 2PR / (P + R); 0 when tp = 0
    p = correct / len(golds)
    return {"accuracy": 100.0 * p, "accuracy_se": 100.0 * math.sqrt(p * (1 - p) / len(golds)),
            "macro_f1": 100.0 * sum(f1s) / len(f1s),
            "confusion": matrix}
