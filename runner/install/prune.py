"""Pruning: delete what this inventory installed before and the new artifact no longer holds.

Only objects labelled as members of *this* ApplySet are candidates, and only in the
group-kinds and namespaces the inventory records; nothing else is ever touched. Membership is
read again right before each delete, and the delete carries the uid and resourceVersion it was
decided on as preconditions: an object another inventory adopted in the meantime, or one that
was deleted and recreated, survives.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from runner.common.kube import KubeClient, KubeError, Resource
from runner.common.objects import Obj, ObjectId, object_id
from runner.install.apply import parallel
from runner.install.inventory import PART_OF, Inventory, split_group_kind
from runner.install.order import prune_order_key
from runner.install.ownership import is_member, owner_of

PRUNE_ANNOTATION = "lading.dev/prune"
PRUNE_DISABLED = "disabled"
_ATTEMPTS = 3


@dataclass(frozen=True)
class Member:
    oid: ObjectId
    resource: Resource
    live: Obj

    @property
    def uid(self) -> str:
        return str((self.live.get("metadata") or {}).get("uid", ""))

    @property
    def prune_disabled(self) -> bool:
        annotations = (self.live.get("metadata") or {}).get("annotations") or {}
        return annotations.get(PRUNE_ANNOTATION) == PRUNE_DISABLED


@dataclass(frozen=True)
class Pruned:
    """What happened to one candidate: deleted, kept (with why), or failed (with the error)."""

    member: Member
    action: Literal["deleted", "kept", "failed"]
    reason: str | None = None


Listed = dict[tuple[str, str, str], tuple[Resource, list[Obj]]]
"""Whole LISTs already read in this run: (group, kind, namespace) → (resource, items)."""


def members(client: KubeClient, inventory: Inventory, listed: Listed | None = None,
            concurrency: int = 8) -> list[Member]:
    """Every live object carrying this inventory's part-of label, in its recorded group-kinds
    and namespaces (cluster-scoped kinds are listed once). What `listed` already holds is
    filtered here instead of being listed again; the rest is listed in parallel."""
    listed = listed or {}
    selector = f"{PART_OF}={inventory.id}"
    found: list[Member] = []
    to_list: list[tuple[Resource, str]] = []
    for gk in sorted(inventory.group_kinds):
        group, kind = split_group_kind(gk)
        scopes = sorted(inventory.namespaces)
        known = [listed.get((group, kind, ns)) for ns in scopes]
        known_resource = next((k[0] for k in known if k), None)
        resource = known_resource or resource_for_group_kind(client, group, kind)
        if resource is None:
            continue  # the kind is gone from the cluster (CRD deleted): nothing left to prune
        for namespace in scopes if resource.namespaced else [""]:
            hit = listed.get((group, kind, namespace))
            if hit is None:
                to_list.append((resource, namespace))
                continue
            found.extend(Member(object_id(o), resource, o) for o in hit[1]
                         if ((o.get("metadata") or {}).get("labels") or {}).get(PART_OF)
                         == inventory.id)

    def list_one(scope: tuple[Resource, str]) -> list[Member]:
        resource, namespace = scope
        return [Member(object_id(o), resource, o)
                for o in client.list(resource, namespace or None, label_selector=selector)]

    for batch in parallel(to_list, list_one, concurrency):
        found.extend(batch)
    return found


def resource_for_group_kind(client: KubeClient, group: str, kind: str) -> Resource | None:
    for version in preferred_versions(client, group):
        resource = client.resource_for(f"{group}/{version}" if group else version, kind)
        if resource is not None:
            return resource
    return None


def preferred_versions(client: KubeClient, group: str) -> list[str]:
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


def release(client: KubeClient, member: Member) -> None:
    """Take a kept object out of the inventory: drop our part-of label, so no later install
    or uninstall of this inventory, and no other owner's check, counts it as ours."""
    patch = {"metadata": {"labels": {PART_OF: None}}}
    client.request(
        "PATCH",
        member.resource.object_path(member.oid.namespace or None, member.oid.name),
        body=patch,
        content_type="application/merge-patch+json",
    )


def prune(
    client: KubeClient,
    doomed: list[Member],
    inventory_id: str,
    *,
    dry_run: bool,
    progress: Callable[[str], None],
) -> list[Pruned]:
    """Delete each candidate, re-checking it right before: still ours, still the same object,
    not marked `lading.dev/prune: disabled`. Kept objects are released from the inventory."""
    return [_prune_one(client, m, inventory_id, dry_run, progress) for m in doomed]


def _prune_one(
    client: KubeClient,
    member: Member,
    inventory_id: str,
    dry_run: bool,
    progress: Callable[[str], None],
) -> Pruned:
    oid = member.oid
    where = f"{oid.kind}/{oid.name}" + (f" in {oid.namespace}" if oid.namespace else "")
    try:
        for _ in range(_ATTEMPTS):
            live = client.get(member.resource, oid.namespace or None, oid.name)
            if live is None:
                return Pruned(member, "deleted", "already gone")
            meta = live.get("metadata") or {}
            if member.uid and meta.get("uid") != member.uid:
                return Pruned(member, "kept", "deleted and recreated since; not ours any more")
            if not is_member(live, inventory_id):
                owner = owner_of(live, inventory_id)
                return Pruned(member, "kept", f"now held by {owner or 'nobody'}")
            current = Member(oid, member.resource, live)
            if current.prune_disabled:
                if not dry_run:
                    release(client, current)
                progress(f"kept {where}: {PRUNE_ANNOTATION}: {PRUNE_DISABLED}")
                return Pruned(member, "kept", f"{PRUNE_ANNOTATION}: {PRUNE_DISABLED}")
            try:
                client.delete(
                    member.resource,
                    oid.namespace or None,
                    oid.name,
                    dry_run=dry_run,
                    uid=current.uid or None,
                    resource_version=None if dry_run else str(meta.get("resourceVersion") or ""),
                )
            except KubeError as e:
                if e.status == 409:  # changed between our read and the delete: look again
                    continue
                raise
            progress(f"pruned {where}")
            return Pruned(member, "deleted")
        return Pruned(member, "failed", "kept changing while we tried to delete it; run again")
    except KubeError as e:
        return Pruned(member, "failed", e.message)
