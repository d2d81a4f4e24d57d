"""Rendering results for people (text) and programs (json, yaml), and progress on stderr.

With `-o json|yaml` the result document is the only thing written to stdout; everything
else (progress, logs, warnings) goes to stderr.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import sys
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

import yaml
from pydantic import BaseModel

OutputFormat = Literal["text", "json", "yaml"]
LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")
Level = Literal["debug", "info", "warning", "error"]


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
    # A live progress line on the same terminal would otherwise run into the result.
    finish_live()
    try:
        _write_result(result, fmt, text, out)
    except BrokenPipeError:
        # Whoever read the result stopped reading (`| head`): the run's own exit code stands.
        # Anything else that fails here (a full disk) is raised: a result was lost.
        _quiet_at_exit(out)


def _write_result(
    result: BaseModel | dict[str, Any], fmt: OutputFormat, text: Callable[[Any], str],
    out: TextIO,
) -> None:
    if fmt == "json":
        out.write(json.dumps(to_document(result), indent=2, sort_keys=False) + "\n")
    elif fmt == "yaml":
        out.write(yaml.safe_dump(to_document(result), sort_keys=False))
    else:
        rendered = text(result).rstrip("\n")
        # A diff report's unified diffs read like `git diff` in a terminal; no other text
        # output has lines starting with +/-/@@, so colouring is limited to DiffResult.
        if getattr(result, "kind", None) == "DiffResult" and use_colour(out):
            rendered = colour_diff(rendered)
        out.write(rendered + "\n")
    out.flush()


def _quiet_at_exit(stream: TextIO) -> None:
    """Point a stream whose reader went away at /dev/null, so the interpreter's last flush of
    what is still buffered does not fail the exit (Python would end with status 120)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # not a real file: nothing will flush it
        pass


def use_colour(stream: TextIO) -> bool:
    """Colour only for a terminal, and never when NO_COLOR is set (https://no-color.org)."""
    if os.environ.get("NO_COLOR"):
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


_RED, _GREEN, _CYAN, _BOLD, _RESET = "\x1b[31m", "\x1b[32m", "\x1b[36m", "\x1b[1m", "\x1b[0m"


def colour_diff(text: str) -> str:
    """ANSI colours for a unified diff, as `git diff` shows it: headers bold, hunks cyan,
    removals red, additions green. Other lines pass through unchanged."""
    lines = []
    for line in text.split("\n"):
        if line.startswith(("---", "+++")):
            lines.append(f"{_BOLD}{line}{_RESET}")
        elif line.startswith("@@"):
            lines.append(f"{_CYAN}{line}{_RESET}")
        elif line.startswith("-"):
            lines.append(f"{_RED}{line}{_RESET}")
        elif line.startswith("+"):
            lines.append(f"{_GREEN}{line}{_RESET}")
        else:
            lines.append(line)
    return "\n".join(lines)


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


class Progress:
    """Progress on stderr, in one of three shapes:

    - a terminal gets one live line, rewritten in place for each event (like `docker pull`);
    - anything else (CI logs, files) gets one line per event, prefixed with elapsed seconds;
    - `log_format="json"` gets one JSON object per line, `{"time", "level", "event",
      "message", "elapsed", ...}`, for a control plane that streams a runner's stderr.

    Quiet mode drops everything below warnings; verbose mode adds detail events. Callers only
    need `progress(message)`; `event=` and extra fields enrich the JSON lines.
    """

    def __init__(
        self,
        *,
        quiet: bool = False,
        verbose: bool = False,
        stream: TextIO | None = None,
        log_format: LogFormat = "text",
        live: bool | None = None,
    ):
        self.quiet = quiet
        self.verbose = verbose
        self.stream = stream or sys.stderr
        self.log_format = log_format
        if live is None:
            live = log_format == "text" and _is_terminal(self.stream)
        self.live = live and log_format == "text"
        self.started = time.monotonic()
        self._line_open = False
        self._gone = False  # the stream stopped taking writes: progress ends, the run does not
        if self.live:
            _LIVE.add(self)

    def __call__(self, message: str, *, event: str = "progress", **fields: Any) -> None:
        if not self.quiet:
            self._write("info", event, message, fields)

    def detail(self, message: str, *, event: str = "detail", **fields: Any) -> None:
        if self.verbose and not self.quiet:
            self._write("debug", event, message, fields)

    def log(self, level: Level, message: str, *, event: str = "log", **fields: Any) -> None:
        """An event with an explicit level; warnings and errors pass even in quiet mode."""
        if level in ("warning", "error") or (not self.quiet and (level == "info" or self.verbose)):
            self._write(level, event, message, fields, keep=level in ("warning", "error"))

    def finish(self) -> None:
        """End a live line so what follows starts on a fresh line. Idempotent."""
        if self._line_open and not self._gone:
            self._line_open = False
            with self._unless_gone():
                self.stream.write("\n")
                self.stream.flush()

    @contextmanager
    def _unless_gone(self) -> Iterator[None]:
        """Progress is for whoever watches, never a reason to stop: when its stream fails (the
        reader of a pipe went away, the terminal closed, the log's disk is full), the progress
        stops and the run goes on. An install whose watcher left between two stages must not
        end between them, half-applied."""
        try:
            yield
        except (OSError, ValueError):  # ValueError: written to a closed file
            self._gone = True
            _quiet_at_exit(self.stream)

    def _write(
        self, level: Level, event: str, message: str, fields: dict[str, Any], keep: bool = False
    ) -> None:
        if self._gone:
            return
        with self._unless_gone():
            self._put(level, event, message, fields, keep)

    def _put(
        self, level: Level, event: str, message: str, fields: dict[str, Any], keep: bool
    ) -> None:
        elapsed = time.monotonic() - self.started
        if self.log_format == "json":
            record = {
                "time": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                "level": level,
                "event": event,
                "message": message,
                "elapsed": round(elapsed, 3),
                **fields,
            }
            self.stream.write(json.dumps(record, default=str) + "\n")
        elif self.live and not keep:
            # Only the first line of a multi-line message fits a live line; cut it to the
            # terminal width so the carriage return really rewrites it.
            first = message.split("\n", 1)[0]
            text = f"[{elapsed:6.1f}s] {first}"[: _width(self.stream) - 1]
            self.stream.write(f"\r\x1b[K{text}")
            self._line_open = True
        else:
            self.finish()
            prefix = "" if level in ("info", "debug") else f"{level}: "
            self.stream.write(f"[{elapsed:6.1f}s] {prefix}{message}\n")
        self.stream.flush()


# Weak, so finished commands (and tests) do not keep their Progress alive.
_LIVE: weakref.WeakSet[Progress] = weakref.WeakSet()


def finish_live() -> None:
    """Close every open live progress line (before results, errors, or exit)."""
    for progress in list(_LIVE):
        progress.finish()


atexit.register(finish_live)


def _is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and os.environ.get("TERM") != "dumb"


def _width(stream: TextIO) -> int:
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (OSError, ValueError, AttributeError):
        return 80


def report_error(
    message: str, log_format: LogFormat, code: int, stream: TextIO | None = None
) -> None:
    """How the CLI shows a fatal error: `error: …` for people, a JSON line for control planes."""
    out = stream or sys.stderr
    finish_live()
    line = f"error: {message}\n"
    if log_format == "json":
        record = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": "error",
            "event": "error",
            "message": message,
            "exit_code": code,
        }
        line = json.dumps(record) + "\n"
    try:
        out.write(line)
        out.flush()
    except (OSError, ValueError):  # nobody reads stderr any more; the exit code still says it
        _quiet_at_exit(out)


def silent(message: str) -> None:
    """A progress sink that drops everything (library callers, tests)."""
    del message
