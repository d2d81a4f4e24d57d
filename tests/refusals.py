"""Running `lading` on hostile input as a user would: a separate process with a private TMPDIR,
a time limit (a hang fails the test, not the CI run) and its peak memory measured, and the
checks every refusal must pass: the exit code, the message, no traceback, no scratch left."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

LADING = Path(sys.executable).with_name("lading")
# Safety nets, far above what a refusal needs: a refusal that needs more is a bug.
TIME_LIMIT = 60.0
MEMORY_LIMIT_KIB = 1024 * 1024


@dataclass
class Outcome:
    code: int
    out: str
    err: str
    seconds: float
    peak_kib: int  # the process's peak resident memory
    scratch: list[str]  # what it left in its TMPDIR


@contextmanager
def _interruptible() -> Iterator[None]:
    """Start children with SIGINT at its default, as a terminal's Ctrl-C finds them. A test run
    started in the background of a shell without job control (`.ci/run &`) inherits SIGINT
    ignored, and passes that on: a Python started so raises no KeyboardInterrupt, by design.
    A handler of this process's own becomes the default in a child at exec."""
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        yield
        return
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


class Lading:
    """`lading` started from a test, its stdout/stderr in files (no pipe to fill up)."""

    def __init__(self, args: list[str], workdir: Path, env: dict[str, str] | None = None):
        self.tmpdir = workdir / "tmpdir"
        self.tmpdir.mkdir(parents=True, exist_ok=True)
        self._out, self._err = workdir / "stdout", workdir / "stderr"
        environment = {
            **os.environ,
            "TMPDIR": str(self.tmpdir),
            "SOURCE_DATE_EPOCH": "0",
            "NO_COLOR": "1",
            **(env or {}),
        }
        with self._out.open("wb") as out, self._err.open("wb") as err, _interruptible():
            self.proc = subprocess.Popen(
                [str(LADING), *args], stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                env=environment, cwd=workdir,
            )
        self.started = time.monotonic()

    def signal(self, signum: signal.Signals) -> None:
        self.proc.send_signal(signum)

    def running(self) -> bool:
        return self.proc.poll() is None

    def wait(self, timeout: float = TIME_LIMIT) -> Outcome:
        """Reap the process with os.wait4, which reports its own peak memory; kill it and fail
        if it runs past `timeout`."""
        deadline = self.started + timeout
        while True:
            pid, status, usage = os.wait4(self.proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                self.proc.kill()
                os.wait4(self.proc.pid, 0)
                self.proc.returncode = -9
                raise AssertionError(
                    f"lading ran longer than {timeout:.0f} s and was killed; stderr:\n"
                    + self._err.read_text(errors="replace")[-3000:]
                )
            time.sleep(0.02)
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        return Outcome(
            code=self.proc.returncode,
            out=self._out.read_text(errors="replace"),
            err=self._err.read_text(errors="replace"),
            seconds=time.monotonic() - self.started,
            peak_kib=usage.ru_maxrss,
            scratch=sorted(p.name for p in self.tmpdir.iterdir()),
        )


def run_lading(
    args: list[str], workdir: Path, env: dict[str, str] | None = None,
    timeout: float = TIME_LIMIT,
) -> Outcome:
    return Lading(args, workdir, env).wait(timeout)


def assert_refused(
    outcome: Outcome, code: int, *fragments: str, within: float = TIME_LIMIT
) -> None:
    """Refused the way a user should see it: the exit code, each fragment in the message, no
    Python traceback, nothing left in TMPDIR, and inside the time and memory nets."""
    assert outcome.code == code, f"exit {outcome.code}, stderr:\n{outcome.err}"
    for fragment in fragments:
        assert fragment in outcome.err, f"{fragment!r} not in stderr:\n{outcome.err}"
    assert "Traceback" not in outcome.err, outcome.err
    assert outcome.scratch == [], f"scratch left behind: {outcome.scratch}"
    assert outcome.seconds < within, f"took {outcome.seconds:.1f} s, over {within} s"
    assert outcome.peak_kib < MEMORY_LIMIT_KIB, f"peak memory {outcome.peak_kib} KiB"


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)
