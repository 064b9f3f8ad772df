"""What an inference engine is: the same ``generate`` / ``classify`` over torch or CTranslate2.

``Engine`` is the interface the commands and the server use; ``EngineOptions`` says which engine
to run, on what device, in which precision, with how many threads (``engines.open_engine``
picks the engine; ``engines.TorchEngine`` and ``ct2.CT2Engine`` implement it). Every engine
returns what ``predict.generate`` / ``predict.classify`` return, in input order: ``(output ids,
score)`` per input (score = log P(Y) / GNMT lp(Y), EOS counted) and class probabilities per input.

The CLI imports this module at start-up (for the option defaults and choices): it imports
neither torch, numpy, sentencepiece nor ctranslate2.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from attn_cli.errors import AttnError

if TYPE_CHECKING:  # the CLI imports this module at start-up: torch and numpy load when used
    from attn_cli.config import ModelConfig
    from attn_cli.data.tokenizer import Tokenizers
    from attn_cli.infer.decoding import DecodeConfig

ENGINES = ("auto", "torch", "ctranslate2")
COMPUTE_TYPES = ("auto", "int8", "int8_float16", "float16", "float32")
GPU_ONLY = ("float16", "int8_float16")
# CPU threads: 0 = auto. Measured on a quiet 2-core CPU (docs/benchmarks-speed.md, "Threads"):
# torch decodes 1.37x faster with its default (one intra-op thread per core) than with 1, while
# CTranslate2 with 2 intra-op threads is slower than with 1; it gains instead from running
# batches side by side, one per core (``inter_threads``): 1.63x on 1,000 sentences.
DEFAULT_THREADS = 0

OnBatch = Callable[[int], None] | None


@dataclass
class EngineOptions:
    """How to run a model: which engine, on what device, in which precision, with how many threads."""

    engine: str = "auto"  # auto | torch | ctranslate2
    compute_type: str = "auto"  # CTranslate2 compute type; auto = the exported weights' own
    threads: int = DEFAULT_THREADS  # intra-op threads; 0 = auto (torch's default; ct2.ct2_threads)
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
