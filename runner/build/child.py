"""Running kustomize (and the helm it starts) under limits.

A kustomization is input like any other: an alias bomb in one of its files made kustomize grow
to 8 GB in 45 s. So the child runs with a cap on its heap (RLIMIT_DATA, which counts what Go
actually maps; RLIMIT_AS would count the address space Go reserves up front and stop it
before it starts), on CPU time and on the bytes it may write (RLIMIT_FSIZE: its output goes to
a scratch file, so a flood of output stops at the cap instead of filling memory), and under a
wall-clock timeout. Limits are inherited by helm when kustomize runs it. A failure is one line
naming the input with what the tool said, never a goroutine dump.

kustomize is most of a build's time, and it needs one core; the Python modules a build loads
(pydantic, the plan models, the registry client) take a few hundred milliseconds on the other.
So a child can be started early (`start_early`, from runner.build.early) and `run_tool` takes
it over when asked for the same command under the same limits; anything else stops it.
"""

from __future__ import annotations

import contextlib
import os
import resource
import select
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable

from plans.limits import decode, limits, size_text
from runner.common.errors import InputError

# runner.build.early imports this module before anything else, and `typing` takes 5 ms to load.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import IO

# 25 times what a 1,000-object overlay needs (kustomize peaks near 40 MB on bench/'s); an alias
# bomb reaches this in about a second and is stopped there.
DEFAULT_MEMORY = 1024 * 1024 * 1024
DEFAULT_CPU_SECONDS = 120
_STDERR_READ = 64 * 1024


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw.replace("_", ""))
    except ValueError:
        value = 0
    if value < 1:
        raise InputError(f"{name}={raw!r}: expected a positive whole number")
    return value


def _limiter(memory: int, cpu: int, output: int) -> Callable[[], None]:
    def limit() -> None:  # runs in the child between fork and exec
        resource.setrlimit(resource.RLIMIT_DATA, (memory, memory))
        # Go ignores SIGXCPU, so the soft limit would do nothing: the hard one kills.
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
        resource.setrlimit(resource.RLIMIT_FSIZE, (output, output))

    return limit


class RunningTool:
    """A tool started under the limits, its output going to scratch files."""

    def __init__(self, cmd: list[str], memory: int, cpu: int, output: int) -> None:
        self.cmd = cmd
        self.limits = (memory, cpu, output)
        self.context = _context()
        self._before = _children_cpu()
        self._started = time.monotonic()
        # Outlive this call: closed by output() or stop().
        self._out = tempfile.TemporaryFile()  # noqa: SIM115
        self._err = tempfile.TemporaryFile()  # noqa: SIM115
        try:
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=self._out,
                stderr=self._err,
                preexec_fn=_limiter(memory, cpu, output),
                start_new_session=True,  # so a timeout stops helm too
            )
        except OSError as e:
            self._close()
            raise InputError(f"cannot run {cmd[0]}: {e.strerror}") from None

    def output(self, *, what: str, timeout: float, scrub: dict[str, str]) -> str:
        """Wait (`timeout` counts from the start) and return stdout, or raise InputError saying
        why `what` failed. Each key of `scrub` (a scratch path) is replaced by its value (the
        user's path) in messages."""
        memory, cpu, output = self.limits
        try:
            try:
                code = self._wait(max(0.0, timeout - (time.monotonic() - self._started)))
            except subprocess.TimeoutExpired:
                self._kill()
                raise InputError(f"{what} took longer than {timeout:g}s") from None
            written = os.fstat(self._out.fileno()).st_size
            if written >= output:
                raise InputError(
                    f"{what} printed more than {size_text(output)}",
                    hint="raise LADING_MAX_INPUT_BYTES if the output is genuine",
                )
            if code != 0:
                used = _children_cpu() - self._before
                reason = _reason(code, self._err, memory, cpu, used, scrub)
                raise InputError(f"{what} failed: {reason}")
            self._out.seek(0)
            return decode(self._out.read(), f"the output of {what}")
        finally:
            self._close()

    def _wait(self, timeout: float) -> int:
        # Popen.wait(timeout) polls, sleeping up to 50 ms between looks; a pidfd wakes the
        # moment the child exits.
        try:
            pidfd = os.pidfd_open(self._proc.pid)
        except (AttributeError, OSError):  # not Linux 5.3+
            return self._proc.wait(timeout=timeout)
        try:
            exited, _, _ = select.select([pidfd], [], [], timeout)
        finally:
            os.close(pidfd)
        if not exited:
            raise subprocess.TimeoutExpired(self.cmd, timeout)
        return self._proc.wait()

    def stop(self) -> None:
        """Kill the tool (and whatever it started) and drop its output."""
        if self._proc.poll() is None:
            self._kill()
        self._close()

    def _kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._proc.pid, signal.SIGKILL)
        self._proc.wait()

    def _close(self) -> None:
        self._out.close()
        self._err.close()


def start_tool(cmd: list[str]) -> RunningTool:
    """Start `cmd` under the limits in force (LADING_MAX_TOOL_MEMORY, _CPU_SECONDS, and the
    input limit for its output)."""
    return RunningTool(cmd, *_limits())


def _limits() -> tuple[int, int, int]:
    """Memory, CPU seconds and output bytes a tool may use."""
    memory = _env_int("LADING_MAX_TOOL_MEMORY", DEFAULT_MEMORY)
    cpu = _env_int("LADING_MAX_TOOL_CPU_SECONDS", DEFAULT_CPU_SECONDS)
    return memory, cpu, limits().input_bytes


def run_tool(cmd: list[str], *, what: str, timeout: float, scrub: dict[str, str]) -> str:
    """Run `cmd` and return its stdout, or raise InputError saying why `what` failed. A child
    started early for exactly this command, environment and limits is taken over instead."""
    running = _take_early(cmd) or start_tool(cmd)
    return running.output(what=what, timeout=timeout, scrub=scrub)


# -- starting early ----------------------------------------------------------------------------

_early: RunningTool | None = None


def start_early(cmd: list[str]) -> None:
    """Start `cmd` now, so it runs while the caller imports what it needs; `run_tool` takes it
    over when asked for the same command, and `discard_early` stops it otherwise. Failing to
    start is left for `run_tool` to report."""
    global _early
    discard_early()
    with contextlib.suppress(InputError):
        _early = start_tool(cmd)


def discard_early() -> None:
    """Stop a child started early that nothing took over."""
    global _early
    early, _early = _early, None
    if early is not None:
        early.stop()


def _take_early(cmd: list[str]) -> RunningTool | None:
    global _early
    early, _early = _early, None
    if early is None:
        return None
    if (early.cmd, early.limits, early.context) == (cmd, _limits(), _context()):
        return early
    early.stop()
    return None


def _context() -> tuple[dict[str, str], str]:
    """What else a child sees: one started early is taken over only if this has not changed."""
    return dict(os.environ), os.getcwd()


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _reason(
    code: int, err: IO[bytes], memory: int, cpu: int, used: float, scrub: dict[str, str]
) -> str:
    err.seek(0)
    text = err.read(_STDERR_READ).decode("utf-8", "replace")
    if "out of memory" in text or "cannot allocate memory" in text:
        return (
            f"it ran out of memory (limit {size_text(memory)}); raise LADING_MAX_TOOL_MEMORY "
            "if the input is genuine"
        )
    if code == -signal.SIGKILL and used >= cpu - 1:
        return (
            f"it used more than {cpu}s of CPU; raise LADING_MAX_TOOL_CPU_SECONDS if the "
            "input is genuine"
        )
    line = tool_message(text)
    for scratch, shown in scrub.items():
        line = line.replace(scratch, shown)
    if line:
        return line
    if code < 0:
        return f"it was killed by signal {-code}"
    return f"it exited with status {code} and said nothing"


def tool_message(text: str, max_lines: int = 20, width: int = 2000) -> str:
    """What a tool said, without Go's `Error: ` prefix and without any stack dump: the text
    up to the first goroutine or runtime stack, cut to `max_lines` lines and `width`
    characters. (kustomize's own errors may span lines: it quotes the config it refused.)"""
    kept: list[str] = []
    for line in text.strip().splitlines():
        if line.startswith(("goroutine ", "runtime stack:", "\t")) or len(kept) == max_lines:
            break
        kept.append(line)
    message = "\n".join(kept).strip().removeprefix("Error: ")
    return message if len(message) <= width else message[: width - 1] + "…"
