"""The install runner: InstallPlan → fetch+verify → resolve → preflight → staged apply → prune →
wait → record → InstallResult.

Validation happens before the first write: every object the cluster can already check is
dry-run first, and any failure stops the install with nothing written. The only objects that
cannot be checked up front are those that need a CRD or Namespace from the same artifact; they
are dry-run right after that first stage and before anything else is written.
"""

from __future__ import annotations

import re
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from plans.install import Change, InstallPlan, InstallResult, TargetSpec
from runner.common.errors import InputError, OperationFailed
from runner.common.kube import KubeClient, KubeError, Resource, Target
from runner.common.objects import Obj, ObjectId, sort_key
from runner.common.output import silent
from runner.install import inventory as inv
from runner.install.apply import ApplyOptions, Outcome, apply_one, parallel
from runner.install.changes import classify, unchanged_without_dry_run
from runner.install.fetch import Fetched, fetch
from runner.install.lease import held
from runner.install.order import STAGES
from runner.install.prune import candidates, members, prune
from runner.install.resolve import NAMESPACES, Planned, namespaces_present, resolve
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
        self, oid: ObjectId, action: str, stage: str | None = None, error: str | None = None
    ) -> None:
        self.changes[oid] = Change(
            id=str(oid),
            action=action,  # type: ignore[arg-type]
            stage=stage,
            error=error,
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
            plan.inventory or fetched.ref.short_name,
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
        existing = namespaces_present(client, run.fetched.located, run.namespace)
        planned = resolve(
            run.fetched.located, client, run.namespace, existing, plan.create_namespace
        )
        inventory_id = inv.applyset_id(inv.parent_name(run.inventory), run.namespace)
        planned = [_as_member(p, inventory_id) for p in planned]
        ready_now = [p for p in planned if not (p.kind_pending or p.namespace_pending)]
        live = _live_state(client, ready_now, plan.concurrency)
        would_be, fast = _preflight(client, run, ready_now, live, options, planned)
        if run.namespace not in existing and not plan.dry_run:
            _ensure_namespace(client, run, planned, options)

    if plan.dry_run:
        return _dry_run_result(client, run, planned, would_be, live, operation)

    with held(client, f"lading-{run.inventory}", run.namespace, LOCK_TIMEOUT, progress):
        with run.timed("preflight"):
            # Another install may have run while we waited for the lock: read the live state
            # again, and ask the server about anything no longer certainly unchanged.
            live = _live_state(client, ready_now, plan.concurrency)
            recheck = [p for p in ready_now if p.oid in fast]
            again, _ = _preflight(client, run, recheck, live, options, planned)
            would_be.update(again)
        return _apply_locked(client, run, planned, would_be, live, options, operation)


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


def _as_member(p: Planned, inventory_id: str) -> Planned:
    return Planned(
        inv.label_member(p.obj, inventory_id),
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
        f"{o.planned.where}: {o.planned.oid.kind}/{o.planned.oid.name}: "
        f"{_scrub(o.planned, o.error)}"
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
    client: KubeClient, run: Run, planned: list[Planned], options: ApplyOptions
) -> None:
    """The inventory and its lock live in the install namespace, so it must exist first."""
    own = next(
        (
            p
            for p in planned
            if p.oid.kind == "Namespace" and p.oid.group == "" and p.oid.name == run.namespace
        ),
        None,
    )
    if own is not None:
        outcome = apply_one(client, own, options)
        if outcome.error:
            raise InstallFailed(run.result(f"creating namespace {run.namespace}: {outcome.error}"))
        run.precreated.add(own.oid)
        return
    if not run.plan.create_namespace:
        raise InputError(
            f"namespace {run.namespace!r} does not exist",
            hint="pass --create-namespace (create_namespace: true in a plan), or install "
            "into an existing namespace",
        )
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": run.namespace}}
    client.apply(NAMESPACES, ns, field_manager=run.plan.field_manager)
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
    client: KubeClient,
    run: Run,
    planned: list[Planned],
    would_be: dict[ObjectId, Obj | None],
    live: dict[ObjectId, Obj],
    operation: str,
) -> InstallResult:
    for p in planned:
        if p.kind_pending or p.namespace_pending:
            run.record(p.oid, "created", p.stage)
            continue
        answer = would_be.get(p.oid)
        action = (
            classify(answer, live.get(p.oid), run.plan.field_manager)
            if answer is not None
            else "configured"
        )  # None: would be recreated
        run.record(p.oid, action, p.stage)
    if run.plan.prune:
        current = inv.read(client, run.inventory, run.namespace)
        keep = {p.oid.identity() for p in planned}
        for member in candidates(members(client, current), keep):
            run.record(member.oid, "deleted")
    return run.result(operation=operation)


def _apply_locked(
    client: KubeClient,
    run: Run,
    planned: list[Planned],
    would_be: dict[ObjectId, Obj | None],
    live: dict[ObjectId, Obj],
    options: ApplyOptions,
    operation: str,
) -> InstallResult:
    plan, progress = run.plan, run.progress
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
        error = _apply_stages(client, run, planned, would_be, live, options)

    if error is None and plan.prune:
        with run.timed("prune"):
            keep = {p.oid.identity() for p in planned}
            doomed = candidates(members(client, superset), keep)
            for member, failure in prune(client, doomed, dry_run=False, progress=progress):
                run.record(member.oid, "failed" if failure else "deleted", error=failure)
                if failure and error is None:
                    error = f"pruning {member.oid}: {failure}"

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
    """Apply stage by stage; returns an error message, or None when all stages applied."""
    by_stage: dict[str, list[Planned]] = defaultdict(list)
    for p in sorted(planned, key=lambda p: sort_key(p.obj)):
        by_stage[p.stage].append(p)
    for index, stage in enumerate(STAGES):
        items = by_stage.get(stage, [])
        if not items:
            continue
        pending = [p for p in items if p.kind_pending or p.namespace_pending]
        if pending:
            # Their CRD or Namespace exists now: validate them before writing anything more.
            for p in pending:
                client.forget(p.oid.api_version)
            checked = [_refresh(client, p) for p in pending]
            outcomes = parallel(
                checked, lambda p: apply_one(client, p, options, dry_run=True), options.concurrency
            )
            bad = [o for o in outcomes if o.error]
            if bad:
                for o in bad:
                    run.record(o.planned.oid, "failed", stage, _scrub(o.planned, o.error))
                _skip_rest(run, by_stage, index, planned)
                return (
                    f"validation of {len(bad)} object(s) that depend on this artifact's "
                    f"CRDs/Namespaces failed: "
                    + "; ".join(
                        f"{o.planned.oid.kind}/{o.planned.oid.name}: {o.error}" for o in bad
                    )
                )
            items = [p for p in items if p not in pending] + checked
            for o in outcomes:
                if o.result is not None:
                    would_be[o.planned.oid] = o.result
            live.update(_live_state(client, checked, options.concurrency))
        todo: list[tuple[Planned, str]] = []
        for p in items:
            result = would_be.get(p.oid)
            if result is not None:
                action = classify(result, live.get(p.oid), options.field_manager)
            else:  # no dry-run answer: pending until now, or to be recreated
                action = "configured" if p.oid in live else "created"
            if action == "unchanged":
                run.record(p.oid, "created" if p.oid in run.precreated else "unchanged", stage)
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
            _skip_rest(run, by_stage, index, planned)
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
                _skip_rest(run, by_stage, index, planned)
                return "CRDs/Namespaces did not become ready: " + "; ".join(
                    f"{w.oid.kind}/{w.oid.name}: {w.reason}" for w in waiting
                )
    return None


def _refresh(client: KubeClient, p: Planned) -> Planned:
    resource = client.resource_for(p.oid.api_version, p.oid.kind) or p.resource
    return Planned(p.obj, p.oid, resource, p.stage, p.where, False, False)


def _skip_rest(
    run: Run, by_stage: dict[str, list[Planned]], index: int, planned: list[Planned]
) -> None:
    del planned
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
