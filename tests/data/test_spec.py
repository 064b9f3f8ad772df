"""Every data SPEC form loads through load_spec/load_task_data; bad input gives DataError."""

import csv
import gzip
import json

import datasets
import pytest
from conftest import DATA_DIR, write_jsonl

from attn_cli.data import spec as D
from attn_cli.data.spec import Fields, load_spec
from attn_cli.data.tasks import load_task_data
from attn_cli.errors import DataError

TR = Fields(src_lang="de", tgt_lang="en")


def test_jsonl_file(tmp_path, pairs):
    ds = load_spec(str(write_jsonl(tmp_path / "a.jsonl", pairs)))
    assert len(ds) == 20 and set(ds.column_names) == {"de", "en"}


def test_gzipped_jsonl(tmp_path, pairs):
    p = tmp_path / "a.jsonl.gz"
    with gzip.open(p, "wt", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in pairs)
    ds = load_spec(str(p))
    assert ds[0]["de"] == pairs[0]["de"]


def test_json_array_file(tmp_path, pairs):
    p = tmp_path / "a.json"
    p.write_text(json.dumps(pairs, ensure_ascii=False), encoding="utf-8")
    assert len(load_spec(str(p))) == 20


@pytest.mark.parametrize("ext,delim", [("csv", ","), ("tsv", "\t")])
def test_csv_and_tsv(tmp_path, pairs, ext, delim):
    p = tmp_path / f"a.{ext}"
    with open(p, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=["de", "en"], delimiter=delim)
        w.writeheader()
        w.writerows(pairs)
    ds = load_spec(str(p))
    assert ds.column_names == ["de", "en"] and ds[3]["en"] == pairs[3]["en"]


def test_parquet(tmp_path, pairs):
    p = tmp_path / "a.parquet"
    datasets.Dataset.from_list(pairs).to_parquet(str(p))
    assert len(load_spec(str(p))) == 20


def test_txt_lines(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("eins\nzwei\ndrei\n", encoding="utf-8")
    assert load_spec(str(p))["text"] == ["eins", "zwei", "drei"]


def test_directory_of_splits(tmp_path, pairs):
    write_jsonl(tmp_path / "d" / "train.jsonl", pairs[:15])
    write_jsonl(tmp_path / "d" / "dev.jsonl", pairs[15:18])
    write_jsonl(tmp_path / "d" / "test.jsonl", pairs[18:])
    td = load_task_data(str(tmp_path / "d"), "translate", TR)
    assert len(td.train) == 15 and len(td.valid) == 3
    assert "validation" in td.notes[0]
    assert len(load_spec(str(tmp_path / "d"), "test")) == 2


def test_parallel_prefix(tmp_path, pairs):
    (tmp_path / "train.de").write_text("".join(p["de"] + "\n" for p in pairs), encoding="utf-8")
    (tmp_path / "train.en").write_text("".join(p["en"] + "\n" for p in pairs), encoding="utf-8")
    td = load_task_data(str(tmp_path / "train"), "translate", TR, need_valid=False)
    assert td.train.column_names == ["src", "tgt"]
    assert td.train[0] == {"src": pairs[0]["de"], "tgt": pairs[0]["en"]}


def test_directory_of_parallel_files(tmp_path, pairs):
    for split, rows in (("train", pairs[:16]), ("val", pairs[16:])):
        for lang in ("de", "en"):
            (tmp_path / f"{split}.{lang}").write_text("".join(r[lang] + "\n" for r in rows))
    td = load_task_data(str(tmp_path), "translate", TR)
    assert (len(td.train), len(td.valid)) == (16, 4)


def test_hub_translation_dicts_are_flattened(monkeypatch, pairs):
    calls = []
    hub = datasets.Dataset.from_list([{"translation": p} for p in pairs])

    def fake_load(name, subset=None, split=None, **kw):
        calls.append((name, subset, split))
        return hub

    monkeypatch.setattr(D._hf(), "load_dataset", fake_load)
    td = load_task_data("wmt16", "translate", TR, subset="de-en")
    assert calls[0] == ("wmt16", "de-en", "train") and calls[1] == ("wmt16", "de-en", "validation")
    assert td.train.column_names == ["src", "tgt"] and len(td.valid) == 20


def test_hub_offline_is_a_clear_error():
    with pytest.raises(DataError, match="could not reach the Hugging Face Hub.*no local path"):
        load_spec("someone/nonexistent-dataset")


def test_holdout_validation_is_fixed_and_disjoint(tmp_path, pairs):
    p = str(write_jsonl(tmp_path / "a.jsonl", pairs * 10))
    a = load_task_data(p, "translate", TR, seed=1)
    b = load_task_data(p, "translate", TR, seed=1)
    assert len(a.valid) == 2 and len(a.train) == 198
    assert a.valid["src"] == b.valid["src"]
    assert "held out 2" in a.notes[0]


def test_sentiment_string_labels_sorted(tmp_path):
    rows = [{"sentence": f"s{i}", "label": ["pos", "neg"][i % 2]} for i in range(10)]
    td = load_task_data(str(write_jsonl(tmp_path / "s.jsonl", rows)), "sentiment", need_valid=False)
    assert td.label_names == ["neg", "pos"]
    assert td.train["label"][:2] == [1, 0] and td.train.column_names == ["text", "label"]


def test_sentiment_int_labels_and_valid_mapping(tmp_path):
    rows = [{"text": f"t{i}", "label": i % 3} for i in range(30)]
    train = str(write_jsonl(tmp_path / "t.jsonl", rows))
    valid = str(write_jsonl(tmp_path / "v.jsonl", rows[:3]))
    td = load_task_data(train, "sentiment", valid_spec=valid)
    assert td.label_names == ["0", "1", "2"] and td.valid["label"] == [0, 1, 2]


def test_sentiment_valid_with_unknown_label(tmp_path):
    train = str(write_jsonl(tmp_path / "t.jsonl", [{"text": "a", "label": "pos"},
                                                   {"text": "b", "label": "neg"}]))
    valid = str(write_jsonl(tmp_path / "v.jsonl", [{"text": "c", "label": "meh"}]))
    with pytest.raises(DataError, match="meh"):
        load_task_data(train, "sentiment", valid_spec=valid)


def test_summarize_detects_fields_and_keeps_references(tmp_path):
    rows = [{"dialogue": f"d {i}", "summary": f"s {i}", "references": [f"s {i}", "x"], "topic": "t"}
            for i in range(5)]
    td = load_task_data(str(write_jsonl(tmp_path / "a.jsonl", rows)), "summarize", need_valid=False)
    assert td.train.column_names == ["src", "tgt", "references"]


def test_empty_rows_dropped(tmp_path, pairs):
    rows = pairs + [{"de": "", "en": "x"}, {"de": "y", "en": "  "}]
    td = load_task_data(str(write_jsonl(tmp_path / "a.jsonl", rows)), "translate", TR, need_valid=False)
    assert len(td.train) == 20


def test_sample_data_loads():
    for name, task, fields in (("translate.it-en.jsonl", "translate", Fields(src_lang="it", tgt_lang="en")),
                               ("sentiment.jsonl", "sentiment", Fields()),
                               ("summarize.jsonl", "summarize", Fields())):
        td = load_task_data(f"{DATA_DIR}/{name}", task, fields)
        assert len(td.train) >= 60 and len(td.valid) >= 1


# ----------------------------------------------------------------- bad input


def test_missing_path():
    with pytest.raises(DataError, match="no such file or directory: /nope/x.jsonl"):
        load_spec("/nope/x.jsonl")


def test_unknown_extension(tmp_path):
    p = tmp_path / "a.xlsx"
    p.write_text("x")
    with pytest.raises(DataError, match=r"unknown file extension '\.xlsx'"):
        load_spec(str(p))


def test_missing_field_lists_columns(tmp_path, pairs):
    p = str(write_jsonl(tmp_path / "a.jsonl", pairs))
    with pytest.raises(DataError, match="field 'fr' not found; the data has columns: de, en"):
        load_task_data(p, "translate", Fields(src_lang="fr", tgt_lang="en"))


def test_empty_file(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_text("")
    with pytest.raises(DataError, match="a.jsonl is empty"):
        load_spec(str(p))


def test_all_rows_empty(tmp_path):
    p = str(write_jsonl(tmp_path / "a.jsonl", [{"de": "", "en": ""}] * 3))
    with pytest.raises(DataError, match="no usable translate examples"):
        load_task_data(p, "translate", TR)


def test_parallel_length_mismatch(tmp_path):
    (tmp_path / "train.de").write_text("a\nb\nc\n")
    (tmp_path / "train.en").write_text("a\nb\n")
    with pytest.raises(DataError, match="train.de has 3 lines.*train.en has 2"):
        load_spec(str(tmp_path / "train"), fields=TR)


def test_not_utf8(tmp_path):
    p = tmp_path / "latin.jsonl"
    p.write_bytes('{"de": "Gr\xfc\xdfe", "en": "hi"}\n'.encode("latin-1"))
    with pytest.raises(DataError, match="latin.jsonl is not UTF-8"):
        load_spec(str(p))


def test_broken_jsonl_line_named(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_text('{"de": "a", "en": "b"}\n{"de": "c", "en"\n')
    with pytest.raises(DataError, match="line 2 is not valid JSON"):
        load_spec(str(p))


def test_one_class_sentiment(tmp_path):
    p = str(write_jsonl(tmp_path / "a.jsonl", [{"text": f"t{i}", "label": 1} for i in range(5)]))
    with pytest.raises(DataError, match="only one label"):
        load_task_data(p, "sentiment")


def test_mixed_labels(tmp_path):
    p = str(write_jsonl(tmp_path / "a.jsonl", [{"text": "a", "label": 1}, {"text": "b", "label": "x"}]))
    with pytest.raises(DataError, match="must be all integers or all strings"):
        load_task_data(p, "sentiment")


def test_translate_without_languages(tmp_path, pairs):
    p = str(write_jsonl(tmp_path / "a.jsonl", pairs))
    with pytest.raises(DataError, match="pass --src and --tgt"):
        load_task_data(p, "translate")


def test_directory_without_split(tmp_path, pairs):
    write_jsonl(tmp_path / "test.jsonl", pairs)
    with pytest.raises(DataError, match="no 'train' split"):
        load_spec(str(tmp_path))
