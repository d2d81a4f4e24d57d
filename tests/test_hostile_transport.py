"""Faults on the wire (issue 10), injected by tests/faultproxy.py in front of the real
docker-registry and the real kube-apiserver: connections reset, stalled and trickled in the
middle of a push and of a pull, a registry that never answers or answers 429/5xx, an API server
that dies mid-install, lading SIGKILLed mid-install.

Each failure is exit 3 within the configured deadline, names the registry and what lading was
doing, and leaves the registry or cluster consistent; each rerun without the fault converges
(the same digest pushed, every object installed once, the inventory right).
"""

from __future__ import annotations

import base64
import json
import os
import random
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml

from runner.common.kube import KubeClient, Resource
from runner.dev.endpoints import ClusterEndpoint, RegistryEndpoint
from runner.install.inventory import PART_OF
from runner.install.inventory import read as read_inventory
from runner.supply.export import export
from tests.artifacts import config_map, publish, unique
from tests.faultproxy import Fault, FaultProxy
from tests.refusals import Lading, assert_refused, run_lading, wait_until

# Small limits, so each fault costs seconds: an operation may take 1 s plus 1 s per 256 KiB.
STALL = 1.0
MIN_RATE = 256 * 1024
ATTEMPTS = 3
LIMITS = {
    "LADING_REGISTRY_STALL_TIMEOUT": str(STALL),
    "LADING_REGISTRY_MIN_RATE": str(MIN_RATE),
    "LADING_REGISTRY_ATTEMPTS": str(ATTEMPTS),
    "LADING_REGISTRY_CONNECT_TIMEOUT": "2",
}
LAYER_BYTES = 300_000  # incompressible, so the layer is about this big
# Python and lading start in about a second; allow for a busy machine.
STARTUP = 6.0
# The longest one operation may take: the layer, with the limits above.
BUDGET = STALL + LAYER_BYTES / MIN_RATE

CONFIG_MAPS = Resource("", "v1", "ConfigMap", "configmaps", True)


@pytest.fixture(scope="session")
def big_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One ConfigMap holding 300 KB of random text: a layer no fault can miss."""
    noise = base64.b64encode(random.Random(10).randbytes(LAYER_BYTES * 3 // 4)).decode()
    path = tmp_path_factory.mktemp("big") / "big.yaml"
    path.write_text(yaml.safe_dump(config_map("big", None, {"noise": noise})))
    return path


@pytest.fixture(scope="session")
def env(kustomize_bin: Path) -> dict[str, str]:
    return {**LIMITS, "LADING_KUSTOMIZE": str(kustomize_bin)}


@pytest.fixture
def proxy(registry: RegistryEndpoint) -> Iterator[FaultProxy]:
    if registry.tls:
        pytest.skip("the fault proxy test speaks plain HTTP to the registry")
    with FaultProxy(registry.host, lifetime=240) as running:
        yield running


def _build(manifest: Path, to: str) -> list[str]:
    return ["build", "--inline", str(manifest), "--inventory", "big", "--to", to, "-o", "json"]


def _digest_of(outcome_out: str) -> str:
    digest: str = json.loads(outcome_out)["digest"]
    return digest


def _tag_digest(registry: RegistryEndpoint, repository: str, tag: str) -> str | None:
    """What the registry itself (not through the proxy) says the tag names."""
    response = requests.head(
        f"{registry.url}/v2/{repository}/manifests/{tag}", timeout=10,
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
    )
    return response.headers.get("Docker-Content-Digest") if response.status_code == 200 else None


@pytest.fixture(scope="session")
def expected(big_manifest: Path, env: dict[str, str],
             tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """The big artifact built without any registry in the way: its digest, and its layer's."""
    work = tmp_path_factory.mktemp("expected")
    outcome = run_lading(_build(big_manifest, f"oci-layout:{work}/ref:v1"), work, env)
    assert outcome.code == 0, outcome.err
    digest = _digest_of(outcome.out)
    manifest = json.loads((work / "ref/blobs/sha256" / digest.split(":")[1]).read_bytes())
    return digest, manifest["layers"][0]["digest"]


def _uploading(layer: str) -> bytes:
    """What only the request uploading `layer` holds: its digest, URL-quoted, in the PUT."""
    return b"sha256%3A" + layer.split(":")[1].encode()


# Pushing ------------------------------------------------------------------------------------

# A reset reaches the client as ECONNRESET while it is still sending, or as a connection closed
# under it once the rest of the blob already sat in the socket buffer: the proxy's timing
# decides which, so either is the right cause (and the one the message must name).
RESET_CAUSES = ("was dropped (connection reset by peer)",
                "was dropped (remote end closed connection)")
PUSH_FAULTS = {
    "reset": (Fault("reset", "up", match=b"PUT /v2/", after=100_000), "was dropped ("),
    "stall": (Fault("stall", "up", match=b"PUT /v2/", after=100_000), "timed out after"),
    "trickle": (Fault("trickle", "up", match=b"PUT /v2/", after=1_000, rate=8 * 1024),
                "timed out after"),
}


@pytest.mark.registry
@pytest.mark.kustomize
@pytest.mark.parametrize("kind", list(PUSH_FAULTS))
def test_a_fault_mid_push_is_exit_3_in_bounded_time_and_a_rerun_converges(
    kind: str, proxy: FaultProxy, registry: RegistryEndpoint, big_manifest: Path,
    env: dict[str, str], expected: tuple[str, str], tmp_path: Path,
) -> None:
    expected_digest, _ = expected
    fault, says = PUSH_FAULTS[kind]
    repository = f"hostile/{unique('push')}"
    target = f"{proxy.address}/{repository}:v1"
    proxy.fault = fault
    failed = run_lading(_build(big_manifest, target), tmp_path / "faulty", env)
    assert_refused(failed, 3, "pushing blob sha256:", f"to {proxy.address}/{repository}", says,
                   within=ATTEMPTS * BUDGET + STARTUP)
    if kind == "reset":
        assert any(cause in failed.err for cause in RESET_CAUSES), failed.err
    assert proxy.fired >= 1
    assert _tag_digest(registry, repository, "v1") is None, "a tag points at a partial push"

    proxy.fault = Fault()
    rerun = run_lading(_build(big_manifest, target), tmp_path / "rerun", env)
    assert rerun.code == 0, rerun.err
    assert _digest_of(rerun.out) == expected_digest
    assert _tag_digest(registry, repository, "v1") == expected_digest


@pytest.mark.registry
@pytest.mark.kustomize
def test_a_push_whose_connection_drops_once_is_retried_and_succeeds(
    proxy: FaultProxy, registry: RegistryEndpoint, big_manifest: Path, env: dict[str, str],
    expected: tuple[str, str], tmp_path: Path,
) -> None:
    expected_digest, layer = expected
    repository = f"hostile/{unique('retry')}"
    proxy.fault = Fault("reset", "up", match=_uploading(layer), after=100_000, times=1)
    outcome = run_lading(
        _build(big_manifest, f"{proxy.address}/{repository}:v1"), tmp_path, env
    )
    assert outcome.code == 0, outcome.err
    assert proxy.fired == 1
    assert _digest_of(outcome.out) == expected_digest
    assert _tag_digest(registry, repository, "v1") == expected_digest


# Pulling ------------------------------------------------------------------------------------


@pytest.fixture
def pushed(registry: RegistryEndpoint, big_manifest: Path, env: dict[str, str],
           tmp_path: Path) -> tuple[str, str]:
    """The big artifact in the registry, pushed directly: (repository, digest)."""
    repository = f"hostile/{unique('pull')}"
    outcome = run_lading(
        _build(big_manifest, f"{registry.host}/{repository}:v1"),
        tmp_path / "push", env,
    )
    assert outcome.code == 0, outcome.err
    return repository, _digest_of(outcome.out)


PULL_FAULTS = {
    # Each attempt resumes where the last stopped: 3 times 20 KB never completes the layer.
    "reset": (Fault("reset", "down", match=b"/blobs/sha256:", after=20_000),
              "was dropped (connection reset by peer)"),
    "stall": (Fault("stall", "down", match=b"/blobs/sha256:", after=100_000),
              "timed out after"),
    "trickle": (Fault("trickle", "down", match=b"/blobs/sha256:", after=1_000, rate=8 * 1024),
                "timed out after"),
}


@pytest.mark.registry
@pytest.mark.kustomize
@pytest.mark.parametrize("kind", list(PULL_FAULTS))
def test_a_fault_mid_pull_is_exit_3_in_bounded_time_and_leaves_the_registry_alone(
    kind: str, proxy: FaultProxy, registry: RegistryEndpoint, pushed: tuple[str, str],
    env: dict[str, str], tmp_path: Path,
) -> None:
    fault, says = PULL_FAULTS[kind]
    repository, digest = pushed
    proxy.fault = fault
    failed = run_lading(["inspect", f"{proxy.address}/{repository}@{digest}"], tmp_path, env)
    assert_refused(failed, 3, "pulling blob sha256:", f"from {proxy.address}/{repository}", says,
                   within=ATTEMPTS * BUDGET + STARTUP)
    assert proxy.fired >= 1
    assert _tag_digest(registry, repository, "v1") == digest

    proxy.fault = Fault()
    rerun = run_lading(["inspect", f"{proxy.address}/{repository}@{digest}"], tmp_path / "b", env)
    assert rerun.code == 0, rerun.err


@pytest.mark.registry
@pytest.mark.kustomize
def test_a_pull_cut_twice_resumes_with_range_requests(
    proxy: FaultProxy, pushed: tuple[str, str], env: dict[str, str], tmp_path: Path
) -> None:
    repository, digest = pushed
    proxy.fault = Fault("reset", "down", match=b"/blobs/sha256:", after=120_000, times=2)
    outcome = run_lading(["inspect", f"{proxy.address}/{repository}@{digest}"], tmp_path, env)
    assert outcome.code == 0, outcome.err
    assert proxy.fired == 2
    assert b"Range: bytes=" in proxy.sent, "the retries started over instead of resuming"


# Registries that answer badly, or not at all -------------------------------------------------


def _http(status: str, *headers: str) -> bytes:
    head = "\r\n".join([f"HTTP/1.1 {status}", *headers, "Content-Length: 0",
                        "Connection: close"])
    return (head + "\r\n\r\n").encode()


@pytest.mark.registry
@pytest.mark.kustomize
def test_retry_after_is_honoured(
    proxy: FaultProxy, pushed: tuple[str, str], env: dict[str, str], tmp_path: Path
) -> None:
    repository, digest = pushed
    proxy.fault = Fault("answer", match=b"GET /v2/", times=2,
                        response=_http("503 Service Unavailable", "Retry-After: 1"))
    outcome = run_lading(["inspect", f"{proxy.address}/{repository}@{digest}"], tmp_path,
                         {**env, "LADING_REGISTRY_STALL_TIMEOUT": "5"})
    assert outcome.code == 0, outcome.err
    assert proxy.fired == 2
    assert outcome.seconds >= 2.0, "retried before the registry's Retry-After"


@pytest.mark.registry
@pytest.mark.kustomize
@pytest.mark.parametrize(("answer", "says"), [
    (_http("429 Too Many Requests", "Retry-After: 3600"), (
        "answered HTTP 429; it asks to retry after 3600 s, later than the 1 s",)),
    (_http("500 Internal Server Error"), ("answered HTTP 500 (3 attempts)",)),
    (_http("503 Service Unavailable", "Retry-After: soon"), ("answered HTTP 503 (3 attempts)",)),
], ids=["429-retry-after-an-hour", "500-every-time", "503-unparseable-retry-after"])
def test_a_registry_that_keeps_refusing_is_exit_3(
    answer: bytes, says: tuple[str, ...], proxy: FaultProxy, pushed: tuple[str, str],
    env: dict[str, str], tmp_path: Path,
) -> None:
    repository, digest = pushed
    proxy.fault = Fault("answer", match=b"/v2/", response=answer)
    outcome = run_lading(["inspect", f"{proxy.address}/{repository}@{digest}"], tmp_path, env)
    assert_refused(outcome, 3, f"{proxy.address}/{repository}", *says,
                   within=ATTEMPTS * BUDGET + STARTUP)


@pytest.mark.registry
@pytest.mark.kustomize
@pytest.mark.parametrize("command", ["push", "pull"])
def test_a_registry_that_accepts_and_never_answers_fails_after_the_stall_limit(
    command: str, proxy: FaultProxy, big_manifest: Path, env: dict[str, str], tmp_path: Path
) -> None:
    proxy.fault = Fault("stall", match=b"", after=0)
    target = f"{proxy.address}/hostile/{unique('silent')}"
    args = (_build(big_manifest, f"{target}:v1") if command == "push"
            else ["inspect", f"{target}:v1"])
    outcome = run_lading(args, tmp_path, env)
    assert_refused(outcome, 3, f"{target}", "timed out after 1 s", within=STALL + STARTUP)


@pytest.mark.registry
def test_a_registry_that_is_gone_is_exit_3_at_once(proxy: FaultProxy, tmp_path: Path) -> None:
    proxy.down()
    outcome = run_lading(["inspect", f"{proxy.address}/hostile/gone:v1"], tmp_path, LIMITS)
    assert_refused(outcome, 3, f"cannot reach registry {proxy.address}", "Connection refused",
                   within=STARTUP + 3)


@pytest.mark.parametrize(("variable", "value"), [
    ("LADING_REGISTRY_STALL_TIMEOUT", "soon"),
    ("LADING_REGISTRY_MIN_RATE", "0"),
    ("LADING_REGISTRY_ATTEMPTS", "-1"),
    ("LADING_REGISTRY_CONNECT_TIMEOUT", "inf"),
])
def test_a_bad_time_out_setting_is_exit_2(variable: str, value: str, tmp_path: Path) -> None:
    outcome = run_lading(["inspect", "127.0.0.1:9/hostile/app:v1"], tmp_path, {variable: value})
    assert_refused(outcome, 2, f"{variable}={value!r} is not a number", within=STARTUP)


# Scratch space and signals -------------------------------------------------------------------


@pytest.fixture(scope="session")
def export_tar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("export")
    publish([config_map("settings", None, {"mode": "blue"})], f"oci-layout:{root}/layout:v1")
    export(f"oci-layout:{root}/layout:v1", str(root / "app.tar"))
    return root / "app.tar"


@pytest.mark.registry
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)],
                         ids=["SIGTERM", "SIGINT"])
def test_scratch_space_is_removed_when_lading_is_stopped(
    signum: signal.Signals, code: int, proxy: FaultProxy, export_tar: Path, tmp_path: Path
) -> None:
    # The import unpacks the tar into scratch, then hangs on a registry that never answers.
    proxy.fault = Fault("stall", match=b"", after=0)
    run = Lading(["import", str(export_tar), "--to", f"{proxy.address}/hostile/stopped"],
                 tmp_path, {"LADING_REGISTRY_STALL_TIMEOUT": "60"})
    wait_until(lambda: any(run.tmpdir.iterdir()) and proxy.armed > 0, 30,
               "the import to unpack and reach the registry")
    run.signal(signum)
    outcome = run.wait(30)
    assert outcome.code == code, outcome.err
    assert "Traceback" not in outcome.err
    assert outcome.scratch == []


# The API server -----------------------------------------------------------------------------

OBJECTS = 300


@pytest.fixture
def many(registry: RegistryEndpoint) -> str:
    """An artifact of OBJECTS ConfigMaps: enough that an install is caught half-way."""
    objects = [config_map(f"cm-{i:03d}", None, {"n": str(i)}) for i in range(OBJECTS)]
    return publish(objects, f"{registry.host}/hostile/{unique('many')}:v1")


def _install(ref: str, ns: str, kubeconfig: Path) -> list[str]:
    return ["install", ref, "-n", ns, "--inventory", "app", "--no-wait",
            "--kubeconfig", str(kubeconfig)]


def _count(kube: KubeClient, ns: str) -> int:
    return len(kube.list(CONFIG_MAPS, ns, label_selector=PART_OF))


def _converged(kube: KubeClient, ns: str, ref: str, kubeconfig: Path, tmp_path: Path) -> None:
    """Every object once, labelled into the inventory, which records the digest; and lading
    itself sees no drift."""
    inventory = read_inventory(kube, "app", ns)
    assert inventory.digest == ref.rsplit("@", 1)[1]
    members = kube.list(CONFIG_MAPS, ns, label_selector=f"{PART_OF}={inventory.id}")
    names = sorted(m["metadata"]["name"] for m in members)
    assert names == [f"cm-{i:03d}" for i in range(OBJECTS)]
    assert "ConfigMap" in inventory.group_kinds
    diff = run_lading(["diff", ref, "-n", ns, "--inventory", "app", "--kubeconfig",
                       str(kubeconfig)], tmp_path / "diff")
    assert diff.code == 0, diff.err


def _install_caught_midway(run: Lading, kube: KubeClient, ns: str) -> None:
    wait_until(lambda: _count(kube, ns) >= 30 or not run.running(), 90,
               "the install to start writing objects")
    assert run.running(), "the install finished before the fault: nothing was tested"


@pytest.mark.cluster
@pytest.mark.registry
def test_an_api_server_that_dies_mid_install_is_exit_3_and_a_rerun_converges(
    control_plane: ClusterEndpoint, kube: KubeClient, ns: str, many: str, tmp_path: Path
) -> None:
    server = control_plane.server.removeprefix("https://")
    if not server.startswith(("127.0.0.1:", "localhost:")):
        pytest.skip(f"the fault proxy forwards to loopback only; the cluster is at {server}")
    with FaultProxy(server, lifetime=300) as apiserver:
        config = yaml.safe_load(control_plane.kubeconfig.read_text())
        for cluster in config["clusters"]:
            cluster["cluster"]["server"] = f"https://{apiserver.address}"
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(yaml.safe_dump(config))
        os.chmod(kubeconfig, 0o600)

        run = Lading(_install(many, ns, kubeconfig), tmp_path / "first")
        _install_caught_midway(run, kube, ns)
        apiserver.down()
        failed = run.wait(120)
        assert_refused(failed, 3, "cannot reach the API server", within=120)
        written = _count(kube, ns)
        assert 0 < written < OBJECTS

        apiserver.up()
        # The lock the first run held expires (it could not release it): the rerun waits.
        rerun = run_lading(_install(many, ns, kubeconfig), tmp_path / "rerun", timeout=180)
        assert rerun.code == 0, rerun.err
        _converged(kube, ns, many, kubeconfig, tmp_path)


@pytest.mark.cluster
@pytest.mark.registry
def test_lading_killed_mid_install_loses_nothing_and_a_rerun_converges(
    control_plane: ClusterEndpoint, kube: KubeClient, ns: str, many: str, tmp_path: Path
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    shutil.copy(control_plane.kubeconfig, kubeconfig)
    run = Lading(_install(many, ns, kubeconfig), tmp_path / "first")
    _install_caught_midway(run, kube, ns)
    run.signal(signal.SIGKILL)
    killed = run.wait(30)
    assert killed.code == -signal.SIGKILL
    assert 0 < _count(kube, ns) < OBJECTS

    rerun = run_lading(_install(many, ns, kubeconfig), tmp_path / "rerun", timeout=180)
    assert rerun.code == 0, rerun.err
    _converged(kube, ns, many, kubeconfig, tmp_path)
