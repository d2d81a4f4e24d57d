"""Starting, watching and stopping the local environment's server processes.

Each server runs in its own session (process group) with stdout+stderr in a log file, so
`stop` can end it together with anything it forked, and so Ctrl-C in the shell that ran
`lading dev up` does not take the environment down with it. A stopped process is identified by
pid *and* executable, so a stale state file never makes us signal an unrelated process that
reused the pid.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import requests
from pydantic import BaseModel, ConfigDict

from runner.common.errors import OperationFailed

# Children started by this Python process, so that we reap them (no zombies in long test
# sessions) and so that Popen does not warn about still-running children at exit.
_children: dict[int, subprocess.Popen[bytes]] = {}
_handed_out: set[int] = set()


class ProcessRecord(BaseModel):
    """A running server: what the state file records about it."""

    model_config = ConfigDict(frozen=True)

    name: str
    pid: int
    executable: Path
    log: Path


def free_port() -> int:
    """A loopback TCP port that was free a moment ago.

    Servers that cannot report the port they bound (etcd, kube-apiserver, docker-registry) need
    a number up front. Ports handed out earlier in this process are never reused, which rules
    out the common collision: two components of one environment getting the same port.
    """
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise OperationFailed("could not find a free loopback port")


def start(
    name: str,
    argv: Sequence[str | Path],
    log_dir: Path,
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> ProcessRecord:
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(a) for a in argv],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
    _children[proc.pid] = proc
    return ProcessRecord(name=name, pid=proc.pid, executable=Path(argv[0]).resolve(), log=log)


def loopback_session(
    ca_file: Path | None = None, client_cert: tuple[Path, Path] | None = None
) -> requests.Session:
    """An HTTP session for probing our own loopback servers.

    requests lets REQUESTS_CA_BUNDLE override a session's `verify`, and proxy variables would
    route loopback traffic elsewhere; neither may apply here.
    """
    session = requests.Session()
    session.trust_env = False
    session.verify = str(ca_file) if ca_file else True
    if client_cert:
        session.cert = (str(client_cert[0]), str(client_cert[1]))
    return session


def _executable(pid: int) -> Path | None:
    try:
        target = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return None
    # A binary replaced on disk (re-provisioned) still runs; the kernel marks it deleted.
    return Path(target.removesuffix(" (deleted)"))


def is_running(record: ProcessRecord) -> bool:
    child = _children.get(record.pid)
    if child is not None:
        return child.poll() is None
    if _executable(record.pid) != record.executable:
        return False
    try:
        with open(f"/proc/{record.pid}/stat") as f:
            # A zombie has exited; it only waits for its parent to reap it.
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def stop(record: ProcessRecord, timeout: float = 10.0) -> None:
    """SIGTERM the process group, SIGKILL it after `timeout`, and wait until it is gone.
    Stopping a process that is not running is a no-op."""
    if not is_running(record):
        _reap(record.pid)
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(record.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while is_running(record) and time.monotonic() < deadline:
        time.sleep(0.05)
    if is_running(record):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(record.pid, signal.SIGKILL)
        while is_running(record):
            time.sleep(0.05)
    _reap(record.pid)


def stop_all(records: Iterable[ProcessRecord]) -> None:
    """Stop in reverse start order: clients (controllers, kwok) before the servers they use."""
    for record in reversed(list(records)):
        stop(record)


def _reap(pid: int) -> None:
    child = _children.pop(pid, None)
    if child is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=5)


def log_tail(record: ProcessRecord, lines: int = 8) -> str:
    try:
        text = record.log.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def wait_until(
    ready: Callable[[], bool],
    what: str,
    watched: Sequence[ProcessRecord],
    timeout: float,
    interval: float = 0.1,
) -> None:
    """Poll `ready` until it is true; fail early, with the log's tail, if a watched process
    exits, and fail naming the logs on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        for record in watched:
            if not is_running(record):
                raise OperationFailed(
                    f"{record.name} exited while waiting for {what}; its log is {record.log}:\n"
                    + log_tail(record)
                )
        if ready():
            return
        if time.monotonic() > deadline:
            logs = ", ".join(str(r.log) for r in watched)
            raise OperationFailed(f"{what} not ready after {timeout:.0f}s; logs: {logs}")
        time.sleep(interval)
