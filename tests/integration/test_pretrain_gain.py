"""benchmarks/pretrain_gain.py writes pretraining text that `attn pretrain` reads as one text per
review (--lines) or one per dialogue and per summary (--documents), from the train split only."""

import gzip
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import pretrain_gain  # noqa: E402

from attn_cli.data.text import load_text_dataset


def _jsonl(path: Path, rows: list[dict]) -> None:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "wt", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in rows)


def test_dialogsum_text_is_one_document_per_dialogue_and_summary(tmp_path):
    root = tmp_path / "data"
    (root / "summarization" / "dialogsum").mkdir(parents=True)
    _jsonl(root / "summarization" / "dialogsum" / "train.jsonl",
           [{"dialogue": "#Person1#: Hi.\n#Person2#:  Hello  there.", "summary": "They greet."},
            {"dialogue": "#Person1#: Bye.\n\n#Person2#: Bye.", "summary": "Two\nlines."}])
    _jsonl(root / "summarization" / "dialogsum" / "test.jsonl", [{"dialogue": "TEST", "summary": "TEST"}])
    out = tmp_path / "out"
    out.mkdir()
    path = pretrain_gain.write_text(pretrain_gain.SETUPS["dialogsum"], root, out)
    ds, _ = load_text_dataset(str(path), "summarize", documents=True)
    assert ds["text"][:] == ["#Person1#: Hi.\n#Person2#: Hello there.", "They greet.",
                             "#Person1#: Bye.\n#Person2#: Bye.", "Two\nlines."]


def test_imdb_text_is_one_review_per_line(tmp_path):
    root = tmp_path / "data"
    (root / "sentiment" / "imdb").mkdir(parents=True)
    _jsonl(root / "sentiment" / "imdb" / "train.jsonl.gz",
           [{"text": "Good.<br /><br />Very\ngood.", "label": 1}, {"text": "Bad.", "label": 0}])
    _jsonl(root / "sentiment" / "imdb" / "test.jsonl.gz", [{"text": "TEST", "label": 0}])
    out = tmp_path / "out"
    out.mkdir()
    path = pretrain_gain.write_text(pretrain_gain.SETUPS["imdb"], root, out)
    ds, _ = load_text_dataset(str(path), "sentiment", documents=False)
    assert ds["text"][:] == ["Good.<br /><br />Very good.", "Bad."]
