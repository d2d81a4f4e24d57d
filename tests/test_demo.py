"""The README's first command, end to end through the same script, against the test bed:
`scripts/demo --use-env` is scripts/demo minus bootstrap and `lading dev up`, pointed at the
session's rollout cluster and registry instead of ones it starts itself."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from runner.dev.endpoints import ClusterEndpoint, RegistryEndpoint

pytestmark = [pytest.mark.rollout, pytest.mark.registry, pytest.mark.kustomize]

ROOT = Path(__file__).parent.parent


def test_demo_builds_installs_by_digest_and_ends_in_sync(
    rollout_cluster: ClusterEndpoint, registry: RegistryEndpoint, kustomize_bin: Path
) -> None:
    del kustomize_bin
    suffix = uuid.uuid4().hex[:8]
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "KUBECONFIG": str(rollout_cluster.kubeconfig),
        "LADING_REGISTRY": registry.host,
        "LADING_DEMO_REPO": f"{registry.host}/demo-{suffix}/shop",
        "LADING_DEMO_INVENTORY": f"demo-{suffix}",
        "NO_COLOR": "1",
    }
    started = time.monotonic()
    run = subprocess.run([str(ROOT / "scripts/demo"), "--use-env"], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=300, check=False)
    elapsed = time.monotonic() - started
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    pinned = re.search(r"pinned reference: (\S+@sha256:[0-9a-f]{64})", output)
    assert pinned, output
    assert pinned.group(1).startswith(f"{registry.host}/demo-{suffix}/shop@")
    assert f"install succeeded: {pinned.group(1)}" in output
    assert re.search(rf"in sync: {re.escape(pinned.group(1))} \(\d+ objects\)", output), output
    assert "deployment.apps/web   1/1" in output
    print(f"demo path took {elapsed:.1f}s")
