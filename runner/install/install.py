"""The install runner: InstallPlan → fetch+verify → resolve → preflight → staged apply → prune →
wait → record → InstallResult.

All or nothing: everything is checked before the first write (runner.install.preflight) —
ownership, namespace scope, lading's own control objects, what a prune would lose, and a
server-side dry-run of every object (in a stand-in namespace for objects whose namespace does
not exist yet). Only custom resources whose CRD comes in the same artifact cannot be checked
before that CRD exists: the new CRDs are created first, those objects dry-run, and on failure
the CRDs are deleted again, so a refused install leaves the cluster as it found it. The writes
themselves are the engine's (runner.install.engine); this module orders them and turns the
engine's ChangeSet into the result document.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field, replace

from plans.install import Adoption, InstallPlan, InstallResult, Refusal, TargetSpec
from runner.common.errors import InputError, OperationFailed
from runner.common.kube import KubeClient, Target, window_for
from runner.common.objects import ObjectId
from runner.common.output import silent
from runner.install import inventory as inv
from runner.install.apply import ApplyOptions, apply_one
from runner.install.changes import classify
from runner.install.engine import ChangeSet, Engine, named
from runner.install.fetch import Fetched, fetch
from runner.install.lease import held
from runner.install.preflight import (
    Checked,
    Refused,
    check,
    check_ownership,
    check_pending,
    undo,
)
from runner.install.prune import candidates, members
from runner.install.resolve import NAMESPACES, Planned, namespaces_present, resolve
from runner.install.scope import cluster_scoped

Progress = Callable[[str], None]
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


def engine_for(client: KubeClient, plan: InstallPlan, progress: Progress) -> Engine:
    return Engine(client, apply_options(plan), progress)


@dataclass
class Run:
    """One install as it goes: the engine's ChangeSet plus what the result reports besides."""

    plan: InstallPlan
    fetched: Fetched
    namespace: str
    inventory: str
    progress: Progress
    changes: ChangeSet = field(default_factory=ChangeSet)
    precreated: set[ObjectId] = field(default_factory=set)  # written before the stages ran
    adopted: dict[ObjectId, str] = field(default_factory=dict)
    refused: list[Refusal] = field(default_factory=list)
    cluster_scoped: list[str] = field(default_factory=list)
    durations: dict[str, float] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    @contextmanager
    def timed(self, phase: str) -> Iterator[None]:
        t0 = time.monotonic()
        try:
            yield
        finally:
            self.durations[phase] = round(self.durations.get(phase, 0.0) + time.monotonic() - t0, 3)

    def result(
        self, error: str | None = None, previous: str | None = None, operation: str = "install"
    ) -> InstallResult:
        self.durations["total"] = round(time.monotonic() - self.started, 3)
        return InstallResult(
            operation=operation,  # type: ignore[arg-type]
            digest=self.fetched.ref.digest,
            ref=self.fetched.ref.pinned(),
            inventory=self.inventory,
            namespace=self.namespace,
            status="failed" if error else "succeeded",
            dry_run=self.plan.dry_run,
            changes=self.changes.changes(),
            summary=self.changes.summary(),
            durations=self.durations,
            error=error,
            previous_digest=previous,
            adopted=[Adoption(id=str(o), owner=w)
                     for o, w in sorted(self.adopted.items(), key=lambda i: str(i[0]))],
            refused=self.refused,
            cluster_scoped=self.cluster_scoped,
        )

    def refused_by(self, refusal: Refused, planned: list[Planned]) -> InstallFailed:
        """Preflight said no: every object skipped, the culprits failed, nothing written."""
        for p in planned:
            self.changes.record(p.oid, "skipped", p.stage)
        if refusal.refusals:
            self.refused = refusal.refusals
            ids = {r.id for r in refusal.refusals}
            for p in planned:
                if str(p.oid) in ids:
                    self.changes.record(p.oid, "failed", p.stage)
            lines = "\n  ".join(f"{r.id}: {r.reason}" for r in refusal.refusals)
            message = f"refused {len(refusal.refusals)} object(s); nothing was written:\n  {lines}"
            return InstallFailed(self.result(message), exit_code=2)
        for o in refusal.failures:
            self.changes.record(o.planned.oid, "failed", o.planned.stage, o.error)
        if refusal.message:
            return InstallFailed(self.result(refusal.message))
        lines = "\n  ".join(f"{named(o.planned.oid)} ({o.planned.where}): {o.error}"
                            for o in refusal.failures)
        message = (f"preflight failed for {len(refusal.failures)} of {len(planned)} objects; "
                   f"nothing was written:\n  {lines}")
        # Invalid objects are bad input (exit 2); conflicts and refusals are failures (exit 1).
        invalid = all(o.status in (400, 404, 422) for o in refusal.failures)
        return InstallFailed(self.result(message), exit_code=2 if invalid else 1)


def install(
    plan: InstallPlan, *, progress: Progress = silent, client: KubeClient | None = None
) -> InstallResult:
    """Run an install plan. Raises InstallFailed (with the result) when it fails."""
    t0 = time.monotonic()
    own_client = client is None
    # The cluster is reached while the artifact is read: the connections are open and the
    # namespace is known by the time the objects are. Its errors are raised after the
    # artifact's, in the order they always came.
    reaching = _Reaching(client)
    early = _in_background(lambda: reaching.reach_for(plan))
    try:
        progress(f"fetching {plan.artifact.ref}")
        fetched = fetch(plan.artifact, progress, plan.verify)
    except BaseException:
        # The process may end as soon as this returns, and a thread still inside OpenSSL then
        # meets OpenSSL's clean-up: a SIGSEGV instead of the exit code, once in CI.
        reaching.abandon()
        wait([early], timeout=REACH_GRACE)
        raise
    fetch_seconds = time.monotonic() - t0
    progress(
        f"verified {fetched.ref.pinned()}: {len(fetched.located)} objects "
        f"({fetched.content.format} format)"
    )
    reached = early.result()
    _open_the_window(reached.client, plan, len(fetched.located))
    try:
        run = Run(
            plan,
            fetched,
            reached.namespace,
            plan.inventory or fetched.default_inventory,
            progress,
        )
        run.durations["fetch"] = round(fetch_seconds, 3)
        return apply_artifact(reached.client, run, lock_early=True)
    finally:
        if own_client:
            reached.client.close()


# Enough for what comes before the writes: discovery, the namespace, the lease and the LISTs.
WARM_CONNECTIONS = 8
REACH_GRACE = 1.0  # seconds a failed install waits for the thread reaching the cluster


@dataclass
class _Reached:
    client: KubeClient
    namespace: str


class _Abandoned(Exception):
    """The install stopped before it needed the cluster (nobody reads this)."""


class _Reaching:
    """The cluster reached on a thread of its own while the artifact is read, and abandoned
    when reading fails: a client of ours is closed then, which ends the TLS handshakes it has
    begun (Wire.close), or is closed as soon as it is built. A caller's client is left open;
    its handshakes get REACH_GRACE to finish."""

    def __init__(self, client: KubeClient | None) -> None:
        self._given = client
        self._built: KubeClient | None = None
        self._abandoned = False
        self._lock = threading.Lock()

    def reach_for(self, plan: InstallPlan) -> _Reached:
        client = self._given
        if client is None:
            client = KubeClient(target_from(plan.target), pool_size=plan.concurrency)
            with self._lock:
                self._built, abandoned = client, self._abandoned
            if abandoned:
                client.close()
                raise _Abandoned
        client.wire.warm(min(WARM_CONNECTIONS, plan.concurrency))
        return _Reached(client, plan.namespace or client.default_namespace)

    def abandon(self) -> None:
        with self._lock:
            self._abandoned, built = True, self._built
        if built is not None:
            built.close()


# A server this far away gets the connections its writes will keep busy opened during the
# round trips before the first write, not in front of the first writes. Only the window's
# worth (runner.common.kube.window_for): 32 plus one per millisecond, not --concurrency, which
# at 128 had a server 10 ms away do 84 TLS handshakes for connections no wave would use.
FAR_SECONDS = 0.002


def _open_the_window(client: KubeClient, plan: InstallPlan, objects: int) -> None:
    distance = client.wire.distance
    if distance is None or distance < FAR_SECONDS:
        return
    wanted = window_for(distance, min(plan.concurrency, objects))
    if wanted > WARM_CONNECTIONS:
        threading.Thread(target=client.wire.warm, args=(wanted,), name="lading-warm",
                         daemon=True).start()


def _in_background(work: Callable[[], _Reached]) -> Future[_Reached]:
    """`work` on a daemon thread: an install that fails before it needs the cluster does not
    wait for an unreachable server's time-out."""
    future: Future[_Reached] = Future()

    def run() -> None:
        try:
            future.set_result(work())
        except BaseException as e:  # handed to whoever asks for the result
            future.set_exception(e)

    threading.Thread(target=run, name="lading-reach", daemon=True).start()
    return future


def _check_inventory_name(name: str) -> None:
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name) or len(name) > 200:
        raise InputError(
            f"invalid inventory name {name!r}",
            hint="use lowercase letters, digits and '-' (it names a Secret)",
        )


def apply_artifact(client: KubeClient, run: Run, operation: str = "install",
                   lock_early: bool = False) -> InstallResult:
    """Install the fetched artifact of `run`. `lock_early`: ask for the lease while the
    namespaces are looked up (one round trip less when the namespace exists)."""
    plan, progress = run.plan, run.progress
    engine = engine_for(client, plan, progress)
    _check_inventory_name(run.inventory)
    if not run.fetched.located and plan.prune and not plan.allow_empty:
        raise InputError(
            "the artifact holds no objects; installing it would prune everything in inventory "
            f"{run.inventory!r}",
            hint="pass --allow-empty (allow_empty: true) if that is what you want",
        )

    def locked() -> AbstractContextManager[str]:
        return held(client, inv.parent_name(run.inventory), run.namespace, LOCK_TIMEOUT,
                    progress)

    with ExitStack() as stack, ThreadPoolExecutor(1) as pool:
        # The lease is asked for alongside discovery and the namespace: one try, and anything
        # but getting it (the namespace does not exist, someone else holds it) leaves the
        # locking to its usual place below.
        early_lock = None
        if lock_early and not plan.dry_run:
            early_lock = pool.submit(
                stack.enter_context,
                held(client, inv.parent_name(run.inventory), run.namespace, 0, silent))
        try:
            with run.timed("preflight"):
                existing = namespaces_present(client, run.fetched.located, run.namespace)
                planned = resolve(run.fetched.located, client, run.namespace, existing,
                                  plan.create_namespace)
                run.cluster_scoped = [str(o) for o in cluster_scoped(p.oid for p in planned)]
        finally:
            locked_early = early_lock is not None and early_lock.exception() is None
        if plan.dry_run:
            return _dry_run_result(run, _preflight(engine, run, planned, existing), operation)

        if locked_early or run.namespace in existing:
            # The lock first: what preflight reads (live objects, the inventory, what prune
            # would delete) then stays true until the writes are done, and is read once.
            if not locked_early:
                stack.enter_context(locked())
            checked = _preflight(engine, run, planned, existing)
            _prepare(engine, run, checked)
            return _apply_locked(engine, run, checked, operation, fresh=True)

    # The lock lives in the install namespace, which does not exist yet: validate everything,
    # create the namespace, then lock and read again what may have changed meanwhile.
    checked = _preflight(engine, run, planned, existing)
    _prepare(engine, run, checked)
    with locked():
        with run.timed("preflight"):
            try:
                _recheck(engine, plan, checked)
            except Refused as refusal:
                raise run.refused_by(refusal, checked.planned) from None
        return _apply_locked(engine, run, checked, operation, fresh=False)


def _preflight(engine: Engine, run: Run, planned: list[Planned],
               existing: set[str]) -> Checked:
    with run.timed("preflight"):
        try:
            checked = check(engine, run.plan, planned, run.namespace, run.inventory, existing)
        except Refused as refusal:
            raise run.refused_by(refusal, planned) from None
    run.adopted = checked.adopted
    for oid, owner in checked.adopted.items():
        run.progress(f"adopting {named(oid)} from {owner}")
    return checked


def _prepare(engine: Engine, run: Run, checked: Checked) -> None:
    """Writes needed before the stages: CRDs custom resources wait for (validated by creating
    them) and the install namespace. Undone when anything is refused."""
    created: list[Planned] = []
    try:
        with run.timed("preflight"):
            check_pending(engine, checked, run.namespace, _namespace_for, created,
                          run.precreated)
            if run.namespace not in checked.existing_namespaces:
                _ensure_namespace(engine, run, checked.planned, created)
    except Refused as refusal:
        undo(engine, created)
        raise run.refused_by(refusal, checked.planned) from None
    except BaseException:
        undo(engine, created)
        raise


def _recheck(engine: Engine, plan: InstallPlan, checked: Checked) -> None:
    live = engine.live(checked.ready_now)
    check_ownership(plan, checked.ready_now, live, checked.inventory_id)
    stale = [p for p in checked.ready_now if p.oid in checked.prediction.fast]
    # Said once already, before the lock: this re-check is silent.
    again = replace(engine, progress=silent).predict(stale, live)
    if again.failures:
        raise Refused([], again.failures)
    checked.prediction.would_be.update(again.would_be)
    checked.live = live


def _namespace_for(name: str) -> Planned:
    """A namespace --create-namespace makes: not a member of the inventory (it holds the
    inventory), so uninstall leaves it, as Helm does."""
    obj = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    oid = ObjectId("", "v1", "Namespace", "", name)
    return Planned(obj, oid, NAMESPACES, "crds-namespaces", "--create-namespace", False, False)


def _ensure_namespace(engine: Engine, run: Run, planned: list[Planned],
                      created: list[Planned]) -> None:
    """The inventory and its lock live in the install namespace, so it must exist first.
    Everything is validated by now; adds what it created to `created`."""
    own = next((p for p in planned if p.oid.kind == "Namespace" and p.oid.group == ""
                and p.oid.name == run.namespace), None)
    if own is None and not run.plan.create_namespace:
        raise InputError(
            f"namespace {run.namespace!r} does not exist",
            hint="pass --create-namespace (create_namespace: true in a plan), or install "
            "into an existing namespace",
        )
    target = own or _namespace_for(run.namespace)
    if target.oid in run.precreated:
        return
    outcome = apply_one(engine.client, target, engine.options)
    if outcome.error:
        raise InstallFailed(run.result(f"creating namespace {run.namespace}: {outcome.error}"))
    created.append(target)
    if own is not None:
        run.precreated.add(target.oid)
    run.progress(f"created namespace {run.namespace}")


def _dry_run_result(run: Run, checked: Checked, operation: str) -> InstallResult:
    engine_would = checked.prediction.would_be
    for p in checked.planned:
        if p.kind_pending or p.namespace_pending:
            run.changes.record(p.oid, "created", p.stage)
        elif (answer := engine_would.get(p.oid)) is not None:
            run.changes.record(p.oid, classify(answer, checked.live.get(p.oid),
                                               run.plan.field_manager), p.stage)
        else:
            run.changes.record(p.oid, "configured", p.stage)  # would be recreated
    for member in checked.doomed:
        if member.prune_disabled:
            run.changes.record(member.oid, "skipped", reason="lading.dev/prune: disabled")
        else:
            run.changes.record(member.oid, "deleted")
    return run.result(operation=operation)


def _apply_locked(engine: Engine, run: Run, checked: Checked, operation: str,
                  fresh: bool) -> InstallResult:
    """The writes, under the lock. `fresh`: preflight ran under this lock too, so its reads of
    the inventory and of what prune would delete still hold."""
    plan, progress, planned = run.plan, run.progress, checked.planned
    client = engine.client
    current = checked.current if fresh else inv.read(client, run.inventory, run.namespace)
    previous = current.digest
    new_kinds = {inv.group_kind(p.oid.group, p.oid.kind) for p in planned}
    new_namespaces = {p.oid.namespace for p in planned if p.oid.namespace} | {run.namespace}
    # Record the superset before writing members: if we die mid-way, the next run can still
    # find (and prune) everything this one may have created.
    superset = current.with_members(
        set(current.group_kinds) | new_kinds, set(current.namespaces) | new_namespaces
    )
    if superset != current or not current.exists:
        inv.write(client, superset, plan.field_manager)

    with run.timed("apply"):
        error = engine.apply(planned, checked.prediction, checked.live, run.changes,
                             run.precreated)

    if error is None and plan.prune:
        with run.timed("prune"):
            doomed = (checked.doomed if fresh else
                      candidates(members(client, superset), {p.oid.identity() for p in planned}))
            error = engine.prune(doomed, checked.inventory_id, run.changes)

    final = superset if error else current.with_members(new_kinds, new_namespaces)
    inv.write(
        client,
        final.recorded(run.fetched.ref.digest or "", run.fetched.ref.pinned()),
        plan.field_manager,
    )

    if error is None and plan.wait:
        with run.timed("wait"):
            error = engine.wait(planned, plan.timeout_seconds, plan.timeout, run.changes)

    result = run.result(error, previous, operation)
    if error:
        raise InstallFailed(result)
    progress(
        f"{operation} succeeded: " + ", ".join(f"{n} {a}" for a, n in result.summary.items() if n)
    )
    return result
