"""The datasets of ``benchmarks/quality.py``: how each is trained and evaluated, its targets and
reference points (``../shared/data/README.md``), and the preset of each budget."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Eval:
    """One evaluation of a task's trained model: a split of a dataset."""

    split: str  # the label in the table (and --split of attn eval)
    data: str  # the SPEC, relative to the data root unless it starts with "{runs}"
    note: str = ""  # e.g. "out-of-domain"


@dataclass
class Task:
    """One dataset of the suite: its attn task, training options, evaluations and targets."""

    name: str  # --tasks key
    dataset: str  # shown in the table
    task: str  # attn task
    train: list[str]  # attn train data options (paths relative to the data root: "{data}/...")
    evals: list[Eval]
    metric: str  # primary metric key of attn eval --json
    refs: str  # published/measured reference points (../shared/data/README.md)
    target: dict[str, str]  # budget -> the target
    budget: dict[str, str]  # budget -> --time-budget
    extra: dict[str, list[str]] = field(default_factory=dict)  # budget -> more train options
    baseline: str | None = None  # "tfidf" | "lead3"


TASKS: dict[str, Task] = {t.name: t for t in [
    Task("multi30k", "Multi30k de→en", "translate",
         ["--data", "{data}/translation/multi30k/train", "--valid", "{data}/translation/multi30k/val",
          "--src", "de", "--tgt", "en"],
         [Eval("test_2016_flickr", "{data}/translation/multi30k")], "bleu",
         "36.5 BLEU (3+3 layers, d=256, 9M params, greedy; torchtext BLEU on spaCy tokens, "
         "not sacreBLEU)",
         {"cpu": "BLEU ≥ 32", "gpu": "BLEU ≥ 38"}, {"cpu": "60m", "gpu": "60s"},
         {"cpu": ["--lr", "1e-3", "--eval-samples", "1014"],
          "gpu": ["--lr", "1e-3", "--eval-samples", "1014", "--max-tokens", "16384"]}),
    Task("tatoeba", "Tatoeba it→en", "translate",
         ["--data", "{data}/translation/tatoeba-it-en", "--src", "it", "--tgt", "en"],
         [Eval("test", "{data}/translation/tatoeba-it-en"),
          Eval("flores101.devtest", "{runs}/_flores/flores101.devtest", "FLORES-101, out-of-domain")],
         "bleu", "none published for this split",
         {"cpu": "BLEU ≥ 40 (test)", "gpu": "—"}, {"cpu": "60m", "gpu": "30s"},
         {"cpu": ["--lr", "1e-3", "--warmup", "300", "--eval-every", "200"],
          "gpu": ["--max-tokens", "16384"]}),
    Task("sst2", "SST-2", "sentiment", ["--data", "{data}/sentiment/sst2"],
         [Eval("test", "{data}/sentiment/sst2")], "accuracy",
         "BoW LR 80.4% (GLUE dev); CNN, random embeddings 83.5% (Kim 2014); pretrained 85-95%; "
         "TF-IDF+LR 83.1% (data README)",
         {"cpu": "acc ≥ 83.5", "gpu": "—"}, {"cpu": "60m", "gpu": "25s"},
         {"gpu": ["--max-tokens", "16384"]}, baseline="tfidf"),
    Task("imdb", "IMDB", "sentiment", ["--data", "{data}/sentiment/imdb"],
         [Eval("test", "{data}/sentiment/imdb")], "accuracy",
         "1 transformer block, 200 tokens 87.5%; NBSVM bigrams 91.2%; TF-IDF+LR 90.4% (data README)",
         {"cpu": "acc ≥ 88", "gpu": "acc ≥ 90.5"}, {"cpu": "60m", "gpu": "40s"},
         {"cpu": ["--max-len", "256", "--dropout", "0.2", "--ema", "0.999", "--warmup", "300",
                  "--eval-every", "200"],
          "gpu": ["--max-len", "512", "--max-tokens", "32768"]}, baseline="tfidf"),
    Task("dialogsum", "DialogSum", "summarize",
         ["--data", "{data}/summarization/dialogsum", "--max-len", "512"],
         [Eval("test", "{data}/summarization/dialogsum")], "rouge1",
         "lead-3 27.3/10.6/21.6, longest-3 25.2/10.2/19.3 (R-1/2/L, 3 refs); BART mid-to-high 40s R-1",
         {"cpu": "R-1 > 27.3 (lead-3)", "gpu": "R-1 ≥ 36"}, {"cpu": "60m", "gpu": "45s"},
         {"gpu": ["--max-tokens", "16384"]}, baseline="lead3"),
]}
PRESET = {"cpu": "small", "gpu": "base"}
