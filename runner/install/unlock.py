"""Breaking an inventory lock deliberately: `lading unlock --inventory NAME -n NS`.

For a holder that will never release it (a forged lease, one renewed far ahead by a skewed
clock, a runner that is gone but whose lease someone keeps renewing). A crashed install needs
none of this: its lease expires on its own.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from plans.install import TargetSpec
from runner.common.errors import InputError, OperationFailed
from runner.common.kube import KubeClient, KubeError
from runner.install.install import target_from
from runner.install.lease import LEASES, Holder, lease_name


@dataclass(frozen=True)
class Unlocked:
    """The lock that was removed, and who held it."""

    inventory: str
    namespace: str
    lease: str
    holder: str
    acquired: str | None
    renewed: str | None
    expires: str | None
    expired: bool  # it had already expired: nobody was holding it any more
    held_by: str  # "held by … since … (renewed …s ago)"
    expiry: str  # "it expires at … unless renewed" | "it expired at …"

    def to_document(self) -> dict[str, Any]:
        return {"kind": "UnlockResult", **asdict(self)}

    def text(self) -> str:
        head = f"unlocked {self.namespace}/{self.lease}, {self.held_by}"
        if self.expired:
            return f"{head}\n  {self.expiry}: nobody held it any more"
        return (
            f"{head}\n  the lease was live ({self.expiry}): if its install is still running, "
            "it now runs without the lock"
        )


def _iso(when: datetime | None) -> str | None:
    return when.isoformat().replace("+00:00", "Z") if when else None


def unlock(
    target: TargetSpec, inventory: str, namespace: str | None, *, force: bool = False
) -> Unlocked:
    client = KubeClient(target_from(target))
    try:
        return break_lock(client, inventory, namespace or client.default_namespace, force=force)
    finally:
        client.close()


def break_lock(client: KubeClient, inventory: str, namespace: str, *, force: bool) -> Unlocked:
    name = lease_name(inventory)
    lease = client.get(LEASES, namespace, name)
    if lease is None:
        raise InputError(
            f"no inventory lock {namespace}/{name}: inventory {inventory!r} is not locked",
            hint="nothing to unlock; check --inventory and -n",
        )
    holder = Holder.of(lease)
    now = datetime.now(UTC)
    if not holder.ours and not force:
        raise InputError(
            f"the Lease {namespace}/{name} was not created by lading (it has no label "
            f"app.kubernetes.io/managed-by=lading); held by {holder.identity or '(nobody)'}",
            hint="pass --force to delete it anyway, if you are sure it is an inventory lock",
        )
    # Preconditions: if the lease was released and created again (another uid), or taken over
    # or renewed (another resourceVersion) since we read it, the holder we are about to name
    # is not the one we would remove; delete nothing then.
    meta = lease["metadata"]
    try:
        client.request(
            "DELETE",
            LEASES.object_path(namespace, name),
            body={
                "kind": "DeleteOptions",
                "apiVersion": "v1",
                "preconditions": {"uid": meta["uid"], "resourceVersion": meta["resourceVersion"]},
            },
        )
    except KubeError as e:
        if e.status not in (404, 409):
            raise
        raise OperationFailed(
            f"the inventory lock {namespace}/{name} was released or taken by another holder "
            "while we looked at it; nothing was deleted",
            hint=f"run `lading unlock --inventory {inventory} -n {namespace}` again to see "
            "who holds it now",
        ) from None
    return Unlocked(
        inventory=inventory,
        namespace=namespace,
        lease=name,
        holder=holder.identity,
        acquired=_iso(holder.acquired),
        renewed=_iso(holder.renewed),
        expires=_iso(holder.expires),
        expired=holder.expired(now),
        held_by=holder.held_by(now),
        expiry=holder.expiry(now),
    )
