"""Reading the inference commands' inputs: a person at a terminal is told what the wait is for."""

import io
import sys

import pytest

from attn_cli.cli.io import read_inputs


class FakeStdin(io.StringIO):
    def __init__(self, text: str, tty: bool):
        super().__init__(text)
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


@pytest.mark.parametrize("paragraphs, what", [(False, "one text per line"),
                                              (True, "documents separated by blank lines")])
def test_a_terminal_on_stdin_gets_a_one_line_hint(monkeypatch, capsys, paragraphs, what):
    monkeypatch.setattr(sys, "stdin", FakeStdin("Ho fame.\n", tty=True))
    assert read_inputs(None, None, paragraphs=paragraphs) == ["Ho fame."]
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"reading from standard input ({what}); Ctrl-D to end\n"


def test_a_pipe_on_stdin_gets_no_hint(monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", FakeStdin("Ho fame.\nCiao.\n", tty=False))
    assert read_inputs(None, None) == ["Ho fame.", "Ciao."]
    assert capsys.readouterr().err == ""
