"""Pure parts of install safety: who owns an object, which namespaces an install may write,
which names are lading's own, and what a namespace holds that an inventory did not install."""

from __future__ import annotations

from typing import Any

from runner.common.kube import Resource
from runner.common.objects import ObjectId
from runner.install.loss import foreign
from runner.install.ownership import Owner, claims, named_by, owner_of
from runner.install.scope import control_collisions, outside, own_namespaces

OURS = "applyset-ours-v1"


def live(labels: dict[str, str] | None = None, annotations: dict[str, str] | None = None,
         **meta: Any) -> dict[str, Any]:
    return {"metadata": {"labels": labels or {}, "annotations": annotations or {}, **meta}}


def oid(kind: str, name: str, namespace: str = "", group: str = "") -> ObjectId:
    return ObjectId(group, "v1", kind, namespace, name)


def test_owner_of_names_another_inventory_by_its_annotation_or_applyset_id() -> None:
    other = live({"applyset.kubernetes.io/part-of": "applyset-x-v1"},
                 {"lading.dev/inventory": "team-a/crds"})
    assert owner_of(other, OURS) == Owner("inventory", "team-a/crds")
    bare = live({"applyset.kubernetes.io/part-of": "applyset-x-v1"})
    assert str(owner_of(bare, OURS)) == "ApplySet applyset-x-v1"


def test_owner_of_recognises_helm_and_flux_marks() -> None:
    helm = live(annotations={"meta.helm.sh/release-name": "shop",
                             "meta.helm.sh/release-namespace": "prod"})
    assert str(owner_of(helm, OURS)) == "Helm release prod/shop"
    flux = live({"kustomize.toolkit.fluxcd.io/name": "apps",
                 "kustomize.toolkit.fluxcd.io/namespace": "flux-system"})
    assert str(owner_of(flux, OURS)) == "Flux Kustomization flux-system/apps"
    release = live({"helm.toolkit.fluxcd.io/name": "redis"})
    assert str(owner_of(release, OURS)) == "Flux HelmRelease redis"


def test_membership_of_this_inventory_wins_over_a_previous_owner_s_marks() -> None:
    adopted = live({"applyset.kubernetes.io/part-of": OURS},
                   {"meta.helm.sh/release-name": "shop"})
    assert owner_of(adopted, OURS) is None
    assert owner_of(live(), OURS) is None


def test_named_by_accepts_kind_name_namespaced_forms_patterns_and_all() -> None:
    crd = oid("CustomResourceDefinition", "widgets.x.io", group="apiextensions.k8s.io")
    assert named_by(crd, ["CustomResourceDefinition/widgets.x.io"])
    assert named_by(crd, ["CustomResourceDefinition.apiextensions.k8s.io/*.x.io"])
    cm = oid("ConfigMap", "settings", "shop")
    assert named_by(cm, ["ConfigMap/shop/settings"])
    assert named_by(cm, ["all"])
    assert not named_by(cm, ["ConfigMap/other", "Secret/settings"])


def test_claims_lists_foreign_objects_with_whether_they_are_adopted() -> None:
    theirs = live(annotations={"meta.helm.sh/release-name": "shop"})
    found = claims([(oid("ConfigMap", "a", "ns"), theirs), (oid("ConfigMap", "b", "ns"), theirs),
                    (oid("ConfigMap", "c", "ns"), None), (oid("ConfigMap", "d", "ns"), live())],
                   OURS, ["ConfigMap/b"])
    assert [(c.oid.name, c.adopted) for c in found] == [("a", False), ("b", True)]


def test_an_install_owns_its_namespace_new_namespaces_and_its_members_only() -> None:
    member = live({"applyset.kubernetes.io/part-of": OURS})
    owned = own_namespaces("shop", ["new", "mine", "kube-system"],
                           {"mine": member, "kube-system": live()}, OURS)
    assert owned == {"shop", "new", "mine"}
    ids = [oid("ConfigMap", "a", "shop"), oid("ConfigMap", "b", "kube-system"),
           oid("ConfigMap", "c", "team-x"), oid("ClusterRole", "r")]
    assert [o.namespace for o in outside(ids, owned, [])] == ["kube-system", "team-x"]
    assert [o.namespace for o in outside(ids, owned, ["team-*"])] == ["kube-system"]
    assert outside(ids, owned, ["*"]) == []


def test_control_collisions_are_the_inventory_secret_and_lease_in_the_install_namespace() -> None:
    ids = [oid("Lease", "lading-app", "shop", "coordination.k8s.io"),
           oid("Secret", "lading-app", "shop"), oid("Secret", "lading-app", "other"),
           oid("ConfigMap", "lading-app", "shop"), oid("Secret", "app", "shop")]
    assert [(o.kind, o.namespace) for o in control_collisions(ids, "lading-app", "shop")] == [
        ("Lease", "shop"), ("Secret", "shop")]


def test_foreign_counts_what_members_did_not_make() -> None:
    deployments = Resource("apps", "v1", "Deployment", "deployments", True)
    replicasets = Resource("apps", "v1", "ReplicaSet", "replicasets", True)
    pods = Resource("", "v1", "Pod", "pods", True)
    configmaps = Resource("", "v1", "ConfigMap", "configmaps", True)
    services = Resource("", "v1", "Service", "services", True)
    endpoints = Resource("", "v1", "Endpoints", "endpoints", True)
    events = Resource("", "v1", "Event", "events", True)
    objects = [
        (deployments, live(uid="d", name="web")),
        (replicasets, live(uid="rs", name="web-1", ownerReferences=[{"uid": "d"}])),
        (pods, live(uid="p", name="web-1-x", ownerReferences=[{"uid": "rs"}])),
        (services, live(uid="s", name="web")),
        (endpoints, live(uid="e", name="web")),
        (configmaps, live(uid="root", name="kube-root-ca.crt")),
        (events, live(uid="ev", name="web.123")),
        (configmaps, live(uid="t1", name="theirs")),
        (pods, live(uid="t2", name="their-pod")),
    ]
    assert foreign(objects, {"d", "s"}) == {"ConfigMap": 1, "Pod": 1}
