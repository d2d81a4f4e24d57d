"""The install engine: one value holding the client, the field manager and the apply options,
whose verbs — live, predict, apply, prune, wait, drift — are what install, diff, rollback and
uninstall are made of. Each verb records what it did to each object in a ChangeSet; the result
documents are built from that ChangeSet at the edge, never written by the verbs.

Reading live state is one LIST per resource and namespace, not a GET per object, and an object
the LIST proves unchanged needs no dry-run: a no-op install and an in-sync diff cost a handful
of requests whatever the object count.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field

from plans.install import Action, Change, ObjectDrift
from runner.common.kube import KubeClient, KubeError, Resource
from runner.common.objects import Obj, ObjectId
from runner.common.output import silent
from runner.install.apply import ApplyOptions, Outcome, apply_one, parallel
from runner.install.changes import classify, unchanged_without_dry_run
from runner.install.drift import compare
from runner.install.order import STAGES, apply_order
from runner.install.prune import Listed, Member, prune
from runner.install.resolve import Planned
from runner.install.wait import Waiting, explain, wait

Progress = Callable[[str], None]
FIRST_STAGE_TIMEOUT = 60.0
WAIT_ANNOTATION = "lading.dev/wait"  # "skip": never wait for this object (kapp's wait: false)
PASSED: Obj = {}  # a dry-run answer not kept: the object does not exist yet, and it passed
ACTIONS: tuple[Action, ...] = ("created", "configured", "unchanged", "deleted", "skipped",
                               "failed")


@dataclass(frozen=True)
class Entry:
    """What happened (or would happen) to one object."""

    oid: ObjectId
    action: Action
    stage: str | None = None
    error: str | None = None
    reason: str | None = None

    def change(self) -> Change:
        return Change(id=str(self.oid), action=self.action, stage=self.stage, error=self.error,
                      reason=self.reason)


@dataclass
class ChangeSet:
    """The engine's account of a run, one entry per object; the last word about an object
    wins (a `created` object whose wait fails becomes `failed`)."""

    entries: dict[ObjectId, Entry] = field(default_factory=dict)

    def record(self, oid: ObjectId, action: Action, stage: str | None = None,
               error: str | None = None, reason: str | None = None) -> None:
        self.entries[oid] = Entry(oid, action, stage, error, reason)

    def __contains__(self, oid: object) -> bool:
        return oid in self.entries

    def __iter__(self) -> Iterator[Entry]:
        return iter(sorted(self.entries.values(), key=lambda e: str(e.oid)))

    def with_action(self, action: Action) -> list[Entry]:
        return [e for e in self if e.action == action]

    def summary(self) -> dict[str, int]:
        counts = Counter(e.action for e in self.entries.values())
        return {a: counts.get(a, 0) for a in ACTIONS}

    def changes(self) -> list[Change]:
        return [e.change() for e in self]


@dataclass(frozen=True)
class Prediction:
    """What each object would become, decided before any write: the live object itself when
    applying it certainly changes nothing, else the server's dry-run answer (None: it is to be
    recreated). `failures` are the dry-runs the server refused."""

    would_be: dict[ObjectId, Obj | None]
    fast: set[ObjectId]  # decided from the LIST alone
    failures: list[Outcome]


@dataclass(frozen=True)
class Engine:
    client: KubeClient
    options: ApplyOptions = field(default_factory=ApplyOptions)
    progress: Progress = silent
    # Whole LISTs `live` read, for prune's membership to filter instead of listing again.
    listed: Listed = field(default_factory=dict, compare=False, repr=False)

    def detail(self, message: str) -> None:
        """Per-object detail, shown with -v (Progress.detail); dropped by plain callbacks."""
        detail = getattr(self.progress, "detail", None)
        if callable(detail):
            detail(message)

    # -- reading -------------------------------------------------------------------------------

    def live(self, planned: Iterable[Planned]) -> dict[ObjectId, Obj]:
        """Live objects by id: one LIST per resource and namespace."""
        groups: dict[tuple[Resource, str], dict[str, ObjectId]] = defaultdict(dict)
        for p in planned:
            groups[(p.resource, p.oid.namespace)][p.oid.name] = p.oid

        def list_group(key: tuple[Resource, str]) -> list[tuple[ObjectId, Obj]]:
            resource, namespace = key
            wanted = groups[key]
            items, whole = self._list_or_get(resource, namespace, wanted)
            if whole:
                self.listed[(resource.group, resource.kind, namespace)] = (resource, items)
            return [(wanted[o["metadata"]["name"]], o) for o in items
                    if o["metadata"]["name"] in wanted]

        found: dict[ObjectId, Obj] = {}
        for pairs in parallel(list(groups), list_group, self.options.concurrency):
            found.update(pairs)
        return found

    def _list_or_get(self, resource: Resource, namespace: str,
                     wanted: dict[str, ObjectId]) -> tuple[list[Obj], bool]:
        """The live objects, and whether they are the whole LIST (not GETs of some)."""
        try:
            return self.client.list(resource, namespace or None), True
        except KubeError as e:
            if e.is_not_found:
                return [], False
            if e.status != 403:
                raise
        # May not list (a namespace-scoped deployer and a cluster-scoped kind): GET each; what
        # it may not even read stays unknown, and its dry-run says why.
        items = []
        for name in wanted:
            try:
                found = self.client.get(resource, namespace or None, name)
            except KubeError as denied:
                if denied.status != 403:
                    raise
                continue
            if found is not None:
                items.append(found)
        return items, False

    def dry_run(self, items: list[Planned], live: Collection[ObjectId] | None = None
                ) -> list[Outcome]:
        """Dry-run each object; the answer is decoded only for objects in `live` (None: all),
        the ones whose answer is compared with what exists."""
        return parallel(items, lambda p: apply_one(
            self.client, p, self.options, dry_run=True, answer=live is None or p.oid in live),
            self.client.fit_window(self.options.concurrency))

    def predict(self, items: list[Planned], live: dict[ObjectId, Obj]) -> Prediction:
        fast = {p.oid for p in items
                if unchanged_without_dry_run(p.obj, live.get(p.oid), self.options.field_manager)}
        rest = [p for p in items if p.oid not in fast]
        if items:
            self.progress(f"preflight: {len(fast)} objects unchanged, server-side dry-run of "
                          f"{len(rest)}")
        outcomes = self.dry_run(rest, live)
        for oid in sorted(fast, key=str):
            self.detail(f"unchanged (from the LIST): {named(oid)}")
        for o in outcomes:
            self.detail(f"dry-run {named(o.planned.oid)}: " + (o.error or "ok"))
        would_be: dict[ObjectId, Obj | None] = {oid: live[oid] for oid in fast}
        # An object that does not exist yet is `created` whatever the answer holds: keep only
        # that it passed (thousands of full answers were most of a large install's memory).
        would_be.update({o.planned.oid: o.result if o.planned.oid in live or o.result is None
                         else PASSED for o in outcomes if not o.error})
        return Prediction(would_be, fast, [o for o in outcomes if o.error])

    # -- writing -------------------------------------------------------------------------------

    def apply(
        self,
        planned: list[Planned],
        prediction: Prediction,
        live: dict[ObjectId, Obj],
        changes: ChangeSet,
        precreated: Collection[ObjectId] = (),
    ) -> str | None:
        """Apply stage by stage (one order: runner.install.order), waiting for the first
        stage's CRDs and Namespaces; returns an error message, or None when all applied.
        Objects whose prediction says unchanged are not written at all."""
        by_stage: dict[str, list[Planned]] = defaultdict(list)
        dry_run_passed = {oid for oid, answer in prediction.would_be.items()
                          if answer is not None and oid not in prediction.fast}
        for p in apply_order(planned):
            by_stage[p.stage].append(p)
        for index, stage in enumerate(STAGES):
            items = [self._refresh(p) if p.kind_pending else p for p in by_stage.get(stage, [])]
            if not items:
                continue
            todo: list[tuple[Planned, Action]] = []
            for p in items:
                if p.oid in precreated:  # written while validating, before the stages
                    changes.record(p.oid, "created", stage)
                    continue
                action = self._action(p, prediction.would_be.get(p.oid), live)
                if action == "unchanged":
                    changes.record(p.oid, "unchanged", stage)
                else:
                    todo.append((p, action))
            self.progress(f"stage {stage}: applying {len(todo)} of {len(items)} objects "
                          f"({len(items) - len(todo)} unchanged)")
            # What passed a strict dry-run here is not strictly decoded by the server again.
            outcomes = parallel([p for p, _ in todo],
                                lambda p: self._apply_one(p, p.oid in dry_run_passed),
                                self.client.fit_window(self.options.concurrency))
            for (p, action), outcome in zip(todo, outcomes, strict=True):
                if outcome.error:
                    changes.record(p.oid, "failed", stage, outcome.error)
                    self.detail(f"failed {named(p.oid)}: {outcome.error}")
                else:
                    changes.record(p.oid, action, stage)
                    self.detail(f"{action} {named(p.oid)}")
            failed = [e for e in changes.with_action("failed") if e.stage == stage]
            if not failed and stage == "crds-namespaces":
                waiting = wait(self.client, [(p.oid, p.resource) for p in items],
                               FIRST_STAGE_TIMEOUT, self.progress, interval=0.2)
                if waiting:
                    self._skip_rest(by_stage, index, changes)
                    return "CRDs/Namespaces did not become ready: " + "; ".join(
                        f"{w.oid.kind}/{w.oid.name}: {w.reason}" for w in waiting)
                for p in by_stage.get("cluster", []) + by_stage.get("namespaced", []):
                    if p.kind_pending:
                        self.client.forget(p.oid.api_version)
            if failed:
                self._skip_rest(by_stage, index, changes)
                return f"apply failed for {len(failed)} object(s) in stage {stage}: " + "; ".join(
                    f"{named(e.oid)}: {e.error}" for e in failed)
        return None

    def _apply_one(self, p: Planned, validated: bool) -> Outcome:
        """Apply for real; the stored object the server answers is not kept (nothing reads it,
        and a large install would hold every one of them until its stage ends)."""
        outcome = apply_one(self.client, p, self.options, answer=False, validated=validated)
        return Outcome(p, None, outcome.error, outcome.status)

    def _action(self, p: Planned, would_be: Obj | None, live: dict[ObjectId, Obj]) -> Action:
        if would_be is not None:
            return classify(would_be, live.get(p.oid), self.options.field_manager)
        # No dry-run answer: pending until now, or to be recreated.
        return "configured" if p.oid in live else "created"

    def _refresh(self, p: Planned) -> Planned:
        resource = self.client.resource_for(p.oid.api_version, p.oid.kind) or p.resource
        return Planned(p.obj, p.oid, resource, p.stage, p.where, False, False)

    @staticmethod
    def _skip_rest(by_stage: dict[str, list[Planned]], index: int, changes: ChangeSet) -> None:
        for stage in STAGES[index:]:
            for p in by_stage.get(stage, []):
                if p.oid not in changes:
                    changes.record(p.oid, "skipped", stage)

    def prune(self, doomed: list[Member], inventory_id: str, changes: ChangeSet, *,
              dry_run: bool = False) -> str | None:
        """Delete members the artifact no longer holds (membership re-checked before each);
        returns the first error, or None."""
        error = None
        for outcome in prune(self.client, doomed, inventory_id, dry_run=dry_run,
                             progress=self.progress):
            oid = outcome.member.oid
            if outcome.action == "failed":
                changes.record(oid, "failed", error=outcome.reason)
                error = error or f"pruning {named(oid)}: {outcome.reason}"
            elif outcome.action == "kept":
                changes.record(oid, "skipped", reason=outcome.reason)
            else:
                changes.record(oid, "deleted")
        return error

    # -- waiting -------------------------------------------------------------------------------

    def wait(self, planned: list[Planned], timeout: float, timeout_text: str,
             changes: ChangeSet) -> str | None:
        """Wait until every object is ready; objects that are not become `failed` with the
        reason. Objects annotated `lading.dev/wait: skip` are not waited for."""
        targets = [(p.oid, self._refresh(p).resource) for p in planned if not _skip_wait(p)]
        skipped = len(planned) - len(targets)
        self.progress(f"waiting up to {timeout_text} for {len(targets)} objects to be ready"
                      + (f" ({skipped} marked {WAIT_ANNOTATION}: skip)" if skipped else ""))
        waiting = wait(self.client, targets, timeout, self.progress)
        if not waiting:
            return None
        for w in waiting:
            previous = changes.entries.get(w.oid)
            changes.record(w.oid, "failed", previous.stage if previous else None,
                           f"{w.state}: {w.reason}")
        return _wait_verdict(waiting, timeout_text, [explain(self.client, w)
                                                     for w in waiting[:10]])

    # -- comparing -----------------------------------------------------------------------------

    def drift(self, planned: list[Planned], live: dict[ObjectId, Obj]) -> list[ObjectDrift]:
        """Per object in-sync | drifted | missing. The LIST decides what is certainly in sync;
        the rest is compared with the server's forced dry-run answer — what the object would
        be if lading applied the artifact now."""
        reports: dict[ObjectId, ObjectDrift] = {}
        doubtful = []
        for p in planned:
            current = live.get(p.oid)
            if p.kind_pending or p.namespace_pending or current is None:
                reports[p.oid] = ObjectDrift(id=str(p.oid), state="missing")
            elif unchanged_without_dry_run(p.obj, current, self.options.field_manager):
                reports[p.oid] = ObjectDrift(id=str(p.oid), state="in-sync")
            else:
                doubtful.append(p)
        forced = Engine(self.client, ApplyOptions(
            field_manager=self.options.field_manager, force_conflicts=True,
            concurrency=self.options.concurrency), self.progress)
        for outcome in forced.dry_run(doubtful):
            oid = outcome.planned.oid
            if outcome.result is None:
                reports[oid] = ObjectDrift(id=str(oid), state="drifted", error=outcome.error)
            else:
                reports[oid] = compare(outcome.result, live[oid], self.options.field_manager,
                                       str(oid))
        return [reports[oid] for oid in sorted(reports, key=str)]


def _skip_wait(p: Planned) -> bool:
    annotations = (p.obj.get("metadata") or {}).get("annotations") or {}
    return annotations.get(WAIT_ANNOTATION) == "skip"


def _wait_verdict(waiting: list[Waiting], timeout_text: str, details: list[str]) -> str:
    more = f"\n(and {len(waiting) - 10} more)" if len(waiting) > 10 else ""
    verdict = ("failed" if any(w.state == "Failed" for w in waiting)
               else f"not ready after {timeout_text}")
    return f"{len(waiting)} object(s) {verdict}:\n" + "\n".join(details) + more


def named(oid: ObjectId) -> str:
    """How messages name an object: Kind/name, and the namespace when it has one."""
    return f"{oid.kind}/{oid.name}" + (f" in {oid.namespace}" if oid.namespace else "")
