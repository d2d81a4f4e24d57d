"""Two teams, one cluster: an install never touches what another owner holds, a refused
install leaves the cluster exactly as it found it, and prune and uninstall never delete what
is not theirs or what would take others' data with it. Real kube-apiserver, real artifacts,
the real CLI entry point."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runner.cli import main
from runner.common.kube import KubeClient, Resource
from runner.dev.endpoints import ClusterEndpoint, RegistryEndpoint
from runner.install import inventory as inv
from runner.install.prune import members, prune
from tests.artifacts import config_map, deployment, namespace_obj, publish, unique, widget_crd

pytestmark = pytest.mark.cluster

CONFIGMAPS = Resource("", "v1", "ConfigMap", "configmaps", True)
SECRETS = Resource("", "v1", "Secret", "secrets", True)
NAMESPACES = Resource("", "v1", "Namespace", "namespaces", False)
CRDS = Resource("apiextensions.k8s.io", "v1", "CustomResourceDefinition",
                "customresourcedefinitions", False)
CLUSTER_ROLES = Resource("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", False)
LEASES = Resource("coordination.k8s.io", "v1", "Lease", "leases", True)
DEPLOYMENTS = Resource("apps", "v1", "Deployment", "deployments", True)


def widgets(group: str) -> Resource:
    return Resource(group, "v1", "Widget", "widgets", True)


def widget(group: str, name: str, namespace: str, size: Any = 1) -> dict[str, Any]:
    return {"apiVersion": f"{group}/v1", "kind": "Widget",
            "metadata": {"name": name, "namespace": namespace}, "spec": {"size": size}}


def cluster_role(name: str) -> dict[str, Any]:
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": name},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}]}


def lading(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, Any, str]:
    """Run the CLI with -o json; returns (exit code, result document or None, stderr)."""
    with pytest.raises(SystemExit) as exited:
        main([*args, "-o", "json"])
    out, err = capsys.readouterr()
    code = exited.value.code
    return (code if isinstance(code, int) else 1), (json.loads(out) if out.strip() else None), err


@pytest.fixture
def namespaces(kube: KubeClient) -> Iterator[list[str]]:
    """Namespaces a test creates (or expects an install to create), deleted afterwards."""
    made: list[str] = []
    yield made
    for name in made:
        kube.delete(NAMESPACES, None, name)


def make_namespace(kube: KubeClient, made: list[str], prefix: str) -> str:
    name = unique(prefix)
    kube.apply(NAMESPACES, namespace_obj(name), field_manager="test-setup")
    made.append(name)
    return name


def snapshot(kube: KubeClient, namespaces: list[str]) -> dict[str, str]:
    """Every object a test could have touched, with its resourceVersion: cluster-scoped kinds
    lading writes, and everything of the watched kinds in the given namespaces. Objects the
    cluster's own controllers keep (aggregated ClusterRoles, kube-root-ca.crt) are left out,
    and so is whatever earlier tests' clean-up is still deleting."""
    found: dict[str, str] = {}
    for resource in (NAMESPACES, CRDS, CLUSTER_ROLES):
        for obj in kube.list(resource):
            meta = obj["metadata"]
            if resource is CLUSTER_ROLES and obj.get("aggregationRule"):
                continue
            if meta.get("deletionTimestamp"):
                continue
            found[f"{resource.kind}/{meta['name']}"] = meta["resourceVersion"]
    for namespace in namespaces:
        for resource in (CONFIGMAPS, SECRETS, LEASES, DEPLOYMENTS):
            for obj in kube.list(resource, namespace):
                meta = obj["metadata"]
                if meta["name"] == "kube-root-ca.crt":
                    continue
                found[f"{resource.kind}/{namespace}/{meta['name']}"] = meta["resourceVersion"]
    return found


def test_two_teams_one_crd_no_silent_takeover_and_no_cluster_wide_deletion(
    tmp_path: Path, kube: KubeClient, control_plane: ClusterEndpoint,
    namespaces: list[str], capsys: pytest.CaptureFixture[str],
) -> None:
    team_a = make_namespace(kube, namespaces, "team-a")
    team_b = make_namespace(kube, namespaces, "team-b")
    users = make_namespace(kube, namespaces, "users")
    group = f"{unique('g')}.demo.example.com"
    crd_name = f"widgets.{group}"
    ref = publish([widget_crd(group)], f"oci-layout:{tmp_path / 'crds'}:v1")
    common = ["--inventory", "crds", "--no-wait", "--kubeconfig", str(control_plane.kubeconfig)]

    code, result, _ = lading(["install", ref, "-n", team_a, *common], capsys)
    assert code == 0, result
    kube.apply(widgets(group), widget(group, "precious", users), field_manager="users")
    team_a_id = inv.applyset_id(inv.parent_name("crds"), team_a)
    before = snapshot(kube, [team_a, team_b, users])

    # Team B installs an artifact holding the same CRD: refused, naming the owner, nothing
    # written (not even team B's inventory).
    code, result, err = lading(["install", ref, "-n", team_b, *common], capsys)
    assert code == 2
    assert result["status"] == "failed"
    assert [r["id"] for r in result["refused"]] == [
        f"apiextensions.k8s.io/v1/CustomResourceDefinition//{crd_name}"]
    assert f"lading inventory {team_a}/crds" in result["refused"][0]["reason"]
    assert "--adopt CustomResourceDefinition/" in result["refused"][0]["reason"]
    assert f"lading inventory {team_a}/crds" in err
    assert snapshot(kube, [team_a, team_b, users]) == before
    crd = kube.get(CRDS, None, crd_name)
    assert crd["metadata"]["labels"][inv.PART_OF] == team_a_id

    # Team A's view of its members, as an uninstall running right now would have read it.
    stale = members(kube, inv.read(kube, "crds", team_a))
    assert [m.oid.name for m in stale] == [crd_name]

    # Adopting on purpose works, and the result records from whom.
    code, result, _ = lading(
        ["install", ref, "-n", team_b, *common, "--adopt", f"CustomResourceDefinition/{crd_name}"],
        capsys)
    assert code == 0, result
    assert result["adopted"] == [{
        "id": f"apiextensions.k8s.io/v1/CustomResourceDefinition//{crd_name}",
        "owner": f"lading inventory {team_a}/crds"}]

    # A delete decided on that stale view re-checks membership first: the CRD is team B's now.
    [outcome] = prune(kube, stale, team_a_id, dry_run=False, progress=lambda _: None)
    assert outcome.action == "kept"
    assert outcome.reason == f"now held by lading inventory {team_b}/crds"
    # And team A's uninstall no longer counts it as a member at all.
    code, result, _ = lading(
        ["uninstall", "--inventory", "crds", "-n", team_a, "--kubeconfig",
         str(control_plane.kubeconfig)], capsys)
    assert code == 0, result
    assert result["changes"] == []
    assert kube.get(CRDS, None, crd_name) is not None

    # Team B's uninstall would delete every Widget in the cluster with the CRD: refused.
    code, result, err = lading(
        ["uninstall", "--inventory", "crds", "-n", team_b, "--kubeconfig",
         str(control_plane.kubeconfig)], capsys)
    assert code == 2
    assert "1 Widget in 1 namespace(s) would be deleted with it" in err
    assert "--allow-data-loss" in result["refused"][0]["reason"]
    assert kube.get(widgets(group), users, "precious") is not None
    assert kube.get(CRDS, None, crd_name) is not None
    assert kube.get(SECRETS, team_b, inv.parent_name("crds")) is not None

    code, result, _ = lading(
        ["uninstall", "--inventory", "crds", "-n", team_b, "--allow-data-loss", "--kubeconfig",
         str(control_plane.kubeconfig)], capsys)
    assert code == 0, result
    assert result["summary"]["deleted"] == 1


@pytest.mark.parametrize("marks", [
    {"annotations": {"meta.helm.sh/release-name": "shop", "meta.helm.sh/release-namespace": "x"}},
    {"labels": {"kustomize.toolkit.fluxcd.io/name": "apps",
                "kustomize.toolkit.fluxcd.io/namespace": "flux-system"}},
], ids=["helm", "flux"])
def test_objects_of_a_helm_release_or_flux_kustomization_are_refused_unless_adopted(
    marks: dict[str, Any], tmp_path: Path, ns: str, kube: KubeClient,
    control_plane: ClusterEndpoint, capsys: pytest.CaptureFixture[str],
) -> None:
    theirs = config_map("settings", ns, {"k": "theirs"})
    theirs["metadata"].update(marks)
    kube.apply(CONFIGMAPS, theirs, field_manager="helm")
    ref = publish([config_map("settings", ns, {"k": "ours"}), config_map("other", ns, {})],
                  f"oci-layout:{tmp_path / 'a'}:v1")
    args = ["install", ref, "-n", ns, "--inventory", "app", "--no-wait", "--force-conflicts",
            "--kubeconfig", str(control_plane.kubeconfig)]

    code, result, _ = lading(args, capsys)
    assert code == 2
    flux = "Flux Kustomization flux-system/apps"
    owner = "Helm release x/shop" if "annotations" in marks else flux
    assert owner in result["refused"][0]["reason"]
    assert kube.get(CONFIGMAPS, ns, "settings")["data"] == {"k": "theirs"}
    assert kube.get(CONFIGMAPS, ns, "other") is None

    code, result, _ = lading([*args, "--adopt", "ConfigMap/settings"], capsys)
    assert code == 0, result
    assert result["adopted"][0]["owner"] == owner
    assert kube.get(CONFIGMAPS, ns, "settings")["data"] == {"k": "ours"}


def test_create_namespace_with_an_invalid_object_writes_nothing_at_all(
    tmp_path: Path, kube: KubeClient, control_plane: ClusterEndpoint,
    namespaces: list[str], capsys: pytest.CaptureFixture[str],
) -> None:
    fresh = unique("brand-new")
    namespaces.append(fresh)
    role = unique("reader")
    bad = deployment("web", fresh)
    bad["spec"]["replicas"] = "three"
    ref = publish([cluster_role(role), config_map("settings", fresh, {"k": "v"}), bad],
                  f"oci-layout:{tmp_path / 'bad'}:v1")
    before = snapshot(kube, [fresh])

    code, result, err = lading(
        ["install", ref, "-n", fresh, "--create-namespace", "--inventory", "bad", "--no-wait",
         "--kubeconfig", str(control_plane.kubeconfig)], capsys)

    assert code == 2, err
    assert "nothing was written" in err
    assert "replicas" in err
    assert "depend on this artifact" not in err
    assert snapshot(kube, [fresh]) == before
    assert kube.get(NAMESPACES, None, fresh) is None
    assert kube.get(CLUSTER_ROLES, None, role) is None
    assert result["cluster_scoped"] == [f"rbac.authorization.k8s.io/v1/ClusterRole//{role}"]


def test_a_bad_custom_resource_leaves_no_crd_behind(
    tmp_path: Path, ns: str, kube: KubeClient, control_plane: ClusterEndpoint,
    capsys: pytest.CaptureFixture[str],
) -> None:
    group = f"{unique('g')}.example.com"
    ref = publish([widget_crd(group), widget(group, "w", ns, size="huge"),
                   config_map("settings", ns, {"k": "v"})],
                  f"oci-layout:{tmp_path / 'crd'}:v1")
    before = snapshot(kube, [ns])

    code, result, err = lading(
        ["install", ref, "-n", ns, "--inventory", "app", "--no-wait",
         "--kubeconfig", str(control_plane.kubeconfig)], capsys)

    assert code == 2, err
    assert "Widget/w" in err
    assert "size" in err
    assert snapshot(kube, [ns]) == before
    assert kube.get(CRDS, None, f"widgets.{group}") is None

    good = publish([widget_crd(group), widget(group, "w", ns, size=3)],
                   f"oci-layout:{tmp_path / 'crd'}:v2")
    code, result, _ = lading(
        ["install", good, "-n", ns, "--inventory", "app", "--no-wait",
         "--kubeconfig", str(control_plane.kubeconfig)], capsys)
    assert code == 0, result
    assert result["summary"]["created"] == 2
    kube.delete(CRDS, None, f"widgets.{group}")


def test_objects_outside_the_install_namespace_need_an_allowance(
    tmp_path: Path, ns: str, kube: KubeClient, control_plane: ClusterEndpoint,
    namespaces: list[str], capsys: pytest.CaptureFixture[str],
) -> None:
    elsewhere = make_namespace(kube, namespaces, "elsewhere")
    ref = publish([config_map("mine", ns, {}), config_map("sneaky", "kube-system", {}),
                   config_map("there", elsewhere, {})], f"oci-layout:{tmp_path / 'a'}:v1")
    args = ["install", ref, "-n", ns, "--inventory", "app", "--no-wait",
            "--kubeconfig", str(control_plane.kubeconfig)]

    code, result, err = lading(args, capsys)
    assert code == 2
    assert {r["id"] for r in result["refused"]} == {
        "/v1/ConfigMap/kube-system/sneaky", f"/v1/ConfigMap/{elsewhere}/there"}
    assert "--allow-namespace kube-system" in err
    assert kube.get(CONFIGMAPS, ns, "mine") is None
    assert kube.get(CONFIGMAPS, "kube-system", "sneaky") is None

    only_elsewhere = publish([config_map("mine", ns, {}), config_map("there", elsewhere, {})],
                             f"oci-layout:{tmp_path / 'a'}:v2")
    code, result, _ = lading(
        ["install", only_elsewhere, *args[2:], "--allow-namespace", elsewhere], capsys)
    assert code == 0, result
    assert kube.get(CONFIGMAPS, elsewhere, "there") is not None


def test_a_namespace_the_artifact_creates_is_its_own_on_every_install(
    tmp_path: Path, ns: str, kube: KubeClient, control_plane: ClusterEndpoint,
    namespaces: list[str], capsys: pytest.CaptureFixture[str],
) -> None:
    extra = unique("extra")
    namespaces.append(extra)
    ref = publish([namespace_obj(extra), config_map("c", extra, {"k": "1"})],
                  f"oci-layout:{tmp_path / 'a'}:v1")
    args = ["install", ref, "-n", ns, "--inventory", "app", "--no-wait",
            "--kubeconfig", str(control_plane.kubeconfig)]
    for _ in range(2):
        code, result, _ = lading(args, capsys)
        assert code == 0, result
    assert kube.get(CONFIGMAPS, extra, "c") is not None


def test_an_artifact_holding_lading_s_own_lease_or_inventory_is_refused(
    tmp_path: Path, ns: str, kube: KubeClient, control_plane: ClusterEndpoint,
    capsys: pytest.CaptureFixture[str],
) -> None:
    lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
             "metadata": {"name": "lading-app", "namespace": ns},
             "spec": {"holderIdentity": "someone-else-forever", "leaseDurationSeconds": 30,
                      "renewTime": "2099-01-01T00:00:00.000000Z"}}
    parent = {"apiVersion": "v1", "kind": "Secret",
              "metadata": {"name": "lading-app", "namespace": ns}, "stringData": {"a": "b"}}
    for i, hijack in enumerate((lease, parent)):
        ref = publish([hijack, config_map("c", ns, {})], f"oci-layout:{tmp_path / 'h'}:v{i}")
        code, _, err = lading(
            ["install", ref, "-n", ns, "--inventory", "app", "--no-wait", "--force-conflicts",
             "--kubeconfig", str(control_plane.kubeconfig)], capsys)
        assert code == 2
        assert "collides with lading's own" in err
        assert kube.get(CONFIGMAPS, ns, "c") is None
        assert kube.get(LEASES, ns, "lading-app") is None
        assert kube.get(SECRETS, ns, "lading-app") is None


def test_prune_keeps_objects_marked_prune_disabled_and_releases_them(
    tmp_path: Path, ns: str, kube: KubeClient, control_plane: ClusterEndpoint,
    capsys: pytest.CaptureFixture[str],
) -> None:
    kept = config_map("kept", ns, {}, )
    kept["metadata"]["annotations"] = {"lading.dev/prune": "disabled"}
    v1 = publish([kept, config_map("dropped", ns, {}), config_map("stays", ns, {})],
                 f"oci-layout:{tmp_path / 'a'}:v1")
    v2 = publish([config_map("stays", ns, {})], f"oci-layout:{tmp_path / 'a'}:v2")
    args = ["-n", ns, "--inventory", "app", "--no-wait",
            "--kubeconfig", str(control_plane.kubeconfig)]
    assert lading(["install", v1, *args], capsys)[0] == 0

    code, result, _ = lading(["install", v2, *args], capsys)

    assert code == 0, result
    by_id = {c["id"]: c for c in result["changes"]}
    assert by_id[f"/v1/ConfigMap/{ns}/dropped"]["action"] == "deleted"
    assert by_id[f"/v1/ConfigMap/{ns}/kept"]["action"] == "skipped"
    assert by_id[f"/v1/ConfigMap/{ns}/kept"]["reason"] == "lading.dev/prune: disabled"
    live = kube.get(CONFIGMAPS, ns, "kept")
    assert live is not None
    assert inv.PART_OF not in (live["metadata"].get("labels") or {})


def test_prune_refuses_a_namespace_holding_other_teams_objects(
    tmp_path: Path, ns: str, kube: KubeClient, control_plane: ClusterEndpoint,
    namespaces: list[str], capsys: pytest.CaptureFixture[str],
) -> None:
    shared = unique("shared")
    namespaces.append(shared)
    v1 = publish([namespace_obj(shared), config_map("ours", shared, {})],
                 f"oci-layout:{tmp_path / 'a'}:v1")
    v2 = publish([config_map("elsewhere", ns, {})], f"oci-layout:{tmp_path / 'a'}:v2")
    args = ["-n", ns, "--inventory", "app", "--no-wait",
            "--kubeconfig", str(control_plane.kubeconfig)]
    assert lading(["install", v1, *args], capsys)[0] == 0
    kube.apply(CONFIGMAPS, config_map("theirs", shared, {}), field_manager="other-team")
    before = snapshot(kube, [ns, shared])

    code, result, err = lading(["install", v2, *args], capsys)

    assert code == 2
    assert "1 ConfigMap" in err
    assert snapshot(kube, [ns, shared]) == before

    code, result, _ = lading(["install", v2, *args, "--allow-data-loss"], capsys)
    assert code == 0, result
    assert {c["id"]: c["action"] for c in result["changes"]}[f"/v1/Namespace//{shared}"] == (
        "deleted")


def test_rollback_enforces_the_same_verify_policy_as_install(
    tmp_path: Path, ns: str, kube: KubeClient, control_plane: ClusterEndpoint,
    capsys: pytest.CaptureFixture[str],
) -> None:
    v1 = publish([config_map("c", ns, {"v": "1"})], f"oci-layout:{tmp_path / 'a'}:v1")
    v2 = publish([config_map("c", ns, {"v": "2"})], f"oci-layout:{tmp_path / 'a'}:v2")
    args = ["-n", ns, "--inventory", "app", "--no-wait",
            "--kubeconfig", str(control_plane.kubeconfig)]
    for ref in (v1, v2):
        assert lading(["install", ref, *args], capsys)[0] == 0
    root = Path(__file__).parent / "data" / "sigstore" / "staging_trusted_root.json"

    code, _, err = lading(
        ["rollback", *args, "--verify", "--certificate-identity", "ci@example.com",
         "--certificate-oidc-issuer", "https://issuer.example.com", "--trusted-root", str(root)],
        capsys)

    assert code == 1
    assert f"{v1.rsplit('@', 1)[1]} has no Sigstore signature" in err
    assert kube.get(CONFIGMAPS, ns, "c")["data"] == {"v": "2"}
    assert inv.read(kube, "app", ns).digest == v2.rsplit("@", 1)[1]


@pytest.mark.registry
def test_one_digest_lands_in_one_inventory_however_it_is_referenced(
    tmp_path: Path, ns: str, kube: KubeClient, control_plane: ClusterEndpoint,
    registry: RegistryEndpoint, capsys: pytest.CaptureFixture[str],
) -> None:
    manifests = tmp_path / "app.yaml"
    manifests.write_text(json.dumps(config_map("c", None, {"k": "v"})))
    repo = f"{registry.host}/{unique('team')}/shop"
    code, built, err = lading(
        ["build", "--inline", str(manifests), "--inventory", "shop", "--to", f"{repo}:1",
         "--to", f"oci-layout:{tmp_path / 'carry'}:1"], capsys)
    assert code == 0, err
    digest = built["digest"]
    args = ["-n", ns, "--no-wait", "--kubeconfig", str(control_plane.kubeconfig)]

    code, first, _ = lading(["install", f"oci-layout:{tmp_path / 'carry'}@{digest}", *args],
                            capsys)
    assert code == 0, first
    code, second, _ = lading(["install", f"{repo}@{digest}", *args], capsys)
    assert code == 0, second

    assert first["inventory"] == second["inventory"] == "shop"
    assert second["summary"]["unchanged"] == 1
    assert inv.read(kube, "shop", ns).digest == digest
    assert not inv.read(kube, "carry", ns).exists


def test_a_bad_custom_resource_in_a_namespace_the_artifact_creates_leaves_nothing_behind(
    tmp_path: Path, ns: str, kube: KubeClient, control_plane: ClusterEndpoint,
    namespaces: list[str], capsys: pytest.CaptureFixture[str],
) -> None:
    group = f"{unique('g')}.example.com"
    fresh = unique("fresh")
    namespaces.append(fresh)
    args = ["-n", ns, "--inventory", "app", "--no-wait",
            "--kubeconfig", str(control_plane.kubeconfig)]
    bad = publish([namespace_obj(fresh), widget_crd(group), widget(group, "w", fresh, "huge")],
                  f"oci-layout:{tmp_path / 'a'}:v1")
    before = snapshot(kube, [ns, fresh])

    code, _, err = lading(["install", bad, *args], capsys)

    assert code == 2, err
    assert f"Widget/w in {fresh}" in err
    assert snapshot(kube, [ns, fresh]) == before
    assert kube.get(CRDS, None, f"widgets.{group}") is None
    assert kube.get(NAMESPACES, None, fresh) is None

    good = publish([namespace_obj(fresh), widget_crd(group), widget(group, "w", fresh, 3)],
                   f"oci-layout:{tmp_path / 'a'}:v2")
    code, result, _ = lading(["install", good, *args], capsys)
    assert code == 0, result
    assert result["summary"]["created"] == 3
    kube.delete(CRDS, None, f"widgets.{group}")
