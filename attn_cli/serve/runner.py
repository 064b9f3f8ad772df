"""One served model: its engine, what ``/v1/models`` says of it, and how a batch of jobs runs.

``open_models`` loads every ``--model`` through ``engines.open_engine`` (the CLI's checks and its
engine choice). A ``ModelRunner`` owns the model's ``Batcher``; its ``run`` is the batch function
the worker calls: all the jobs' texts go to ``Engine.generate`` / ``Engine.classify`` in one
call (which sorts them by length into token-budget sub-batches), and each job gets its outputs
back in its own order, with the attention pictures it asked for (``explain.cross_alignment`` and
``explain.token_importance`` on the torch model, loaded on first use when the engine is
CTranslate2). Everything that touches the model runs on the worker threads.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from attn_cli.infer.segment import Plan, join_attention
from attn_cli.serve.batcher import Batcher, Job
from attn_cli.serve.config import ModelSpec, ServeConfig
from attn_cli.serve.schemas import ApiError

if TYPE_CHECKING:
    from attn_cli.config import DecodeConfig
    from attn_cli.infer.engine import Engine
    from attn_cli.serve.telemetry import ServeMetrics

ROUND = 5  # decimals of scores and probabilities in answers
ROUND_ATTENTION = 4  # decimals of attention weights


def open_models(specs: list[ModelSpec], cfg: ServeConfig) -> dict[str, Engine]:
    """Each model's engine, by name, loaded and checked as the CLI loads them, with
    ``server_threads`` intra-op threads."""
    from attn_cli.infer.engine import EngineOptions
    from attn_cli.infer.engines import open_engine

    opts = EngineOptions(engine=cfg.engine, threads=server_threads(cfg), device=cfg.device)
    return {s.name: open_engine(s.path, None, opts) for s in specs}


def server_threads(cfg: ServeConfig) -> int:
    """Intra-op threads per worker: --threads, or 1 (auto)."""
    return cfg.threads or 1


def auto_workers(engine: Engine, cfg: ServeConfig) -> int:
    """Batches a model runs at once: --workers, or (auto) for torch on the CPU one per
    ``server_threads`` cores, else 1: CTranslate2 already spreads each batch over its replicas
    (one per core), and a GPU runs one batch at a time. Measured on 2 cores (docs/benchmarks-serving.md,
    "Serving"): torch served 1.4x the sentences/s with two 1-thread workers as with one
    2-thread worker, and CTranslate2 1.1-1.2x with one worker as with two."""
    if cfg.workers:
        return cfg.workers
    if engine.name != "torch" or not engine.on_cpu:
        return 1
    return max(1, (os.cpu_count() or 1) // server_threads(cfg))


@dataclass
class Payload:
    """What a job carries besides its ids."""

    cfg: DecodeConfig | None  # decoding options (seq2seq); None for sentiment
    attention: bool  # add the attention picture to each output


def best_metric(engine: Engine) -> dict | None:
    """The best validation evaluation in the run's metrics.jsonl: name, value, step."""
    from attn_cli.eval.metrics import PRIMARY_METRIC

    name = PRIMARY_METRIC[engine.task]
    best = None
    try:
        with open(engine.path / "metrics.jsonl", encoding="utf-8") as fh:
            for line in fh:
                if '"eval"' not in line:
                    continue
                row = json.loads(line)
                value = row.get(name) if isinstance(row, dict) and row.get("event") == "eval" else None
                if isinstance(value, int | float) and (best is None or value > best["value"]):
                    best = {"name": name, "value": round(float(value), 4), "step": row.get("step")}
    except (OSError, ValueError):
        return None
    return best


class ModelRunner:
    """A served model and its batching worker."""

    def __init__(self, name: str, engine: Engine, cfg: ServeConfig,
                 metrics: ServeMetrics | None = None) -> None:
        from attn_cli.infer.api import Model

        self.name, self.engine, self.cfg, self.metrics = name, engine, cfg, metrics
        self.model = Model(engine, concurrent=True)  # the Python API's calls, its workers side by side
        self.task = engine.task
        self._torch_run = None
        self._torch_lock = threading.Lock()
        self.batcher = Batcher(name, self.run, cfg.max_batch_tokens, cfg.max_wait_ms / 1000.0, cfg.queue,
                               on_batch=(lambda s: metrics.batch(name, s)) if metrics else None,
                               on_depth=(lambda n: metrics.depth(name, n)) if metrics else None,
                               workers=auto_workers(engine, cfg))
        self.info = self._info()

    def _info(self) -> dict:
        meta, mc = self.engine.meta, self.engine.model_cfg
        info: dict[str, Any] = {"name": self.name, "task": self.task, "engine": self.engine.describe(),
                                "parameters": meta.get("parameters"), "max_tokens": mc.max_len}
        if self.task == "sentiment":
            info["labels"] = list(meta.get("label_names") or [])
        elif self.task == "translate":  # (summarize has no languages: no key rather than nulls)
            langs = meta.get("languages") or {}
            info["languages"] = {"src": langs.get("src"), "tgt": langs.get("tgt")}
        info["best_validation"] = best_metric(self.engine)
        return info

    # ------------------------------------------------------------------ the request side

    def encode(self, texts: list[str]) -> list[list[int]]:
        """Token ids per text; a text over the model's positions or the batch budget is a 422."""
        ids, cut = self.model.encode(texts)
        limit = self.engine.model_cfg.max_len
        if cut:
            full = self.engine.toks.src.encode_batch(texts)
            i = next(i for i, x in enumerate(full) if len(x) > limit)
            raise ApiError(422, f"text {i} has {len(full[i]):,} tokens; the model takes at most {limit:,}",
                           ("model max_tokens", limit))
        budget = self.cfg.max_batch_tokens
        for i, x in enumerate(ids):
            if len(x) > budget:
                raise ApiError(422, f"text {i} has {len(x):,} tokens; a batch holds at most {budget:,}",
                               ("--max-batch-tokens", budget))
        return ids

    def plan(self, texts: list[str], split: bool) -> Plan:
        """The ids of a translate or summarize request: sentences (``split``, translate; one over
        the model's positions or the batch budget goes in token windows) or whole texts (a
        summarize document over the positions is cut to its head, with a note; a translate text
        over them is a 422, as is a text over the batch budget)."""
        limit, budget = self.engine.model_cfg.max_len, self.cfg.max_batch_tokens
        split = split and self.task == "translate"
        plan = self.model.plan(texts, split, min(limit, budget) if split else None)
        if self.task == "translate" and not split and any(plan.over):
            i = next(i for i, n in enumerate(plan.over) if n)
            n = len(self.engine.toks.src.encode(texts[i]))
            raise ApiError(422, f"text {i} has {n:,} tokens; the model takes at most {limit:,}",
                           ("model max_tokens", limit))
        for (i, _), x in zip(plan.owner, plan.ids, strict=True):
            if len(x) > budget:
                raise ApiError(422, f"text {i} has {len(x):,} tokens; a batch holds at most {budget:,}",
                               ("--max-batch-tokens", budget))
        return plan

    def assemble(self, plan: Plan, items: list[dict]) -> list[dict]:
        """One output per text of ``plan`` from the outputs of its sentences (``run``'s dicts): the
        text in the input's layout, the mean score, the attention block-diagonal, the notes."""
        texts = plan.join([it["text"] for it in items])
        scores = plan.mean_scores([it["score"] for it in items])
        out = []
        for t, ks in enumerate(plan.groups()):
            done: dict[str, Any] = {"text": texts[t], "score": round(scores[t], ROUND)}
            atts = [items[k]["attention"] for k in ks if "attention" in items[k]]
            if len(atts) == 1:
                done["attention"] = atts[0]
            elif atts:
                src, outp, m = join_attention([(a["source_pieces"], a["output_pieces"], a["matrix"]) for a in atts])
                done["attention"] = {"source_pieces": src, "output_pieces": outp, "matrix": m}
            if plan.note(t):
                done["notes"] = [plan.note(t)]
            out.append(done)
        return out

    def submit(self, ids: list[list[int]], payload: Payload):
        """Queue the texts; the future's result is one output dict per text."""
        key = ("gen", dataclasses.astuple(payload.cfg)) if payload.cfg is not None else ("cls",)
        return self.batcher.submit(ids, key, payload)

    # ------------------------------------------------------------------ the worker side

    def run(self, jobs: list[Job]) -> list[list[dict]]:
        """The batch function: one list of output dicts per job, in each job's input order."""
        ids = [x for job in jobs for x in job.ids]
        if self.task == "sentiment":
            flat = self._classify(ids)
        else:
            flat = self._generate(ids, jobs[0].payload.cfg)
        out, k = [], 0
        for job in jobs:
            items = flat[k:k + len(job.ids)]
            if job.payload.attention:
                for x, item in zip(job.ids, items, strict=True):
                    item["attention"] = self._attention(x, item.pop("_ids", None))
            for item in items:
                item.pop("_ids", None)
            out.append(items)
            k += len(job.ids)
        return out

    def _generate(self, ids: list[list[int]], cfg: DecodeConfig) -> list[dict]:
        results = self.model.generate_ids(ids, cfg, self.cfg.max_batch_tokens)
        if self.metrics:
            self.metrics.output_tokens(self.name, sum(len(o) for o, _ in results))
        tgt = self.engine.toks.tgt
        return [{"text": tgt.decode(o), "score": round(float(s), ROUND), "_ids": o} for o, s in results]

    def _classify(self, ids: list[list[int]]) -> list[dict]:
        probs = self.model.classify_ids(ids, self.cfg.max_batch_tokens)
        names = self.engine.meta["label_names"]
        out = []
        for p in probs:
            best = max(range(len(p)), key=p.__getitem__)
            out.append({"label": names[best], "confidence": round(p[best], ROUND),
                        "probabilities": {n: round(x, ROUND) for n, x in zip(names, p, strict=True)}})
        return out

    def _torch(self):
        """The torch model behind the attention pictures (the engine's own when it is torch)."""
        with self._torch_lock:  # workers may ask at once
            if self._torch_run is None:
                from attn_cli.infer.engines import torch_run_for

                self._torch_run = torch_run_for(self.engine)
        return self._torch_run

    def _attention(self, src: list[int], out: list[int] | None) -> dict:
        import torch

        run = self._torch()
        piece = run.toks.src.id_to_piece
        if self.task == "sentiment":
            from attn_cli.infer.explain import token_importance

            if not src:
                return {"pieces": [], "importance": []}
            weights = token_importance(run.model, torch.tensor([src], device=run.device))[0].tolist()
            return {"pieces": [piece(t) for t in src], "importance": [round(w, ROUND_ATTENTION) for w in weights]}
        from attn_cli.infer.explain import cross_alignment

        if not src:
            return {"source_pieces": [], "output_pieces": [], "matrix": []}
        full = list(out or []) + [self.engine.model_cfg.eos_id]  # row t predicted output piece t
        m = cross_alignment(run.model, torch.tensor([src], device=run.device),
                            torch.tensor([full], device=run.device)).cpu()  # (T, S)
        return {"source_pieces": [piece(t) for t in src],
                "output_pieces": [run.toks.tgt.id_to_piece(t) for t in full],
                "matrix": [[round(v, ROUND_ATTENTION) for v in row] for row in m.tolist()]}
