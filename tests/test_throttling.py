"""API Priority and Fairness on the real kube-apiserver: a deployer whose priority level has
almost no seats and rejects instead of queueing gets 429s; lading backs off (Retry-After, a
shrinking window of requests in flight) and the install still completes."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from plans.install import InstallPlan
from runner.common.kube import KubeClient, Resource, Target, Window, retry_after
from runner.dev.endpoints import ClusterEndpoint
from runner.install.install import install
from tests.artifacts import config_map, publish, unique

pytestmark = pytest.mark.cluster

APF = "flowcontrol.apiserver.k8s.io"
LEVELS = Resource(APF, "v1", "PriorityLevelConfiguration", "prioritylevelconfigurations", False)
SCHEMAS = Resource(APF, "v1", "FlowSchema", "flowschemas", False)
ACCOUNTS = Resource("", "v1", "ServiceAccount", "serviceaccounts", True)
BINDINGS = Resource("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding",
                    "clusterrolebindings", False)


def test_retry_after_follows_the_server_and_backs_off_without_one() -> None:
    assert 2.0 <= retry_after("2", 0) <= 2.5
    assert 30.0 <= retry_after("3600", 0) <= 37.5
    assert 0.25 <= retry_after(None, 0) <= 0.32
    assert 1.0 <= retry_after("soon", 2) <= 1.25


def test_the_window_halves_on_throttling_and_grows_back_one_at_a_time() -> None:
    window = Window(8)
    with window.slot() as slot:
        slot.throttled = True
    assert window.limit == 4
    for _ in range(4):
        with window.slot():
            pass
    assert window.limit == 5


@pytest.fixture
def throttled_deployer(kube: KubeClient, ns: str, control_plane: ClusterEndpoint,
                       tmp_path: Path) -> Iterator[Target]:
    """A ServiceAccount allowed everything by RBAC, but whose requests land in a priority
    level with one seat share that rejects rather than queues."""
    name = unique("throttled")
    kube.apply(ACCOUNTS, {"apiVersion": "v1", "kind": "ServiceAccount",
                          "metadata": {"name": name, "namespace": ns}}, field_manager="test")
    kube.apply(BINDINGS, {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": "cluster-admin"},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": ns}]},
        field_manager="test")
    kube.apply(LEVELS, {
        "apiVersion": f"{APF}/v1", "kind": "PriorityLevelConfiguration",
        "metadata": {"name": name},
        "spec": {"type": "Limited", "limited": {
            "nominalConcurrencyShares": 1, "lendablePercent": 0,
            "limitResponse": {"type": "Reject"}}}}, field_manager="test")
    kube.apply(SCHEMAS, {
        "apiVersion": f"{APF}/v1", "kind": "FlowSchema", "metadata": {"name": name},
        "spec": {
            "priorityLevelConfiguration": {"name": name}, "matchingPrecedence": 200,
            "distinguisherMethod": {"type": "ByUser"},
            "rules": [{
                "subjects": [{"kind": "ServiceAccount",
                              "serviceAccount": {"name": name, "namespace": ns}}],
                "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"],
                                   "namespaces": ["*"], "clusterScope": True}],
                "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}]}]}},
        field_manager="test")
    token: Any = kube.request(
        "POST", ACCOUNTS.object_path(ns, name) + "/token",
        body={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
              "spec": {"expirationSeconds": 3600}})
    config = yaml.safe_load(Path(control_plane.kubeconfig).read_text())
    ca = tmp_path / "ca.crt"
    ca.write_bytes(base64.b64decode(config["clusters"][0]["cluster"]["certificate-authority-data"]))
    yield Target(server=control_plane.server, ca_file=str(ca), token=token["status"]["token"])
    for resource, namespace in ((SCHEMAS, None), (LEVELS, None), (BINDINGS, None)):
        kube.delete(resource, namespace, name)


def test_an_install_throttled_by_priority_and_fairness_backs_off_and_completes(
    tmp_path: Path, ns: str, kube: KubeClient, throttled_deployer: Target,
) -> None:
    objects = [config_map(f"c{i:03d}", ns, {"i": str(i), "pad": "x" * 2000}) for i in range(120)]
    ref = publish(objects, f"oci-layout:{tmp_path / 'a'}:v1")
    plan = InstallPlan.model_validate({"artifact": {"ref": ref}, "namespace": ns,
                                       "inventory": "app", "wait": False, "concurrency": 48})
    client = KubeClient(throttled_deployer, pool_size=48)
    try:
        result = install(plan, client=client)
    finally:
        client.close()

    assert result.status == "succeeded"
    assert result.summary["created"] == 120
    assert client.throttled > 0, "the priority level never rejected a request: no test"
    assert len(kube.list(Resource("", "v1", "ConfigMap", "configmaps", True), ns)) >= 120
