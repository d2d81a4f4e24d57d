"""Rendering results for people (text) and programs (json, yaml), and progress on stderr.

With `-o json|yaml` the result document is the only thing written to stdout; everything
else (progress, logs, warnings) goes to stderr.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any, Literal, TextIO

import yaml
from pydantic import BaseModel

OutputFormat = Literal["text", "json", "yaml"]


def to_document(result: BaseModel | dict[str, Any]) -> dict[str, Any]:
    if isinstance(result, BaseModel):
        return result.model_dump(mode="json", by_alias=True, exclude_none=True)
    return result


def emit(
    result: BaseModel | dict[str, Any],
    fmt: OutputFormat,
    text: Callable[[Any], str],
    stream: TextIO | None = None,
) -> None:
    out = stream or sys.stdout
    if fmt == "json":
        out.write(json.dumps(to_document(result), indent=2, sort_keys=False) + "\n")
    elif fmt == "yaml":
        out.write(yaml.safe_dump(to_document(result), sort_keys=False))
    else:
        out.write(text(result).rstrip("\n") + "\n")
    out.flush()


class Progress:
    """Progress lines on stderr: one line per event, prefixed with elapsed seconds.

    Quiet mode drops them; verbose mode adds detail events.
    """

    def __init__(self, *, quiet: bool = False, verbose: bool = False, stream: TextIO | None = None):
        self.quiet = quiet
        self.verbose = verbose
        self.stream = stream or sys.stderr
        self.started = time.monotonic()

    def __call__(self, message: str) -> None:
        if not self.quiet:
            self._write(message)

    def detail(self, message: str) -> None:
        if self.verbose and not self.quiet:
            self._write(message)

    def _write(self, message: str) -> None:
        elapsed = time.monotonic() - self.started
        self.stream.write(f"[{elapsed:6.1f}s] {message}\n")
        self.stream.flush()


def silent(message: str) -> None:
    """A progress sink that drops everything (library callers, tests)."""
    del message
