"""Shared by tests/infer/test_segment.py and tests/serve/test_segment_serve.py: a text of three
paragraphs and an engine that "translates" a text into itself."""

from __future__ import annotations

from attn_cli.data.tokenizer import Tokenizers
from attn_cli.infer.engine import Engine

PARAGRAPHS = "Ho fame. Dov'è la stazione?\n\nSabato partirò per Londra. Grazie!\n\nBuona notte."


class Echo(Engine):
    """The tiny run's files with a "model" that returns its input: source pieces decoded as the
    output, so a translated text must come back exactly as it went in. ``calls``: what it got."""

    def __init__(self, base: Engine) -> None:
        src = base.toks.src
        super().__init__("torch", base.path, base.meta, base.model_cfg, Tokenizers(src, src, base.toks.config))
        self.calls: list[list[list[int]]] = []

    @property
    def on_cpu(self) -> bool:
        return True

    def generate(self, ids, cfg, max_tokens=6000, on_batch=None):
        self.calls.append([list(x) for x in ids])
        if on_batch:
            on_batch(len(ids))
        return [(list(x), -1.0) for x in ids]
