"""Explain: rollout on hand-made matrices, properties on tiny models, renderables, PNG."""

import pytest
import torch
from rich.console import Console
from rich.table import Table
from rich.text import Text

from attn_cli.config import model_config_from_preset
from attn_cli.errors import AttnError
from attn_cli.infer.explain import (
    cross_alignment,
    merge_words,
    plot_alignment,
    render_alignment,
    render_importance,
    rollout,
    rollout_matrix,
    token_importance,
    top_tokens,
)
from attn_cli.model.transformer import build_model

VOCAB = 40
PAD = 0


@pytest.fixture(scope="module")
def classifier():
    torch.manual_seed(0)
    cfg = model_config_from_preset("tiny", "sentiment", vocab_size=VOCAB, num_labels=2)
    return build_model(cfg)


@pytest.fixture(scope="module")
def seq2seq():
    torch.manual_seed(0)
    cfg = model_config_from_preset("tiny", "translate", vocab_size=VOCAB)
    return build_model(cfg)


# --------------------------------------------------------------------------- pure rollout


def _stack(*layers):
    """Per-layer (S, S) matrices -> (L, B=1, H=2, S, S), the same matrix in both heads."""
    return torch.stack([torch.as_tensor(a, dtype=torch.float32).expand(1, 2, *a.shape)
                        for a in layers])


def test_identity_attention_gives_uniform_importance():
    s, real = 5, 3
    mask = torch.tensor([[True] * real + [False] * (s - real)])
    eye = torch.eye(s)
    imp = rollout(_stack(eye, eye), mask)
    assert imp.shape == (1, s)
    assert torch.allclose(imp[0, :real], torch.full((real,), 1 / real))
    assert torch.all(imp[0, real:] == 0)


def test_attending_to_first_token_makes_it_most_important():
    s = 4
    to_first = torch.zeros(s, s)
    to_first[:, 0] = 1.0
    imp = rollout(_stack(to_first), torch.ones(1, s, dtype=torch.bool))[0]
    assert int(imp.argmax()) == 0
    # One layer: rollout = 0.5 * A + 0.5 * I, mean over rows -> token 0 gets 0.5 + 0.5 / s.
    assert imp[0].item() == pytest.approx(0.5 + 0.5 / s)
    assert torch.allclose(imp[1:], torch.full((s - 1,), 0.5 / s))
    # More layers push more of the flow into token 0.
    deeper = rollout(_stack(to_first, to_first, to_first), torch.ones(1, s, dtype=torch.bool))[0]
    assert deeper[0] > imp[0]
    assert deeper.sum().item() == pytest.approx(1.0)


def test_rollout_matrix_multiplies_layers_in_order():
    torch.manual_seed(1)
    s = 4
    a1, a2 = torch.softmax(torch.randn(s, s), -1), torch.softmax(torch.randn(s, s), -1)
    got = rollout_matrix(_stack(a1, a2), torch.ones(1, s, dtype=torch.bool))[0]
    eye = torch.eye(s)
    expected = ((a2 + eye) / 2) @ ((a1 + eye) / 2)
    assert torch.allclose(got, expected, atol=1e-6)
    assert torch.allclose(got.sum(-1), torch.ones(s))


def test_all_pad_row_is_zero():
    attn = torch.softmax(torch.randn(2, 1, 2, 3, 3), -1)
    imp = rollout(attn, torch.zeros(1, 3, dtype=torch.bool))
    assert torch.all(imp == 0)


# --------------------------------------------------------------------------- model properties


def test_token_importance_sums_to_one_and_pads_are_zero(classifier):
    ids = torch.tensor([[5, 9, 12, 7, 4, PAD, PAD], [8, 3, 21, PAD, PAD, PAD, PAD]])
    imp = token_importance(classifier, ids)
    assert imp.shape == ids.shape
    real = ids != PAD
    assert torch.allclose(imp.sum(-1), torch.ones(2), atol=1e-5)
    assert torch.all(imp[~real] == 0)
    assert torch.all(imp[real] > 0)


def test_token_importance_invariant_to_padding_and_restores_mode(classifier):
    ids = torch.tensor([[5, 9, 12, 7, 4]])
    padded = torch.cat([ids, torch.full((1, 3), PAD)], dim=1)
    classifier.train()
    a = token_importance(classifier, ids)
    b = token_importance(classifier, padded)
    assert classifier.training  # mode restored
    assert torch.allclose(a, b[:, :5], atol=1e-5)
    assert torch.all(b[:, 5:] == 0)
    assert torch.allclose(token_importance(classifier, ids[0]), a)  # 1-D input accepted


def test_cross_alignment_shape_and_rows(seq2seq):
    src = torch.tensor([[5, 9, 12, 7, 3]])
    out = torch.tensor([[11, 6, 3]])
    align = cross_alignment(seq2seq, src, out)
    assert align.shape == (3, 5)
    assert torch.allclose(align.sum(-1), torch.ones(3), atol=1e-5)
    last = cross_alignment(seq2seq, src[0], out[0], layer=-1)
    assert last.shape == (3, 5)
    assert torch.allclose(last.sum(-1), torch.ones(3), atol=1e-5)


def test_cross_alignment_row_t_predicts_token_t(seq2seq):
    # Row t depends only on out[:t] (teacher forcing with BOS + out[:-1], causal decoder):
    # changing the last output token changes no row, changing the first changes later rows.
    src = torch.tensor([[5, 9, 12, 7, 3]])
    a = cross_alignment(seq2seq, src, torch.tensor([[11, 6, 3]]))
    b = cross_alignment(seq2seq, src, torch.tensor([[11, 6, 30]]))
    c = cross_alignment(seq2seq, src, torch.tensor([[20, 6, 3]]))
    assert torch.allclose(a, b, atol=1e-6)
    assert torch.allclose(a[0], c[0], atol=1e-6)
    assert not torch.allclose(a[1:], c[1:], atol=1e-6)


def test_cross_alignment_pad_sources_get_zero(seq2seq):
    src = torch.tensor([[5, 9, 12, 3, PAD, PAD]])
    align = cross_alignment(seq2seq, src, torch.tensor([[11, 6, 3]]))
    assert torch.all(align[:, 4:] == 0)
    assert torch.allclose(align.sum(-1), torch.ones(3), atol=1e-5)


# --------------------------------------------------------------------------- rendering

PIECES = ["\u2581The", "\u2581cat", "s", "\u2581sat", "\u2581", "."]
WEIGHTS = [0.1, 0.3, 0.2, 0.25, 0.05, 0.1]


def test_render_importance_plain_text_is_the_sentence():
    text = render_importance(PIECES, WEIGHTS)
    assert isinstance(text, Text)
    assert text.plain == "The cats sat ."
    assert text.plain == "".join(PIECES).replace("\u2581", " ").strip()
    styled = {text.plain[s.start:s.end] for s in text.spans}
    assert {"The", "cat", "s", "sat", "."} <= styled
    assert " " not in styled  # word boundaries are not shaded


def test_top_tokens_merges_words():
    assert merge_words(PIECES, WEIGHTS) == [
        ("The", 0.1), ("cats", pytest.approx(0.5)), ("sat", 0.25), (".", pytest.approx(0.15))]
    top = top_tokens(PIECES, WEIGHTS, k=2)
    assert [w for w, _ in top] == ["cats", "sat"]
    pieces = top_tokens(PIECES, WEIGHTS, k=3, words=False)
    assert [p for p, _ in pieces] == ["cat", "sat", "s"]


def test_render_alignment_table():
    src = ["\u2581Der", "\u2581Hund", "\u2581läuft", "."]
    out = ["\u2581The", "\u2581dog", "\u2581runs"]
    matrix = torch.softmax(torch.randn(3, 4), -1)
    table = render_alignment(src, out, matrix)
    assert isinstance(table, Table)
    assert table.row_count == 3
    assert len(table.columns) == 5  # output label column + one per source piece
    console = Console(width=80, record=True, color_system=None)
    console.print(table)
    rendered = console.export_text()
    assert "Hund" in rendered and "dog" in rendered and "\u2588" in rendered
    with pytest.raises(ValueError, match="does not match"):
        render_alignment(src, out[:2], matrix)


def test_plot_alignment_writes_png(tmp_path):
    pytest.importorskip("matplotlib", reason="plot_alignment needs matplotlib (attn[plot])")
    path = tmp_path / "align.png"
    plot_alignment(["\u2581a", "\u2581b"], ["\u2581x", "\u2581y", "\u2581z"],
                   torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5]]), path)
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 100
    assert [p.name for p in tmp_path.iterdir()] == ["align.png"]  # no temporary left


def test_plot_alignment_without_matplotlib(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import now raises ImportError
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    monkeypatch.setitem(sys.modules, "matplotlib.backends.backend_agg", None)
    with pytest.raises(AttnError, match="needs matplotlib") as err:
        plot_alignment(["a"], ["x"], [[1.0]], tmp_path / "a.png")
    assert "attn[plot]" in str(err.value)
