"""Set up a training run end to end: data, tokenizer, model and run directory, then the Trainer
with the run's task unit (:func:`task_unit`: a pretraining objective's or the task's). The
run's records (metrics.jsonl, the model card) are ``attn_cli.train.records``'s.

Everything that can fail on bad input (data, fields, tokenizer, options) is checked before the
run directory is created, so a bad command leaves nothing behind.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from attn_cli import __version__
from attn_cli import rundir as ckpt
from attn_cli.config import AUTO, ModelConfig, TrainConfig, model_config_from_preset
from attn_cli.data.rundata import DataRequest, RunData, load_run_data, load_stream_data, valid_meta
from attn_cli.data.spec import Fields
from attn_cli.data.tasks import texts_for_tokenizer
from attn_cli.data.tokenizer import TokenizerConfig, Tokenizers, VocabTooLarge, train_tokenizers
from attn_cli.device import default_max_tokens, pick_device
from attn_cli.errors import AttnError
from attn_cli.eval.baselines import run_baseline
from attn_cli.model.transformer import build_model, count_parameters
from attn_cli.train import distributed as dd
from attn_cli.train import tensorboard
from attn_cli.train.pretrain import pretrain_meta, pretrain_unit
from attn_cli.train.probe import resolve_shape
from attn_cli.train.records import MetricsLog, pretrained_summary, write_card
from attn_cli.train.trainer import Reporter, Trainer
from attn_cli.train.units import TaskContext, TaskUnit, finetune_unit
from attn_cli.train.warmstart import check_same_model, init_preset, init_weights, resumed_shape


@dataclass
class RunRequest:
    """What `attn train` was asked to do (besides the TrainConfig)."""

    data: str  # training data SPEC
    out: Path  # run directory
    fields: Fields = field(default_factory=Fields)
    valid: str | None = None  # validation SPEC
    subset: str | None = None  # Hub configuration
    split: str = "train"
    tokenizer: Path | None = None  # an existing tokenizer directory
    init_from: Path | None = None  # a run directory whose best weights start this run
    adopt_init_preset: bool = False  # with init_from, and no preset given: train at that run's preset
    notes: list[str] = field(default_factory=list)  # the command's notes, shown once the data is checked
    resume: bool = False
    overwrite: bool = False
    data_cache: Path | None = None  # tokenized-data cache directory (None: $ATTN_CACHE or ~/.cache/attn)
    num_proc: int | None = None  # tokenizing processes (None: the machine's cores)
    documents: bool | None = None  # attn pretrain: a .txt holds blank-line-separated documents
    auto: dict | None = None  # --preset auto's choice (set while the run is built; config.json keeps it)


@dataclass
class RunResult:
    reason: str
    state: dict
    params: int
    run_dir: Path
    baseline: dict | None = None  # the task's baseline on the run's own data (baselines.run_baseline)


def check_run_dir(req: RunRequest) -> None:
    """Refuse to clobber: a non-empty directory needs --resume or --overwrite."""
    out = req.out
    if req.init_from is not None and not (req.init_from / ckpt.CONFIG_FILE).is_file():
        raise AttnError(f"--init-from {req.init_from} is not a run directory (no {ckpt.CONFIG_FILE})",
                        "pass the --out directory of an earlier attn train")
    if req.resume:
        return
    ckpt.prepare_out_dir(out, req.overwrite, "run")


def known_tokenizers(req: RunRequest) -> Tokenizers | None:
    """The given tokenizer, the run's own (resume) or --init-from's; None: train one."""
    if req.resume:
        return Tokenizers.load(req.out)
    if req.init_from is not None:  # its embeddings belong to its tokenizer
        toks = Tokenizers.load(req.init_from)
        if req.tokenizer is not None:
            given = Tokenizers.load(req.tokenizer)
            if (given.src.proto, given.tgt.proto) != (toks.src.proto, toks.tgt.proto):
                raise AttnError(f"--tokenizer {req.tokenizer} is not the tokenizer of --init-from "
                                f"{req.init_from}", "leave out --tokenizer: the run's own is used")
        return toks
    if req.tokenizer is not None:
        return Tokenizers.load(req.tokenizer)
    return None


def train_run_tokenizer(train, cfg: TrainConfig, reporter: Reporter) -> Tokenizers:
    """A new tokenizer trained on the normalized training Dataset (a sample of its texts)."""
    src_cols, tgt_cols = texts_for_tokenizer(train, cfg.task)
    tcfg = TokenizerConfig(vocab_size=cfg.vocab_size, max_sentences=400_000, seed=cfg.seed,
                           lowercase=cfg.lowercase)
    reporter.note(f"training a SentencePiece tokenizer ({tcfg.vocab_size:,} pieces) on the training "
                  "texts (--tokenizer DIR reuses one instead)")  # about 33 s for IMDB on 2 cores
    started = time.perf_counter()
    try:
        toks = train_tokenizers(train, src_cols, tgt_cols, tcfg)
    except VocabTooLarge as e:
        reporter.note(f"the data allows at most {e.maximum:,} pieces; using that vocabulary size")
        tcfg.vocab_size = e.maximum
        toks = train_tokenizers(train, src_cols, tgt_cols, tcfg)
    reporter.note(f"tokenizer trained in {time.perf_counter() - started:.1f} s")
    return toks


def build_model_config(cfg: TrainConfig, toks: Tokenizers, data: RunData) -> ModelConfig:
    overrides: dict = {"max_len": cfg.max_len}
    if cfg.dropout is not None:
        overrides["dropout"] = cfg.dropout
    labels = len(data.label_names) if cfg.task == "sentiment" and cfg.objective is None else 0
    if cfg.objective is not None and not toks.joint:
        raise AttnError("pretraining needs a joint tokenizer (one vocabulary for both sides)",
                        "leave out --tokenizer (one is trained), or pass one made without --separate-vocab")
    tgt_vocab = None if toks.joint or cfg.task == "sentiment" else toks.tgt.vocab_size
    overrides.update(cfg.shape())  # explicit dims (and auto's choice) win over the preset's
    return model_config_from_preset("tiny" if cfg.preset == AUTO else cfg.preset, cfg.task, toks.src.vocab_size,
                                    tgt_vocab, labels, **overrides)


def run_meta(req: RunRequest, cfg: TrainConfig, mcfg: ModelConfig, data: RunData, params: int) -> dict:
    """config.json: everything inference needs to rebuild the model and read its inputs."""
    return {"attn_version": __version__, "task": cfg.task, "preset": cfg.preset, "parameters": params,
            "model": mcfg.to_dict(), "label_names": data.label_names,
            "languages": {"src": req.fields.src_lang, "tgt": req.fields.tgt_lang},
            "fields": {k: v for k, v in req.fields.__dict__.items() if v is not None},
            "data": {"train": req.data, "valid": req.valid, "subset": req.subset,
                     "train_examples": 0 if cfg.stream else len(data.train),
                     "valid_examples": len(data.valid), **valid_meta(data),
                     **({"concat": cfg.concat} if cfg.task != "sentiment" and not cfg.objective else {})},
            **({"auto": req.auto} if req.auto is not None else {}),
            **({"init_from": str(req.init_from)} if req.init_from is not None else {}),
            **({"pretrained": seen} if req.init_from is not None and (seen := pretrained_summary(req.init_from))
               else {}),
            **({"pretrain": pretrain_meta(cfg.objective, 0 if cfg.stream else len(data.train), len(data.valid))}
               if cfg.objective is not None else {})}


def prepare(req: RunRequest, cfg: TrainConfig, reporter: Reporter, dist: dd.Dist):
    """Load and check everything; returns what the Trainer needs. Writes nothing."""
    device = pick_device(cfg.device if cfg.device != "auto" or not dist.enabled else
                         ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and dist.enabled:
        device = torch.device("cuda", dist.local_rank)
    if cfg.max_tokens is None:  # (then written to train_config.json: a resume keeps it)
        cfg.max_tokens = default_max_tokens(device, dist.world_size)
    if device.type == "cpu" and cfg.precision in ("bf16", "fp16"):
        reporter.note(f"{cfg.precision} on this CPU is far slower than fp32 (use --precision auto)")
    dreq = DataRequest(spec=req.data, task=cfg.task, fields=req.fields, valid_spec=req.valid,
                       split=req.split, subset=req.subset, seed=cfg.seed, max_len=cfg.max_len,
                       cache=req.data_cache, text_only=cfg.objective is not None, documents=req.documents,
                       **({"num_proc": req.num_proc} if req.num_proc else {}))
    if cfg.stream:
        data, toks = load_stream_data(dreq, known_tokenizers(req), cfg, reporter.note)
        for n in data.notes:
            reporter.note(n)
        return device, data, toks
    data, toks = load_run_data(dreq, known_tokenizers(req),
                               lambda train: train_run_tokenizer(train, cfg, reporter), reporter.note,
                               getattr(reporter, "tokenizing", None))
    for n in data.notes:
        reporter.note(n)
    if data.truncated:
        reporter.note(f"{data.truncated} training example(s) longer than --max-len {cfg.max_len} "
                      "were truncated")
    longest = int(data.train.lengths.max())
    if longest > cfg.max_tokens:
        raise AttnError(f"--max-tokens {cfg.max_tokens} is smaller than the longest training example "
                        f"({longest} tokens after --max-len {cfg.max_len})",
                        "raise --max-tokens or lower --max-len")
    return device, data, toks


def resume_or_start(req: RunRequest, reporter: Reporter) -> RunRequest:
    """--resume on a directory that holds no run yet (killed before its config was written, or
    never created) starts the run afresh, as litgpt's resume="auto" does; a directory with
    other files in it is refused."""
    if not req.resume or (req.out / ckpt.CONFIG_FILE).is_file():
        return req
    if req.out.exists() and not req.out.is_dir():
        raise AttnError(f"cannot resume: {req.out} is not a directory", "check --out")
    others = [p.name for p in req.out.iterdir() if p.name != ckpt.LOCK_FILE and not p.name.endswith(".tmp")
              ] if req.out.is_dir() else []
    if others:
        raise AttnError(f"cannot resume: {req.out} holds no run (missing {ckpt.CONFIG_FILE}) but "
                        f"other files ({', '.join(sorted(others)[:3])})",
                        "check --out, or pass --overwrite to replace it")
    reporter.note(f"nothing saved in {req.out} yet: starting the run from step 0")
    return dataclasses.replace(req, resume=False, overwrite=True)


def train_run(req: RunRequest, cfg: TrainConfig, reporter: Reporter) -> RunResult:
    """The whole of `attn train`: lock the run directory, prepare, train, write the card.

    A new run directory that fails before its first file is written is removed again.
    """
    req = resume_or_start(req, reporter)
    if cfg.tensorboard:
        tensorboard.require()
    dist = dd.from_env()
    if dist.is_main:  # the other ranks would see rank 0's fresh directory and lock
        check_run_dir(req)
    cfg = init_preset(req.init_from, req.resume, req.adopt_init_preset, cfg)
    out, created = req.out, not req.out.exists()
    lock = ckpt.RunLock(out)
    if dist.is_main:
        out.mkdir(exist_ok=True)
        lock.acquire()
    try:
        return _train_locked(req, cfg, reporter, dist)
    except BaseException:
        if created and dist.is_main and not (out / ckpt.CONFIG_FILE).exists():
            lock.release()
            shutil.rmtree(out, ignore_errors=True)
        raise
    finally:
        lock.release()


def task_unit(ctx: TaskContext) -> TaskUnit:
    """The run's task unit: its pretraining objective's (attn pretrain) or its task's."""
    return pretrain_unit(ctx) if ctx.cfg.objective is not None else finetune_unit(ctx)


def _train_locked(req: RunRequest, cfg: TrainConfig, reporter: Reporter, dist: dd.Dist) -> RunResult:
    cfg, device, data, toks, mcfg, model = _build(req, cfg, reporter, dist)
    for n in req.notes:  # (after the data's checks: a bad command shows only its error)
        reporter.note(n)
    params = count_parameters(model)
    out = req.out
    if dist.is_main and not req.resume:
        _write_new_run(req, cfg, mcfg, data, toks, params)
    dd.barrier(dist)
    unit = task_unit(TaskContext(cfg, mcfg, toks, device, dist.rank))
    trainer = Trainer(cfg, mcfg, model, toks, data.train, data.valid, data.refs, out, reporter, dist,
                      device, unit)
    if req.resume:
        if not trainer.load_last():
            reporter.note(f"{out} has no saved state yet (it stopped before its first save): "
                          "training it from step 0")
        else:
            reporter.note(f"resuming {out} at step {trainer.state.step:,}")
        if dist.is_main:
            ckpt.atomic_write_text(out / ckpt.TRAIN_CONFIG_FILE, json.dumps(cfg.to_dict(), indent=2))
    seen = "streamed" if cfg.stream else f"{len(data.train):,}"
    reporter.note(f"{cfg.task}: {params:,} parameters ({cfg.preset}), {seen} training and "
                  f"{len(data.valid):,} validation examples, device {device}"
                  + (f" x {dist.world_size} processes" if dist.enabled else ""))
    board = (tensorboard.TensorBoardLog(tensorboard.log_dir(out, cfg.tensorboard_dir), trainer.state.step)
             if cfg.tensorboard and dist.is_main else None)
    metrics_log = MetricsLog(out / ckpt.METRICS_FILE, trainer.state.step, dist.is_main, board)
    try:
        reason = trainer.run(metrics_log.write)
        baseline = run_baseline(cfg, data, toks, reporter.note) if dist.is_main else None
        if baseline is not None:
            metrics_log.write({"event": "baseline", "step": trainer.state.step, **baseline})
    finally:
        metrics_log.close()
        if dist.is_main and (out / ckpt.WEIGHTS_FILE).exists():
            write_card(out, cfg, data, params, trainer.state.to_dict(), device)
        dd.teardown()
    return RunResult(reason, trainer.state.to_dict(), params, out, baseline)


def _build(req: RunRequest, cfg: TrainConfig, reporter: Reporter, dist: dd.Dist):
    """(device, data, tokenizers, model config, model): everything checked, the model built
    from --seed (and --init-from's weights on a new run), the process group joined."""
    torch.manual_seed(cfg.seed)
    device, data, toks = prepare(req, cfg, reporter, dist)
    dd.setup(dist, device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    cfg = resumed_shape(req.out, cfg) if req.resume else _auto_shape(req, cfg, toks, data, device, reporter, dist)
    mcfg = build_model_config(cfg, toks, data)
    if req.resume:
        check_same_model(req.out, mcfg)
    torch.manual_seed(cfg.seed)
    model = build_model(mcfg)
    if req.init_from is not None and not req.resume:  # (a resumed run's weights come from last/)
        if req.adopt_init_preset or cfg.preset == AUTO:
            reporter.note(f"the shape of {req.init_from} ({cfg.preset}: d={mcfg.d_model}, {mcfg.n_enc_layers} "
                          "layers), whose weights start this run (--preset chooses another)")
        reporter.note(init_weights(model, mcfg, req.init_from))
    return cfg, device, data, toks, mcfg, model


def _auto_shape(req: RunRequest, cfg: TrainConfig, toks: Tokenizers, data: RunData, device: torch.device,
                reporter: Reporter, dist: dd.Dist) -> TrainConfig:
    """--preset auto on a new run: rank 0 sizes the model (attn_cli.train.probe), every rank
    builds that shape; the choice goes into config.json (``req.auto``)."""
    if cfg.preset != AUTO or len(cfg.shape()) >= 4:
        return cfg
    if dist.is_main:
        cfg, req.auto = resolve_shape(cfg, build_model_config(cfg, toks, data), data.train, device, task_unit,
                                      reporter.note, toks)
    dims = [dd.broadcast_int(getattr(cfg, k) or 0, dist, device) for k in ("d_model", "n_layers", "n_heads", "d_ff")]
    return dataclasses.replace(cfg, **dict(zip(("d_model", "n_layers", "n_heads", "d_ff"), dims, strict=True)))


def _write_new_run(req: RunRequest, cfg: TrainConfig, mcfg: ModelConfig, data: RunData, toks: Tokenizers,
                   params: int) -> None:
    """A new run's first files (rank 0): tokenizer, train_config.json, config.json."""
    out = req.out
    for p in out.iterdir():  # --overwrite: the old run goes only now that the new one is ready
        if p.name != ckpt.LOCK_FILE:
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    toks.save(out)
    ckpt.atomic_write_text(out / ckpt.TRAIN_CONFIG_FILE, json.dumps(cfg.to_dict(), indent=2))
    ckpt.atomic_write_text(out / ckpt.CONFIG_FILE, json.dumps(run_meta(req, cfg, mcfg, data, params), indent=2))
