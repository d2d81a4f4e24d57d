"""Deciding what an apply would do, from the server's own dry-run answer. Pure.

The preflight dry-run of each object returns the object as it would be stored. Compared with
the live object (ignoring bookkeeping the server changes on every write) it tells us whether
the real apply would change anything: an unchanged object is never re-written, so its
resourceVersion does not move.
"""

from __future__ import annotations

from typing import Any

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


def classify(would_be: Obj, live: Obj | None, manager: str) -> str:
    """created | configured | unchanged."""
    if live is None:
        return "created"
    if comparable(would_be) != comparable(live):
        return "configured"
    if _owned(would_be, manager) != _owned(live, manager):
        return "configured"
    return "unchanged"
