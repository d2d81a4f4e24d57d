"""Uninstall: delete every member of an inventory, then the inventory itself."""

from __future__ import annotations

import time
from collections.abc import Callable

from plans.install import Change, InstallResult, TargetSpec
from runner.common.errors import InputError
from runner.common.kube import KubeClient
from runner.install import inventory as inv
from runner.install.install import target_from
from runner.install.prune import candidates, members, prune


def uninstall(
    target: TargetSpec,
    inventory: str,
    namespace: str | None,
    *,
    dry_run: bool,
    progress: Callable[[str], None],
) -> InstallResult:
    started = time.monotonic()
    client = KubeClient(target_from(target))
    try:
        namespace = namespace or client.default_namespace
        current = inv.read(client, inventory, namespace)
        if not current.exists:
            raise InputError(
                f"no inventory {inventory!r} in namespace {namespace!r}",
                hint="list inventories with `kubectl get secrets -n NS "
                "-l applyset.kubernetes.io/id`",
            )
        doomed = candidates(members(client, current), keep=set())
        outcomes = prune(client, doomed, dry_run=dry_run, progress=progress)
        failed = [(m, e) for m, e in outcomes if e]
        if not failed and not dry_run:
            inv.delete(client, current)
    finally:
        client.close()
    changes = [
        Change(id=str(m.oid), action="failed" if e else "deleted", error=e) for m, e in outcomes
    ]
    error = f"{len(failed)} object(s) could not be deleted" if failed else None
    return InstallResult(
        operation="uninstall",
        digest=current.digest,
        ref=current.ref,
        inventory=inventory,
        namespace=namespace,
        status="failed" if failed else "succeeded",
        dry_run=dry_run,
        changes=sorted(changes, key=lambda c: c.id),
        summary={"deleted": len(outcomes) - len(failed), "failed": len(failed)},
        durations={"total": round(time.monotonic() - started, 3)},
        error=error,
    )
