"""`attn eval` (score a model on a dataset split), `attn info` (what a run directory holds) and
`attn export` (the run as a CTranslate2 model, for the ctranslate2 engine)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from attn_cli.cli import console as ui
from attn_cli.cli.app import AttnCommand, app, command, flag
from attn_cli.cli.infer import check_plot_dependency
from attn_cli.cli.io import check_max_tokens, check_output, open_engine, write_outputs
from attn_cli.cli.options import (
    DEC,
    ComputeOpt,
    DataOpt,
    EngineOpt,
    LabelFieldOpt,
    ModelOpt,
    SrcFieldOpt,
    SrcOpt,
    SubsetOpt,
    TextFieldOpt,
    TgtFieldOpt,
    TgtOpt,
    ThreadsOpt,
    decode_cfg,
    make_fields,
)
from attn_cli.infer.engine import DEFAULT_THREADS


@app.command("eval", cls=AttnCommand, epilog="Examples:  attn eval -m runs/de-en --data ../shared/data/translation/"
             "multi30k --split test_2016_flickr  ·  attn eval -m runs/sst2 --data ../shared/data/"
             "sentiment/sst2 --json --baseline")
@command
def evaluate(
    model: ModelOpt,
    data: DataOpt,
    split: Annotated[str, typer.Option("--split", help=(
        "Which split of a directory or Hub dataset to score. A single file (or a parallel prefix) "
        "has no splits: all its rows are scored, whatever --split says, with a note, and --json "
        "gives \"split\": null."))] = "test",
    subset: SubsetOpt = None,
    src: SrcOpt = None, tgt: TgtOpt = None, src_field: SrcFieldOpt = None, tgt_field: TgtFieldOpt = None,
    text_field: TextFieldOpt = None, label_field: LabelFieldOpt = None,
    as_json: Annotated[bool, flag("--json", help="Print the metrics as one JSON object.")] = False,
    output: Annotated[Path | None, typer.Option("--output", "-o", help=(
        "Keep the hypotheses (or predicted labels), one per line, in FILE."))] = None,
    beam: Annotated[int | None, typer.Option("--beam", rich_help_panel=DEC, show_default="the task's, see attn info",
                                             help="Beam size for translate/summarize; 1 = greedy.")] = None,
    length_penalty: Annotated[float | None, typer.Option("--length-penalty", rich_help_panel=DEC,
                                                         show_default="the task's, see attn info",
                                                         help="GNMT alpha.")] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
    max_tokens: Annotated[int, typer.Option("--max-tokens", help="Source tokens per batch.")] = 6000,
    engine: EngineOpt = "auto", compute_type: ComputeOpt = "auto", threads: ThreadsOpt = DEFAULT_THREADS,
    baseline: Annotated[bool, flag("--baseline", help=(
        "Also score the task's baseline on the split, beside the model: TF-IDF 1-2-grams + logistic "
        "regression fit on the SPEC's train split (sentiment), lead-3 (summarize), the source copied "
        "(translate)."))] = False,
    baseline_train: Annotated[str | None, typer.Option("--baseline-train", help=(
        "--baseline for sentiment: fit on this SPEC's train split instead of --data's (when --data "
        "is one file holding only the evaluated split)."))] = None,
) -> None:
    """Score a model on a dataset split: BLEU/chrF, ROUGE, or accuracy/macro-F1/confusion."""
    from attn_cli.data.spec import Fields, single_split
    from attn_cli.data.tasks import load_eval_data
    from attn_cli.eval.metrics import bleu_chrf, classification, rouge
    from attn_cli.infer.runs import encode_inputs

    check_max_tokens(max_tokens)
    check_output(output)
    run = open_engine(model, None, engine, compute_type, threads, device)
    task, meta = run.task, run.meta
    fields = Fields(**{k: v for k, v in meta.get("fields", {}).items() if k in Fields.__dataclass_fields__})
    given = make_fields(src, tgt, src_field, tgt_field, text_field, label_field)  # this data's names
    fields = Fields(**{k: getattr(given, k) or getattr(fields, k) for k in Fields.__dataclass_fields__})
    ds = load_eval_data(data, task, fields, split=split, subset=subset, label_names=meta.get("label_names"))
    whole = single_split(data, fields, subset)  # one file: --split picks nothing
    if whole:
        ui.note(f"{data} is one file with no splits: scoring all its {len(ds):,} rows "
                "(--split picks a split of a directory or Hub dataset)")
    where = "all rows" if whole else split
    base = (_baseline(task, ds, baseline_train or data, data, split, fields, subset, meta.get("label_names"))
            if baseline else None)
    start = time.perf_counter()
    inputs = ds["text"] if task == "sentiment" else ds["src"]
    ids, _ = encode_inputs(run, list(inputs))
    with ui.progress() as bar:
        job = bar.add_task(f"eval {task} on {where}", total=len(ids), info="")
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
    if base is not None:
        from attn_cli.eval.baselines import wins
        from attn_cli.eval.metrics import PRIMARY_METRIC

        base["wins"] = wins(task, base, metrics[PRIMARY_METRIC[task]])
    if as_json:
        ui.out.print(json.dumps({"model": str(model), "data": data, "split": None if whole else split, **metrics,
                                 **({"baseline": base} if base is not None else {})}), markup=False)
        return
    _metrics_table(metrics, escape(f"{task} on {data} [{where}]"), base, meta.get("label_names"))
    if base is not None:
        from attn_cli.eval.baselines import describe, verdict

        ui.out.print(f"baseline: {describe(base)} ({base['fit_on']}), {base['seconds']:.1f} s", markup=False)
        line = verdict(task, base, metrics[PRIMARY_METRIC[task]], where=where)
        if line:
            ui.out.print(line[0].upper() + line[1:] + ".", markup=False)


def _baseline(task: str, ds, train_spec: str, data: str, split: str, fields, subset: str | None,
              label_names: list[str] | None) -> dict | None:
    """The task's baseline on the evaluated rows ``ds``; sentiment fits on ``train_spec``'s
    train split (raw text, at most baselines.FIT_ROWS rows: a seeded sample). A scikit-learn
    failure is one warning line and no baseline."""
    from attn_cli.data.spec import locate
    from attn_cli.data.tasks import load_eval_data
    from attn_cli.eval.baselines import sample_rows, sentiment_baseline, summarize_baseline, translate_baseline

    if task != "sentiment":
        refs = list(ds["references"]) if "references" in ds.column_names else list(ds["tgt"])
        fn = summarize_baseline if task == "summarize" else translate_baseline
        return {**fn(list(ds["src"]), refs), "fit_on": "no fitting: it reads the evaluated sources"}
    train = load_eval_data(train_spec, task, fields, split="train", subset=subset, label_names=label_names)
    keep = sample_rows(len(train))
    sampled = train.select(keep) if len(keep) < len(train) else train
    fit_paths = locate(train_spec, "train", fields=fields, subset=subset).paths
    same = bool(fit_paths) and fit_paths == locate(data, split, fields=fields, subset=subset).paths
    try:
        result = sentiment_baseline(list(sampled["text"]), list(sampled["label"]), list(ds["text"]),
                                    list(ds["label"]), len(label_names or []), train_rows=len(train))
    except Exception as e:  # noqa: BLE001 - the model's score still counts without it
        ui.warn(f"baseline skipped ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'no message'})")
        return None
    where = f"{train_spec} [train], raw text" + (": the evaluated rows themselves; --baseline-train SPEC "
                                                 "fits on other data" if same else "")
    return {**result, "fit_on": where}


def _metrics_table(metrics: dict, title: str, baseline: dict | None = None,
                   label_names: list[str] | None = None) -> None:
    table = Table(title=title, title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    if baseline is not None:
        table.add_column(f"baseline ({baseline['name']})", justify="right")
    for k, v in metrics.items():
        if k not in ("confusion", "bleu_signature"):
            row = [k, f"{v:.2f}" if isinstance(v, float) else str(v)]
            if baseline is not None:
                b = baseline.get(k) if k not in ("examples", "seconds", "per_second", "engine", "beam") else None
                row.append(f"{b:.2f}" if isinstance(b, float) else "")
            table.add_row(*row)
    ui.out.print(table)
    if "confusion" in metrics:
        conf = Table(title="confusion (rows = gold, columns = predicted)", title_justify="left")
        conf.add_column("")
        names = label_names or [str(j) for j in range(len(metrics["confusion"]))]
        for name in names:
            conf.add_column(escape(name), justify="right", overflow="fold")
        for name, row in zip(names, metrics["confusion"], strict=True):
            conf.add_row(escape(name), *map(str, row))
        ui.out.print(conf)
    if "bleu_signature" in metrics:
        ui.out.print(f"sacreBLEU: {metrics['bleu_signature']}", markup=False)


@app.command(cls=AttnCommand, epilog="Examples:  attn info runs/it-en  ·  "
             "attn info runs/it-en --plot runs/it-en/curves.png")
@command
def info(run_dir: Annotated[Path, typer.Argument(help="Run directory.", show_default=False)],
         plot: Annotated[Path | None, typer.Option("--plot", help=(
             "Also draw the training loss and the validation metric against steps and time (with the "
             "baseline) into this PNG (needs the plot extra); as RUN_DIR/curves.png the model card "
             "links it."))] = None) -> None:
    """Show what a run directory holds: task, size, vocabulary, data, training, best metric."""
    from attn_cli.data.rundata import describe_valid, joined_note
    from attn_cli.data.tokenizer import Tokenizers
    from attn_cli.infer.runs import read_meta
    from attn_cli.rundir import LAST_DIR, find_dir

    if plot is not None:
        check_plot_dependency()
    meta = read_meta(run_dir)
    m = meta["model"]
    toks = Tokenizers.load(run_dir)
    table = Table(title=f"attn model {run_dir}", show_header=False, title_justify="left")
    table.add_row("task", meta["task"])
    table.add_row("preset", f"{meta.get('preset')}: d_model {m['d_model']}, heads {m['n_heads']}, "
                  f"layers {m['n_enc_layers']}+{m['n_dec_layers']}, ffn {m['d_ff']}, max_len {m['max_len']}")
    if meta.get("auto"):
        a = meta["auto"]
        table.add_row("auto size", a["why"] + (f" (~{a['tokens'] / 1e6:.1f}M tokens, {a['steps']:,} steps"
                                               + (f", {a['epochs']:g} epochs)" if a.get("epochs") else ")")
                                               if a.get("steps") else ""))
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
        from attn_cli.config import DECODE_DEFAULTS, describe_decoding

        table.add_row("decoding", describe_decoding(DECODE_DEFAULTS[meta["task"]]) +
                      " (options of attn translate/summarize change it)")
    d = meta.get("data", {})
    table.add_row("training data", f"{d.get('train')} ({d.get('train_examples', 0):,} examples), "
                  f"validation {describe_valid(d)}" + joined_note(d))
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
            _training_rows(table, json.loads((last / "state.json").read_text()), meta["task"], bool(pre),
                           bool(d.get("valid_reused")))
        except (ValueError, KeyError, TypeError, OSError):
            table.add_row("training", "last/state.json is unreadable")
    ui.out.print(table)
    if plot is not None:
        _plot_curves(run_dir, meta, plot)


def _plot_curves(run_dir: Path, meta: dict, plot: Path) -> None:
    """attn info --plot: the curves PNG, linked from the card when it is RUN_DIR/curves.png."""
    from attn_cli.train.curves import CURVES_FILE, plot_curves, read_curves
    from attn_cli.train.records import link_curves

    curves = read_curves(run_dir, meta["task"], bool(meta.get("pretrain")))
    plot_curves(curves, plot, f"{run_dir} ({meta['task']}, {meta.get('parameters', 0):,} parameters)")
    linked = plot.resolve() == (run_dir / CURVES_FILE).resolve() and link_curves(run_dir)
    ui.note(f"training curves saved to {plot}" + (" (linked from the model card)" if linked else ""))


def _training_rows(table: Table, st: dict, task: str, pretraining: bool = False, reused: bool = False) -> None:
    from attn_cli.data.rundata import REUSED
    from attn_cli.eval.metrics import PRETRAIN_METRIC, PRIMARY_METRIC

    metric = (PRETRAIN_METRIC if pretraining else PRIMARY_METRIC)[task]
    table.add_row("training", f"{st['step']:,} steps, {st['train_seconds'] / 60:.1f} min")
    if st.get("best") is not None:
        table.add_row("best validation", f"{metric} {st['best']:.2f} (step {st['best_step']}"
                      + (f"; on {REUSED})" if reused else ")"))


def _export_row(run_dir: Path, meta: dict, toks) -> str:
    from attn_cli.config import ModelConfig
    from attn_cli.infer.export import describe, export_status

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
    out: Annotated[Path | None, typer.Option("--out", show_default="RUN_DIR/ct2", help="Where to write it.")] = None,
) -> None:
    """Export a run's best weights as a CTranslate2 model, for --engine ctranslate2 (and auto)."""
    from attn_cli.infer.export import export_run

    start = time.perf_counter()
    path, info = export_run(run_dir, quantize, out)
    size = sum(p.stat().st_size for p in path.iterdir() if p.is_file())
    ui.err.print(f"exported {info.task} model ({info.quantization}, {size / 1e6:.1f} MB) to {path} "
                 f"in {time.perf_counter() - start:.1f} s", markup=False)
