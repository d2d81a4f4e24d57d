"""A fault-injecting TCP proxy for tests, in front of a real server on loopback.

    with FaultProxy("127.0.0.1:5000") as proxy:          # listens on 127.0.0.1:<random>
        proxy.fault = Fault("reset", direction="up", match=b"PUT /v2/", after=64 * 1024)
        ...                                              # lading talks to proxy.address
        assert proxy.fired == 1
        proxy.fault = Fault()                            # pass everything through again
        proxy.down(); proxy.up()                         # the server "dies", then "restarts"

A fault is armed when the client's bytes contain `match` (at once when `match` is empty), for
the first `times` matches (all when None). Once armed on a connection, `after` more bytes pass
in `direction` ("up": client → server, "down": server → client) and then the fault acts:

    reset    the client gets a TCP RST (SO_LINGER 0), the server a closed connection
    stall    nothing more moves either way; the connection stays open, silent
    trickle  the rest of that direction flows at `rate` bytes per second
    answer   the request is not forwarded: the client gets `response` (e.g. an HTTP 503 with
             Retry-After) and the connection is closed; `direction` and `after` do not apply

`after` counts from the start of the chunk in which `match` was seen (request headers
included). Patterns are visible only in plain-text protocols; through TLS (the API server)
use `down()`/`up()` or a byte count with an empty `match`.

The proxy binds 127.0.0.1 only, connects only to the upstream given, and stops by itself after
`lifetime` seconds, closing every connection, so a test that forgets it cannot hang a run.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from types import TracebackType
from typing import Literal

_SENT_CAP = 16 * 1024 * 1024

Action = Literal["pass", "reset", "stall", "trickle", "answer"]
Direction = Literal["up", "down"]


@dataclass(frozen=True)
class Fault:
    action: Action = "pass"
    direction: Direction = "down"
    match: bytes = b""
    after: int = 0
    rate: int = 1024
    times: int | None = None
    response: bytes = b""


class _Connection:
    def __init__(self, client: asyncio.StreamWriter) -> None:
        self.client = client
        self.server: asyncio.StreamWriter | None = None
        self.fault: Fault | None = None  # armed on this connection
        self.counted = 0
        self.tail = b""
        self.stalled = False
        self.trickling = False
        self.closed = asyncio.Event()

    def abort(self, reset: bool) -> None:
        if reset:
            sock = self.client.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.client.transport.abort()
        if self.server is not None:
            self.server.transport.abort()
        self.closed.set()


class FaultProxy:
    def __init__(self, upstream: str, *, lifetime: float = 300.0) -> None:
        host, port = upstream.rsplit(":", 1)
        if host not in ("127.0.0.1", "localhost"):
            raise ValueError(f"the fault proxy only forwards to loopback, not {host}")
        self.upstream = ("127.0.0.1", int(port))
        self.lifetime = lifetime
        self.port = 0
        self.fired = 0  # faults that acted
        self.armed = 0  # connections a fault was armed on
        self.connections = 0
        self.bytes_up = 0
        self.bytes_down = 0
        # What clients sent, for tests to look for a header (e.g. a Range request); capped.
        self.sent = bytearray()
        self._fault = Fault()
        self._remaining: int | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="fault-proxy", daemon=True)
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._server: asyncio.Server | None = None
        self._conns: set[_Connection] = set()
        self._error: BaseException | None = None

    # -- control, from the test's thread ------------------------------------------------------

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def fault(self) -> Fault:
        return self._fault

    @fault.setter
    def fault(self, fault: Fault) -> None:
        def change() -> None:
            self._fault, self._remaining = fault, fault.times

        self._call(change)

    def down(self) -> None:
        """The server goes away: open connections are reset, new ones refused."""
        self._submit(self._down())

    def up(self) -> None:
        """The server is back, on the same port."""
        self._submit(self._listen())

    def start(self) -> FaultProxy:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the fault proxy did not start")
        if self._error:
            raise self._error
        return self

    def stop(self) -> None:
        if self._thread.is_alive() and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _call(self, fn: Callable[[], None]) -> None:
        async def run() -> None:
            fn()

        self._submit(run())

    def _submit(self, coro: Coroutine[object, object, None]) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    # -- the event loop ---------------------------------------------------------------------

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._main())
        except BaseException as e:  # reported to start()
            self._error = e
            self._ready.set()
        finally:
            self._loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        await self._listen()
        self._ready.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), self.lifetime)
        await self._down()
        handlers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)

    async def _listen(self) -> None:
        if self._server is not None:
            return
        self._server = await asyncio.start_server(
            self._handle, "127.0.0.1", self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def _down(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for conn in list(self._conns):
            conn.abort(reset=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Cancelled at shutdown; asyncio's stream callback would log a cancelled handler.
        with contextlib.suppress(asyncio.CancelledError):
            await self._serve(reader, writer)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = _Connection(writer)
        self._conns.add(conn)
        self.connections += 1
        try:
            try:
                up_reader, up_writer = await asyncio.wait_for(
                    asyncio.open_connection(*self.upstream), 5
                )
            except (OSError, TimeoutError):
                conn.abort(reset=True)
                return
            conn.server = up_writer
            if not self._fault.match:
                self._arm(conn)
            await asyncio.gather(
                self._pump(conn, reader, up_writer, "up"),
                self._pump(conn, up_reader, writer, "down"),
                return_exceptions=True,
            )
        finally:
            conn.abort(reset=False)
            self._conns.discard(conn)

    def _arm(self, conn: _Connection) -> None:
        fault = self._fault
        if fault.action == "pass" or conn.fault is not None or self._remaining == 0:
            return
        if self._remaining is not None:
            self._remaining -= 1
        conn.fault, conn.counted = fault, 0
        self.armed += 1

    async def _pump(
        self,
        conn: _Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        direction: Direction,
    ) -> None:
        while not conn.closed.is_set():
            data = await reader.read(64 * 1024)
            if not data:
                with contextlib.suppress(OSError, RuntimeError):
                    writer.write_eof()
                return
            if direction == "up":
                self.bytes_up += len(data)
                if len(self.sent) < _SENT_CAP:
                    self.sent += data[: _SENT_CAP - len(self.sent)]
                match = self._fault.match
                if match and conn.fault is None and match in conn.tail + data:
                    self._arm(conn)
                conn.tail = data[-max(len(match) - 1, 0):] if match else b""
                if conn.fault is not None and conn.fault.action == "answer":
                    self.fired += 1
                    await _send(conn.client, conn.fault.response)
                    conn.client.close()  # flushes the answer; abort() would drop it
                    with contextlib.suppress(OSError):
                        await conn.client.wait_closed()
                    conn.abort(reset=False)
                    return
            else:
                self.bytes_down += len(data)
            await self._forward(conn, data, writer, direction)

    async def _forward(
        self, conn: _Connection, data: bytes, writer: asyncio.StreamWriter, direction: Direction
    ) -> None:
        fault = conn.fault
        if conn.stalled:
            await conn.closed.wait()
            return
        if fault is None or fault.direction != direction:
            await _send(writer, data)
            return
        if conn.trickling:
            await self._trickle(conn, data, writer, fault.rate)
            return
        room = fault.after - conn.counted
        if len(data) <= room:
            conn.counted += len(data)
            await _send(writer, data)
            return
        await _send(writer, data[: max(room, 0)])
        conn.counted = fault.after
        self.fired += 1
        if fault.action == "reset":
            conn.abort(reset=True)
        elif fault.action == "stall":
            conn.stalled = True
            await conn.closed.wait()
        else:
            conn.trickling = True
            await self._trickle(conn, data[max(room, 0):], writer, fault.rate)

    async def _trickle(
        self, conn: _Connection, data: bytes, writer: asyncio.StreamWriter, rate: int
    ) -> None:
        step = max(1, rate // 20)
        for start in range(0, len(data), step):
            if conn.closed.is_set():
                return
            await _send(writer, data[start:start + step])
            await asyncio.sleep(step / rate)


async def _send(writer: asyncio.StreamWriter, data: bytes) -> None:
    if data:
        writer.write(data)
        await writer.drain()
