"""Run the `lading` command line in-process, as `runner.cli.main` does, capturing its output."""

from __future__ import annotations

import io
import sys
from dataclasses import dataclass

import pytest

from runner.cli import main


@dataclass
class Ran:
    code: int
    out: str
    err: str


def lading(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    *args: str,
    stdin: str = "",
) -> Ran:
    capsys.readouterr()
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    with pytest.raises(SystemExit) as exited:
        main(list(args))
    captured = capsys.readouterr()
    code = exited.value.code
    return Ran(code if isinstance(code, int) else 1, captured.out, captured.err)
