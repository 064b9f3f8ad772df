"""Reliability and safety (issue 6): kills at any moment, never-half-written outputs, hostile run
directories, a table of bad inputs, disk full, determinism and non-finite losses.

Tiny models on the sample data; the subprocess tests kill real `attn` processes. docs/reliability.md
maps each guarantee to the test here (or in test_train.py / test_infer.py) that proves it.
"""

import csv
import errno
import json
import os
import random
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import DATA_DIR, Quiet
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from attn_cli import rundir as ckpt
from attn_cli.cli.main import app
from attn_cli.config import TrainConfig
from attn_cli.data.spec import Fields
from attn_cli.infer.runs import load_run
from attn_cli.model.transformer import build_model
from attn_cli.train.setup import RunRequest, train_run

runner = CliRunner()
IT_EN = f"{DATA_DIR}/translate.it-en.jsonl"
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
UMASK = os.umask(0o022)
os.umask(UMASK)
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
needs_non_root = pytest.mark.skipif(IS_ROOT, reason="root reads and writes regardless of permissions")
needs_no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
needs_proc = pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs Linux /proc")
SEED = int(os.environ.get("ATTN_TEST_SEED", random.randrange(1 << 30)))  # random kill moments
print(f"test_reliability: ATTN_TEST_SEED={SEED}")


def cli(*args, input=None):
    return runner.invoke(app, [str(a) for a in args], input=input)


def train_args(out, *extra):
    """`attn train translate` on the sample data with a tiny model (CLI arguments, no program).
    inverse_sqrt: these runs are resumed with another --max-steps, which a decaying schedule
    would follow (test_train.py tests the resume of the budget's schedule)."""
    return ["train", "translate", "--data", IT_EN, "--src", "it", "--tgt", "en", "--out", str(out),
            "--preset", "tiny", "--vocab-size", "500", "--max-tokens", "600", "--warmup", "5",
            "--eval-samples", "2", "--schedule", "inverse_sqrt", *map(str, extra)]


def attn_process(out, *extra, stderr):
    return subprocess.Popen([sys.executable, "-m", "attn_cli", *train_args(out, *extra)],
                            stdout=subprocess.DEVNULL, stderr=stderr, env=ENV)


def one_line_error(r, fragment, code=2):
    """Exit ``code``; stderr is one line `Error: ...` naming the problem; no traceback.
    (`attn train` may print its dim notes, e.g. about the held-out validation split, first.)"""
    lines = r.stderr.splitlines()
    assert r.exit_code == code, (r.exit_code, r.stderr[-1000:])
    assert "Traceback" not in r.output and "this is a bug" not in r.stderr, r.stderr
    assert lines and lines[-1].startswith("Error: ") and fragment in lines[-1], r.stderr
    assert not any(x.startswith("Error") for x in lines[:-1]), r.stderr


def state_of(run_dir):
    last = ckpt.find_dir(run_dir / "last")
    return json.loads((last / "state.json").read_text())


def metric_rows(run_dir, event):
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return [r for r in rows if r["event"] == event]


def assert_loadable(run_dir):
    """The run directory loads for inference and its last/ loads for resuming."""
    run = load_run(run_dir, device="cpu")
    last = ckpt.find_dir(run_dir / "last")
    assert last is not None
    ckpt.load_weights(build_model(run.model_cfg), last / "model.safetensors")
    ckpt.load_torch_state(last / "optimizer.pt")
    assert json.loads((last / "state.json").read_text())["step"] >= 1


def no_temp_files(run_dir):
    return not [p.name for p in run_dir.rglob("*") if p.name.endswith(".tmp") or p.name == ".last.old"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Tiny translate / sentiment / summarize runs (2 steps: quality does not matter here)."""
    root = tmp_path_factory.mktemp("models")
    specs = {"translate": ("translate.it-en.jsonl", Fields(src_lang="it", tgt_lang="en")),
             "sentiment": ("sentiment.jsonl", Fields()), "summarize": ("summarize.jsonl", Fields())}
    for task, (name, fields) in specs.items():
        cfg = TrainConfig(task=task, preset="tiny", max_steps=2, eval_every=1000, eval_samples=1,
                          vocab_size=500, max_tokens=600, warmup=5)
        train_run(RunRequest(data=f"{DATA_DIR}/{name}", out=root / task, fields=fields), cfg, Quiet())
    return root


def copy_run(models, task, dest):
    shutil.copytree(models / task, dest)
    return dest


# ================================================================ 1. kill anywhere, lose nothing

def _saved_step(out):
    try:
        return state_of(out)["step"]
    except (TypeError, OSError, ValueError, KeyError):  # no last/ yet, or caught mid-swap
        return 0


def _wait(cond, timeout, proc):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if cond():
            return True
        time.sleep(0.002)
    return False


def _staging(out):
    return list(out.glob(".last.*.tmp"))


def _steps_printed(log):
    return [int(m) for m in re.findall(r"^step (\d+) ", log.read_text(errors="replace"), re.M)]


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_loses_nothing(tmp_path):
    """Five `attn train` processes SIGKILLed in turn (the first a new run, the others resuming it),
    two of them the moment a checkpoint write is seen in progress. After every kill the run
    directory loads; every resume starts at the step last/ holds; the finished run equals an
    uninterrupted one."""
    rng = random.Random(SEED)
    out = tmp_path / "run"
    args = ["--max-steps", "100000", "--eval-every", "1", "--log-every", "1"]
    saved, in_write = 0, 0
    for trial, moment in enumerate(["random", "checkpoint", "random", "checkpoint-late", "random"]):
        log = tmp_path / f"trial{trial}.log"
        with open(log, "wb") as fh:
            proc = attn_process(out, *(["--resume"] if trial else []), *args, stderr=fh)
        try:
            progressed = _wait(lambda: _saved_step(out) > saved, 120, proc)  # noqa: B023
            assert progressed, log.read_text()[-2000:]
            if moment == "random":
                time.sleep(rng.uniform(0.0, 0.8))
            elif moment == "checkpoint":  # last/ is being staged: weights or optimizer half-written
                _wait(lambda: bool(_staging(out)), 30, proc)
            else:  # the staged weights are complete, the optimizer state is being written
                _wait(lambda: any((p / "model.safetensors").exists() for p in _staging(out)), 30, proc)
            assert proc.poll() is None, "the run ended before it was killed"
            proc.send_signal(signal.SIGKILL)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        in_write += bool(_staging(out))
        printed = _steps_printed(log)
        if trial:  # resumed exactly after the step last/ held
            assert printed and printed[0] == saved + 1, (saved, printed[:3])
        assert_loadable(out)
        assert _saved_step(out) > saved
        saved = _saved_step(out)
    assert in_write >= 1, "no kill landed during a checkpoint write"

    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the killed processes ran with one thread: same arithmetic
    try:
        r = cli(*train_args(out, "--resume", "--max-steps", saved + 2))
        assert r.exit_code == 0, r.output
        ref = tmp_path / "uninterrupted"
        cfg = TrainConfig(task="translate", preset="tiny", max_tokens=600, warmup=5, vocab_size=500,
                          eval_every=1000, eval_samples=2, max_steps=saved + 2, schedule="inverse_sqrt")
        train_run(RunRequest(data=IT_EN, out=ref, fields=Fields(src_lang="it", tgt_lang="en"),
                             tokenizer=out), cfg, Quiet())
    finally:
        torch.set_num_threads(torch_threads)
    assert state_of(out)["step"] == saved + 2
    assert [r["step"] for r in metric_rows(out, "train")] == list(range(1, saved + 3))
    assert no_temp_files(out) and not (out / ".lock").exists()
    a, b = load_file(str(out / "last/model.safetensors")), load_file(str(ref / "last/model.safetensors"))
    for name in b:
        torch.testing.assert_close(a[name], b[name], atol=1e-6, rtol=0)


@pytest.mark.slow
def test_sigint_saves_last_prints_resume_and_exits_130(tmp_path):
    out = tmp_path / "run"
    log = tmp_path / "train.log"
    with open(log, "wb") as fh:
        proc = attn_process(out, "--max-steps", "100000", "--eval-every", "3", "--log-every", "1", stderr=fh)
    try:
        assert _wait(lambda: _saved_step(out) >= 3, 120, proc), log.read_text()[-2000:]
        time.sleep(random.Random(SEED).uniform(0.0, 0.5))
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = log.read_text()
    assert code == 130, err[-2000:]
    m = re.search(r"interrupted at step (\d+); last/ saved\. Resume with: attn train translate .*--resume",
                  err)
    assert m, err[-2000:]
    step = int(m[1])
    assert state_of(out)["step"] == step  # saved at the step it stopped, not at the last evaluation
    assert_loadable(out)
    assert not (out / ".lock").exists()
    r = cli(*train_args(out, "--resume", "--max-steps", step + 2))
    assert r.exit_code == 0, r.output
    assert state_of(out)["step"] == step + 2


def test_printed_resume_command_works_as_printed(models, tmp_path, monkeypatch):
    from attn_cli.train import setup as pipeline
    from attn_cli.train.trainer import Interrupted

    out = copy_run(models, "translate", tmp_path / "my run")

    def interrupted(req, cfg, reporter):
        raise Interrupted("interrupted at step 2; last/ saved")

    monkeypatch.setattr(pipeline, "train_run", interrupted)
    r = cli(*train_args(out, "--resume", "--max-steps", 100))
    assert r.exit_code == 130
    monkeypatch.undo()
    argv = shlex.split(re.search(r"Resume with: (.+)$", r.stderr, re.M)[1])
    assert argv[0] == "attn"
    r = cli(*argv[1:], "--max-steps", 3)
    assert r.exit_code == 0, r.stderr
    assert state_of(out)["step"] == 3


# ================================================================ 2. outputs never half-written

KILLABLE = r"""
import os, sys, time
mark, moment = sys.argv[1], sys.argv[2]
def touch():
    open(mark, "w").close()
if moment == "generating":
    import attn_cli.infer.predict as infer
    real = infer.generate
    def generate(*a, **k):
        touch()
        return real(*a, **k)
    infer.generate = generate
else:  # "writing": the output's temporary file is written, the process hangs before the rename
    def fsync(fd):
        touch()
        time.sleep(300)
    os.fsync = fsync
sys.argv = ["attn", *sys.argv[3:]]
from attn_cli.cli.main import main
main()
"""


@pytest.mark.slow
def test_killed_translate_leaves_previous_output_or_none(models, tmp_path):
    """SIGKILL mid-generation (a previous out.txt stays as it was) and in the middle of writing
    out.txt (there was none: there still is none; only a hidden .out.txt.XXXX.tmp remains)."""
    big = tmp_path / "big.txt"
    big.write_text("".join(f"Ho fame e voglio mangiare la pizza numero {i}.\n" for i in range(3000)))
    gen, wri = tmp_path / "generating", tmp_path / "writing"
    gen.mkdir()
    wri.mkdir()
    (gen / "out.txt").write_text("previous\n")
    common = ["translate", "-m", str(models / "translate"), "-i", str(big), "--beam", "1"]
    procs = {}
    for d, extra in ((gen, []), (wri, ["--max-len-a", "0", "--max-len-b", "2"])):
        with open(tmp_path / f"{d.name}.log", "wb") as log:
            procs[d] = subprocess.Popen([sys.executable, "-c", KILLABLE, str(d / "mark"), d.name, *common,
                                         *extra, "-o", str(d / "out.txt")], stdout=subprocess.DEVNULL,
                                        stderr=log, env=ENV)
    try:
        for d, proc in procs.items():
            seen = _wait(lambda: (d / "mark").exists(), 120, proc)  # noqa: B023
            assert seen, (tmp_path / f"{d.name}.log").read_text()[-2000:]
            if d is gen:
                time.sleep(random.Random(SEED).uniform(0.1, 0.6))
            assert proc.poll() is None, "finished before it was killed"
            proc.send_signal(signal.SIGKILL)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    assert (gen / "out.txt").read_text() == "previous\n"
    assert sorted(os.listdir(gen)) == ["mark", "out.txt"]
    left = sorted(set(os.listdir(wri)) - {"mark"})
    assert len(left) == 1 and re.fullmatch(r"\.out\.txt\.\w+\.tmp", left[0]), left
    # the next run writes out.txt whole
    r = cli("translate", "-m", models / "translate", "--beam", "1", "-o", wri / "out.txt", "Ho fame.", "Grazie.")
    assert r.exit_code == 0 and len((wri / "out.txt").read_text().splitlines()) == 2


def test_written_files_get_the_usual_permissions(models, tmp_path):
    """Atomic writes go through mkstemp/mkdtemp (0600/0700); the results must not stay private."""
    r = cli("translate", "-m", models / "translate", "--beam", "1", "-o", tmp_path / "o.txt", "Ciao.")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "o.txt").stat().st_mode & 0o777 == 0o666 & ~UMASK
    run = models / "translate"
    for name in ("config.json", "model.safetensors", "tokenizer.model", "last/state.json"):
        assert (run / name).stat().st_mode & 0o777 == 0o666 & ~UMASK, name
    assert (run / "last").stat().st_mode & 0o777 == 0o777 & ~UMASK


# ================================================================ 3. hostile run directories

class Evil:
    """Unpickling this runs a shell command."""

    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return (os.system, (f"touch '{self.target}'",))


@pytest.mark.parametrize("form", ["torch.save", "pickle"])
def test_optimizer_pickle_that_runs_code_is_refused(models, tmp_path, form):
    import pickle

    out = copy_run(models, "translate", tmp_path / "run")
    pwned = tmp_path / "PWNED"
    if form == "torch.save":
        torch.save({"optimizer": Evil(pwned), "scheduler": {}, "scaler": {}, "rng": {}},
                   out / "last/optimizer.pt")
    else:
        (out / "last/optimizer.pt").write_bytes(pickle.dumps(Evil(pwned)))
    r = cli(*train_args(out, "--resume", "--max-steps", 3))
    one_line_error(r, "refusing to load")
    assert "optimizer.pt" in r.stderr and "could run code" in r.stderr
    assert not pwned.exists()
    assert state_of(out)["step"] == 2  # nothing was overwritten


def _edit_config(run, change):
    meta = json.loads((run / "config.json").read_text())
    change(meta)
    (run / "config.json").write_text(json.dumps(meta))


TOP, MODEL = "config.json", "model"  # refused by every command / by those that build the model
HOSTILE_CONFIGS = [
    ("unknown-path-key", lambda m: m.update(tokenizer="../../etc"), TOP, "unknown field 'tokenizer'"),
    ("unknown-weights-key", lambda m: m.update(weights="/etc/passwd"), TOP, "unknown field 'weights'"),
    ("unknown-model-key", lambda m: m["model"].update(tokenizer_path="../../etc"), MODEL,
     "unknown ModelConfig field(s): tokenizer_path"),
    ("task-int", lambda m: m.update(task=3), TOP, "field 'task' has the wrong type (int)"),
    ("labels-str", lambda m: m.update(label_names="positive"), TOP, "field 'label_names' has the wrong type"),
    ("labels-ints", lambda m: m.update(label_names=[1, 2]), TOP, "field 'label_names.0' has the wrong type"),
    ("nested-count-str", lambda m: m["data"].update(train_examples="many"), TOP,
     "field 'data.train_examples' has the wrong type"),
    ("nested-lang-list", lambda m: m["languages"].update(src=["it"]), TOP, "field 'languages.src' has the wrong type"),
    ("negative-vocab", lambda m: m["model"].update(vocab_size=-500), MODEL, "vocab_size must be positive"),
    ("zero-layers", lambda m: m["model"].update(n_enc_layers=0), MODEL, "n_enc_layers must be positive"),
    ("float-size", lambda m: m["model"].update(max_len=1.5), MODEL, "max_len must be of type int"),
    ("bool-size", lambda m: m["model"].update(d_model=True), MODEL, "d_model must be of type int"),
    ("str-dropout", lambda m: m["model"].update(dropout="0.1"), MODEL, "dropout must be of type float"),
    ("missing-model", lambda m: m.pop("model"), TOP, "missing field 'model'"),
]


@pytest.mark.parametrize("name,change,level,fragment", HOSTILE_CONFIGS, ids=[c[0] for c in HOSTILE_CONFIGS])
def test_hostile_config_json_is_refused_naming_the_field(models, tmp_path, name, change, level, fragment):
    run = copy_run(models, "translate", tmp_path / "run")
    _edit_config(run, change)
    one_line_error(cli("translate", "-m", run, "ciao"), fragment)
    if level == TOP:
        one_line_error(cli("info", run), fragment)


def test_config_values_are_never_opened_as_paths(models, tmp_path):
    """fields/languages/data hold column names and descriptions; a path there is just a name."""
    run = copy_run(models, "translate", tmp_path / "run")
    _edit_config(run, lambda m: m.update(fields={"src_lang": "../../etc/passwd", "tgt_lang": "en"},
                                         data={**m["data"], "train": "/etc/shadow"}))
    one_line_error(cli("eval", "-m", run, "--data", IT_EN, "--beam", "1"),
                   "field '../../etc/passwd' not found; the data has columns: it, en")
    r = cli("info", run)
    assert r.exit_code == 0 and "/etc/shadow" in r.stdout  # shown, never read


@pytest.mark.parametrize("damage,fragment", [
    ("shape", "tensor '{first}' has shape"),
    ("missing", "lacks tensor '{first}'"),
    ("extra", "unexpected tensor 'zz.evil'"),
    ("truncated", "cannot read"),
])
def test_weights_that_do_not_match_config_name_the_first_mismatch(models, tmp_path, damage, fragment):
    run = copy_run(models, "translate", tmp_path / "run")
    state = load_file(str(run / "model.safetensors"))
    names = list(build_model(load_run(run, device="cpu").model_cfg).state_dict())
    first, later = names[2], names[-1]
    if damage == "shape":
        for n in (first, later):
            state[n] = torch.zeros(state[n].shape[0] + 1, *state[n].shape[1:])
    elif damage == "missing":
        del state[first], state[later]
    elif damage == "extra":
        state["zz.evil"] = torch.zeros(3)
    if damage == "truncated":
        data = (run / "model.safetensors").read_bytes()
        (run / "model.safetensors").write_bytes(data[:len(data) // 2])
    else:
        save_file(state, str(run / "model.safetensors"))
    r = cli("translate", "-m", run, "ciao")
    one_line_error(r, fragment.format(first=first))
    assert later not in r.stderr


@pytest.mark.parametrize("info", ["{not json", '{"vocab_size": "big"}', "[1, 2]"])
def test_damaged_tokenizer_json_is_an_error(models, tmp_path, info):
    run = copy_run(models, "sentiment", tmp_path / "run")
    (run / "tokenizer.json").write_text(info)
    one_line_error(cli("sentiment", "-m", run, "good"), "tokenizer.json is damaged")


def test_damaged_state_json_does_not_break_info(models, tmp_path):
    run = copy_run(models, "translate", tmp_path / "run")
    (run / "last/state.json").write_text('{"step": "many"}')
    r = cli("info", run)
    assert r.exit_code == 0 and "last/state.json is unreadable" in r.stdout


@pytest.mark.parametrize("state", ['{"step": 2, "evil": 1}', "{not json", '{"step": "two"}'])
def test_damaged_state_json_refuses_resume(models, tmp_path, state):
    run = copy_run(models, "translate", tmp_path / "run")
    (run / "last/state.json").write_text(state)
    one_line_error(cli(*train_args(run, "--resume", "--max-steps", 3)), "state.json")


def test_damaged_train_config_json_refuses_resume(models, tmp_path):
    run = copy_run(models, "translate", tmp_path / "run")
    (run / "train_config.json").write_text("{not json")
    one_line_error(cli(*train_args(run, "--resume", "--max-steps", 3)), "train_config.json")


# ================================================================ 4. the bad-input matrix

@pytest.fixture(scope="module")
def bad(models, tmp_path_factory):
    """Files and directories that are wrong in every way the matrix below needs."""
    d = tmp_path_factory.mktemp("bad")
    (d / "emptydir").mkdir()
    (d / "binary.jsonl").write_bytes(bytes(random.Random(0).randrange(256) for _ in range(4096)))
    (d / "latin1.csv").write_bytes("text,label\ncaff\xe8 ottimo,positive\n".encode("latin-1"))
    (d / "latin1.txt").write_bytes("ciao\ncaff\xe8\n".encode("latin-1"))
    (d / "empty.jsonl").write_bytes(b"")
    (d / "empty.txt").write_bytes(b"")
    (d / "broken.jsonl").write_text('{"text": "good", "label": "positive"}\n'
                                    '{"text": "bad", "label": "negative"}\n'
                                    '{"text": "oops", "label": \n{"text": "x", "label": "positive"}\n')
    (d / "ragged.csv").write_text("text,label\ngood film,positive\nbad film,negative,extra\nok,positive\n")
    (d / "mixed.jsonl").write_text('{"text": "good", "label": 1}\n{"text": "bad", "label": "negative"}\n')
    (d / "floats.jsonl").write_text('{"text": "good", "label": 0.5}\n{"text": "bad", "label": 1.5}\n')
    (d / "negative.jsonl").write_text('{"text": "good", "label": 1}\n{"text": "bad", "label": -1}\n')
    (d / "unseen.jsonl").write_text('{"text": "so so", "label": "neutral"}\n')
    (d / "oneclass.jsonl").write_text("".join(json.dumps({"text": f"great thing number {i}",
                                                          "label": "positive"}) + "\n" for i in range(30)))
    sentiment = [json.loads(x) for x in open(f"{DATA_DIR}/sentiment.jsonl", encoding="utf-8")]
    with open(d / "good.csv", "w", encoding="utf-8", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["text", "label"])
        w.writeheader()
        w.writerows(sentiment)
    with open(d / "good.tsv", "w", encoding="utf-8", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["it", "en"], delimiter="\t")
        w.writeheader()
        w.writerows(json.loads(x) for x in open(IT_EN, encoding="utf-8"))
    huge = "parola " * (10_000_000 // 7)  # one 10 MB line
    (d / "huge.txt").write_text(huge + "\n")
    (d / "huge.jsonl").write_text(json.dumps({"text": huge, "label": "positive"}) + "\n"
                                  + "".join(json.dumps(r) + "\n" for r in sentiment))
    (d / "par").mkdir()
    (d / "par/train.it").write_text("uno\ndue\ntre\n")
    (d / "par/train.en").write_text("one\ntwo\n")
    (d / "docs_broken.jsonl").write_text('{"document": "a b c"}\n{"document": "d e f"\n')
    (d / "docs_nofield.jsonl").write_text('{"body": "a b c"}\n')
    (d / "bad.toml").write_text("max-tokens = = 3\n")
    (d / "unknown.toml").write_text('tokenizer = "../../etc"\n')
    for name, config, tok in (("notjson", b"{oops", None), ("array", b"[]", None),
                              ("badtok", None, b"\x00garbage" * 10), ("badinfo", None, None)):
        run = d / "runs" / name
        run.mkdir(parents=True)
        (run / "config.json").write_bytes(config or (models / "sentiment/config.json").read_bytes())
        (run / "tokenizer.model").write_bytes(tok or (models / "sentiment/tokenizer.model").read_bytes())
    (d / "runs/badinfo/tokenizer.json").write_text('{"vocab_size": "big"}')
    if not IS_ROOT:
        (d / "unreadable.jsonl").write_text('{"text": "a", "label": "positive"}\n')
        (d / "unreadable.jsonl").chmod(0)
        (d / "readonly").mkdir()
        (d / "readonly").chmod(0o555)
    return d


TOK = ["tokenizer", "train", "--out", "{tmp}/tok", "--task", "sentiment", "--vocab-size", "500", "--data"]
TRAIN = ["train", "translate", "--data", "{data}/translate.it-en.jsonl", "--src", "it", "--tgt", "en",
         "--out", "{tmp}/run", "--preset", "tiny", "--vocab-size", "500", "--max-steps", "1"]
SENT = ["train", "sentiment", "--out", "{tmp}/run", "--preset", "tiny", "--vocab-size", "500", "--data"]
TR = ["translate", "-m", "{models}/translate", "--beam", "1"]
SE = ["sentiment", "-m", "{models}/sentiment"]
SU = ["summarize", "-m", "{models}/summarize", "--beam", "1", "--max-len-b", "5"]
EV = ["eval", "-m", "{models}/sentiment", "--data"]

# (id, arguments, exit code, what the one-line error (or, for exit 0, stderr) must contain)
MATRIX = [
    # ---- attn tokenizer train
    ("tok-missing-file", TOK + ["{bad}/nope.jsonl"], 2, "no such file or directory"),
    ("tok-dir-without-splits", TOK + ["{bad}/emptydir"], 2, "no 'train' split in directory"),
    ("tok-binary-file", TOK + ["{bad}/binary.jsonl"], 2, "binary.jsonl is not UTF-8 text"),
    ("tok-latin1-csv", TOK + ["{bad}/latin1.csv"], 2, "is not UTF-8 text (bad byte near offset 15)"),
    ("tok-empty-file", TOK + ["{bad}/empty.jsonl"], 2, "empty.jsonl is empty"),
    ("tok-jsonl-broken-line", TOK + ["{bad}/broken.jsonl"], 2, "broken.jsonl line 3 is not valid JSON"),
    ("tok-csv-ragged-rows", TOK + ["{bad}/ragged.csv"], 2, "Expected 2 fields in line 3, saw 3"),
    ("tok-labels-mixed", TOK + ["{bad}/mixed.jsonl"], 2, "all integers or all strings (found a mix of types)"),
    ("tok-labels-floats", TOK + ["{bad}/floats.jsonl"], 2, "all integers or all strings (found float64)"),
    ("tok-labels-negative", TOK + ["{bad}/negative.jsonl"], 2, "negative label -1"),
    ("tok-vocab-zero", TOK + ["{data}/sentiment.jsonl", "--vocab-size", "0"], 2, "--vocab-size 0 is too small"),
    ("tok-max-sentences-negative", TOK + ["{data}/sentiment.jsonl", "--max-sentences", "-1"], 2,
     "--max-sentences must be positive"),
    ("tok-out-is-a-file", TOK[:3] + ["{data}/sentiment.jsonl"] + TOK[4:] + ["{data}/sentiment.jsonl"], 2,
     "exists and is not a directory"),
    pytest.param("tok-out-unwritable-proc", TOK[:3] + ["/proc/attn-tok"] + TOK[4:] + ["{data}/sentiment.jsonl"],
                 2, "cannot write to /proc", marks=needs_proc),
    pytest.param("tok-out-unwritable-dir", TOK[:3] + ["{bad}/readonly/tok"] + TOK[4:] + ["{data}/sentiment.jsonl"],
                 2, "cannot write to", marks=needs_non_root),
    pytest.param("tok-unreadable-file", TOK + ["{bad}/unreadable.jsonl"], 2, "cannot read",
                 marks=needs_non_root),
    ("tok-10mb-line-is-skipped", TOK + ["{bad}/huge.jsonl"], 0, "Tokenizer written"),
    ("tok-csv-string-labels-ok", TOK + ["{bad}/good.csv"], 0, "Tokenizer written"),
    ("tok-tsv-translation-ok", ["tokenizer", "train", "--out", "{tmp}/tok", "--vocab-size", "500", "--src", "it",
                                "--tgt", "en", "--data", "{bad}/good.tsv"], 0, "Tokenizer written"),
    # ---- attn train
    ("train-parallel-lengths-differ", ["train", "translate", "--data", "{bad}/par/train", "--src", "it",
                                       "--tgt", "en", "--out", "{tmp}/run"], 2,
     "parallel files differ in length: {bad}/par/train.it has 3 lines, {bad}/par/train.en has 2"),
    ("train-one-class-sentiment", SENT + ["{bad}/oneclass.jsonl"], 2, "only one label (positive)"),
    ("train-data-dir-without-splits", SENT + ["{bad}/emptydir"], 2, "no 'train' split in directory"),
    ("train-max-tokens-zero", TRAIN + ["--max-tokens", "0"], 2, "max_tokens must be positive"),
    ("train-max-tokens-negative", TRAIN + ["--max-tokens", "-600"], 2, "max_tokens must be positive"),
    pytest.param("train-max-tokens-below-one-example", TRAIN + ["--max-tokens", "5"], 2, "--max-tokens 5"),
    ("train-accum-zero", TRAIN + ["--accum", "0"], 2, "accum must be positive"),
    ("train-warmup-negative", TRAIN + ["--warmup", "-1"], 2, "warmup must be >= 0"),
    ("train-dropout-above-one", TRAIN + ["--dropout", "1.5"], 2, "dropout must be in [0, 1)"),
    ("train-eval-every-zero", TRAIN + ["--eval-every", "0"], 2, "eval_every must be positive"),
    ("train-epochs-negative", TRAIN + ["--epochs", "-1"], 2, "epochs must be positive"),
    ("train-max-len-zero", TRAIN + ["--max-len", "0"], 2, "max_len must be positive"),
    ("train-config-missing", TRAIN + ["--config", "{bad}/nope.toml"], 2, "config file {bad}/nope.toml not found"),
    pytest.param("train-config-is-a-directory", TRAIN + ["--config", "{bad}/emptydir"], 2, "emptydir"),
    ("train-config-binary", TRAIN + ["--config", "{bad}/binary.jsonl"], 2, "is not valid TOML"),
    ("train-config-broken", TRAIN + ["--config", "{bad}/bad.toml"], 2, "bad.toml is not valid TOML"),
    ("train-config-unknown-key", TRAIN + ["--config", "{bad}/unknown.toml"], 2,
     "unknown TrainConfig field(s): tokenizer"),
    ("train-tokenizer-dir-without-one", TRAIN + ["--tokenizer", "{bad}/emptydir"], 2, "no tokenizer in"),
    pytest.param("train-device-cuda-without-gpu", TRAIN + ["--device", "cuda"], 2, "no CUDA GPU is available",
                 marks=needs_no_gpu),
    pytest.param("train-out-unwritable-proc", TRAIN[:9] + ["/proc/attn-run"] + TRAIN[10:], 2,
                 "cannot write to /proc", marks=needs_proc),
    # ---- attn translate
    ("translate-input-missing", TR + ["-i", "{bad}/nope.txt"], 2, "input file {bad}/nope.txt not found"),
    ("translate-input-is-a-directory", TR + ["-i", "{bad}/emptydir"], 2, "is a directory"),
    ("translate-input-latin1", TR + ["-i", "{bad}/latin1.txt"], 2, "latin1.txt is not UTF-8 text"),
    ("translate-input-binary", TR + ["-i", "{bad}/binary.jsonl"], 2, "binary.jsonl is not UTF-8 text"),
    pytest.param("translate-input-unreadable", TR + ["-i", "{bad}/unreadable.jsonl"], 2, "cannot read",
                 marks=needs_non_root),
    ("translate-input-empty-gives-no-output", TR + ["-i", "{bad}/empty.txt"], 0, ""),
    ("translate-output-dir-missing", TR + ["-o", "{tmp}/nodir/out.txt", "ciao"], 2, "does not exist"),
    ("translate-output-is-a-directory", TR + ["-o", "{bad}/emptydir", "ciao"], 2, "is a directory"),
    pytest.param("translate-output-unwritable-proc", TR + ["-o", "/proc/attn-out.txt", "ciao"], 2,
                 "cannot write to /proc", marks=needs_proc),
    pytest.param("translate-output-unwritable-dir", TR + ["-o", "{bad}/readonly/out.txt", "ciao"], 2,
                 "cannot write to", marks=needs_non_root),
    ("translate-model-is-a-file", ["translate", "-m", "{bad}/binary.jsonl", "ciao"], 2, "is a file, not a directory"),
    ("translate-model-missing", ["translate", "-m", "{bad}/nope", "ciao"], 2, "does not exist"),
    ("translate-beam-zero", TR + ["--beam", "0", "ciao"], 2, "beam must be >= 1"),
    ("translate-max-tokens-zero", TR + ["--max-tokens", "0", "ciao"], 2, "--max-tokens must be positive"),
    ("translate-max-len-b-negative", TR + ["--max-len-b", "-1", "ciao"], 2, "max_len_b must be >= 0"),
    pytest.param("translate-device-cuda-without-gpu", TR + ["--device", "cuda", "ciao"], 2,
                 "no CUDA GPU is available", marks=needs_no_gpu),
    # ---- attn sentiment
    ("sentiment-wrong-task-model", ["sentiment", "-m", "{models}/translate", "ciao"], 2,
     "is a translate model, not a sentiment model"),
    ("sentiment-model-without-config", ["sentiment", "-m", "{bad}/emptydir", "good"], 2,
     "is not a model directory (no config.json)"),
    ("sentiment-max-tokens-negative", SE + ["--max-tokens", "-1", "good"], 2, "--max-tokens must be positive"),
    ("sentiment-10mb-line-is-truncated", SE + ["-i", "{bad}/huge.txt"], 0, "1 input(s) longer than"),
    # ---- attn summarize
    ("summarize-jsonl-broken-line", SU + ["-i", "{bad}/docs_broken.jsonl"], 2, "input line 2 is not valid JSON"),
    ("summarize-jsonl-without-document", SU + ["-i", "{bad}/docs_nofield.jsonl"], 2,
     "input line 1 has no document field"),
    ("summarize-top-p-above-one", SU + ["--top-p", "1.5", "doc"], 2, "top_p must be in (0, 1]"),
    ("summarize-temperature-zero", SU + ["--sample", "--temperature", "0", "doc"], 2, "temperature must be > 0"),
    # ---- attn eval
    ("eval-data-missing", EV + ["{bad}/nope.jsonl"], 2, "no such file or directory"),
    ("eval-jsonl-broken-line", EV + ["{bad}/broken.jsonl"], 2, "broken.jsonl line 3 is not valid JSON"),
    ("eval-unseen-label", EV + ["{bad}/unseen.jsonl"], 2, "label(s) ['neutral'] not among the known labels"),
    ("eval-empty-file", EV + ["{bad}/empty.jsonl"], 2, "empty.jsonl is empty"),
    ("eval-csv-ragged-rows", EV + ["{bad}/ragged.csv"], 2, "Expected 2 fields in line 3, saw 3"),
    ("eval-split-missing", EV + ["{bad}/emptydir", "--split", "nope"], 2, "no 'nope' split in directory"),
    ("eval-output-dir-missing", EV + ["{data}/sentiment.jsonl", "-o", "{tmp}/nodir/o.txt"], 2, "does not exist"),
    ("eval-max-tokens-zero", EV + ["{data}/sentiment.jsonl", "--max-tokens", "0"], 2,
     "--max-tokens must be positive"),
    pytest.param("eval-device-cuda-without-gpu", EV + ["{data}/sentiment.jsonl", "--device", "cuda"], 2,
                 "no CUDA GPU is available", marks=needs_no_gpu),
    ("eval-csv-string-labels-ok", EV + ["{bad}/good.csv", "--json"], 0, ""),
    # ---- attn info and attn tokenizer encode
    ("info-missing", ["info", "{bad}/nope"], 2, "model directory {bad}/nope does not exist"),
    ("info-on-a-file", ["info", "{bad}/binary.jsonl"], 2, "is a file, not a directory"),
    ("info-dir-without-config", ["info", "{bad}/emptydir"], 2, "is not a model directory"),
    ("info-config-not-json", ["info", "{bad}/runs/notjson"], 2, "config.json is not valid JSON"),
    ("info-config-not-an-object", ["info", "{bad}/runs/array"], 2, "config.json must hold a JSON object"),
    ("info-tokenizer-garbage", ["info", "{bad}/runs/badtok"], 2, "cannot load the tokenizer"),
    ("info-tokenizer-json-wrong-type", ["info", "{bad}/runs/badinfo"], 2, "tokenizer.json is damaged"),
    ("encode-unknown-side", ["tokenizer", "encode", "-t", "{models}/translate", "--side", "x", "ciao"], 2,
     "unknown --side 'x'"),
]


def _case_id(case):
    return case.values[0] if hasattr(case, "values") else case[0]


@pytest.mark.parametrize("name,args,code,fragment", MATRIX, ids=[_case_id(c) for c in MATRIX])
def test_bad_input_matrix(models, bad, tmp_path, name, args, code, fragment):
    where = {"bad": bad, "data": DATA_DIR, "models": models, "tmp": tmp_path}
    r = cli(*[a.format(**where) for a in args])
    if code == 0:
        assert r.exit_code == 0, r.output[-1000:]
        assert "Error" not in r.stderr and "Traceback" not in r.output and fragment.format(**where) in r.stderr
    else:
        one_line_error(r, fragment.format(**where), code)
        if args[0] != "train":
            assert r.stderr.count("\n") == 1, r.stderr
    assert not (tmp_path / "run").exists()  # a refused training run leaves nothing behind


def test_matrix_is_big_enough():
    assert len(MATRIX) >= 30
    assert {(c.values[1] if hasattr(c, "values") else c[1])[0] for c in MATRIX} >= {
        "tokenizer", "train", "translate", "sentiment", "summarize", "eval", "info"}


# ================================================================ 5. disk full

@needs_proc
def test_disk_full_while_saving_last_keeps_the_previous_last(models, tmp_path, monkeypatch):
    """A write into the staged last/ fails with ENOSPC: exit 1 with one line naming the file;
    last/ still holds the previous step, loads, and resumes."""
    out = copy_run(models, "translate", tmp_path / "run")
    before = load_file(str(out / "last/model.safetensors"))
    real_fsync = os.fsync

    def full(fd):
        if "/.last." in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full)
    r = cli(*train_args(out, "--resume", "--max-steps", 4, "--eval-every", 1))
    monkeypatch.undo()
    one_line_error(r, "No space left on device", code=1)
    assert "could not write" in r.stderr and "model.safetensors" in r.stderr
    assert state_of(out)["step"] == 2
    after = load_file(str(out / "last/model.safetensors"))
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert_loadable(out)
    r = cli(*train_args(out, "--resume", "--max-steps", 3))
    assert r.exit_code == 0, r.output
    assert state_of(out)["step"] == 3 and no_temp_files(out)  # the failed staging dir is cleaned up


# ================================================================ 6. determinism

def test_same_seed_gives_identical_weights(tmp_path):
    def weights(seed, name):
        r = cli(*train_args(tmp_path / name, "--seed", seed, "--max-steps", 3, "--device", "cpu",
                            "--eval-every", 1000))
        assert r.exit_code == 0, r.output
        return load_file(str(tmp_path / name / "last/model.safetensors"))

    a, b, c = weights(7, "a"), weights(7, "b"), weights(8, "c")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "a/tokenizer.model").read_bytes() == (tmp_path / "b/tokenizer.model").read_bytes()
    assert not all(torch.equal(a[k], c[k]) for k in a)  # the seed does matter


# ================================================================ 7. numerical faults

def test_skip_nonfinite_skips_and_counts(models, tmp_path, monkeypatch):
    from attn_cli.train import trainer as T

    out = copy_run(models, "translate", tmp_path / "run")
    real = T.Trainer._loss_sum
    calls = {"n": 0}

    def poisoned(self, batch, smoothing, model=None, **kw):
        loss = real(self, batch, smoothing, model, **kw)
        if model is None:  # a training batch (evaluation passes the model)
            calls["n"] += 1
            if calls["n"] in (2, 3):
                return loss * float("nan")
        return loss

    monkeypatch.setattr(T.Trainer, "_loss_sum", poisoned)
    r = cli(*train_args(out, "--resume", "--max-steps", 5, "--skip-nonfinite", "--log-every", 1))
    assert r.exit_code == 0, r.output
    skipped = metric_rows(out, "skipped_nonfinite")
    assert [(x["step"], x["skipped"]) for x in skipped] == [(4, 1), (4, 2)]
    assert [x["step"] for x in metric_rows(out, "train")][-3:] == [3, 4, 5]
    state = state_of(out)
    assert state["step"] == 5 and state["skipped"] == 2
    w = load_file(str(out / "last/model.safetensors"))
    assert all(torch.isfinite(t).all() for t in w.values())
