"""`lading dev up|down|env`: the local environment as one unit, recorded in a state file.

`up` starts a control plane and a registry (plus the rollout components, a referrers
registry and a Temporal dev server when asked) under a state directory and records pids, ports
and paths in `state.json`; `down` stops everything the file names and removes the state,
keeping `logs/`; `env` turns the file into shell lines. Nothing here keeps running in Python:
the servers are detached, so the state file is the only link between `up` and `down`.
"""

from __future__ import annotations

import os
import shlex
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from runner.common.errors import InputError, OperationFailed
from runner.common.output import silent
from runner.dev import process, tools
from runner.dev.controlplane import start_control_plane, start_rollout
from runner.dev.endpoints import ClusterEndpoint, RegistryEndpoint, TemporalEndpoint
from runner.dev.process import ProcessRecord
from runner.dev.registry import start_docker_registry, start_referrers_registry
from runner.dev.temporal import start_temporal

STATE_FILE = "state.json"
# Marks a directory as ours, so `up` and `down` never empty a directory someone passed to
# --state-dir by mistake (a home directory, a repository).
MARKER = ".lading-dev"
STATE_VERSION = 1


class DevEnvironment(BaseModel):
    """What `state.json` holds: everything `down` and `env` need, and no secrets."""

    model_config = ConfigDict(frozen=True)

    version: int = STATE_VERSION
    state_dir: Path
    cluster: ClusterEndpoint
    registry: RegistryEndpoint
    referrers_registry: RegistryEndpoint | None = None
    temporal: TemporalEndpoint | None = None
    processes: list[ProcessRecord]
    startup_seconds: float

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"


def default_state_dir(environ: dict[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    if env.get("LADING_DEV_STATE"):
        return Path(env["LADING_DEV_STATE"]).expanduser()
    state_home = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state_home).expanduser() / "lading" / "dev"


def load(state_dir: Path) -> DevEnvironment | None:
    path = state_dir / STATE_FILE
    if not path.exists():
        return None
    try:
        return DevEnvironment.model_validate_json(path.read_text())
    except ValueError as e:
        raise InputError(
            f"{path} is not a lading dev state file ({e.__class__.__name__})",
            hint=f"remove {state_dir} by hand if nothing from it is still running",
        ) from e


def up(
    state_dir: Path,
    *,
    rollout: bool = False,
    referrers: bool = False,
    auth: bool = False,
    tls: bool = False,
    apiserver_port: int | None = None,
    registry_port: int | None = None,
    referrers_port: int | None = None,
    temporal: bool = False,
    temporal_port: int | None = None,
    progress: Callable[[str], None] = silent,
) -> DevEnvironment:
    """Start the environment under `state_dir` and record it. If any part fails to start,
    everything started so far is stopped and the logs are kept for the error to point at."""
    state_dir = state_dir.expanduser().resolve()
    existing = load(state_dir)
    if existing is not None and any(process.is_running(p) for p in existing.processes):
        raise InputError(
            f"a dev environment is already running from {state_dir}",
            hint="`lading dev down` first, or pick another --state-dir",
        )
    if state_dir.exists() and any(state_dir.iterdir()):
        if not (state_dir / MARKER).exists():
            raise InputError(
                f"{state_dir} is not empty and was not created by `lading dev up`",
                hint="pass an empty or new directory to --state-dir",
            )
        # Left over from a stopped or failed environment: old keys and etcd data would not
        # match the fresh PKI.
        _clear(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / MARKER).write_text("lading dev state directory; `lading dev down` empties it\n")
    logs = state_dir / "logs"
    started = time.monotonic()
    processes: list[ProcessRecord] = []
    try:
        progress("starting etcd + kube-apiserver")
        cp = start_control_plane(
            state_dir / "cluster", apiserver_port=apiserver_port, log_dir=logs
        )
        processes = cp.processes
        progress(f"control plane ready at {cp.endpoint.server} in {cp.endpoint.startup_seconds}s")
        if rollout:
            progress("starting kube-controller-manager, kube-scheduler and kwok")
            cp = start_rollout(cp)
            progress(f"node {cp.endpoint.fake_node} ready")
        registry = start_docker_registry(
            state_dir / "registry", auth=auth, tls=tls, port=registry_port, log_dir=logs
        )
        processes.append(registry.process)
        progress(f"registry ready at {registry.endpoint.url}")
        referrers_registry: RegistryEndpoint | None = None
        if referrers:
            refreg = start_referrers_registry(
                state_dir / "referrers", port=referrers_port, log_dir=logs
            )
            processes.append(refreg.process)
            referrers_registry = refreg.endpoint
            progress(f"referrers registry (refreg) ready at {refreg.endpoint.url}")
        temporal_endpoint: TemporalEndpoint | None = None
        if temporal:
            server = start_temporal(state_dir / "temporal", port=temporal_port, log_dir=logs)
            processes.append(server.process)
            temporal_endpoint = server.endpoint
            progress(f"temporal dev server ready at {server.endpoint.address}")
    except BaseException as e:
        process.stop_all(processes)
        if isinstance(e, OperationFailed):
            raise OperationFailed(
                f"lading dev up failed: {e.message}", hint=f"the logs are kept in {logs}"
            ) from e
        raise
    env = DevEnvironment(
        state_dir=state_dir,
        cluster=cp.endpoint,
        registry=registry.endpoint,
        referrers_registry=referrers_registry,
        temporal=temporal_endpoint,
        processes=processes,
        startup_seconds=round(time.monotonic() - started, 2),
    )
    (state_dir / STATE_FILE).write_text(env.model_dump_json(indent=2) + "\n")
    return env


def down(state_dir: Path) -> list[str]:
    """Stop every process the state file names and remove the state (logs stay). Returns the
    names of the processes that were still running. Running it twice is harmless."""
    state_dir = state_dir.expanduser().resolve()
    env = load(state_dir)
    if env is None:
        return []
    running = [p.name for p in env.processes if process.is_running(p)]
    process.stop_all(env.processes)
    if (state_dir / MARKER).exists():
        _clear(state_dir)
    else:
        (state_dir / STATE_FILE).unlink()
    return running


def _clear(state_dir: Path) -> None:
    """Remove a stopped environment's state: data, keys, credentials; logs stay for
    post-mortems and are overwritten by the next `up`."""
    for child in state_dir.iterdir():
        if child.name in ("logs", MARKER):
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def shell_exports(env: DevEnvironment) -> list[str]:
    """`export NAME=value` lines for a POSIX shell, values quoted."""
    exports: dict[str, str] = {
        "LADING_DEV_STATE": str(env.state_dir),
        "KUBECONFIG": str(env.cluster.kubeconfig),
        "LADING_REGISTRY": env.registry.host,
    }
    if env.registry.ca_file:
        exports["LADING_REGISTRY_CA_FILE"] = str(env.registry.ca_file)
    if env.registry.docker_config:
        # Where lading, oras and docker look for registry credentials.
        exports["DOCKER_CONFIG"] = str(env.registry.docker_config)
    if env.referrers_registry:
        exports["LADING_REFERRERS_REGISTRY"] = env.referrers_registry.host
    if env.temporal:
        # The variables Temporal's CLI and SDKs read, so `temporal`, `lading worker` and
        # `lading submit` all find the dev server.
        exports["TEMPORAL_ADDRESS"] = env.temporal.address
        exports["TEMPORAL_NAMESPACE"] = env.temporal.namespace
    exports.update(tool_exports())
    return [f"export {name}={shlex.quote(value)}" for name, value in exports.items()]


def tool_exports() -> dict[str, str]:
    """LADING_KUSTOMIZE / LADING_HELM / LADING_KUBESEAL for the pinned builds in the cache,
    where provisioned: the build runner looks there, not in the cache."""
    found = {}
    for name, tool in (("LADING_KUSTOMIZE", tools.KUSTOMIZE), ("LADING_HELM", tools.HELM),
                       ("LADING_KUBESEAL", tools.KUBESEAL)):
        try:
            found[name] = str(tools.find(tool))
        except InputError:
            continue
    return found
