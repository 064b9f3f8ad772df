"""`attn eval` (score a model on a dataset split), `attn info` (what a run directory holds) and
`attn export` (the run as a CTranslate2 model, for the ctranslate2 engine)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from . import console as ui
from .cli_app import AttnCommand, app, command, flag
from .cli_io import check_max_tokens, check_output, open_engine, write_outputs
from .cli_options import (DEC, ComputeOpt, DataOpt, EngineOpt, LabelFieldOpt, ModelOpt, SrcFieldOpt, SrcOpt,
                          SubsetOpt, TextFieldOpt, TgtFieldOpt, TgtOpt, ThreadsOpt, decode_cfg, make_fields)
from .engines import DEFAULT_THREADS


@app.command("eval", cls=AttnCommand, epilog="Examples:  attn eval -m runs/de-en --data ../shared/data/translation/"
             "multi30k --split test_2016_flickr  ·  attn eval -m runs/sst2 --data ../shared/data/"
             "sentiment/sst2 --json")
@command
def evaluate(
    model: ModelOpt,
    data: DataOpt,
    split: Annotated[str, typer.Option("--split", help="Which split of the SPEC to score.")] = "test",
    subset: SubsetOpt = None,
    src: SrcOpt = None, tgt: TgtOpt = None, src_field: SrcFieldOpt = None, tgt_field: TgtFieldOpt = None,
    text_field: TextFieldOpt = None, label_field: LabelFieldOpt = None,
    as_json: Annotated[bool, flag("--json", help="Print the metrics as one JSON object.")] = False,
    output: Annotated[Path | None, typer.Option("--output", "-o", help=(
        "Keep the hypotheses (or predicted labels), one per line, in FILE."))] = None,
    beam: Annotated[int, typer.Option("--beam", rich_help_panel=DEC, help=(
        "Beam size for translate/summarize; 1 = greedy (default: the task's, see attn info)."))] = 0,
    length_penalty: Annotated[float | None, typer.Option("--length-penalty", rich_help_panel=DEC, help=(
        "GNMT alpha (default: the task's, see attn info)."))] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
    max_tokens: Annotated[int, typer.Option("--max-tokens", help="Source tokens per batch.")] = 6000,
    engine: EngineOpt = "auto", compute_type: ComputeOpt = "auto", threads: ThreadsOpt = DEFAULT_THREADS,
) -> None:
    """Score a model on a dataset split: BLEU/chrF, ROUGE, or accuracy/macro-F1/confusion."""
    from .data import Fields, load_eval_data
    from .infer import encode_inputs
    from .metrics import bleu_chrf, classification, rouge

    check_max_tokens(max_tokens)
    check_output(output)
    run = open_engine(model, None, engine, compute_type, threads, device)
    task, meta = run.task, run.meta
    fields = Fields(**{k: v for k, v in meta.get("fields", {}).items() if k in Fields.__dataclass_fields__})
    given = make_fields(src, tgt, src_field, tgt_field, text_field, label_field)  # this data's names
    fields = Fields(**{k: getattr(given, k) or getattr(fields, k) for k in Fields.__dataclass_fields__})
    ds = load_eval_data(data, task, fields, split=split, subset=subset, label_names=meta.get("label_names"))
    start = time.perf_counter()
    inputs = ds["text"] if task == "sentiment" else ds["src"]
    ids, _ = encode_inputs(run, list(inputs))
    with ui.progress() as bar:
        job = bar.add_task(f"eval {task} on {split}", total=len(ids), info="")
        advance = lambda n: bar.advance(job, n)  # noqa: E731
        if task == "sentiment":
            probs = run.classify(ids, on_batch=advance)
            preds = [max(range(len(p)), key=p.__getitem__) for p in probs]
            metrics = classification(preds, list(ds["label"]), run.model_cfg.num_labels)
            hyps = [meta["label_names"][p] for p in preds]
        else:
            dcfg = decode_cfg(task, beam=beam or None, length_penalty=length_penalty)
            hyps = [run.toks.tgt.decode(o) for o, _ in run.generate(ids, dcfg, max_tokens, advance)]
            refs = list(ds["references"]) if "references" in ds.column_names else list(ds["tgt"])
            metrics = bleu_chrf(hyps, refs) if task == "translate" else rouge(hyps, refs)
            metrics["beam"] = dcfg.beam
    seconds = time.perf_counter() - start
    metrics.update(examples=len(ids), seconds=round(seconds, 2), per_second=round(len(ids) / seconds, 2),
                   engine=run.describe())
    if output is not None:
        write_outputs([h.replace("\n", " ") for h in hyps], output)
    if as_json:
        ui.out.print(json.dumps({"model": str(model), "data": data, "split": split, **metrics}), markup=False)
        return
    _metrics_table(metrics, f"{task} on {data} [{split}]")


def _metrics_table(metrics: dict, title: str) -> None:
    table = Table(title=title, title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in metrics.items():
        if k not in ("confusion", "bleu_signature"):
            table.add_row(k, f"{v:.2f}" if isinstance(v, float) else str(v))
    ui.out.print(table)
    if "confusion" in metrics:
        conf = Table(title="confusion (rows = gold, columns = predicted)", title_justify="left")
        conf.add_column("")
        for j in range(len(metrics["confusion"])):
            conf.add_column(str(j), justify="right")
        for i, row in enumerate(metrics["confusion"]):
            conf.add_row(str(i), *map(str, row))
        ui.out.print(conf)
    if "bleu_signature" in metrics:
        ui.out.print(f"sacreBLEU: {metrics['bleu_signature']}", markup=False)


@app.command(cls=AttnCommand, epilog="Example:  attn info runs/it-en")
@command
def info(run_dir: Annotated[Path, typer.Argument(help="Run directory.", show_default=False)]) -> None:
    """Show what a run directory holds: task, size, vocabulary, data, training, best metric."""
    from .checkpoint import LAST_DIR, find_dir
    from .infer import read_meta
    from .tokenizer import Tokenizers

    meta = read_meta(run_dir)
    m = meta["model"]
    toks = Tokenizers.load(run_dir)
    table = Table(title=f"attn model {run_dir}", show_header=False, title_justify="left")
    table.add_row("task", meta["task"])
    table.add_row("preset", f"{meta.get('preset')}: d_model {m['d_model']}, heads {m['n_heads']}, "
                  f"layers {m['n_enc_layers']}+{m['n_dec_layers']}, ffn {m['d_ff']}, max_len {m['max_len']}")
    table.add_row("parameters", f"{meta.get('parameters', 0):,}")
    table.add_row("vocabulary", f"{toks.src.vocab_size:,} " + ("joint" if toks.joint else
                                                               f"/ {toks.tgt.vocab_size:,} separate"))
    pre = meta.get("pretrain")
    if pre:
        table.add_row("pretraining run", f"{pre.get('objective')} on {pre.get('texts', 0):,} texts; fine-tune it "
                      f"with attn train {meta['task']} --init-from {run_dir}")
    elif meta["task"] == "sentiment":
        table.add_row("labels", ", ".join(meta.get("label_names") or []))
    else:
        if meta.get("languages", {}).get("src"):
            table.add_row("languages", f"{meta['languages']['src']} -> {meta['languages']['tgt']}")
        from .config import DECODE_DEFAULTS, describe_decoding

        table.add_row("decoding", describe_decoding(DECODE_DEFAULTS[meta["task"]]) +
                      " (options of attn translate/summarize change it)")
    d = meta.get("data", {})
    table.add_row("training data", f"{d.get('train')} ({d.get('train_examples', 0):,} examples), "
                  f"validation {d.get('valid') or 'held out'} ({d.get('valid_examples', 0):,})")
    if meta.get("init_from"):
        p = meta.get("pretrained")
        seen = (f"; pretrained ({p['objective']}) on {p['data']}: {p['texts']:,} texts, {p['steps']:,} steps, "
                f"{p['tokens_seen']:,} tokens seen" if p else "")
        table.add_row("started from", f"{meta['init_from']} (--init-from){seen}")
    if not pre:
        table.add_row("exported engine", _export_row(run_dir, meta, toks))
    last = find_dir(run_dir / LAST_DIR)
    if last is not None and (last / "state.json").is_file():
        try:
            metric = ("masked_accuracy" if meta["task"] == "sentiment" else "token_accuracy") if pre else None
            _training_rows(table, json.loads((last / "state.json").read_text()), meta["task"], metric)
        except (ValueError, KeyError, TypeError, OSError):
            table.add_row("training", "last/state.json is unreadable")
    ui.out.print(table)


def _training_rows(table: Table, st: dict, task: str, metric: str | None = None) -> None:
    from .metrics import PRIMARY_METRIC

    table.add_row("training", f"{st['step']:,} steps, {st['train_seconds'] / 60:.1f} min")
    if st.get("best") is not None:
        table.add_row("best validation", f"{metric or PRIMARY_METRIC[task]} {st['best']:.2f} "
                      f"(step {st['best_step']})")


def _export_row(run_dir: Path, meta: dict, toks) -> str:
    from .config import ModelConfig
    from .export import describe, export_status

    try:
        cfg = ModelConfig.from_dict(meta["model"])
    except (ValueError, TypeError):
        return "unknown (config.json model is damaged)"
    return describe(export_status(run_dir, cfg, toks.src.vocab_size, toks.tgt.vocab_size))


@app.command("export", cls=AttnCommand, epilog="Examples:  attn export runs/de-en  ·  "
             "attn export runs/de-en --quantize int8  ·  attn translate -m runs/de-en --engine ctranslate2 "
             "\"Ein Hund läuft.\"")
@command
def export(
    run_dir: Annotated[Path, typer.Argument(help="Run directory.", show_default=False)],
    quantize: Annotated[str, typer.Option("--quantize", help=(
        "Weight type: none (float32), int8 (fastest on CPU), int8_float16 or float16 (GPU)."))] = "none",
    out: Annotated[Path | None, typer.Option("--out", help="Where to write it (default: RUN_DIR/ct2).")] = None,
) -> None:
    """Export a run's best weights as a CTranslate2 model, for --engine ctranslate2 (and auto)."""
    from .export import export_run

    start = time.perf_counter()
    path, info = export_run(run_dir, quantize, out)
    size = sum(p.stat().st_size for p in path.iterdir() if p.is_file())
    ui.err.print(f"exported {info.task} model ({info.quantization}, {size / 1e6:.1f} MB) to {path} "
                 f"in {time.perf_counter() - start:.1f} s", markup=False)
