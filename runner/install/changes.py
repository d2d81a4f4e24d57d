"""Deciding what an apply would do, from the server's own dry-run answer. Pure.

The preflight dry-run of each object returns the object as it would be stored. Compared with
the live object (ignoring bookkeeping the server changes on every write) it tells us whether
the real apply would change anything: an unchanged object is never re-written, so its
resourceVersion does not move.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from plans.install import Action
from runner.common.objects import Obj

_VOLATILE_META = ("resourceVersion", "generation", "creationTimestamp", "uid", "managedFields")


def comparable(obj: Obj) -> Obj:
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in _VOLATILE_META}
    return {**{k: v for k, v in obj.items() if k != "status"}, "metadata": meta}


def _owned(obj: Obj, manager: str) -> list[Any]:
    """What `manager` owns through apply, without timestamps: a change of ownership (taking
    over fields) is a change even when no value moves."""
    return sorted(
        (str(e.get("operation")), str(e.get("subresource", "")), repr(e.get("fieldsV1")))
        for e in (obj.get("metadata") or {}).get("managedFields") or []
        if e.get("manager") == manager
    )


def classify(would_be: Obj, live: Obj | None, manager: str) -> Action:
    """created | configured | unchanged."""
    if live is None:
        return "created"
    if comparable(would_be) != comparable(live):
        return "configured"
    if _owned(would_be, manager) != _owned(live, manager):
        return "configured"
    return "unchanged"


def _covers(value: Any, live: Any) -> bool:
    """Every field and value of `value` is in `live` (server defaults may add more). Lists
    must have the same length, item by item, since order and length are meaning."""
    if isinstance(value, dict):
        return isinstance(live, dict) and all(
            k in live and _covers(v, live[k]) for k, v in value.items()
        )
    if isinstance(value, list):
        return (
            isinstance(live, list)
            and len(value) == len(live)
            and all(_covers(v, lv) for v, lv in zip(value, live, strict=True))
        )
    return bool(value == live and type(value) is type(live))


def _selector_matches(selector: dict[str, Any], item: Any) -> bool:
    return isinstance(item, dict) and all(item.get(k) == v for k, v in selector.items())


def _same_paths(fields: Any, value: Any, live: Any) -> bool:
    """Does the managedFields set `fields` name exactly the paths present in `value`?

    `live` is the stored object at the same place (already known to cover `value` item by
    item): list keys in managedFields include defaulted fields (a port's protocol), so items
    are identified on the live side and checked on ours.
    """
    if fields == {} or not isinstance(fields, dict):
        return True  # a leaf: the whole value (scalar or atomic list/map) is owned
    children = {k: v for k, v in fields.items() if k != "."}
    if isinstance(value, dict):
        names = {f"f:{key}" for key in value}
        return set(children) == names and all(
            _same_paths(children[f"f:{key}"], sub, live[key]) for key, sub in value.items())
    if isinstance(value, list):
        if len(children) != len(value):
            return False
        for key, child in children.items():
            kind, _, raw = key.partition(":")
            try:
                ident: Any = json.loads(raw) if kind in ("k", "v") else int(raw)
            except ValueError:
                return False
            if kind == "k" and isinstance(ident, dict):
                matches = [i for i, item in enumerate(live) if _selector_matches(ident, item)]
                if len(matches) != 1 or not _same_paths(child, value[matches[0]],
                                                        live[matches[0]]):
                    return False
            elif kind == "v":
                if ident not in value:
                    return False
            elif kind == "i" and isinstance(ident, int):
                if not 0 <= ident < len(value) or not _same_paths(child, value[ident],
                                                                  live[ident]):
                    return False
            else:
                return False
        return True
    return False


def _stored_secret(desired: Obj, live: Obj) -> tuple[Obj, Obj] | None:
    """A Secret's `stringData` is write-only: the server merges it into `data` (base64, over
    any `data` key of the same name) and keeps only that, while managedFields still name the
    `stringData` keys the manager applied. Returns (desired as the server would store it, live
    with the applied `stringData` keys put back for the field-path check), or None when the
    Secret has no usable stringData."""
    string_data = desired.get("stringData")
    if not isinstance(string_data, dict) or not all(
        isinstance(v, str) for v in string_data.values()
    ):
        return None
    data = dict(desired.get("data") or {})
    data.update({k: base64.b64encode(v.encode()).decode() for k, v in string_data.items()})
    stored = {k: v for k, v in desired.items() if k != "stringData"}
    stored["data"] = data
    return stored, {**live, "stringData": string_data}


def unchanged_without_dry_run(desired: Obj, live: Obj | None, manager: str) -> bool:
    """True only when applying `desired` certainly changes nothing: every value is already
    live and `manager`'s applied field set is exactly `desired`'s fields. Anything doubtful
    (defaults rewritten, a stringData value that differs, a field given up) answers False,
    and the caller asks the server with a dry-run instead. Pure."""
    if live is None:
        return False
    stored, path_live = desired, live
    if desired.get("kind") == "Secret" and "stringData" in desired:
        view = _stored_secret(desired, live)
        if view is None:
            return False
        stored, path_live = view
    if not _covers(comparable(stored), comparable(live)):
        return False
    applied = [
        e
        for e in (live.get("metadata") or {}).get("managedFields") or []
        if e.get("manager") == manager
        and e.get("operation") == "Apply"
        and not e.get("subresource")
    ]
    if len(applied) != 1:
        return False
    body = {k: v for k, v in desired.items() if k not in ("apiVersion", "kind")}
    meta = {k: v for k, v in (body.get("metadata") or {}).items() if k not in ("name", "namespace")}
    if meta:
        body["metadata"] = meta
    else:
        body.pop("metadata", None)
    return _same_paths(applied[0].get("fieldsV1") or {}, body, path_live)
