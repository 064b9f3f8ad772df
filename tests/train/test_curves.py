"""--tensorboard (read back with TensorBoard's own reader; a resume does not duplicate steps) and
`attn info --plot` (the curves PNG, linked from the model card)."""

import shutil
import sys

import pytest
from conftest import DATA_DIR, cli, one_line_error

IT_EN = f"{DATA_DIR}/translate.it-en.jsonl"


def train(out, *extra):
    r = cli("train", "translate", "--data", IT_EN, "--src", "it", "--tgt", "en", "--out", out, "--preset", "tiny",
            "--max-tokens", 600, "--vocab-size", 500, "--log-every", 1, "--eval-samples", 2, "--schedule",
            "inverse_sqrt", *extra)
    assert r.exit_code == 0, r.output
    return r


def scalars(directory):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(directory))
    acc.Reload()
    return {tag: [e.step for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_has_the_curves_of_a_30_step_run(tmp_path):
    pytest.importorskip("tensorboard")
    train(tmp_path / "r", "--max-steps", 30, "--eval-every", 10, "--tensorboard")
    tags = scalars(tmp_path / "r/tensorboard")
    assert tags["train/loss"] == list(range(1, 31)) and tags["train/lr"] == list(range(1, 31))
    assert tags["valid/valid_loss"] == [10, 20, 30] and tags["valid/bleu"] == [10, 20, 30]
    assert tags["baseline/bleu"] == [0, 30]  # a constant line over the run


def test_a_resumed_run_does_not_duplicate_steps(tmp_path):
    """Killed after logging past its last save: the resumed writer purges those events."""
    pytest.importorskip("tensorboard")
    out = tmp_path / "r"
    train(out, "--max-steps", 6, "--tensorboard-dir", tmp_path / "tb")
    shutil.copytree(out / "last", tmp_path / "saved")  # last/ at step 6
    train(out, "--resume", "--max-steps", 10)  # logs steps 7-10 ...
    shutil.rmtree(out / "last")
    shutil.copytree(tmp_path / "saved", out / "last")  # ... which the "crash" lost
    train(out, "--resume", "--max-steps", 12)
    assert scalars(tmp_path / "tb")["train/loss"] == list(range(1, 13))


def test_tensorboard_missing_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import tensorboard fails
    r = cli("train", "translate", "--data", IT_EN, "--src", "it", "--tgt", "en", "--out", tmp_path / "r",
            "--max-steps", 2, "--tensorboard")
    one_line_error(r, "--tensorboard needs the tensorboard package (pip install 'attn[tensorboard]')")
    assert not (tmp_path / "r").exists()


def test_info_plot_draws_the_curves_and_the_card_links_them(tmp_path):
    pytest.importorskip("matplotlib")
    train(tmp_path / "r", "--max-steps", 12, "--eval-every", 4)
    r = cli("info", tmp_path / "r", "--plot", tmp_path / "r/curves.png")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "r/curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "![training loss and validation metric](curves.png)" in (tmp_path / "r/README.md").read_text()
    assert "linked from the model card" in r.stderr
    elsewhere = cli("info", tmp_path / "r", "--plot", tmp_path / "c.png")
    assert elsewhere.exit_code == 0 and (tmp_path / "c.png").stat().st_size > 1000


def test_info_plot_without_matplotlib_fails_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    one_line_error(cli("info", tmp_path / "nowhere", "--plot", tmp_path / "c.png"), "--plot needs matplotlib")
