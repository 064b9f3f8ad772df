"""Choosing an inference engine: ``open_engine``, the torch engine, and the torch run behind any.

``open_engine(run_dir, task, EngineOptions)`` picks one (``engine.Engine``: the same ``generate``
/ ``classify`` over torch or CTranslate2). ``auto`` uses the run's ``ct2/`` export
(``attn export``) when ctranslate2 is installed, the export is valid and made from the current
weights, and the device and compute type suit it (``ct2.CT2Engine``); otherwise torch
(``TorchEngine``), with a note saying why when an export was there. ``torch_run_for`` gives the
torch run for what only torch does (attention pictures, --explain), whichever engine runs.
"""

from __future__ import annotations

from pathlib import Path

from attn_cli.errors import AttnError
from attn_cli.infer.ct2 import CT2Engine, ct2_device
from attn_cli.infer.engine import Engine, EngineOptions


class TorchEngine(Engine):
    """attn's own model in torch (``runs.load_run``)."""

    def __init__(self, run, notes: list[str] | None = None) -> None:
        super().__init__("torch", run.path, run.meta, run.model_cfg, run.toks, notes or [])
        self.run = run

    def describe(self) -> str:
        return f"torch ({self.run.device.type})"

    @property
    def on_cpu(self) -> bool:
        return self.run.device.type == "cpu"

    def generate(self, ids, cfg, max_tokens=6000, on_batch=None):
        from attn_cli.infer.predict import generate

        return generate(self.run.model, self.run.device, ids, cfg, max_tokens, on_batch)

    def classify(self, ids, max_tokens=16000, on_batch=None):
        from attn_cli.infer.predict import classify

        return classify(self.run.model, self.run.device, ids, max_tokens, on_batch)


def open_engine(run_dir: str | Path, task: str | None, opts: EngineOptions) -> Engine:
    """The engine for ``run_dir`` under ``opts`` (see the module docstring for ``auto``)."""
    from attn_cli.infer.export import export_status, import_ct2
    from attn_cli.infer.runs import load_run_files

    run_dir = Path(run_dir)
    meta, cfg, toks = load_run_files(run_dir, task)
    if opts.engine == "torch":
        return _torch(run_dir, task, opts, [])
    status = export_status(run_dir, cfg, toks.src.vocab_size, toks.tgt.vocab_size)
    if status.problem:
        raise AttnError(status.problem, f"export it again: attn export {run_dir}")
    explicit = opts.engine == "ctranslate2"
    if status.info is None:
        if explicit:
            raise AttnError(f"{run_dir} has no CTranslate2 export", f"run attn export {run_dir}")
        return _torch(run_dir, task, opts, [])
    if status.stale:
        why = f"{status.path} is older than the run's weights (trained after the export)"
        if explicit:
            raise AttnError(why, f"run attn export {run_dir} again")
        return _torch(run_dir, task, opts, [why + "; using torch (attn export RUN refreshes it)"])
    try:
        ct2 = import_ct2()
    except AttnError:
        if explicit:
            raise
        return _torch(run_dir, task, opts, ["ctranslate2 is not installed; using torch"])
    device, why = ct2_device(ct2, opts)
    if device is None:
        if explicit or opts.compute_type != "auto":
            raise AttnError(why, "use --device cpu with --compute-type auto, int8 or float32")
        return _torch(run_dir, task, opts, [why + "; using torch"])
    return CT2Engine(run_dir, meta, cfg, toks, status.path, status.info.quantization, opts, device)


def _torch(run_dir: Path, task: str | None, opts: EngineOptions, notes: list[str]) -> TorchEngine:
    from attn_cli.infer.runs import load_run

    if opts.compute_type != "auto":
        raise AttnError(f"--compute-type {opts.compute_type} needs the ctranslate2 engine",
                        f"run attn export {run_dir} first, or drop --compute-type")
    if opts.threads:  # 0: torch's default, one intra-op thread per core
        import torch

        torch.set_num_threads(opts.threads)
    return TorchEngine(load_run(run_dir, task=task, device=opts.device), notes)


def torch_run_for(engine: Engine):
    """A torch LoadedRun for what only torch can do (attention pictures, --explain)."""
    if isinstance(engine, TorchEngine):
        return engine.run
    from attn_cli.infer.runs import load_run

    return load_run(engine.path, task=engine.task, device=getattr(engine, "torch_device", "auto"))

