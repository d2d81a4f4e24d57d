"""A Lease per inventory, so two installs into one inventory never interleave.

The holder renews it while working; a holder that died stops renewing and its lease expires,
so a crashed install never blocks the next one for longer than the lease duration.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from runner.common.errors import LadingError, OperationFailed
from runner.common.kube import KubeClient, KubeError, Resource

LEASES = Resource("coordination.k8s.io", "v1", "Lease", "leases", True)
DURATION_SECONDS = 30


def _now() -> datetime:
    return datetime.now(UTC)


def _stamp(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(stamp: str | None) -> datetime | None:
    if not stamp:
        return None
    try:
        return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    except ValueError:
        return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def _expired(lease: dict[str, Any]) -> bool:
    spec = lease.get("spec") or {}
    renewed = _parse(spec.get("renewTime")) or _parse(spec.get("acquireTime"))
    duration = int(spec.get("leaseDurationSeconds") or DURATION_SECONDS)
    return renewed is None or renewed + timedelta(seconds=duration) < _now()


def _body(name: str, namespace: str, holder: str, resource_version: str | None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if resource_version:
        meta["resourceVersion"] = resource_version
    now = _stamp(_now())
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": meta,
        "spec": {
            "holderIdentity": holder,
            "leaseDurationSeconds": DURATION_SECONDS,
            "acquireTime": now,
            "renewTime": now,
        },
    }


@contextmanager
def held(
    client: KubeClient, name: str, namespace: str, timeout: float, progress: Callable[[str], None]
) -> Iterator[str]:
    """Hold the lease `name` for the duration of the block, waiting up to `timeout` for it."""
    holder = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    deadline = time.monotonic() + timeout
    told = False
    while True:
        current = client.get(LEASES, namespace, name)
        try:
            if current is None:
                client.request(
                    "POST",
                    LEASES.collection_path(namespace),
                    body=_body(name, namespace, holder, None),
                )
                break
            if _expired(current) or not (current.get("spec") or {}).get("holderIdentity"):
                client.request(
                    "PUT",
                    LEASES.object_path(namespace, name),
                    body=_body(name, namespace, holder, current["metadata"]["resourceVersion"]),
                )
                break
        except KubeError as e:
            if e.status not in (409,):  # 409: someone else won the race; look again
                raise
        if time.monotonic() >= deadline:
            other = ((current or {}).get("spec") or {}).get("holderIdentity", "another install")
            raise OperationFailed(
                f"inventory lock {namespace}/{name} is held by {other}",
                hint="another install into this inventory is running; retry when it is done",
            )
        if not told:
            progress(f"waiting for another install into this inventory ({namespace}/{name})")
            told = True
        time.sleep(0.5)
    stop = threading.Event()
    renewer = threading.Thread(
        target=_renew, args=(client, name, namespace, holder, stop), daemon=True
    )
    renewer.start()
    try:
        yield holder
    finally:
        stop.set()
        renewer.join(timeout=5)
        _release(client, name, namespace, holder)


def _renew(
    client: KubeClient, name: str, namespace: str, holder: str, stop: threading.Event
) -> None:
    while not stop.wait(DURATION_SECONDS / 3):
        try:
            lease = client.get(LEASES, namespace, name)
            if not lease or (lease.get("spec") or {}).get("holderIdentity") != holder:
                return
            lease["spec"]["renewTime"] = _stamp(_now())
            client.request("PUT", LEASES.object_path(namespace, name), body=lease)
        except (LadingError, KubeError):
            # A missed renewal is retried on the next tick; the install itself goes on.
            continue


def _release(client: KubeClient, name: str, namespace: str, holder: str) -> None:
    try:
        lease = client.get(LEASES, namespace, name)
        if lease and (lease.get("spec") or {}).get("holderIdentity") == holder:
            client.request(
                "DELETE",
                LEASES.object_path(namespace, name),
                body={"preconditions": {"uid": lease["metadata"]["uid"]}},
            )
    except (LadingError, KubeError):
        pass  # an unreleased lease simply expires
