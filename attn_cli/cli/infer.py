"""`attn translate`, `attn summarize` and `attn sentiment`.

Results go to stdout (or `-o FILE`, written atomically), one line per input in input order;
messages, progress and attention pictures go to stderr, so the commands compose in pipes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from attn_cli.cli import console as ui
from attn_cli.cli.app import AttnCommand, app, command, flag
from attn_cli.cli.io import check_max_tokens, check_output, open_engine, read_inputs, write_outputs
from attn_cli.cli.options import (
    DEC,
    ComputeOpt,
    DeviceOpt,
    EngineOpt,
    InOpt,
    JsonOpt,
    MaxTokOpt,
    ModelOpt,
    OutOpt,
    TextsArg,
    ThreadsOpt,
    decode_cfg,
)
from attn_cli.config import DECODE_DEFAULTS
from attn_cli.errors import AttnError
from attn_cli.infer.engine import DEFAULT_THREADS

TR, SU = DECODE_DEFAULTS["translate"], DECODE_DEFAULTS["summarize"]

def _generate(task, model, texts, input_file, output, as_json, dcfg, eng_opts, max_tokens, show, plot,
              split=False):
    from attn_cli.infer.api import Model

    check_max_tokens(max_tokens)
    check_output(output)
    if plot is not None:
        check_plot_dependency()
    run = open_engine(model, task, *eng_opts)
    api = Model(run)  # the Python API's model: the same batching and engine calls as attn_cli.load
    inputs = read_inputs(texts, input_file, paragraphs=task == "summarize")
    plan = api.plan(inputs, split)  # sentences (translate) or whole texts, over-long ones cut
    if plan.note():
        ui.note(plan.note())
    with ui.progress() as bar:
        job = bar.add_task(f"{task} ({'beam ' + str(dcfg.beam) if dcfg.beam > 1 else 'greedy'})",
                           total=len(plan.ids), info="")
        results = api.generate_ids(plan.ids, dcfg, max_tokens, on_batch=lambda n: bar.advance(job, n))
    outs = api.finish(plan, results)
    if as_json:
        lines = [json.dumps(_json_row(i, o, run.name), ensure_ascii=False) for i, o in zip(inputs, outs, strict=True)]
    else:  # a split text keeps its own line breaks (a TEXT with paragraphs); a whole one is one line
        lines = [o.text if split else o.text.replace("\n", " ") for o in outs]
    write_outputs(lines, output)
    if show or plot:
        _show_attention(run, plan.ids, results, show, plot)


def _json_row(text: str, out, engine: str) -> dict:
    row = {"input": text, "output": out.text, "score": round(out.score, 5), "engine": engine}
    if out.segments is not None:
        row["segments"] = [{"source": s.source, "translation": s.text, **({"windows": s.windows} if s.windows > 1
                                                                         else {})} for s in out.segments]
    if out.notes:
        row["notes"] = list(out.notes)
    return row


def check_plot_dependency() -> None:
    """--plot needs matplotlib (an optional extra): refused before any work, not after it."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise AttnError("--plot needs matplotlib", "pip install 'attn[plot]'") from None


def _show_attention(engine, ids, results, show: bool, plot: Path | None) -> None:
    import torch

    from attn_cli.data.tokenizer import EOS_ID
    from attn_cli.infer.engines import torch_run_for
    from attn_cli.infer.explain import cross_alignment, plot_alignment, render_alignment

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
    as_json: Annotated[bool, flag("--json", help="JSON lines with input, output, score and the sentence "
                                  "segments (source and translation of each).")] = False,
    beam: Annotated[int, typer.Option("--beam", rich_help_panel=DEC, help="Beam size; 1 = greedy.")] = TR.beam,
    length_penalty: Annotated[float, typer.Option("--length-penalty", rich_help_panel=DEC,
                                                  help="GNMT length penalty alpha.")] = TR.length_penalty,
    max_len_a: Annotated[float, typer.Option("--max-len-a", rich_help_panel=DEC,
                                             help="Output limit = a * source length + b.")] = TR.max_len_a,
    max_len_b: Annotated[int, typer.Option("--max-len-b", rich_help_panel=DEC, help="The b above.")] = TR.max_len_b,
    min_len: Annotated[int, typer.Option("--min-len", rich_help_panel=DEC, help="Minimum output tokens.")] = TR.min_len,
    no_repeat_ngram: Annotated[int, typer.Option(
        "--no-repeat-ngram", rich_help_panel=DEC,
        help="Never repeat n-grams of this size; 0 = off.")] = TR.no_repeat_ngram,
    split_sentences: Annotated[bool, flag("--split-sentences", help=(
        "Translate each input sentence by sentence (the default; sentencex, in the run's source "
        "language) and join the translations with the input's own spacing and line breaks; a sentence "
        "over the model's positions goes in token windows."))] = False,
    no_split_sentences: Annotated[bool, flag("--no-split-sentences", help=(
        "Translate each input whole (over the model's positions: cut to its head)."))] = False,
    show_attention: Annotated[bool, flag("--show-attention", help=(
        "Print the source/output cross-attention as a heatmap (first 5 sentences, on stderr)."))] = False,
    plot: Annotated[Path | None, typer.Option("--plot", help=(
        "Save the first sentence's attention heatmap as a PNG (needs matplotlib)."))] = None,
    device: DeviceOpt = "auto", max_tokens: MaxTokOpt = 6000,
    engine: EngineOpt = "auto", compute_type: ComputeOpt = "auto", threads: ThreadsOpt = DEFAULT_THREADS,
) -> None:
    """Translate text with a trained translation model."""
    if split_sentences and no_split_sentences:
        raise AttnError("--split-sentences and --no-split-sentences contradict each other", "pass one of them")
    dcfg = decode_cfg("translate", beam=beam, length_penalty=length_penalty, max_len_a=max_len_a,
                      max_len_b=max_len_b, min_len=min_len, no_repeat_ngram=no_repeat_ngram)
    _generate("translate", model, texts, input_file, output, as_json, dcfg,
              (engine, compute_type, threads, device), max_tokens, show_attention, plot, not no_split_sentences)


@app.command(cls=AttnCommand, epilog="Examples:  attn summarize -m runs/dialogsum -i dialogues.jsonl  ·  "
             "attn summarize -m runs/news --sample --top-p 0.9 < article.txt")
@command
def summarize(
    model: ModelOpt, texts: TextsArg = None, input_file: InOpt = None, output: OutOpt = None,
    as_json: JsonOpt = False,
    beam: Annotated[int, typer.Option("--beam", rich_help_panel=DEC, help="Beam size; 1 = greedy.")] = SU.beam,
    length_penalty: Annotated[float, typer.Option("--length-penalty", rich_help_panel=DEC,
                                                  help="GNMT length penalty alpha.")] = SU.length_penalty,
    max_len_a: Annotated[float, typer.Option("--max-len-a", rich_help_panel=DEC,
                                             help="Output limit = a * source length + b.")] = SU.max_len_a,
    max_len_b: Annotated[int, typer.Option("--max-len-b", rich_help_panel=DEC, help="The b above.")] = SU.max_len_b,
    min_len: Annotated[int, typer.Option("--min-len", rich_help_panel=DEC, help="Minimum output tokens.")] = SU.min_len,
    no_repeat_ngram: Annotated[int, typer.Option(
        "--no-repeat-ngram", rich_help_panel=DEC,
        help="Never repeat n-grams of this size; 0 = off.")] = SU.no_repeat_ngram,
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
    dcfg = decode_cfg("summarize", beam=1 if sample else beam, length_penalty=length_penalty,
                      max_len_a=max_len_a, max_len_b=max_len_b, min_len=min_len,
                      no_repeat_ngram=no_repeat_ngram, sample=sample, top_k=top_k, top_p=top_p,
                      temperature=temperature, seed=seed)
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
    from attn_cli.infer.api import Model

    check_max_tokens(max_tokens)
    check_output(output)
    run = open_engine(model, "sentiment", engine, compute_type, threads, device)
    api = Model(run)  # the Python API's model: the same batching and engine calls as attn_cli.load
    inputs = read_inputs(texts, input_file)
    ids, cut = api.encode(inputs)
    if cut:
        ui.warn(f"{cut} input(s) longer than the model's {run.model_cfg.max_len} positions were truncated")
    names = run.meta["label_names"]
    with ui.progress() as bar:
        job = bar.add_task("sentiment", total=len(inputs), info="")
        probs = api.classify_ids(ids, max_tokens, on_batch=lambda n: bar.advance(job, n))
    best = [max(range(len(p)), key=p.__getitem__) for p in probs]
    if as_json:
        lines = [json.dumps({"input": t, "label": names[b], "confidence": round(p[b], 5),
                             "probabilities": {n: round(x, 5) for n, x in zip(names, p, strict=True)},
                             "engine": run.name},
                            ensure_ascii=False) for t, p, b in zip(inputs, probs, best, strict=True)]
    else:
        lines = ["" if not t.strip() else names[b] for t, b in zip(inputs, best, strict=True)]
    write_outputs(lines, output)
    if explain:
        _explain(run, ids, [names[b] for b in best], [p[b] for p, b in zip(probs, best, strict=True)])


def _explain(engine, ids, labels, confidences) -> None:
    import torch

    from attn_cli.infer.engines import torch_run_for
    from attn_cli.infer.explain import render_importance, token_importance, top_tokens

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

