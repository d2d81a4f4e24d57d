"""Who owns a live object, and whether this install may touch it. Pure.

An object another owner holds — another lading inventory or kubectl ApplySet, a Helm release,
a Flux Kustomization or HelmRelease — is never taken over silently: preflight refuses it unless
the plan asks to adopt it by name (`--adopt KIND/NAME`, or `all`). Helm refuses an object that
belongs to another release for the same reason; kubectl's ApplySets and lading before this
check would relabel it, after which pruning or uninstalling the new owner deletes it from under
the old one.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass

from runner.common.objects import Obj, ObjectId

PART_OF = "applyset.kubernetes.io/part-of"
INVENTORY_ANNOTATION = "lading.dev/inventory"  # "namespace/name" of the owning inventory
HELM_RELEASE = "meta.helm.sh/release-name"
HELM_NAMESPACE = "meta.helm.sh/release-namespace"
FLUX_KUSTOMIZATION = "kustomize.toolkit.fluxcd.io/name"
FLUX_KUSTOMIZATION_NS = "kustomize.toolkit.fluxcd.io/namespace"
FLUX_HELMRELEASE = "helm.toolkit.fluxcd.io/name"
FLUX_HELMRELEASE_NS = "helm.toolkit.fluxcd.io/namespace"


@dataclass(frozen=True)
class Owner:
    """Another owner of an object, in words a reviewer recognises."""

    kind: str  # inventory | applyset | helm | flux
    name: str

    def __str__(self) -> str:
        return {
            "inventory": f"lading inventory {self.name}",
            "applyset": f"ApplySet {self.name}",
            "helm": f"Helm release {self.name}",
            "flux": f"Flux {self.name}",
        }.get(self.kind, self.name)


def _meta(obj: Obj) -> tuple[dict[str, str], dict[str, str]]:
    meta = obj.get("metadata") or {}
    return dict(meta.get("labels") or {}), dict(meta.get("annotations") or {})


def _qualified(namespace: str | None, name: str) -> str:
    return f"{namespace}/{name}" if namespace else name


def owner_of(live: Obj, inventory_id: str) -> Owner | None:
    """The owner of `live` other than the inventory `inventory_id`, or None when the object is
    this inventory's own or nobody's. Membership of this inventory wins: an object adopted
    earlier keeps the marks of its previous owner, and it is ours now."""
    labels, annotations = _meta(live)
    part_of = labels.get(PART_OF)
    if part_of == inventory_id:
        return None
    if part_of:
        named = annotations.get(INVENTORY_ANNOTATION)
        return Owner("inventory", named) if named else Owner("applyset", part_of)
    if annotations.get(HELM_RELEASE):
        return Owner(
            "helm", _qualified(annotations.get(HELM_NAMESPACE), annotations[HELM_RELEASE])
        )
    if labels.get(FLUX_KUSTOMIZATION):
        return Owner(
            "flux",
            "Kustomization "
            + _qualified(labels.get(FLUX_KUSTOMIZATION_NS), labels[FLUX_KUSTOMIZATION]),
        )
    if labels.get(FLUX_HELMRELEASE):
        return Owner(
            "flux",
            "HelmRelease " + _qualified(labels.get(FLUX_HELMRELEASE_NS), labels[FLUX_HELMRELEASE]),
        )
    return None


def is_member(live: Obj, inventory_id: str) -> bool:
    labels, _ = _meta(live)
    return labels.get(PART_OF) == inventory_id


def object_forms(oid: ObjectId) -> set[str]:
    """The ways a person may name an object on the command line: `Kind/name`,
    `Kind/namespace/name`, `Kind.group/name` and the full id."""
    forms = {str(oid), f"{oid.kind}/{oid.name}", f"{oid.group_kind}/{oid.name}"}
    if oid.namespace:
        forms |= {f"{oid.kind}/{oid.namespace}/{oid.name}",
                  f"{oid.group_kind}/{oid.namespace}/{oid.name}"}
    return forms


def named_by(oid: ObjectId, patterns: Iterable[str]) -> bool:
    """Does any pattern (`all`, `*`, or a shell pattern over `object_forms`) name `oid`?"""
    forms = object_forms(oid)
    for pattern in patterns:
        if pattern in ("all", "*"):
            return True
        if any(fnmatch.fnmatchcase(f, pattern) for f in forms):
            return True
    return False


@dataclass(frozen=True)
class Claim:
    """An object that another owner holds, and whether the plan adopts it."""

    oid: ObjectId
    owner: Owner
    adopted: bool


def claims(
    desired: Iterable[tuple[ObjectId, Obj | None]], inventory_id: str, adopt: Iterable[str]
) -> list[Claim]:
    """Every desired object whose live form belongs to another owner. Pure."""
    patterns = tuple(adopt)
    found = []
    for oid, live in desired:
        if live is None:
            continue
        owner = owner_of(live, inventory_id)
        if owner is not None:
            found.append(Claim(oid, owner, named_by(oid, patterns)))
    return found
