"""docs/kubernetes/runner-job.yaml: a Job that runs the InstallPlan of a ConfigMap as a
ServiceAccount with a namespaced Role. Its RBAC is applied to the test cluster and an install
runs with a token of that ServiceAccount (what the Job's pod gets mounted, through the
TokenRequest API): with exactly those rights it installs, re-installs and prunes; without any one
of them it fails naming the verb and resource it was refused."""

from __future__ import annotations

import base64
import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from plans.install import InstallPlan
from runner.common.kube import KubeClient, Resource
from runner.dev.endpoints import ClusterEndpoint, RegistryEndpoint
from tests.artifacts import config_map, publish, unique
from tests.clirun import Ran, lading

ROOT = Path(__file__).parent.parent
JOB_FILE = ROOT / "docs" / "kubernetes" / "runner-job.yaml"
Obj = dict[str, Any]

RESOURCES = {
    "ServiceAccount": Resource("", "v1", "ServiceAccount", "serviceaccounts", True),
    "Role": Resource("rbac.authorization.k8s.io", "v1", "Role", "roles", True),
    "RoleBinding": Resource("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", True),
}
SERVICE = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "hello"},
           "spec": {"selector": {"app": "hello"}, "ports": [{"port": 80, "targetPort": 8080}]}}


def _documents() -> dict[str, Obj]:
    docs = [d for d in yaml.safe_load_all(JOB_FILE.read_text()) if d]
    by_kind = {d["kind"]: d for d in docs}
    assert len(by_kind) == len(docs), "one object of each kind"
    return by_kind


def _plan_of(docs: dict[str, Obj]) -> tuple[str, Obj]:
    job = docs["Job"]["spec"]["template"]["spec"]
    args = job["containers"][0]["args"]
    path = Path(args[args.index("-f") + 1])
    mount = next(m for m in job["containers"][0]["volumeMounts"]
                 if path.is_relative_to(m["mountPath"]))
    volume = next(v for v in job["volumes"] if v["name"] == mount["name"])
    assert volume["configMap"]["name"] == docs["ConfigMap"]["metadata"]["name"]
    key = str(path.relative_to(mount["mountPath"]))
    return key, yaml.safe_load(docs["ConfigMap"]["data"][key])


def test_the_job_runs_its_configmaps_plan_in_cluster_as_its_service_account() -> None:
    docs = _documents()
    namespace = docs["ServiceAccount"]["metadata"]["namespace"]
    assert {d["metadata"]["namespace"] for d in docs.values()} == {namespace}
    pod = docs["Job"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == docs["ServiceAccount"]["metadata"]["name"]
    assert docs["RoleBinding"]["roleRef"]["name"] == docs["Role"]["metadata"]["name"]
    assert docs["RoleBinding"]["subjects"] == [
        {"kind": "ServiceAccount", "name": pod["serviceAccountName"], "namespace": namespace}
    ]
    _key, document = _plan_of(docs)
    plan = InstallPlan.model_validate(document)
    assert plan.target.in_cluster
    assert plan.namespace == namespace
    assert not plan.create_namespace  # a cluster-wide right the Role does not give
    container = pod["containers"][0]
    assert "@sha256:" in container["image"]
    # The image's own user (Dockerfile.runner), unprivileged, on a read-only root.
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert "USER 10001:10001" in (ROOT / "Dockerfile.runner").read_text()
    assert pod["securityContext"]["runAsUser"] == 10001
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False


def _install_as_the_service_account(
    kube: KubeClient, control_plane: ClusterEndpoint, ns: str, rules: list[Obj],
    refs: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> list[Ran]:
    """Apply the Job's ServiceAccount, Role (with `rules`) and RoleBinding into `ns`, then run
    its plan once per ref with a token of the ServiceAccount; stop at the first failure."""
    docs = _documents()
    for kind, resource in RESOURCES.items():
        obj = copy.deepcopy(docs[kind])
        obj["metadata"]["namespace"] = ns
        for subject in obj.get("subjects", []):
            subject["namespace"] = ns
        if kind == "Role":
            obj["rules"] = rules
        kube.apply(resource, obj, field_manager="test-setup")
    account = docs["ServiceAccount"]["metadata"]["name"]
    token = kube.request(
        "POST", f"/api/v1/namespaces/{ns}/serviceaccounts/{account}/token",
        body={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
              "spec": {"expirationSeconds": 600}},
    )["status"]["token"]
    kubeconfig = yaml.safe_load(control_plane.kubeconfig.read_text())
    cluster = kubeconfig["clusters"][0]["cluster"]
    ca_file = tmp_path / "ca.crt"
    ca_file.write_bytes(base64.b64decode(cluster["certificate-authority-data"]))
    _key, plan = _plan_of(docs)
    plan["namespace"] = ns
    # What in_cluster reads from the pod (API server, CA, token), given directly.
    plan["target"] = {"server": cluster["server"], "ca_file": str(ca_file), "token": token}
    runs = []
    for ref in refs:
        plan["artifact"]["ref"] = ref
        ran = lading(capsys, monkeypatch, "run", "-f", "-", stdin=yaml.safe_dump(plan))
        runs.append(ran)
        if ran.code != 0:
            break
    return runs


def _artifacts(registry: RegistryEndpoint) -> list[str]:
    """The example's artifact (a ConfigMap and a Service), then a newer one without the Service."""
    repo = f"{registry.host}/{unique('job')}/hello"
    return [publish([config_map("greeting", None, {"message": "hello"}), SERVICE], f"{repo}:v1"),
            publish([config_map("greeting", None, {"message": "bye"})], f"{repo}:v2")]


@pytest.mark.cluster
@pytest.mark.registry
def test_an_install_succeeds_with_exactly_the_rights_of_the_job(
    kube: KubeClient, control_plane: ClusterEndpoint, registry: RegistryEndpoint, ns: str,
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    first, second = _artifacts(registry)
    runs = _install_as_the_service_account(
        kube, control_plane, ns, _documents()["Role"]["rules"], [first, first, second],
        tmp_path, capsys, monkeypatch,
    )
    assert [r.code for r in runs] == [0, 0, 0], runs[-1].err
    summaries = [yaml.safe_load(r.out)["summary"] for r in runs]
    assert summaries[0]["created"] == 2
    assert summaries[1]["unchanged"] == 2
    assert (summaries[2]["configured"], summaries[2]["deleted"]) == (1, 1)  # pruned the Service
    services = Resource("", "v1", "Service", "services", True)
    assert kube.get(services, ns, "hello") is None


@pytest.mark.cluster
@pytest.mark.registry
@pytest.mark.parametrize(
    ("resource", "verb"),
    [("services", "patch"), ("services", "delete"), ("secrets", "create"), ("leases", "create")],
)
def test_an_install_without_one_of_those_rights_fails_naming_it(
    resource: str, verb: str, kube: KubeClient, control_plane: ClusterEndpoint,
    registry: RegistryEndpoint, ns: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rules = copy.deepcopy(_documents()["Role"]["rules"])
    for rule in rules:
        if resource in rule["resources"] and verb in rule["verbs"]:
            others = [r for r in rule["resources"] if r != resource]
            if others:  # keep the right for the rule's other kinds
                rules.append({**rule, "resources": others})
            rule["resources"], rule["verbs"] = [resource], [v for v in rule["verbs"] if v != verb]
    rules = [rule for rule in rules if rule["verbs"]]
    runs = _install_as_the_service_account(
        kube, control_plane, ns, rules, _artifacts(registry), tmp_path, capsys, monkeypatch
    )
    failed = runs[-1]
    assert failed.code != 0
    said = failed.err + failed.out
    pattern = rf'cannot {verb} resource \\?"{resource}\\?"'
    assert re.search(pattern, said), said[-2000:]
    assert f"system:serviceaccount:{ns}:lading-installer" in said
