"""Pure parts of the install engine: apply order, prune candidates, readiness, drift comparison,
conflict parsing and the ChangeSet. No servers."""

from __future__ import annotations

from typing import Any

import pytest

from runner.common.kube import KubeError, Resource
from runner.common.objects import ObjectId
from runner.install.apply import conflict_managers, describe_error, may_take_over
from runner.install.drift import compare, differences, owns
from runner.install.engine import ChangeSet
from runner.install.order import apply_order, prune_order_key, stage_of
from runner.install.prune import Member, candidates
from runner.install.resolve import Planned
from runner.install.wait import status

CM = Resource("", "v1", "ConfigMap", "configmaps", True)


def oid(kind: str, name: str, namespace: str = "", group: str = "") -> ObjectId:
    return ObjectId(group, "v1", kind, namespace, name)


def planned(o: ObjectId) -> Planned:
    return Planned({}, o, CM, stage_of(o, bool(o.namespace)), "test", False, False)


def test_apply_order_puts_crds_and_namespaces_first_and_admission_last() -> None:
    ids = [
        oid("ValidatingWebhookConfiguration", "hook", group="admissionregistration.k8s.io"),
        oid("Deployment", "web", "shop", "apps"),
        oid("ServiceAccount", "web", "shop"),
        oid("ClusterRole", "reader", group="rbac.authorization.k8s.io"),
        oid("CustomResourceDefinition", "widgets.x.io", group="apiextensions.k8s.io"),
        oid("Namespace", "shop"),
        oid("ValidatingAdmissionPolicy", "policy", group="admissionregistration.k8s.io"),
    ]
    ordered = [p.oid.kind for p in apply_order(planned(o) for o in ids)]
    assert ordered == ["CustomResourceDefinition", "Namespace", "ClusterRole", "ServiceAccount",
                       "Deployment", "ValidatingAdmissionPolicy",
                       "ValidatingWebhookConfiguration"]


def test_prune_candidates_are_members_absent_from_the_artifact_workloads_first() -> None:
    members = [Member(o, CM, {"metadata": {"uid": o.name}}) for o in (
        oid("Namespace", "old"), oid("ConfigMap", "gone", "shop"),
        oid("ConfigMap", "kept", "shop"),
        oid("CustomResourceDefinition", "w.x.io", group="apiextensions.k8s.io"))]
    keep = {oid("ConfigMap", "kept", "shop").identity()}
    doomed = candidates(members, keep)
    assert [m.oid.name for m in doomed] == ["gone", "old", "w.x.io"]
    assert prune_order_key(doomed[0].oid) < prune_order_key(doomed[-1].oid)


@pytest.mark.parametrize(("obj", "state", "reason"), [
    ({"kind": "DaemonSet", "metadata": {"generation": 1},
      "status": {"observedGeneration": 1, "desiredNumberScheduled": 3,
                 "updatedNumberScheduled": 3, "numberAvailable": 2}},
     "InProgress", "2/3 pods available"),
    ({"kind": "DaemonSet", "metadata": {"generation": 1},
      "status": {"observedGeneration": 1, "desiredNumberScheduled": 2,
                 "updatedNumberScheduled": 2, "numberAvailable": 2}},
     "Current", "2 pods available"),
    ({"kind": "Job", "status": {"conditions": [
        {"type": "Failed", "status": "True", "message": "BackoffLimitExceeded"}]}},
     "Failed", "BackoffLimitExceeded"),
    ({"kind": "Job", "status": {"conditions": [{"type": "Complete", "status": "True"}]}},
     "Current", "complete"),
    ({"kind": "Service", "spec": {"type": "LoadBalancer"}, "status": {}},
     "InProgress", "waiting for a load balancer"),
    ({"kind": "Service", "spec": {"type": "LoadBalancer"},
      "status": {"loadBalancer": {"ingress": [{"ip": "10.0.0.1"}]}}},
     "Current", "has an address"),
    ({"kind": "CustomResourceDefinition", "status": {"conditions": [
        {"type": "NamesAccepted", "status": "False", "message": "plural already in use"}]}},
     "Failed", "plural already in use"),
    ({"kind": "CustomResourceDefinition", "status": {"conditions": [
        {"type": "Established", "status": "True"}]}}, "Current", "established"),
    ({"kind": "Deployment", "metadata": {"generation": 2},
      "status": {"observedGeneration": 1}},
     "InProgress", "controller has not observed generation 2 yet"),
    ({"kind": "ConfigMap"}, "Current", "no readiness to wait for"),
])
def test_status_of_each_kind(obj: dict[str, Any], state: str, reason: str) -> None:
    assert status(obj) == (state, reason)


def test_drift_matches_named_list_items_and_writes_the_server_s_path_notation() -> None:
    want = {"kind": "Deployment", "metadata": {"name": "web"}, "spec": {"template": {"spec": {
        "containers": [{"name": "app", "image": "app:2"}, {"name": "side", "image": "s:1"}]}}}}
    live = {"kind": "Deployment", "metadata": {"name": "web"}, "spec": {"template": {"spec": {
        "containers": [{"name": "side", "image": "s:1"}, {"name": "app", "image": "app:1"}]}}}}
    [(_, w, h)] = differences(want, live)
    assert (w, h) == ("app:2", "app:1")
    report = compare(want, live, "lading", "apps/v1/Deployment/shop/web")
    assert report.state == "drifted"
    assert [f.path for f in report.fields] == [
        '.spec.template.spec.containers[name="app"].image']
    assert owns({"f:spec": {"f:replicas": {}}}, [("f", "spec"), ("f", "replicas")])
    assert not owns({"f:spec": {"f:replicas": {}}}, [("f", "spec"), ("f", "template")])


def test_drift_ignores_fields_another_manager_owns_on_purpose_and_hides_secret_values() -> None:
    want = {"kind": "Deployment", "metadata": {"name": "web"}, "spec": {"replicas": 2}}
    live = {"kind": "Deployment", "spec": {"replicas": 5}, "metadata": {
        "name": "web", "managedFields": [{"manager": "hpa", "operation": "Update",
                                          "subresource": "scale",
                                          "fieldsV1": {"f:spec": {"f:replicas": {}}}}]}}
    assert compare(want, live, "lading", "x").state == "in-sync"
    secret_want = {"kind": "Secret", "metadata": {"name": "s"}, "data": {"pw": "bmV3"}}
    secret_live = {"kind": "Secret", "metadata": {"name": "s"}, "data": {"pw": "b2xk"}}
    report = compare(secret_want, secret_live, "lading", "x")
    assert report.fields[0].want == report.fields[0].have == "(hidden)"
    assert "bmV3" not in (report.diff or "")
    assert "b2xk" not in (report.diff or "")


def test_conflicts_name_each_manager_and_its_fields() -> None:
    error = KubeError(409, "Conflict", "Apply failed with 2 conflicts", [
        {"message": 'conflict with "kubectl-client-side-apply" using v1',
         "field": ".data.color"},
        {"message": 'conflict with "helm" using v1', "field": ".data.size"},
        {"message": 'conflict with "helm" using v1', "field": ".data.mode"}], {})
    assert conflict_managers(error) == {"kubectl-client-side-apply": [".data.color"],
                                        "helm": [".data.size", ".data.mode"]}
    text = describe_error(error)
    assert "helm owns .data.mode, .data.size" in text
    assert "kubectl-client-side-apply owns .data.color" in text
    assert may_take_over(["helm"], ["helm"])
    assert not may_take_over(["helm", "kubectl-client-side-apply"], ["helm"])


def test_a_change_set_keeps_the_last_word_about_each_object_and_counts_actions() -> None:
    changes = ChangeSet()
    web, cm = oid("Deployment", "web", "shop", "apps"), oid("ConfigMap", "c", "shop")
    changes.record(web, "created", "namespaced")
    changes.record(cm, "unchanged", "namespaced")
    changes.record(web, "failed", "namespaced", "InProgress: 0/1 replicas available")
    assert changes.summary() == {"created": 0, "configured": 0, "unchanged": 1, "deleted": 0,
                                 "skipped": 0, "failed": 1}
    assert [c.id for c in changes.changes()] == [str(cm), str(web)]
    assert changes.with_action("failed")[0].error == "InProgress: 0/1 replicas available"
