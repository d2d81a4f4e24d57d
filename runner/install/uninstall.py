"""Uninstall: delete every member of an inventory, then the inventory itself.

The same policy as install's prune: membership re-checked right before each delete, objects
marked `lading.dev/prune: disabled` kept (and released from the inventory), and a CRD with
custom resources or a Namespace holding others' objects refused unless the plan allows data
loss — checked for every member before the first delete, so a refused uninstall deletes
nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from plans.install import Action, Change, InstallPlan, InstallResult
from runner.common.errors import InputError
from runner.common.kube import KubeClient
from runner.install import inventory as inv
from runner.install.install import InstallFailed, target_from
from runner.install.loss import losses
from runner.install.prune import candidates, members, prune


def uninstall(
    plan: InstallPlan,
    *,
    progress: Callable[[str], None],
    client: KubeClient | None = None,
) -> InstallResult:
    """Uninstall `plan.inventory` from `plan.namespace` (the artifact reference is unused)."""
    own_client = client is None
    client = client or KubeClient(target_from(plan.target), pool_size=plan.concurrency)
    try:
        return _uninstall(client, plan, progress)
    finally:
        if own_client:
            client.close()


def _uninstall(
    client: KubeClient, plan: InstallPlan, progress: Callable[[str], None]
) -> InstallResult:
    started = time.monotonic()
    namespace = plan.namespace or client.default_namespace
    if not plan.inventory:
        raise InputError("uninstall needs --inventory NAME")
    current = inv.read(client, plan.inventory, namespace)
    if not current.exists:
        raise InputError(
            f"no inventory {plan.inventory!r} in namespace {namespace!r}",
            hint="list inventories with `kubectl get secrets -n NS -l applyset.kubernetes.io/id`",
        )
    everyone = members(client, current)
    doomed = candidates(everyone, keep=set())

    def result(changes: list[Change], error: str | None, **extra: object) -> InstallResult:
        summary = {a: sum(c.action == a for c in changes) for a in ("deleted", "skipped", "failed")}
        return InstallResult.model_validate({
            "operation": "uninstall",
            "digest": current.digest,
            "ref": current.ref,
            "inventory": plan.inventory,
            "namespace": namespace,
            "status": "failed" if error else "succeeded",
            "dry_run": plan.dry_run,
            "changes": sorted(changes, key=lambda c: c.id),
            "summary": summary,
            "durations": {"total": round(time.monotonic() - started, 3)},
            "error": error,
            **extra,
        })

    refusals = [] if plan.allow_data_loss else losses(client, doomed, everyone, current)
    if refusals:
        refused = {r.id for r in refusals}
        changes = [
            Change(id=str(m.oid), action="failed" if str(m.oid) in refused else "skipped")
            for m in doomed
        ]
        lines = "\n  ".join(f"{r.id}: {r.reason}" for r in refusals)
        raise InstallFailed(
            result(changes, f"refused {len(refusals)} object(s); nothing was deleted:\n  {lines}",
                   refused=refusals),
            exit_code=2,
        )

    outcomes = prune(client, doomed, current.id, dry_run=plan.dry_run, progress=progress)
    action: dict[str, Action] = {"deleted": "deleted", "kept": "skipped", "failed": "failed"}
    changes = [
        Change(
            id=str(o.member.oid),
            action=action[o.action],
            error=o.reason if o.action == "failed" else None,
            reason=o.reason if o.action == "kept" else None,
        )
        for o in outcomes
    ]
    failed = [o for o in outcomes if o.action == "failed"]
    if not failed and not plan.dry_run:
        inv.delete(client, current)
    error = f"{len(failed)} object(s) could not be deleted" if failed else None
    return result(changes, error)
