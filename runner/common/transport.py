"""Bounded HTTP for registries: a deadline per operation that holds even against a peer that
trickles, and retries with backoff and jitter for failures worth retrying.

Socket time-outs alone bound only the wait for the *next* byte: a registry that sends one
byte a second never trips them. So every operation (pushing one blob, reading one manifest)
runs under a `Deadline`: a watchdog thread that, when the operation's time is up, shuts down
the sockets the operation is using, so whatever read or write is blocked returns at once. The
time allowed scales with the bytes expected (`RegistryTimeouts.budget`), so big blobs on slow
links pass and a trickle fails in bounded time.

The sockets are found through urllib3 connection classes that register themselves with the
operation running in the current thread: requests exposes no socket before a response.
"""

from __future__ import annotations

import contextlib
import email.utils
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import requests
import requests.adapters
import urllib3.connection
import urllib3.connectionpool

from runner.common.errors import RemoteError
from runner.common.registry_options import RegistryTimeouts

T = TypeVar("T")

_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
_BACKOFF_FIRST = 0.25  # seconds; doubled per attempt, then jittered
_BACKOFF_CAP = 8.0
_local = threading.local()


class Deadline:
    """The time one registry operation may take, enforced by shutting its sockets down."""

    def __init__(self, what: str, timeouts: RegistryTimeouts, expected_bytes: int = 0) -> None:
        self.what = what
        self.timeouts = timeouts
        self.started = time.monotonic()
        self.expected_bytes = expected_bytes
        self.end = self.started + timeouts.budget(expected_bytes)
        self.expired = False
        self._done = False
        self._sockets: list[socket.socket] = []
        self._cond = threading.Condition()

    def expect(self, total_bytes: int) -> None:
        """Allow more time once the size of the transfer is known (a Content-Length)."""
        with self._cond:
            if total_bytes > self.expected_bytes:
                self.expected_bytes = total_bytes
                self.end = max(self.end, self.started + self.timeouts.budget(total_bytes))
                self._cond.notify()

    def remaining(self) -> float:
        return self.end - time.monotonic()

    def watch(self, sock: socket.socket) -> None:
        with self._cond:
            if sock not in self._sockets:
                self._sockets.append(sock)
            if self.expired:
                _shutdown(sock)

    def _run(self) -> None:
        with self._cond:
            while not self._done:
                left = self.end - time.monotonic()
                if left <= 0:
                    self.expired = True
                    for sock in self._sockets:
                        _shutdown(sock)
                    return
                self._cond.wait(left)

    def failure(self) -> RemoteError:
        elapsed = time.monotonic() - self.started
        t = self.timeouts
        allowed = f"{t.stall:g} s"
        if self.expected_bytes:
            allowed += f" plus 1 s per {_size(int(t.min_rate))} of the {_size(self.expected_bytes)}"
        return RemoteError(
            f"{self.what}: timed out after {elapsed:.0f} s (allowed: {allowed})",
            hint="the registry stalled or sent too slowly; LADING_REGISTRY_STALL_TIMEOUT and "
            "LADING_REGISTRY_MIN_RATE set these limits",
        )

    def sleep(self, seconds: float, reason: str, asked: bool) -> None:
        """Wait before a retry (`asked`: as long as the registry's Retry-After says), unless the
        wait would cross the deadline."""
        if seconds >= self.remaining():
            allowed = f"the {self.end - self.started:.0f} s this operation may take"
            wait = (f"it asks to retry after {seconds:.0f} s, later than {allowed}" if asked
                    else f"no time left to retry within {allowed}")
            raise RemoteError(
                f"{self.what}: {reason}; {wait}",
                hint="check the registry; LADING_REGISTRY_STALL_TIMEOUT sets the limit",
            )
        time.sleep(seconds)


@contextmanager
def operation(what: str, timeouts: RegistryTimeouts, expected_bytes: int = 0) -> Iterator[Deadline]:
    """Run the body as one registry operation under a deadline."""
    deadline = Deadline(what, timeouts, expected_bytes)
    outer = getattr(_local, "deadline", None)
    _local.deadline = deadline
    watchdog = threading.Thread(target=deadline._run, name="lading-deadline", daemon=True)
    watchdog.start()
    try:
        yield deadline
    finally:
        with deadline._cond:
            deadline._done = True
            deadline._cond.notify()
        _local.deadline = outer


class Retry(Exception):
    """One attempt failed in a way worth retrying; `after` is the registry's Retry-After."""

    def __init__(self, reason: str, after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.after = after


def retrying(deadline: Deadline, attempt: Callable[[], T]) -> T:
    """Call `attempt` until it returns, up to `attempts` times, backing off (with jitter, or as
    long as the registry's Retry-After says) between tries, all within the deadline."""
    attempts = deadline.timeouts.attempts
    for n in range(attempts):
        try:
            return attempt()
        except Retry as failed:
            if deadline.expired:
                raise deadline.failure() from None
            if n == attempts - 1:
                raise RemoteError(
                    f"{deadline.what}: {failed.reason} ({attempts} attempts)",
                    hint="check that the registry is running and reachable; "
                    "LADING_REGISTRY_ATTEMPTS sets the number of tries",
                ) from None
            backoff = min(_BACKOFF_CAP, _BACKOFF_FIRST * 2**n)
            delay = failed.after if failed.after is not None else backoff * _jitter()
            deadline.sleep(delay, failed.reason, asked=failed.after is not None)
    raise AssertionError("unreachable")


def _jitter() -> float:
    """A factor in [0.5, 1): spreads retries of many runners hitting one registry."""
    return 0.5 + secrets.randbelow(500) / 1000


def retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def retryable_status(status: int) -> bool:
    return status in _RETRY_STATUS


def classify(error: Exception, host: str, timeouts: RegistryTimeouts) -> Retry:
    """A failed request → why, in words a user reads, as a retryable failure."""
    if isinstance(error, requests.exceptions.ConnectTimeout):
        return Retry(f"no connection to registry {host} within {timeouts.connect:g} s")
    if isinstance(error, requests.exceptions.ReadTimeout):
        return Retry(f"registry {host} sent nothing for {timeouts.stall:g} s")
    text = str(error)
    if "Connection refused" in text:
        return Retry(f"cannot reach registry {host}: Connection refused")
    if "Name or service not known" in text or "NameResolutionError" in text:
        return Retry(f"cannot reach registry {host}: Name or service not known")
    if "timed out" in text:
        return Retry(f"registry {host} sent nothing for {timeouts.stall:g} s")
    return Retry(f"the connection to registry {host} was dropped ({_dropped(error)})")


def _dropped(error: Exception) -> str:
    text = str(error)
    for marker in ("Connection reset by peer", "Broken pipe", "IncompleteRead",
                   "Remote end closed connection", "Connection aborted"):
        if marker in text:
            return marker.lower() if marker[0] != "I" else "incomplete read"
    return type(error).__name__


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already closed
        sock.shutdown(socket.SHUT_RDWR)


def _size(n: int) -> str:
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.0f} {unit}"
    return f"{n} bytes"


def _current() -> Deadline | None:
    deadline: Deadline | None = getattr(_local, "deadline", None)
    return deadline


class _Watched(urllib3.connection.HTTPConnection):
    """Registers its socket with the current operation; sends wait up to `stall` for the peer
    to take more bytes (urllib3 would use the connect time-out)."""

    def connect(self) -> None:
        super().connect()
        self._register()

    def request(self, *args: Any, **kwargs: Any) -> None:
        self._register()
        super().request(*args, **kwargs)

    def send(self, data: Any) -> None:
        deadline = _current()
        if self.sock is not None and deadline is not None:
            self.sock.settimeout(deadline.timeouts.stall)
        super().send(data)

    def _register(self) -> None:
        deadline = _current()
        if self.sock is not None and deadline is not None:
            deadline.watch(self.sock)


class _WatchedTLS(_Watched, urllib3.connection.HTTPSConnection):
    pass


class _Pool(urllib3.connectionpool.HTTPConnectionPool):
    ConnectionCls = _Watched


class _TLSPool(urllib3.connectionpool.HTTPSConnectionPool):
    ConnectionCls = _WatchedTLS


class _Adapter(requests.adapters.HTTPAdapter):
    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _Pool, "https": _TLSPool}


def bound(session: requests.Session) -> None:
    """Route the session's connections through the watched pools (HTTP(S) proxies from the
    environment bypass them; their socket time-outs still apply)."""
    adapter = _Adapter()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
