"""Rollback: reinstall the digest an inventory held before its current one — through the same
fetch, verification policy and install path as `lading install`."""

from __future__ import annotations

from collections.abc import Callable

from plans.install import InstallPlan, InstallResult
from runner.common.errors import InputError
from runner.common.kube import KubeClient
from runner.install import inventory as inv
from runner.install.fetch import fetch
from runner.install.install import Run, apply_artifact, target_from


def previous_entry(current: inv.Inventory) -> inv.HistoryEntry:
    """The newest history entry that is not the installed digest. Pure."""
    for entry in reversed(current.history):
        if entry.digest != current.digest:
            return entry
    raise InputError(
        f"inventory {current.namespace}/{current.name} has no earlier digest to roll back to",
        hint="rollback needs at least two installs of different digests into this inventory",
    )


def rollback(
    plan: InstallPlan, progress: Callable[[str], None], client: KubeClient | None = None
) -> InstallResult:
    """`plan.artifact.ref` is ignored: the previous ref comes from the inventory's history.
    Everything else — `verify`, ownership, namespace scope, prune policy — is the plan's."""
    own_client = client is None
    client = client or KubeClient(target_from(plan.target), pool_size=plan.concurrency)
    try:
        namespace = plan.namespace or client.default_namespace
        if not plan.inventory:
            raise InputError("rollback needs --inventory NAME")
        current = inv.read(client, plan.inventory, namespace)
        if not current.exists:
            raise InputError(f"no inventory {plan.inventory!r} in namespace {namespace!r}")
        entry = previous_entry(current)
        progress(f"rolling back {plan.inventory} from {current.digest} to {entry.digest}")
        artifact = plan.artifact.model_copy(update={"ref": entry.ref, "allow_tag": False})
        fetched = fetch(artifact, progress, plan.verify)
        run = Run(
            plan.model_copy(update={"artifact": artifact}),
            fetched,
            namespace,
            plan.inventory,
            progress,
        )
        return apply_artifact(client, run, operation="rollback")
    finally:
        if own_client:
            client.close()
