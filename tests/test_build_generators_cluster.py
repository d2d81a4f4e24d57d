"""Generated artifacts on real servers: compose stacks and Apps installed into the rollout
cluster (kwok runs the pods), each pod's variables coming from the right ConfigMap and Secret;
SealedSecrets unsealed by the real sealed-secrets controller; ExternalSecrets accepted by the
API server with External Secrets Operator's CRD installed."""

from __future__ import annotations

import base64
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from plans.install import InstallPlan
from runner.build.compose import is_credential
from runner.build.compose_load import load_project
from runner.common.kube import KubeClient, Resource
from runner.dev.endpoints import ClusterEndpoint
from runner.install.install import install
from tests.artifacts import namespace_obj, unique
from tests.clirun import lading
from tests.sealed_controller import SealedSecretsController, apply_crd, start_controller

pytestmark = [pytest.mark.cluster, pytest.mark.rollout]

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
# External Secrets Operator's CRD, vendored (tests/data/eso/ORIGIN says from where).
ESO_CRD = Path(__file__).resolve().parent / "data" / "eso"
ESO_CRD = ESO_CRD / "external-secrets.io_externalsecrets.yaml"
PODS = Resource("", "v1", "Pod", "pods", True)
CONFIGMAPS = Resource("", "v1", "ConfigMap", "configmaps", True)
SECRETS = Resource("", "v1", "Secret", "secrets", True)
NAMESPACES = Resource("", "v1", "Namespace", "namespaces", False)
EXTERNAL_SECRETS = Resource("external-secrets.io", "v1", "ExternalSecret", "externalsecrets", True)


def _build(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *args: str
           ) -> dict[str, Any]:
    ran = lading(capsys, monkeypatch, "build", *args, "-o", "json")
    assert ran.code == 0, ran.err
    result: dict[str, Any] = json.loads(ran.out)
    return result


def _install(ref: str, ns: str, cluster: ClusterEndpoint, *, wait: bool = True) -> None:
    plan = InstallPlan.model_validate({
        "artifact": {"ref": ref}, "target": {"kubeconfig": str(cluster.kubeconfig)},
        "namespace": ns, "inventory": "generated", "wait": wait, "timeout": "3m"})
    result = install(plan)
    assert result.status == "succeeded", [c for c in result.changes if c.error]


def _pod_of(kube: KubeClient, ns: str, name: str, timeout: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pods = kube.list(PODS, ns, label_selector=f"app.kubernetes.io/name={name}")
        running = [p for p in pods if p.get("status", {}).get("phase") == "Running"]
        if running:
            return running[0]
        time.sleep(0.5)
    raise AssertionError(f"no running pod of {name} in {ns}")


def _received(kube: KubeClient, ns: str, pod: dict[str, Any]) -> tuple[dict[str, str],
                                                                      dict[str, str]]:
    """(from ConfigMaps, from Secrets): what the live pod's envFrom gives its container."""
    plain: dict[str, str] = {}
    secret: dict[str, str] = {}
    for source in pod["spec"]["containers"][0].get("envFrom", []):
        if "configMapRef" in source:
            config = kube.get(CONFIGMAPS, ns, source["configMapRef"]["name"])
            assert config is not None
            plain.update(config["data"])
        else:
            live = kube.get(SECRETS, ns, source["secretRef"]["name"])
            assert live is not None
            secret.update({k: base64.b64decode(v).decode() for k, v in live["data"].items()})
    return plain, secret


@pytest.mark.parametrize(
    ("stack", "env_file"),
    [("shop", None), ("monitoring", None), ("notes", "prod.env")],
)
def test_compose_stacks_roll_out_with_variables_from_their_configmap_and_secret(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
    rollout_cluster: ClusterEndpoint, kube: KubeClient, ns: str, stack: str,
    env_file: str | None,
) -> None:
    for var in ("STRIPE_API_KEY", "NOTES_VERSION", "REGISTRY", "WORKER_QUEUE"):
        monkeypatch.delenv(var, raising=False)
    compose = EXAMPLES / "compose" / stack / "compose.yaml"
    args = ["--compose", str(compose), "--to", f"oci-layout:{tmp_path / 'out'}"]
    env_files = [(compose.parent / env_file, env_file)] if env_file else []
    if env_file:
        args += ["--env-file", str(compose.parent / env_file)]
    result = _build(capsys, monkeypatch, *args)

    _install(result["ref"], ns, rollout_cluster)

    # What the build saw: the same files and the same environment.
    project = load_project(compose, str(compose), env_files)
    services = {name for name, spec in project.document["services"].items()
                if spec.get("image")}
    for service in sorted(services):
        expected = project.environments[service]
        plain, secret = _received(kube, ns, _pod_of(kube, ns, service))
        assert {**plain, **secret} == expected, service
        assert all(is_credential(k) for k in secret), service
        assert not any(is_credential(k) for k in plain), service


@pytest.fixture(scope="module")
def sealed_secrets(
    rollout_cluster: ClusterEndpoint, kube: KubeClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SealedSecretsController]:
    namespace = unique("sealed-secrets")
    kube.apply(NAMESPACES, namespace_obj(namespace), field_manager="test-setup")
    controller = start_controller(rollout_cluster, kube, tmp_path_factory.mktemp("sealed"),
                                  namespace)
    yield controller
    controller.stop()
    kube.delete(NAMESPACES, None, namespace)


def _app(tmp_path: Path, ns: str, secret: dict[str, Any]) -> Path:
    spec = {"apiVersion": "lading.dev/v1", "kind": "App", "name": "web", "namespace": ns,
            "image": "ghcr.io/example/web:1.0.0", "ports": [{"name": "http", "port": 80}],
            "env": {"LOG_LEVEL": "debug"}, "config_map": True, "secret": secret}
    path = tmp_path / "app.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_sealed_secrets_are_unsealed_by_the_real_controller_and_reach_the_pod(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
    rollout_cluster: ClusterEndpoint, kube: KubeClient, ns: str,
    sealed_secrets: SealedSecretsController,
) -> None:
    monkeypatch.setenv("WEB_DB_PASSWORD", "correct horse battery staple")
    (tmp_path / "api-token").write_text("tok-from-file")
    (tmp_path / "cert.pem").write_bytes(sealed_secrets.certificate.read_bytes())
    app = _app(tmp_path, ns, {"strategy": "sealed", "certificate": "cert.pem", "values": {
        "DB_PASSWORD": {"env": "WEB_DB_PASSWORD"}, "API_TOKEN": {"file": "api-token"}}})
    bare = tmp_path / "gitops.git"
    subprocess.run(["git", "init", "-q", "--bare", str(bare)], check=True)

    # A SealedSecret may go to Git; the same build goes to a layout for the install.
    result = _build(capsys, monkeypatch, "--app", str(app), "--to",
                    f"oci-layout:{tmp_path / 'out'}", "--to", f"git:{bare}:web")
    manifests = subprocess.run(["git", "--git-dir", str(bare), "show", "HEAD:web/manifests.yaml"],
                               check=True, capture_output=True, text=True).stdout
    assert "correct horse" not in manifests
    assert "kind: SealedSecret" in manifests

    _install(result["ref"], ns, rollout_cluster)

    # The controller writes the Secret once it has seen the SealedSecret.
    deadline = time.monotonic() + 60
    while kube.get(SECRETS, ns, "web-secret") is None:
        assert time.monotonic() < deadline, "the controller never unsealed web-secret"
        time.sleep(0.2)
    plain, secret = _received(kube, ns, _pod_of(kube, ns, "web"))
    assert plain == {"LOG_LEVEL": "debug"}
    assert secret == {"DB_PASSWORD": "correct horse battery staple",
                      "API_TOKEN": "tok-from-file"}


def test_sealing_at_build_time_is_not_reproducible_and_the_check_names_the_sealed_secret(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
    sealed_secrets: SealedSecretsController, ns: str,
) -> None:
    monkeypatch.setenv("WEB_DB_PASSWORD", "pw")
    (tmp_path / "cert.pem").write_bytes(sealed_secrets.certificate.read_bytes())
    app = _app(tmp_path, ns, {"strategy": "sealed", "certificate": "cert.pem",
                              "values": {"DB_PASSWORD": {"env": "WEB_DB_PASSWORD"}}})

    ran = lading(capsys, monkeypatch, "build", "--app", str(app), "--check-reproducible",
                 "--to", f"oci-layout:{tmp_path / 'out'}")

    assert ran.code == 1
    assert f"bitnami.com/v1alpha1/SealedSecret/{ns}/web-secret" in ran.err
    assert "Deployment" not in ran.err.split("differ:", 1)[1].split("hint")[0]
    assert not (tmp_path / "out").exists()


def test_external_secrets_are_accepted_by_the_api_server_with_eso_crds(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
    rollout_cluster: ClusterEndpoint, kube: KubeClient, ns: str,
) -> None:
    apply_crd(kube, yaml.safe_load(ESO_CRD.read_text()))
    app = _app(tmp_path, ns, {"strategy": "external", "store": {"name": "vault"},
                              "refresh_interval": "15m",
                              "keys": {"DB_PASSWORD": {"key": "prod/db", "property": "password"}}})
    result = _build(capsys, monkeypatch, "--app", str(app),
                    "--to", f"oci-layout:{tmp_path / 'out'}")

    _install(result["ref"], ns, rollout_cluster, wait=False)

    live = kube.get(EXTERNAL_SECRETS, ns, "web-secret")
    assert live is not None
    assert live["spec"]["secretStoreRef"] == {"kind": "ClusterSecretStore", "name": "vault"}
    assert live["spec"]["data"][0]["remoteRef"]["property"] == "password"
    assert live["spec"]["target"]["name"] == "web-secret"
