"""The runner image, for real: scripts/image builds it (buildah on the mmdebstrap base where no
Docker engine answers) and pushes it to the test registry, then programs run inside it.

`podman run` needs cgroups this machine's containers do not have, so the image's root file
system (`buildah from` + `buildah mount`) is entered with `chroot --userspec`, as the image's
user, with the image's environment and working directory and nothing of the host's; the host
network is shared, so the test registry and API server on 127.0.0.1 are reachable. Build time,
size and digest are written to the test report."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from runner.common.kube import KubeClient, Resource
from runner.dev.endpoints import ClusterEndpoint, RegistryEndpoint
from runner.dev.tools import pinned_versions
from tests.artifacts import unique

pytestmark = [pytest.mark.image, pytest.mark.registry]

ROOT = Path(__file__).parent.parent
# One tag, left in place: removing an image with buildah 1.28 also drops the intermediate
# images that are the next build's layer cache.
TAG = "image-test"
LOCAL = f"localhost/lading-runner:{TAG}"
UID = 10001
# Generous for a Python runner carrying the kubernetes client, kubectl, helm and kustomize: a
# guard against dev tools or build leftovers slipping in, not a target.
MAX_UNPACKED_MB = 650
MAX_COMPRESSED_MB = 250


@dataclass(frozen=True)
class RunnerImage:
    ref: str  # pushed, host/repo@sha256:…
    revision: str  # HEAD when it was built
    rootfs: Path
    config: dict[str, Any]  # the OCI image config's `config`
    build_seconds: float
    build_log: str


def _buildah(*args: str) -> str:
    proc = subprocess.run(["buildah", *args], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, f"buildah {' '.join(args)}: {proc.stderr}"
    return proc.stdout.strip()


def _report(capsys: pytest.CaptureFixture[str], line: str) -> None:
    """Into the test output itself, where CI logs keep it."""
    with capsys.disabled():
        print(f"\nimage: {line}")


@pytest.fixture(scope="module")
def runner_image(request: pytest.FixtureRequest, registry: RegistryEndpoint
                 ) -> Iterator[RunnerImage]:
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                          text=True, check=False).stdout.strip()
    started = time.monotonic()
    built = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "image"), "--builder", "buildah",
         "--registry", f"http://{registry.host}", "--tag", TAG],
        capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL,
    )
    seconds = time.monotonic() - started
    if built.returncode != 0:
        pytest.fail(f"scripts/image failed:\n{built.stderr[-6000:]}", pytrace=False)
    ref = built.stdout.strip().splitlines()[-1]
    inspected = json.loads(_buildah("inspect", "--type", "image", LOCAL))
    container = _buildah("from", "--pull-never", LOCAL)
    try:
        rootfs = Path(_buildah("mount", container))
        yield RunnerImage(ref, head or "unknown", rootfs, inspected["OCIv1"]["config"], seconds,
                          built.stderr)
    finally:
        subprocess.run(["buildah", "umount", container], capture_output=True, check=False)
        subprocess.run(["buildah", "rm", container], capture_output=True, check=False)


def in_image(image: RunnerImage, *argv: str, stdin: str | None = None,
             network: bool = True) -> subprocess.CompletedProcess[str]:
    """Run argv in the image as its user, with only its environment, in its working dir."""
    user = image.config["User"]
    env = ["-i", f"--chdir={image.config.get('WorkingDir') or '/'}", *image.config["Env"]]
    cmd = ["chroot", f"--userspec={user}", str(image.rootfs), "/usr/bin/env", *env, *argv]
    if not network:
        cmd = ["unshare", "--net", *cmd]
    return subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=300,
                          check=False, env={"PATH": os.environ["PATH"]})


def _unpacked_bytes(rootfs: Path) -> int:
    total = 0
    for directory, _dirs, files in os.walk(rootfs):
        for name in files:
            total += os.lstat(os.path.join(directory, name)).st_size
    return total


def _compressed_bytes(registry: RegistryEndpoint, ref: str) -> int:
    repo, digest = ref.removeprefix(registry.host + "/").split("@")
    request = urllib.request.Request(  # noqa: S310 - the test registry, on loopback
        f"{registry.url}/v2/{repo}/manifests/{digest}",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json, "
                           "application/vnd.docker.distribution.manifest.v2+json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        manifest = json.load(response)
    return int(manifest["config"]["size"]) + sum(int(x["size"]) for x in manifest["layers"])


def test_the_image_is_pushed_small_and_its_numbers_are_reported(
    capsys: pytest.CaptureFixture[str], runner_image: RunnerImage, registry: RegistryEndpoint
) -> None:
    assert runner_image.ref.startswith(f"{registry.host}/lading-runner@sha256:")
    unpacked = _unpacked_bytes(runner_image.rootfs) / 1e6
    compressed = _compressed_bytes(registry, runner_image.ref) / 1e6
    base = "cached" if " cached" in runner_image.build_log else "built"
    _report(capsys, f"{runner_image.ref}; {unpacked:.0f} MB unpacked, {compressed:.0f} MB "
                     f"compressed; scripts/image took {runner_image.build_seconds:.0f}s "
                     f"(base {base})")
    assert unpacked < MAX_UNPACKED_MB
    assert compressed < MAX_COMPRESSED_MB


def test_lading_runs_as_the_images_non_root_user_without_network(
    runner_image: RunnerImage
) -> None:
    assert runner_image.config["User"] == f"{UID}:{UID}"
    # Set at run time, it would date every artifact the runner builds; builds set it themselves.
    assert not [e for e in runner_image.config["Env"] if e.startswith("SOURCE_DATE_EPOCH=")]
    ran = in_image(runner_image, "id", "-un", network=False)
    assert ran.stdout.strip() == "lading", ran.stderr
    ran = in_image(runner_image, "lading", "--version", network=False)
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert ran.returncode == 0, ran.stderr
    assert version in ran.stdout
    # The Temporal worker runs from the same image: its packages are in it.
    ran = in_image(runner_image, "lading", "worker", "--help", network=False)
    assert ran.returncode == 0, ran.stderr
    # What it runs is not its to change.
    assert in_image(runner_image, "touch", "/opt/lading/bin/lading").returncode != 0
    assert in_image(runner_image, "touch", "/home/lading/scratch").returncode == 0


def test_kubectl_kustomize_and_helm_are_the_pinned_versions(runner_image: RunnerImage) -> None:
    pinned = pinned_versions()
    kubectl = in_image(runner_image, "kubectl", "version", "--client", "-o", "json",
                       network=False)
    assert json.loads(kubectl.stdout)["clientVersion"]["gitVersion"] == \
        f"v{pinned['KUBECTL_WHEEL_VERSION']}"
    kustomize = in_image(runner_image, "kustomize", "version", network=False)
    assert kustomize.stdout.strip() == pinned["KUSTOMIZE_VERSION"]
    helm = in_image(runner_image, "helm", "version", "--short", network=False)
    assert helm.stdout.strip().split("+")[0] == pinned["HELM_VERSION"], (
        "a helm built before provision-tools stamped its version: "
        "rm -r ~/.cache/lading/helm && scripts/provision-tools --only helm"
    )


def test_the_labels_name_version_revision_and_source(runner_image: RunnerImage) -> None:
    labels = runner_image.config["Labels"]
    assert labels["org.opencontainers.image.version"] == tomllib.loads(
        (ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert labels["org.opencontainers.image.revision"].startswith(runner_image.revision)
    assert labels["org.opencontainers.image.source"].startswith("https://")
    assert labels["org.opencontainers.image.created"].endswith("Z")


@pytest.fixture(scope="module")
def built_in_image(runner_image: RunnerImage, registry: RegistryEndpoint) -> dict[str, Any]:
    plan = {
        "apiVersion": "lading.dev/v1",
        "kind": "BuildPlan",
        "source": {"inline": {"manifests": yaml.safe_dump_all([
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "greeting"},
             "data": {"message": "hello from the runner image"}},
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "hello"},
             "spec": {"selector": {"app": "hello"}, "ports": [{"port": 80}]}},
        ])}},
        "to": [f"{registry.host}/{unique('image')}/hello:v1"],
        "version": "1.0.0",
    }
    ran = in_image(runner_image, "lading", "run", "-f", "-", stdin=yaml.safe_dump(plan))
    assert ran.returncode == 0, ran.stderr[-3000:]
    result: dict[str, Any] = json.loads(ran.stdout)
    return result


def test_a_build_plan_pushes_an_artifact_from_the_image(built_in_image: dict[str, Any]) -> None:
    assert built_in_image["kind"] == "BuildResult"
    assert "@sha256:" in built_in_image["ref"]


@pytest.mark.cluster
def test_an_install_plan_installs_into_the_cluster_from_the_image(
    runner_image: RunnerImage, built_in_image: dict[str, Any], control_plane: ClusterEndpoint,
    kube: KubeClient, ns: str,
) -> None:
    # The test cluster's admin kubeconfig is self-contained (certificates inline).
    kube_dir = runner_image.rootfs / "home" / "lading" / ".kube"
    kube_dir.mkdir(mode=0o700, exist_ok=True)
    shutil.copy(control_plane.kubeconfig, kube_dir / "config")
    for path in (kube_dir, kube_dir / "config"):
        os.chown(path, UID, UID)
    try:
        plan = {"apiVersion": "lading.dev/v1", "kind": "InstallPlan",
                "artifact": {"ref": built_in_image["ref"]}, "namespace": ns,
                "inventory": "hello", "timeout": "1m"}
        ran = in_image(runner_image, "lading", "run", "-f", "-", stdin=yaml.safe_dump(plan))
    finally:
        shutil.rmtree(kube_dir)
    assert ran.returncode == 0, ran.stderr[-3000:]
    result = json.loads(ran.stdout)
    assert (result["kind"], result["status"]) == ("InstallResult", "succeeded")
    assert result["summary"]["created"] == 2
    config_maps = Resource("", "v1", "ConfigMap", "configmaps", True)
    found = kube.get(config_maps, ns, "greeting")
    assert found is not None
    assert found["data"]["message"] == "hello from the runner image"
