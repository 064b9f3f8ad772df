"""Documents into sentences for translation, and the translations back into the document's layout.

``split_text(text, language)`` cuts a text into sentences with ``sentencex`` and keeps everything
between them (spaces, tabs, line breaks, blank and whitespace-only lines) as separators, copied
verbatim: ``Segments.join`` with the sentences themselves gives the text back byte for byte, and
with their translations gives the translated text in the input's own layout. Every line break
ends a sentence (a line is never joined to the next), so paragraphs keep their place.

sentencex takes time quadratic in the length of what it is given (measured: 0.2 s for 25,000
characters of short sentences, 12 s for 200,000), so a line is given to it in pieces of at most
``CHUNK`` characters: the last sentence found in a piece starts the next piece. A piece in which
it finds no boundary is cut at its last whitespace (a hard cut when there is none).

``plan_inputs`` turns the texts of one call into the token ids to generate from, all sentences
of all texts in one list (one batch for the engine), and ``Plan`` puts the outputs back: a
sentence longer than the model's positions is cut into token windows (``mode="windows"``,
translate) or cut to its head (``mode="head"``: summarize, and translate without splitting).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

CHUNK = 2000  # characters given to sentencex at once (its time grows with the square of the length)
WORD_START = "\u2581"  # SentencePiece's mark of a piece that starts a word
DEFAULT_LANGUAGE = "en"  # when the run names no source language (sentencex falls back for unknown codes)


@dataclass(frozen=True)
class Segments:
    """A text as sentences and the separators around them: ``gaps[0] + sentences[0] + gaps[1] +
    ... + sentences[-1] + gaps[-1]`` is the text (``len(gaps) == len(sentences) + 1``)."""

    sentences: list[str]
    gaps: list[str]

    def join(self, outputs: Sequence[str]) -> str:
        """The text with each sentence replaced by its output, the separators unchanged."""
        if len(outputs) != len(self.sentences):
            raise ValueError(f"{len(outputs)} outputs for {len(self.sentences)} sentences")
        parts = [self.gaps[0]]
        for out, gap in zip(outputs, self.gaps[1:], strict=True):
            parts += [out, gap]
        return "".join(parts)


def source_language(meta: dict) -> str:
    """The language sentencex segments in: the run's source language (config.json's
    ``languages.src``), else English rules."""
    langs = meta.get("languages") or {}
    src = langs.get("src") if isinstance(langs, dict) else None
    return src if isinstance(src, str) and src.strip() else DEFAULT_LANGUAGE


def whole_text(text: str) -> Segments:
    """The text as one sentence, verbatim (no splitting); an empty text has none."""
    return Segments([text], ["", ""]) if text else Segments([], [""])


def split_text(text: str, language: str) -> Segments:
    """The text's sentences (no leading or trailing whitespace) and the separators between them."""
    sentences: list[str] = []
    gaps: list[str] = [""]
    for line in text.splitlines(keepends=True):
        body = line.strip()
        if not body:
            gaps[-1] += line
            continue
        start = len(line) - len(line.lstrip())
        gaps[-1] += line[:start]
        prev = None
        for a, b in sentence_spans(body, language):
            if prev is not None:  # the whitespace between two sentences of the line
                gaps.append(body[prev:a])
            sentences.append(body[a:b])
            prev = b
        gaps.append(line[start + len(body):])
    return Segments(sentences, gaps)


def sentence_spans(body: str, language: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence of one line (no line breaks, no outer whitespace), in order;
    what lies between two spans is whitespace."""
    spans: list[tuple[int, int]] = []
    pos = 0
    while pos < len(body):
        if body[pos].isspace():
            pos += 1
            continue
        piece = body[pos:pos + CHUNK]
        found = _spans(piece, language)
        if pos + CHUNK >= len(body):  # the rest of the line
            spans += [(pos + a, pos + b) for a, b in found]
            break
        if len(found) > 1:  # keep all but the last sentence, which may go on in the next piece
            spans += [(pos + a, pos + b) for a, b in found[:-1]]
            pos += found[-1][0]
            continue
        cut = _last_space(piece)
        spans.append((pos, pos + len(piece[:cut].rstrip())))
        pos += cut + (len(piece[cut:]) - len(piece[cut:].lstrip()))
    return spans


def _spans(text: str, language: str) -> list[tuple[int, int]]:
    """sentencex's sentences of ``text`` as (start, end) without their outer whitespace. Only
    its end positions are used, so whatever it returns, the spans cover the text's words."""
    try:
        import sentencex

        ends = sorted({b["end_index"] for b in sentencex.get_sentence_boundaries(language, text)})
    except (UnicodeError, ValueError, TypeError, KeyError):  # e.g. a lone surrogate from the command line
        ends = []
    spans, start = [], 0
    for end in [e for e in ends if 0 < e < len(text)] + [len(text)]:
        chunk = text[start:end]
        if chunk.strip():
            a = start + len(chunk) - len(chunk.lstrip())
            spans.append((a, a + len(chunk.strip())))
        start = end
    return spans


def _last_space(piece: str) -> int:
    """Where to cut a piece without a sentence boundary: at its last run of whitespace (past its
    first half), else at its end."""
    i = max(piece.rfind(" "), piece.rfind("\t"))
    while i > 0 and piece[i - 1].isspace():
        i -= 1
    return i if i > len(piece) // 2 else len(piece)


def token_windows(ids: list[int], size: int, word_start: Callable[[int], bool] | None = None) -> list[list[int]]:
    """``ids`` cut into windows of at most ``size`` tokens, each cut before a piece that starts
    a word when one lies in the window's last quarter (``word_start``), else at ``size``."""
    if size < 1:
        raise ValueError(f"window size must be positive, got {size}")
    out, pos = [], 0
    while len(ids) - pos > size:
        cut = pos + size
        if word_start is not None:
            for i in range(cut, max(pos + 1, pos + size - size // 4) - 1, -1):  # never an empty window
                if word_start(ids[i]):
                    cut = i
                    break
        out.append(ids[pos:cut])
        pos = cut
    out.append(ids[pos:])
    return out


@dataclass
class Plan:
    """The token ids of one call's sentences (``ids``: all texts, in order) and how to put their
    outputs back: ``owner[k]`` is the (text, sentence) window ``k`` belongs to."""

    texts: list[Segments]
    ids: list[list[int]]
    owner: list[tuple[int, int]]
    size: int  # the model's positions
    mode: str  # "windows" or "head": what was done to a sentence over ``size``
    unit: str = "input"  # what a note calls a text cut to its head (summarize: document)
    over: list[int] = field(default_factory=list)  # per text: sentences over ``size``
    windows: list[int] = field(default_factory=list)  # per text: windows those sentences became

    def outputs(self, texts: Sequence[str]) -> list[list[str]]:
        """Per text, per sentence: its output (a cut sentence's windows joined by a space)."""
        got: list[list[list[str]]] = [[[] for _ in seg.sentences] for seg in self.texts]
        for (t, s), out in zip(self.owner, texts, strict=True):
            got[t][s].append(out)
        return [[parts[0] if len(parts) == 1 else " ".join(p.strip() for p in parts if p.strip()) for parts in sent]
                for sent in got]

    def join(self, texts: Sequence[str]) -> list[str]:
        """Each input text with its sentences replaced by their outputs, its separators kept."""
        return [seg.join(outs) for seg, outs in zip(self.texts, self.outputs(texts), strict=True)]

    def groups(self) -> list[list[int]]:
        """Per text: the indices into ``ids`` of its windows, in order."""
        out: list[list[int]] = [[] for _ in self.texts]
        for k, (t, _) in enumerate(self.owner):
            out[t].append(k)
        return out

    def mean_scores(self, scores: Sequence[float]) -> list[float]:
        """Per text: the mean score of its windows (``scores`` in ``ids`` order); 0.0 for an empty text."""
        return [sum(scores[k] for k in ks) / len(ks) if ks else 0.0 for ks in self.groups()]

    def note(self, text: int | None = None) -> str | None:
        """One line on the sentences over the model's positions (of one text, or of all), or None."""
        over = sum(self.over) if text is None else self.over[text]
        if not over:
            return None
        if self.mode == "head":
            return (f"{over} {self.unit}(s) longer than the model's {self.size} positions were cut to their "
                    f"first {self.size} tokens (the rest is not read)")
        windows = sum(self.windows) if text is None else self.windows[text]
        return (f"{over} sentence(s) longer than {self.size} tokens (the model's positions) were translated "
                f"in {windows} windows of at most {self.size} tokens")


def plan_inputs(texts: list[Segments], encode: Callable[[list[str]], list[list[int]]], size: int,
                mode: str = "windows", word_start: Callable[[int], bool] | None = None, unit: str = "input") -> Plan:
    """The ids to generate from for ``texts``' sentences, encoded in one call; a sentence over
    ``size`` tokens becomes token windows (``mode="windows"``) or its first ``size`` tokens ("head")."""
    if mode not in ("windows", "head"):
        raise ValueError(f"unknown mode {mode!r}")
    sentences = [s for seg in texts for s in seg.sentences]
    encoded = iter(encode(sentences) if sentences else [])
    plan = Plan(texts, [], [], size, mode, unit, [0] * len(texts), [0] * len(texts))
    for t, seg in enumerate(texts):
        for s in range(len(seg.sentences)):
            ids = next(encoded)
            if len(ids) > size:
                parts = token_windows(ids, size, word_start) if mode == "windows" else [ids[:size]]
                plan.over[t] += 1
                plan.windows[t] += len(parts)
            else:
                parts = [ids]
            plan.ids += parts
            plan.owner += [(t, s)] * len(parts)
    return plan


def join_attention(parts: Sequence[tuple[list[str], list[str], Sequence[Sequence[float]]]]
                   ) -> tuple[list[str], list[str], list[list[float]]]:
    """The attention of a text translated sentence by sentence, from each sentence's (source
    pieces, output pieces, matrix output x source): the pieces in order and one block-diagonal
    matrix (an output piece attended only to its own sentence: zero elsewhere)."""
    src = [p for s, _, _ in parts for p in s]
    out = [p for _, o, _ in parts for p in o]
    matrix: list[list[float]] = []
    left = 0
    for s, _, m in parts:
        right = len(src) - left - len(s)
        matrix += [[0.0] * left + [float(v) for v in row] + [0.0] * right for row in m]
        left += len(s)
    return src, out, matrix
