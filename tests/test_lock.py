"""The inventory lock: who holds it and until when, `lading unlock`, and a killed holder's lease
expiring on its own — on the real apiserver, after unit tests of how a holder is described."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from runner.common.errors import OperationFailed
from runner.common.kube import KubeClient
from runner.common.output import silent
from runner.dev.endpoints import ClusterEndpoint
from runner.install.lease import DURATION_SECONDS, INVENTORY, LEASES, MANAGED_BY, Holder, held
from tests.clirun import lading

NOW = datetime(2025, 3, 4, 14, 2, 30, tzinfo=UTC)


def lease(renewed: datetime | None, *, acquired: datetime | None = None,
          labels: dict[str, str] | None = None, holder: str = "ci-7-1a2b3c4d") -> dict[str, Any]:
    spec: dict[str, Any] = {"holderIdentity": holder, "leaseDurationSeconds": 30}
    if acquired or renewed:
        spec["acquireTime"] = (acquired or renewed or NOW).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if renewed:
        spec["renewTime"] = renewed.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {"metadata": {"name": "lading-app", "namespace": "shop", "labels": labels or {}},
            "spec": spec}


# Describing a holder (pure)


def test_a_held_lock_is_described_with_holder_start_last_renewal_and_expiry() -> None:
    holder = Holder.of(lease(NOW - timedelta(seconds=3), acquired=NOW - timedelta(seconds=19)))
    assert holder.describe(NOW) == (
        "held by ci-7-1a2b3c4d since 14:02:11Z (renewed 3s ago); "
        "it expires at 14:02:57Z unless renewed"
    )
    assert not holder.expired(NOW)


def test_an_expired_lock_says_so() -> None:
    holder = Holder.of(lease(NOW - timedelta(seconds=45)))
    assert holder.expired(NOW)
    assert holder.describe(NOW).endswith("(renewed 45s ago); it expired at 14:02:15Z")


def test_a_renewal_from_the_future_is_called_suspicious() -> None:
    holder = Holder.of(lease(NOW + timedelta(hours=2), acquired=NOW - timedelta(days=3)))
    text = holder.describe(NOW)
    assert holder.from_the_future(NOW)
    assert "since 2025-03-01 14:02:30Z" in text  # another day: with its date
    assert "renewed 2h00m in the future by our clock: clock skew, or a forged lease" in text
    # Ahead by less than a lease lasts is ordinary skew between machines, not suspicious.
    assert not Holder.of(lease(NOW + timedelta(seconds=5))).from_the_future(NOW)


def test_only_leases_labelled_managed_by_lading_are_ours() -> None:
    assert Holder.of(lease(NOW, labels={MANAGED_BY: "lading"})).ours
    assert not Holder.of(lease(NOW)).ours


# On the real apiserver


def kubeconfig_args(cluster: ClusterEndpoint) -> list[str]:
    return ["--kubeconfig", str(cluster.kubeconfig)]


@pytest.mark.cluster
def test_the_lease_is_marked_as_lading_s_and_a_held_lock_names_holder_expiry_and_unlock(
    ns: str, kube: KubeClient
) -> None:
    with held(kube, "lading-app", ns, timeout=5, progress=lambda _: None) as holder:
        stored = kube.get(LEASES, ns, "lading-app")
        assert stored is not None
        assert stored["metadata"]["labels"][MANAGED_BY] == "lading"
        assert stored["metadata"]["annotations"][INVENTORY] == "app"
        assert stored["spec"]["holderIdentity"] == holder
        assert stored["spec"]["leaseDurationSeconds"] == DURATION_SECONDS

        waited: list[str] = []
        started = time.monotonic()
        with pytest.raises(OperationFailed) as failure, \
                held(kube, "lading-app", ns, timeout=1.5, progress=waited.append):
            pass
        assert time.monotonic() - started < 5

    message = failure.value.message
    assert message.startswith(f"inventory lock {ns}/lading-app is held by {holder} since ")
    assert re.search(r" since \d\d:\d\d:\d\dZ \(renewed [012]s ago\); it expires at "
                     r"\d\d:\d\d:\d\dZ unless renewed$", message), message
    assert f"lading unlock --inventory app -n {ns}" in (failure.value.hint or "")
    assert waited  # said while waiting, with the expiry
    assert waited[0].startswith(f"waiting for inventory lock {ns}/lading-app, held by {holder}")
    assert "it expires at" in waited[0]
    # Released at the end of the block.
    assert kube.get(LEASES, ns, "lading-app") is None


def forge(kube: KubeClient, ns: str, name: str, renewed: datetime,
          labels: dict[str, str] | None = None) -> None:
    stamp = renewed.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    kube.request("POST", LEASES.collection_path(ns), body={
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": name, "namespace": ns, "labels": labels or {}},
        "spec": {"holderIdentity": "mallory-1", "leaseDurationSeconds": 30,
                 "acquireTime": stamp, "renewTime": stamp},
    })


@pytest.mark.cluster
def test_a_lease_renewed_in_the_future_is_suspicious_and_unlock_breaks_it(
    ns: str, kube: KubeClient, control_plane: ClusterEndpoint,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    forge(kube, ns, "lading-app", datetime.now(UTC) + timedelta(days=365),
          labels={MANAGED_BY: "lading"})
    with pytest.raises(OperationFailed) as failure, \
            held(kube, "lading-app", ns, timeout=1, progress=lambda _: None):
        pass
    assert "held by mallory-1" in failure.value.message
    assert "in the future by our clock: clock skew, or a forged lease" in failure.value.message

    ran = lading(capsys, monkeypatch, "unlock", "--inventory", "app", "-n", ns,
                 *kubeconfig_args(control_plane))

    assert ran.code == 0, ran.err
    assert ran.out.startswith(f"unlocked {ns}/lading-app, held by mallory-1 since ")
    assert "forged lease" in ran.out
    assert "the lease was live" in ran.out
    assert kube.get(LEASES, ns, "lading-app") is None
    with held(kube, "lading-app", ns, timeout=1, progress=lambda _: None):
        pass


@pytest.mark.cluster
def test_unlock_prints_the_holder_as_json_and_exits_2_when_there_is_no_lock(
    ns: str, kube: KubeClient, control_plane: ClusterEndpoint,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    acquired = threading.Event()
    release = threading.Event()
    holders: list[str] = []

    def hold() -> None:
        with held(kube, "lading-web", ns, timeout=5, progress=lambda _: None) as holder:
            holders.append(holder)
            acquired.set()
            release.wait(30)

    worker = threading.Thread(target=hold)
    worker.start()
    try:
        assert acquired.wait(10)
        ran = lading(capsys, monkeypatch, "unlock", "--inventory", "web", "-n", ns, "-o", "json",
                     *kubeconfig_args(control_plane))
    finally:
        release.set()
        worker.join(10)

    assert ran.code == 0, ran.err
    document = json.loads(ran.out)
    assert document["kind"] == "UnlockResult"
    assert (document["inventory"], document["namespace"], document["lease"]) == (
        "web", ns, "lading-web")
    assert document["holder"] == holders[0]
    assert document["expired"] is False
    assert document["acquired"].endswith("Z")
    assert kube.get(LEASES, ns, "lading-web") is None

    again = lading(capsys, monkeypatch, "unlock", "--inventory", "web", "-n", ns,
                   "--log-format", "json", *kubeconfig_args(control_plane))
    assert again.code == 2
    assert again.out == ""
    error = json.loads(again.err.strip().splitlines()[-1])
    assert error["message"].startswith(f"no inventory lock {ns}/lading-web")


@pytest.mark.cluster
def test_unlock_refuses_a_lease_lading_did_not_create_unless_forced(
    ns: str, kube: KubeClient, control_plane: ClusterEndpoint,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    forge(kube, ns, "lading-other", datetime.now(UTC) - timedelta(minutes=5))

    refused = lading(capsys, monkeypatch, "unlock", "--inventory", "other", "-n", ns,
                     *kubeconfig_args(control_plane))
    assert refused.code == 2
    assert "was not created by lading" in refused.err
    assert "--force" in refused.err
    assert kube.get(LEASES, ns, "lading-other") is not None

    forced = lading(capsys, monkeypatch, "unlock", "--inventory", "other", "-n", ns, "--force",
                    *kubeconfig_args(control_plane))
    assert forced.code == 0, forced.err
    assert forced.out.startswith(f"unlocked {ns}/lading-other, held by mallory-1 since ")
    assert "(renewed 5m00s ago)\n  it expired at " in forced.out
    assert forced.out.rstrip().endswith(": nobody held it any more")
    assert kube.get(LEASES, ns, "lading-other") is None


HOLDER = """
import sys, time
from runner.common.kube import KubeClient, Target
from runner.install.lease import held

client = KubeClient(Target(kubeconfig=sys.argv[1]))
with held(client, "lading-app", sys.argv[2], timeout=10, progress=lambda _: None) as holder:
    print(holder, flush=True)
    time.sleep(600)
"""


@pytest.mark.cluster
def test_a_killed_holder_s_lease_expires_within_its_duration_and_the_next_run_takes_it(
    ns: str, kube: KubeClient, control_plane: ClusterEndpoint
) -> None:
    root = Path(__file__).resolve().parent.parent
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(control_plane.kubeconfig), ns],
        cwd=root, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    try:
        assert process.stdout is not None
        dead_holder = process.stdout.readline().strip()
        assert dead_holder, "the holder process did not take the lease"
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)
    killed = time.monotonic()

    waited: list[str] = []
    with held(kube, "lading-app", ns, timeout=45, progress=waited.append) as holder:
        took = time.monotonic() - killed
        stored = kube.get(LEASES, ns, "lading-app")
        assert stored is not None
        assert stored["spec"]["holderIdentity"] == holder

    # Its last renewal was at most when it died: the lease is free a lease duration later.
    assert took <= DURATION_SECONDS + 3
    assert waited
    assert waited[0].startswith(f"waiting for inventory lock {ns}/lading-app, "
                                f"held by {dead_holder}")
    assert "it expires at" in waited[0]


@pytest.mark.cluster
def test_a_held_lease_is_renewed_and_released_but_never_someone_else_s(
    kube: KubeClient, ns: str
) -> None:
    name = "lading-renewed"
    with held(kube, name, ns, 5, silent, duration=3) as holder:
        first = kube.get(LEASES, ns, name)
        assert first is not None
        time.sleep(2.5)  # the renewer writes every duration/3 seconds
        renewed = kube.get(LEASES, ns, name)
        assert renewed is not None
        assert renewed["spec"]["holderIdentity"] == holder
        assert renewed["spec"]["renewTime"] != first["spec"]["renewTime"]
    assert kube.get(LEASES, ns, name) is None  # released

    # Taken over after it expired: the first holder's release leaves the new holder's lease.
    with held(kube, name, ns, 5, silent, duration=3):
        lease = kube.get(LEASES, ns, name)
        assert lease is not None
        lease["spec"]["holderIdentity"] = "someone-else"
        kube.request("PUT", LEASES.object_path(ns, name), body=lease)
    after = kube.get(LEASES, ns, name)
    assert after is not None
    assert after["spec"]["holderIdentity"] == "someone-else"
