"""The tokenized-data cache: hits, misses, invalidation, damage, interrupted and concurrent
builds, and batch plans from a numpy lengths array."""

import errno
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import DATA_DIR, write_jsonl
from typer.testing import CliRunner

from attn_cli.cli.main import app
from attn_cli.data import cachebuild
from attn_cli.data import store as datastore
from attn_cli.data.batching import plan_batches
from attn_cli.data.rundata import DataRequest, load_run_data
from attn_cli.data.spec import Fields
from attn_cli.data.tasks import encode_examples, load_task_data
from attn_cli.data.tokenizer import TokenizerConfig, train_tokenizers
from attn_cli.errors import AttnError, RunFailure

IT_EN = f"{DATA_DIR}/translate.it-en.jsonl"
SENTIMENT = f"{DATA_DIR}/sentiment.jsonl"
TR = Fields(src_lang="it", tgt_lang="en")


@pytest.fixture(scope="module")
def toks():
    data = load_task_data(IT_EN, "translate", TR, need_valid=False)
    return train_tokenizers(data.train, ["src"], ["tgt"], TokenizerConfig(vocab_size=400))


@pytest.fixture
def corpus(tmp_path):
    rows = [json.loads(line) for line in open(IT_EN, encoding="utf-8")]
    return write_jsonl(tmp_path / "corpus.jsonl", rows), rows


def load(spec, toks, cache, task="translate", fields=TR, **kw):
    notes = []
    data, _ = load_run_data(DataRequest(spec=str(spec), task=task, fields=fields, cache=cache, **kw),
                            toks, None, notes.append)
    return data, notes


def all_examples(data):
    return data.train.gather(range(len(data.train))) + data.valid


def test_miss_then_hit_gives_the_in_memory_tokenization(tmp_path, corpus, toks):
    path, rows = corpus
    first, notes = load(path, toks, tmp_path / "c")
    assert any(n.startswith(f"tokenizing {len(rows):,} rows") for n in notes), notes
    second, notes = load(path, toks, tmp_path / "c")
    assert any(n.startswith(f"tokenized data: cached ({len(rows):,} examples") for n in notes), notes
    assert all_examples(first) == all_examples(second)
    expected, _ = encode_examples(load_task_data(str(path), "translate", TR, need_valid=False).train,
                                  "translate", toks, 256)
    train = second.train.gather(range(len(second.train)))
    assert sorted(map(repr, train)) == sorted(map(repr, expected))
    assert len(second.valid) == 200 and all(ex in train for ex in second.valid)  # small data: reused
    assert second.train.lengths.dtype == np.uint16  # only lengths live in RAM, 2 bytes a row


def test_appended_line_is_seen_and_retokenized(tmp_path, corpus, toks):
    path, rows = corpus
    load(path, toks, tmp_path / "c")
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"it": "Una riga nuova.", "en": "A new line."}) + "\n")
    data, notes = load(path, toks, tmp_path / "c")
    assert any("changed since it was tokenized" in n for n in notes), notes
    assert len(data.train) == len(rows) + 1


def test_same_size_edit_with_the_old_mtime_is_seen(tmp_path, corpus, toks):
    path, _ = corpus
    load(path, toks, tmp_path / "c")
    st = path.stat()
    text = path.read_text(encoding="utf-8")
    edited = text.replace('"Ciao', '"Ciaz', 1)
    assert edited != text and len(edited.encode()) == len(text.encode())
    path.write_text(edited, encoding="utf-8")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # size and mtime as before
    data, notes = load(path, toks, tmp_path / "c")
    assert any("changed since it was tokenized" in n for n in notes), notes
    first_src = toks.src.encode(json.loads(edited.splitlines()[0])["it"])
    assert first_src in [list(s) for s, _ in all_examples(data)]


@pytest.mark.parametrize("victim", ["src.bin", "tgt.idx.npy", "lengths.npy", "meta.json"])
def test_truncated_or_corrupt_entry_is_rebuilt(tmp_path, corpus, toks, victim):
    path, _ = corpus
    good = all_examples(load(path, toks, tmp_path / "c")[0])
    (entry,) = [d for d in (tmp_path / "c/tokenized").iterdir() if d.is_dir()]
    f = entry / victim
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])  # cut it
    data, notes = load(path, toks, tmp_path / "c")
    assert any("damaged" in n and "rebuilding" in n for n in notes), notes
    assert all_examples(data) == good


def test_a_file_cut_under_an_open_store_is_a_clear_error_not_wrong_ids(tmp_path, corpus, toks):
    path, _ = corpus
    data, _ = load(path, toks, tmp_path / "c")
    (entry,) = [d for d in (tmp_path / "c/tokenized").iterdir() if d.is_dir()]
    with open(entry / "tgt.bin", "r+b") as fh:  # cut in place: the open store still reads this file
        fh.truncate(10)
    with pytest.raises(RunFailure, match="were cut while training read them"):
        data.train.gather(range(len(data.train)))


def test_flipped_bytes_of_the_same_size_are_found(tmp_path, corpus, toks):
    path, _ = corpus
    good = all_examples(load(path, toks, tmp_path / "c")[0])
    (entry,) = [d for d in (tmp_path / "c/tokenized").iterdir() if d.is_dir()]
    raw = bytearray((entry / "src.bin").read_bytes())
    raw[10:14] = b"\xff\xff\xff\xff"
    (entry / "src.bin").write_bytes(bytes(raw))
    data, notes = load(path, toks, tmp_path / "c")
    assert any("does not match its digest" in n for n in notes), notes
    assert all_examples(data) == good


@pytest.mark.parametrize("failure", [KeyboardInterrupt(), OSError(errno.ENOSPC, "No space left on device")])
def test_interrupted_or_disk_full_build_leaves_nothing(tmp_path, corpus, toks, monkeypatch, failure):
    path, _ = corpus
    real = np.save

    def failing_save(file, arr, *a, **k):
        real(file, arr, *a, **k)
        raise failure

    monkeypatch.setattr(cachebuild.np, "save", failing_save)
    with pytest.raises(type(failure) if isinstance(failure, KeyboardInterrupt) else RunFailure) as e:
        load(path, toks, tmp_path / "c")
    if isinstance(failure, OSError):
        assert "no space left on device" in e.value.message and "partial cache was removed" in e.value.message
    left = [p.name for p in (tmp_path / "c/tokenized").iterdir() if not p.name.endswith(".lock")]
    assert left == []  # no entry and no temporary directory
    monkeypatch.setattr(cachebuild.np, "save", real)
    _, notes = load(path, toks, tmp_path / "c")
    assert any(n.startswith("tokenizing") for n in notes)


def test_unwritable_cache_directory_is_a_clear_error(tmp_path, corpus, toks):
    path, _ = corpus
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(AttnError) as e:
        load(path, toks, blocker / "cache")
    assert str(blocker) in e.value.message and "--data-cache" in e.value.hint


def test_two_processes_building_at_once_build_once(tmp_path, corpus, toks):
    path, _ = corpus
    (tmp_path / "tok").mkdir()
    toks.save(tmp_path / "tok")
    code = ("import sys; from attn_cli.data.rundata import DataRequest, load_run_data; "
            "from attn_cli.data.spec import Fields; from attn_cli.data.tokenizer import Tokenizers; "
            "d, _ = load_run_data(DataRequest(spec=sys.argv[1], task='translate', "
            "fields=Fields(src_lang='it', tgt_lang='en'), cache=sys.argv[2]), "
            "Tokenizers.load(sys.argv[3]), None, print); print('rows', len(d.train) + len(d.valid))")
    args = [sys.executable, "-c", code, str(path), str(tmp_path / "c"), str(tmp_path / "tok")]
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    text = "".join(o for o, _ in outs)
    assert text.count("tokenizing ") == 1 and text.count("tokenized data: cached") == 1, text
    assert len({line for line in text.splitlines() if line.startswith("rows")}) == 1


def test_sentiment_labels_and_validation_entries(tmp_path, toks):
    rows = [{"text": f"review number {i} was {'good' if i % 3 else 'bad'}",
             "label": "pos" if i % 3 else "neg"} for i in range(60)]
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    valid = write_jsonl(tmp_path / "valid.jsonl", rows[:9])
    for _ in range(2):
        data, notes = load(train, toks, tmp_path / "c", task="sentiment", fields=Fields(),
                           valid_spec=str(valid))
    assert sum("cached" in n for n in notes) == 2  # train and validation entries both hit
    assert data.label_names == ["neg", "pos"]
    assert [y for _, y in data.valid] == [1 if i % 3 else 0 for i in range(9)]


def test_seq2seq_validation_entry_keeps_reference_texts(tmp_path, corpus, toks):
    path, rows = corpus
    valid = write_jsonl(tmp_path / "valid.jsonl", rows[:5])
    for _ in range(2):
        data, _ = load(path, toks, tmp_path / "c", valid_spec=str(valid))
    assert data.refs == [r["en"] for r in rows[:5]]
    assert len(data.train) == len(rows)


def test_cache_location_and_commands(tmp_path, corpus, toks, monkeypatch):
    path, _ = corpus
    monkeypatch.setenv("ATTN_CACHE", str(tmp_path / "env"))
    assert datastore.default_root(None) == tmp_path / "env"
    assert datastore.default_root(tmp_path / "opt") == tmp_path / "opt"
    monkeypatch.delenv("ATTN_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert datastore.default_root(None) == tmp_path / "xdg" / "attn"
    load(path, toks, tmp_path / "c")
    runner = CliRunner()
    r = runner.invoke(app, ["cache", "list", "--data-cache", str(tmp_path / "c"), "--json"])
    assert r.exit_code == 0, r.output
    (entry,) = [json.loads(line) for line in r.stdout.splitlines()]
    assert entry["rows"] == len(path.read_text().splitlines()) and entry["bytes"] > 0
    r = runner.invoke(app, ["cache", "clear", "--data-cache", str(tmp_path / "c")])
    assert r.exit_code == 0 and "removed 1 entries" in r.stderr
    assert not [d for d in (tmp_path / "c/tokenized").iterdir()]


# ------------------------------------------------------------------------------- plans


def greedy_reference(order, lengths, max_tokens, cap):
    """The per-example greedy cut that plan_batches vectorizes."""
    batches, batch, longest = [], [], 0
    for i in order:
        length = max(lengths[i], 1)
        grown = max(longest, length)
        if batch and ((len(batch) + 1) * grown > max_tokens or len(batch) >= cap):
            batches.append(batch)
            batch, grown = [], length
        batch.append(i)
        longest = grown
    return batches + ([batch] if batch else [])


@pytest.mark.parametrize("bucket_size", [None, 300])
@pytest.mark.parametrize("max_sentences", [None, 9])
def test_vectorized_plan_cuts_like_the_per_example_loop(bucket_size, max_sentences):
    rng = np.random.default_rng(0)
    lengths = np.concatenate([rng.integers(0, 80, 3000), [900]]).astype(np.int32)
    plan = plan_batches(lengths, 512, seed=5, epoch=2, bucket_size=bucket_size, max_sentences=max_sentences)
    expected = greedy_reference(plan.order.tolist(), lengths.tolist(), 512, max_sentences or 10**9)
    got = [plan.order[plan.bounds[b]:plan.bounds[b + 1]].tolist() for b in range(len(plan))]
    assert got == expected
    assert sorted(plan.sequence.tolist()) == list(range(len(plan)))  # every batch dealt once
    assert plan_batches(lengths, 512, seed=5, epoch=2).tolist() == plan_batches(
        lengths, 512, seed=5, epoch=2).tolist()


def test_large_files_are_tokenized_in_a_child_process(tmp_path, corpus, toks, monkeypatch):
    from attn_cli.data import rundata

    path, _ = corpus
    in_process, _ = load(path, toks, tmp_path / "a")
    monkeypatch.setattr(rundata, "CHILD_MIN_BYTES", 0)  # every file counts as large
    seen = []
    data, _ = load_run_data(DataRequest(spec=str(path), task="translate", fields=TR, cache=tmp_path / "b"),
                            toks, None, lambda m: None, lambda done, total: seen.append((done, total)))
    assert all_examples(data) == all_examples(in_process)
    assert seen and seen[-1][0] == seen[-1][1] == len(data.train)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(path.read_text() + "{not json\n")
    with pytest.raises(AttnError, match="line .* is not valid JSON"):
        load(bad, toks, tmp_path / "b")
    assert not [p for p in (tmp_path / "b/tokenized").iterdir() if p.name.endswith(".tmp")]


def test_holdout_for_large_data_and_reuse_for_small(tmp_path, toks):
    rows = [{"it": f"frase numero {i}", "en": f"sentence number {i}"} for i in range(1500)]
    big = write_jsonl(tmp_path / "big.jsonl", rows)
    data, notes = load(big, toks, tmp_path / "c")
    assert len(data.valid) == 15 and len(data.train) == 1485  # 1% held out
    assert not set(map(repr, data.valid)) & set(map(repr, data.train.gather(range(len(data.train)))))
    assert any("held out 15 examples" in n for n in data.notes)
    small = write_jsonl(tmp_path / "small.jsonl", rows[:300])
    data, notes = load(small, toks, tmp_path / "c")
    assert len(data.train) == 300 and len(data.valid) == 200
    assert any("reused" in n and "--valid" in n for n in data.notes)


def test_parallel_prefix_is_not_its_own_validation_split(tmp_path, toks):
    """A prefix names one split (its two files): validation is held out, not the same files."""
    rows = [json.loads(line) for line in open(IT_EN, encoding="utf-8")]
    for lang in ("it", "en"):
        (tmp_path / f"train.{lang}").write_text("".join(r[lang] + "\n" for r in rows), encoding="utf-8")
    data, _ = load(tmp_path / "train", toks, tmp_path / "c")
    assert not any("'validation' split" in n for n in data.notes), data.notes
    assert any("reused" in n for n in data.notes) and len(data.valid) == 200


def test_tokenizing_in_worker_processes_writes_the_same_entry(tmp_path, corpus, toks, monkeypatch):
    """--num-proc 2 encodes batches in a pool (started once a second batch arrives); the entry's
    files equal the one-process build's, sentiment labels included."""
    path, _ = corpus
    monkeypatch.setattr(cachebuild, "ENCODE_BATCH", 64)  # several batches from the sample
    started = []
    real = cachebuild.ProcessPoolExecutor
    monkeypatch.setattr(cachebuild, "ProcessPoolExecutor", lambda *a, **k: started.append(1) or real(*a, **k))
    entries = {}
    for n in (1, 2):
        data, _ = load(path, toks, tmp_path / f"c{n}", num_proc=n)
        root = tmp_path / f"c{n}/tokenized"
        entries[n] = {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*")
                      if p.is_file() and p.name != datastore.META_FILE}
        assert len(started) == n - 1  # one process: no pool
    assert entries[1] == entries[2] and any(k.endswith(".bin") for k in entries[1])
    stoks = train_tokenizers(load_task_data(SENTIMENT, "sentiment", Fields(), need_valid=False).train, ["text"], [],
                             TokenizerConfig(vocab_size=400))
    one, _ = load(SENTIMENT, stoks, tmp_path / "s1", task="sentiment", fields=Fields(), num_proc=1)
    two, _ = load(SENTIMENT, stoks, tmp_path / "s2", task="sentiment", fields=Fields(), num_proc=2)
    assert all_examples(one) == all_examples(two) and len(started) == 2


def test_encoding_cuts_long_rows_and_keeps_wide_ids():
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_proto=train_tokenizers(
        load_task_data(SENTIMENT, "sentiment", Fields(), need_valid=False).train, ["text"], [],
        TokenizerConfig(vocab_size=400)).src.proto)
    texts = ["a fairly long sentence about films", "ok", "another one"]
    jobs = [(k, {"text": texts[k:]}) for k in range(3)]
    for workers in (1, 2):
        got = list(cachebuild.encoded(jobs, {"text": sp}, {"text": (4, "uint32")}, workers))
        assert [m for m, _ in got] == [0, 1, 2]  # in order
        for k, (_, res) in enumerate(got):
            flat, lens, cut = res["text"]
            full = [sp.encode(t) for t in texts[k:]]
            assert flat.dtype == np.uint32 and flat.tolist() == [i for ids in full for i in ids[:4]]
            assert lens.tolist() == [min(len(x), 4) for x in full]
            assert cut.tolist() == [len(x) > 4 for x in full]


def test_a_killed_builders_staging_directory_is_swept_by_the_next_build(tmp_path, corpus, toks):
    path, rows = corpus
    load(path, toks, tmp_path / "c")
    root = tmp_path / "c/tokenized"
    train = next(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    left = root / f".{train.name}.k1ll3d.tmp"  # what a SIGKILLed build leaves
    left.mkdir()
    (left / "src.bin").write_bytes(b"\0" * 64)
    other = root / ".another-entry.x.tmp"  # another entry's: not this lock's to remove
    other.mkdir()
    write_jsonl(path, rows + [{"it": "Una frase nuova.", "en": "A new sentence."}])  # rebuild
    data, notes = load(path, toks, tmp_path / "c")
    assert any("changed since" in n for n in notes) and not left.exists() and other.exists()
