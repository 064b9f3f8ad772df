"""--ngram-teacher: soft targets for sentiment training from a bag-of-n-grams model.

A TF-IDF (word 1-2 grams) + logistic regression model is fitted on the training texts in
``FOLDS`` folds, and each training example gets the class probabilities of the fold model that
did not see it: out-of-fold, so they say what n-grams generalise to, not what they memorised.
The classifier then learns from ``(1 - alpha) * labels + alpha * probabilities`` (knowledge
distillation from a model whose mistakes differ from its own; docs/benchmarks.md). Only training
uses it: the run's model is the transformer alone.
"""

from __future__ import annotations

import numpy as np

from .errors import AttnError

FOLDS = 5
NGRAMS = (1, 2)  # word unigrams and bigrams
MIN_DF = 2  # an n-gram must occur in two training texts
C = 4.0  # inverse L2 strength of the logistic regression


def ngram_teacher(texts: list[str], labels: list[int], num_labels: int, folds: int = FOLDS) -> np.ndarray:
    """(N, num_labels) float32 out-of-fold class probabilities for the N training ``texts``.

    The folds are stratified and fixed (they depend on the data only, not on --seed), and the
    fit is deterministic, so a resumed run or another DDP rank computes the same targets.
    """
    try:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import StratifiedKFold
    except ImportError:
        raise AttnError("--ngram-teacher needs scikit-learn", "pip install scikit-learn") from None
    y = np.asarray(labels)
    fewest = int(np.bincount(y, minlength=num_labels)[np.unique(y)].min())
    folds = min(folds, fewest)
    if folds < 2:
        raise AttnError("--ngram-teacher needs at least two training examples of each label",
                        "add examples, or leave out --ngram-teacher")
    probs = np.zeros((len(texts), num_labels), dtype=np.float32)
    splits = StratifiedKFold(folds, shuffle=True, random_state=0).split(np.zeros(len(y)), y)
    for seen, held in splits:
        vec = TfidfVectorizer(ngram_range=NGRAMS, min_df=MIN_DF, sublinear_tf=True)
        try:
            x = vec.fit_transform([texts[i] for i in seen])
        except ValueError:  # "empty vocabulary": no n-gram occurs twice
            raise AttnError("--ngram-teacher: too little text (no word occurs in two training examples)",
                            "use more data, or leave out --ngram-teacher") from None
        clf = LogisticRegression(C=C, max_iter=2000).fit(x, y[seen])
        # (a fold may lack a rare label: its probability stays 0 for the held-out texts)
        probs[np.ix_(held, clf.classes_)] = clf.predict_proba(vec.transform([texts[i] for i in held]))
    return probs
