"""The CTranslate2 engine: a run's ``ct2/`` export (``attn export``, see ``export``) through
``ctranslate2.Translator`` (seq2seq) or ``ctranslate2.Encoder`` (sentiment), giving what the torch
engine gives (``engine.Engine``). ctranslate2 is imported only when a ``CT2Engine`` is made.

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
from pathlib import Path
from typing import TYPE_CHECKING

from attn_cli.errors import AttnError
from attn_cli.infer.engine import GPU_ONLY, Engine, EngineOptions

if TYPE_CHECKING:  # numpy loads when used
    import numpy as np

    from attn_cli.config import ModelConfig
    from attn_cli.data.tokenizer import Tokenizers
    from attn_cli.infer.decoding import DecodeConfig

EOS_ID = 3  # tokenizer.EOS_ID (not imported: it would load sentencepiece)


def ct2_threads(threads: int, device: str) -> tuple[int, int]:
    """CTranslate2's (intra_threads, inter_threads) for --threads on ``device``: on the CPU, 1
    intra-op thread (auto) and as many batches at once as the cores allow; one on a GPU."""
    intra = threads or 1
    if device != "cpu":
        return intra, 1
    return intra, max(1, (os.cpu_count() or 1) // intra)


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


def ct2_device(ct2, opts: EngineOptions) -> tuple[str | None, str | None]:
    """(device, None) for CTranslate2 under ``opts``, or (None, why not) (``engines.open_engine``)."""
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
