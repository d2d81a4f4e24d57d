"""Running kustomize (and the helm it starts) under limits.

A kustomization is input like any other: an alias bomb in one of its files made kustomize grow
to 8 GB in 45 s. So the child runs with a cap on its heap (RLIMIT_DATA, which counts what Go
actually maps; RLIMIT_AS would count the address space Go reserves up front and stop it
before it starts), on CPU time and on the bytes it may write (RLIMIT_FSIZE: its output goes to
a scratch file, so a flood of output stops at the cap instead of filling memory), and under a
wall-clock timeout. Limits are inherited by helm when kustomize runs it. A failure is one line
naming the input with what the tool said, never a goroutine dump.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import tempfile
from collections.abc import Callable
from typing import IO

from plans.documents import decode, limits, size_text
from runner.common.errors import InputError

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


def run_tool(cmd: list[str], *, what: str, timeout: float, scrub: dict[str, str]) -> str:
    """Run `cmd` and return its stdout, or raise InputError saying why `what` failed. Each
    key of `scrub` (a scratch path) is replaced by its value (the user's path) in messages."""
    memory = _env_int("LADING_MAX_TOOL_MEMORY", DEFAULT_MEMORY)
    cpu = _env_int("LADING_MAX_TOOL_CPU_SECONDS", DEFAULT_CPU_SECONDS)
    output = limits().input_bytes
    before = _children_cpu()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                preexec_fn=_limiter(memory, cpu, output),
                start_new_session=True,  # so a timeout stops helm too
            )
        except OSError as e:
            raise InputError(f"cannot run {cmd[0]}: {e.strerror}") from None
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise InputError(f"{what} took longer than {timeout:g}s") from None
        written = os.fstat(out.fileno()).st_size
        if written >= output:
            raise InputError(
                f"{what} printed more than {size_text(output)}",
                hint="raise LADING_MAX_INPUT_BYTES if the output is genuine",
            )
        if code != 0:
            used = _children_cpu() - before
            raise InputError(f"{what} failed: {_reason(code, err, memory, cpu, used, scrub)}")
        out.seek(0)
        return decode(out.read(), f"the output of {what}")


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
