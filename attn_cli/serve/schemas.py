"""What requests may hold and how a refusal is said.

Request bodies are pydantic models in strict mode with unknown fields forbidden, so a wrong type
or a misspelt option is a 422 naming the field, never a guess. ``check_texts`` applies the limits
pydantic cannot (characters per text, texts per request, empty input, NUL characters, lone
surrogates that are not Unicode text), and ``decode_config`` turns a request's options into a
``DecodeConfig`` over the task's defaults (``attn_cli.config.DECODE_DEFAULTS``). Every refusal
is an ``ApiError``: an HTTP status and ``{"error": "...", "limit": {"name": ..., "value": ...}}``
(``limit`` only when a limit was broken).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from attn_cli.serve.config import ServeConfig


class ApiError(Exception):
    """A request the server refuses: status, a one-line message, the limit it broke if any."""

    def __init__(self, status: int, message: str, limit: tuple[str, Any] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.limit, self.headers = status, message, limit, headers or {}

    def body(self) -> dict:
        out: dict[str, Any] = {"error": self.message}
        if self.limit is not None:
            out["limit"] = {"name": self.limit[0], "value": self.limit[1]}
        return out


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class SentimentRequest(_Strict):
    """POST /v1/sentiment."""

    text: str | list[str] = Field(description="One text, or a list of texts (answered in the same order).",
                                  examples=["a gorgeous, witty film"])
    model: str | None = Field(None, description="A served model's name; optional when only one "
                              "model of this task is served.")
    attention: bool = Field(False, description="Add each token's importance (attention rollout) "
                            "to every output.")


class _Seq2SeqRequest(SentimentRequest):
    """The options translate and summarize share."""

    attention: bool = Field(False, description="Add the source and output pieces and the "
                            "cross-attention matrix (output x source) to every output.")
    beam: int | None = Field(None, ge=1, description="Beam size; 1 = greedy.")
    length_penalty: float | None = Field(None, ge=0, le=10, description="GNMT length penalty alpha.")
    max_len_a: float | None = Field(None, ge=0, le=100, description="Output limit = a * source length + b.")
    max_len_b: int | None = Field(None, ge=0, le=100_000, description="The b above.")
    min_len: int | None = Field(None, ge=0, le=100_000, description="Minimum output tokens.")
    no_repeat_ngram: int | None = Field(None, ge=0, le=100, description="Never repeat n-grams of "
                                        "this size; 0 = off.")


class TranslateRequest(_Seq2SeqRequest):
    """POST /v1/translate. Options left out take attn translate's defaults."""

    text: str | list[str] = Field(description="One text, or a list of texts (answered in the same order).",
                                  examples=["Ein Hund läuft über die Wiese."])
    split_sentences: bool = Field(True, description="Translate each text sentence by sentence and join the "
                                  "translations with the text's own spacing and line breaks (a sentence over "
                                  "the model's positions goes in token windows, with a note); false: each text "
                                  "whole (over the model's positions: 422).")


class SummarizeRequest(_Seq2SeqRequest):
    """POST /v1/summarize. Options left out take attn summarize's defaults."""

    text: str | list[str] = Field(description="One document, or a list of documents.",
                                  examples=["Rain is expected all week in the north. Farmers welcome it."])
    sample: bool = Field(False, description="Sample instead of beam search (beam must then be 1).")
    top_k: int | None = Field(None, ge=0, le=1_000_000, description="Sample among the k best; 0 = off.")
    top_p: float | None = Field(None, gt=0, le=1, description="Nucleus sampling mass.")
    temperature: float | None = Field(None, gt=0, le=100, description="Sampling temperature.")
    seed: int | None = Field(None, ge=0, le=2**32 - 1, description="Sampling seed.")


class Seq2SeqOutput(BaseModel):
    text: str = Field(description="The translation or summary.")
    score: float = Field(description="log P(output) / GNMT length penalty.")
    attention: dict | None = Field(None, description="With attention: source_pieces, output_pieces "
                                   "(ending with </s>) and matrix, one row per output piece; a text translated "
                                   "sentence by sentence has each sentence's pieces in turn and a "
                                   "block-diagonal matrix.")
    notes: list[str] | None = Field(None, description="Only when something was cut: a sentence translated in "
                                    "token windows, or a document cut to the model's positions.")


class SentimentOutput(BaseModel):
    label: str
    confidence: float = Field(description="Probability of the label.")
    probabilities: dict[str, float]
    attention: dict | None = Field(None, description="With attention: pieces and importance "
                                   "(attention rollout, summing to 1).")


class Seq2SeqResponse(BaseModel):
    model: str
    outputs: list[Seq2SeqOutput]


class SentimentResponse(BaseModel):
    model: str
    outputs: list[SentimentOutput]


class ErrorBody(BaseModel):
    error: str
    limit: dict | None = Field(None, description="The limit broken: its name and value.")


def check_texts(text: str | list[str], cfg: ServeConfig) -> list[str]:
    """The request's texts, or an ApiError (422) naming the first problem."""
    texts = [text] if isinstance(text, str) else text
    if not texts:
        raise ApiError(422, "'text' is an empty list; send at least one text")
    if len(texts) > cfg.max_texts:
        raise ApiError(422, f"{len(texts)} texts in one request; at most {cfg.max_texts} are allowed",
                       ("--max-texts", cfg.max_texts))
    for i, t in enumerate(texts):
        where = "'text'" if isinstance(text, str) else f"text {i}"
        if not t.strip():
            raise ApiError(422, f"{where} is empty")
        if len(t) > cfg.max_chars:
            raise ApiError(422, f"{where} has {len(t):,} characters; at most {cfg.max_chars:,} are allowed",
                           ("--max-chars", cfg.max_chars))
        if "\x00" in t:
            raise ApiError(422, f"{where} contains a NUL character (\\u0000)")
        try:
            t.encode("utf-8")
        except UnicodeEncodeError:
            raise ApiError(422, f"{where} is not valid Unicode (a lone surrogate escape such as "
                           "\\ud800)") from None
    return texts


def decode_config(task: str, req: _Seq2SeqRequest, cfg: ServeConfig):
    """The DecodeConfig of a seq2seq request: its options over the task's defaults
    (``attn_cli.config.DECODE_DEFAULTS``, those of attn translate / summarize)."""
    from attn_cli.config import DECODE_DEFAULTS, task_decode_config

    changes = {name: getattr(req, name, None) for name in (
        "beam", "length_penalty", "max_len_a", "max_len_b", "min_len", "no_repeat_ngram",
        "top_k", "top_p", "temperature", "seed")}
    if getattr(req, "sample", False):
        changes["sample"] = True
        if changes["beam"] is None:
            changes["beam"] = 1
    beam = changes["beam"] if changes["beam"] is not None else DECODE_DEFAULTS[task].beam
    if beam > cfg.max_beam:
        raise ApiError(422, f"beam {beam} is over the server's limit of {cfg.max_beam}",
                       ("--max-beam", cfg.max_beam))
    try:
        return task_decode_config(task, **changes)
    except ValueError as e:
        raise ApiError(422, f"bad decoding option: {str(e).removeprefix('DecodeConfig.')}") from None
