"""Pruning: delete what this inventory installed before and the new artifact no longer holds.

Only objects labelled as members of *this* ApplySet are candidates, and only in the
group-kinds and namespaces the inventory records; nothing else is ever touched.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from runner.common.kube import KubeClient, KubeError, Resource
from runner.common.objects import ObjectId, object_id
from runner.install.inventory import PART_OF, Inventory, split_group_kind
from runner.install.order import prune_order_key


@dataclass(frozen=True)
class Member:
    oid: ObjectId
    resource: Resource
    uid: str


def members(client: KubeClient, inventory: Inventory) -> list[Member]:
    """Every live object carrying this inventory's part-of label, in its recorded group-kinds
    and namespaces (cluster-scoped kinds are listed once)."""
    found: list[Member] = []
    selector = f"{PART_OF}={inventory.id}"
    for gk in sorted(inventory.group_kinds):
        group, kind = split_group_kind(gk)
        resource = _resource_for_group_kind(client, group, kind)
        if resource is None:
            continue  # the kind is gone from the cluster (CRD deleted): nothing left to prune
        scopes = sorted(inventory.namespaces) if resource.namespaced else [""]
        for namespace in scopes:
            for obj in client.list(resource, namespace or None, label_selector=selector):
                found.append(Member(object_id(obj), resource, obj["metadata"].get("uid", "")))
    return found


def _resource_for_group_kind(client: KubeClient, group: str, kind: str) -> Resource | None:
    versions = _preferred_versions(client, group)
    for version in versions:
        resource = client.resource_for(f"{group}/{version}" if group else version, kind)
        if resource is not None:
            return resource
    return None


def _preferred_versions(client: KubeClient, group: str) -> list[str]:
    if not group:
        return ["v1"]
    try:
        doc = client.request("GET", f"/apis/{group}")
    except KubeError as e:
        if e.is_not_found:
            return []
        raise
    preferred = (doc.get("preferredVersion") or {}).get("version")
    others = [v["version"] for v in doc.get("versions", []) if v["version"] != preferred]
    return ([preferred] if preferred else []) + others


def candidates(live: list[Member], keep: set[tuple[str, str, str, str]]) -> list[Member]:
    """Members not in the new artifact, in deletion order (workloads before namespaces). Pure."""
    gone = [m for m in live if m.oid.identity() not in keep]
    return sorted(gone, key=lambda m: (prune_order_key(m.oid), str(m.oid)))


def prune(
    client: KubeClient, doomed: list[Member], *, dry_run: bool, progress: Callable[[str], None]
) -> list[tuple[Member, str | None]]:
    """Delete each member (uid-preconditioned, so a recreated namesake survives)."""
    results: list[tuple[Member, str | None]] = []
    for member in doomed:
        try:
            client.delete(
                member.resource,
                member.oid.namespace or None,
                member.oid.name,
                dry_run=dry_run,
                uid=member.uid or None,
            )
            progress(
                f"pruned {member.oid.kind}/{member.oid.name}"
                + (f" in {member.oid.namespace}" if member.oid.namespace else "")
            )
            results.append((member, None))
        except KubeError as e:
            results.append((member, e.message))
    return results
