"""Scores and baselines: sacreBLEU, chrF, ROUGE, accuracy and macro-F1; TF-IDF + logistic
regression, lead-3 and copy baselines. Imports only the top level."""
