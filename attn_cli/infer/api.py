"""The Python API: ``attn_cli.load(run)`` and the model it returns.

    import attn_cli
    model = attn_cli.load("runs/it-en")              # engine="auto", device="auto"
    model.task, model.info                           # "translate", config.json's metadata
    model.translate(["Ho fame."], beam=5)            # [Translation(text=..., score=..., ...)]
    model.translate(["Ho fame."], attention=True)    # + pieces and the cross-attention (numpy)
    model.translate(["Ciao. Come stai?"]).segments   # the sentences translated, one by one
    model.summarize([...]); model.sentiment([...])   # [Translation], [Sentiment]

The engines, batching, decoding defaults and errors are the command line's (`attn translate`
calls the same engine with the same options). Errors are :class:`~attn_cli.errors.AttnError`
with the CLI's one-line message. A Model is safe to call from several threads: calls are
serialized by a lock (the engines keep per-call state); run one Model per worker for parallelism.

``translate`` splits each text into sentences (``split_sentences=True``, the default;
``attn_cli.infer.segment``): all sentences of a call are generated as one batch and each text is
put back with its own spacing and line breaks. A sentence longer than the model's positions is
translated in token windows, and a document (summarize, or translate without splitting) is cut
to its head; either way the output's ``notes`` say so. With ``attention=True`` a split text's
attention is block-diagonal: each sentence's output pieces over its own source pieces.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from attn_cli.config import DECODE_DEFAULTS, DecodeConfig, task_decode_config
from attn_cli.errors import AttnError
from attn_cli.infer.engine import Engine, EngineOptions, OnBatch
from attn_cli.infer.engines import open_engine, torch_run_for
from attn_cli.infer.runs import encode_inputs
from attn_cli.infer.segment import (
    WORD_START,
    Plan,
    join_attention,
    plan_inputs,
    source_language,
    split_text,
    whole_text,
)

MAX_TOKENS = {"generate": 6000, "classify": 16000}  # the CLI's --max-tokens defaults


@dataclass(frozen=True)
class Segment:
    """One sentence of a text translated with ``split_sentences``."""

    source: str  # the sentence as it stands in the input
    text: str  # its translation
    windows: int = 1  # token windows it was translated in (over 1: longer than the model's positions)


@dataclass(frozen=True)
class Translation:
    """One output of translate or summarize."""

    text: str
    score: float  # the model's length-normalized log-probability of the output
    source_pieces: list[str] | None = None  # with attention=True: the input's pieces ...
    pieces: list[str] | None = None  # ... the output's pieces (ending with </s>) ...
    attention: np.ndarray | None = None  # ... and the cross-attention (len(pieces), len(source_pieces))
    segments: list[Segment] | None = None  # with split_sentences: the sentences and their translations
    notes: tuple[str, ...] = ()  # one line each: what was cut (sentences in windows, a document's tail)


Summary = Translation  # a summary has the same fields


@dataclass(frozen=True)
class Sentiment:
    """One output of sentiment."""

    label: str
    confidence: float  # the probability of ``label``
    probabilities: dict[str, float]  # every label's probability


class Model:
    """A trained run, ready to translate, summarize or classify (see :func:`load`)."""

    def __init__(self, engine: Engine, concurrent: bool = False):
        """``concurrent``: let calls run side by side (the server, whose worker threads share
        one engine and bound the parallelism themselves); by default they take turns."""
        self._engine = engine
        self._lock = contextlib.nullcontext() if concurrent else threading.Lock()

    @property
    def task(self) -> str:
        """translate, summarize or sentiment."""
        return self._engine.task

    @property
    def info(self) -> dict:
        """The run's config.json (what `attn info` shows): task, preset, model, data, ..."""
        return dict(self._engine.meta)

    @property
    def engine(self) -> str:
        """The engine in use: torch or ctranslate2."""
        return self._engine.name

    @property
    def notes(self) -> list[str]:
        """Why this engine was chosen (what the CLI prints on stderr)."""
        return list(self._engine.notes)

    def __repr__(self) -> str:
        return f"attn_cli.Model({str(self._engine.path)!r}, task={self.task!r}, engine={self.engine!r})"

    def _need(self, task: str) -> None:
        if self.task != task:
            raise AttnError(f"{self._engine.path} is a {self.task} model, not a {task} model",
                            f"use model.{self.task}(...) or load a {task} run")

    def translate(self, texts: list[str], *, beam: int | None = None, length_penalty: float | None = None,
                  max_tokens: int = MAX_TOKENS["generate"], attention: bool = False, split_sentences: bool = True,
                  **decoding) -> list[Translation]:
        """Translate ``texts`` (a list; a single string is one text), sentence by sentence unless
        ``split_sentences=False`` (then each text whole, cut to the model's positions). ``decoding``:
        any other DecodeConfig field (max_len_a, no_repeat_ngram, sample, ...); defaults as `attn translate`."""
        self._need("translate")
        return self._generate(texts, dict(beam=beam, length_penalty=length_penalty, **decoding), max_tokens,
                              attention, split_sentences)

    def summarize(self, texts: list[str], *, beam: int | None = None, length_penalty: float | None = None,
                  max_tokens: int = MAX_TOKENS["generate"], attention: bool = False, **decoding) -> list[Summary]:
        """Summarize ``texts`` (documents); defaults as `attn summarize`."""
        self._need("summarize")
        return self._generate(texts, dict(beam=beam, length_penalty=length_penalty, **decoding), max_tokens,
                              attention)

    def sentiment(self, texts: list[str], *, max_tokens: int = MAX_TOKENS["classify"]) -> list[Sentiment]:
        """Classify ``texts``: each one's label, its probability and every label's."""
        self._need("sentiment")
        names = self._engine.meta["label_names"]
        probs = self.classify_ids(self.encode(_as_list(texts))[0], max_tokens)
        out = []
        for p in probs:
            best = max(range(len(p)), key=p.__getitem__)
            out.append(Sentiment(names[best], float(p[best]), {n: float(x) for n, x in zip(names, p, strict=True)}))
        return out

    def _generate(self, texts, changes: dict, max_tokens: int, attention: bool,
                  split_sentences: bool = False) -> list[Translation]:
        texts = _as_list(texts)
        try:
            cfg = task_decode_config(self.task, **changes)
        except (TypeError, ValueError) as e:
            raise AttnError(f"bad decoding option: {e}", f"see DecodeConfig; defaults: {DECODE_DEFAULTS[self.task]}"
                            ) from None
        plan = self.plan(texts, split_sentences)
        return self.finish(plan, self.generate_ids(plan.ids, cfg, max_tokens), attention)

    def plan(self, texts: list[str], split_sentences: bool, size: int | None = None) -> Plan:
        """The token ids of a translate/summarize call: each text's sentences (``split_sentences``,
        translate only; over ``size`` tokens, default the model's positions: token windows) or each
        text whole (over ``size``: cut to its head)."""
        size = size or self._engine.model_cfg.max_len
        encode = self._engine.toks.src.encode_batch
        if split_sentences and self.task == "translate":
            lang = source_language(self._engine.meta)
            piece = self._engine.toks.src.id_to_piece
            return plan_inputs([split_text(t, lang) for t in texts], encode, size, "windows",
                               lambda i: piece(i).startswith(WORD_START))
        return plan_inputs([whole_text(t) for t in texts], encode, size, "head",
                           unit="document" if self.task == "summarize" else "input")

    def finish(self, plan: Plan, results: list[tuple[list[int], float]], attention: bool = False
               ) -> list[Translation]:
        """The outputs of ``plan``'s texts from ``generate_ids(plan.ids)``: each text put back
        together (score: the mean of its sentences' scores), with its segments and notes."""
        outs = [self._engine.toks.tgt.decode(o) for o, _ in results]
        joined, per_sentence, groups = plan.join(outs), plan.outputs(outs), plan.groups()
        scores = plan.mean_scores([float(s) for _, s in results])
        counts = Counter(plan.owner)  # (text, sentence) -> its windows
        done = []
        for t, seg in enumerate(plan.texts):
            windows = [counts[(t, s)] for s in range(len(seg.sentences))]
            segments = ([Segment(src, out, w) for src, out, w in zip(seg.sentences, per_sentence[t], windows,
                                                                     strict=True)]
                        if plan.mode == "windows" else None)
            note = plan.note(t)
            done.append(Translation(joined[t], scores[t], segments=segments,
                                    notes=(note,) if note else ()))
        if attention:
            with self._lock:
                done = [self._with_attention(out, [(plan.ids[k], results[k][0]) for k in ks])
                        for out, ks in zip(done, groups, strict=True)]
        return done

    # the steps behind translate/summarize/sentiment, for callers that work on token ids (the
    # attn commands: progress bars, attention pictures)

    def encode(self, texts: list[str]) -> tuple[list[list[int]], int]:
        """The texts' token ids, cut to the model's positions, and how many were cut."""
        return encode_inputs(self._engine, texts)

    def generate_ids(self, ids: list[list[int]], cfg: DecodeConfig, max_tokens: int = MAX_TOKENS["generate"],
                     on_batch: OnBatch = None) -> list[tuple[list[int], float]]:
        """(output ids, score) per input, in input order, batched by ``max_tokens``."""
        with self._lock:
            return self._engine.generate(ids, cfg, max_tokens, on_batch=on_batch)

    def classify_ids(self, ids: list[list[int]], max_tokens: int = MAX_TOKENS["classify"],
                     on_batch: OnBatch = None) -> list[list[float]]:
        """Class probabilities per input (label order: ``info["label_names"]``)."""
        with self._lock:
            return self._engine.classify(ids, max_tokens, on_batch=on_batch)

    def _with_attention(self, out: Translation, windows: list[tuple[list[int], list[int]]]) -> Translation:
        """``out`` with its pieces and cross-attention (from the torch model, on these outputs):
        one block per (source ids, output ids) window, block-diagonal when there are several."""
        import torch

        from attn_cli.data.tokenizer import EOS_ID
        from attn_cli.infer.explain import cross_alignment

        windows = [(src, ids) for src, ids in windows if src]
        if not windows:
            return out
        run = torch_run_for(self._engine)
        parts = []
        for src, ids in windows:
            full = list(ids) + [EOS_ID]
            matrix = cross_alignment(run.model, torch.tensor([src], device=run.device),
                                     torch.tensor([full], device=run.device)).cpu().numpy()  # (T, S)
            parts.append(([run.toks.src.id_to_piece(t) for t in src], [run.toks.tgt.id_to_piece(t) for t in full],
                          matrix))
        if len(parts) == 1:
            src_p, out_p, matrix = parts[0]
        else:
            src_p, out_p, rows = join_attention(parts)
            matrix = np.asarray(rows, dtype=parts[0][2].dtype)
        return dataclasses.replace(out, source_pieces=src_p, pieces=out_p, attention=matrix)


def _as_list(texts) -> list[str]:
    if isinstance(texts, str):
        return [texts]
    texts = list(texts)
    bad = next((t for t in texts if not isinstance(t, str)), None)
    if bad is not None:
        raise AttnError(f"inputs must be strings, got {type(bad).__name__}", "pass a list of str")
    return texts


def load(path: str | Path, *, engine: str = "auto", device: str = "auto", threads: int = 0,
         compute_type: str = "auto") -> Model:
    """Open a run directory made by `attn train`: ``engine`` auto (CTranslate2 when exported
    and usable, else torch), torch or ctranslate2; ``device`` auto, cpu or cuda; ``threads`` 0 =
    auto. A directory that is not a run, a pretraining run or a damaged one raises AttnError
    with the CLI's message."""
    return Model(open_engine(path, None, EngineOptions(engine, compute_type, threads, device)))
