"""Sentences at inference (attn_cli.infer.segment): the splitter's round trip on whitespace, the
chunked segmenter on long lines, token windows, the plan that puts outputs back, and translate /
summarize through the Python API and `attn translate` (an echo engine whose "translation" is
its input shows the layout exactly; the tiny real model shows nothing crashes)."""

from __future__ import annotations

import json

import pytest
from conftest import cli, one_line_error, train_tiny_runs
from segment_helpers import PARAGRAPHS, Echo

import attn_cli
from attn_cli.infer.api import Model
from attn_cli.infer.engine import EngineOptions
from attn_cli.infer.engines import open_engine
from attn_cli.infer.segment import (
    CHUNK,
    join_attention,
    plan_inputs,
    source_language,
    split_text,
    token_windows,
    whole_text,
)

LAYOUTS = ["", " ", "\n", "\n\n\n", "Ciao.", "  Ciao.  ", "\tHo fame.\tDov'è la stazione?\t",
           "Ho fame.\nDov'è la stazione?\n", "Ho fame.\r\nGrazie.\r\n\r\nCiao.\r\n",
           "Uno. Due.\n\n   \n\t\nTre.   Quattro!\n\n", "\n\n  Ciao.\n \n", "Una riga\rsolo CR.\r",
           "Ciao.\u2028Grazie.\u00a0Prego.\u3000Sì.", "a" * (3 * CHUNK + 7), ("parola " * 900).strip() + ". Fine."]


# ------------------------------------------------------------------ the splitter


@pytest.mark.parametrize("text", LAYOUTS)
def test_split_round_trip_keeps_every_separator(text):
    seg = split_text(text, "it")
    assert seg.join(seg.sentences) == text  # byte for byte
    assert len(seg.gaps) == len(seg.sentences) + 1
    assert all(not g.strip() for g in seg.gaps)  # separators are whitespace only ...
    assert all(s and s == s.strip() for s in seg.sentences)  # ... sentences have none outside
    assert all("\n" not in s and "\r" not in s for s in seg.sentences)  # a line break ends a sentence
    marked = seg.join([f"<{i}>" for i in range(len(seg.sentences))])
    assert marked.count("\n") == text.count("\n") and marked.count("\r") == text.count("\r")


def test_split_finds_sentences_and_keeps_paragraphs():
    seg = split_text(PARAGRAPHS, "it")
    assert seg.sentences == ["Ho fame.", "Dov'è la stazione?", "Sabato partirò per Londra.", "Grazie!",
                             "Buona notte."]
    assert seg.gaps == ["", " ", "\n\n", " ", "\n\n", ""]
    assert seg.join(["A", "B", "C", "D", "E"]) == "A B\n\nC D\n\nE"
    with pytest.raises(ValueError):
        seg.join(["A"])


def test_empty_and_whitespace_only_lines_keep_their_place():
    text = "Uno.\n\n   \n\t\nDue. Tre.\n \n"
    seg = split_text(text, "it")
    assert seg.join(["1", "2", "3"]) == "1\n\n   \n\t\n2 3\n \n"


def test_whole_text_is_one_sentence_verbatim():
    assert whole_text(PARAGRAPHS).sentences == [PARAGRAPHS]
    assert whole_text("").sentences == [] and whole_text("").join([]) == ""


def test_source_language_falls_back():
    assert source_language({"languages": {"src": "de", "tgt": "en"}}) == "de"
    assert source_language({}) == source_language({"languages": {"src": None}}) == "en"
    seg = split_text("Ciao. Come stai?", "xx-unknown")  # sentencex falls back for codes it does not know
    assert seg.sentences == ["Ciao.", "Come stai?"]


def test_other_scripts_split_without_error():
    seg = split_text("Привет. Как дела? 你好。我很好！", "it")
    assert seg.join(seg.sentences) == "Привет. Как дела? 你好。我很好！" and len(seg.sentences) >= 2


@pytest.fixture
def sentencex_inputs(monkeypatch):
    """The length of every text attn gives sentencex (whose time grows with the square of it)."""
    import sentencex

    seen, real = [], sentencex.get_sentence_boundaries
    monkeypatch.setattr(sentencex, "get_sentence_boundaries", lambda lang, text: seen.append(len(text)) or
                        real(lang, text))
    return seen


def test_a_200000_character_line_without_boundary_goes_to_sentencex_in_pieces(sentencex_inputs):
    for line in ("parola " * 28_572, "a" * 200_000):
        sentencex_inputs.clear()
        seg = split_text(line, "it")
        assert seg.join(seg.sentences) == line
        assert all(len(s) <= CHUNK for s in seg.sentences)  # pieces of at most CHUNK characters
        assert max(sentencex_inputs) <= CHUNK and sum(sentencex_inputs) <= len(line) + CHUNK  # linear work


def test_long_lines_of_sentences_are_split_in_pieces_and_match_sentencex(sentencex_inputs):
    import sentencex

    line = "Ciao. Come stai? Bene, grazie. " * 6_500  # 201,500 characters, 19,500 sentences
    seg = split_text(line, "it")
    assert len(seg.sentences) == 19_500 and seg.join(seg.sentences) == line
    assert max(sentencex_inputs) <= CHUNK and sum(sentencex_inputs) <= 2 * len(line)  # sentencex whole: 12 s
    head = line[:20_000]
    direct = [s.strip() for s in sentencex.segment("it", head) if s.strip()]
    assert split_text(head, "it").sentences == direct  # chunking changes no boundary


# ------------------------------------------------------------------ windows and the plan


def test_token_windows_prefer_word_starts_and_cover_the_ids():
    ids = list(range(100))
    starts = {0, 5, 9, 17, 30, 38, 50, 63, 77, 95}
    wins = token_windows(ids, 10, lambda i: i in starts)
    assert [x for w in wins for x in w] == ids and all(1 <= len(w) <= 10 for w in wins)
    assert wins[0] == list(range(9)) and wins[1] == list(range(9, 17))  # cut before a word's first piece
    assert token_windows(ids, 10) == [ids[i:i + 10] for i in range(0, 100, 10)]
    assert token_windows([], 10) == [[]]
    with pytest.raises(ValueError):
        token_windows(ids, 0)


def fake_encode(texts):
    return [[len(w) for w in t.split()] for t in texts]  # one "token" per word


def test_plan_windows_put_back_in_order():
    texts = [split_text("Uno due. Tre quattro cinque sei sette.\n\nOtto.", "it"), split_text("   ", "it")]
    plan = plan_inputs(texts, fake_encode, size=2)
    assert plan.ids == [[3, 4], [3, 7], [6, 3], [6], [5]]
    assert plan.owner == [(0, 0), (0, 1), (0, 1), (0, 1), (0, 2)]
    assert plan.over == [1, 0] and plan.windows == [3, 0] and plan.groups() == [[0, 1, 2, 3, 4], []]
    assert plan.join(["A", " B1 ", "B2", "B3", "C"]) == ["A B1 B2 B3\n\nC", "   "]
    assert "1 sentence(s) longer than 2 tokens" in plan.note() and "3 windows" in plan.note(0)
    assert plan.note(1) is None


def test_plan_head_cuts_documents():
    plan = plan_inputs([whole_text("a b c d e"), whole_text("f")], fake_encode, size=3, mode="head",
                       unit="document")
    assert plan.ids == [[1, 1, 1], [1]] and plan.over == [1, 0]
    assert plan.note() == ("1 document(s) longer than the model's 3 positions were cut to their first 3 tokens "
                           "(the rest is not read)")


def test_join_attention_is_block_diagonal():
    src, out, m = join_attention([(["a", "b"], ["x", "</s>"], [[0.5, 0.5], [0.1, 0.9]]),
                                  (["c"], ["y", "</s>"], [[1.0], [1.0]])])
    assert src == ["a", "b", "c"] and out == ["x", "</s>", "y", "</s>"]
    assert m == [[0.5, 0.5, 0.0], [0.1, 0.9, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0]]


# ------------------------------------------------------------------ translate and summarize


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return train_tiny_runs(tmp_path_factory.mktemp("segruns"))


@pytest.fixture
def echo(runs):
    return Echo(open_engine(runs / "translate", None, EngineOptions("torch")))


def test_api_translates_all_sentences_in_one_batch_and_keeps_the_layout(echo):
    texts = [PARAGRAPHS, "  Grazie.\t\n", "", "Ciao."]
    outs = Model(echo).translate(texts)
    assert [o.text for o in outs] == texts
    assert len(echo.calls) == 1 and len(echo.calls[0]) == 7  # 5 + 1 + 0 + 1 sentences, one call
    assert [s.source for s in outs[0].segments] == split_text(PARAGRAPHS, "it").sentences
    assert all(o.notes == () for o in outs) and outs[2].segments == [] and outs[2].score == 0.0


def test_api_without_splitting_feeds_each_text_whole(echo):
    outs = Model(echo).translate([PARAGRAPHS, "Ciao."], split_sentences=False)
    assert len(echo.calls[0]) == 2 and echo.calls[0][0] == echo.toks.src.encode(PARAGRAPHS)
    assert outs[0].segments is None


def test_api_long_sentence_goes_in_windows_with_a_note(echo):
    model = Model(echo)
    line = "parola " * 28_572 + "fine"  # 200,008 characters, no sentence boundary
    plan = model.plan([line], True)
    out = model.finish(plan, model.generate_ids(plan.ids, None))[0]
    size = echo.model_cfg.max_len
    assert all(0 < len(x) <= size for x in plan.ids) and len(plan.ids) > 100
    assert out.text.split() == line.split()  # every window's output, in order
    assert len(out.notes) == 1 and "windows" in out.notes[0] and f"{size} tokens" in out.notes[0]
    assert any(s.windows > 1 for s in out.segments)


def test_api_summarize_cuts_the_head_with_a_note(runs):
    model = attn_cli.load(runs / "summarize", engine="torch")
    long, short = "parola " * 2000, "Una frase breve."
    outs = model.summarize([long, short], beam=1, max_len_b=5)
    assert len(outs) == 2 and all(isinstance(o.text, str) for o in outs)
    assert len(outs[0].notes) == 1 and "cut to their first" in outs[0].notes[0] and outs[1].notes == ()
    assert outs[0].segments is None


def test_api_attention_per_sentence_is_block_diagonal(runs):
    model = attn_cli.load(runs / "translate", engine="torch")
    one, two = model.translate(["Ho fame.", "Ho fame. Grazie."], beam=1, attention=True, min_len=1)
    alone = model.translate(["Grazie."], beam=1, attention=True, min_len=1)[0]
    s1, t1 = len(one.source_pieces), len(one.pieces)
    assert two.attention.shape == (len(two.pieces), len(two.source_pieces)) == (t1 + len(alone.pieces),
                                                                                 s1 + len(alone.source_pieces))
    assert (two.attention[:t1, s1:] == 0).all() and (two.attention[t1:, :s1] == 0).all()
    assert abs(two.attention[:t1, :s1] - one.attention).max() < 1e-5


def test_cli_keeps_three_paragraphs(echo, monkeypatch, tmp_path):
    monkeypatch.setattr("attn_cli.cli.infer.open_engine", lambda *a: echo)
    src = tmp_path / "doc.txt"
    src.write_text(PARAGRAPHS + "\n", encoding="utf-8")
    by_file = cli("translate", "-m", "unused", "-i", src)
    assert by_file.exit_code == 0, by_file.output
    assert by_file.stdout == PARAGRAPHS + "\n"  # 3 paragraphs, blank lines between
    by_arg = cli("translate", "-m", "unused", PARAGRAPHS + "\n \n\t")  # one TEXT holding the paragraphs
    assert by_arg.exit_code == 0 and by_arg.stdout == PARAGRAPHS + "\n \n\t\n"
    assert len(echo.calls[0]) == 5  # one batch of the 5 sentences


def test_cli_no_split_feeds_the_whole_text(echo, monkeypatch):
    monkeypatch.setattr("attn_cli.cli.infer.open_engine", lambda *a: echo)
    r = cli("translate", "-m", "unused", "--no-split-sentences", "--json", "Ho fame. Dov'è la stazione?")
    assert r.exit_code == 0, r.output
    assert echo.calls == [[echo.toks.src.encode("Ho fame. Dov'è la stazione?")]]
    assert "segments" not in json.loads(r.stdout)


def test_cli_json_shows_the_segments(echo, monkeypatch):
    monkeypatch.setattr("attn_cli.cli.infer.open_engine", lambda *a: echo)
    r = cli("translate", "-m", "unused", "--json", "Ho fame.  Dov'è la stazione?", "")
    rows = [json.loads(x) for x in r.stdout.splitlines()]
    assert rows[0]["output"] == "Ho fame.  Dov'è la stazione?"
    assert rows[0]["segments"] == [{"source": "Ho fame.", "translation": "Ho fame."},
                                   {"source": "Dov'è la stazione?", "translation": "Dov'è la stazione?"}]
    assert rows[1]["segments"] == [] and rows[1]["output"] == ""


def test_cli_real_model_on_other_scripts_and_a_200000_character_line(runs, tmp_path):
    m = runs / "translate"
    r = cli("translate", "-m", m, "--beam", "1", "Привет. Как дела?", "你好。我很好！", "Ciao.\n\nGrazie.")
    assert r.exit_code == 0, r.output
    assert len(r.stdout.split("\n")) == 6  # 2 lines, then the third input's 2 paragraphs and the blank between
    src = tmp_path / "long.txt"
    src.write_text("parola " * 28_572 + "\n", encoding="utf-8")
    r = cli("translate", "-m", m, "--beam", "1", "--max-len-a", "0", "--max-len-b", "1", "-i", src)
    assert r.exit_code == 0, r.output
    assert len(r.stdout.splitlines()) == 1
    assert "windows of at most" in r.stderr and r.stderr.count("\n") == 1  # one note line, no error


def test_cli_summarize_of_an_over_long_document_notes_the_cut(runs):
    r = cli("summarize", "-m", runs / "summarize", "--beam", "1", "--max-len-b", "5", "parola " * 2000)
    assert r.exit_code == 0, r.output
    assert len(r.stdout.splitlines()) == 1
    assert "1 document(s) longer than the model's" in r.stderr and "Error" not in r.stderr


def test_cli_split_and_no_split_together_is_a_one_line_error(runs):
    r = cli("translate", "-m", runs / "translate", "--split-sentences", "--no-split-sentences", "Ciao.")
    one_line_error(r, "contradict")
