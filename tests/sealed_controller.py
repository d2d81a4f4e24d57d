"""The real sealed-secrets controller (Bitnami, built by scripts/provision-tools) running
against the test cluster as a local process, for tests that need SealedSecrets unsealed.

The controller only knows in-cluster configuration: it reads the API server's address from
KUBERNETES_SERVICE_HOST/PORT and its token and CA from /var/run/secrets/kubernetes.io/
serviceaccount/. It runs in a private mount namespace (`unshare --mount`, root) where a
directory of ours is bind-mounted on /run, so those files exist for it alone and the machine's
own /run is never touched. Its CRD comes from the same module the binaries were built from:
helm/sealed-secrets/crds/ in the Go module cache.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

from runner.common.kube import KubeClient, Resource
from runner.dev import process, tools
from runner.dev.endpoints import ClusterEndpoint
from runner.dev.process import ProcessRecord

CRDS = Resource("apiextensions.k8s.io", "v1", "CustomResourceDefinition",
                "customresourcedefinitions", False)
SECRETS = Resource("", "v1", "Secret", "secrets", True)
KEY_LABEL = "sealedsecrets.bitnami.com/sealed-secrets-key"


@dataclass
class SealedSecretsController:
    namespace: str
    certificate: Path  # the controller's public certificate (what `kubeseal --fetch-cert` gives)
    record: ProcessRecord

    def stop(self) -> None:
        process.stop(self.record)


def module_dir() -> Path:
    version = tools.pinned_versions()["SEALED_SECRETS_VERSION"]
    return (tools.cache_root() / "go" / "mod" / "github.com" / "bitnami-labs"
            / f"sealed-secrets@{version}")


def apply_crd(kube: KubeClient, document: dict[str, Any], timeout: float = 60) -> None:
    """Apply a CRD and wait until the API server serves it."""
    kube.apply(CRDS, document, field_manager="test-setup")
    name = document["metadata"]["name"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        live = kube.get(CRDS, None, name) or {}
        conditions = live.get("status", {}).get("conditions") or []
        if any(c["type"] == "Established" and c["status"] == "True" for c in conditions):
            return
        time.sleep(0.2)
    raise AssertionError(f"CRD {name} not established after {timeout}s")


def _kubectl(cluster: ClusterEndpoint, *args: str) -> str:
    return subprocess.run(
        [str(tools.find_kubectl()), "--kubeconfig", str(cluster.kubeconfig), *args],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout


def start_controller(
    cluster: ClusterEndpoint, kube: KubeClient, state_dir: Path, namespace: str
) -> SealedSecretsController:
    binary = tools.find(tools.SEALED_SECRETS_CONTROLLER)
    unshare = shutil.which("unshare")
    assert unshare, "util-linux's unshare runs the controller in its own mount namespace"
    crd = module_dir() / "helm" / "sealed-secrets" / "crds" / "bitnami.com_sealedsecrets.yaml"
    apply_crd(kube, yaml.safe_load(crd.read_text()))

    # An identity of its own, bound to cluster-admin: the test cluster is throwaway, and the
    # controller's chart role is not what these tests are about.
    _kubectl(cluster, "create", "serviceaccount", "sealed-secrets-controller", "-n", namespace)
    _kubectl(cluster, "create", "clusterrolebinding", f"sealed-secrets-{namespace}",
             "--clusterrole=cluster-admin",
             f"--serviceaccount={namespace}:sealed-secrets-controller")
    token = _kubectl(cluster, "create", "token", "sealed-secrets-controller", "-n", namespace,
                     "--duration=2h").strip()
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    ca = base64.b64decode(config["clusters"][0]["cluster"]["certificate-authority-data"])
    account = state_dir / "run" / "secrets" / "kubernetes.io" / "serviceaccount"
    account.mkdir(parents=True, exist_ok=True)
    (account / "token").write_text(token)
    (account / "ca.crt").write_bytes(ca)
    (account / "namespace").write_text(namespace)
    server = urlparse(cluster.server)

    record = process.start(
        "sealed-secrets-controller",
        [unshare, "--mount", "--propagation", "private", "--", "/bin/sh", "-c",
         'mount --bind "$0" /run && exec "$@"', state_dir / "run", binary,
         "--key-size=2048", "--update-status",
         f"--listen-addr=127.0.0.1:{process.free_port()}",
         f"--listen-metrics-addr=127.0.0.1:{process.free_port()}"],
        state_dir / "logs",
        env={"KUBERNETES_SERVICE_HOST": server.hostname or "127.0.0.1",
             "KUBERNETES_SERVICE_PORT": str(server.port or 443),
             "POD_NAMESPACE": namespace},
    )
    certificate = state_dir / "cert.pem"

    def key_ready() -> bool:
        keys = kube.list(SECRETS, namespace, label_selector=f"{KEY_LABEL}=active")
        if not keys:
            return False
        certificate.write_bytes(base64.b64decode(keys[0]["data"]["tls.crt"]))
        return True

    try:
        process.wait_until(key_ready, "the sealed-secrets key", [record], timeout=90)
    except BaseException:
        process.stop(record)
        raise
    return SealedSecretsController(namespace, certificate, record)

