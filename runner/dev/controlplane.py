"""A real Kubernetes control plane on loopback: etcd + kube-apiserver, and for rollouts
kube-controller-manager, kube-scheduler and kwok simulating the kubelet of one fake node.

Layout under the state directory:

    pki/              CA, serving and client certificates, service-account signing keys
    etcd/             etcd's data directory
    kubeconfig        the admin kubeconfig (user `lading-admin`, group system:masters)
    components/       a kubeconfig per controller, kwok's stage configuration
    logs/<name>.log   every process's stdout+stderr (or in the `log_dir` given)
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import yaml

from runner.common.errors import OperationFailed
from runner.dev import pki, process, tools
from runner.dev.endpoints import ClusterEndpoint
from runner.dev.process import ProcessRecord

SERVICE_CLUSTER_IP_RANGE = "10.96.0.0/16"
POD_CIDR = "10.244.0.1/16"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
FAKE_NODE = "kwok-node-0"
# kwok manages only nodes carrying this annotation, never a node it did not get told about.
KWOK_NODE_ANNOTATION = ("kwok.x-k8s.io/node", "fake")
KWOK_STAGES = Path(__file__).with_name("kwok-stages.yaml")
STARTUP_TIMEOUT = 120.0


@dataclass
class ControlPlane:
    """A running control plane: its endpoint and the processes to stop, in start order."""

    endpoint: ClusterEndpoint
    processes: list[ProcessRecord] = field(default_factory=list)
    state_dir: Path = Path()
    log_dir: Path = Path()

    @property
    def pki_dir(self) -> Path:
        return self.state_dir / "pki"

    def stop(self) -> None:
        process.stop_all(self.processes)


def kubeconfig(server: str, ca_pem: bytes, client: pki.KeyPair, user: str) -> dict[str, Any]:
    """A self-contained kubeconfig (certificates inline), so it can be copied anywhere."""

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "lading-dev",
             "cluster": {"server": server, "certificate-authority-data": b64(ca_pem)}},
        ],
        "users": [
            {"name": user,
             "user": {"client-certificate-data": b64(client.cert_pem),
                      "client-key-data": b64(client.key_pem)}},
        ],
        "contexts": [{"name": "lading-dev", "context": {"cluster": "lading-dev", "user": user}}],
        "current-context": "lading-dev",
    }


def _write_kubeconfig(
    path: Path, server: str, ca: pki.CertificateAuthority, user: str, groups: tuple[str, ...]
) -> Path:
    client = pki.issue(ca, user, organizations=groups, client=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The kubeconfig embeds a private key.
    pki.write_private(path, yaml.safe_dump(kubeconfig(server, ca.cert_pem, client, user)).encode())
    return path


class _Api:
    """Just enough HTTP to probe and seed the API server without importing the kubernetes
    client (slow to import, and these calls must work before anything else is set up)."""

    def __init__(self, server: str, pki_dir: Path) -> None:
        self.server = server
        self.session = process.loopback_session(
            pki_dir / "ca.crt", (pki_dir / "admin.crt", pki_dir / "admin.key")
        )

    def ok(self, path: str) -> bool:
        try:
            return self.session.get(self.server + path, timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def get(self, path: str) -> dict[str, Any] | None:
        try:
            response = self.session.get(self.server + path, timeout=5)
        except requests.RequestException:
            return None
        if response.status_code != 200:
            return None
        data: dict[str, Any] = response.json()
        return data

    def create(self, path: str, body: dict[str, Any]) -> None:
        response = self.session.post(self.server + path, json=body, timeout=10)
        if response.status_code not in (200, 201, 409):
            raise OperationFailed(
                f"creating {body.get('kind')} {body['metadata']['name']} failed: "
                f"HTTP {response.status_code} {response.text[:300]}"
            )


def start_control_plane(
    state_dir: Path,
    *,
    apiserver_port: int | None = None,
    log_dir: Path | None = None,
    timeout: float = STARTUP_TIMEOUT,
) -> ControlPlane:
    """Start etcd and kube-apiserver and wait for /readyz. On failure everything started is
    stopped and the logs are kept."""
    started = time.monotonic()
    etcd_bin = tools.find(tools.ETCD)
    apiserver_bin = tools.find(tools.KUBE_APISERVER)
    state_dir.mkdir(parents=True, exist_ok=True)
    pki_dir, logs = state_dir / "pki", log_dir or state_dir / "logs"

    ca = pki.new_ca("lading dev cluster CA")
    ca.keys.write(pki_dir, "ca")
    pki.serving_pair(ca, "kube-apiserver").write(pki_dir, "apiserver")
    pki.issue(ca, "lading-admin", organizations=("system:masters",), client=True).write(
        pki_dir, "admin"
    )
    sa_private, sa_public = pki.signing_key_pair()
    pki.write_private(pki_dir / "sa.key", sa_private)
    (pki_dir / "sa.pub").write_bytes(sa_public)

    etcd_client, etcd_peer = process.free_port(), process.free_port()
    port = apiserver_port or process.free_port()
    server = f"https://127.0.0.1:{port}"
    cp = ControlPlane(
        ClusterEndpoint(kubeconfig=state_dir / "kubeconfig", server=server),
        state_dir=state_dir,
        log_dir=logs,
    )
    try:
        etcd_url = f"http://127.0.0.1:{etcd_client}"
        peer_url = f"http://127.0.0.1:{etcd_peer}"
        etcd = process.start("etcd", [
            etcd_bin, "--name=lading", f"--data-dir={state_dir / 'etcd'}",
            f"--listen-client-urls={etcd_url}", f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={peer_url}", f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=lading={peer_url}", "--initial-cluster-state=new",
            # A throwaway cluster: durability buys nothing and fsync dominates on CI disks.
            "--unsafe-no-fsync=true",
        ], logs)
        cp.processes.append(etcd)

        etcd_session = process.loopback_session()

        def etcd_healthy() -> bool:
            try:
                health = etcd_session.get(f"{etcd_url}/health", timeout=2).json()
            except (requests.RequestException, ValueError):
                return False
            return isinstance(health, dict) and health.get("health") == "true"

        process.wait_until(etcd_healthy, "etcd", [etcd], timeout)

        apiserver = process.start("kube-apiserver", [
            apiserver_bin,
            f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={port}",
            f"--cert-dir={pki_dir}",
            f"--tls-cert-file={pki_dir / 'apiserver.crt'}",
            f"--tls-private-key-file={pki_dir / 'apiserver.key'}",
            f"--client-ca-file={pki_dir / 'ca.crt'}",
            "--authorization-mode=RBAC",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={pki_dir / 'sa.pub'}",
            f"--service-account-signing-key-file={pki_dir / 'sa.key'}",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            # The built-in `kubernetes` Service cannot have a loopback endpoint, and nothing in
            # the cluster dials the API server through it: no reconciling.
            "--endpoint-reconciler-type=none",
            "--allow-privileged=true",
            # API Priority and Fairness stays on, as on every real cluster: lading's back-off
            # on 429 is tested against it (tests/test_throttling.py).
            "--profiling=false",
        ], logs)
        cp.processes.append(apiserver)
        api = _Api(server, pki_dir)
        process.wait_until(lambda: api.ok("/readyz"), "kube-apiserver /readyz", cp.processes,
                           timeout)
        _write_kubeconfig(cp.endpoint.kubeconfig, server, ca, "lading-admin", ("system:masters",))
    except BaseException:
        cp.stop()
        raise
    cp.endpoint = cp.endpoint.model_copy(
        update={"startup_seconds": round(time.monotonic() - started, 2)}
    )
    return cp


def _load_ca(pki_dir: Path) -> pki.CertificateAuthority:
    return pki.load_ca(pki_dir / "ca.crt", pki_dir / "ca.key")


def start_rollout(cp: ControlPlane, *, timeout: float = STARTUP_TIMEOUT) -> ControlPlane:
    """Add kube-controller-manager, kube-scheduler and a kwok-managed node to `cp`, so that
    workloads really progress. Returns `cp` updated; on failure the added processes are stopped.
    """
    started = time.monotonic()
    kcm_bin = tools.find(tools.KUBE_CONTROLLER_MANAGER)
    scheduler_bin = tools.find(tools.KUBE_SCHEDULER)
    kwok_bin = tools.find(tools.KWOK)
    ca = _load_ca(cp.pki_dir)
    server = cp.endpoint.server
    components, logs = cp.state_dir / "components", cp.log_dir
    # The built-in RBAC bindings grant exactly what these identities need; the controller
    # manager then runs each controller under its own service account, as kubeadm does.
    kcm_config = _write_kubeconfig(components / "kube-controller-manager.kubeconfig", server, ca,
                                   "system:kube-controller-manager", ())
    scheduler_config = _write_kubeconfig(components / "kube-scheduler.kubeconfig", server, ca,
                                         "system:kube-scheduler", ())
    # kwok plays every kubelet of the fake nodes and patches any pod's status; there is no
    # narrower built-in role for that, so it gets admin rights.
    kwok_config = _write_kubeconfig(components / "kwok.kubeconfig", server, ca, "kwok-controller",
                                    ("system:masters",))
    added: list[ProcessRecord] = []
    try:
        added.append(process.start("kube-controller-manager", [
            kcm_bin, f"--kubeconfig={kcm_config}", "--leader-elect=false",
            "--bind-address=127.0.0.1", "--secure-port=0",
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={cp.pki_dir / 'sa.key'}",
            f"--root-ca-file={cp.pki_dir / 'ca.crt'}",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
        ], logs))
        added.append(process.start("kube-scheduler", [
            scheduler_bin, f"--kubeconfig={scheduler_config}", "--leader-elect=false",
            "--bind-address=127.0.0.1", "--secure-port=0",
        ], logs))
        added.append(process.start("kwok", [
            kwok_bin, f"--kubeconfig={kwok_config}", f"--config={KWOK_STAGES}",
            "--manage-nodes-with-annotation-selector=" + "=".join(KWOK_NODE_ANNOTATION),
            "--node-ip=127.0.0.1",
            # Heartbeat through a node Lease: kwok's status-only heartbeat comes every ~55s,
            # later than the node lifecycle controller's 50s grace period, so without a
            # lease the node flaps NotReady and every pod on it with it.
            "--node-lease-duration-seconds=40",
            # kwok hands out fake pod IPs from this range; its default /24 runs out in long
            # test sessions.
            f"--cidr={POD_CIDR}",
        ], logs))
        api = _Api(server, cp.pki_dir)
        api.create("/api/v1/nodes", fake_node(FAKE_NODE))
        # Workloads with volume claims (StatefulSets) need somewhere to bind: a default
        # StorageClass and a pool of pre-made volumes the PV controller hands out.
        api.create("/apis/storage.k8s.io/v1/storageclasses", STORAGE_CLASS)
        for i in range(FAKE_VOLUMES):
            api.create("/api/v1/persistentvolumes", fake_volume(i))
        process.wait_until(lambda: node_ready(api.get(f"/api/v1/nodes/{FAKE_NODE}")),
                           f"node {FAKE_NODE}", [*cp.processes, *added], timeout)
        # Pods are rejected until their namespace's `default` ServiceAccount exists; the
        # controller manager creates it, so its presence means the controllers are running.
        process.wait_until(
            lambda: api.ok("/api/v1/namespaces/default/serviceaccounts/default"),
            "the default ServiceAccount", [*cp.processes, *added], timeout,
        )
    except BaseException:
        process.stop_all(added)
        raise
    cp.processes.extend(added)
    cp.endpoint = cp.endpoint.model_copy(update={
        "fake_node": FAKE_NODE,
        "rollout": True,
        "startup_seconds": round(cp.endpoint.startup_seconds + time.monotonic() - started, 2),
    })
    return cp


FAKE_VOLUMES = 32
STORAGE_CLASS: dict[str, Any] = {
    "apiVersion": "storage.k8s.io/v1",
    "kind": "StorageClass",
    "metadata": {
        "name": "standard",
        "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
    },
    "provisioner": "kubernetes.io/no-provisioner",
    "volumeBindingMode": "Immediate",
    "reclaimPolicy": "Retain",
}


def fake_volume(index: int) -> dict[str, Any]:
    """A hostPath volume nothing ever mounts: kwok runs no containers."""
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": f"kwok-pv-{index:02d}"},
        "spec": {
            "capacity": {"storage": "100Gi"},
            "accessModes": ["ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "standard",
            "hostPath": {"path": f"/nonexistent/lading-kwok-pv-{index:02d}"},
        },
    }


def fake_node(name: str) -> dict[str, Any]:
    key, value = KWOK_NODE_ANNOTATION
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {key: value, "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
            },
        },
    }


def node_ready(node: dict[str, Any] | None) -> bool:
    if node is None:
        return False
    conditions = node.get("status", {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)

