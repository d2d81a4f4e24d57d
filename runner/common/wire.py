"""HTTP/1.1 to the API server and nothing in between: keep-alive connections, each request
written with one `sendall`, each answer read with a buffered reader and a parser for the little
of HTTP the API server speaks (a status line, headers, a Content-Length or chunked body).

The general-purpose stack (the kubernetes package over urllib3 over http.client) spends about a
millisecond of CPU per request — header objects, the email parser, retries machinery — which
is most of lading's own CPU in an install of a thousand objects on a two-core machine. This
spends a tenth of that. Only the transport is ours: which server, which CA, which client
certificate and which credentials come from `runner.common.kubeconfig`.

Errors are `WireError`s saying what went wrong in words a user can act on; they never carry a
header, a body or a credential.
"""

from __future__ import annotations

import base64
import contextlib
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import unquote, urlsplit

MAX_LINE = 64 * 1024  # a status, header or chunk-size line
MAX_HEADERS = 200
MAX_BODY = 512 * 1024 * 1024  # an answer the API server would never send
CLOSE_GRACE = 2.0  # seconds close() waits for the handshakes it ended to return


class _Reader(Protocol):
    def readline(self, size: int = -1, /) -> bytes: ...
    def read(self, size: int = -1, /) -> bytes: ...


class WireError(Exception):
    """The request did not get an HTTP answer. `kind` is one of connect, tls, tls-verify,
    lost (the connection went away mid-answer), timeout, protocol (not HTTP/1.1)."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


class _Stale(Exception):
    """A reused connection was closed before any byte of the answer: safe to send again."""


@dataclass(frozen=True)
class Endpoint:
    """One API server: its URL, the TLS context to reach it (None for plain HTTP), the name its
    certificate must carry when that is not the URL's host, and where the Authorization header
    comes from (called per request, so exec-plugin and rotated tokens stay fresh)."""

    url: str
    tls: ssl.SSLContext | None = None
    server_name: str | None = None
    authorization: Callable[[], str | None] = field(default=lambda: None, repr=False)
    proxy: str | None = field(default=None, repr=False)  # http://[user:pass@]host:port


class _Connection:
    __slots__ = ("reader", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reader = sock.makefile("rb", buffering=64 * 1024)

    def close(self) -> None:
        for closing in (self.reader.close, self.sock.close):
            with contextlib.suppress(OSError):
                closing()

    def dropped(self) -> bool:
        """True when the server closed this idle connection (it is readable: EOF or an
        unsolicited close_notify).

        A TLS 1.3 server also sends session tickets after the handshake, which make a
        connection that has not carried a request yet readable too: a record that holds no
        application data leaves the connection as good as it was."""
        poller = select.poll()
        try:
            poller.register(self.sock, select.POLLIN)
            if not poller.poll(0):
                return False
        except (OSError, ValueError):
            return True
        if not isinstance(self.sock, ssl.SSLSocket):
            return True
        timeout = self.sock.gettimeout()
        try:
            self.sock.setblocking(False)
            self.sock.recv(1)  # b"" at EOF; a byte nobody asked for is as bad
        except ssl.SSLWantReadError:
            return False
        except OSError:  # ssl.SSLError included
            return True
        finally:
            with contextlib.suppress(OSError):
                self.sock.settimeout(timeout)
        return True


def _host_bytes(name: str) -> bytes:
    """A host name as getaddrinfo and TLS take it. Given a str, both encode it with the IDNA
    codec, whose first use imports `stringprep` — about 15 ms of start-up, spent while the
    artifact is being read. An ASCII name is the same in ASCII."""
    return name.encode("ascii") if name.isascii() else name.encode("idna")


def _open(address: tuple[str, int], timeout: float) -> socket.socket:
    """socket.create_connection, with the host name given as bytes (_host_bytes)."""
    failed: OSError | None = None
    for family, kind, proto, _, sockaddr in socket.getaddrinfo(
            _host_bytes(address[0]), address[1], type=socket.SOCK_STREAM):
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(timeout)
            sock.connect(sockaddr)
        except OSError as e:
            sock.close()
            failed = e
            continue
        return sock
    raise failed or OSError("the name resolved to no address")


class Wire:
    """Keep-alive connections to one endpoint, shared by any number of threads (each request
    takes an idle connection or opens one; how many run at once is the caller's window)."""

    def __init__(self, endpoint: Endpoint, *, timeout: float, user_agent: str = "lading") -> None:
        parts = urlsplit(endpoint.url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {endpoint.url!r}")
        self.endpoint = endpoint
        self.timeout = timeout
        self._tls = endpoint.tls if parts.scheme == "https" else None
        if parts.scheme == "https" and self._tls is None:
            self._tls = ssl.create_default_context()
        self._address = (parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
        self._server_name = endpoint.server_name or parts.hostname
        self._prefix = parts.path.rstrip("/")
        netloc = parts.netloc.rpartition("@")[2]
        self._fixed = f"Host: {netloc}\r\nUser-Agent: {user_agent}\r\n"
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        self._netloc = f"{host}:{self._address[1]}"
        self._proxy = _proxy(endpoint.proxy) if endpoint.proxy else None
        self._idle: list[_Connection] = []
        self._lock = threading.Lock()
        self._closed = False
        # Sockets in a TLS handshake, as duplicates close() can shut down (the SSLSocket takes
        # over the original), and the condition it waits on for their handshakes to end.
        self._handshaking: set[socket.socket] = set()
        self._settled = threading.Condition(self._lock)
        self.round_trip: float | None = None  # the quickest TCP connect yet: about one RTT
        # The quickest request yet, sent to the last byte of its answer: one RTT and the
        # server's time. Unlike a TCP connect, it sees the whole way to the API server, also
        # behind a proxy or load balancer that answers the connect itself.
        self.quickest: float | None = None

    @property
    def distance(self) -> float | None:
        """How far the API server is, in seconds: the longer of the quickest connect and the
        quickest request (None before either)."""
        seen = [t for t in (self.round_trip, self.quickest) if t is not None]
        return max(seen) if seen else None

    def close(self) -> None:
        """Close every idle connection, and end the handshakes still running (connections
        opened ahead, which no request waits for): once this returns, none of them is inside
        OpenSSL. One that still were when the process exits would meet OpenSSL's own clean-up,
        and the process would die of a SIGSEGV instead of exiting with its code. Requests are
        their callers' to finish before closing."""
        with self._lock:
            idle, self._idle, self._closed = self._idle, [], True
            for sock in self._handshaking:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)  # the handshake reads EOF and fails
            self._settled.wait_for(lambda: not self._handshaking, timeout=CLOSE_GRACE)
        for conn in idle:
            conn.close()

    def request(
        self, method: str, target: str, headers: dict[str, str], body: bytes | None
    ) -> tuple[int, dict[str, str], bytes]:
        """Send one request; (status, headers with lower-case names, body)."""
        head = [f"{method} {self._prefix}{target} HTTP/1.1\r\n", self._fixed]
        authorization = self.endpoint.authorization()
        if authorization:
            head.append(f"Authorization: {authorization}\r\n")
        head.extend(f"{name}: {value}\r\n" for name, value in headers.items())
        if body is not None or method in ("POST", "PUT", "PATCH"):
            head.append(f"Content-Length: {len(body or b'')}\r\n")
        head.append("\r\n")
        payload = "".join(head).encode("latin-1") + (body or b"")
        # A reused connection the server closed in the meantime fails before any byte of the
        # answer; sending again on a fresh one is safe then (no request of ours is a POST that
        # could have been taken twice: the server never saw it).
        for _ in range(3):
            conn, reused = self._checkout()
            started = time.monotonic()
            try:
                status, response_headers, data, keep = self._exchange(conn, payload, method,
                                                                       reused)
            except _Stale:
                conn.close()
                continue
            except BaseException:
                conn.close()
                raise
            took = time.monotonic() - started
            self.quickest = took if self.quickest is None else min(self.quickest, took)
            if keep:
                self._checkin(conn)
            else:
                conn.close()
            return status, response_headers, data
        raise WireError("lost", "the connection was closed before an answer, three times")

    def _exchange(
        self, conn: _Connection, payload: bytes, method: str, reused: bool
    ) -> tuple[int, dict[str, str], bytes, bool]:
        try:
            conn.sock.sendall(payload)
            line = conn.reader.readline(MAX_LINE)
            if not line:
                if reused and method != "POST":
                    raise _Stale
                raise WireError("lost", "the server closed the connection without an answer")
            return _read_answer(conn.reader, line, method)
        except TimeoutError:
            raise WireError("timeout", f"no answer within {self.timeout:g}s") from None
        except ssl.SSLError as e:
            raise WireError("lost", f"TLS error mid-request ({e.reason or e})") from None
        except (ConnectionResetError, BrokenPipeError) as e:
            if reused and method != "POST":
                raise _Stale from None
            raise WireError("lost", type(e).__name__) from None
        except OSError as e:
            raise WireError("lost", type(e).__name__) from None

    def warm(self, count: int) -> None:
        """Open up to `count` connections side by side and keep them idle, so the requests
        that follow skip the TCP and TLS handshakes (two round trips each). Failures are left
        to those requests to report."""
        with self._lock:
            count -= len(self._idle)

        def one() -> None:
            with contextlib.suppress(WireError):
                self._checkin(self._connect())

        threads = [threading.Thread(target=one, daemon=True) for _ in range(count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def _checkout(self) -> tuple[_Connection, bool]:
        while True:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                return self._connect(), False
            if conn.dropped():
                conn.close()
                continue
            return conn, True

    def _checkin(self, conn: _Connection) -> None:
        with self._lock:
            if not self._closed:
                self._idle.append(conn)
                return
        conn.close()

    def _connect(self) -> _Connection:
        address = self._proxy[0] if self._proxy else self._address
        started = time.monotonic()
        try:
            sock = _open(address, self.timeout)
        except TimeoutError:
            raise WireError("connect", f"no connection within {self.timeout:g}s") from None
        except OSError as e:
            raise WireError("connect", e.strerror or type(e).__name__) from None
        took = time.monotonic() - started
        self.round_trip = took if self.round_trip is None else min(self.round_trip, took)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._proxy:
            self._tunnel(sock, self._proxy[1])
        if self._tls is None:
            return _Connection(sock)
        with self._lock:
            if self._closed:
                sock.close()
                raise WireError("lost", "the client was closed")
            try:
                handle = sock.dup()
            except OSError as e:  # out of file descriptors
                sock.close()
                raise WireError("connect", e.strerror or type(e).__name__) from None
            self._handshaking.add(handle)
        try:
            wrapped = self._tls.wrap_socket(sock,
                                            server_hostname=_host_bytes(self._server_name))
        except ssl.SSLCertVerificationError as e:
            sock.close()
            raise WireError("tls-verify", str(e.verify_message or "certificate verify failed")
                            ) from None
        except ssl.SSLError as e:
            sock.close()
            raise WireError("tls", str(e.reason or e)) from None
        except TimeoutError:
            sock.close()
            raise WireError("timeout", f"no TLS handshake within {self.timeout:g}s") from None
        except OSError as e:
            sock.close()
            raise WireError("tls", e.strerror or type(e).__name__) from None
        finally:
            with self._lock:
                self._handshaking.discard(handle)
                self._settled.notify_all()
            handle.close()
        return _Connection(wrapped)

    def _tunnel(self, sock: socket.socket, authorization: str | None) -> None:
        """Ask an HTTP proxy for a tunnel to the API server (CONNECT)."""
        request = f"CONNECT {self._netloc} HTTP/1.1\r\nHost: {self._netloc}\r\n"
        if authorization:
            request += f"Proxy-Authorization: {authorization}\r\n"
        try:
            sock.sendall((request + "\r\n").encode("latin-1"))
            reader = sock.makefile("rb", buffering=0)
            line = reader.readline(MAX_LINE)
            if not line:
                raise WireError("connect", "the proxy closed the connection")
            _, status = _status_line(line)
            _headers(reader)
        except WireError:
            sock.close()
            raise
        except OSError as e:
            sock.close()
            raise WireError("connect", f"proxy: {e.strerror or type(e).__name__}") from None
        if status != 200:
            sock.close()
            raise WireError("connect", f"the proxy refused a tunnel (HTTP {status})")


def _proxy(url: str) -> tuple[tuple[str, int], str | None]:
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"only http:// proxies are supported, not {parts.scheme or url!r}")
    authorization = None
    if parts.username:
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        authorization = "Basic " + base64.b64encode(pair).decode()
    return (parts.hostname, parts.port or 80), authorization


def _read_answer(
    reader: _Reader, line: bytes, method: str
) -> tuple[int, dict[str, str], bytes, bool]:
    while True:
        version, status = _status_line(line)
        headers = _headers(reader)
        if status >= 200 or status == 101:
            break
        line = reader.readline(MAX_LINE)  # an interim 1xx answer: the real one follows
        if not line:
            raise WireError("lost", "the connection closed after an interim answer")
    keep = version == b"HTTP/1.1" and headers.get("connection", "").lower() != "close"
    if method == "HEAD" or status in (204, 304):
        return status, headers, b"", keep
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return status, headers, _chunked(reader), keep
    length = headers.get("content-length")
    if length is not None:
        try:
            size = int(length)
        except ValueError:
            raise WireError("protocol", "a malformed Content-Length") from None
        if not 0 <= size <= MAX_BODY:
            raise WireError("protocol", f"an answer of {size} bytes")
        data = reader.read(size)
        if len(data) != size:
            raise WireError("lost", "the connection closed mid-answer")
        return status, headers, data, keep
    data = reader.read(MAX_BODY + 1)  # until the server closes the connection
    if len(data) > MAX_BODY:
        raise WireError("protocol", "an answer without end")
    return status, headers, data, False


def _status_line(line: bytes) -> tuple[bytes, int]:
    parts = line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise WireError("protocol", "the server did not answer in HTTP/1.1")
    return parts[0], int(parts[1])


def _headers(reader: _Reader) -> dict[str, str]:
    headers: dict[str, str] = {}
    for _ in range(MAX_HEADERS):
        line = reader.readline(MAX_LINE)
        if line in (b"\r\n", b"\n"):
            return headers
        if not line.endswith(b"\n"):
            raise WireError("lost", "the connection closed mid-headers")
        name, sep, value = line.partition(b":")
        if not sep:
            raise WireError("protocol", "a malformed header line")
        key = name.strip().lower().decode("latin-1")
        text = value.strip().decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    raise WireError("protocol", f"more than {MAX_HEADERS} headers")


def _chunked(reader: _Reader) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while True:
        line = reader.readline(MAX_LINE)
        if not line.endswith(b"\n"):
            raise WireError("lost", "the connection closed mid-answer")
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise WireError("protocol", "a malformed chunk size") from None
        if size == 0:
            _headers(reader)  # trailers, up to the blank line
            return b"".join(chunks)
        total += size
        if size < 0 or total > MAX_BODY:
            raise WireError("protocol", "an answer without end")
        chunk = reader.read(size)
        if len(chunk) != size or reader.read(2) != b"\r\n":
            raise WireError("lost", "the connection closed mid-answer")
        chunks.append(chunk)
