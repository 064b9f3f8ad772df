"""The CLI frame: help text, version, and the installed console script."""

import shutil
import subprocess
import sys

from typer.testing import CliRunner

from attn_cli import __version__
from attn_cli.cli.main import app

runner = CliRunner()


def test_version():
    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0 and r.stdout.strip() == f"attn {__version__}"


def test_help_lists_commands_and_examples():
    r = runner.invoke(app, ["--help"])
    assert r.exit_code == 0 and "tokenizer" in r.stdout and "Examples" in r.stdout


def test_every_option_has_help():
    import typer.main

    group = typer.main.get_command(app)

    def walk(cmd, path):
        for name, sub in getattr(cmd, "commands", {}).items():
            yield from walk(sub, path + [name])
        if not getattr(cmd, "commands", None):
            yield path, cmd

    for path, cmd in walk(group, []):
        assert cmd.help, path
        for p in cmd.params:
            assert getattr(p, "help", None), (path, p.name)


def test_unknown_option_is_usage_error():
    r = runner.invoke(app, ["tokenizer", "train", "--nope"])
    assert r.exit_code == 2


def test_installed_console_script_and_module():
    exe = shutil.which("attn")
    if exe is not None:
        r = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and __version__ in r.stdout
    r = subprocess.run([sys.executable, "-m", "attn_cli", "tokenizer", "encode", "-t", "/nonexistent",
                        "x"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.startswith("Error: no tokenizer in /nonexistent")
    assert "Traceback" not in r.stderr


def test_flags_show_no_value_placeholder_in_help():
    """A flag takes no value, so no help row shows `<bool>`: not ours, not Typer's own --help,
    --install-completion or --show-completion."""
    for cmd in (["--help"], ["train", "--help"], ["translate", "--help"], ["sentiment", "--help"],
                ["summarize", "--help"], ["tokenizer", "--help"], ["tokenizer", "train", "--help"],
                ["tokenizer", "encode", "--help"], ["eval", "--help"], ["info", "--help"]):
        r = runner.invoke(app, cmd, env={"COLUMNS": "120"})
        assert r.exit_code == 0, cmd
        assert "--help" in r.output and "<bool>" not in r.output, cmd
    assert "--show-completion" in runner.invoke(app, ["--help"], env={"COLUMNS": "120"}).output
