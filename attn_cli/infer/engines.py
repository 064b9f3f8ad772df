"""Inference engines: the same ``generate`` / ``classify`` over torch or CTranslate2.

``open_engine(run_dir, task, EngineOptions)`` picks one. ``auto`` uses the run's ``ct2/`` export
(``attn export``) when ctranslate2 is installed, the export is valid and made from the current
weights, and the device and compute type suit it; otherwise torch, with a note saying why when an
export was there. Both engines return what ``infer.generate`` / ``infer.classify`` return, in
input order: ``(output ids, score)`` per input (score = log P(Y) / GNMT lp(Y), EOS counted) and
class probabilities per input.

How attn's decoding maps onto CTranslate2's ``translate_batch``:
  * beam K, length penalty alpha: CTranslate2 searches with ``num_hypotheses=K`` and its own
    ``length_penalty`` (so that it stops, as attn does, once K hypotheses ended); its scores are
    turned back into log P and the K hypotheses re-ranked by attn's GNMT penalty.
  * limit ``a * source + b`` (capped at max_len): inputs are grouped by their limit, each group
    decoded with ``max_decoding_length`` = that limit.
  * ``--min-len`` -> ``min_decoding_length``; ``--no-repeat-ngram`` -> ``no_repeat_ngram_size``;
    sampling -> ``sampling_topk`` / ``sampling_topp`` / ``sampling_temperature`` and
    ``set_random_seed``. CTranslate2 removes blocked tokens *before* its softmax, attn after,
    so with these options scores (and, rarely, beam choices) differ slightly.
  * pad and BOS may never be generated: decoded without suppression (exact torch scores), and
    the rare outputs that hold one are decoded again with ``suppress_sequences``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from attn_cli.errors import AttnError

if TYPE_CHECKING:  # the CLI imports this module at start-up: torch and numpy load when used
    import numpy as np

    from attn_cli.config import ModelConfig
    from attn_cli.data.tokenizer import Tokenizers
    from attn_cli.infer.decoding import DecodeConfig

EOS_ID = 3  # tokenizer.EOS_ID (not imported: it would load sentencepiece at start-up)

ENGINES = ("auto", "torch", "ctranslate2")
COMPUTE_TYPES = ("auto", "int8", "int8_float16", "float16", "float32")
GPU_ONLY = ("float16", "int8_float16")
# CPU threads: 0 = auto. Measured on a quiet 2-core CPU (docs/benchmarks.md, "Threads"):
# torch decodes 1.37x faster with its default (one intra-op thread per core) than with 1, while
# CTranslate2 with 2 intra-op threads is slower than with 1; it gains instead from running
# batches side by side, one per core (``inter_threads``): 1.63x on 1,000 sentences.
DEFAULT_THREADS = 0


def ct2_threads(threads: int, device: str) -> tuple[int, int]:
    """CTranslate2's (intra_threads, inter_threads) for --threads on ``device``: on the CPU, 1
    intra-op thread (auto) and as many batches at once as the cores allow; one on a GPU."""
    intra = threads or 1
    if device != "cpu":
        return intra, 1
    return intra, max(1, (os.cpu_count() or 1) // intra)


OnBatch = Callable[[int], None] | None


@dataclass
class EngineOptions:
    """How to run a model: which engine, on what device, in which precision, with how many threads."""

    engine: str = "auto"  # auto | torch | ctranslate2
    compute_type: str = "auto"  # CTranslate2 compute type; auto = the exported weights' own
    threads: int = DEFAULT_THREADS  # intra-op threads; 0 = auto (torch's default; ct2_threads)
    device: str = "auto"  # auto | cpu | cuda

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise AttnError(f"unknown --engine '{self.engine}'", f"use one of {', '.join(ENGINES)}")
        if self.compute_type not in COMPUTE_TYPES:
            raise AttnError(f"unknown --compute-type '{self.compute_type}'",
                            f"use one of {', '.join(COMPUTE_TYPES)}")
        if self.threads < 0:
            raise AttnError(f"--threads must be >= 0, got {self.threads}", "e.g. --threads 1")
        if self.engine == "torch" and self.compute_type != "auto":
            raise AttnError("--compute-type applies to the ctranslate2 engine only",
                            "drop it, or use --engine ctranslate2")


@dataclass
class Engine:
    """What every engine offers the commands: the run's files, and generate/classify."""

    name: str  # "torch" or "ctranslate2"
    path: Path  # the run directory
    meta: dict  # config.json
    model_cfg: ModelConfig
    toks: Tokenizers
    notes: list[str] = field(default_factory=list)  # why this engine (shown on stderr)

    @property
    def task(self) -> str:
        return self.model_cfg.task

    def describe(self) -> str:
        return self.name

    @property
    def on_cpu(self) -> bool:
        raise NotImplementedError

    def generate(self, ids: list[list[int]], cfg: DecodeConfig, max_tokens: int = 6000,
                 on_batch: OnBatch = None) -> list[tuple[list[int], float]]:
        raise NotImplementedError

    def classify(self, ids: list[list[int]], max_tokens: int = 16000,
                 on_batch: OnBatch = None) -> list[list[float]]:
        raise NotImplementedError


class TorchEngine(Engine):
    """attn's own model in torch (``infer.load_run``)."""

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


# --------------------------------------------------------------------------- CTranslate2


def decode_limits(lengths: list[int], cfg: DecodeConfig, max_len: int) -> list[int]:
    """Per-input output limits floor(a * source length + b) in [1, max_len] (decoding.max_lengths)."""
    import math

    return [min(max(1, math.floor(cfg.max_len_a * n + cfg.max_len_b)), max_len) for n in lengths]


def ct2_decode_options(cfg: DecodeConfig, limit: int, vocab_size: int) -> dict:
    """translate_batch keyword arguments for attn's DecodeConfig and one output limit."""
    opts = dict(max_decoding_length=limit, min_decoding_length=min(cfg.min_len, limit),
                no_repeat_ngram_size=cfg.no_repeat_ngram, return_scores=True, return_end_token=True,
                max_input_length=0, beam_size=cfg.beam, num_hypotheses=cfg.beam)
    if cfg.sample:
        top_k = cfg.top_k if 0 < cfg.top_k < vocab_size else 0  # 0 = the whole vocabulary
        opts.update(sampling_topk=top_k, sampling_topp=cfg.top_p, sampling_temperature=cfg.temperature)
    opts.update(length_penalty=ct2_length_penalty(cfg))
    return opts


_TINY_ALPHA = 1e-4  # stands for alpha = 0 in CTranslate2 (0 would switch its stopping rule)


def ct2_length_penalty(cfg: DecodeConfig) -> float:
    """CTranslate2's ``length_penalty``: 0 (raw log P; the GNMT penalty is applied here) for
    sampling and greedy; for beam search non-zero, so that CTranslate2 stops when K hypotheses
    have ended, as attn does."""
    if cfg.sample or cfg.beam == 1:
        return 0.0
    return cfg.length_penalty or _TINY_ALPHA


def gnmt_rerank(hyps: list[list[int]], scores: list[float], ct2_alpha: float, alpha: float,
                eos_id: int = EOS_ID) -> tuple[list[int], float]:
    """The best of CTranslate2's hypotheses (ids, EOS kept when they ended) under attn's score
    log P / ((5 + |Y|) / 6) ** alpha; CTranslate2's scores are log P / |Y| ** ct2_alpha."""
    best: tuple[list[int], float] | None = None
    for hyp, s in zip(hyps, scores, strict=True):
        n = max(1, len(hyp))
        score = s * n ** ct2_alpha / ((5.0 + n) / 6.0) ** alpha
        out = hyp[:-1] if hyp and hyp[-1] == eos_id else hyp
        if best is None or score > best[1]:
            best = (out, score)
    return best if best is not None else ([], 0.0)


class CT2Engine(Engine):
    """A run's ct2/ export through ctranslate2.Translator (seq2seq) or Encoder (sentiment)."""

    def __init__(self, run_dir: Path, meta: dict, model_cfg: ModelConfig, toks: Tokenizers,
                 ct2_dir: Path, quantization: str, opts: EngineOptions, device: str,
                 notes: list[str] | None = None) -> None:
        super().__init__("ctranslate2", run_dir, meta, model_cfg, toks, notes or [])
        import ctranslate2

        self.ct2 = ctranslate2
        self.device, self.quantization = device, quantization
        self.torch_device = opts.device  # for what only torch does (attention pictures)
        self.compute_type = "default" if opts.compute_type == "auto" else opts.compute_type
        self.ct2_dir = ct2_dir
        self.threads, self.replicas = ct2_threads(opts.threads, device)  # intra, inter threads
        self.model = self._load()
        self.src_pieces = [toks.src.id_to_piece(i) for i in range(toks.src.vocab_size)]
        tgt = toks.tgt if model_cfg.is_seq2seq else toks.src
        self.tgt_index = {tgt.id_to_piece(i): i for i in range(tgt.vocab_size)}
        self.head = _load_head(ct2_dir) if not model_cfg.is_seq2seq else {}

    def _load(self, replicas: int | None = None):
        kind = self.ct2.Translator if self.model_cfg.is_seq2seq else self.ct2.Encoder
        try:
            return kind(str(self.ct2_dir), device=self.device, compute_type=self.compute_type,
                        intra_threads=self.threads, inter_threads=replicas or self.replicas)
        except (RuntimeError, ValueError) as e:
            raise AttnError(f"cannot load {self.ct2_dir}: {str(e).splitlines()[0]}",
                            f"export it again: attn export {self.path}") from None

    def describe(self) -> str:
        ct = self.quantization if self.compute_type == "default" else self.compute_type
        ct = "float32" if ct == "none" else ct
        return f"ctranslate2 ({self.device}, {ct})"

    @property
    def on_cpu(self) -> bool:
        return self.device == "cpu"

    # ------------------------------------------------------------------ seq2seq

    def generate(self, ids, cfg, max_tokens=6000, on_batch=None):
        mc = self.model_cfg
        results: list[tuple[list[int], float]] = [([], 0.0)] * len(ids)
        todo = [i for i, x in enumerate(ids) if x]
        limits = decode_limits([len(ids[i]) for i in todo], cfg, mc.max_len)
        model = self.model
        if cfg.sample:  # CTranslate2 seeds each worker thread's generator when it first samples:
            self.ct2.set_random_seed(cfg.seed)  # a fresh model with one worker, so that the same
            model = self._load(replicas=1)  # seed gives the same output
        groups: dict[int, list[int]] = {}
        for i, limit in zip(todo, limits, strict=True):
            groups.setdefault(limit, []).append(i)
        # every group is queued at once, so that the replicas decode groups side by side
        pending = [(limit, idx, self._submit(model, idx, ids, cfg, limit, max_tokens))
                   for limit, idx in sorted(groups.items())]
        for limit, idx, out in pending:
            for i, res in zip(idx, self._collect(model, idx, ids, cfg, limit, max_tokens, out), strict=True):
                results[i] = res
            if on_batch:
                on_batch(len(idx))
        return results

    def _submit(self, model, idx: list[int], ids: list[list[int]], cfg: DecodeConfig, limit: int,
                max_tokens: int, suppress: bool = False) -> list:
        """Queue one limit group on the replicas; its async results."""
        mc = self.model_cfg
        opts = ct2_decode_options(cfg, limit, len(self.tgt_index))
        if suppress:  # never pad or BOS (CTranslate2 then renormalises over the other tokens)
            opts["suppress_sequences"] = [[self.src_pieces[mc.pad_id]], [self.src_pieces[mc.bos_id]]]
        source = [[self.src_pieces[t] for t in ids[i]] for i in idx]
        return model.translate_batch(source, max_batch_size=max(1, max_tokens // max(1, cfg.beam)),
                                     batch_type="tokens", asynchronous=True, **opts)

    def _collect(self, model, idx: list[int], ids: list[list[int]], cfg: DecodeConfig, limit: int,
                 max_tokens: int, out: list, suppress: bool = False) -> list[tuple[list[int], float]]:
        """One group's outputs, best first under attn's score; the rare ones holding pad or BOS
        are decoded again with those suppressed."""
        mc = self.model_cfg
        ct2_alpha = ct2_length_penalty(cfg)
        results, redo = [], []
        for j, pending in enumerate(out):
            r = pending.result()
            hyps = [[self.tgt_index[p] for p in h] for h in r.hypotheses]
            if not suppress and any(mc.pad_id in h or mc.bos_id in h for h in hyps):
                redo.append(j)
            results.append(gnmt_rerank(hyps, list(r.scores), ct2_alpha, cfg.length_penalty, mc.eos_id))
        if redo:
            sub = [idx[j] for j in redo]
            again = self._submit(model, sub, ids, cfg, limit, max_tokens, suppress=True)
            for j, res in zip(redo, self._collect(model, sub, ids, cfg, limit, max_tokens, again, True),
                              strict=True):
                results[j] = res
        return results

    # ------------------------------------------------------------------ sentiment

    def classify(self, ids, max_tokens=16000, on_batch=None):
        import numpy as np

        from attn_cli.infer.predict import _batches

        probs: list[list[float]] = [[] for _ in ids]
        for idx in _batches([len(x) for x in ids], max_tokens):
            batch = [ids[i] or [EOS_ID] for i in idx]
            out = self.model.forward_batch(batch)
            h = np.asarray(out.last_hidden_state.to_device(self.ct2.Device.cpu)
                           if self.device != "cpu" else out.last_hidden_state, dtype=np.float32)  # (B, S, D)
            lengths = np.array([len(x) for x in batch])
            keep = np.arange(h.shape[1])[None, :] < lengths[:, None]  # (B, S)
            p = head_probs(self.head, self.model_cfg, h, keep)  # (B, C)
            for i, row in zip(idx, p.tolist(), strict=True):
                probs[i] = row
            if on_batch:
                on_batch(len(idx))
        return probs


def _load_head(ct2_dir: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    from attn_cli.infer.export import HEAD_FILE

    try:
        return load_file(str(ct2_dir / HEAD_FILE))
    except Exception as e:  # noqa: BLE001 - safetensors raises several kinds
        raise AttnError(f"cannot read {ct2_dir / HEAD_FILE}: {e}", "export the run again") from None


def _softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    import numpy as np

    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def head_probs(w: dict[str, np.ndarray], cfg: ModelConfig, h: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Mean pooling and the Linear-tanh-Linear head of a Classifier: h (B, S, D), keep (B, S) ->
    (B, C); an all-pad row pools to zeros, as in Classifier.pooled."""
    import numpy as np

    m = keep[:, :, None].astype(h.dtype)  # (B, S, 1)
    pooled = (h * m).sum(1) / np.maximum(m.sum(1), 1.0)  # (B, D)
    x = np.tanh(pooled @ w["head.0.weight"].T + w["head.0.bias"])  # (B, D)
    return _softmax(x @ w["head.3.weight"].T + w["head.3.bias"])  # (B, C)


# --------------------------------------------------------------------------- choosing


def _ct2_device(ct2, opts: EngineOptions) -> tuple[str | None, str | None]:
    """(device, None) for CTranslate2, or (None, why not)."""
    gpus = ct2.get_cuda_device_count()
    device = opts.device
    if device == "auto":
        device = "cuda" if gpus else "cpu"
    if device.startswith("cuda"):
        if not gpus:
            return None, f"--device {opts.device}: ctranslate2 sees no CUDA GPU"
        device = "cuda"
    if opts.compute_type in GPU_ONLY and device == "cpu":
        return None, f"--compute-type {opts.compute_type} needs a CUDA GPU"
    return device, None


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
    device, why = _ct2_device(ct2, opts)
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

