"""Drift: how a live object differs from what applying the artifact would make of it. Pure.

The engine (runner.install.engine.Engine.drift) asks the server for a forced server-side
dry-run apply — "this is what the object would be if lading applied the artifact now" — and
compares it here with the live object. A difference is drift unless the field is owned on
purpose by someone else: a controller writing through a subresource (an HPA setting replicas
through `scale`) or another declarative tool's apply. Field paths are written the way the API
server writes them in conflicts (`.spec.containers[name="app"].image`).
"""

from __future__ import annotations

import difflib
import json
from typing import Any

import yaml

from plans.install import FieldDiff, ObjectDrift
from runner.common.objects import Obj
from runner.install.changes import comparable

Segment = tuple[str, Any]  # ("f", key) | ("k", item) | ("i", index)
MASK = "(hidden)"
# `kubectl apply` keeps a copy of what it applied, a Secret's values included, in this
# annotation; on a Secret it is as secret as `data`.
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def _path_text(path: list[Segment]) -> str:
    out = ""
    for kind, value in path:
        if kind == "f":
            out += f".{value}"
        elif kind == "k":  # the API server's own notation, as in its conflict messages
            out += f"[name={json.dumps(value.get('name'))}]"
        else:
            out += f"[{value}]"
    return out or "."


def _named_list(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(i, dict) and "name" in i for i in value)
    )


def differences(
    want: Any, have: Any, path: list[Segment] | None = None
) -> list[tuple[list[Segment], Any, Any]]:
    """Leaf-level differences between two JSON values. Lists of named items (containers,
    ports, env) are matched by name; other lists compare whole. Pure."""
    path = path or []
    if isinstance(want, dict) and isinstance(have, dict):
        found = []
        for key in sorted(set(want) | set(have)):
            found += differences(want.get(key), have.get(key), [*path, ("f", key)])
        return found
    if _named_list(want) and _named_list(have):
        found = []
        have_by_name = {i["name"]: i for i in have}
        want_by_name = {i["name"]: i for i in want}
        for name in list(want_by_name) + [n for n in have_by_name if n not in want_by_name]:
            item = want_by_name.get(name) or have_by_name[name]
            found += differences(
                want_by_name.get(name), have_by_name.get(name), [*path, ("k", item)]
            )
        return found
    return [] if want == have else [(path, want, have)]


def _fields_node(node: Any, segment: Segment) -> Any:
    kind, value = segment
    if not isinstance(node, dict):
        return None
    if kind == "f":
        return node.get(f"f:{value}")
    if kind == "k":
        for key, child in node.items():
            if key.startswith("k:"):
                try:
                    selector = json.loads(key[2:])
                except ValueError:
                    continue
                if all(value.get(k) == v for k, v in selector.items()):
                    return child
        return None
    return node.get(f"i:{value}")


def owns(fields: Any, path: list[Segment]) -> bool:
    """Does a managedFields fieldsV1 set cover `path`? A leaf ({}) covers everything below."""
    node = fields
    for segment in path:
        if node == {}:
            return True
        node = _fields_node(node, segment)
        if node is None:
            return False
    return True


def owned_on_purpose(live: Obj, path: list[Segment], manager: str) -> str | None:
    """The other manager that owns `path` deliberately, if any."""
    for entry in (live.get("metadata") or {}).get("managedFields") or []:
        other = entry.get("manager", "")
        if other == manager:
            continue
        deliberate = entry.get("operation") == "Apply" or bool(entry.get("subresource"))
        if deliberate and owns(entry.get("fieldsV1") or {}, path):
            return str(other)
    return None


def _secret_path(obj: Obj, path: list[Segment]) -> bool:
    return (
        obj.get("kind") == "Secret"
        and bool(path)
        and (
            path[0] in (("f", "data"), ("f", "stringData"))
            or path[:3] == [("f", "metadata"), ("f", "annotations"), ("f", LAST_APPLIED)]
        )
    )


def mask_secret(obj: Obj) -> Obj:
    if obj.get("kind") != "Secret":
        return obj
    masked = dict(obj)
    for key in ("data", "stringData"):
        if isinstance(obj.get(key), dict):
            masked[key] = dict.fromkeys(obj[key], MASK)
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    if LAST_APPLIED in annotations:
        masked["metadata"] = {
            **obj["metadata"],
            "annotations": {**annotations, LAST_APPLIED: MASK},
        }
    return masked


def compare(want: Obj, live: Obj, manager: str, oid: str) -> ObjectDrift:
    """One object's drift report. Pure."""
    fields = []
    for path, w, h in differences(comparable(want), comparable(live)):
        if owned_on_purpose(live, path, manager):
            continue
        secret = _secret_path(want, path)
        fields.append(
            FieldDiff(
                path=_path_text(path),
                want=MASK if secret and w is not None else w,
                have=MASK if secret and h is not None else h,
            )
        )
    if not fields:
        return ObjectDrift(id=oid, state="in-sync")
    return ObjectDrift(
        id=oid,
        state="drifted",
        fields=fields,
        diff=unified(mask_secret(comparable(live)), mask_secret(comparable(want)), oid),
    )


def unified(have: Obj, want: Obj, name: str) -> str:
    def text(obj: Obj) -> list[str]:
        return yaml.safe_dump(obj, sort_keys=True).splitlines(keepends=True)

    return "".join(difflib.unified_diff(text(have), text(want), f"live/{name}", f"artifact/{name}"))
