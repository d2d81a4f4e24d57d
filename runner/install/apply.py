"""Server-side apply of planned objects: dry-run preflight, staged apply with bounded
concurrency, conflict reporting and take-over, and recreate on immutable-field errors."""

from __future__ import annotations

import re
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

from runner.common.crew import Crew
from runner.common.kube import KubeClient, KubeError
from runner.common.objects import Obj, ObjectId
from runner.install.ownership import named_by
from runner.install.resolve import Planned

T = TypeVar("T")
R = TypeVar("R")

_CONFLICT_MANAGER = re.compile(r'conflict with "([^"]+)"')
# The apiserver's wording for a value of the wrong type in an apply patch (see kube.py).
_TYPED_PATCH = re.compile(
    r"failed to create typed patch object \([^)]*\): (?P<field>\S+): (?P<problem>[^,]+), got "
    r"&value\.valueUnstructured\{Value:(?P<value>.*)\}$",
    re.DOTALL,
)


@dataclass(frozen=True)
class ApplyOptions:
    field_manager: str = "lading"
    force_conflicts: bool = False
    take_ownership: tuple[str, ...] = ()
    recreate_on_immutable: bool = False
    recreate: tuple[str, ...] = ()
    concurrency: int = 64


@dataclass(frozen=True)
class Outcome:
    """What happened to one object: the stored object, or an error a user can act on."""

    planned: Planned
    result: Obj | None
    error: str | None = None
    status: int = 0  # HTTP status of the failure, 0 when it succeeded


# One crew for every wave of the process: its threads outlive a wave, so the dry-runs, the
# writes and the LISTs of an install, and the installs of a worker, start no thread twice.
_REQUESTS = Crew("lading-request")


def parallel(items: Iterable[T], fn: Callable[[T], R], concurrency: int) -> list[R]:
    """[fn(item) for item in items], `concurrency` at a time (runner.common.crew)."""
    return _REQUESTS.map(fn, list(items), concurrency)


def conflict_managers(error: KubeError) -> dict[str, list[str]]:
    """manager → fields it owns that our apply would change, from a 409 Status."""
    found: dict[str, list[str]] = defaultdict(list)
    for cause in error.causes:
        match = _CONFLICT_MANAGER.search(str(cause.get("message", "")))
        if match:
            found[match.group(1)].append(str(cause.get("field", "")))
    return dict(found)


def describe_error(error: KubeError) -> str:
    if error.is_conflict:
        managers = conflict_managers(error)
        if managers:
            owned = "; ".join(
                f"{m} owns {', '.join(sorted(f))}" for m, f in sorted(managers.items())
            )
            return (
                f"conflict: {owned} — pass --force-conflicts to take these fields, or "
                "--take-ownership MANAGER"
            )
    if error.causes and error.is_invalid:
        details = "; ".join(
            f"{c.get('field', '')}: {c.get('message', '')}".strip(": ") for c in error.causes
        )
        return f"invalid: {details}"
    typed = _TYPED_PATCH.search(error.message) if error.is_invalid else None
    if typed:
        # Go's struct syntax around the value says nothing to a user.
        return f"invalid: {typed['field']}: {typed['problem']}, got {typed['value']}"
    return error.message


def may_take_over(managers: Iterable[str], allowed: Iterable[str]) -> bool:
    allowed = tuple(allowed)
    return bool(allowed) and all(any(m.startswith(a) for a in allowed) for m in managers)


def may_recreate(oid: ObjectId, options: ApplyOptions) -> bool:
    # --recreate names objects the way --adopt does (Kind/name, Kind/namespace/name, patterns).
    return options.recreate_on_immutable or named_by(oid, options.recreate)


def apply_one(
    client: KubeClient, planned: Planned, options: ApplyOptions, dry_run: bool = False,
    answer: bool = True, validated: bool = False,
) -> Outcome:
    """Apply (or dry-run) one object. With `answer` False a success's result is {}: the
    caller needs no stored object, so none is decoded. `validated`: the same body passed a
    strict dry-run in this run (KubeClient.apply)."""
    force = options.force_conflicts

    def send(force: bool) -> Outcome:
        return Outcome(planned, client.apply(planned.resource, planned.obj,
                                             field_manager=options.field_manager,
                                             force=force, dry_run=dry_run, answer=answer,
                                             validated=validated))

    try:
        try:
            return send(force)
        except KubeError as e:
            if e.is_conflict and not force and may_take_over(conflict_managers(e),
                                                             options.take_ownership):
                return send(True)
            if e.is_immutable and may_recreate(planned.oid, options):
                # A dry-run cannot show a recreation; the real apply performs it.
                if dry_run:
                    return Outcome(planned, None)
                return Outcome(planned, recreate(client, planned, options))
            raise
    except KubeError as e:
        message = describe_error(e)
        if e.is_immutable and not may_recreate(planned.oid, options):
            message += (
                " — the object must be recreated: pass --recreate-on-immutable, or "
                f"--recreate {planned.oid.kind}/{planned.oid.name}"
            )
        return Outcome(planned, None, message, e.status)


def recreate(
    client: KubeClient, planned: Planned, options: ApplyOptions, timeout: float = 60.0
) -> Obj:
    """Delete and wait until gone, then apply. Background propagation: the object goes at
    once and the garbage collector (if the cluster runs one) cleans up its dependents; a
    foreground delete would hang forever on a cluster without one."""
    oid = planned.oid
    client.delete(planned.resource, oid.namespace or None, oid.name, propagation="Background")
    deadline = time.monotonic() + timeout
    while client.get(planned.resource, oid.namespace or None, oid.name) is not None:
        if time.monotonic() > deadline:
            raise KubeError(
                504,
                "Timeout",
                f"{oid.kind} {oid.name} was not deleted within {timeout:.0f}s for recreation",
                [],
                {},
            )
        time.sleep(0.2)
    return client.apply(
        planned.resource,
        planned.obj,
        field_manager=options.field_manager,
        force=options.force_conflicts,
    )
