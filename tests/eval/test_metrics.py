"""Metrics: BLEU/chrF against sacreBLEU, ROUGE best-of-references, classification by hand."""

import pytest
import sacrebleu
from rouge_score.rouge_scorer import RougeScorer

from attn_cli.eval.metrics import (
    bleu_chrf,
    classification,
    confusion_matrix,
    higher_is_better,
    primary_metric,
    rouge,
    split_sentences,
)

HYPS = ["The cat sat on the mat.", "A dog is running in the park today."]
REFS = ["The cat sat on a mat.", "A dog runs in the park."]


def test_identical_text_scores_100():
    out = bleu_chrf(REFS, REFS)
    assert out["bleu"] == pytest.approx(100.0)
    assert out["chrf"] == pytest.approx(100.0)
    assert out["bleu_signature"].startswith("nrefs:1|")
    assert "tok:13a" in out["bleu_signature"]


def test_bleu_chrf_match_sacrebleu():
    out = bleu_chrf(HYPS, REFS)
    assert out["bleu"] == pytest.approx(sacrebleu.corpus_bleu(HYPS, [REFS]).score)
    assert out["chrf"] == pytest.approx(sacrebleu.corpus_chrf(HYPS, [REFS]).score)
    assert 0.0 < out["bleu"] < 100.0


def test_bleu_multi_reference_is_per_example():
    refs2 = ["On the mat sat the cat.", "A dog is running in the park today."]
    per_example = [[r1, r2] for r1, r2 in zip(REFS, refs2, strict=True)]
    out = bleu_chrf(HYPS, per_example)
    assert out["bleu"] == pytest.approx(sacrebleu.corpus_bleu(HYPS, [REFS, refs2]).score)
    assert out["bleu_signature"].startswith("nrefs:2|")
    # A variable number of references per example is allowed.
    ragged = bleu_chrf(HYPS, [[REFS[0]], [REFS[1], refs2[1]]])
    expected = sacrebleu.corpus_bleu(HYPS, [REFS, [None, refs2[1]]]).score
    assert ragged["bleu"] == pytest.approx(expected)


def test_length_mismatch_raises():
    with pytest.raises(ValueError, match="2 hypotheses but 1"):
        bleu_chrf(HYPS, REFS[:1])
    with pytest.raises(ValueError, match="no hypotheses"):
        rouge([], [])


def test_split_sentences():
    assert split_sentences("One. Two!  Three? four") == ["One.", "Two!", "Three?", "four"]
    assert split_sentences("3.5 is a number.") == ["3.5 is a number."]


def test_rouge_identical_is_100():
    out = rouge(["The cats are running. They sleep."], ["The cats are running. They sleep."])
    assert set(out) == {"rouge1", "rouge2", "rougeL", "rougeLsum"}
    for v in out.values():
        assert v == pytest.approx(100.0)


def test_rouge_matches_rouge_score_with_stemming():
    hyp, ref = "the cats were running fast", "a cat runs fast"
    out = rouge([hyp], [ref])
    expected = RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True).score(ref, hyp)
    for k in ("rouge1", "rouge2", "rougeL"):
        assert out[k] == pytest.approx(100.0 * expected[k].fmeasure)
    assert out["rouge1"] > 0  # "cats"/"cat" and "running"/"runs" match only with stemming


def test_rouge_best_of_references():
    hyp = "the president visited the factory on monday"
    bad, good = "stocks fell sharply", "the president visited a factory monday"
    alone_good = rouge([hyp], [good])
    alone_bad = rouge([hyp], [bad])
    best = rouge([hyp], [[bad, good]])
    assert alone_bad["rouge1"] < alone_good["rouge1"]
    for k in best:
        assert best[k] == pytest.approx(alone_good[k])
    # Order of references does not matter, and averaging is over examples.
    assert rouge([hyp], [[good, bad]]) == best
    avg = rouge([hyp, hyp], [[bad, good], [bad]])
    assert avg["rouge1"] == pytest.approx((alone_good["rouge1"] + alone_bad["rouge1"]) / 2)


def test_rouge_lsum_uses_sentences():
    # Same words, sentences in swapped order: LCS over the whole text is shorter than
    # the union-LCS over sentences, so rougeLsum > rougeL.
    hyp = "the dog barked loudly. the cat ran away."
    ref = "the cat ran away. the dog barked loudly."
    out = rouge([hyp], [ref])
    assert out["rougeLsum"] == pytest.approx(100.0)
    assert out["rougeL"] < 100.0


def test_classification_hand_computed():
    golds = [0, 0, 1, 1, 2, 2]
    preds = [0, 1, 1, 1, 1, 0]  # class 2 is never predicted
    out = classification(preds, golds, num_labels=3)
    assert out["accuracy"] == pytest.approx(100.0 * 3 / 6)
    assert out["confusion"] == [[1, 1, 0], [0, 2, 0], [1, 1, 0]]
    # F1: class 0: tp=1, gold=2, pred=2 -> 0.5; class 1: tp=2, gold=2, pred=4 -> 4/6;
    # class 2: tp=0 -> 0.
    assert out["macro_f1"] == pytest.approx(100.0 * (0.5 + 4 / 6 + 0.0) / 3)


def test_classification_ignores_absent_classes():
    # Label 2 exists in the label set but in neither golds nor preds: not averaged.
    out = classification([0, 1, 1], [0, 1, 0], num_labels=3)
    assert out["accuracy"] == pytest.approx(100.0 * 2 / 3)
    f1_0 = 2 * 1 / (2 + 1)
    f1_1 = 2 * 1 / (1 + 2)
    assert out["macro_f1"] == pytest.approx(100.0 * (f1_0 + f1_1) / 2)
    assert out["confusion"] == [[1, 1, 0], [0, 1, 0], [0, 0, 0]]
    perfect = classification([1, 0], [1, 0], num_labels=2)
    assert perfect["accuracy"] == perfect["macro_f1"] == pytest.approx(100.0)


def test_classification_errors():
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix([0, 3], [0, 1], num_labels=2)
    with pytest.raises(ValueError, match="predictions"):
        classification([0], [0, 1], num_labels=2)
    with pytest.raises(ValueError, match="no examples"):
        classification([], [], num_labels=2)


def test_primary_metric():
    assert primary_metric("translate") == "bleu"
    assert primary_metric("summarize") == "rouge1"
    assert primary_metric("sentiment") == "accuracy"
    for task in ("translate", "summarize", "sentiment"):
        assert higher_is_better(primary_metric(task))
    with pytest.raises(ValueError):
        primary_metric("parse")
