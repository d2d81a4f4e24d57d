"""Smoke tests proving the test bed is real: the fixtures' servers behave like the ones lading
meets in production (server-side apply, rollouts, failure states, OCI push/pull, referrers)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import oras.oci
import oras.provider
import pytest
from kubernetes import client as k8s

from runner.dev.endpoints import CRASH_LOOP, FAULT_ANNOTATION, ClusterEndpoint, RegistryEndpoint
from runner.dev.process import loopback_session

APPLY_PATCH = "application/apply-patch+yaml"


def eventually(check: Callable[[], Any], timeout: float = 60.0, interval: float = 0.25) -> Any:
    """Poll until `check` returns something truthy; return it, or fail with the last value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"condition not met within {timeout}s; last value: {last!r}")


def _namespace(api: k8s.ApiClient, prefix: str) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    k8s.CoreV1Api(api).create_namespace({"metadata": {"name": name}})
    return name


@pytest.fixture
def cluster_api(control_plane: ClusterEndpoint) -> Iterator[k8s.ApiClient]:
    with control_plane.api_client() as api:
        yield api


@pytest.fixture
def rollout_api(rollout_cluster: ClusterEndpoint) -> Iterator[k8s.ApiClient]:
    with rollout_cluster.api_client() as api:
        yield api


# Cluster


@pytest.mark.cluster
def test_server_side_apply_records_the_field_manager_in_managed_fields(
    cluster_api: k8s.ApiClient,
) -> None:
    core = k8s.CoreV1Api(cluster_api)
    ns = _namespace(cluster_api, "ssa")
    body = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "settings", "namespace": ns},
        "data": {"color": "blue"},
    }
    core.patch_namespaced_config_map(
        "settings", ns, body, field_manager="lading-smoke", _content_type=APPLY_PATCH
    )

    live = core.read_namespaced_config_map("settings", ns)
    managers = {(m.manager, m.operation) for m in live.metadata.managed_fields}
    assert ("lading-smoke", "Apply") in managers
    owned = next(m for m in live.metadata.managed_fields if m.manager == "lading-smoke")
    assert "f:color" in owned.fields_v1["f:data"]
    assert live.data == {"color": "blue"}


@pytest.mark.cluster
def test_control_plane_denies_users_without_rbac_bindings(cluster_api: k8s.ApiClient) -> None:
    review = k8s.AuthorizationV1Api(cluster_api).create_subject_access_review({
        "spec": {
            "user": "someone",
            "resourceAttributes": {"verb": "list", "resource": "secrets", "namespace": "default"},
        }
    })
    assert review.status.allowed is False


# Rollout cluster


@pytest.mark.cluster
@pytest.mark.rollout
def test_deployment_becomes_available_on_the_rollout_cluster(rollout_api: k8s.ApiClient) -> None:
    apps = k8s.AppsV1Api(rollout_api)
    ns = _namespace(rollout_api, "rollout")
    labels = {"app": "web"}
    apps.create_namespaced_deployment(ns, {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "web", "image": "registry.example/web:1"}]},
            },
        },
    })

    def available() -> Any:
        status = apps.read_namespaced_deployment_status("web", ns).status
        conditions = {c.type: c.status for c in status.conditions or []}
        return conditions.get("Available") == "True" and status.available_replicas == 2

    eventually(available, timeout=90)


@pytest.mark.cluster
@pytest.mark.rollout
def test_fault_stage_drives_an_annotated_pod_into_crash_loop_back_off(
    rollout_cluster: ClusterEndpoint, rollout_api: k8s.ApiClient
) -> None:
    if not rollout_cluster.fault_stages:
        pytest.skip(f"{rollout_cluster.provider} cluster has no kwok fault stages")
    core = k8s.CoreV1Api(rollout_api)
    ns = _namespace(rollout_api, "crash")
    core.create_namespaced_pod(ns, {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "broken", "annotations": {FAULT_ANNOTATION: CRASH_LOOP}},
        "spec": {"containers": [{"name": "app", "image": "registry.example/broken:1"}]},
    })

    def waiting_reason() -> str | None:
        statuses = core.read_namespaced_pod_status("broken", ns).status.container_statuses
        if not statuses or statuses[0].state.waiting is None:
            return None
        reason: str = statuses[0].state.waiting.reason
        return reason

    assert eventually(waiting_reason) == "CrashLoopBackOff"
    pod = core.read_namespaced_pod_status("broken", ns)
    ready = {c.type: c.status for c in pod.status.conditions}
    assert ready["Ready"] == "False"
    assert pod.status.container_statuses[0].last_state.terminated.exit_code == 1

    def backoff_events() -> list[Any]:
        events = core.list_namespaced_event(
            ns, field_selector="involvedObject.name=broken"
        ).items
        return [e for e in events if e.reason == "BackOff" and e.type == "Warning"]

    assert eventually(backoff_events, timeout=20)


# Registries


def oras_client(registry: RegistryEndpoint) -> oras.provider.Registry:
    client = oras.provider.Registry(
        hostname=registry.host,
        insecure=not registry.tls,
        tls_verify=str(registry.ca_file) if registry.ca_file else True,
        auth_backend="basic",
    )
    if registry.username and registry.password:
        client.auth.set_basic_auth(registry.username, registry.password.get_secret_value())
    return client


REGISTRIES = [
    pytest.param("registry", marks=pytest.mark.registry, id="docker-registry"),
    pytest.param("registry_auth_tls", marks=pytest.mark.registry, id="docker-registry-auth-tls"),
    pytest.param("referrers_registry", marks=pytest.mark.referrers, id="refreg"),
]


@pytest.mark.parametrize("registry_fixture", REGISTRIES)
def test_oras_pushes_and_pulls_a_blob_and_manifest(
    registry_fixture: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    registry: RegistryEndpoint = request.getfixturevalue(registry_fixture)
    content = f"kind: ConfigMap # {uuid.uuid4()}\n".encode()
    (tmp_path / "push").mkdir()
    layer = tmp_path / "push" / "manifests.yaml"
    layer.write_bytes(content)
    target = f"{registry.host}/testbed/smoke:v1"

    client = oras_client(registry)
    response = client.push(
        target=target, files=[f"{layer}:application/vnd.lading.content.v1+yaml"],
        disable_path_validation=True, quiet=True,
    )
    assert response.status_code == 201
    pulled = client.pull(target=target, outdir=str(tmp_path / "pull"))

    assert [Path(p).read_bytes() for p in pulled] == [content]
    manifest = client.get_manifest(target)
    assert manifest["layers"][0]["digest"] == "sha256:" + hashlib.sha256(content).hexdigest()


@pytest.mark.registry
def test_registry_with_auth_rejects_anonymous_pulls(registry_auth_tls: RegistryEndpoint) -> None:
    with loopback_session(registry_auth_tls.ca_file) as session:
        response = session.get(f"{registry_auth_tls.url}/v2/", timeout=10)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Basic")


def _push_with_subject(registry: RegistryEndpoint, tmp_path: Path) -> tuple[str, str]:
    """Push an artifact, then a second one whose manifest names the first as `subject`.
    Returns (subject digest, referrer digest)."""
    client = oras_client(registry)
    layer = tmp_path / "layer.txt"
    layer.write_text("subject\n")
    pushed = client.push(target=f"{registry.host}/testbed/app:v1", files=[str(layer)],
                         disable_path_validation=True, quiet=True)
    subject_body = pushed.request.body
    assert isinstance(subject_body, bytes)
    subject = oras.oci.Subject(
        mediaType="application/vnd.oci.image.manifest.v1+json",
        digest=pushed.headers["Docker-Content-Digest"],
        size=len(subject_body),
    )
    signature = tmp_path / "signature.txt"
    signature.write_text("signed\n")
    referrer = client.push(target=f"{registry.host}/testbed/app:sig", files=[str(signature)],
                           subject=subject, disable_path_validation=True, quiet=True)
    return subject.digest, referrer.headers["Docker-Content-Digest"]


@pytest.mark.referrers
def test_referrers_registry_lists_a_manifest_pushed_with_a_subject(
    referrers_registry: RegistryEndpoint, tmp_path: Path
) -> None:
    subject, referrer = _push_with_subject(referrers_registry, tmp_path)

    with loopback_session() as session:
        response = session.get(
            f"{referrers_registry.url}/v2/testbed/app/referrers/{subject}", timeout=10
        )
    assert response.status_code == 200
    index = response.json()
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    assert [m["digest"] for m in index["manifests"]] == [referrer]


@pytest.mark.registry
def test_docker_registry_answers_404_for_the_referrers_api(
    registry: RegistryEndpoint, tmp_path: Path
) -> None:
    subject, _ = _push_with_subject(registry, tmp_path)

    with loopback_session(registry.ca_file) as session:
        response = session.get(f"{registry.url}/v2/testbed/app/referrers/{subject}", timeout=10)
    assert response.status_code == 404


# lading dev up/env/down


def lading(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runner.cli", *args], capture_output=True, text=True, timeout=180
    )


@pytest.mark.cluster
@pytest.mark.registry
@pytest.mark.referrers
def test_lading_dev_up_env_down_runs_an_environment_from_a_state_dir(tmp_path: Path) -> None:
    state = tmp_path / "dev"
    try:
        up = lading("dev", "up", "--referrers", "--auth", "--state-dir", str(state))
        assert up.returncode == 0, up.stderr
        assert "started in" in up.stderr

        env = lading("dev", "env", "--state-dir", str(state))
        assert env.returncode == 0, env.stderr
        assert env.stdout == up.stdout
        exports = dict(
            line.removeprefix("export ").split("=", 1) for line in env.stdout.splitlines()
        )
        assert set(exports) >= {"KUBECONFIG", "LADING_REGISTRY", "LADING_REFERRERS_REGISTRY",
                                "DOCKER_CONFIG"}
        nodes = subprocess.run(
            [Path(sys.executable).with_name("kubectl"), "--kubeconfig", exports["KUBECONFIG"],
             "get", "--raw", "/readyz"], capture_output=True, text=True, timeout=30,
        )
        assert nodes.stdout == "ok"
        with loopback_session() as session:
            registry = session.get(f"http://{exports['LADING_REGISTRY']}/v2/", timeout=5)
        assert registry.status_code == 401
        docker_config = json.loads((Path(exports["DOCKER_CONFIG"]) / "config.json").read_text())
        assert exports["LADING_REGISTRY"] in docker_config["auths"]
        state_file = (state / "state.json").read_text()
        password = json.loads((state / "registry" / "credentials.json").read_text())["password"]
        assert password not in state_file
        assert password not in up.stdout + up.stderr
    finally:
        down = lading("dev", "down", "--state-dir", str(state))
    assert down.returncode == 0, down.stderr
    assert "stopped" in down.stderr
    assert not (state / "state.json").exists()
    assert (state / "logs" / "kube-apiserver.log").exists()
    assert lading("dev", "down", "--state-dir", str(state)).returncode == 0


def test_lading_dev_up_refuses_a_directory_it_did_not_create(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")

    result = lading("dev", "up", "--state-dir", str(tmp_path))

    assert result.returncode == 2
    assert "not created by `lading dev up`" in result.stderr
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_lading_dev_env_without_an_environment_is_a_usage_error(tmp_path: Path) -> None:
    result = lading("dev", "env", "--state-dir", str(tmp_path / "none"))

    assert result.returncode == 2
    assert "lading dev up" in result.stderr
