"""Sentence splitting speed: sentencex itself and attn's splitter (attn_cli.infer.segment) on
generated text, on a 200,000-character line without a sentence boundary, and on a 200,000-
character line of short sentences (where sentencex alone takes time quadratic in the length).

Generated text: seeded random "words" of 2-9 letters, sentences of 4-30 words ending in . ! or ?,
3-8 sentences a line, a blank line after every third line (about 1 MB). sentencex is timed line by
line (how attn gives it text); attn's splitter on the whole text (lines, chunks, separators). Each
measurement is the median of ``--rounds`` runs; sentences/s counts the sentences attn finds.

    python benchmarks/segment_speed.py [--mb 1] [--rounds 3] [--language it]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable

import sentencex

from attn_cli.infer.segment import split_text


def generated(mb: float, seed: int = 0) -> str:
    """About ``mb`` megabytes of paragraphs of sentences (ASCII)."""
    rng = random.Random(seed)
    letters = "abcdefghilmnoprstuvz"
    lines, size = [], 0
    while size < mb * 1_000_000:
        sentences = []
        for _ in range(rng.randint(3, 8)):
            words = ["".join(rng.choices(letters, k=rng.randint(2, 9))) for _ in range(rng.randint(4, 30))]
            sentences.append(" ".join(words).capitalize() + rng.choice(".!?"))
        line = " ".join(sentences)
        lines.append(line + ("\n\n" if len(lines) % 3 == 2 else "\n"))
        size += len(line) + 1
    return "".join(lines)


def median_seconds(fn: Callable[[], object], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def row(name: str, chars: int, sentences: int, seconds: float) -> str:
    return (f"| {name} | {chars:,} | {sentences:,} | {seconds:.3f} | {sentences / seconds:,.0f} | "
            f"{chars / seconds / 1e6:.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=1.0, help="size of the generated text")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--language", default="it")
    args = ap.parse_args()
    lang, rounds = args.language, args.rounds
    text = generated(args.mb)
    lines = text.splitlines()
    found = len(split_text(text, lang).sentences)
    print("| what | characters | sentences | seconds | sentences/s | MB/s |")
    print("|---|---|---|---|---|---|")
    secs = median_seconds(lambda: [sentencex.get_sentence_boundaries(lang, x) for x in lines], rounds)
    print(row("sentencex, line by line (generated text)", len(text), found, secs))
    print(row("attn split_text (generated text)", len(text), found, median_seconds(lambda: split_text(text, lang),
                                                                                  rounds)))
    flat = "parola " * 28_571 + "fine"  # 200,001 characters, no boundary
    print(row("sentencex, 200,000-char line without a boundary", len(flat), 1,
              median_seconds(lambda: sentencex.get_sentence_boundaries(lang, flat), rounds)))
    n = len(split_text(flat, lang).sentences)
    print(row(f"attn split_text, the same line (-> {n} pieces)", len(flat), n,
              median_seconds(lambda: split_text(flat, lang), rounds)))
    short = "Ciao. Come stai? Bene, grazie. " * 6_500  # 201,500 characters, 19,500 sentences
    print(row("sentencex, 200,000-char line of short sentences", len(short), 19_500,
              median_seconds(lambda: sentencex.get_sentence_boundaries(lang, short), 1)))
    print(row("attn split_text, the same line (chunks of 2,000 chars)", len(short), 19_500,
              median_seconds(lambda: split_text(short, lang), rounds)))


if __name__ == "__main__":
    main()
