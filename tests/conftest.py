"""Test setup: offline Hub, a private datasets cache, and small fixture writers."""

import atexit
import json
import os
import random
import shutil
import sys
import tempfile


def _session_dir(prefix: str) -> str:
    """A temporary directory for this test session, removed when it ends."""
    path = tempfile.mkdtemp(prefix=prefix)
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


# Before anything imports `datasets`: never touch the network, never share the user's cache.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
if "HF_DATASETS_CACHE" not in os.environ:
    os.environ["HF_DATASETS_CACHE"] = _session_dir("attn-test-hf-")
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ["ATTN_CACHE"] = _session_dir("attn-test-cache-")  # never the user's cache

import pytest  # noqa: E402

DATA_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data")


class Quiet:
    """A training Reporter that shows nothing (tests call attn_cli.train.setup.train_run directly)."""

    def step(self, stats):
        pass

    def evaluated(self, metrics, is_best):
        pass

    def note(self, message):
        pass


def write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    return path


@pytest.fixture
def pairs():
    """Twenty small German/English pairs."""
    nouns = ["Hund", "Katze", "Mann", "Frau", "Kind"]
    eng = ["dog", "cat", "man", "woman", "child"]
    verbs = [("läuft", "runs"), ("schläft", "sleeps"), ("spielt", "plays"), ("isst", "eats")]
    return [{"de": f"Der {n} {v}.", "en": f"The {e} {w}."}
            for n, e in zip(nouns, eng, strict=True) for v, w in verbs]


def train_tiny_runs(root):
    """translate/, sentiment/ and summarize/ under ``root``: tiny models, 30 steps each on the
    shipped samples (what they say matters little; they are real runs). Returns ``root``."""
    from attn_cli.config import TrainConfig
    from attn_cli.data.spec import Fields
    from attn_cli.train.setup import RunRequest, train_run

    specs = {"translate": ("translate.it-en.jsonl", Fields(src_lang="it", tgt_lang="en")),
             "sentiment": ("sentiment.jsonl", Fields()), "summarize": ("summarize.jsonl", Fields())}
    for task, (name, fields) in specs.items():
        cfg = TrainConfig(task=task, preset="tiny", max_steps=30, eval_every=1000, eval_samples=2,
                          vocab_size=500, max_tokens=1000, warmup=10, lr=3e-3)
        train_run(RunRequest(data=f"{DATA_DIR}/{name}", out=root / task, fields=fields), cfg, Quiet())
    return root


def cli(*args, input=None):
    """``attn ARGS`` through Typer's CliRunner (in-process)."""
    from typer.testing import CliRunner

    from attn_cli.cli.main import app

    return CliRunner().invoke(app, [str(a) for a in args], input=input)


def one_line_error(r, fragment, code=2):
    """The command failed with exit ``code`` and one ``Error: ...`` line naming ``fragment``."""
    assert r.exit_code == code, r.output
    assert r.stderr.startswith("Error: ") and r.stderr.count("\n") == 1 and fragment in r.stderr, r.stderr


def weights(path):
    from safetensors.torch import load_file

    return load_file(str(path))


def assert_same_weights(a, b, f="last/model.safetensors"):
    import torch

    wa, wb = weights(a / f), weights(b / f)
    for name in wa:
        torch.testing.assert_close(wa[name], wb[name], atol=1e-6, rtol=0)


def train_cmd(out, *extra, task="translate"):
    """``python -m attn_cli train`` on the shipped samples with a tiny model."""
    data = (["--data", f"{DATA_DIR}/translate.it-en.jsonl", "--src", "it", "--tgt", "en"] if task == "translate"
            else ["--data", f"{DATA_DIR}/sentiment.jsonl"])
    return [sys.executable, "-m", "attn_cli", "train", task, *data, "--out", str(out),
            "--preset", "tiny", "--vocab-size", "500", "--max-tokens", "600", "--warmup", "5",
            "--eval-samples", "3", *extra]


def torchrun_cmd(out, *extra, task="translate"):
    """:func:`train_cmd` as two gloo processes under torchrun."""
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
            str(random.randint(20000, 40000)), "-m", "attn_cli"] + train_cmd(out, *extra, task=task)[3:]
