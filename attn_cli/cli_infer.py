"""`attn translate`, `attn summarize` and `attn sentiment` (`attn eval` and `attn info` are in
``cli_eval.py``).

Results go to stdout (or `-o FILE`, written atomically), one line per input in input order;
messages, progress and attention pictures go to stderr, so the commands compose in pipes.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from . import console as ui
from .cli import AttnCommand, app, command, flag
from .engines import DEFAULT_THREADS
from .errors import AttnError

DEC = "Decoding"
ModelOpt = Annotated[Path, typer.Option("--model", "-m", show_default=False,
                                        help="Run directory written by attn train.")]
TextsArg = Annotated[list[str] | None, typer.Argument(
    show_default=False, help="Input text(s); without them, -i FILE or standard input is read.")]
InOpt = Annotated[Path | None, typer.Option("--input", "-i", help="Read inputs from FILE.",
                                            readable=False)]  # checked by read_inputs: one-line errors
OutOpt = Annotated[Path | None, typer.Option("--output", "-o", help="Write outputs to FILE (atomically).")]
JsonOpt = Annotated[bool, flag("--json", help="JSON lines with input, output and score.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")]
MaxTokOpt = Annotated[int, typer.Option("--max-tokens", help="Source tokens per batch.")]
ENG = "Engine"
EngineOpt = Annotated[str, typer.Option("--engine", rich_help_panel=ENG, help=(
    "auto (the run's ct2/ export from attn export when valid and up to date, else torch), "
    "torch or ctranslate2."))]
ComputeOpt = Annotated[str, typer.Option("--compute-type", rich_help_panel=ENG, help=(
    "ctranslate2: auto (the exported weights' type), int8, float32, or on a GPU float16 or "
    "int8_float16."))]
ThreadsOpt = Annotated[int, typer.Option("--threads", rich_help_panel=ENG, help=(
    "Intra-op CPU threads; 0 = auto: 1 on machines with at most 2 cores (measured fastest there), "
    "else the library's default."))]


def open_engine(model: Path, task: str | None, engine: str, compute_type: str, threads: int, device: str):
    """The engine for the command, with any note on why it is not the export on stderr."""
    from .engines import EngineOptions
    from .engines import open_engine as _open

    eng = _open(model, task, EngineOptions(engine, compute_type, threads, device))
    for n in eng.notes:
        ui.note(n)
    return eng


def read_inputs(texts: list[str] | None, path: Path | None, paragraphs: bool = False) -> list[str]:
    """TEXT arguments, else the file, else stdin: one input per line; for ``paragraphs``
    (summarize) JSONL objects or blank-line-separated documents."""
    if texts:
        return list(texts)
    if path is not None:
        if path.is_dir():
            raise AttnError(f"input {path} is a directory", "give a text file to -i")
        if not path.is_file():
            raise AttnError(f"input file {path} not found", "check -i")
        try:
            raw = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise AttnError(f"{path} is not UTF-8 text", "convert it, e.g. iconv -t utf-8") from None
        except OSError as e:
            raise AttnError(f"cannot read {path}: {e.strerror or e}", "check its permissions") from None
    else:
        raw = sys.stdin.read()
    if not paragraphs:
        return raw.split("\n")[:-1] if raw.endswith("\n") else raw.split("\n") if raw else []
    lines = [x for x in raw.splitlines() if x.strip()]
    if lines and all(x.lstrip().startswith("{") for x in lines):
        return [_document(x, i) for i, x in enumerate(lines, 1)]
    return [p.strip() for p in raw.split("\n\n") if p.strip()]


def _document(line: str, number: int) -> str:
    from .data import SRC_FIELDS

    try:
        obj = json.loads(line)
    except ValueError:
        raise AttnError(f"input line {number} is not valid JSON", "fix that line") from None
    for key in SRC_FIELDS:
        if isinstance(obj.get(key), str):
            return obj[key]
    raise AttnError(f"input line {number} has no document field", f"use one of {', '.join(SRC_FIELDS)}")


def check_output(path: Path | None) -> None:
    """Refuse an unusable -o before any work is done (the write itself is atomic)."""
    if path is None:
        return
    if path.is_dir():
        raise AttnError(f"output {path} is a directory", "give a file name to -o")
    parent = path.resolve().parent
    if not parent.is_dir():
        raise AttnError(f"the directory of {path} does not exist", "create it first")
    if not os.access(parent, os.W_OK):  # (root passes this; the atomic write still checks)
        raise AttnError(f"cannot write to {parent}", "choose a writable -o")


def check_max_tokens(max_tokens: int) -> None:
    if max_tokens <= 0:
        raise AttnError(f"--max-tokens must be positive, got {max_tokens}", "e.g. --max-tokens 6000")


def write_outputs(lines: list[str], path: Path | None) -> None:
    text = "".join(line + "\n" for line in lines)
    if path is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    from .checkpoint import atomic_write_text

    check_output(path)
    atomic_write_text(path, text)


def _decode_cfg(beam, length_penalty, max_len_a, max_len_b, min_len, no_repeat_ngram, sample=False,
                top_k=0, top_p=1.0, temperature=1.0, seed=0):
    from .decoding import DecodeConfig

    try:
        return DecodeConfig(beam=beam, length_penalty=length_penalty, max_len_a=max_len_a,
                            max_len_b=max_len_b, min_len=min_len, no_repeat_ngram=no_repeat_ngram,
                            sample=sample, top_k=top_k, top_p=top_p, temperature=temperature, seed=seed)
    except ValueError as e:
        raise AttnError(f"bad decoding option: {e}", "see --help") from None


def _generate(task, model, texts, input_file, output, as_json, dcfg, eng_opts, max_tokens, show, plot):
    from .infer import encode_inputs

    check_max_tokens(max_tokens)
    check_output(output)
    run = open_engine(model, task, *eng_opts)
    inputs = read_inputs(texts, input_file, paragraphs=task == "summarize")
    ids, cut = encode_inputs(run, inputs)
    if cut:
        ui.warn(f"{cut} input(s) longer than the model's {run.model_cfg.max_len} positions were truncated")
    with ui.progress() as bar:
        job = bar.add_task(f"{task} ({'beam ' + str(dcfg.beam) if dcfg.beam > 1 else 'greedy'})",
                           total=len(inputs), info="")
        results = run.generate(ids, dcfg, max_tokens, on_batch=lambda n: bar.advance(job, n))
    outs = [run.toks.tgt.decode(o) for o, _ in results]
    if as_json:
        lines = [json.dumps({"input": i, "output": o, "score": round(s, 5), "engine": run.name},
                            ensure_ascii=False)
                 for i, o, (_, s) in zip(inputs, outs, results, strict=True)]
    else:
        lines = [o.replace("\n", " ") for o in outs]
    write_outputs(lines, output)
    if show or plot:
        _show_attention(run, ids, results, show, plot)


def _show_attention(engine, ids, results, show: bool, plot: Path | None) -> None:
    import torch

    from .engines import torch_run_for
    from .explain import cross_alignment, plot_alignment, render_alignment
    from .tokenizer import EOS_ID

    if engine.name != "torch":
        ui.note("attention pictures come from the torch model, on the outputs above")
    run = torch_run_for(engine)
    shown = [i for i, x in enumerate(ids) if x][:5 if show else 1]
    for n, i in enumerate(shown):
        out = results[i][0] + [EOS_ID]
        matrix = cross_alignment(run.model, torch.tensor([ids[i]], device=run.device),
                                 torch.tensor([out], device=run.device)).cpu()
        src_p = [run.toks.src.id_to_piece(t) for t in ids[i]]
        out_p = [run.toks.tgt.id_to_piece(t) for t in out]
        if show:
            ui.err.print(render_alignment(src_p, out_p, matrix))
        if plot and n == 0:
            plot_alignment(src_p, out_p, matrix, plot)
            ui.note(f"attention plot of the first input saved to {plot}")


@app.command(cls=AttnCommand, epilog="Examples:  attn translate --model runs/it-en \"Dov'è la stazione?\"  ·  "
             "cat news.de | attn translate -m runs/de-en --beam 5 > news.en  ·  "
             "attn translate -m runs/it-en --show-attention --plot att.png \"Ho fame.\"")
@command
def translate(
    model: ModelOpt, texts: TextsArg = None, input_file: InOpt = None, output: OutOpt = None,
    as_json: JsonOpt = False,
    beam: Annotated[int, typer.Option("--beam", rich_help_panel=DEC, help="Beam size; 1 = greedy.")] = 5,
    length_penalty: Annotated[float, typer.Option("--length-penalty", rich_help_panel=DEC,
                                                  help="GNMT length penalty alpha.")] = 0.6,
    max_len_a: Annotated[float, typer.Option("--max-len-a", rich_help_panel=DEC,
                                             help="Output limit = a * source length + b.")] = 1.5,
    max_len_b: Annotated[int, typer.Option("--max-len-b", rich_help_panel=DEC, help="The b above.")] = 10,
    min_len: Annotated[int, typer.Option("--min-len", rich_help_panel=DEC, help="Minimum output tokens.")] = 0,
    no_repeat_ngram: Annotated[int, typer.Option("--no-repeat-ngram", rich_help_panel=DEC,
                                                 help="Never repeat n-grams of this size; 0 = off.")] = 0,
    show_attention: Annotated[bool, flag("--show-attention", help=(
        "Print the source/output cross-attention as a heatmap (first 5 inputs, on stderr)."))] = False,
    plot: Annotated[Path | None, typer.Option("--plot", help=(
        "Save the first input's attention heatmap as a PNG (needs matplotlib)."))] = None,
    device: DeviceOpt = "auto", max_tokens: MaxTokOpt = 6000,
    engine: EngineOpt = "auto", compute_type: ComputeOpt = "auto", threads: ThreadsOpt = DEFAULT_THREADS,
) -> None:
    """Translate text with a trained translation model."""
    dcfg = _decode_cfg(beam, length_penalty, max_len_a, max_len_b, min_len, no_repeat_ngram)
    _generate("translate", model, texts, input_file, output, as_json, dcfg,
              (engine, compute_type, threads, device), max_tokens, show_attention, plot)


@app.command(cls=AttnCommand, epilog="Examples:  attn summarize -m runs/dialogsum -i dialogues.jsonl  ·  "
             "attn summarize -m runs/news --sample --top-p 0.9 < article.txt")
@command
def summarize(
    model: ModelOpt, texts: TextsArg = None, input_file: InOpt = None, output: OutOpt = None,
    as_json: JsonOpt = False,
    beam: Annotated[int, typer.Option("--beam", rich_help_panel=DEC, help="Beam size; 1 = greedy.")] = 4,
    length_penalty: Annotated[float, typer.Option("--length-penalty", rich_help_panel=DEC,
                                                  help="GNMT length penalty alpha.")] = 1.0,
    max_len_a: Annotated[float, typer.Option("--max-len-a", rich_help_panel=DEC,
                                             help="Output limit = a * source length + b.")] = 0.0,
    max_len_b: Annotated[int, typer.Option("--max-len-b", rich_help_panel=DEC, help="The b above.")] = 80,
    min_len: Annotated[int, typer.Option("--min-len", rich_help_panel=DEC, help="Minimum output tokens.")] = 5,
    no_repeat_ngram: Annotated[int, typer.Option("--no-repeat-ngram", rich_help_panel=DEC,
                                                 help="Never repeat n-grams of this size; 0 = off.")] = 3,
    sample: Annotated[bool, flag("--sample", rich_help_panel=DEC,
                                 help="Sample instead of beam search.")] = False,
    top_k: Annotated[int, typer.Option("--top-k", rich_help_panel=DEC,
                                       help="Sample among the k best; 0 = off.")] = 0,
    top_p: Annotated[float, typer.Option("--top-p", rich_help_panel=DEC, help="Nucleus sampling mass.")] = 1.0,
    temperature: Annotated[float, typer.Option("--temperature", rich_help_panel=DEC,
                                               help="Sampling temperature.")] = 1.0,
    seed: Annotated[int, typer.Option("--seed", rich_help_panel=DEC, help="Sampling seed.")] = 0,
    show_attention: Annotated[bool, flag("--show-attention", help=(
        "Print the document/summary cross-attention heatmap (first 5 inputs, on stderr)."))] = False,
    plot: Annotated[Path | None, typer.Option("--plot", help="Save the first input's heatmap as a PNG.")] = None,
    device: DeviceOpt = "auto", max_tokens: MaxTokOpt = 12000,
    engine: EngineOpt = "auto", compute_type: ComputeOpt = "auto", threads: ThreadsOpt = DEFAULT_THREADS,
) -> None:
    """Summarize documents (one per line, JSONL, or separated by blank lines)."""
    dcfg = _decode_cfg(1 if sample else beam, length_penalty, max_len_a, max_len_b, min_len,
                       no_repeat_ngram, sample, top_k, top_p, temperature, seed)
    _generate("summarize", model, texts, input_file, output, as_json, dcfg,
              (engine, compute_type, threads, device), max_tokens, show_attention, plot)


@app.command(cls=AttnCommand, epilog="Examples:  attn sentiment -m runs/sst2 \"a gorgeous, witty film\"  ·  "
             "attn sentiment -m runs/sst2 --explain \"not bad at all\"  ·  "
             "attn sentiment -m runs/sst2 --json -i reviews.txt")
@command
def sentiment(
    model: ModelOpt, texts: TextsArg = None, input_file: InOpt = None, output: OutOpt = None,
    as_json: Annotated[bool, flag("--json", help="JSON lines with label, confidence and every "
                                  "label's probability.")] = False,
    explain: Annotated[bool, flag("--explain", help=(
        "Shade each token by its importance (attention rollout) and list the top tokens (stderr)."))] = False,
    device: DeviceOpt = "auto", max_tokens: MaxTokOpt = 16000,
    engine: EngineOpt = "auto", compute_type: ComputeOpt = "auto", threads: ThreadsOpt = DEFAULT_THREADS,
) -> None:
    """Classify the sentiment of text with a trained sentiment model."""
    from .infer import encode_inputs

    check_max_tokens(max_tokens)
    check_output(output)
    run = open_engine(model, "sentiment", engine, compute_type, threads, device)
    inputs = read_inputs(texts, input_file)
    ids, cut = encode_inputs(run, inputs)
    if cut:
        ui.warn(f"{cut} input(s) longer than the model's {run.model_cfg.max_len} positions were truncated")
    names = run.meta["label_names"]
    with ui.progress() as bar:
        job = bar.add_task("sentiment", total=len(inputs), info="")
        probs = run.classify(ids, max_tokens, on_batch=lambda n: bar.advance(job, n))
    best = [max(range(len(p)), key=p.__getitem__) for p in probs]
    if as_json:
        lines = [json.dumps({"input": t, "label": names[b], "confidence": round(p[b], 5),
                             "probs": {n: round(x, 5) for n, x in zip(names, p, strict=True)},
                             "engine": run.name},
                            ensure_ascii=False) for t, p, b in zip(inputs, probs, best, strict=True)]
    else:
        lines = ["" if not t.strip() else names[b] for t, b in zip(inputs, best, strict=True)]
    write_outputs(lines, output)
    if explain:
        _explain(run, ids, [names[b] for b in best], [p[b] for p, b in zip(probs, best, strict=True)])


def _explain(engine, ids, labels, confidences) -> None:
    import torch

    from .engines import torch_run_for
    from .explain import render_importance, token_importance, top_tokens

    if engine.name != "torch":
        ui.note("--explain uses the torch model (attention rollout)")
    run = torch_run_for(engine)

    for x, label, conf in zip(ids, labels, confidences, strict=True):
        if not x:
            continue
        weights = token_importance(run.model, torch.tensor([x], device=run.device))[0].tolist()
        pieces = [run.toks.src.id_to_piece(t) for t in x]
        ui.err.print(render_importance(pieces, weights))
        top = ", ".join(f"{w} {v:.2f}" for w, v in top_tokens(pieces, weights, k=5))
        ui.err.print(f"  -> {label} ({conf:.1%}); most important: {top}", markup=False)


from . import cli_eval  # noqa: E402,F401  (attn eval, attn info)
