"""runner.common.wire: lading's HTTP/1.1 client for the API server. The answer parser on exact
bytes (pure), then the connections against the real kube-apiserver: kept alive, reused, and
replaced when the server closed them while idle."""

from __future__ import annotations

import io
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from runner.common.errors import RemoteError
from runner.common.kube import KubeClient, Resource, Target, window_for
from runner.common.wire import Endpoint, Wire, WireError, _read_answer
from runner.dev.endpoints import ClusterEndpoint
from tests.faultproxy import FaultProxy
from tests.kubeconfigs import rewrite_server

CONFIGMAPS = Resource("", "v1", "ConfigMap", "configmaps", True)


def lists_at_once(client: KubeClient, namespace: str, count: int) -> None:
    threads = [threading.Thread(target=client.list, args=(CONFIGMAPS, namespace))
               for _ in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def answer(raw: bytes, method: str = "GET") -> tuple[int, dict[str, str], bytes, bool]:
    reader = io.BufferedReader(io.BytesIO(raw))  # type: ignore[arg-type]
    return _read_answer(reader, reader.readline(), method)


def test_a_sized_answer_is_read_to_its_length_and_the_connection_kept() -> None:
    status, headers, body, keep = answer(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n"
        b"Audit-Id: x\r\n\r\n{}NEXT")
    assert (status, body, keep) == (200, b"{}", True)
    assert headers["content-type"] == "application/json"


def test_a_chunked_answer_is_joined_with_extensions_and_trailers_skipped() -> None:
    _, _, body, keep = answer(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"4;ext=1\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\nTrailer: t\r\n\r\n")
    assert (body, keep) == (b'{"a":1}', True)


def test_an_interim_answer_is_skipped_and_connection_close_is_honoured() -> None:
    status, headers, body, keep = answer(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 429 Too Many Requests\r\nRetry-After: 2\r\n"
        b"Connection: close\r\nContent-Length: 0\r\n\r\n")
    assert (status, headers["retry-after"], body, keep) == (429, "2", b"", False)


def test_repeated_headers_are_joined() -> None:
    _, headers, _, _ = answer(b"HTTP/1.1 204 No Content\r\nWarning: a\r\nWarning: b\r\n\r\n")
    assert headers["warning"] == "a, b"


@pytest.mark.parametrize(("raw", "kind"), [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}", "lost"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", "lost"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "protocol"),
    (b"SSH-2.0-OpenSSH\r\n\r\n", "protocol"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "protocol"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n", "protocol"),
    (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "protocol"),
    (b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 500 + b"\r\n", "protocol"),
    (b"HTTP/1.1 200 OK\r\nContent-", "lost"),
])
def test_a_broken_answer_is_a_wire_error_of_its_kind(raw: bytes, kind: str) -> None:
    with pytest.raises(WireError) as error:
        answer(raw)
    assert error.value.kind == kind


@pytest.mark.cluster
def test_requests_share_kept_alive_connections(
    control_plane: ClusterEndpoint, ns: str, tmp_path: Path
) -> None:
    with FaultProxy(control_plane.server.removeprefix("https://")) as proxy:
        config = rewrite_server(control_plane.kubeconfig, f"https://{proxy.address}",
                                tmp_path / "kubeconfig")
        client = KubeClient(Target(kubeconfig=str(config)), pool_size=4)
        try:
            for i in range(40):
                client.apply(CONFIGMAPS, {"apiVersion": "v1", "kind": "ConfigMap",
                                          "metadata": {"name": f"c{i}", "namespace": ns}},
                             field_manager="test")
            assert proxy.connections == 1
            lists_at_once(client, ns, 8)
            assert proxy.connections <= 1 + 8
            assert len(client.list(CONFIGMAPS, ns)) >= 40
        finally:
            client.close()


@pytest.mark.cluster
def test_a_connection_the_server_closed_while_idle_is_replaced(
    control_plane: ClusterEndpoint, ns: str, tmp_path: Path
) -> None:
    with FaultProxy(control_plane.server.removeprefix("https://")) as proxy:
        config = rewrite_server(control_plane.kubeconfig, f"https://{proxy.address}",
                                tmp_path / "kubeconfig")
        client = KubeClient(Target(kubeconfig=str(config)))
        try:
            client.list(CONFIGMAPS, ns)
            proxy.down()  # every open connection is reset: the pooled one is now dead
            proxy.up()
            time.sleep(0.2)
            assert client.list(CONFIGMAPS, ns) is not None
            assert proxy.connections == 2
            proxy.down()  # and while the server is gone, the error says so
            with pytest.raises(RemoteError) as gone:
                client.list(CONFIGMAPS, ns)
            assert "API server" in str(gone.value)
        finally:
            proxy.up()
            client.close()


@pytest.mark.cluster
def test_warmed_connections_are_used_even_with_the_servers_session_tickets_unread(
    control_plane: ClusterEndpoint, ns: str, tmp_path: Path
) -> None:
    """TLS 1.3 servers send session tickets after the handshake: an opened connection that has
    carried no request yet is readable. It is alive all the same, and must be used."""
    with FaultProxy(control_plane.server.removeprefix("https://")) as proxy:
        config = rewrite_server(control_plane.kubeconfig, f"https://{proxy.address}",
                                tmp_path / "kubeconfig")
        client = KubeClient(Target(kubeconfig=str(config)), pool_size=4)
        try:
            client.wire.warm(4)
            assert proxy.connections == 4
            time.sleep(0.3)  # the tickets have arrived
            assert sum(c.dropped() for c in client.wire._idle) == 0
            lists_at_once(client, ns, 4)
            client.wire.warm(4)  # a pool already that full opens nothing
            assert proxy.connections == 4
        finally:
            client.close()


@pytest.mark.parametrize(("distance", "most", "window"), [
    (None, 128, 32),     # nothing measured yet
    (0.0018, 128, 34),   # next to the server (the quickest request, loopback)
    (0.014, 128, 46),    # bench/delayproxy at RTT 10
    (0.055, 128, 87),    # RTT 50
    (0.055, 64, 64),     # never more than asked for
    (0.014, 16, 16),
])
def test_the_window_grows_with_the_distance_to_the_server(
    distance: float | None, most: int, window: int
) -> None:
    assert window_for(distance, most) == window


@pytest.mark.cluster
def test_the_window_is_fitted_to_the_quickest_request_seen(
    control_plane: ClusterEndpoint, ns: str
) -> None:
    client = KubeClient(Target(kubeconfig=control_plane.kubeconfig), pool_size=128)
    try:
        client.wire.warm(1)
        assert client.wire.quickest is None  # a connect is not a request
        for _ in range(3):
            client.list(CONFIGMAPS, ns)
        quickest = client.wire.quickest
        assert quickest is not None
        assert 0 < quickest < 1
        assert client.wire.distance == max(quickest, client.wire.round_trip or 0)
        size = client.fit_window(128)
        assert size == window_for(client.wire.distance, 128)
        assert client._window.size == size
        assert client.fit_window(8) == 8  # a smaller choice is kept
    finally:
        client.close()


@pytest.mark.cluster
def test_reaching_the_server_by_name_does_not_load_the_idna_codec(
    control_plane: ClusterEndpoint, ns: str, tmp_path: Path
) -> None:
    # getaddrinfo and TLS encode a str host name with the IDNA codec, which imports
    # stringprep (~15 ms of every install's start); an ASCII name needs none of that. The
    # server is named `localhost` here, so both the lookup and the certificate check see a
    # name, and the dev server's certificate names it.
    port = control_plane.server.rpartition(":")[2]
    config = rewrite_server(control_plane.kubeconfig, f"https://localhost:{port}",
                            tmp_path / "kubeconfig")
    probe = (
        "import sys\n"
        "from runner.common.kube import KubeClient, Resource, Target\n"
        f"client = KubeClient(Target(kubeconfig={str(config)!r}))\n"
        f"client.list(Resource('', 'v1', 'ConfigMap', 'configmaps', True), {ns!r})\n"
        "client.close()\n"
        "print(sorted(m for m in ('encodings.idna', 'stringprep') if m in sys.modules))\n"
    )
    ran = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         timeout=60, check=False)
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert ran.stdout.strip() == "[]"


def test_closing_ends_the_handshakes_of_connections_opened_ahead() -> None:
    # Connections opened ahead (Wire.warm, on a daemon thread) to a server that accepts but
    # never finishes the TLS handshake. A thread still inside OpenSSL when the process exits
    # meets OpenSSL's own clean-up (a SIGSEGV instead of the exit code): close() ends those
    # handshakes and returns when none is left, long before the 60 s time-out.
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    hellos = threading.Semaphore(0)

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            held.append(conn)
            if conn.recv(1):  # the ClientHello: the handshake has begun
                hellos.release()

    threading.Thread(target=accept, daemon=True).start()
    port = listener.getsockname()[1]
    wire = Wire(Endpoint(f"https://127.0.0.1:{port}", tls=ssl.create_default_context()),
                timeout=60)
    warming = threading.Thread(target=wire.warm, args=(3,), daemon=True)
    try:
        warming.start()
        for _ in range(3):
            assert hellos.acquire(timeout=10), "the handshakes did not begin"
        assert warming.is_alive()
        wire.close()
        warming.join(timeout=10)
        assert not warming.is_alive(), "a handshake outlived close()"
        with pytest.raises(WireError, match="closed"):
            wire._connect()
    finally:
        listener.close()
        for conn in held:
            conn.close()
