"""`lading diff`: the live cluster against an artifact — or, without one, against the digest
the inventory records. Per object in-sync | drifted | missing, and the inventory's members the
artifact no longer holds as `pruned` (the next install deletes them)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from plans.install import DiffResult, InstallPlan, ObjectDrift
from runner.common.errors import InputError
from runner.common.kube import KubeClient
from runner.install import inventory as inv
from runner.install.apply import ApplyOptions
from runner.install.engine import Engine
from runner.install.fetch import fetch
from runner.install.install import WARM_CONNECTIONS, target_from
from runner.install.preflight import member_of
from runner.install.prune import candidates, members
from runner.install.resolve import namespaces_present, resolve


def diff(
    plan: InstallPlan,
    progress: Callable[[str], None],
    *,
    client: KubeClient | None = None,
    from_inventory: bool = False,
) -> DiffResult:
    """Compare with `plan.artifact`, or (`from_inventory`) with what `plan.inventory`
    installed last."""
    own_client = client is None
    client = client or KubeClient(target_from(plan.target), pool_size=plan.concurrency)
    # The handshakes happen while the artifact is read (as for install).
    threading.Thread(target=client.wire.warm, args=(min(WARM_CONNECTIONS, plan.concurrency),),
                     name="lading-warm", daemon=True).start()
    try:
        return _diff(client, plan, progress, from_inventory)
    finally:
        if own_client:
            client.close()


def _diff(client: KubeClient, plan: InstallPlan, progress: Callable[[str], None],
          from_inventory: bool) -> DiffResult:
    namespace = plan.namespace or client.default_namespace
    artifact = plan.artifact
    if from_inventory:
        if not plan.inventory:
            raise InputError("give an artifact reference, or --inventory NAME to compare with "
                             "what that inventory installed")
        current = inv.read(client, plan.inventory, namespace)
        if not current.exists or not current.ref:
            raise InputError(f"no inventory {plan.inventory!r} in namespace {namespace!r} "
                             "records an installed artifact")
        progress(f"comparing with {current.ref}, installed into inventory {plan.inventory}")
        artifact = artifact.model_copy(update={"ref": current.ref, "allow_tag": False})
    fetched = fetch(artifact, progress, plan.verify)
    inventory = plan.inventory or fetched.default_inventory
    inventory_id = inv.applyset_id(inv.parent_name(inventory), namespace)
    existing = namespaces_present(client, fetched.located, namespace)
    planned = [member_of(p, inventory_id, f"{namespace}/{inventory}")
               for p in resolve(fetched.located, client, namespace, existing, True)]
    engine = Engine(client, ApplyOptions(field_manager=plan.field_manager,
                                         concurrency=plan.concurrency), progress)
    ready = [p for p in planned if not (p.kind_pending or p.namespace_pending)]
    with ThreadPoolExecutor(1) as pool:
        reading = pool.submit(inv.read, client, inventory, namespace)  # alongside the LISTs
        reports = engine.drift(planned, engine.live(ready))
        current = reading.result()
    if current.exists:
        keep = {p.oid.identity() for p in planned}
        reports += [ObjectDrift(id=str(m.oid), state="pruned")
                    for m in candidates(members(client, current, engine.listed, plan.concurrency),
                                       keep)]
    return DiffResult(
        digest=fetched.ref.digest or "",
        ref=fetched.ref.pinned(),
        in_sync=all(r.state == "in-sync" for r in reports),
        objects=sorted(reports, key=lambda r: r.id),
    )
