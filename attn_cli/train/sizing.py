"""--preset auto: the model a budget can train well, from the data's size, the budget and the
machine's measured speed. Pure: the speed comes in as a :class:`Speed` (measured by
``attn_cli.train.probe``), so the rule is tested on synthetic inputs.

The rule (docs/sizing.md):

1. **Compute-optimal size** (Hoffmann et al. 2022, "Chinchilla"): the largest model on the
   ladder that the budget can show at least ``TOKENS_PER_PARAM`` (20) training tokens per
   parameter.
2. **The data is the limit** (Muennighoff et al. 2023: repeated data loses value after about 4
   epochs): when that model would see the data more than ``EPOCH_CAP`` times, the surplus goes
   into parameters: the largest model that still sees the data at least ``EPOCH_CAP`` times.
3. **A guard for tiny data**: never more than ``MAX_PARAMS_PER_TOKEN`` parameters per training
   token (10 examples get the smallest model, with a note).

The ladder grows width first, then depth, about 1.5-2x in training compute a rung (shape matters
little next to size, Kaplan et al. 2020); it runs from a 1-layer d=64 model to the ``base`` shape.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from attn_cli.errors import AttnError

TOKENS_PER_PARAM = 20.0  # compute-optimal training tokens per parameter (Hoffmann et al. 2022)
EPOCH_CAP = 4.0  # epochs worth repeating (Muennighoff et al. 2023); beyond, grow the model
MAX_PARAMS_PER_TOKEN = 10.0  # at most this many parameters per training token (tiny data)
FILL = 0.85  # real tokens per padded slot when the epoch's batch plan is unknown
EVAL_SHARE = 0.05  # share of a time budget assumed spent in the ~10 evaluations
# A training step costs more than the probe's bare step (the batches collated in a thread beside
# it on the same cores, clipping, logging): measured at 1.22x (IMDB) and 1.35x (SST-2) on the
# 2-core CPU (benchmarks/budget.py, docs/sizing.md)
LOOP_OVERHEAD = 1.25
MIN_STEPS = 50  # a time budget that buys fewer optimizer steps than this is refused


@dataclass(frozen=True)
class Shape:
    """A model shape: width, heads, layers per stack, feed-forward width."""

    d_model: int
    n_heads: int
    n_layers: int
    d_ff: int

    def dims(self, task: str) -> dict[str, int]:
        """The ModelConfig fields of this shape (sentiment: no decoder)."""
        return {"d_model": self.d_model, "n_heads": self.n_heads, "n_enc_layers": self.n_layers,
                "n_dec_layers": 0 if task == "sentiment" else self.n_layers, "d_ff": self.d_ff}

    def describe(self, task: str) -> str:
        plural = "" if self.n_layers == 1 and task == "sentiment" else "s"
        layers = f"{self.n_layers} layer{plural}" if task == "sentiment" else f"{self.n_layers}+{self.n_layers} layers"
        return f"d={self.d_model}, {layers}, ff {self.d_ff}, {self.n_heads} heads"


LADDER: tuple[Shape, ...] = (
    Shape(64, 4, 1, 256), Shape(64, 4, 2, 256), Shape(96, 4, 2, 384), Shape(128, 4, 2, 512),
    Shape(128, 4, 3, 512), Shape(192, 4, 3, 768), Shape(256, 4, 3, 1024), Shape(256, 4, 4, 1024),
    Shape(384, 6, 4, 1536), Shape(384, 6, 6, 1536), Shape(512, 8, 6, 2048),
)


@dataclass(frozen=True)
class DataSize:
    """What the rule needs of the training data."""

    task: str
    epoch_tokens: int | None  # padded cost of one epoch (sum of lengths.npy); None = unknown (--stream)
    length: float  # typical (median) example cost in tokens, per side
    vocab: int  # source (or joint) vocabulary
    tgt_vocab: int | None = None  # a separate target vocabulary
    epoch_steps: int | None = None  # optimizer steps of one epoch (the batch plan's length); None = from FILL

    @property
    def sides(self) -> int:
        return 1 if self.task == "sentiment" else 2


@dataclass(frozen=True)
class Speed:
    """Seconds per training step as (a + b x FLOPs) x LOOP_OVERHEAD (a, b fitted on two probed
    shapes)."""

    overhead_s: float  # a: seconds a step costs whatever its size
    s_per_flop: float  # b

    def step_seconds(self, flops: float) -> float:
        return (self.overhead_s + self.s_per_flop * flops) * LOOP_OVERHEAD


@dataclass(frozen=True)
class Budget:
    """--time-budget (seconds), --max-steps or --epochs, and the batch size."""

    max_tokens: int
    seconds: float | None = None
    steps: int | None = None
    epochs: int | None = None


@dataclass(frozen=True)
class Option:
    """One rung of the ladder under the budget."""

    shape: Shape
    params: int
    steps: int  # optimizer steps the budget buys
    tokens: float  # real tokens (both sides) those steps train on
    epochs: float | None  # passes over the data (None: size unknown)


@dataclass(frozen=True)
class Choice:
    option: Option
    why: str  # the reason, for the note and config.json

    def line(self, task: str) -> str:
        o = self.option
        epochs = f", {o.epochs:.1f} epochs" if o.epochs is not None else ""
        return (f"auto: {o.shape.describe(task)}, {o.params / 1e6:.2f}M parameters: ~{o.tokens / 1e6:.1f}M "
                f"tokens fit the budget ({o.steps:,} steps{epochs}); {self.why}")

    def to_dict(self) -> dict:
        o = self.option
        return {"d_model": o.shape.d_model, "n_heads": o.shape.n_heads, "n_layers": o.shape.n_layers,
                "d_ff": o.shape.d_ff, "parameters": o.params, "steps": o.steps, "tokens": round(o.tokens),
                "epochs": None if o.epochs is None else round(o.epochs, 2), "why": self.why}


def parameters(shape: Shape, size: DataSize) -> int:
    """Weights of ``shape`` on this data: embeddings (tied output) and the layers' matrices."""
    d, f, n = shape.d_model, shape.d_ff, shape.n_layers
    embed = size.vocab * d + (size.tgt_vocab * d if size.tgt_vocab else 0)
    enc = n * (4 * d * d + 2 * d * f)
    dec = 0 if size.task == "sentiment" else n * (8 * d * d + 2 * d * f)
    return embed + enc + dec


def step_flops(shape: Shape, size: DataSize, max_tokens: int) -> float:
    """Training FLOPs (forward + backward, 3x forward) of a full batch of typical examples."""
    d, f, n, s = shape.d_model, shape.d_ff, shape.n_layers, max(size.length, 1.0)
    rows = max_tokens / s
    enc = 2 * s * (4 * d * d + 2 * d * f) + 4 * s * s * d  # per example and layer: matmuls, attention
    fwd = n * enc
    if size.task != "sentiment":
        dec = 2 * s * (6 * d * d + 2 * d * f) + 2 * s * 2 * d * d + 8 * s * s * d  # self, cross, ffn
        fwd += n * dec + 2 * s * d * (size.tgt_vocab or size.vocab)  # + the output projection
    return 3 * rows * fwd


def options(size: DataSize, budget: Budget, speed: Speed | None) -> list[Option]:
    """Every rung of the ladder with the steps, tokens and epochs the budget buys it."""
    per_step = budget.max_tokens * FILL
    if size.epoch_steps and size.epoch_tokens:
        per_step = size.epoch_tokens / size.epoch_steps
    out = []
    for shape in LADDER:
        if budget.steps is not None:
            steps = budget.steps
        elif budget.seconds is not None and speed is not None:
            seconds = speed.step_seconds(step_flops(shape, size, budget.max_tokens))
            steps = int(budget.seconds * (1 - EVAL_SHARE) / seconds)
        else:  # --epochs
            steps = int((budget.epochs or 1) * (size.epoch_tokens or 0) / per_step)
        epochs = steps * per_step / size.epoch_tokens if size.epoch_tokens else None
        out.append(Option(shape, parameters(shape, size), steps, steps * per_step * size.sides, epochs))
    return out


def minimum_seconds(size: DataSize, budget: Budget, speed: Speed) -> float:
    """The shortest time budget the smallest model can train in (MIN_STEPS steps)."""
    return MIN_STEPS * speed.step_seconds(step_flops(LADDER[0], size, budget.max_tokens)) / (1 - EVAL_SHARE)


def choose(size: DataSize, budget: Budget, speed: Speed | None = None) -> Choice:
    """The rule of this module's docstring; raises AttnError when a time budget is too short."""
    opts = options(size, budget, speed)
    if budget.steps is None and budget.seconds is not None and opts[0].steps < MIN_STEPS:
        need = minimum_seconds(size, budget, speed)
        need = math.ceil(need)
        raise AttnError(f"--time-budget {budget.seconds:g}s is too short for even the smallest model on this "
                        f"machine ({opts[0].steps} steps; it needs about {need} s for {MIN_STEPS})",
                        f"give at least --time-budget {need}s, or --preset tiny with --max-steps")
    if size.epoch_tokens is not None and opts[0].params > MAX_PARAMS_PER_TOKEN * size.epoch_tokens:
        return Choice(opts[0], f"the data is very small ({size.epoch_tokens:,} tokens): the smallest model")
    fits = [o for o in opts if size.epoch_tokens is None or o.params <= MAX_PARAMS_PER_TOKEN * size.epoch_tokens]
    fits = [o for o in fits if o.steps >= MIN_STEPS] or fits[:1]
    optimal = [o for o in fits if o.tokens >= TOKENS_PER_PARAM * o.params]
    best = optimal[-1] if optimal else fits[0]
    why = f"the largest with {TOKENS_PER_PARAM:g} tokens per parameter (compute-optimal)"
    if not optimal:
        why = f"the smallest; the budget gives it {best.tokens / best.params:.1f} tokens per parameter"
    if best.epochs is not None and best.epochs > EPOCH_CAP:
        bigger = [o for o in fits if o.params >= best.params and o.epochs is not None and o.epochs >= EPOCH_CAP]
        if bigger and bigger[-1] is not best:
            best = bigger[-1]
            why = (f"the data is the limit: the largest model that still sees it {EPOCH_CAP:g} times "
                   f"(more epochs than that add little)")
        else:
            why += f"; it sees the data {best.epochs:.0f} times"
    return Choice(best, why)
