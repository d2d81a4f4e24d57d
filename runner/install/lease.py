"""A Lease per inventory, so two installs into one inventory never interleave.

The holder renews it while working; a holder that died stops renewing and its lease expires,
so a crashed install never blocks the next one for longer than the lease duration. Whoever
waits is told who holds the lock, since when, and when it expires; `lading unlock` breaks it
deliberately (`runner.install.unlock`).
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from runner.common.errors import LadingError, OperationFailed
from runner.common.kube import KubeClient, KubeError, Resource

LEASES = Resource("coordination.k8s.io", "v1", "Lease", "leases", True)
DURATION_SECONDS = 30
POLL_SECONDS = 0.5
MANAGED_BY = "app.kubernetes.io/managed-by"
INVENTORY = "lading.dev/inventory"


def lease_name(inventory: str) -> str:
    return f"lading-{inventory}"


def _now() -> datetime:
    return datetime.now(UTC)


def _stamp(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(stamp: str | None) -> datetime | None:
    if not stamp:
        return None
    for layout in ("%Y-%m-%dT%H:%M:%S.%fZ", "%Y-%m-%dT%H:%M:%SZ"):
        try:
            return datetime.strptime(stamp, layout).replace(tzinfo=UTC)
        except ValueError:
            continue
    return None


def _clock(when: datetime, now: datetime) -> str:
    """14:02:11Z today, 2024-05-01 14:02:11Z on any other day."""
    return when.strftime("%H:%M:%SZ" if when.date() == now.date() else "%Y-%m-%d %H:%M:%SZ")


def _span(delta: timedelta) -> str:
    seconds = int(abs(delta.total_seconds()))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 2 * 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


@dataclass(frozen=True)
class Holder:
    """Who holds a Lease, as the Lease itself says: the times are the holder's clock."""

    namespace: str
    name: str
    identity: str
    acquired: datetime | None
    renewed: datetime | None
    duration: int
    ours: bool  # created by lading (labelled managed-by: lading)

    @classmethod
    def of(cls, lease: dict[str, Any]) -> Holder:
        meta = lease.get("metadata") or {}
        spec = lease.get("spec") or {}
        acquired = _parse(spec.get("acquireTime"))
        return cls(
            namespace=str(meta.get("namespace", "")),
            name=str(meta.get("name", "")),
            identity=str(spec.get("holderIdentity") or ""),
            acquired=acquired,
            renewed=_parse(spec.get("renewTime")) or acquired,
            duration=int(spec.get("leaseDurationSeconds") or DURATION_SECONDS),
            ours=(meta.get("labels") or {}).get(MANAGED_BY) == "lading",
        )

    @property
    def expires(self) -> datetime | None:
        return self.renewed + timedelta(seconds=self.duration) if self.renewed else None

    def expired(self, now: datetime) -> bool:
        return not self.identity or self.expires is None or self.expires < now

    def from_the_future(self, now: datetime) -> bool:
        """Renewed further ahead of our clock than a lease lasts: no live holder on a clock
        close to ours can have written that — clock skew, or a forged lease."""
        return self.renewed is not None and self.renewed - now > timedelta(seconds=self.duration)

    def held_by(self, now: datetime) -> str:
        """`held by H since 14:02:11Z (renewed 3s ago)`, with a renewal that cannot be right
        called out."""
        text = f"held by {self.identity or '(nobody)'}"
        if self.acquired:
            text += f" since {_clock(self.acquired, now)}"
        if self.renewed is None:
            return text + " (never renewed)"
        if self.from_the_future(now):
            return (
                f"{text} (renewed {_span(self.renewed - now)} in the future by our clock: "
                "clock skew, or a forged lease)"
            )
        if self.renewed > now:
            return f"{text} (just renewed)"
        return f"{text} (renewed {_span(now - self.renewed)} ago)"

    def expiry(self, now: datetime) -> str:
        if self.expires is None:
            return "it has no renewal time, so it counts as expired"
        if self.expired(now):
            return f"it expired at {_clock(self.expires, now)}"
        return f"it expires at {_clock(self.expires, now)} unless renewed"

    def describe(self, now: datetime) -> str:
        """`held by H since 14:02:11Z (renewed 3s ago); it expires at 14:02:44Z unless
        renewed`."""
        return f"{self.held_by(now)}; {self.expiry(now)}"


def _body(
    name: str, namespace: str, holder: str, resource_version: str | None, duration: int
) -> dict[str, Any]:
    inventory = name.removeprefix("lading-")
    meta: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        # Marks the Lease as ours, so `lading unlock` never deletes someone else's lease.
        "labels": {MANAGED_BY: "lading"},
        "annotations": {INVENTORY: inventory},
    }
    if resource_version:
        meta["resourceVersion"] = resource_version
    now = _stamp(_now())
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": meta,
        "spec": {
            "holderIdentity": holder,
            "leaseDurationSeconds": duration,
            "acquireTime": now,
            "renewTime": now,
        },
    }


def _unlock_hint(name: str, namespace: str) -> str:
    return (
        "another install into this inventory is running; retry when it is done (a crashed "
        "install's lock expires on its own). To break the lock deliberately: "
        f"lading unlock --inventory {name.removeprefix('lading-')} -n {namespace}"
    )


@contextmanager
def held(
    client: KubeClient,
    name: str,
    namespace: str,
    timeout: float,
    progress: Callable[[str], None],
    *,
    duration: int = DURATION_SECONDS,
) -> Iterator[str]:
    """Hold the lease `name` for the duration of the block, waiting up to `timeout` seconds
    for it. A holder that stops renewing loses it `duration` seconds after its last renewal."""
    holder = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    deadline = time.monotonic() + timeout
    told: tuple[str, datetime | None] | None = None
    # A released lease is deleted, so the usual case is no lease at all: create it straight
    # away (one round trip), and read it only when that says someone has one.
    current: dict[str, Any] | None = None
    while True:
        try:
            if current is None:
                mine = client.request("POST", LEASES.collection_path(namespace),
                                      body=_body(name, namespace, holder, None, duration))
                break
            if Holder.of(current).expired(_now()):
                mine = client.request(
                    "PUT",
                    LEASES.object_path(namespace, name),
                    body=_body(
                        name, namespace, holder, current["metadata"]["resourceVersion"], duration
                    ),
                )
                break
        except KubeError as e:
            if e.status != 409:  # 409: it exists, or someone else won the race: look again
                raise
            current = client.get(LEASES, namespace, name)
            continue
        other = Holder.of(current)
        if time.monotonic() >= deadline:
            raise OperationFailed(
                f"inventory lock {namespace}/{name} is {other.describe(_now())}",
                hint=_unlock_hint(name, namespace),
            )
        # Say it again whenever the holder or the expiry moves: a waiting user sees the
        # renewals, and when the lock will be free if they stop.
        if told != (other.identity, other.renewed):
            progress(f"waiting for inventory lock {namespace}/{name}, {other.describe(_now())}")
            told = (other.identity, other.renewed)
        time.sleep(POLL_SECONDS)
        current = client.get(LEASES, namespace, name)
    lease = _Mine(mine)
    stop = threading.Event()
    renewer = threading.Thread(
        target=_renew, args=(client, lease, holder, stop, duration), daemon=True
    )
    renewer.start()
    try:
        yield holder
    finally:
        stop.set()
        renewer.join(timeout=5)
        _release(client, lease)


class _Mine:
    """The lease as we last wrote it (the renewer updates it; release reads it after the
    renewer stopped)."""

    def __init__(self, lease: dict[str, Any]) -> None:
        self.lease = lease

    @property
    def name(self) -> str:
        return str(self.lease["metadata"]["name"])

    @property
    def namespace(self) -> str:
        return str(self.lease["metadata"]["namespace"])


def _renew(
    client: KubeClient, mine: _Mine, holder: str, stop: threading.Event, duration: int
) -> None:
    while not stop.wait(duration / 3):
        try:
            lease = {**mine.lease, "spec": {**mine.lease["spec"], "renewTime": _stamp(_now())}}
            mine.lease = client.request(
                "PUT", LEASES.object_path(mine.namespace, mine.name), body=lease)
        except KubeError as e:
            if e.status == 409:  # changed behind our back: still ours?
                try:
                    found = client.get(LEASES, mine.namespace, mine.name)
                except (LadingError, KubeError):
                    continue
                if not found or (found.get("spec") or {}).get("holderIdentity") != holder:
                    return
                mine.lease = found
            # A missed renewal is retried on the next tick; the install itself goes on.
        except LadingError:
            continue


def _release(client: KubeClient, mine: _Mine) -> None:
    """Delete the lease if it is still as we last wrote it (uid and resourceVersion as
    preconditions): one that expired and was taken over is someone else's now."""
    meta = mine.lease["metadata"]
    # Not ours any more, or unreachable: an unreleased lease simply expires.
    with contextlib.suppress(LadingError):
        client.delete(LEASES, mine.namespace, mine.name, uid=meta.get("uid"),
                      resource_version=meta.get("resourceVersion"))
