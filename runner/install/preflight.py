"""Everything an install checks before its first write, and the one write it may make to check
the rest (new CRDs, deleted again when what depends on them is invalid).

The policy — ownership, namespace scope, lading's own control objects, what a prune would
lose — is pure (runner.install.ownership, scope, loss) and enforced here for install and
rollback alike; uninstall enforces the loss rule the same way.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

from plans.install import InstallPlan, Refusal
from runner.common.kube import KubeError
from runner.common.objects import Obj, ObjectId
from runner.install import inventory as inv
from runner.install.apply import Outcome, apply_one
from runner.install.engine import FIRST_STAGE_TIMEOUT, Engine, Prediction, named
from runner.install.loss import losses
from runner.install.ownership import claims
from runner.install.prune import Member, candidates, members
from runner.install.resolve import NAMESPACES, Planned
from runner.install.scope import control_collisions, outside, own_namespaces
from runner.install.wait import wait

STAND_IN_NAMESPACE = "default"


class Refused(Exception):
    """Preflight said no. `refusals` name objects and reasons (policy), or `failures` are the
    server's dry-run errors; either way nothing was written."""

    def __init__(self, refusals: list[Refusal], failures: list[Outcome] | None = None,
                 message: str | None = None):
        super().__init__(message or "refused")
        self.refusals = refusals
        self.failures = failures or []
        self.message = message


@dataclass
class Checked:
    """What preflight found: the objects, their live state and predicted outcome, what prune
    will delete, and what the policy allowed (adoptions)."""

    planned: list[Planned]
    inventory_id: str
    ready_now: list[Planned]  # objects the cluster can check as they are
    live: dict[ObjectId, Obj]
    prediction: Prediction
    current: inv.Inventory
    doomed: list[Member]
    existing_namespaces: set[str]
    adopted: dict[ObjectId, str] = field(default_factory=dict)  # id → previous owner
    checked_elsewhere: set[ObjectId] = field(default_factory=set)  # dry-run in a stand-in ns


def member_of(p: Planned, inventory_id: str, owner_ref: str) -> Planned:
    return Planned(inv.label_member(p.obj, inventory_id, owner_ref), p.oid, p.resource,
                   p.stage, p.where, p.kind_pending, p.namespace_pending)


def check(
    engine: Engine,
    plan: InstallPlan,
    planned: list[Planned],
    namespace: str,
    inventory: str,
    existing_namespaces: set[str],
) -> Checked:
    """Every check that needs no write. Raises Refused."""
    client = engine.client
    inventory_id = inv.applyset_id(inv.parent_name(inventory), namespace)
    planned = [member_of(p, inventory_id, f"{namespace}/{inventory}") for p in planned]

    collisions = control_collisions((p.oid for p in planned), inv.parent_name(inventory),
                                    namespace)
    if collisions:
        raise Refused([Refusal(
            id=str(o), reason=f"collides with lading's own inventory {o.kind.lower()} for "
            f"inventory {inventory!r}; rename it in the artifact or install into another "
            "inventory") for o in collisions])

    ready_now = [p for p in planned if not (p.kind_pending or p.namespace_pending)]
    with ThreadPoolExecutor(max_workers=1) as pool:  # the inventory, while the LISTs run
        reading = pool.submit(inv.read, client, inventory, namespace) \
            if namespace in existing_namespaces else None
        live = engine.live(ready_now)
        current = reading.result() if reading else inv.Inventory(inventory, namespace)
    check_scope(plan, planned, live, namespace, inventory_id)
    adopted = check_ownership(plan, ready_now, live, inventory_id)

    doomed: list[Member] = []
    if plan.prune and current.exists:
        everyone = members(client, current, engine.listed, engine.options.concurrency)
        doomed = candidates(everyone, {p.oid.identity() for p in planned})
        if not plan.allow_data_loss:
            refusals = losses(client, doomed, everyone, current)
            if refusals:
                raise Refused(refusals)

    prediction = engine.predict(ready_now, live)
    if prediction.failures:
        raise Refused([], prediction.failures)
    checked = Checked(planned, inventory_id, ready_now, live, prediction, current, doomed,
                      existing_namespaces, adopted)
    checked.checked_elsewhere = _dry_run_elsewhere(engine, checked, namespace)
    return checked


def check_scope(plan: InstallPlan, planned: list[Planned], live: dict[ObjectId, Obj],
                namespace: str, inventory_id: str) -> None:
    artifact_namespaces = [p.oid.name for p in planned
                           if p.oid.kind == "Namespace" and p.oid.group == ""]
    live_namespaces = {o.name: live[o] for o in live if o.kind == "Namespace" and o.group == ""}
    owned = own_namespaces(namespace, artifact_namespaces, live_namespaces, inventory_id)
    stray = outside((p.oid for p in planned), owned, plan.allow_namespaces)
    if stray:
        raise Refused([Refusal(
            id=str(o), reason=f"namespace {o.namespace!r} is outside this install (namespace "
            f"{namespace!r}); pass --allow-namespace {o.namespace} (allow_namespaces in a "
            f"plan), or -n {o.namespace}") for o in stray])


def check_ownership(plan: InstallPlan, ready_now: list[Planned], live: dict[ObjectId, Obj],
                    inventory_id: str) -> dict[ObjectId, str]:
    """Refuses objects another owner holds unless adopted; returns the adoptions."""
    found = claims(((p.oid, live.get(p.oid)) for p in ready_now), inventory_id, plan.adopt)
    refused = [c for c in found if not c.adopted]
    if refused:
        raise Refused([Refusal(
            id=str(c.oid), reason=f"belongs to {c.owner}; lading never takes over another "
            f"owner's object silently: pass --adopt {c.oid.kind}/{c.oid.name} (adopt: in a "
            "plan) to take it over") for c in refused])
    return {c.oid: str(c.owner) for c in found}


def _in_namespace(p: Planned, namespace: str) -> Planned:
    obj = {**p.obj, "metadata": {**p.obj["metadata"], "namespace": namespace}}
    return Planned(obj, replace(p.oid, namespace=namespace), p.resource, p.stage, p.where,
                   False, False)


def _pending_namespaces(planned: list[Planned]) -> set[str]:
    return {p.oid.namespace for p in planned if p.namespace_pending}


def _stand_in(namespace: str, planned: list[Planned]) -> str:
    return namespace if namespace not in _pending_namespaces(planned) else STAND_IN_NAMESPACE


def _originals(outcomes: list[Outcome], originals: list[Planned]) -> list[Outcome]:
    """Outcomes of stand-in dry-runs, told about the objects they stood in for."""
    by_name = {(p.oid.group, p.oid.kind, p.oid.name): p for p in originals}
    return [Outcome(by_name[(o.planned.oid.group, o.planned.oid.kind, o.planned.oid.name)],
                    o.result, o.error, o.status) for o in outcomes]


def _dry_run_elsewhere(engine: Engine, checked: Checked, namespace: str) -> set[ObjectId]:
    """Objects whose namespace does not exist yet (the artifact or --create-namespace makes
    it) cannot be dry-run where they will live. Dry-run them in a stand-in namespace instead:
    validation and defaulting do not depend on the namespace. Returns those it checked; the
    rest (a namesake lives in the stand-in, or we may not write there) wait for `check_pending`.
    """
    waiting = [p for p in checked.planned if p.namespace_pending and not p.kind_pending]
    if not waiting:
        return set()
    moved = [_in_namespace(p, _stand_in(namespace, checked.planned)) for p in waiting]
    try:
        taken = engine.live(moved)
    except KubeError:
        return set()
    outcomes = _originals(engine.dry_run([m for m in moved if m.oid not in taken]), waiting)
    bad = [o for o in outcomes if o.error and o.status not in (403, 404)]
    if bad:
        raise Refused([], bad)
    return {o.planned.oid for o in outcomes if not o.error}


def check_pending(engine: Engine, checked: Checked, namespace: str,
                  namespace_for: Callable[[str], Planned], created: list[Planned],
                  precreated: set[ObjectId]) -> None:
    """Validate what could not be validated before anything existed: custom resources whose
    CRD is in this artifact, and objects the stand-in namespace could not take. Creates the
    new CRDs first (and, only where no stand-in namespace would do, the namespaces), adding
    each to `created` for the caller to delete again when this raises."""
    planned = checked.planned
    kinds = [p for p in planned if p.kind_pending]
    others = [p for p in planned if p.namespace_pending and not p.kind_pending
              and p.oid not in checked.checked_elsewhere]
    if not kinds and not others:
        return
    crds = [p for p in planned if p.oid.kind == "CustomResourceDefinition"
            and p.oid not in checked.live] if kinds else []
    engine.progress(f"preflight: creating {len(crds)} CRD(s) to validate {len(kinds)} "
                    "object(s) of their kinds (undone if validation fails)")
    _create(engine, crds, created, precreated)
    for p in kinds:
        engine.client.forget(p.oid.api_version)
    refreshed = {p.oid: Planned(p.obj, p.oid, engine.client.resource_for(
        p.oid.api_version, p.oid.kind) or p.resource, p.stage, p.where, False, False)
        for p in kinds}
    elsewhere = [p for p in kinds if p.namespace_pending]
    stand_in = _stand_in(namespace, planned)
    outcomes = _originals(engine.dry_run([_in_namespace(refreshed[p.oid], stand_in)
                                          for p in elsewhere]), elsewhere)
    failures = [o for o in outcomes if o.error and o.status not in (403, 404)]
    if failures:
        raise Refused([], failures)
    # The stand-in would not take these: their own namespaces must exist to check them.
    homeless = others + [refreshed[o.planned.oid] for o in outcomes if o.error]
    needed = {p.oid.namespace for p in homeless}
    spaces = [p for p in planned if p.oid.kind == "Namespace" and p.oid.group == ""
              and p.oid.name in needed]
    spaces += [namespace_for(n) for n in sorted(needed - {p.oid.name for p in spaces})]
    if spaces:
        engine.progress(f"preflight: creating {len(spaces)} namespace(s) to validate "
                        f"{len(homeless)} object(s) in them (undone if validation fails)")
        _create(engine, spaces, created, precreated)
    direct = [refreshed[p.oid] for p in kinds if not p.namespace_pending] + homeless
    failures = [o for o in engine.dry_run(direct) if o.error]
    if failures:
        raise Refused([], failures)


def _create(engine: Engine, items: list[Planned], created: list[Planned],
            precreated: set[ObjectId]) -> None:
    """Apply `items` for real and wait until they are ready (CRDs established, namespaces
    active), recording each for undo."""
    for p in items:
        outcome = apply_one(engine.client, p, engine.options)
        if outcome.error:
            raise Refused([], [outcome])
        created.append(p)
        precreated.add(p.oid)
    waiting = wait(engine.client, [(p.oid, p.resource) for p in items], FIRST_STAGE_TIMEOUT,
                   engine.progress, interval=0.2)
    if waiting:
        raise Refused([], message="CRDs/Namespaces did not become ready: " + "; ".join(
            f"{named(w.oid)}: {w.reason}" for w in waiting))


def undo(engine: Engine, created: list[Planned]) -> None:
    """Delete what this run created before it was refused, newest first, and wait until it is
    gone, so a refused install leaves the cluster as it found it."""
    client = engine.client
    for p in reversed(created):
        try:
            client.delete(p.resource, p.oid.namespace or None, p.oid.name)
        except KubeError as e:
            engine.progress(f"could not remove {named(p.oid)} again: {e.message}")
    deadline = time.monotonic() + FIRST_STAGE_TIMEOUT
    for p in created:
        if p.oid.kind == "Namespace":
            continue  # the namespace controller finishes this; nothing in it was written
        while (client.get(p.resource, p.oid.namespace or None, p.oid.name) is not None
               and time.monotonic() < deadline):
            time.sleep(0.1)
    if created:
        engine.progress(f"removed {len(created)} object(s) this install had created")


__all__ = ["NAMESPACES", "Checked", "Refused", "check", "check_pending", "undo"]
