"""attn: train and run your own transformer for translation, sentiment and summarization.

The Python API (``attn_cli.infer.api``)::

    import attn_cli
    model = attn_cli.load("runs/it-en")            # a run directory made by `attn train`
    model.translate(["Ho fame."], beam=5)          # [Translation(text=..., score=...)]
    model.summarize([...]); model.sentiment([...]) # [Summary], [Sentiment(label, confidence, probabilities)]

Errors are ``attn_cli.AttnError`` with the command line's one-line messages.
"""

__version__ = "0.1.0"
__all__ = ["AttnError", "Model", "Sentiment", "Summary", "Translation", "load"]


def load(path, *, engine: str = "auto", device: str = "auto", threads: int = 0, compute_type: str = "auto"):
    """Open a run directory for inference: ``engine`` auto (CTranslate2 when exported and
    usable, else torch), torch or ctranslate2; ``device`` auto, cpu or cuda; ``threads`` 0 =
    auto. Returns an :class:`attn_cli.infer.api.Model` with ``task``, ``info`` and
    ``translate`` / ``summarize`` / ``sentiment``; raises AttnError for a directory that is not
    a usable run (the CLI's message)."""
    from attn_cli.infer.api import load as _load

    return _load(path, engine=engine, device=device, threads=threads, compute_type=compute_type)


def __getattr__(name: str):
    """The API's classes, imported on first use (``import attn_cli`` stays light)."""
    if name in ("Model", "Sentiment", "Summary", "Translation"):
        from attn_cli.infer import api

        return getattr(api, name)
    if name == "AttnError":
        from attn_cli.errors import AttnError

        return AttnError
    raise AttributeError(f"module 'attn_cli' has no attribute {name!r}")
