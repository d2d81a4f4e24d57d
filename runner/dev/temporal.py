"""Temporal's development server on loopback: `temporal server start-dev` from the pinned CLI
(built from the Go module proxy by scripts/provision-tools), headless, its SQLite database in
the state directory, the `default` namespace ready."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import requests

from runner.dev import process, tools
from runner.dev.endpoints import TemporalEndpoint
from runner.dev.process import ProcessRecord

STARTUP_TIMEOUT = 60.0
NAMESPACE = "default"


@dataclass
class TemporalServer:
    endpoint: TemporalEndpoint
    process: ProcessRecord

    def stop(self) -> None:
        process.stop(self.process)


def _ready(http: str, session: requests.Session) -> bool:
    """The HTTP API answers for the namespace once the frontend and the namespace are up."""
    try:
        return session.get(f"{http}/api/v1/namespaces/{NAMESPACE}", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def start_temporal(
    state_dir: Path,
    *,
    port: int | None = None,
    log_dir: Path | None = None,
    timeout: float = STARTUP_TIMEOUT,
) -> TemporalServer:
    """Start the dev server with its database in `state_dir` and wait until the `default`
    namespace answers."""
    started = time.monotonic()
    binary = tools.find(tools.TEMPORAL)
    state_dir.mkdir(parents=True, exist_ok=True)
    grpc_port = port or process.free_port()
    http_port = process.free_port()
    metrics_port = process.free_port()
    record = process.start(
        "temporal",
        [binary, "server", "start-dev", "--headless", "--ip", "127.0.0.1",
         "--port", str(grpc_port), "--http-port", str(http_port),
         "--metrics-port", str(metrics_port), "--namespace", NAMESPACE,
         "--db-filename", state_dir / "temporal.db", "--log-level", "warn"],
        log_dir or state_dir / "logs",
    )
    http = f"http://127.0.0.1:{http_port}"
    try:
        session = process.loopback_session()
        process.wait_until(lambda: _ready(http, session), "temporal dev server", [record],
                           timeout, interval=0.2)
    except BaseException:
        process.stop(record)
        raise
    endpoint = TemporalEndpoint(
        address=f"127.0.0.1:{grpc_port}",
        http=http,
        namespace=NAMESPACE,
        startup_seconds=round(time.monotonic() - started, 2),
    )
    return TemporalServer(endpoint, record)
