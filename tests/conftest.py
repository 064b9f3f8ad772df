"""Test setup: offline Hub, a private datasets cache, and small fixture writers."""

import atexit
import json
import os
import shutil
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
    """A training Reporter that shows nothing (tests call attn_cli.pipeline.train_run directly)."""

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
    from attn_cli.data import Fields
    from attn_cli.pipeline import RunRequest, train_run

    specs = {"translate": ("translate.it-en.jsonl", Fields(src_lang="it", tgt_lang="en")),
             "sentiment": ("sentiment.jsonl", Fields()), "summarize": ("summarize.jsonl", Fields())}
    for task, (name, fields) in specs.items():
        cfg = TrainConfig(task=task, preset="tiny", max_steps=30, eval_every=1000, eval_samples=2,
                          vocab_size=500, max_tokens=1000, warmup=10, lr=3e-3)
        train_run(RunRequest(data=f"{DATA_DIR}/{name}", out=root / task, fields=fields), cfg, Quiet())
    return root
