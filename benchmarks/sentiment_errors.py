#!/usr/bin/env python
"""Where sentiment models go wrong: accuracy by input length, against TF-IDF + LR, and ensembles.

    python benchmarks/sentiment_errors.py runs/sst2k runs/sst2o      # SST-2 validation
    python benchmarks/sentiment_errors.py runs/imdb --data ../shared/data/sentiment/imdb --split test

For each run directory it predicts the split with the run's best weights (``attn_cli.infer``, torch engine:
what ``attn sentiment`` uses) and prints accuracy on the whole split and per length bucket
(words), beside the TF-IDF + logistic regression baseline of ``baselines.py`` fitted on the
split's ``train`` file, and, with two or more runs, the ensemble that averages their
probabilities. ``--with-tfidf`` adds, for each run, the two-model ensemble of the run and the
baseline (mean of their probabilities), and the mean accuracy over the runs with and without
it. Labels must be the run's label names (SST-2's 0/1). Nothing is trained here except the
baseline (seconds); nothing is written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from baselines import read_jsonl, split_file, tfidf_probabilities

BUCKETS = ((0, 10), (10, 20), (20, 30), (30, None))  # words, [low, high)


def bucket_of(words: int, buckets=BUCKETS) -> int:
    """Index of the bucket [low, high) that holds ``words`` (high None = no upper bound)."""
    for i, (low, high) in enumerate(buckets):
        if words >= low and (high is None or words < high):
            return i
    raise ValueError(f"{words} words fall in no bucket")


def accuracy_by_bucket(gold: list[int], pred: list[int], words: list[int],
                       buckets=BUCKETS) -> tuple[float, list[float | None]]:
    """(accuracy in %, accuracy in % per bucket, None for an empty bucket)."""
    hits = [[] for _ in buckets]
    for g, p, n in zip(gold, pred, words, strict=True):
        hits[bucket_of(n, buckets)].append(g == p)
    overall = 100.0 * sum(g == p for g, p in zip(gold, pred, strict=True)) / max(1, len(gold))
    return overall, [100.0 * sum(h) / len(h) if h else None for h in hits]


def ensemble(probs: list[list[list[float]]]) -> list[int]:
    """Argmax of the mean class probabilities of several models (models x examples x classes)."""
    mean = [[sum(col) / len(col) for col in zip(*rows, strict=True)] for rows in zip(*probs, strict=True)]
    return [max(range(len(p)), key=p.__getitem__) for p in mean]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", type=Path, help="sentiment run directories")
    ap.add_argument("--data", type=Path, default=Path("../shared/data/sentiment/sst2"),
                    help="directory with train.jsonl and the split (text, label)")
    ap.add_argument("--split", default="validation", help="split to score (default: validation)")
    ap.add_argument("--with-tfidf", action="store_true",
                    help="also score each run averaged with the TF-IDF + LR baseline")
    args = ap.parse_args(argv)

    from attn_cli.infer.predict import classify
    from attn_cli.infer.runs import encode_inputs, load_run

    rows = read_jsonl(split_file(args.data, args.split))
    texts, gold = [r["text"] for r in rows], [int(r["label"]) for r in rows]
    words = [len(t.split()) for t in texts]
    lr_labels, lr_probs = tfidf_probabilities(args.data, args.split)
    lr_labels = [int(c) for c in lr_labels]
    table: list[tuple[str, list[int]]] = [("TF-IDF + LR", [lr_labels[i] for i in ensemble([lr_probs])])]
    all_probs, labels, alone, with_lr = [], None, [], []
    for run_dir in args.runs:
        run = load_run(run_dir, task="sentiment")
        names = [int(n) for n in run.meta["label_names"]]
        if labels not in (None, sorted(names)):
            raise SystemExit(f"{run_dir} has labels {names}, the others {labels}")
        labels = sorted(names)
        probs = classify(run.model, run.device, encode_inputs(run, texts)[0])
        all_probs.append([[p[names.index(c)] for c in labels] for p in probs])  # label order
        alone.append((run_dir.name, [labels[i] for i in ensemble(all_probs[-1:])]))
        if args.with_tfidf:
            if lr_labels != labels:
                raise SystemExit(f"{run_dir} has labels {labels}, the baseline {lr_labels}")
            with_lr.append((f"{run_dir.name} + TF-IDF + LR", [labels[i] for i in ensemble([all_probs[-1], lr_probs])]))
    table += alone
    if len(args.runs) > 1:
        table.append((f"ensemble of {len(args.runs)}", [labels[i] for i in ensemble(all_probs)]))
    table += with_lr

    counts = [0] * len(BUCKETS)
    for n in words:
        counts[bucket_of(n)] += 1
    heads = [f"{lo}-{hi - 1}" if hi else f"{lo}+" for lo, hi in BUCKETS]
    print(f"{args.data} {args.split}: {len(rows)} examples; accuracy (%) by length in words")
    print("| model | all | " + " | ".join(f"{h} ({c})" for h, c in zip(heads, counts, strict=True)) + " |")
    print("|---|---|" + "---|" * len(BUCKETS))
    for name, pred in table:
        overall, per = accuracy_by_bucket(gold, pred, words)
        cells = " | ".join("—" if a is None else f"{a:.1f}" for a in per)
        print(f"| {name} | {overall:.2f} | {cells} |")
    if with_lr:
        def mean_acc(rows):
            return sum(accuracy_by_bucket(gold, pred, words)[0] for _, pred in rows) / len(rows)
        print(f"mean over the {len(alone)} runs: alone {mean_acc(alone):.2f}, "
              f"each averaged with TF-IDF + LR {mean_acc(with_lr):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
