"""The real test bed: session-scoped fixtures that start servers once per test session.

Fixtures (all session-scoped; values from runner.dev.endpoints):

    control_plane       ClusterEndpoint  etcd + kube-apiserver
    rollout_cluster     ClusterEndpoint  the same API server plus kube-controller-manager,
                                         kube-scheduler and a kwok node (`fake_node`), so
                                         workloads progress; pods annotated
                                         FAULT_ANNOTATION=CRASH_LOOP go into CrashLoopBackOff
    registry            RegistryEndpoint docker-registry, plain HTTP
    registry_auth_tls   RegistryEndpoint docker-registry, htpasswd + TLS (`ca_file`,
                                         `username`, `password`, `docker_config`)
    referrers_registry  RegistryEndpoint refreg (stands in for zot), OCI referrers API
    kustomize_bin       Path             the pinned kustomize binary
    helm_bin            Path             the pinned helm binary (kustomize --helm-command)
    temporal            TemporalEndpoint Temporal's dev server (`temporal server start-dev`),
                                         its database in the test bed

`rollout_cluster` adds its components to the `control_plane` API server rather than starting a
second one: two API servers do not fit a 2-core CI box next to the tests. Use a namespace per
test either way.

Overrides: LADING_TEST_KUBECONFIG (both cluster fixtures use that cluster; it is assumed to run
workloads, and has no kwok fault stages), LADING_TEST_REGISTRY (`host:port` or
`https://host:port`, for `registry`), LADING_TEST_TEMPORAL (`host:port` of a Temporal frontend
with a `default` namespace, for `temporal`). LADING_TEST_PROVIDER=testcontainers uses k3s for the
clusters and a registry:2 container for `registry` when a Docker engine answers, and otherwise
says why in the report header and uses local processes.

Logs of every server are kept, and their directory printed, when a test fails; after a green
session the test-bed directory is removed.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from runner.common.errors import LadingError
from runner.dev import tools
from runner.dev.controlplane import ControlPlane, start_control_plane, start_rollout
from runner.dev.endpoints import ClusterEndpoint, RegistryEndpoint, TemporalEndpoint
from runner.dev.registry import (
    RegistryServer,
    start_docker_registry,
    start_referrers_registry,
)


@dataclass
class _Testbed:
    """Session-wide bookkeeping: which provider serves fixtures, and where logs are."""

    provider: str = "local"
    provider_note: str = ""
    root: Path | None = None
    log_dirs: list[Path] = field(default_factory=list)


_testbed = _Testbed()


def _docker_engine_problem() -> str | None:
    """None when a Docker engine answers a ping, else why not."""
    try:
        import docker

        docker.from_env(timeout=3).ping()
    except Exception as e:  # any failure means "no usable engine"
        return f"{e.__class__.__name__}: {str(e)[:200]}"
    return None


def pytest_configure(config: pytest.Config) -> None:
    del config
    # The build runner finds kustomize and helm through LADING_KUSTOMIZE / LADING_HELM (or
    # PATH), as under `lading dev env`: point them at the pinned builds.
    from runner.dev.env import tool_exports

    for name, path in tool_exports().items():
        os.environ.setdefault(name, path)
    requested = os.environ.get("LADING_TEST_PROVIDER", "local")
    if requested == "testcontainers":
        problem = _docker_engine_problem()
        if problem is None:
            _testbed.provider = "testcontainers"
        else:
            _testbed.provider_note = (
                f"LADING_TEST_PROVIDER=testcontainers but no Docker engine is reachable "
                f"({problem}); using local processes"
            )
    elif requested != "local":
        _testbed.provider_note = f"unknown LADING_TEST_PROVIDER={requested!r}; using local"


def pytest_report_header(config: pytest.Config) -> list[str]:
    del config
    lines = [f"testbed provider: {_testbed.provider}"]
    if _testbed.provider_note:
        lines.append(f"testbed: {_testbed.provider_note}")
    for var in ("LADING_TEST_KUBECONFIG", "LADING_TEST_REGISTRY"):
        if os.environ.get(var):
            lines.append(f"testbed: {var}={os.environ[var]}")
    return lines


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int) -> None:
    if exitstatus != 0 and _testbed.log_dirs:
        terminalreporter.section("testbed logs (kept)")
        for directory in _testbed.log_dirs:
            terminalreporter.write_line(str(directory))


def _provisioned(find: Any, *args: Any) -> Any:
    """Call a tools.find* function; a missing tool fails the test with the fix in the message
    rather than skipping it: a green run must mean the real thing was tested."""
    try:
        return find(*args)
    except LadingError as e:
        pytest.fail(str(e), pytrace=False)


@pytest.fixture(scope="session")
def testbed_dir(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("testbed")
    _testbed.root = root
    yield root
    # Runs after every server fixture has stopped (they depend on this one).
    if request.session.testsfailed == 0:
        shutil.rmtree(root, ignore_errors=True)


def _logs(directory: Path) -> Path:
    _testbed.log_dirs.append(directory)
    return directory


# Clusters


def _kubeconfig_server(path: Path) -> str:
    config = yaml.safe_load(path.read_text())
    current = config.get("current-context")
    contexts = {c["name"]: c["context"] for c in config.get("contexts", [])}
    clusters = {c["name"]: c["cluster"] for c in config.get("clusters", [])}
    if current in contexts:
        cluster_name = contexts[current]["cluster"]
    else:
        cluster_name = config["clusters"][0]["name"]
    server: str = clusters[cluster_name]["server"]
    return server


def _k3s_cluster(root: Path) -> Iterator[ClusterEndpoint]:
    try:
        from testcontainers.community.k3s import K3SContainer
    except ImportError:  # older testcontainers releases keep these modules at the top level
        from testcontainers.k3s import K3SContainer

    started = time.monotonic()
    version = tools.pinned_versions()["KUBERNETES_VERSION"]
    with K3SContainer(image=f"rancher/k3s:{version}-k3s1") as k3s:
        kubeconfig = root / "k3s.kubeconfig"
        kubeconfig.write_text(k3s.config_yaml())
        yield ClusterEndpoint(
            kubeconfig=kubeconfig,
            server=_kubeconfig_server(kubeconfig),
            rollout=True,
            provider="testcontainers",
            startup_seconds=round(time.monotonic() - started, 2),
        )


@pytest.fixture(scope="session")
def _cluster_source(testbed_dir: Path) -> Iterator[ClusterEndpoint | ControlPlane]:
    """The one cluster of the session: an override, a k3s container, or our processes."""
    override = os.environ.get("LADING_TEST_KUBECONFIG")
    if override:
        path = Path(override).expanduser()
        yield ClusterEndpoint(
            kubeconfig=path, server=_kubeconfig_server(path), rollout=True, provider="env"
        )
        return
    if _testbed.provider == "testcontainers":
        yield from _k3s_cluster(testbed_dir)
        return
    _provisioned(tools.find, tools.ETCD)
    _provisioned(tools.find, tools.KUBE_APISERVER)
    cp = start_control_plane(testbed_dir / "cluster", log_dir=_logs(testbed_dir / "cluster/logs"))
    try:
        yield cp
    finally:
        cp.stop()


@pytest.fixture(scope="session")
def control_plane(_cluster_source: ClusterEndpoint | ControlPlane) -> ClusterEndpoint:
    if isinstance(_cluster_source, ControlPlane):
        return _cluster_source.endpoint
    return _cluster_source


@pytest.fixture(scope="session")
def rollout_cluster(_cluster_source: ClusterEndpoint | ControlPlane) -> ClusterEndpoint:
    if not isinstance(_cluster_source, ControlPlane):
        return _cluster_source
    if not _cluster_source.endpoint.rollout:
        for tool in (tools.KUBE_CONTROLLER_MANAGER, tools.KUBE_SCHEDULER, tools.KWOK):
            _provisioned(tools.find, tool)
        # Adds processes to the control plane, so its teardown stops them too.
        start_rollout(_cluster_source)
    return _cluster_source.endpoint


# Registries


def _local_registry(server: RegistryServer) -> Iterator[RegistryEndpoint]:
    try:
        yield server.endpoint
    finally:
        server.stop()


@pytest.fixture(scope="session")
def registry(testbed_dir: Path) -> Iterator[RegistryEndpoint]:
    override = os.environ.get("LADING_TEST_REGISTRY")
    if override:
        tls = override.startswith("https://")
        host = override.removeprefix("https://").removeprefix("http://").rstrip("/")
        yield RegistryEndpoint(host=host, tls=tls, provider="env")
        return
    if _testbed.provider == "testcontainers":
        try:
            from testcontainers.community.registry import DockerRegistryContainer
        except ImportError:
            from testcontainers.registry import DockerRegistryContainer

        started = time.monotonic()
        with DockerRegistryContainer() as container:
            yield RegistryEndpoint(
                host=container.get_registry(),
                provider="testcontainers",
                startup_seconds=round(time.monotonic() - started, 2),
            )
        return
    _provisioned(tools.find_docker_registry)
    directory = testbed_dir / "registry"
    yield from _local_registry(start_docker_registry(directory, log_dir=_logs(directory / "logs")))


@pytest.fixture(scope="session")
def registry_auth_tls(testbed_dir: Path) -> Iterator[RegistryEndpoint]:
    # Always local: the registry container cannot be given our CA's certificate cheaply, and
    # the processes start in a fraction of a second anyway.
    _provisioned(tools.find_docker_registry)
    directory = testbed_dir / "registry-auth-tls"
    yield from _local_registry(
        start_docker_registry(directory, auth=True, tls=True, log_dir=_logs(directory / "logs"))
    )


@pytest.fixture(scope="session")
def referrers_registry(testbed_dir: Path) -> Iterator[RegistryEndpoint]:
    """refreg, standing in for zot (not available from the Go module proxy here)."""
    _provisioned(tools.find, tools.REFREG)
    directory = testbed_dir / "referrers"
    yield from _local_registry(
        start_referrers_registry(directory, log_dir=_logs(directory / "logs"))
    )


# Tools


@pytest.fixture(scope="session")
def kustomize_bin() -> Path:
    path: Path = _provisioned(tools.find, tools.KUSTOMIZE)
    return path


@pytest.fixture(scope="session")
def helm_bin() -> Path:
    path: Path = _provisioned(tools.find, tools.HELM)
    return path


@pytest.fixture(scope="session")
def temporal(testbed_dir: Path) -> Iterator[TemporalEndpoint]:
    """Temporal's development server, built from the Go module proxy like the other tools."""
    override = os.environ.get("LADING_TEST_TEMPORAL")
    if override:
        yield TemporalEndpoint(address=override, provider="env")
        return
    from runner.dev.temporal import start_temporal

    _provisioned(tools.find, tools.TEMPORAL)
    directory = testbed_dir / "temporal"
    server = start_temporal(directory, log_dir=_logs(directory / "logs"))
    try:
        yield server.endpoint
    finally:
        server.stop()


@pytest.fixture(scope="session")
def kube(control_plane: ClusterEndpoint) -> Iterator[Any]:
    """lading's own Kubernetes client on the test cluster, for setting up and checking."""
    from runner.common.kube import KubeClient, Target

    client = KubeClient(Target(kubeconfig=str(control_plane.kubeconfig)))
    yield client
    client.close()


@pytest.fixture
def ns(kube: Any) -> Iterator[str]:
    """A namespace of the test's own on the shared test cluster, deleted afterwards."""
    from runner.common.kube import Resource
    from tests.artifacts import namespace_obj, unique

    namespaces = Resource("", "v1", "Namespace", "namespaces", False)
    name = unique("t")
    kube.apply(namespaces, namespace_obj(name), field_manager="test-setup")
    yield name
    kube.delete(namespaces, None, name)
