"""OCI registries on loopback: Debian's docker-registry (distribution v2.8), optionally with
htpasswd basic auth and TLS from a test CA, and refreg for the OCI 1.1 referrers API.

refreg (tools/refreg, go-containerregistry's in-memory registry) stands in for zot, which the
design names: zot is not served by the Go module proxy these machines reach. It has no auth,
TLS or persistence; it only has to prove the referrers API.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bcrypt
import requests
import yaml
from pydantic import SecretStr

from runner.dev import pki, process, tools
from runner.dev.endpoints import RegistryEndpoint
from runner.dev.process import ProcessRecord

STARTUP_TIMEOUT = 30.0
USERNAME = "lading"


@dataclass
class RegistryServer:
    """A running registry: its endpoint and its process."""

    endpoint: RegistryEndpoint
    process: ProcessRecord

    def stop(self) -> None:
        process.stop(self.process)


def htpasswd_line(username: str, password: str) -> str:
    # distribution's htpasswd backend accepts bcrypt hashes only.
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=10)).decode()
    return f"{username}:{hashed}\n"


def docker_config(host: str, username: str, password: str) -> dict[str, Any]:
    """A docker config.json granting `username` access to `host`, the format lading, oras and
    docker read registry credentials from."""
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"auths": {host: {"auth": token}}}


def distribution_config(
    storage: Path, addr: str, *, tls: tuple[Path, Path] | None, htpasswd: Path | None
) -> dict[str, Any]:
    http: dict[str, Any] = {
        "addr": addr,
        # Signs upload-session state; a fresh one per start is fine for a dev registry.
        "secret": secrets.token_hex(16),
        "headers": {"X-Content-Type-Options": ["nosniff"]},
    }
    if tls:
        http["tls"] = {"certificate": str(tls[0]), "key": str(tls[1])}
    config: dict[str, Any] = {
        "version": 0.1,
        "log": {"level": "info", "formatter": "text"},
        "storage": {
            "filesystem": {"rootdirectory": str(storage)},
            "delete": {"enabled": True},
            # The purger would scan storage in the background; uploads here never dangle long.
            "maintenance": {"uploadpurging": {"enabled": False}},
        },
        "http": http,
    }
    if htpasswd:
        config["auth"] = {"htpasswd": {"realm": "lading-dev", "path": str(htpasswd)}}
    return config


def _answers(url: str, session: requests.Session) -> bool:
    try:
        # 401 is an answer too: the registry is up and asks for credentials.
        return session.get(f"{url}/v2/", timeout=2).status_code in (200, 401)
    except requests.RequestException:
        return False


def start_docker_registry(
    state_dir: Path,
    *,
    auth: bool = False,
    tls: bool = False,
    port: int | None = None,
    log_dir: Path | None = None,
    timeout: float = STARTUP_TIMEOUT,
) -> RegistryServer:
    """Start docker-registry with filesystem storage under `state_dir` and wait until /v2/
    answers. With `auth`, a random password for user `lading` is written to
    `credentials.json` and `docker/config.json` (both 0600), never to logs."""
    started = time.monotonic()
    binary = tools.find_docker_registry()
    state_dir.mkdir(parents=True, exist_ok=True)
    host = f"127.0.0.1:{port or process.free_port()}"

    ca_file: Path | None = None
    tls_pair: tuple[Path, Path] | None = None
    if tls:
        pki_dir = state_dir / "pki"
        ca = pki.new_ca("lading dev registry CA")
        ca_file, _ = ca.keys.write(pki_dir, "ca")
        tls_pair = pki.serving_pair(ca, "docker-registry").write(pki_dir, "registry")

    htpasswd: Path | None = None
    password: str | None = None
    credentials_file: Path | None = None
    docker_config_dir: Path | None = None
    if auth:
        password = secrets.token_urlsafe(18)
        htpasswd = state_dir / "htpasswd"
        pki.write_private(htpasswd, htpasswd_line(USERNAME, password).encode())
        credentials_file = state_dir / "credentials.json"
        pki.write_private(
            credentials_file, json.dumps({"username": USERNAME, "password": password}).encode()
        )
        docker_config_dir = state_dir / "docker"
        docker_config_dir.mkdir(exist_ok=True)
        pki.write_private(
            docker_config_dir / "config.json",
            json.dumps(docker_config(host, USERNAME, password), indent=2).encode(),
        )

    config_file = state_dir / "config.yml"
    config = distribution_config(state_dir / "storage", host, tls=tls_pair, htpasswd=htpasswd)
    # The config holds the upload-signing secret.
    pki.write_private(config_file, yaml.safe_dump(config).encode())
    record = process.start("docker-registry", [binary, "serve", config_file],
                           log_dir or state_dir / "logs")
    endpoint = RegistryEndpoint(
        host=host,
        tls=tls,
        ca_file=ca_file,
        username=USERNAME if auth else None,
        password=SecretStr(password) if password else None,
        credentials_file=credentials_file,
        docker_config=docker_config_dir,
    )
    try:
        session = process.loopback_session(ca_file)
        process.wait_until(lambda: _answers(endpoint.url, session), "docker-registry", [record],
                           timeout)
    except BaseException:
        process.stop(record)
        raise
    endpoint = endpoint.model_copy(
        update={"startup_seconds": round(time.monotonic() - started, 2)}
    )
    return RegistryServer(endpoint, record)


def start_referrers_registry(
    state_dir: Path,
    *,
    port: int | None = None,
    log_dir: Path | None = None,
    timeout: float = STARTUP_TIMEOUT,
) -> RegistryServer:
    """Start refreg (in-memory, plain HTTP, referrers API on) and wait until /v2/ answers."""
    started = time.monotonic()
    binary = tools.find(tools.REFREG)
    state_dir.mkdir(parents=True, exist_ok=True)
    ready_file = state_dir / "refreg.addr"
    ready_file.unlink(missing_ok=True)
    record = process.start(
        "refreg",
        [binary, "-addr", f"127.0.0.1:{port or 0}", "-ready-file", ready_file],
        log_dir or state_dir / "logs",
    )
    session = process.loopback_session()
    try:
        # os.WriteFile is not atomic: wait for content, not just the file.
        process.wait_until(lambda: ready_file.exists() and ready_file.stat().st_size > 0,
                           "refreg's address", [record], timeout)
        host = ready_file.read_text().strip()
        process.wait_until(lambda: _answers(f"http://{host}", session), "refreg", [record],
                           timeout)
    except BaseException:
        process.stop(record)
        raise
    endpoint = RegistryEndpoint(
        host=host, referrers=True, startup_seconds=round(time.monotonic() - started, 2)
    )
    return RegistryServer(endpoint, record)
