"""The install runner: InstallPlan → fetch+verify → resolve → preflight → staged apply → prune →
wait → record → InstallResult.

All or nothing: everything is checked before the first write — ownership (no silent takeover
of another owner's object), namespace scope, lading's own control objects, what a prune would
lose, and a server-side dry-run of every object. Objects in a namespace that does not exist yet
are dry-run in a stand-in namespace. Only custom resources whose CRD comes in the same
artifact cannot be checked before that CRD exists: the new CRDs are created first, those
objects dry-run, and on failure the CRDs are deleted again, so a refused install leaves the
cluster as it found it.
"""

from __future__ import annotations

import re
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

from plans.install import Adoption, Change, InstallPlan, InstallResult, Refusal, TargetSpec
from runner.common.errors import InputError, OperationFailed
from runner.common.kube import KubeClient, KubeError, Resource, Target
from runner.common.objects import Obj, ObjectId, sort_key
from runner.common.output import silent
from runner.install import inventory as inv
from runner.install.apply import ApplyOptions, Outcome, apply_one, parallel
from runner.install.changes import classify, unchanged_without_dry_run
from runner.install.fetch import Fetched, fetch
from runner.install.lease import held
from runner.install.loss import losses
from runner.install.order import STAGES
from runner.install.ownership import claims
from runner.install.prune import Member, candidates, members, prune
from runner.install.resolve import NAMESPACES, Planned, namespaces_present, resolve
from runner.install.scope import cluster_scoped, control_collisions, outside, own_namespaces
from runner.install.wait import explain, wait

Progress = Callable[[str], None]
FIRST_STAGE_TIMEOUT = 60.0
LOCK_TIMEOUT = 120.0


class InstallFailed(OperationFailed):
    """The install ran and failed; `result` says what happened to every object."""

    def __init__(self, result: InstallResult, exit_code: int = 1):
        super().__init__(result.error or "install failed")
        self.result = result
        self.exit_code = exit_code


def target_from(spec: TargetSpec) -> Target:
    token = spec.token.get_secret_value() if spec.token else None
    if spec.token_file:
        try:
            with open(spec.token_file) as f:
                token = f.read().strip()
        except OSError as e:
            raise InputError(f"cannot read token_file {spec.token_file}: {e.strerror}") from None
    return Target(
        kubeconfig=spec.kubeconfig,
        context=spec.context,
        in_cluster=spec.in_cluster,
        server=spec.server,
        ca_file=spec.ca_file,
        token=token,
    )


def apply_options(plan: InstallPlan) -> ApplyOptions:
    return ApplyOptions(
        field_manager=plan.field_manager,
        force_conflicts=plan.force_conflicts,
        take_ownership=tuple(plan.take_ownership),
        recreate_on_immutable=plan.recreate_on_immutable,
        recreate=tuple(plan.recreate),
        concurrency=plan.concurrency,
    )


@dataclass
class Run:
    """The mutable record of one install as it goes, turned into an InstallResult at the end."""

    plan: InstallPlan
    fetched: Fetched
    namespace: str
    inventory: str
    progress: Progress
    changes: dict[ObjectId, Change] = field(default_factory=dict)
    precreated: set[ObjectId] = field(default_factory=set)  # written before the stages ran
    adopted: dict[ObjectId, str] = field(default_factory=dict)  # id → previous owner
    refused: list[Refusal] = field(default_factory=list)
    cluster_scoped: list[str] = field(default_factory=list)
    checked_elsewhere: set[ObjectId] = field(default_factory=set)  # dry-run in a stand-in ns
    durations: dict[str, float] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    @contextmanager
    def timed(self, phase: str) -> Iterator[None]:
        t0 = time.monotonic()
        try:
            yield
        finally:
            self.durations[phase] = round(self.durations.get(phase, 0.0) + time.monotonic() - t0, 3)

    def record(
        self,
        oid: ObjectId,
        action: str,
        stage: str | None = None,
        error: str | None = None,
        reason: str | None = None,
    ) -> None:
        self.changes[oid] = Change(
            id=str(oid),
            action=action,  # type: ignore[arg-type]
            stage=stage,
            error=error,
            reason=reason,
        )

    def refuse(self, planned: list[Planned], refusals: list[Refusal]) -> InstallFailed:
        """Preflight said no: nothing was written (exit 2), and the result says why."""
        self.refused = refusals
        failed = {r.id for r in refusals}
        for p in planned:
            self.record(p.oid, "failed" if str(p.oid) in failed else "skipped", p.stage)
        lines = "\n  ".join(f"{r.id}: {r.reason}" for r in refusals)
        return InstallFailed(
            self.result(f"refused {len(refusals)} object(s); nothing was written:\n  {lines}"),
            exit_code=2,
        )

    def result(
        self, error: str | None = None, previous: str | None = None, operation: str = "install"
    ) -> InstallResult:
        self.durations["total"] = round(time.monotonic() - self.started, 3)
        ordered = sorted(self.changes.values(), key=lambda c: c.id)
        summary = Counter(c.action for c in ordered)
        return InstallResult(
            operation=operation,  # type: ignore[arg-type]
            digest=self.fetched.ref.digest,
            ref=self.fetched.ref.pinned(),
            inventory=self.inventory,
            namespace=self.namespace,
            status="failed" if error else "succeeded",
            dry_run=self.plan.dry_run,
            changes=ordered,
            summary={
                a: summary.get(a, 0)
                for a in ("created", "configured", "unchanged", "deleted", "skipped", "failed")
            },
            durations=self.durations,
            error=error,
            previous_digest=previous,
            adopted=[Adoption(id=str(o), owner=w) for o, w in sorted(self.adopted.items(),
                                                                   key=lambda i: str(i[0]))],
            refused=self.refused,
            cluster_scoped=self.cluster_scoped,
        )


def install(
    plan: InstallPlan, *, progress: Progress = silent, client: KubeClient | None = None
) -> InstallResult:
    """Run an install plan. Raises InstallFailed (with the result) when it fails."""
    t0 = time.monotonic()
    progress(f"fetching {plan.artifact.ref}")
    fetched = fetch(plan.artifact, progress, plan.verify)
    fetch_seconds = time.monotonic() - t0
    progress(
        f"verified {fetched.ref.pinned()}: {len(fetched.located)} objects "
        f"({fetched.content.format} format)"
    )
    own_client = client is None
    client = client or KubeClient(target_from(plan.target), pool_size=plan.concurrency * 2)
    try:
        run = Run(
            plan,
            fetched,
            plan.namespace or client.default_namespace,
            plan.inventory or fetched.default_inventory,
            progress,
        )
        run.durations["fetch"] = round(fetch_seconds, 3)
        return apply_artifact(client, run)
    finally:
        if own_client:
            client.close()


def _check_inventory_name(name: str) -> None:
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name) or len(name) > 200:
        raise InputError(
            f"invalid inventory name {name!r}",
            hint="use lowercase letters, digits and '-' (it names a Secret)",
        )


@dataclass
class Preflight:
    """Everything decided before the first write."""

    planned: list[Planned]
    inventory_id: str
    ready_now: list[Planned]  # objects the cluster can check as they are
    live: dict[ObjectId, Obj]
    would_be: dict[ObjectId, Obj | None]
    fast: set[ObjectId]  # certainly unchanged, decided without a dry-run
    current: inv.Inventory
    doomed: list[Member]  # what prune will delete
    existing_namespaces: set[str]


def apply_artifact(client: KubeClient, run: Run, operation: str = "install") -> InstallResult:
    plan, progress = run.plan, run.progress
    options = apply_options(plan)
    _check_inventory_name(run.inventory)
    if not run.fetched.located and plan.prune and not plan.allow_empty:
        raise InputError(
            "the artifact holds no objects; installing it would prune everything in inventory "
            f"{run.inventory!r}",
            hint="pass --allow-empty (allow_empty: true) if that is what you want",
        )

    with run.timed("preflight"):
        checked = _preflight_all(client, run, options)

    if plan.dry_run:
        return _dry_run_result(client, run, checked, operation)

    created: list[Planned] = []
    try:
        with run.timed("preflight"):
            _check_pending(client, run, checked, options, created)
            if run.namespace not in checked.existing_namespaces:
                _ensure_namespace(client, run, checked.planned, options, created)
    except BaseException:
        _undo(client, run, created)
        raise

    with held(client, f"lading-{run.inventory}", run.namespace, LOCK_TIMEOUT, progress):
        with run.timed("preflight"):
            # Another install may have run while we waited for the lock: read the live state
            # again, check ownership again, and ask the server about anything no longer
            # certainly unchanged.
            live = _live_state(client, checked.ready_now, plan.concurrency)
            _check_ownership(run, checked.planned, checked.ready_now, live, checked.inventory_id)
            recheck = [p for p in checked.ready_now if p.oid in checked.fast]
            again, _ = _preflight(client, run, recheck, live, options, checked.planned)
            checked.would_be.update(again)
            checked.live = live
        return _apply_locked(client, run, checked, options, operation)


def _preflight_all(client: KubeClient, run: Run, options: ApplyOptions) -> Preflight:
    """Every check that needs no write; raises InstallFailed (exit 2) or InputError."""
    plan = run.plan
    existing = namespaces_present(client, run.fetched.located, run.namespace)
    planned = resolve(run.fetched.located, client, run.namespace, existing, plan.create_namespace)
    inventory_id = inv.applyset_id(inv.parent_name(run.inventory), run.namespace)
    owner_ref = f"{run.namespace}/{run.inventory}"
    planned = [_as_member(p, inventory_id, owner_ref) for p in planned]
    run.cluster_scoped = [str(o) for o in cluster_scoped(p.oid for p in planned)]

    collisions = control_collisions(
        (p.oid for p in planned), inv.parent_name(run.inventory), run.namespace
    )
    if collisions:
        raise run.refuse(planned, [
            Refusal(id=str(o), reason=f"collides with lading's own inventory {o.kind.lower()} "
                    f"for inventory {run.inventory!r}; rename it in the artifact or install "
                    "into another inventory")
            for o in collisions
        ])

    ready_now = [p for p in planned if not (p.kind_pending or p.namespace_pending)]
    live = _live_state(client, ready_now, plan.concurrency)
    _check_scope(run, planned, live, inventory_id)
    _check_ownership(run, planned, ready_now, live, inventory_id)

    current = inv.read(client, run.inventory, run.namespace) if run.namespace in existing else (
        inv.Inventory(run.inventory, run.namespace)
    )
    doomed: list[Member] = []
    if plan.prune and current.exists:
        everyone = members(client, current)
        doomed = candidates(everyone, {p.oid.identity() for p in planned})
        if not plan.allow_data_loss:
            refusals = losses(client, doomed, everyone, current)
            if refusals:
                raise run.refuse(planned, refusals)

    would_be, fast = _preflight(client, run, ready_now, live, options, planned)
    _preflight_elsewhere(client, run, planned, options)
    return Preflight(planned, inventory_id, ready_now, live, would_be, fast, current, doomed,
                     existing)


def _check_scope(
    run: Run, planned: list[Planned], live: dict[ObjectId, Obj], inventory_id: str
) -> None:
    artifact_namespaces = [
        p.oid.name for p in planned if p.oid.kind == "Namespace" and p.oid.group == ""
    ]
    live_namespaces = {o.name: live[o] for o in live if o.kind == "Namespace" and o.group == ""}
    owned = own_namespaces(run.namespace, artifact_namespaces, live_namespaces, inventory_id)
    stray = outside((p.oid for p in planned), owned, run.plan.allow_namespaces)
    if stray:
        raise run.refuse(planned, [
            Refusal(id=str(o), reason=f"namespace {o.namespace!r} is outside this install "
                    f"(namespace {run.namespace!r}); pass --allow-namespace {o.namespace} "
                    f"(allow_namespaces in a plan), or -n {o.namespace}")
            for o in stray
        ])


def _check_ownership(
    run: Run,
    planned: list[Planned],
    ready_now: list[Planned],
    live: dict[ObjectId, Obj],
    inventory_id: str,
) -> None:
    found = claims(((p.oid, live.get(p.oid)) for p in ready_now), inventory_id, run.plan.adopt)
    refused = [c for c in found if not c.adopted]
    if refused:
        raise run.refuse(planned, [
            Refusal(id=str(c.oid), reason=f"belongs to {c.owner}; lading never takes over "
                    f"another owner's object silently: pass --adopt "
                    f"{c.oid.kind}/{c.oid.name} (adopt: in a plan) to take it over")
            for c in refused
        ])
    for c in found:
        if c.oid not in run.adopted:
            run.progress(f"adopting {c.oid.kind}/{c.oid.name} from {c.owner}")
        run.adopted[c.oid] = str(c.owner)


def _preflight(
    client: KubeClient,
    run: Run,
    items: list[Planned],
    live: dict[ObjectId, Obj],
    options: ApplyOptions,
    planned: list[Planned],
) -> tuple[dict[ObjectId, Obj | None], set[ObjectId]]:
    """What each object would become: the live object itself when applying it certainly
    changes nothing, else the server's dry-run answer (None: it will be recreated). Any
    dry-run failure ends the install here, before anything is written. Returns the answers
    and the ids that needed no dry-run."""
    fast = {
        p.oid
        for p in items
        if unchanged_without_dry_run(p.obj, live.get(p.oid), options.field_manager)
    }
    rest = [p for p in items if p.oid not in fast]
    if items:
        run.progress(
            f"preflight: {len(fast)} objects unchanged, server-side dry-run of {len(rest)}"
        )
    outcomes = parallel(
        rest, lambda p: apply_one(client, p, options, dry_run=True), options.concurrency
    )
    _fail_on_preflight(run, outcomes, planned)
    answers: dict[ObjectId, Obj | None] = {oid: live[oid] for oid in fast}
    answers.update({o.planned.oid: o.result for o in outcomes})
    return answers, fast


STAND_IN_NAMESPACE = "default"


def _in_namespace(p: Planned, namespace: str) -> Planned:
    obj = {**p.obj, "metadata": {**p.obj["metadata"], "namespace": namespace}}
    return Planned(obj, replace(p.oid, namespace=namespace), p.resource, p.stage, p.where,
                   False, False)


def _preflight_elsewhere(
    client: KubeClient, run: Run, planned: list[Planned], options: ApplyOptions
) -> None:
    """Objects whose namespace does not exist yet (the artifact or --create-namespace makes
    it) cannot be dry-run where they will live. Dry-run them in a stand-in namespace instead:
    validation and defaulting do not depend on the namespace. Those the stand-in cannot
    take (a namesake lives there, or we may not write there) wait for `_check_pending`."""
    waiting = [p for p in planned if p.namespace_pending and not p.kind_pending]
    if not waiting:
        return
    stand_in = run.namespace if run.namespace not in _pending_namespaces(planned) else (
        STAND_IN_NAMESPACE
    )
    moved = [_in_namespace(p, stand_in) for p in waiting]
    try:
        taken = _live_state(client, moved, options.concurrency)
    except KubeError:
        return
    free = [m for m in moved if m.oid not in taken]
    outcomes = parallel(
        free, lambda p: apply_one(client, p, options, dry_run=True), options.concurrency
    )
    bad = [o for o in outcomes if o.error and o.status not in (403, 404)]
    by_name = {(p.oid.group, p.oid.kind, p.oid.name): p for p in waiting}
    failed = [
        Outcome(by_name[(o.planned.oid.group, o.planned.oid.kind, o.planned.oid.name)],
                None, o.error, o.status)
        for o in bad
    ]
    _fail_on_preflight(run, failed, planned)
    run.checked_elsewhere = {
        by_name[(o.planned.oid.group, o.planned.oid.kind, o.planned.oid.name)].oid
        for o in outcomes if not o.error
    }


def _pending_namespaces(planned: list[Planned]) -> set[str]:
    return {p.oid.namespace for p in planned if p.namespace_pending}


def _check_pending(
    client: KubeClient, run: Run, checked: Preflight, options: ApplyOptions,
    created: list[Planned],
) -> None:
    """Validate what could not be validated before anything existed: custom resources whose
    CRD is in this artifact, and objects the stand-in namespace could not take. Creates the
    CRDs (and, for the latter, their namespaces) first, adding each to `created`, which the
    caller deletes again when this raises."""
    planned = checked.planned
    kinds = [p for p in planned if p.kind_pending]
    others = [
        p for p in planned
        if p.namespace_pending and not p.kind_pending and p.oid not in run.checked_elsewhere
    ]
    if not kinds and not others:
        return
    crds = [
        p for p in planned
        if p.oid.kind == "CustomResourceDefinition" and p.oid not in checked.live
    ] if kinds else []
    needed = {p.oid.namespace for p in others}
    spaces = [p for p in planned if p.oid.kind == "Namespace" and p.oid.group == ""
              and p.oid.name in needed]
    spaces += [_namespace_for(run, n) for n in needed - {p.oid.name for p in spaces}]
    first = crds + spaces
    run.progress(
        f"preflight: creating {len(crds)} CRD(s) and {len(spaces)} namespace(s) to validate "
        f"{len(kinds) + len(others)} object(s) that need them (undone if validation fails)"
    )
    for p in first:
        outcome = apply_one(client, p, options)
        if outcome.error:
            _fail_on_preflight(run, [outcome], planned)
        created.append(p)
        run.precreated.add(p.oid)
    waiting = wait(client, [(p.oid, p.resource) for p in first], FIRST_STAGE_TIMEOUT,
                   run.progress, interval=0.2)
    if waiting:
        for p in planned:
            run.record(p.oid, "skipped", p.stage)
        raise InstallFailed(run.result(
            "CRDs/Namespaces did not become ready: "
            + "; ".join(f"{w.oid.kind}/{w.oid.name}: {w.reason}" for w in waiting)
        ))
    for p in kinds:
        client.forget(p.oid.api_version)
    refreshed = [_refresh(client, p) for p in kinds]
    checks = [
        _in_namespace(p, _stand_in(run, planned)) if p.namespace_pending else p
        for p in refreshed
    ] + others
    outcomes = parallel(
        checks, lambda p: apply_one(client, p, options, dry_run=True), options.concurrency
    )
    by_name = {(p.oid.group, p.oid.kind, p.oid.name): p for p in kinds + others}
    _fail_on_preflight(run, [
        Outcome(by_name[(o.planned.oid.group, o.planned.oid.kind, o.planned.oid.name)],
                None, o.error, o.status)
        for o in outcomes if o.error
    ], planned)


def _stand_in(run: Run, planned: list[Planned]) -> str:
    return run.namespace if run.namespace not in _pending_namespaces(planned) else (
        STAND_IN_NAMESPACE
    )


def _namespace_for(run: Run, name: str) -> Planned:
    """A namespace --create-namespace makes: not a member of the inventory (it holds the
    inventory), so uninstall leaves it, as Helm does."""
    del run
    obj = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    oid = ObjectId("", "v1", "Namespace", "", name)
    return Planned(obj, oid, NAMESPACES, "crds-namespaces", "--create-namespace", False, False)


def _undo(client: KubeClient, run: Run, created: list[Planned]) -> None:
    """Delete what this run created before it was refused, newest first, and wait until it is
    gone, so a refused install leaves the cluster as it found it."""
    for p in reversed(created):
        try:
            client.delete(p.resource, p.oid.namespace or None, p.oid.name)
        except KubeError as e:
            run.progress(f"could not remove {p.oid.kind}/{p.oid.name} again: {e.message}")
    deadline = time.monotonic() + FIRST_STAGE_TIMEOUT
    for p in created:
        if p.oid.kind == "Namespace":
            continue  # the namespace controller finishes this; nothing in it was written
        while (client.get(p.resource, p.oid.namespace or None, p.oid.name) is not None
               and time.monotonic() < deadline):
            time.sleep(0.1)
    if created:
        run.progress(f"removed {len(created)} object(s) this install had created")


def _as_member(p: Planned, inventory_id: str, owner_ref: str) -> Planned:
    return Planned(
        inv.label_member(p.obj, inventory_id, owner_ref),
        p.oid,
        p.resource,
        p.stage,
        p.where,
        p.kind_pending,
        p.namespace_pending,
    )


def _fail_on_preflight(run: Run, outcomes: list[Outcome], planned: list[Planned]) -> None:
    failed = [o for o in outcomes if o.error]
    if not failed:
        return
    for p in planned:
        run.record(p.oid, "skipped", p.stage)
    for o in failed:
        run.record(o.planned.oid, "failed", o.planned.stage, _scrub(o.planned, o.error))
    lines = [
        f"{o.planned.oid.kind}/{o.planned.oid.name}"
        + (f" in {o.planned.oid.namespace}" if o.planned.oid.namespace else "")
        + f" ({o.planned.where}): {_scrub(o.planned, o.error)}"
        for o in failed
    ]
    message = (
        f"preflight failed for {len(failed)} of {len(planned)} objects; nothing was "
        "written:\n  " + "\n  ".join(lines)
    )
    # Invalid objects are bad input (exit 2); conflicts and refusals are failures (exit 1).
    invalid = all(o.status in (400, 404, 422) for o in failed)
    raise InstallFailed(run.result(message), exit_code=2 if invalid else 1)


def _scrub(p: Planned, message: str | None) -> str | None:
    """Validation messages quote invalid values; for Secrets those may be secret."""
    if message and p.oid.kind == "Secret":
        return re.sub(r'(Invalid value: )"[^"]*"', r'\1"***"', message)
    return message


def _ensure_namespace(
    client: KubeClient, run: Run, planned: list[Planned], options: ApplyOptions,
    created: list[Planned],
) -> None:
    """The inventory and its lock live in the install namespace, so it must exist first.
    Everything is validated by now; adds what it created to `created`."""
    own = next(
        (
            p
            for p in planned
            if p.oid.kind == "Namespace" and p.oid.group == "" and p.oid.name == run.namespace
        ),
        None,
    )
    if own is None and not run.plan.create_namespace:
        raise InputError(
            f"namespace {run.namespace!r} does not exist",
            hint="pass --create-namespace (create_namespace: true in a plan), or install "
            "into an existing namespace",
        )
    target = own or _namespace_for(run, run.namespace)
    if target.oid in run.precreated:
        return
    outcome = apply_one(client, target, options)
    if outcome.error:
        raise InstallFailed(run.result(f"creating namespace {run.namespace}: {outcome.error}"))
    created.append(target)
    if own is not None:
        run.precreated.add(target.oid)
    run.progress(f"created namespace {run.namespace}")


def _live_state(
    client: KubeClient, planned: list[Planned], concurrency: int
) -> dict[ObjectId, Obj]:
    """Live objects by id, one LIST per resource and namespace rather than a GET per object."""
    groups: dict[tuple[Resource, str], list[Planned]] = defaultdict(list)
    for p in planned:
        groups[(p.resource, p.oid.namespace)].append(p)

    def list_group(key: tuple[Resource, str]) -> list[tuple[ObjectId, Obj]]:
        resource, namespace = key
        wanted = {p.oid.name: p.oid for p in groups[key]}
        try:
            items = client.list(resource, namespace or None)
        except KubeError as e:
            if e.is_not_found:
                return []
            if e.status != 403:
                raise
            # May not list (a namespace-scoped deployer and a cluster-scoped kind): GET
            # each; what it may not even read stays unknown, and its dry-run says why.
            items = []
            for name in wanted:
                try:
                    found = client.get(resource, namespace or None, name)
                except KubeError as denied:
                    if denied.status != 403:
                        raise
                    continue
                if found is not None:
                    items.append(found)
        return [
            (wanted[o["metadata"]["name"]], o) for o in items if o["metadata"]["name"] in wanted
        ]

    live: dict[ObjectId, Obj] = {}
    for pairs in parallel(list(groups), list_group, concurrency):
        live.update(pairs)
    return live


def _dry_run_result(
    client: KubeClient, run: Run, checked: Preflight, operation: str
) -> InstallResult:
    del client
    for p in checked.planned:
        if p.kind_pending or p.namespace_pending:
            run.record(p.oid, "created", p.stage)
            continue
        answer = checked.would_be.get(p.oid)
        action = (
            classify(answer, checked.live.get(p.oid), run.plan.field_manager)
            if answer is not None
            else "configured"
        )  # None: would be recreated
        run.record(p.oid, action, p.stage)
    for member in checked.doomed:
        if member.prune_disabled:
            run.record(member.oid, "skipped", reason="lading.dev/prune: disabled")
        else:
            run.record(member.oid, "deleted")
    return run.result(operation=operation)


def _apply_locked(
    client: KubeClient, run: Run, checked: Preflight, options: ApplyOptions, operation: str
) -> InstallResult:
    plan, progress, planned = run.plan, run.progress, checked.planned
    current = inv.read(client, run.inventory, run.namespace)
    previous = current.digest
    new_kinds = {inv.group_kind(p.oid.group, p.oid.kind) for p in planned}
    new_namespaces = {p.oid.namespace for p in planned if p.oid.namespace} | {run.namespace}
    # Record the superset before writing members: if we die mid-way, the next run can still
    # find (and prune) everything this one may have created.
    superset = current.with_members(
        set(current.group_kinds) | new_kinds, set(current.namespaces) | new_namespaces
    )
    inv.write(client, superset, plan.field_manager)

    with run.timed("apply"):
        error = _apply_stages(client, run, planned, checked.would_be, checked.live, options)

    if error is None and plan.prune:
        with run.timed("prune"):
            keep = {p.oid.identity() for p in planned}
            doomed = candidates(members(client, superset), keep)
            for outcome in prune(
                client, doomed, checked.inventory_id, dry_run=False, progress=progress
            ):
                oid = outcome.member.oid
                if outcome.action == "failed":
                    run.record(oid, "failed", error=outcome.reason)
                    error = error or f"pruning {oid}: {outcome.reason}"
                elif outcome.action == "kept":
                    run.record(oid, "skipped", reason=outcome.reason)
                else:
                    run.record(oid, "deleted")

    final = superset if error else current.with_members(new_kinds, new_namespaces)
    inv.write(
        client,
        final.recorded(run.fetched.ref.digest or "", run.fetched.ref.pinned()),
        plan.field_manager,
    )

    if error is None and plan.wait:
        with run.timed("wait"):
            error = _wait_all(client, run, planned)

    result = run.result(error, previous, operation)
    if error:
        raise InstallFailed(result)
    progress(
        f"{operation} succeeded: " + ", ".join(f"{n} {a}" for a, n in result.summary.items() if n)
    )
    return result


def _apply_stages(
    client: KubeClient,
    run: Run,
    planned: list[Planned],
    would_be: dict[ObjectId, Obj | None],
    live: dict[ObjectId, Obj],
    options: ApplyOptions,
) -> str | None:
    """Apply stage by stage; returns an error message, or None when all stages applied.
    Everything was validated before; what the server refuses now fails the install."""
    by_stage: dict[str, list[Planned]] = defaultdict(list)
    for p in sorted(planned, key=lambda p: sort_key(p.obj)):
        by_stage[p.stage].append(p)
    for index, stage in enumerate(STAGES):
        items = [_refresh(client, p) if p.kind_pending else p for p in by_stage.get(stage, [])]
        if not items:
            continue
        todo: list[tuple[Planned, str]] = []
        for p in items:
            result = would_be.get(p.oid)
            if p.oid in run.precreated:  # written while validating, before the stages
                run.record(p.oid, "created", stage)
                continue
            if result is not None:
                action = classify(result, live.get(p.oid), options.field_manager)
            else:  # no dry-run answer: pending until now, or to be recreated
                action = "configured" if p.oid in live else "created"
            if action == "unchanged":
                run.record(p.oid, "unchanged", stage)
            else:
                todo.append((p, action))
        run.progress(
            f"stage {stage}: applying {len(todo)} of {len(items)} objects "
            f"({len(items) - len(todo)} unchanged)"
        )
        outcomes = parallel(
            [p for p, _ in todo], lambda p: apply_one(client, p, options), options.concurrency
        )
        failed = False
        for (p, action), outcome in zip(todo, outcomes, strict=True):
            if outcome.error:
                failed = True
                run.record(p.oid, "failed", stage, _scrub(p, outcome.error))
            else:
                run.record(p.oid, action, stage)
        if failed:
            _skip_rest(run, by_stage, index)
            broken = [c for c in run.changes.values() if c.action == "failed"]
            return f"apply failed for {len(broken)} object(s) in stage {stage}: " + "; ".join(
                f"{c.id}: {c.error}" for c in broken
            )
        if stage == "crds-namespaces":
            waiting = wait(
                client,
                [(p.oid, p.resource) for p in items],
                FIRST_STAGE_TIMEOUT,
                run.progress,
                interval=0.2,
            )
            if waiting:
                _skip_rest(run, by_stage, index)
                return "CRDs/Namespaces did not become ready: " + "; ".join(
                    f"{w.oid.kind}/{w.oid.name}: {w.reason}" for w in waiting
                )
            for p in by_stage.get("namespaced", []) + by_stage.get("cluster", []):
                if p.kind_pending:
                    client.forget(p.oid.api_version)
    return None


def _refresh(client: KubeClient, p: Planned) -> Planned:
    resource = client.resource_for(p.oid.api_version, p.oid.kind) or p.resource
    return Planned(p.obj, p.oid, resource, p.stage, p.where, False, False)


def _skip_rest(run: Run, by_stage: dict[str, list[Planned]], index: int) -> None:
    for stage in STAGES[index:]:
        for p in by_stage.get(stage, []):
            if p.oid not in run.changes:
                run.record(p.oid, "skipped", stage)


def _wait_all(client: KubeClient, run: Run, planned: list[Planned]) -> str | None:
    targets = [(p.oid, _refresh(client, p).resource) for p in planned]
    run.progress(f"waiting up to {run.plan.timeout} for {len(targets)} objects to be ready")
    waiting = wait(client, targets, run.plan.timeout_seconds, run.progress)
    if not waiting:
        return None
    details = [explain(client, w) for w in waiting[:10]]
    more = f"\n(and {len(waiting) - 10} more)" if len(waiting) > 10 else ""
    verdict = (
        "failed"
        if any(w.state == "Failed" for w in waiting)
        else f"not ready after {run.plan.timeout}"
    )
    return f"{len(waiting)} object(s) {verdict}:\n" + "\n".join(details) + more
