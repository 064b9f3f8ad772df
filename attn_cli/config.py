"""Typed configuration dataclasses and model-size presets.

Every field carries one comment; every check lives in ``__post_init__`` and raises ``ValueError``
naming the offending field. Configs round-trip through plain dicts (``to_dict``/``from_dict``),
which is how they are stored in a run directory's ``config.json``.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from typing import Any

TASKS = ("translate", "summarize", "sentiment")
SEQ2SEQ_TASKS = ("translate", "summarize")


def _type_ok(value: Any, hint: Any) -> bool:
    """True when ``value`` fits the annotation ``hint`` (int, float, bool, str, X | None)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(_type_ok(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:  # ints are accepted for floats (TOML/JSON "0" for 0.0)
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, hint)


def check_field_types(obj: Any) -> None:
    """Raise ValueError when a dataclass field holds a value of the wrong type.

    Integers given for ``float`` fields are converted in place.
    """
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value, hint = getattr(obj, f.name), hints[f.name]
        if not _type_ok(value, hint):
            raise ValueError(
                f"{type(obj).__name__}.{f.name} must be of type {_hint_name(hint)}, "
                f"got {type(value).__name__} {value!r}"
            )
        if hint is float and isinstance(value, int):
            setattr(obj, f.name, float(value))


def _hint_name(hint: Any) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " | ".join(_hint_name(h) for h in typing.get_args(hint))
    return "None" if hint is type(None) else getattr(hint, "__name__", str(hint))


def dataclass_from_dict(cls: type, d: dict[str, Any]) -> Any:
    """Build dataclass ``cls`` from ``d``, rejecting unknown and missing keys with ValueError."""
    if not isinstance(d, dict):
        raise ValueError(f"{cls.__name__} must be built from a dict, got {type(d).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - set(fields))
    if unknown:
        raise ValueError(
            f"unknown {cls.__name__} field(s): {', '.join(unknown)} "
            f"(known: {', '.join(fields)})"
        )
    missing = [
        name
        for name, f in fields.items()
        if name not in d
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ValueError(f"missing {cls.__name__} field(s): {', '.join(missing)}")
    return cls(**d)


# Model fields of earlier attn versions, with the only value this version builds: a run that
# used another value names the field in its error (they were pruned: docs/benchmarks.md).
RETIRED_MODEL_FIELDS = {"attn_dropout": 0.0, "pooling": "mean", "positions": "sinusoidal"}


@dataclass
class ModelConfig:
    """Architecture of one model: an encoder-decoder (translate, summarize) or an encoder
    with a classification head (sentiment)."""

    task: str  # "translate" | "summarize" | "sentiment"
    vocab_size: int  # source vocabulary size (the joint vocabulary when tgt_vocab_size is None)
    tgt_vocab_size: int | None = None  # target vocabulary size; None = joint, shared with source
    d_model: int = 256  # width of the residual stream (D)
    n_heads: int = 4  # attention heads per layer (H); must divide d_model
    n_enc_layers: int = 3  # encoder layers
    n_dec_layers: int = 3  # decoder layers (0 for sentiment)
    d_ff: int = 1024  # hidden width of the feed-forward blocks (F)
    dropout: float = 0.1  # dropout on embeddings and residual branches
    max_len: int = 512  # maximum number of positions (per side) the model accepts
    num_labels: int = 0  # classes of the sentiment head (>= 2; 0 = no head: a masked-LM pretraining run)
    pad_id: int = 0  # padding token id (masked out of attention and pooling)
    bos_id: int = 2  # beginning-of-sequence id, the first decoder input
    eos_id: int = 3  # end-of-sequence id, where decoding stops
    tie_embeddings: bool = True  # output projection shares the target embedding matrix

    def __post_init__(self) -> None:
        check_field_types(self)
        if self.task not in TASKS:
            raise ValueError(f"ModelConfig.task must be one of {TASKS}, got {self.task!r}")
        for name in ("vocab_size", "d_model", "n_heads", "n_enc_layers", "d_ff", "max_len"):
            if getattr(self, name) <= 0:
                raise ValueError(f"ModelConfig.{name} must be positive, got {getattr(self, name)}")
        if self.tgt_vocab_size is not None and self.tgt_vocab_size <= 0:
            raise ValueError(f"ModelConfig.tgt_vocab_size must be positive or None, "
                             f"got {self.tgt_vocab_size}")
        if self.d_model % self.n_heads:
            raise ValueError(f"ModelConfig.d_model ({self.d_model}) must be divisible by "
                             f"n_heads ({self.n_heads})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"ModelConfig.dropout must be in [0, 1), got {self.dropout}")
        self._check_task_fields()
        self._check_special_ids()

    def _check_task_fields(self) -> None:
        if self.is_seq2seq:
            if self.n_dec_layers <= 0:
                raise ValueError(f"ModelConfig.n_dec_layers must be positive for task "
                                 f"{self.task!r}, got {self.n_dec_layers}")
            return
        if self.n_dec_layers != 0:
            raise ValueError(f"ModelConfig.n_dec_layers must be 0 for task 'sentiment', "
                             f"got {self.n_dec_layers}")
        if self.num_labels < 2 and self.num_labels != 0:
            raise ValueError(f"ModelConfig.num_labels must be >= 2 for task 'sentiment' (0: a "
                             f"pretraining encoder without a head), got {self.num_labels}")
        if self.tgt_vocab_size is not None:
            raise ValueError("ModelConfig.tgt_vocab_size must be None for task 'sentiment'")

    def _check_special_ids(self) -> None:
        sizes = [("vocab_size", self.vocab_size)]
        if self.tgt_vocab_size is not None:
            sizes.append(("tgt_vocab_size", self.tgt_vocab_size))
        for name in ("pad_id", "bos_id", "eos_id"):
            value = getattr(self, name)
            for size_name, size in sizes:
                if not 0 <= value < size:
                    raise ValueError(f"ModelConfig.{name} ({value}) must be in "
                                     f"[0, {size_name}={size})")
        if self.is_seq2seq and len({self.pad_id, self.bos_id, self.eos_id}) < 3:
            raise ValueError("ModelConfig.pad_id, bos_id and eos_id must be distinct")

    @property
    def is_seq2seq(self) -> bool:
        """True for the encoder-decoder tasks (translate, summarize)."""
        return self.task in SEQ2SEQ_TASKS

    @property
    def head_dim(self) -> int:
        """Width of one attention head (Dh = D / H)."""
        return self.d_model // self.n_heads

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of all fields."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        """Inverse of ``to_dict``; unknown keys and wrongly typed values raise ValueError. Fields
        of earlier versions are accepted at the value this version builds (RETIRED_MODEL_FIELDS)."""
        if isinstance(d, dict):
            for name, kept in RETIRED_MODEL_FIELDS.items():
                if name in d and d[name] != kept:
                    raise ValueError(f"this run was made with {name}={d[name]!r}, which this attn "
                                     f"version no longer builds (only {kept!r})")
            d = {k: v for k, v in d.items() if k not in RETIRED_MODEL_FIELDS}
        return dataclass_from_dict(cls, d)


# Self-supervised pretraining objectives (attn pretrain) per task; the first is the default.
OBJECTIVES: dict[str, tuple[str, ...]] = {
    "sentiment": ("mlm", "mlm-whole-word"),  # BERT masked-LM, pieces or whole words
    "translate": ("denoise", "denoise-permute"),  # BART text infilling (+ sentence permutation)
    "summarize": ("denoise", "denoise-permute"),
}

AUTO = "auto"  # the preset sized to the data and the budget (attn_cli.train.sizing)
SCHEDULES = ("auto", "linear", "cosine", "inverse_sqrt")
# --concat by task (attn_cli.data.joining): off, as measured: 0.1 and 0.5 cost 2-7 BLEU on Tatoeba and
# Multi30k single sentences at CPU budgets (docs/benchmarks-quality.md, "Longer inputs"); summarize keeps
# whole dialogues (not measured); sentiment has no pairs to join
CONCAT_DEFAULTS = {"translate": 0.0, "summarize": 0.0, "sentiment": 0.0}

# Model sizes: dims only; the task, vocabulary and labels come from the data.
PRESETS: dict[str, dict[str, int]] = {
    "tiny": dict(d_model=64, n_heads=4, n_enc_layers=2, n_dec_layers=2, d_ff=256),
    "small": dict(d_model=256, n_heads=4, n_enc_layers=3, n_dec_layers=3, d_ff=1024),
    "base": dict(d_model=512, n_heads=8, n_enc_layers=6, n_dec_layers=6, d_ff=2048),
    "big": dict(d_model=1024, n_heads=16, n_enc_layers=6, n_dec_layers=6, d_ff=4096),
}


def model_config_from_preset(preset: str, task: str, vocab_size: int, tgt_vocab_size: int | None = None,
                             num_labels: int = 0, **overrides: Any) -> ModelConfig:
    """A ModelConfig with the dims of ``preset``; sentiment gets no decoder layers.

    ``overrides`` replace any field (e.g. ``dropout=0.3``, ``max_len=1024``).
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r} (choose from {', '.join(PRESETS)})")
    fields: dict[str, Any] = dict(PRESETS[preset])
    if task == "sentiment":
        fields["n_dec_layers"] = 0
    fields.update(task=task, vocab_size=vocab_size, tgt_vocab_size=tgt_vocab_size,
                  num_labels=num_labels)
    fields.update(overrides)
    return ModelConfig.from_dict(fields)


@dataclass
class TrainConfig:
    """How to train: every `attn train` option (and key of a --config TOML file) is a field."""

    task: str  # "translate" | "summarize" | "sentiment"
    preset: str = "auto"  # model size: auto (sized to the data and budget), tiny, small, base or big
    d_model: int | None = None  # width; None = the preset's (auto: chosen); given, it wins over both
    n_layers: int | None = None  # encoder layers (and decoder layers for seq2seq); None = the preset's
    n_heads: int | None = None  # attention heads; None = the preset's
    d_ff: int | None = None  # feed-forward width; None = the preset's
    # padded tokens per batch, all processes together (split under DDP); None = the device's
    # default (attn_cli.device.default_max_tokens: 4,096 on a CPU, the GPU's memory on a GPU)
    max_tokens: int | None = None
    accum: int = 1  # micro-batches accumulated per optimizer step
    lr: float = 7e-4  # peak learning rate, reached at the end of warmup
    warmup: int = 800  # linear warmup steps
    # > 0 (set when --warmup is not given, with --time-budget and no --max-steps): after the first
    # steps, cap warmup at this share of the steps the budget allows (attn_cli.train.trainer.WARMUP_PROBE)
    warmup_share: float = 0.0
    # "auto": linear decay to zero at the end of --max-steps or --time-budget, else inverse_sqrt;
    # "linear" and "cosine" need one of those budgets
    schedule: str = "auto"
    min_lr_ratio: float = 0.0  # cosine: the learning rate floor as a fraction of lr
    weight_decay: float = 0.01  # AdamW weight decay (matrices only)
    label_smoothing: float | None = None  # None = 0.1 for seq2seq, 0.0 for sentiment
    clip: float = 1.0  # gradient-norm clipping (0 = off)
    ema: float = 0.0  # decay of a moving average of the weights used for evaluation (0 = off)
    dropout: float | None = None  # None = the preset's dropout (0.1)
    epochs: int | None = None  # stop after this many epochs
    max_steps: int | None = None  # stop after this many optimizer steps
    time_budget: float | None = None  # stop after this many seconds of training
    eval_every: int | None = None  # evaluate (and save last/) every N steps; None = by budget (train.progress)
    save_every: float = 600.0  # also save last/ after this many seconds without a save (0 = off)
    eval_samples: int = 500  # validation examples decoded for BLEU/ROUGE at each evaluation
    patience: int = 0  # stop after N evaluations without improvement (0 = never)
    max_len: int = 256  # positions per side; longer examples are truncated
    concat: float | None = None  # share of training examples joined from 2-3 pairs; None = CONCAT_DEFAULTS
    seed: int = 1  # seed for initialisation, data order and dropout
    device: str = "auto"  # auto, cpu or cuda
    precision: str = "auto"  # auto (fp32 on CPU, bf16 on GPU), fp32, bf16 or fp16
    compile: bool = False  # torch.compile the model
    stream: bool = False  # read, tokenize and batch the training data on the fly (no cache)
    shuffle_buffer: int = 100_000  # --stream: rows shuffled and length-bucketed together
    log_every: int = 50  # optimizer steps between log lines in metrics.jsonl
    tensorboard: bool = False  # also write metrics.jsonl's rows as TensorBoard scalars
    tensorboard_dir: str | None = None  # where (None = RUN_DIR/tensorboard)
    skip_nonfinite: bool = False  # skip batches whose loss is NaN/inf instead of stopping
    vocab_size: int = 8000  # tokenizer size when attn trains one (lowered to what the data allows)
    lowercase: bool = False  # the tokenizer attn trains folds case (SentencePiece's nmt_nfkc_cf)
    objective: str | None = None  # attn pretrain: one of OBJECTIVES[task]; None = train the task itself

    def __post_init__(self) -> None:
        check_field_types(self)
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {', '.join(TASKS)}, got {self.task!r}")
        if self.preset not in (AUTO, *PRESETS):
            raise ValueError(f"preset must be one of {AUTO}, {', '.join(PRESETS)}, got {self.preset!r}")
        for name in ("epochs", "max_steps", "time_budget", "eval_every", "d_model", "n_layers", "n_heads", "d_ff",
                     "max_tokens", "accum", "eval_samples", "max_len", "log_every", "vocab_size", "shuffle_buffer"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")
        if self.concat is None:  # pretraining objectives train on texts, not pairs
            self.concat = 0.0 if self.objective else CONCAT_DEFAULTS[self.task]
        if not 0.0 <= self.concat <= 1.0:
            raise ValueError(f"concat must be in [0, 1] (a share of the training examples), got {self.concat}")
        if self.concat and self.task == "sentiment":
            raise ValueError("concat joins translate and summarize pairs; sentiment examples are not joined")
        for name in ("lr", "clip", "weight_decay", "warmup", "patience", "save_every"):
            if getattr(self, name) < 0 or (name == "lr" and self.lr == 0):
                raise ValueError(f"{name} must be {'positive' if name == 'lr' else '>= 0'}, "
                                 f"got {getattr(self, name)}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.schedule in ("linear", "cosine") and self.max_steps is None and self.time_budget is None:
            raise ValueError(f"schedule {self.schedule} needs max_steps or time_budget (the length of the decay)")
        if self.objective is not None and self.objective not in OBJECTIVES[self.task]:
            raise ValueError(f"objective for {self.task} must be one of {', '.join(OBJECTIVES[self.task])}, "
                             f"got {self.objective!r}")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ValueError(f"device must be auto, cpu or cuda, got {self.device!r}")
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise ValueError(f"precision must be auto, fp32, bf16 or fp16, got {self.precision!r}")
        if not 0.0 <= self.ema < 1.0:
            raise ValueError(f"ema must be in [0, 1) (e.g. 0.999; 0 = off), got {self.ema}")
        if not 0.0 <= self.warmup_share < 1.0:
            raise ValueError(f"warmup_share must be in [0, 1), got {self.warmup_share}")
        for name in ("label_smoothing", "dropout"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {value}")

    @property
    def decay(self) -> str:
        """The schedule this run follows: ``schedule``, with "auto" resolved."""
        if self.schedule != "auto":
            return self.schedule
        return "linear" if self.max_steps is not None or self.time_budget is not None else "inverse_sqrt"

    def shape(self) -> dict[str, int]:
        """The model dims given explicitly (d_model, n_heads, d_ff, layers), as ModelConfig fields."""
        given = {k: getattr(self, k) for k in ("d_model", "n_heads", "d_ff") if getattr(self, k) is not None}
        if self.n_layers is not None:
            given["n_enc_layers"] = self.n_layers
            if self.task != "sentiment":
                given["n_dec_layers"] = self.n_layers
        return given

    @property
    def smoothing(self) -> float:
        if self.label_smoothing is not None:
            return self.label_smoothing
        return 0.0 if self.task == "sentiment" else 0.1

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        return dataclass_from_dict(cls, d)


# --------------------------------------------------------------------------- decoding


@dataclass
class DecodeConfig:
    """How to turn a source into an output sequence (translate, summarize)."""

    beam: int = 1  # hypotheses kept per sentence; 1 = greedy search
    length_penalty: float = 0.6  # GNMT alpha: score = log P / ((5+|Y|)/6)^alpha; 0 = raw log P
    max_len_a: float = 1.2  # output limit = a * (real source length) + b, capped at model max_len
    max_len_b: int = 10  # the b of that limit
    min_len: int = 0  # EOS is blocked until this many tokens have been generated
    no_repeat_ngram: int = 0  # never repeat an n-gram of this size within an output; 0 = off
    sample: bool = False  # sample tokens instead of searching (needs beam == 1)
    top_k: int = 0  # sample only among the k most likely tokens; 0 = off
    top_p: float = 1.0  # sample only in the nucleus, the most likely tokens of mass top_p
    temperature: float = 1.0  # divides log-probabilities before sampling; < 1 is sharper
    seed: int = 0  # seed of the sampling generator (same seed, same output)

    def __post_init__(self) -> None:
        check_field_types(self)
        if self.beam < 1:
            raise ValueError(f"DecodeConfig.beam must be >= 1, got {self.beam}")
        for name in ("length_penalty", "max_len_a", "max_len_b", "min_len", "no_repeat_ngram",
                     "top_k"):
            if getattr(self, name) < 0:
                raise ValueError(f"DecodeConfig.{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"DecodeConfig.top_p must be in (0, 1], got {self.top_p}")
        if not self.temperature > 0.0 or math.isinf(self.temperature):
            raise ValueError(f"DecodeConfig.temperature must be > 0, got {self.temperature}")
        if self.sample and self.beam != 1:
            raise ValueError(f"DecodeConfig.sample needs beam == 1, got beam={self.beam}")


# The decoding of each generating task: what `attn translate|summarize`, `attn eval`, the server
# and validation during training (greedy there, with the same length rules and blocking) use.
DECODE_DEFAULTS: dict[str, DecodeConfig] = {
    "translate": DecodeConfig(beam=5, length_penalty=0.6, max_len_a=1.5, max_len_b=10),
    "summarize": DecodeConfig(beam=4, length_penalty=1.0, max_len_a=0.0, max_len_b=80, min_len=5,
                              no_repeat_ngram=3),
}


def task_decode_config(task: str, **changes) -> DecodeConfig:
    """The task's DECODE_DEFAULTS with ``changes`` (e.g. ``beam=1``; None values are ignored);
    a bad value is a ValueError naming the field."""
    return dataclasses.replace(DECODE_DEFAULTS[task], **{k: v for k, v in changes.items() if v is not None})


def describe_decoding(cfg: DecodeConfig) -> str:
    """One line for `attn info`: search, length penalty, limit, blocking."""
    search = f"beam {cfg.beam}" if cfg.beam > 1 else "greedy"
    limit = (f"{cfg.max_len_a:g} x source + {cfg.max_len_b}" if cfg.max_len_a else f"{cfg.max_len_b}")
    extra = (f", at least {cfg.min_len} tokens" if cfg.min_len else "") + \
        (f", no repeated {cfg.no_repeat_ngram}-grams" if cfg.no_repeat_ngram else "")
    return f"{search}, length penalty {cfg.length_penalty:g}, at most {limit} tokens{extra}"
