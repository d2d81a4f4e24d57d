"""The tools a build runs (kustomize, and the helm it may start): where they are, the
command line, and the checks a kustomization directory passes before kustomize may read it.

Only the standard library and lading's errors: runner.build.early starts kustomize with these
before the build's own imports (YAML, pydantic, the plan models) have loaded.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from pathlib import Path

from runner.common.errors import InputError
from runner.common.workspace import refuse_escaping_links


def tool_path(name: str) -> str:
    """A tool binary: $LADING_<NAME>, then PATH. The dev environment (`lading dev env`, the
    test suite) points LADING_<NAME> at the pinned build in its cache; production code knows
    nothing of that cache."""
    explicit = os.environ.get(f"LADING_{name.upper()}")
    found = explicit or shutil.which(name)
    if not found:
        raise InputError(
            f"the `{name}` binary was not found",
            hint=f"install it on PATH or set LADING_{name.upper()}; for the pinned build, "
            'scripts/provision-tools and `eval "$(lading dev env)"`',
        )
    return found


@functools.cache
def tool_version(binary: str) -> str:
    try:
        proc = subprocess.run([binary, "version"], capture_output=True, text=True, timeout=30)
    except OSError as e:
        raise InputError(f"cannot run {binary}: {e.strerror}") from None
    text = (proc.stdout or proc.stderr).strip().splitlines()
    first = text[0].strip() if text else "unknown"
    # helm prints `version.BuildInfo{Version:"v3.19.5", GitCommit:…}`; keep the version.
    match = re.search(r'Version:"([^"]+)"', first)
    return match.group(1) if match else first


def kustomize_command(directory: Path, *, enable_helm: bool, load_restrictor: str) -> list[str]:
    cmd = [tool_path("kustomize"), "build", str(directory)]
    if load_restrictor == "none":
        cmd += ["--load-restrictor", "LoadRestrictionsNone"]
    if enable_helm:
        cmd += ["--enable-helm", "--helm-command", tool_path("helm")]
    return cmd


def kustomization_dir(base: Path, path: str) -> Path:
    """The kustomization directory `path` names, checked before kustomize may read it."""
    directory = (base / path).resolve()
    if not directory.is_dir():
        raise InputError(f"kustomize path {path!r} is not a directory (resolved to {directory})")
    if not any(
        (directory / f).is_file()
        for f in ("kustomization.yaml", "kustomization.yml", "Kustomization")
    ):
        raise InputError(
            f"{path!r} holds no kustomization.yaml",
            hint="point at an overlay or base directory, or use --inline for plain manifests",
        )
    refuse_escaping_links(directory, "source.kustomize.path")
    return directory
