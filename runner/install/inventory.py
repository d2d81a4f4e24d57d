"""The inventory: a kubectl ApplySet (KEP-3659) parent Secret that lists which group-kinds this
install owns, labels members `applyset.kubernetes.io/part-of`, and records the installed
digest and a short history so `rollback` can reinstall the previous one."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from runner import __version__
from runner.common.errors import InputError
from runner.common.kube import KubeClient, Resource
from runner.common.objects import Obj
from runner.install.ownership import INVENTORY_ANNOTATION, PART_OF

__all__ = ["PART_OF", "Inventory", "applyset_id", "label_member", "parent_name"]

ID_LABEL = "applyset.kubernetes.io/id"
TOOLING = "applyset.kubernetes.io/tooling"
GROUP_KINDS = "applyset.kubernetes.io/contains-group-kinds"
NAMESPACES = "applyset.kubernetes.io/additional-namespaces"
DIGEST = "lading.dev/digest"
REF = "lading.dev/ref"
HISTORY = "lading.dev/history"
HISTORY_LENGTH = 10

SECRET = Resource("", "v1", "Secret", "secrets", True)


def applyset_id(name: str, namespace: str, kind: str = "Secret", group: str = "") -> str:
    """KEP-3659: applyset-<base64url(sha256(name.namespace.kind.group))>-v1."""
    digest = hashlib.sha256(f"{name}.{namespace}.{kind}.{group}".encode()).digest()
    return f"applyset-{base64.urlsafe_b64encode(digest).decode().rstrip('=')}-v1"


def parent_name(inventory: str) -> str:
    return f"lading-{inventory}"


@dataclass(frozen=True)
class HistoryEntry:
    digest: str
    ref: str
    installed: str

    def to_json(self) -> dict[str, str]:
        return {"digest": self.digest, "ref": self.ref, "installed": self.installed}


@dataclass(frozen=True)
class Inventory:
    name: str
    namespace: str
    group_kinds: frozenset[str] = frozenset()
    namespaces: frozenset[str] = frozenset()
    digest: str | None = None
    ref: str | None = None
    history: tuple[HistoryEntry, ...] = field(default_factory=tuple)
    exists: bool = False

    @property
    def id(self) -> str:
        return applyset_id(parent_name(self.name), self.namespace)

    def parent(self, field_manager_tool: str = f"lading/v{__version__}") -> Obj:
        annotations = {
            TOOLING: field_manager_tool,
            GROUP_KINDS: ",".join(sorted(self.group_kinds)),
            NAMESPACES: ",".join(sorted(self.namespaces - {self.namespace})),
            HISTORY: json.dumps([h.to_json() for h in self.history], separators=(",", ":")),
        }
        if self.digest:
            annotations[DIGEST] = self.digest
        if self.ref:
            annotations[REF] = self.ref
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": parent_name(self.name),
                "namespace": self.namespace,
                "labels": {ID_LABEL: self.id},
                "annotations": annotations,
            },
            "type": "lading.dev/inventory",
        }

    def recorded(self, digest: str, ref: str) -> Inventory:
        """This inventory after installing `digest`: current digest set, history appended."""
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        history = [h for h in self.history if h.digest != digest]
        history.append(HistoryEntry(digest, ref, now))
        return Inventory(
            self.name,
            self.namespace,
            self.group_kinds,
            self.namespaces,
            digest,
            ref,
            tuple(history[-HISTORY_LENGTH:]),
            self.exists,
        )

    def with_members(self, group_kinds: set[str], namespaces: set[str]) -> Inventory:
        return Inventory(
            self.name,
            self.namespace,
            frozenset(group_kinds),
            frozenset(namespaces),
            self.digest,
            self.ref,
            self.history,
            self.exists,
        )


def group_kind(group: str, kind: str) -> str:
    return f"{kind}.{group}" if group else kind


def split_group_kind(text: str) -> tuple[str, str]:
    kind, _, group = text.partition(".")
    return group, kind


def from_parent(name: str, namespace: str, parent: Obj | None) -> Inventory:
    if parent is None:
        return Inventory(name, namespace)
    meta = parent.get("metadata") or {}
    annotations: dict[str, Any] = meta.get("annotations") or {}
    tooling = str(annotations.get(TOOLING, ""))
    if tooling and not tooling.startswith("lading/"):
        raise InputError(
            f"inventory {namespace}/{parent_name(name)} belongs to {tooling}, not lading",
            hint="choose another --inventory name; lading never takes over another tool's ApplySet",
        )
    try:
        history = tuple(
            HistoryEntry(h["digest"], h["ref"], h["installed"])
            for h in json.loads(annotations.get(HISTORY) or "[]")
        )
    except (ValueError, KeyError, TypeError):
        history = ()
    kinds = {k for k in str(annotations.get(GROUP_KINDS, "")).split(",") if k}
    spaces = {n for n in str(annotations.get(NAMESPACES, "")).split(",") if n} | {namespace}
    return Inventory(
        name,
        namespace,
        frozenset(kinds),
        frozenset(spaces),
        annotations.get(DIGEST),
        annotations.get(REF),
        history,
        exists=True,
    )


def read(client: KubeClient, name: str, namespace: str) -> Inventory:
    return from_parent(name, namespace, client.get(SECRET, namespace, parent_name(name)))


def write(client: KubeClient, inventory: Inventory, field_manager: str) -> None:
    client.apply(SECRET, inventory.parent(), field_manager=field_manager, force=True)


def delete(client: KubeClient, inventory: Inventory) -> None:
    client.delete(SECRET, inventory.namespace, parent_name(inventory.name))


def label_member(obj: Obj, inventory_id: str, inventory: str | None = None) -> Obj:
    """A copy of `obj` carrying the part-of label, and the `namespace/name` of the inventory so
    another install can say whose it is (both part of the applied config, so they are owned
    by our field manager like every other field we set)."""
    meta = dict(obj.get("metadata") or {})
    meta["labels"] = {**(meta.get("labels") or {}), PART_OF: inventory_id}
    if inventory:
        meta["annotations"] = {**(meta.get("annotations") or {}), INVENTORY_ANNOTATION: inventory}
    return {**obj, "metadata": meta}
