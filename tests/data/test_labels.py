"""Sentiment labels: integers that are not 0..K-1 (stars 1 and 5) are named classes in sorted
order, never phantom classes; --num-labels keeps integer class ids; the cache's read path
(stream.Normalizer) and the in-memory one (tasks.normalize_sentiment) agree."""

import numpy as np
import pytest
from conftest import DATA_DIR, write_jsonl

from attn_cli.data.rundata import DataRequest, load_run_data, valid_meta
from attn_cli.data.spec import Fields, load_spec
from attn_cli.data.tasks import label_note, load_eval_data, normalize_sentiment
from attn_cli.data.tokenizer import TokenizerConfig, train_tokenizers
from attn_cli.errors import DataError


@pytest.fixture(scope="module")
def toks():
    ds, _ = normalize_sentiment(load_spec(f"{DATA_DIR}/sentiment.jsonl"), Fields())
    return train_tokenizers(ds, ["text"], [], TokenizerConfig(vocab_size=400))


def stars_csv(path, stars=(1, 5), n=60):
    lines = ["text,stars"] + [f"review {i} {'great' if i % 2 else 'awful'},{stars[i % len(stars)]}"
                              for i in range(n)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def normalized(path, **fields):
    return normalize_sentiment(load_spec(str(path)), Fields(label_field="stars", **fields))


def test_sparse_integer_labels_are_named_classes_in_sorted_order(tmp_path):
    ds, names = normalized(stars_csv(tmp_path / "s.csv", stars=(5, 1, 3)))
    assert names == ["1", "3", "5"]  # three classes, not six
    assert sorted(set(ds["label"])) == [0, 1, 2]
    assert ds["label"][:3] == [2, 0, 1]  # 5 -> 2, 1 -> 0, 3 -> 1
    assert "1, 3, 5 are 3 classes" in label_note(names) and "--num-labels" in label_note(names)


def test_labels_0_to_k_minus_1_stay_class_ids_without_a_note(tmp_path):
    ds, names = normalized(stars_csv(tmp_path / "s.csv", stars=(1, 0, 2)))
    assert names == ["0", "1", "2"] and ds["label"][:3] == [1, 0, 2]
    assert label_note(names) is None and label_note(["negative", "positive"]) is None


def test_num_labels_keeps_integer_class_ids(tmp_path):
    path = stars_csv(tmp_path / "s.csv")
    ds, names = normalized(path, num_labels=6)
    assert names == [str(i) for i in range(6)] and sorted(set(ds["label"])) == [1, 5]
    with pytest.raises(DataError, match="label 5 is out of range for --num-labels 4"):
        normalized(path, num_labels=4)
    named = tmp_path / "n.jsonl"
    write_jsonl(named, [{"text": "a", "stars": "good"}, {"text": "b", "stars": "bad"}])
    with pytest.raises(DataError, match="--num-labels keeps integer labels"):
        normalized(named, num_labels=2)


def test_evaluation_data_maps_integers_through_the_model_names(tmp_path):
    path = stars_csv(tmp_path / "s.csv")
    ds = load_eval_data(str(path), "sentiment", Fields(label_field="stars"), label_names=["1", "5"])
    assert ds["label"][:2] == [0, 1]
    with pytest.raises(DataError, match=r"label\(s\) \[3\] not among the known labels"):
        load_eval_data(str(stars_csv(tmp_path / "t.csv", stars=(1, 3))), "sentiment",
                       Fields(label_field="stars"), label_names=["1", "5"])
    named = load_eval_data(str(stars_csv(tmp_path / "u.csv", stars=(0, 1))), "sentiment",
                           Fields(label_field="stars"), label_names=["negative", "positive"])
    assert named["label"][:2] == [0, 1]  # integers are class ids of named classes


@pytest.mark.parametrize("num_labels", [None, 6])
def test_the_cache_path_maps_labels_as_in_memory(tmp_path, toks, num_labels):
    """load_run_data reads a local file through stream.Normalizer into the cache."""
    path = stars_csv(tmp_path / "s.csv")
    fields = Fields(label_field="stars", num_labels=num_labels)
    ds, names = normalize_sentiment(load_spec(str(path)), fields)
    req = DataRequest(spec=str(path), task="sentiment", fields=fields, cache=tmp_path / "c")
    for _ in range(2):  # built, then read back from the cache
        data, _ = load_run_data(req, toks, None, lambda _: None)
        assert data.label_names == names
        assert list(data.train.labels()) == list(ds["label"])
        assert any("1, 5 are 2 classes" in n for n in data.notes) == (num_labels is None), data.notes
    assert data.valid_reused and valid_meta(data) == {"valid_reused": True, "valid_majority": 50.0}
    assert np.unique(data.train.labels()).tolist() == ([0, 1] if num_labels is None else [1, 5])


def test_a_class_label_feature_keeps_its_names():
    """Hub datasets (IMDB, SST-2) store labels as a ClassLabel: its integers are class ids and
    its names are the class names, whatever integers occur."""
    import datasets

    features = datasets.Features({"text": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["neg", "pos", "mixed"])})
    ds = datasets.Dataset.from_dict({"text": ["bad", "good", "fine"], "label": [0, 1, 1]}, features=features)
    out, names = normalize_sentiment(ds, Fields())
    assert names == ["neg", "pos", "mixed"]
    assert out["label"] == [0, 1, 1]
