"""The install runner against a real kube-apiserver (and the kwok rollout cluster where
workloads must progress). Each test works in its own namespace."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from plans.install import InstallPlan
from runner.common.errors import InputError
from runner.common.kube import KubeClient, KubeError, Resource, Target, window_for
from runner.dev.endpoints import CRASH_LOOP, FAULT_ANNOTATION, ClusterEndpoint
from runner.install import inventory as inv
from runner.install.diff import diff
from runner.install.install import InstallFailed, _open_the_window, _Reaching, install
from runner.install.lease import held
from runner.install.rollback import rollback
from runner.install.uninstall import uninstall
from tests.artifacts import (
    config_map,
    deployment,
    namespace_obj,
    publish,
    unique,
    widget_crd,
)
from tests.faultproxy import FaultProxy
from tests.kubeconfigs import rewrite_server

pytestmark = pytest.mark.cluster

CONFIGMAPS = Resource("", "v1", "ConfigMap", "configmaps", True)
DEPLOYMENTS = Resource("apps", "v1", "Deployment", "deployments", True)
NAMESPACES = Resource("", "v1", "Namespace", "namespaces", False)


def make_plan(ref: str, ns: str, cluster: ClusterEndpoint, **fields: Any) -> InstallPlan:
    document: dict[str, Any] = {
        "artifact": {"ref": ref},
        "target": {"kubeconfig": str(cluster.kubeconfig)},
        "namespace": ns,
        "inventory": "app",
        "wait": False,
        **fields,
    }
    return InstallPlan.model_validate(document)


def layout(tmp_path: Path, tag: str) -> str:
    return f"oci-layout:{tmp_path / 'artifacts'}:{tag}"


def actions(result: Any) -> dict[str, str]:
    return {c.id: c.action for c in result.changes}


def test_second_install_of_same_digest_is_unchanged_and_moves_no_resource_version(
    tmp_path: Path, ns: str, kube: KubeClient, control_plane: ClusterEndpoint
) -> None:
    ref = publish([config_map("a", ns, {"k": "1"}), config_map("b", None, {"k": "2"})],
                  layout(tmp_path, "v1"))
    first = install(make_plan(ref, ns, control_plane))
    assert first.status == "succeeded"
    assert first.summary["created"] == 2
    before = {n: kube.get(CONFIGMAPS, ns, n)["metadata"]["resourceVersion"] for n in "ab"}

    messages: list[str] = []
    second = install(make_plan(ref, ns, control_plane), progress=messages.append)

    assert set(actions(second).values()) == {"unchanged"}
    # Certainly-unchanged objects are decided from one LIST, without a dry-run per object.
    assert "preflight: 2 objects unchanged, server-side dry-run of 0" in messages
    assert second.summary["unchanged"] == 2
    after = {n: kube.get(CONFIGMAPS, ns, n)["metadata"]["resourceVersion"] for n in "ab"}
    assert after == before
    assert second.digest == ref.rsplit("@", 1)[1]


def test_a_secret_given_as_string_data_is_proved_unchanged_from_the_list(
    tmp_path: Path, ns: str, kube: KubeClient, control_plane: ClusterEndpoint
) -> None:
    creds = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds", "namespace": ns},
             "stringData": {"token": "s3cret-value"}}
    ref = publish([creds], layout(tmp_path, "v1"))
    install(make_plan(ref, ns, control_plane))
    secrets = Resource("", "v1", "Secret", "secrets", True)
    before = kube.get(secrets, ns, "creds")["metadata"]["resourceVersion"]

    messages: list[str] = []
    again = install(make_plan(ref, ns, control_plane), progress=messages.append)

    assert actions(again) == {f"/v1/Secret/{ns}/creds": "unchanged"}
    assert "preflight: 1 objects unchanged, server-side dry-run of 0" in messages
    assert kube.get(secrets, ns, "creds")["metadata"]["resourceVersion"] == before


def test_edited_object_is_configured_and_dropped_object_is_pruned_but_nothing_else(
    tmp_path: Path, ns: str, kube: KubeClient, control_plane: ClusterEndpoint
) -> None:
    v1 = publish([config_map("keep", ns, {"k": "1"}), config_map("drop", ns, {"k": "1"})],
                 layout(tmp_path, "v1"))
    install(make_plan(v1, ns, control_plane))
    # Neighbours: an object nobody installed, and one belonging to another inventory.
    kube.apply(CONFIGMAPS, config_map("outsider", ns, {"k": "x"}), field_manager="someone")
    other_id = inv.applyset_id(inv.parent_name("other"), ns)
    kube.apply(CONFIGMAPS, inv.label_member(config_map("neighbour", ns, {"k": "x"}), other_id),
               field_manager="lading")

    v2 = publish([config_map("keep", ns, {"k": "2"})], layout(tmp_path, "v2"))
    result = install(make_plan(v2, ns, control_plane))

    assert actions(result) == {f"/v1/ConfigMap/{ns}/keep": "configured",
                               f"/v1/ConfigMap/{ns}/drop": "deleted"}
    assert kube.get(CONFIGMAPS, ns, "keep")["data"] == {"k": "2"}
    assert kube.get(CONFIGMAPS, ns, "drop") is None
    assert kube.get(CONFIGMAPS, ns, "outsider") is not None
    assert kube.get(CONFIGMAPS, ns, "neighbour") is not None


def test_field_owned_by_another_manager_conflicts_naming_it_and_force_takes_it(
    tmp_path: Path, ns: str, kube: KubeClient, control_plane: ClusterEndpoint
) -> None:
    kube.apply(CONFIGMAPS, config_map("shared", ns, {"color": "red"}), field_manager="kubectl")
    ref = publish([config_map("shared", ns, {"color": "blue"})], layout(tmp_path, "v1"))

    with pytest.raises(InstallFailed) as failure:
        install(make_plan(ref, ns, control_plane))
    message = str(failure.value)
    assert "kubectl" in message
    assert ".data.color" in message
    assert failure.value.exit_code == 1
    assert kube.get(CONFIGMAPS, ns, "shared")["data"] == {"color": "red"}

    result = install(make_plan(ref, ns, control_plane, force_conflicts=True))
    assert result.status == "succeeded"
    assert kube.get(CONFIGMAPS, ns, "shared")["data"] == {"color": "blue"}


def test_take_ownership_takes_fields_only_from_the_named_manager(
    tmp_path: Path, ns: str, kube: KubeClient, control_plane: ClusterEndpoint
) -> None:
    kube.apply(CONFIGMAPS, config_map("a", ns, {"x": "helm"}), field_manager="helm")
    kube.apply(CONFIGMAPS, config_map("b", ns, {"x": "other"}), field_manager="other-tool")
    ref = publish([config_map("a", ns, {"x": "ours"})], layout(tmp_path, "a"))
    result = install(make_plan(ref, ns, control_plane, take_ownership=["helm"]))
    assert result.status == "succeeded"
    assert kube.get(CONFIGMAPS, ns, "a")["data"] == {"x": "ours"}

    ref_b = publish([config_map("b", ns, {"x": "ours"})], layout(tmp_path, "b"))
    with pytest.raises(InstallFailed, match="other-tool"):
        install(make_plan(ref_b, ns, control_plane, inventory="b", take_ownership=["helm"]))


def test_immutable_change_fails_clearly_and_recreates_when_asked(
    tmp_path: Path, ns: str, kube: KubeClient, control_plane: ClusterEndpoint
) -> None:
    v1 = publish([config_map("frozen", ns, {"k": "1"}, immutable=True)], layout(tmp_path, "v1"))
    install(make_plan(v1, ns, control_plane))
    uid = kube.get(CONFIGMAPS, ns, "frozen")["metadata"]["uid"]
    v2 = publish([config_map("frozen", ns, {"k": "2"}, immutable=True)], layout(tmp_path, "v2"))

    with pytest.raises(InstallFailed) as failure:
        install(make_plan(v2, ns, control_plane))
    assert "immutable" in str(failure.value)
    assert "--recreate" in str(failure.value)
    assert kube.get(CONFIGMAPS, ns, "frozen")["data"] == {"k": "1"}

    result = install(make_plan(v2, ns, control_plane, recreate=["ConfigMap/frozen"]))
    assert result.status == "succeeded"
    recreated = kube.get(CONFIGMAPS, ns, "frozen")
    assert recreated["data"] == {"k": "2"}
    assert recreated["metadata"]["uid"] != uid


def test_crd_and_its_custom_resources_install_in_one_go(
    tmp_path: Path, ns: str, kube: KubeClient, control_plane: ClusterEndpoint
) -> None:
    group = f"{unique('g')}.example.com"
    widget = {"apiVersion": f"{group}/v1", "kind": "Widget",
              "metadata": {"name": "w1", "namespace": ns}, "spec": {"size": 3}}
    ref = publish([widget_crd(group), widget], layout(tmp_path, "v1"))

    result = install(make_plan(ref, ns, control_plane))

    assert result.summary["created"] == 2
    widgets = Resource(group, "v1", "Widget", "widgets", True)
    assert kube.get(widgets, ns, "w1")["spec"] == {"size": 3}
    stages = {c.id.split("/")[2]: c.stage for c in result.changes}
    assert stages == {"CustomResourceDefinition": "crds-namespaces", "Widget": "namespaced"}


def test_schema_error_anywhere_means_nothing_is_written(
    tmp_path: Path, ns: str, kube: KubeClient, control_plane: ClusterEndpoint
) -> None:
    broken = deployment("web", ns)
    broken["spec"]["replicas"] = "two"
    ref = publish([config_map("first", ns, {"k": "1"}), broken,
                   config_map("last", ns, {"k": "1"})], layout(tmp_path, "v1"))

    with pytest.raises(InstallFailed) as failure:
        install(make_plan(ref, ns, control_plane))

    assert failure.value.exit_code == 2
    assert "Deployment/web" in str(failure.value)
    assert "nothing was written" in str(failure.value)
    assert kube.get(CONFIGMAPS, ns, "first") is None
    assert kube.get(CONFIGMAPS, ns, "last") is None
    assert not inv.read(kube, "app", ns).exists


def test_unknown_field_is_rejected_before_anything_is_written(
    tmp_path: Path, ns: str, kube: KubeClient, control_plane: ClusterEndpoint
) -> None:
    typo = config_map("typo", ns, {"k": "1"})
    typo["dataa"] = {"k": "2"}
    ref = publish([config_map("fine", ns, {"k": "1"}), typo], layout(tmp_path, "v1"))
    with pytest.raises(InstallFailed, match="dataa"):
        install(make_plan(ref, ns, control_plane))
    assert kube.get(CONFIGMAPS, ns, "fine") is None


def test_an_unknown_field_deep_in_a_built_in_kind_is_rejected_before_anything_is_written(
    tmp_path: Path, ns: str, kube: KubeClient, control_plane: ClusterEndpoint
) -> None:
    typo = deployment("web", ns)
    typo["spec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Always"
    ref = publish([config_map("fine", ns, {"k": "1"}), typo], layout(tmp_path, "v1"))
    with pytest.raises(InstallFailed, match="imagePullPolcy") as failure:
        install(make_plan(ref, ns, control_plane))
    assert "Deployment/web" in str(failure.value)
    assert kube.get(CONFIGMAPS, ns, "fine") is None


def test_an_unknown_field_deep_in_a_custom_resource_is_rejected_before_anything_is_written(
    tmp_path: Path, ns: str, kube: KubeClient, control_plane: ClusterEndpoint
) -> None:
    # The CRD exists before the install, so the Widget is checked by the dry-run wave.
    group = f"{unique('g')}.example.com"
    crd = widget_crd(group)
    install(make_plan(publish([crd], layout(tmp_path, "v1")), ns, control_plane))
    typo = {"apiVersion": f"{group}/v1", "kind": "Widget",
            "metadata": {"name": "w1", "namespace": ns}, "spec": {"size": 3, "colour": "red"}}
    ref = publish([crd, config_map("fine", ns, {"k": "1"}), typo], layout(tmp_path, "v2"))
    with pytest.raises(InstallFailed, match="colour") as failure:
        install(make_plan(ref, ns, control_plane))
    assert "Widget/w1" in str(failure.value)
    assert kube.get(CONFIGMAPS, ns, "fine") is None
    assert kube.get(Resource(group, "v1", "Widget", "widgets", True), ns, "w1") is None


def test_tampered_blob_is_refused_before_anything_is_written(
    tmp_path: Path, ns: str, kube: KubeClient, control_plane: ClusterEndpoint
) -> None:
    ref = publish([config_map("x", ns, {"k": "1"})], layout(tmp_path, "v1"))
    blobs = tmp_path / "artifacts" / "blobs" / "sha256"
    layer = max(blobs.iterdir(), key=lambda p: p.stat().st_size if p.name else 0)
    # Flip one byte of the largest blob (the content layer).
    data = bytearray(layer.read_bytes())
    data[len(data) // 2] ^= 0xFF
    layer.write_bytes(bytes(data))

    with pytest.raises(InputError, match="does not match its digest"):
        install(make_plan(ref, ns, control_plane))
    assert kube.get(CONFIGMAPS, ns, "x") is None


def test_tag_is_refused_unless_the_plan_allows_it(
    tmp_path: Path, ns: str, control_plane: ClusterEndpoint
) -> None:
    pinned = publish([config_map("x", ns, {"k": "1"})], layout(tmp_path, "v1"))
    tagged = layout(tmp_path, "v1")
    with pytest.raises(InputError, match="not pinned to a digest"):
        install(make_plan(tagged, ns, control_plane))
    result = install(make_plan(tagged, ns, control_plane,
                               artifact={"ref": tagged, "allow_tag": True}))
    assert result.ref == pinned


def test_empty_artifact_does_not_prune_everything_unless_told(
    tmp_path: Path, ns: str, kube: KubeClient, control_plane: ClusterEndpoint
) -> None:
    install(make_plan(publish([config_map("x", ns, {"k": "1"})], layout(tmp_path, "v1")), ns,
                      control_plane))
    empty = publish([], layout(tmp_path, "empty"))
    with pytest.raises(InputError, match="prune everything"):
        install(make_plan(empty, ns, control_plane))
    assert kube.get(CONFIGMAPS, ns, "x") is not None
    result = install(make_plan(empty, ns, control_plane, allow_empty=True))
    assert actions(result) == {f"/v1/ConfigMap/{ns}/x": "deleted"}


def test_dry_run_reports_changes_and_writes_nothing(
    tmp_path: Path, ns: str, kube: KubeClient, control_plane: ClusterEndpoint
) -> None:
    v1 = publish([config_map("a", ns, {"k": "1"}), config_map("b", ns, {"k": "1"})],
                 layout(tmp_path, "v1"))
    install(make_plan(v1, ns, control_plane))
    v2 = publish([config_map("a", ns, {"k": "2"}), config_map("c", ns, {"k": "1"})],
                 layout(tmp_path, "v2"))

    result = install(make_plan(v2, ns, control_plane, dry_run=True))

    assert result.dry_run
    assert actions(result) == {f"/v1/ConfigMap/{ns}/a": "configured",
                               f"/v1/ConfigMap/{ns}/b": "deleted",
                               f"/v1/ConfigMap/{ns}/c": "created"}
    assert kube.get(CONFIGMAPS, ns, "a")["data"] == {"k": "1"}
    assert kube.get(CONFIGMAPS, ns, "b") is not None
    assert kube.get(CONFIGMAPS, ns, "c") is None
    assert inv.read(kube, "app", ns).digest == v1.rsplit("@", 1)[1]


def test_namespace_is_created_when_asked_and_its_objects_land_in_it(
    tmp_path: Path, kube: KubeClient, control_plane: ClusterEndpoint
) -> None:
    fresh = unique("fresh")
    ref = publish([config_map("x", None, {"k": "1"})], layout(tmp_path, "v1"))
    with pytest.raises(InputError, match="does not exist"):
        install(make_plan(ref, fresh, control_plane))
    try:
        result = install(make_plan(ref, fresh, control_plane, create_namespace=True))
        assert result.status == "succeeded"
        assert kube.get(CONFIGMAPS, fresh, "x") is not None
    finally:
        kube.delete(NAMESPACES, None, fresh)


def test_artifact_namespace_is_created_first_and_reported_created(
    tmp_path: Path, kube: KubeClient, control_plane: ClusterEndpoint
) -> None:
    space = unique("own")
    ref = publish([namespace_obj(space), config_map("x", space, {"k": "1"})],
                  layout(tmp_path, "v1"))
    try:
        result = install(make_plan(ref, space, control_plane))
        assert actions(result) == {f"/v1/Namespace//{space}": "created",
                                   f"/v1/ConfigMap/{space}/x": "created"}
    finally:
        kube.delete(NAMESPACES, None, space)


def test_cluster_scoped_object_naming_a_namespace_is_refused(
    tmp_path: Path, ns: str, control_plane: ClusterEndpoint
) -> None:
    bad = namespace_obj(unique("x"))
    bad["metadata"]["namespace"] = "default"
    ref = publish([bad], layout(tmp_path, "v1"))
    with pytest.raises(InputError, match="cluster-scoped"):
        install(make_plan(ref, ns, control_plane))


def test_concurrent_installs_into_one_inventory_wait_for_the_lock(
    tmp_path: Path, ns: str, kube: KubeClient, control_plane: ClusterEndpoint
) -> None:
    ref = publish([config_map("x", ns, {"k": "1"})], layout(tmp_path, "v1"))
    outcome: dict[str, Any] = {}

    def second_install() -> None:
        outcome["result"] = install(make_plan(ref, ns, control_plane))
        outcome["finished"] = time.monotonic()

    with held(kube, "lading-app", ns, timeout=5, progress=lambda _: None):
        worker = threading.Thread(target=second_install)
        worker.start()
        time.sleep(2.0)
        # The other install is blocked on the lease: it has written nothing yet.
        assert kube.get(CONFIGMAPS, ns, "x") is None
        released = time.monotonic()
    worker.join(timeout=60)
    assert outcome["result"].status == "succeeded"
    assert outcome["finished"] >= released
    assert kube.get(CONFIGMAPS, ns, "x") is not None


def test_drift_is_found_after_an_out_of_band_edit_and_not_after_a_no_op(
    tmp_path: Path, ns: str, kube: KubeClient, control_plane: ClusterEndpoint
) -> None:
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds", "namespace": ns},
              "stringData": {"password": "hunter2"}}
    ref = publish([config_map("cfg", ns, {"color": "blue"}), secret,
                   deployment("web", ns, replicas=2)], layout(tmp_path, "v1"))
    install(make_plan(ref, ns, control_plane))
    assert diff(make_plan(ref, ns, control_plane), lambda _: None).in_sync

    # A no-op write by someone else is not drift.
    kube.apply(CONFIGMAPS, config_map("cfg", ns, {"color": "blue"}), field_manager="kubectl")
    assert diff(make_plan(ref, ns, control_plane), lambda _: None).in_sync

    # An HPA-style scale through the scale subresource is owned on purpose: not drift.
    kube.request("PATCH", DEPLOYMENTS.object_path(ns, "web") + "/scale",
                 query={"fieldManager": "kube-controller-manager"},
                 body={"spec": {"replicas": 5}}, content_type="application/merge-patch+json")
    assert diff(make_plan(ref, ns, control_plane), lambda _: None).in_sync

    kube.request("PATCH", CONFIGMAPS.object_path(ns, "cfg"),
                 query={"fieldManager": "kubectl-edit"}, body={"data": {"color": "red"}},
                 content_type="application/merge-patch+json")
    kube.request("PATCH", "/api/v1/namespaces/" + ns + "/secrets/creds",
                 query={"fieldManager": "kubectl-edit"},
                 body={"stringData": {"password": "changed-out-of-band"}},
                 content_type="application/merge-patch+json")
    report = diff(make_plan(ref, ns, control_plane), lambda _: None)

    assert not report.in_sync
    states = {o.id: o for o in report.objects}
    cfg = states[f"/v1/ConfigMap/{ns}/cfg"]
    assert cfg.state == "drifted"
    assert [(f.path, f.want, f.have) for f in cfg.fields] == [(".data.color", "blue", "red")]
    creds = states[f"/v1/Secret/{ns}/creds"]
    assert creds.state == "drifted"
    dumped = json.dumps(report.model_dump())
    assert "hunter2" not in dumped
    assert "changed-out-of-band" not in dumped
    assert "aHVudGVyMg" not in dumped  # nor their base64 forms
    assert states[f"apps/v1/Deployment/{ns}/web"].state == "in-sync"


def test_rollback_restores_the_previous_digest_objects(
    tmp_path: Path, ns: str, kube: KubeClient, control_plane: ClusterEndpoint
) -> None:
    v1 = publish([config_map("app", ns, {"v": "1"}), config_map("only-v1", ns, {"k": "1"})],
                 layout(tmp_path, "v1"))
    v2 = publish([config_map("app", ns, {"v": "2"}), config_map("only-v2", ns, {"k": "1"})],
                 layout(tmp_path, "v2"))
    install(make_plan(v1, ns, control_plane))
    install(make_plan(v2, ns, control_plane))

    result = rollback(make_plan(v2, ns, control_plane), lambda _: None)

    assert result.operation == "rollback"
    assert result.ref == v1
    assert result.previous_digest == v2.rsplit("@", 1)[1]
    assert kube.get(CONFIGMAPS, ns, "app")["data"] == {"v": "1"}
    assert kube.get(CONFIGMAPS, ns, "only-v1") is not None
    assert kube.get(CONFIGMAPS, ns, "only-v2") is None
    assert inv.read(kube, "app", ns).digest == v1.rsplit("@", 1)[1]


def test_rollback_without_history_says_so(
    tmp_path: Path, ns: str, control_plane: ClusterEndpoint
) -> None:
    v1 = publish([config_map("app", ns, {"v": "1"})], layout(tmp_path, "v1"))
    install(make_plan(v1, ns, control_plane))
    with pytest.raises(InputError, match="no earlier digest"):
        rollback(make_plan(v1, ns, control_plane), lambda _: None)


def test_uninstall_deletes_members_and_the_inventory_only(
    tmp_path: Path, ns: str, kube: KubeClient, control_plane: ClusterEndpoint
) -> None:
    ref = publish([config_map("a", ns, {"k": "1"}), config_map("b", ns, {"k": "1"})],
                  layout(tmp_path, "v1"))
    install(make_plan(ref, ns, control_plane))
    kube.apply(CONFIGMAPS, config_map("outsider", ns, {"k": "x"}), field_manager="someone")

    result = uninstall(make_plan(ref, ns, control_plane), progress=lambda _: None)

    assert result.summary == {"deleted": 2, "skipped": 0, "failed": 0}
    assert kube.get(CONFIGMAPS, ns, "a") is None
    assert kube.get(CONFIGMAPS, ns, "outsider") is not None
    assert not inv.read(kube, "app", ns).exists


def test_inventory_is_a_kubectl_compatible_applyset_parent(
    tmp_path: Path, ns: str, kube: KubeClient, control_plane: ClusterEndpoint
) -> None:
    ref = publish([config_map("a", ns, {"k": "1"}), deployment("web", ns)],
                  layout(tmp_path, "v1"))
    install(make_plan(ref, ns, control_plane))
    parent = kube.get(inv.SECRET, ns, "lading-app")
    expected_id = inv.applyset_id("lading-app", ns)
    assert parent["metadata"]["labels"] == {"applyset.kubernetes.io/id": expected_id}
    annotations = parent["metadata"]["annotations"]
    assert annotations["applyset.kubernetes.io/contains-group-kinds"] == "ConfigMap,Deployment.apps"
    assert annotations["applyset.kubernetes.io/tooling"].startswith("lading/v")
    member = kube.get(CONFIGMAPS, ns, "a")
    assert member["metadata"]["labels"]["applyset.kubernetes.io/part-of"] == expected_id


def test_applyset_id_is_the_one_kubectl_computes_for_the_same_parent(
    tmp_path: Path, ns: str, kube: KubeClient, control_plane: ClusterEndpoint
) -> None:
    import subprocess

    from runner.dev.tools import find_kubectl

    manifest = tmp_path / "cm.yaml"
    manifest.write_text(json.dumps(config_map("by-kubectl", ns, {"k": "1"})))
    subprocess.run(
        [str(find_kubectl()), "apply", "--server-side", "--prune", "--applyset=secret/lading-app",
         "-n", ns, "-f", str(manifest), "--kubeconfig", str(control_plane.kubeconfig)],
        env={**os.environ, "KUBECTL_APPLYSET": "true"}, check=True, capture_output=True)

    parent = kube.get(inv.SECRET, ns, "lading-app")
    assert parent["metadata"]["labels"]["applyset.kubernetes.io/id"] == inv.applyset_id(
        "lading-app", ns)
    # And lading refuses to take over kubectl's ApplySet of the same name.
    ref = publish([config_map("a", ns, {"k": "1"})], layout(tmp_path, "v1"))
    with pytest.raises(InputError, match="belongs to kubectl"):
        install(make_plan(ref, ns, control_plane))


@pytest.mark.rollout
def test_deployment_rolls_out_and_a_crash_looping_one_fails_the_wait_with_its_reason(
    tmp_path: Path, ns: str, rollout_cluster: ClusterEndpoint
) -> None:
    good = publish([deployment("web", ns, replicas=2)], layout(tmp_path, "good"))
    result = install(make_plan(good, ns, rollout_cluster, wait=True, timeout="60s"))
    assert result.status == "succeeded"
    assert result.durations["wait"] > 0

    if not rollout_cluster.fault_stages:
        pytest.skip("this cluster has no kwok fault stages to drive a crash loop")
    crashing = publish([deployment("web", ns, replicas=2),
                        deployment("bad", ns, annotations={FAULT_ANNOTATION: CRASH_LOOP})],
                       layout(tmp_path, "bad"))
    with pytest.raises(InstallFailed) as failure:
        install(make_plan(crashing, ns, rollout_cluster, wait=True, timeout="20s"))
    message = str(failure.value)
    assert "Deployment/bad" in message
    assert "CrashLoopBackOff" in message
    assert "Deployment/web" not in message
    assert failure.value.exit_code == 1


def _service_account_token(kube: KubeClient, ns: str, name: str) -> str:
    sa = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": ns}}
    kube.apply(Resource("", "v1", "ServiceAccount", "serviceaccounts", True), sa,
               field_manager="test-setup")
    # A Role of our own: the built-in `admin` is aggregated by kube-controller-manager, which
    # the plain control plane does not run.
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": name, "namespace": ns},
        "rules": [{"apiGroups": ["", "coordination.k8s.io"],
                   "resources": ["configmaps", "secrets", "leases"], "verbs": ["*"]}],
    }
    kube.apply(Resource("rbac.authorization.k8s.io", "v1", "Role", "roles", True), role,
               field_manager="test-setup")
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": name, "namespace": ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": ns}],
    }
    kube.apply(Resource("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", True),
               binding, field_manager="test-setup")
    answer = kube.request(
        "POST", f"/api/v1/namespaces/{ns}/serviceaccounts/{name}/token",
        body={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
              "spec": {"expirationSeconds": 600}})
    return str(answer["status"]["token"])


def test_server_and_token_target_works_and_the_token_never_shows(
    tmp_path: Path, ns: str, kube: KubeClient, control_plane: ClusterEndpoint
) -> None:
    token = _service_account_token(kube, ns, "deployer")
    ca_file = tmp_path / "ca.crt"
    import base64

    import yaml

    config = yaml.safe_load(control_plane.kubeconfig.read_text())
    ca_file.write_bytes(base64.b64decode(config["clusters"][0]["cluster"]
                                         ["certificate-authority-data"]))
    target = {"server": control_plane.server, "ca_file": str(ca_file), "token": token}
    # RBAC bindings reach the authorizer's cache a moment after they are written.
    as_deployer = KubeClient(Target(server=control_plane.server, ca_file=str(ca_file),
                                    token=token))
    deadline = time.monotonic() + 15
    while True:
        try:
            as_deployer.list(CONFIGMAPS, ns)
            break
        except KubeError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    as_deployer.close()
    ref = publish([config_map("via-token", ns, {"k": "1"})], layout(tmp_path, "v1"))
    result = install(InstallPlan.model_validate({
        "artifact": {"ref": ref}, "target": target, "namespace": ns, "wait": False}))
    assert result.status == "succeeded"
    assert token not in result.model_dump_json()

    # A failure (the service account may not touch cluster-scoped objects) keeps it out too.
    forbidden = publish([namespace_obj(unique("nope"))], layout(tmp_path, "v2"))
    with pytest.raises(InstallFailed) as failure:
        install(InstallPlan.model_validate({
            "artifact": {"ref": forbidden}, "target": target, "namespace": ns,
            "wait": False, "inventory": "other"}))
    assert "forbidden" in str(failure.value).lower()
    assert token not in str(failure.value)
    assert token not in failure.value.result.model_dump_json()
    assert token not in repr(InstallPlan.model_validate({"artifact": {"ref": ref},
                                                         "target": target}))


def test_flux_artifact_installs_like_a_lading_one(
    tmp_path: Path, ns: str, kube: KubeClient, control_plane: ClusterEndpoint
) -> None:
    import io
    import tarfile

    from runner.common.digest import sha256_digest
    from runner.common.oci import FLUX_CONFIG, FLUX_CONTENT, MANIFEST, canonical_json
    from runner.common.reference import parse_ref
    from runner.common.store import open_store

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, obj in (("app/a.yaml", config_map("from-flux-a", ns, {"k": "a"})),
                          ("app/b.yml", config_map("from-flux-b", ns, {"k": "b"})),
                          ("app/kustomization.yaml", {"resources": ["a.yaml", "b.yml"]}),
                          ("README.md", None)):
            data = (json.dumps(obj) if obj else "# not yaml\n").encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    layer, config = buffer.getvalue(), b"{}"
    manifest = canonical_json({
        "schemaVersion": 2, "mediaType": MANIFEST,
        "config": {"mediaType": FLUX_CONFIG, "digest": sha256_digest(config), "size": 2},
        "layers": [{"mediaType": FLUX_CONTENT, "digest": sha256_digest(layer),
                    "size": len(layer)}],
    })
    target = parse_ref(f"oci-layout:{tmp_path}/flux")
    store = open_store(target, create=True)
    store.push_blob(config, sha256_digest(config))
    store.push_blob(layer, sha256_digest(layer))
    store.push_manifest(manifest, MANIFEST, "v1")
    ref = f"oci-layout:{tmp_path}/flux@{sha256_digest(manifest)}"

    result = install(make_plan(ref, ns, control_plane))

    assert result.summary["created"] == 2
    assert kube.get(CONFIGMAPS, ns, "from-flux-b")["data"] == {"k": "b"}


def test_new_objects_are_validated_once_and_written_without_their_answer_sent_whole(
    tmp_path: Path, ns: str, control_plane: ClusterEndpoint
) -> None:
    # What the engine asks of the server, seen on the real connection. A custom resource's
    # dry-run is strict and its write is not decoded strictly again; a built-in kind's schema
    # refuses unknown fields in every mode, so neither of its requests asks for Strict.
    # Nothing needs the object back, so all ask for its metadata only, which the server sends.
    group = f"{unique('g')}.example.com"
    crd = widget_crd(group)
    install(make_plan(publish([crd], layout(tmp_path, "v1")), ns, control_plane))
    widget = {"apiVersion": f"{group}/v1", "kind": "Widget",
              "metadata": {"name": "strict-once", "namespace": ns}, "spec": {"size": 3}}
    ref = publish([crd, config_map("strict-once", ns, {"k": "1"}), widget],
                  layout(tmp_path, "v2"))
    client = KubeClient(Target(kubeconfig=str(control_plane.kubeconfig)))
    sent: dict[str, list[tuple[str, str, str, bytes]]] = {"configmaps": [], "widgets": []}
    request = client.wire.request

    def spy(method: str, target: str, headers: dict[str, str],
            body: bytes | None) -> tuple[int, dict[str, str], bytes]:
        status, answer_headers, data = request(method, target, headers, body)
        for plural, seen in sent.items():
            if method == "PATCH" and f"/{plural}/strict-once" in target:
                seen.append((target, headers["Accept"], answer_headers["content-type"], data))
        return status, answer_headers, data

    client.wire.request = spy  # type: ignore[method-assign]
    try:
        result = install(make_plan(ref, ns, control_plane), client=client)
    finally:
        client.close()
    assert actions(result)[f"{group}/v1/Widget/{ns}/strict-once"] == "created"
    assert actions(result)[f"/v1/ConfigMap/{ns}/strict-once"] == "created"
    (dry_run, _, _, _), (write, _, _, _) = sent["widgets"]
    assert "dryRun=All" in dry_run
    assert "fieldValidation=Strict" in dry_run
    assert "dryRun" not in write
    assert "fieldValidation=Ignore" in write
    (dry_run, _, _, _), (write, _, _, _) = sent["configmaps"]
    assert "dryRun=All" in dry_run
    assert "dryRun" not in write
    assert "fieldValidation=Ignore" in dry_run
    assert "fieldValidation=Ignore" in write
    for _, accept, content_type, answer in sent["widgets"] + sent["configmaps"]:
        assert accept.startswith("application/json;as=PartialObjectMetadata;")
        assert content_type == "application/json"
        assert json.loads(answer)["kind"] == "PartialObjectMetadata"
        assert "data" not in json.loads(answer)
        assert "spec" not in json.loads(answer)


@pytest.mark.parametrize(("distance", "opened"), [
    (0.0005, 8),                          # next to the server: the wave opens what it needs
    (0.010, window_for(0.010, 128)),      # 10 ms away: the window's worth, ahead of the wave
])
def test_connections_are_opened_ahead_only_as_many_as_the_window_will_use(
    tmp_path: Path, ns: str, control_plane: ClusterEndpoint, distance: float, opened: int
) -> None:
    # The distance stands in for a measured one (a TCP connect through the proxy is local);
    # the connections are real ones to the API server, counted by the proxy in between.
    with FaultProxy(control_plane.server.removeprefix("https://")) as proxy:
        config = rewrite_server(control_plane.kubeconfig, f"https://{proxy.address}",
                                tmp_path / "kubeconfig")
        plan = InstallPlan.model_validate({"artifact": {"ref": "oci-layout:/x@sha256:" + "0" * 64},
                                           "target": {"kubeconfig": str(config)},
                                           "namespace": ns, "concurrency": 128})
        reached = _Reaching(None).reach_for(plan)
        try:
            assert proxy.connections == 8
            reached.client.wire.round_trip = distance
            _open_the_window(reached.client, plan, 1000)
            for thread in threading.enumerate():
                if thread.name == "lading-warm":
                    thread.join(30)
            assert proxy.connections == opened
        finally:
            reached.client.close()


def test_a_failed_fetch_leaves_no_thread_opening_connections(
    tmp_path: Path, ns: str, control_plane: ClusterEndpoint
) -> None:
    # The cluster is reached while the artifact is read; when reading fails, the process may
    # end at once, and a thread still in a TLS handshake would meet the interpreter's and
    # OpenSSL's teardown.
    plan = make_plan(f"oci-layout:{tmp_path}/missing@sha256:{'0' * 64}", ns, control_plane)
    with pytest.raises(InputError):
        install(plan)
    assert [t.name for t in threading.enumerate() if t.name == "lading-reach"] == []


def test_a_failed_fetch_ends_the_handshakes_with_a_silent_server(
    tmp_path: Path, control_plane: ClusterEndpoint
) -> None:
    # The "cluster" accepts connections and never answers the TLS handshake. Reading the
    # artifact fails first: the install closes the client it was building, which ends those
    # handshakes, instead of leaving threads in them (inside OpenSSL) for the request time-out.
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                held.append(listener.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    config = rewrite_server(control_plane.kubeconfig,
                            f"https://127.0.0.1:{listener.getsockname()[1]}",
                            tmp_path / "kubeconfig")
    plan = InstallPlan.model_validate({
        "artifact": {"ref": f"oci-layout:{tmp_path}/missing@sha256:{'0' * 64}"},
        "target": {"kubeconfig": str(config)}, "namespace": "default"})
    try:
        with pytest.raises(InputError):
            install(plan)
        reaching = [t for t in threading.enumerate() if t.name == "lading-reach"]
        for thread in reaching:
            thread.join(10)
        assert not [t for t in reaching if t.is_alive()], "a handshake outlived the install"
    finally:
        listener.close()
        for conn in held:
            conn.close()
