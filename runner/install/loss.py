"""What a delete would take with it. Deleting a CustomResourceDefinition deletes every custom
resource of its kind in the cluster; deleting a Namespace deletes everything in it, also what
other teams put there. Prune and uninstall refuse both by default and say what would be lost.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from plans.install import Refusal
from runner.common.kube import KubeClient, KubeError, Resource
from runner.common.objects import Obj, ObjectId
from runner.install.inventory import Inventory, parent_name
from runner.install.prune import PRUNE_ANNOTATION, PRUNE_DISABLED, Member

# Objects the cluster itself puts in every namespace, or that record rather than configure.
_HOUSEKEEPING = {
    ("", "ConfigMap", "kube-root-ca.crt"),
    ("", "ServiceAccount", "default"),
}
_RECORDS = {("", "Event"), ("events.k8s.io", "Event")}


def foreign(objects: Iterable[tuple[Resource, Obj]], member_uids: set[str]) -> Counter[str]:
    """Objects in a namespace that are neither members nor made by members (through
    ownerReferences, e.g. a Deployment's ReplicaSets and Pods, a Service's EndpointSlices),
    counted by kind. Pure."""
    items = [(r, o) for r, o in objects if (r.group, r.kind) not in _RECORDS]
    ours = set(member_uids)
    service_names = set()
    changed = True
    while changed:
        changed = False
        for _, obj in items:
            meta = obj.get("metadata") or {}
            uid = str(meta.get("uid") or "")
            if uid in ours:
                continue
            if any(ref.get("uid") in ours for ref in meta.get("ownerReferences") or []):
                ours.add(uid)
                changed = True
    for resource, obj in items:
        meta = obj.get("metadata") or {}
        if resource.kind == "Service" and meta.get("uid") in ours:
            service_names.add(meta.get("name"))
    counts: Counter[str] = Counter()
    for resource, obj in items:
        meta = obj.get("metadata") or {}
        if meta.get("uid") in ours:
            continue
        if (resource.group, resource.kind, meta.get("name")) in _HOUSEKEEPING:
            continue
        if resource.kind == "Endpoints" and meta.get("name") in service_names:
            continue  # the endpoints controller keeps one per Service, without an owner
        counts[_kind_name(resource)] += 1
    return counts


def _kind_name(resource: Resource) -> str:
    return f"{resource.kind}.{resource.group}" if resource.group else resource.kind


def describe(counts: Counter[str]) -> str:
    return ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items()))


def crd_loss(client: KubeClient, crd: Obj) -> str | None:
    """'3 Gadget (in 2 namespaces)' when custom resources of this CRD exist, else None."""
    spec = crd.get("spec") or {}
    group, plural = spec.get("group", ""), (spec.get("names") or {}).get("plural", "")
    kind = (spec.get("names") or {}).get("kind", plural)
    versions = [v.get("name") for v in spec.get("versions") or [] if v.get("served", True)]
    if not (group and plural and versions):
        return None
    resource = Resource(group, str(versions[0]), kind, plural, spec.get("scope") != "Cluster")
    try:
        items = client.list(resource)
    except KubeError as e:
        if e.is_not_found:
            return None
        raise
    if not items:
        return None
    spaces = {str((o.get("metadata") or {}).get("namespace") or "") for o in items} - {""}
    where = f" in {len(spaces)} namespace(s)" if spaces else ""
    return f"{len(items)} {kind}{where} would be deleted with it"


def namespace_loss(
    client: KubeClient, namespace: str, member_uids: set[str], skip: set[ObjectId]
) -> str | None:
    """What deleting `namespace` would take that this inventory did not install."""
    found: list[tuple[Resource, Obj]] = []
    for resource in namespaced_resources(client):
        try:
            items = client.list(resource, namespace)
        except KubeError as e:
            if e.status in (403, 404, 405):
                continue
            raise
        for obj in items:
            meta = obj.get("metadata") or {}
            oid = ObjectId(resource.group, resource.version, resource.kind, namespace,
                           str(meta.get("name", "")))
            if oid not in skip:
                found.append((resource, obj))
    counts = foreign(found, member_uids)
    if not counts:
        return None
    return f"it holds objects this inventory did not install: {describe(counts)}"


def namespaced_resources(client: KubeClient) -> list[Resource]:
    """Every namespaced kind the cluster serves that can be listed, at its preferred version."""
    groups: list[str] = [""]
    doc: Any = client.request("GET", "/apis")
    versions = {"": "v1"}
    for group in doc.get("groups", []):
        name = group.get("name", "")
        preferred = (group.get("preferredVersion") or {}).get("version")
        if name and preferred:
            groups.append(name)
            versions[name] = preferred
    found = []
    for group in groups:
        api_version = f"{group}/{versions[group]}" if group else "v1"
        for resource in client.resources_in(api_version):
            if resource.namespaced and "list" in resource.verbs:
                found.append(resource)
    return found


def losses(
    client: KubeClient, doomed: list[Member], everyone: list[Member], inventory: Inventory
) -> list[Refusal]:
    """Refusals for each doomed CRD with custom resources and each doomed Namespace holding
    objects this inventory did not install (objects marked `lading.dev/prune: disabled` are
    kept anyway, so they lose nothing)."""
    member_uids = {m.uid for m in everyone}
    control = {
        ObjectId("", "v1", "Secret", inventory.namespace, parent_name(inventory.name)),
        ObjectId("coordination.k8s.io", "v1", "Lease", inventory.namespace,
                 parent_name(inventory.name)),
    }
    refusals = []
    for member in doomed:
        if member.prune_disabled:
            continue
        oid = member.oid
        loss = None
        if oid.kind == "CustomResourceDefinition" and oid.group == "apiextensions.k8s.io":
            loss = crd_loss(client, member.live)
        elif oid.kind == "Namespace" and oid.group == "":
            loss = namespace_loss(client, oid.name, member_uids, control)
        if loss:
            refusals.append(Refusal(
                id=str(oid),
                reason=f"deleting {oid.kind} {oid.name} would lose data: {loss}; pass "
                "--allow-data-loss (allow_data_loss: true) to delete it anyway, or mark it "
                f"{PRUNE_ANNOTATION}: {PRUNE_DISABLED} to keep it",
            ))
    return refusals
