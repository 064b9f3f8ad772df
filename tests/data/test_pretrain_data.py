"""Unlabelled text for pretraining through the tokenized-data cache (DataRequest.text_only):
.txt lines and documents, task SPECs read without labels (sentiment text, both sides of a
parallel prefix, documents and summaries), validation splits and hold-outs, cache hits."""

import json

import numpy as np
import pytest
from conftest import DATA_DIR, write_jsonl

from attn_cli.data import cachebuild
from attn_cli.data import rundata
from attn_cli.data.rundata import DataRequest, load_run_data, load_stream_data
from attn_cli.data.spec import Fields
from attn_cli.data.store import InMemoryExamples
from attn_cli.data.tasks import load_task_data, texts_for_tokenizer
from attn_cli.data.text import load_text_dataset, looks_like_documents
from attn_cli.data.tokenizer import TokenizerConfig, train_tokenizers
from attn_cli.errors import DataError

IT_EN = f"{DATA_DIR}/translate.it-en.jsonl"
SUMMARIZE = f"{DATA_DIR}/summarize.jsonl"
TR = Fields(src_lang="it", tgt_lang="en")
WORDS = ["dog", "cat", "house", "river", "green", "runs", "sleeps", "old", "small", "tree"]


@pytest.fixture(scope="module")
def toks():
    data = load_task_data(IT_EN, "translate", TR, need_valid=False)
    return train_tokenizers(data.train, ["src"], ["tgt"], TokenizerConfig(vocab_size=400))


def load(spec, toks, cache, task="sentiment", fields=None, train_tokenizer=None, **kw):
    notes = []
    req = DataRequest(spec=str(spec), task=task, fields=fields or Fields(), cache=cache, text_only=True, **kw)
    data, _ = load_run_data(req, toks, train_tokenizer, notes.append)
    return data, notes + data.notes  # (shown while loading, shown after)


def words(text):
    return " ".join(text.split())


def train_texts(data, toks):
    return [words(toks.src.decode(ids)) for ids in data.train.gather(range(len(data.train)))]


def sentences(n, seed=0):
    rng = np.random.default_rng(seed)
    return [f"line {i} the {' '.join(rng.choice(WORDS, 4))}" for i in range(n)]


def test_txt_lines_are_rows_of_ids(tmp_path, toks):
    lines = sentences(30)
    path = tmp_path / "reviews.txt"
    path.write_text("\n\n".join(lines) + "\n", encoding="utf-8")
    assert not looks_like_documents(path)  # blank lines, but they separate single lines
    data, notes = load(path, toks, tmp_path / "c")
    rows = data.train.gather(range(len(data.train)))
    assert data.train.text_only and all(isinstance(r, list) and isinstance(r[0], int) for r in rows)
    assert train_texts(data, toks) == lines
    assert data.train.lengths.tolist() == [len(r) for r in rows]  # masked LM: no extra slot
    assert data.label_names is None and data.refs == []
    assert len(data.valid) == 30 and all(v in rows for v in data.valid)  # tiny data: reused
    assert any("reused" in n for n in notes), notes


def test_document_detection(tmp_path):
    cases = {"a\nb\n\nc\nd\n": True, "a\n\nb\n\nc\n": False, "a\nb\nc\n\n\n": False,
             "\n".join(["x"] * 300 + [""] + ["y"] * 300): False,  # a stray blank line in a long file
             "\n\n".join(["\n".join(["x"] * 100)] * 5): True}
    for k, (text, documents) in enumerate(cases.items()):
        (tmp_path / f"{k}.txt").write_text(text, encoding="utf-8")
        assert looks_like_documents(tmp_path / f"{k}.txt") == documents, text[:20]


def test_txt_documents_detected_and_cut_for_denoising(tmp_path, toks):
    docs = [sentences(3, seed=k) for k in range(12)]
    path = tmp_path / "docs.txt"
    path.write_text("\n\n".join("\n".join(d) for d in docs) + "\n", encoding="utf-8")
    assert looks_like_documents(path)
    data, notes = load(path, toks, tmp_path / "c", task="summarize", max_len=400)
    assert any("one document per blank-line-separated block" in n for n in notes), notes
    assert train_texts(data, toks) == [words(" ".join(d)) for d in docs]
    rows = data.train.gather(range(len(data.train)))
    assert data.train.lengths.tolist() == [len(r) + 1 for r in rows]  # denoising: + EOS
    assert InMemoryExamples(rows, True, text_cost=1).lengths.tolist() == data.train.lengths.tolist()
    lines, _ = load(path, toks, tmp_path / "c", task="summarize", documents=False, max_len=8)
    assert len(lines.train) == 36  # a separate cache entry, read by lines
    assert max(len(r) for r in lines.train.gather(range(36))) == 7  # max_len - 1
    assert int(lines.train.lengths.max()) == 8 and lines.truncated > 0
    ds, _ = load_text_dataset(str(path), "summarize")  # read through datasets, not streamed
    assert ds.column_names == ["text"] and texts_for_tokenizer(ds, "summarize") == (["text"], [])
    assert [words(t) for t in ds["text"]] == train_texts(data, toks)


def test_sentiment_jsonl_without_labels(tmp_path, toks):
    lines = sentences(20)
    rows = [{"text": t} for t in lines[:10]] + [{"text": t, "label": None} for t in lines[10:]]
    rows.insert(3, {"text": "   "})
    path = write_jsonl(tmp_path / "unlabelled.jsonl", rows)
    data, _ = load(path, toks, tmp_path / "c")
    assert train_texts(data, toks) == lines


def test_parallel_prefix_gives_both_sides(tmp_path, toks):
    pairs = [json.loads(line) for line in open(IT_EN, encoding="utf-8")][:40]
    for lang in ("it", "en"):
        (tmp_path / f"train.{lang}").write_text("".join(p[lang] + "\n" for p in pairs), encoding="utf-8")
    data, notes = load(tmp_path / "train", toks, tmp_path / "c", task="translate", fields=TR)
    expected = [words(toks.src.decode(toks.src.encode(p[lang]))) for p in pairs for lang in ("it", "en")]
    assert train_texts(data, toks) == expected  # each pair's sides side by side
    assert not any("'validation' split" in n for n in notes), notes  # a prefix has no other split
    assert len(data.valid) == 80


def test_parallel_prefix_built_in_a_child_process(tmp_path, toks, monkeypatch):
    pairs = [json.loads(line) for line in open(IT_EN, encoding="utf-8")][:20]
    for lang in ("it", "en"):
        (tmp_path / f"train.{lang}").write_text("".join(p[lang] + "\n" for p in pairs), encoding="utf-8")
    here, _ = load(tmp_path / "train", toks, tmp_path / "a", task="translate", fields=TR)
    monkeypatch.setattr(rundata, "CHILD_MIN_BYTES", 0)
    calls = []
    real = cachebuild.build_in_child
    monkeypatch.setattr(rundata, "build_in_child", lambda *a, **k: calls.append(1) or real(*a, **k))
    child, _ = load(tmp_path / "train", toks, tmp_path / "b", task="translate", fields=TR)
    assert calls and child.train.text_only
    assert child.train.gather(range(40)) == here.train.gather(range(40))
    assert child.train.lengths.tolist() == here.train.lengths.tolist()


def test_summarize_documents_and_summaries(tmp_path, toks):
    rows = [json.loads(line) for line in open(SUMMARIZE, encoding="utf-8")]
    data, _ = load(SUMMARIZE, toks, tmp_path / "c", task="summarize", max_len=2048)
    texts = train_texts(data, toks)
    assert len(texts) == 2 * len(rows)
    assert texts[0] == words(toks.src.decode(toks.src.encode(rows[0]["document"])))
    assert texts[1] == words(toks.src.decode(toks.src.encode(rows[0]["summary"])))
    only_docs = write_jsonl(tmp_path / "docs.jsonl", [{"dialogue": r["document"]} for r in rows])
    assert len(load(only_docs, toks, tmp_path / "c", task="summarize", max_len=2048)[0].train) == len(rows)


def test_second_load_is_a_cache_hit_apart_from_labelled_entries(tmp_path, toks):
    path = write_jsonl(tmp_path / "s.jsonl", [{"text": t, "label": i % 2} for i, t in enumerate(sentences(40))])
    first, notes = load(path, toks, tmp_path / "c")
    assert any(n.startswith("tokenizing") for n in notes), notes
    labelled = []
    load_run_data(DataRequest(spec=str(path), task="sentiment", cache=tmp_path / "c"), toks, None,
                  labelled.append)
    assert any(n.startswith("tokenizing") for n in labelled), labelled  # not the text entry
    second, notes = load(path, toks, tmp_path / "c")
    assert any(n.startswith("tokenized data: cached (40 examples") for n in notes), notes
    assert second.train.gather(range(40)) == first.train.gather(range(40)) and second.valid == first.valid


def test_holdout_is_disjoint_and_the_tokenizer_sees_train_only(tmp_path, toks):
    lines = sentences(1200)
    path = tmp_path / "big.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    seen = []

    def train_tokenizer(ds):
        seen.append(ds)
        return toks

    data, notes = load(path, None, tmp_path / "c", task="translate", train_tokenizer=train_tokenizer, seed=3)
    assert any("held out 12 examples" in n for n in notes), notes
    train = train_texts(data, toks)
    valid = [words(toks.src.decode(ids)) for ids in data.valid]
    assert len(valid) == 12 and not set(valid) & set(train) and sorted(train + valid) == sorted(lines)
    (ds,) = seen
    assert ds.column_names == ["text"] and ds["text"] == train  # same rows, same order
    assert texts_for_tokenizer(ds, "translate") == (["text"], [])


def test_validation_split_and_valid_spec(tmp_path, toks):
    write_jsonl(tmp_path / "d" / "train.jsonl", [{"review": t} for t in sentences(30)])
    write_jsonl(tmp_path / "d" / "validation.jsonl", [{"review": t, "label": "pos"} for t in sentences(5, 9)])
    fields = Fields(text_field="review")
    data, notes = load(tmp_path / "d", toks, tmp_path / "c", fields=fields)
    assert len(data.train) == 30 and len(data.valid) == 5
    assert any("'validation' split" in n for n in notes), notes
    other = tmp_path / "dev.txt"
    other.write_text("one more line\nand another\n", encoding="utf-8")
    data, _ = load(tmp_path / "d", toks, tmp_path / "c", fields=fields, valid_spec=str(other))
    assert [words(toks.src.decode(v)) for v in data.valid] == ["one more line", "and another"]


def test_text_errors(tmp_path, toks):
    path = write_jsonl(tmp_path / "x.jsonl", [{"de": "Hallo", "en": "Hello"}])
    with pytest.raises(DataError, match="--src and --tgt"):
        load(path, toks, tmp_path / "c", task="translate")
    empty = write_jsonl(tmp_path / "e.jsonl", [{"text": " "}, {"text": ""}])
    with pytest.raises(DataError, match="no usable examples|no text"):
        load(empty, toks, tmp_path / "c")


def test_streamed_text_rows(tmp_path, toks):
    lines = sentences(50)
    path = tmp_path / "t.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    (tmp_path / "v.txt").write_text("\n".join(sentences(4, 1)) + "\n", encoding="utf-8")

    class Cfg:
        max_tokens, shuffle_buffer, seed, epochs, concat = 200, 16, 1, None, 0.0

    req = DataRequest(spec=str(path), task="translate", cache=tmp_path / "c", text_only=True,
                      valid_spec=str(tmp_path / "v.txt"), max_len=6)
    data, _ = load_stream_data(req, toks, Cfg, lambda _: None)
    rows = [r for _, _, batch in data.train.batches(0) for r in batch]
    assert sorted(words(toks.src.decode(r)) for r in rows) == sorted(
        words(toks.src.decode(toks.src.encode(t)[:5])) for t in lines)
    assert len(data.valid) == 4 and all(isinstance(v, list) for v in data.valid)
