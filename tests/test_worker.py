"""lading on Temporal, against the real dev server, API server and registry: `lading worker`
processes run the activities, `lading submit` and the Python SDK start the workflows, and the
history is read back from the server.

Installs that must be caught mid-stage go through a relay that slows every request to the API
server, so the moment a worker is killed or a workflow cancelled falls inside a stage.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.protobuf.message import Message
from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import ApplicationError, CancelledError

from runner.common.kube import Resource
from runner.dev.endpoints import ClusterEndpoint, RegistryEndpoint, TemporalEndpoint
from runner.install import inventory as inv
from runner.install.lease import LEASES, lease_name
from runner.worker.codec import EncryptionCodec, new_key_entry, parse_keyring
from runner.worker.connect import Connection, connect
from tests.artifacts import config_map, deployment, publish, unique
from tests.clirun import lading

pytestmark = [pytest.mark.temporal, pytest.mark.cluster, pytest.mark.registry]

ROOT = Path(__file__).resolve().parent.parent
CONFIG_MAPS = Resource("", "v1", "ConfigMap", "configmaps", True)
CLUSTER_ROLES = Resource("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", False)
# Short, so a killed worker's activity moves on within seconds; workers beat every third.
HEARTBEAT = "2s"


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


# Workers ------------------------------------------------------------------------------------


class WorkerProcess:
    """A `lading worker` subprocess, its JSON log in a file."""

    def __init__(self, proc: subprocess.Popen[bytes], log: Path, identity: str) -> None:
        self.proc, self.log, self.identity = proc, log, identity

    def events(self) -> list[dict[str, Any]]:
        records = []
        for line in self.log.read_text(errors="replace").splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
        return records

    def wait_for(self, text: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in r.get("message", "") for r in self.events()):
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited: {self.log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"worker never logged {text!r}: "
                                     f"{self.log.read_text()[-3000:]}")
            time.sleep(0.02)

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


StartWorker = Callable[..., WorkerProcess]


@pytest.fixture
def start_worker(temporal: TemporalEndpoint, tmp_path: Path) -> Iterator[StartWorker]:
    started: list[WorkerProcess] = []

    def start(queue: str, identity: str, *, key_file: Path | None = None,
              workspace: Path | None = None, env: dict[str, str] | None = None) -> WorkerProcess:
        log = tmp_path / f"{identity}.log"
        argv = [sys.executable, "-m", "runner.cli", "worker", "--address", temporal.address,
                "--task-queue", queue, "--identity", identity, "--log-format", "json",
                "--workspace", str(workspace or tmp_path)]
        if key_file:
            argv += ["--codec-key-file", str(key_file)]
        with log.open("wb") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                                    env={**os.environ, **(env or {})})
        worker = WorkerProcess(proc, log, identity)
        started.append(worker)
        worker.wait_for("worker polling")
        return worker

    yield start
    for worker in started:
        worker.stop()


def _client(temporal: TemporalEndpoint, key_file: Path | None = None) -> Client:
    keyring = parse_keyring(key_file.read_text(), str(key_file)) if key_file else None
    client: Client = run(connect(Connection(address=temporal.address, keyring=keyring)))
    return client


# The slow relay ----------------------------------------------------------------------------


class SlowRelay:
    """A TCP relay to the API server holding each client→server chunk for `delay` seconds."""

    def __init__(self, server: str, delay: float) -> None:
        host, port = server.removeprefix("https://").rsplit(":", 1)
        self.target = (host, int(port))
        self.delay = delay
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            threading.Thread(target=self._pipe, args=(client, upstream, self.delay),
                             daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, 0.0),
                             daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket, delay: float) -> None:
        try:
            while data := source.recv(65536):
                if delay:
                    time.sleep(delay)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def kubeconfig(self, original: Path, path: Path) -> Path:
        config = yaml.safe_load(original.read_text())
        config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{self.port}"
        path.write_text(yaml.safe_dump(config))
        return path

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def slow_relay(control_plane: ClusterEndpoint) -> Iterator[SlowRelay]:
    relay = SlowRelay(control_plane.server, delay=0.08)
    yield relay
    relay.close()


class ConfigMapEvents:
    """Every watch event on ConfigMaps in a namespace, from before the install on."""

    def __init__(self, control_plane: ClusterEndpoint, namespace: str) -> None:
        from kubernetes import client, watch

        self.api = client.CoreV1Api(control_plane.api_client())
        self.watch = watch.Watch()
        self.seen: list[tuple[str, str]] = []
        listed = self.api.list_namespaced_config_map(namespace)
        self.thread = threading.Thread(
            target=self._follow, args=(namespace, listed.metadata.resource_version), daemon=True
        )
        self.thread.start()

    def _follow(self, namespace: str, resource_version: str) -> None:
        with contextlib.suppress(Exception):  # stop() ends the stream mid-response
            for event in self.watch.stream(self.api.list_namespaced_config_map, namespace,
                                           resource_version=resource_version,
                                           timeout_seconds=300):
                self.seen.append((event["type"], event["object"].metadata.name))

    def stop(self) -> Counter[tuple[str, str]]:
        time.sleep(1.0)  # let the last events arrive
        self.watch.stop()
        return Counter(self.seen)


def _install_plan(ref: str, namespace: str, kubeconfig: Path, **extra: Any) -> dict[str, Any]:
    return {"apiVersion": "lading.dev/v1", "kind": "InstallPlan", "artifact": {"ref": ref},
            "namespace": namespace, "inventory": "app", "target": {"kubeconfig": str(kubeconfig)},
            **extra}


def _run_request(activity: str, plan: dict[str, Any], **options: Any) -> dict[str, Any]:
    return {"apiVersion": "lading.dev/v1", "kind": "RunRequest", "activity": activity,
            "plan": plan, "options": {"heartbeat_timeout": HEARTBEAT, "initial_interval": "0.2s",
                                      **options}}


def _history_events(client: Client, workflow_id: str) -> list[Any]:
    history = run(client.get_workflow_handle(workflow_id).fetch_history())
    return list(history.events)


def _of_type(events: list[Any], kind: int) -> list[Any]:
    return [e for e in events if e.event_type == kind]


# The ship workflow ---------------------------------------------------------------------------


def _service_account_token(control_plane: ClusterEndpoint, namespace: str) -> tuple[str, str]:
    """A real bearer token (cluster-admin) and the name of its binding, to delete after."""
    from kubernetes import client

    api = control_plane.api_client()
    core, rbac = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
    name = unique("deployer")
    core.create_namespaced_service_account(namespace, {"metadata": {"name": name}})
    rbac.create_cluster_role_binding({
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": "cluster-admin"},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
    })
    request = core.create_namespaced_service_account_token(
        name, namespace, {"spec": {"expirationSeconds": 3600}}
    )
    return request.status.token, name


def _all_payloads(message: Any) -> list[Payload]:
    found: list[Payload] = []
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        if field.message_type.GetOptions().map_entry:
            values = list(value.values())
        elif isinstance(value, Message):
            values = [value]
        else:
            values = list(value)
        for item in values:
            if isinstance(item, Payload):
                found.append(item)
            elif hasattr(item, "ListFields"):
                found.extend(_all_payloads(item))
    return found


def test_ship_builds_and_installs_each_environment_on_its_queue_after_approval(
    temporal: TemporalEndpoint, control_plane: ClusterEndpoint, registry: RegistryEndpoint,
    kube: Any, start_worker: StartWorker, tmp_path: Path, capsys: Any, monkeypatch: Any,
) -> None:
    secret_plant = f"planted-{unique('value')}"
    staging, prod = unique("staging"), unique("prod")
    ci_queue, prod_queue = unique("ci"), unique("prod")
    key_file = tmp_path / "codec.keys"
    key_file.write_text(new_key_entry("k1") + "\n")
    # What the build reads lives on the worker, by reference: the plan names files only.
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    (workspace / "config.yaml").write_text(yaml.safe_dump(config_map("app-config", None,
                                                                     {"mode": "ship"})))
    (workspace / "secret.yaml").write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "app-secret"},
        "stringData": {"password": secret_plant},
    }))
    kubeconfig = yaml.safe_load(control_plane.kubeconfig.read_text())
    ca_file = tmp_path / "cluster-ca.pem"
    ca_file.write_bytes(base64.b64decode(kubeconfig["clusters"][0]["cluster"]
                                         ["certificate-authority-data"]))
    token, binding = _service_account_token(control_plane, "default")
    token_file = workspace / "token"
    token_file.write_text(token)
    repo = f"{registry.host}/{unique('ship')}/app"
    target = {"server": control_plane.server, "ca_file": str(ca_file)}
    ship = {
        "apiVersion": "lading.dev/v1", "kind": "ShipPlan",
        "build": {"source": {"inline": {"files": ["config.yaml", "secret.yaml"]}},
                  "to": [f"{repo}:v1"]},
        "environments": [
            {"name": "staging",
             "install": {"artifact": {"ref": repo}, "namespace": staging,
                         "create_namespace": True, "target": {**target, "token_file": "token"}}},
            {"name": "prod", "task_queue": prod_queue, "approval": True,
             "install": {"artifact": {"ref": repo}, "namespace": prod,
                         "create_namespace": True, "target": {**target, "token": token}}},
        ],
        "options": {"heartbeat_timeout": "10s"},
    }
    ship_file = tmp_path / "ship.yaml"
    ship_file.write_text(yaml.safe_dump(ship))
    namespaces = Resource("", "v1", "Namespace", "namespaces", False)
    try:
        start_worker(ci_queue, "worker-ci", key_file=key_file, workspace=workspace)
        start_worker(prod_queue, "worker-prod", key_file=key_file, workspace=workspace)
        submitted = lading(capsys, monkeypatch, "submit", "-f", str(ship_file), "-t", ci_queue,
                           "--address", temporal.address, "--codec-key-file", str(key_file),
                           "-o", "json")
        assert submitted.code == 0, submitted.err
        submission = json.loads(submitted.out)
        assert (submission["workflow"], submission["status"]) == ("ship", "started")
        client = _client(temporal, key_file)
        handle = client.get_workflow_handle(submission["workflow_id"])

        deadline = time.monotonic() + 90
        while (status := run(handle.query("status")))["waiting_for_approval"] != "prod":
            assert status["stage"] != "failed", status
            assert time.monotonic() < deadline, status
            time.sleep(0.3)
        assert inv.read(kube, "app", staging).exists
        assert kube.get(CONFIG_MAPS, prod, "app-config") is None

        run(handle.signal("approve", "prod"))
        result = run(handle.result())
    finally:
        from kubernetes import client as k8s

        k8s.RbacAuthorizationV1Api(control_plane.api_client()).delete_cluster_role_binding(
            binding
        )

    try:
        assert result["status"] == "succeeded"
        assert [(e["name"], e["status"]) for e in result["environments"]] == [
            ("staging", "succeeded"), ("prod", "succeeded")]
        digest = result["build"]["digest"]
        for namespace in (staging, prod):
            assert inv.read(kube, "app", namespace).digest == digest
            secret = kube.get(Resource("", "v1", "Secret", "secrets", True), namespace,
                              "app-secret")
            assert base64.b64decode(secret["data"]["password"]).decode() == secret_plant

        # Routing: the prod install ran on the worker polling the prod queue.
        events = _history_events(client, handle.id)
        scheduled = {e.event_id: e.activity_task_scheduled_event_attributes
                     for e in _of_type(events, EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED)}
        ran_on = {
            (scheduled[s.scheduled_event_id].activity_type.name,
             scheduled[s.scheduled_event_id].task_queue.name): s.identity
            for s in (e.activity_task_started_event_attributes
                      for e in _of_type(events, EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED))
        }
        assert ran_on[("install", prod_queue)] == "worker-prod"
        assert ran_on[("build", ci_queue)] == "worker-ci"

        # No secret in what the server stores: not the token (inline, but encrypted) nor the
        # Secret's value (never in a payload at all).
        raw = b"".join(e.SerializeToString() for e in events)
        assert token.encode() not in raw
        assert secret_plant.encode() not in raw
        codec = EncryptionCodec(parse_keyring(key_file.read_text(), "keys"))
        opened = run(codec.decode([p for e in events for p in _all_payloads(e)]))
        plain = b"".join(p.data for p in opened)
        assert b"InstallResult" in plain  # the decoded history really is readable
        assert token.encode() in plain  # the inline token travelled, encrypted
        assert secret_plant.encode() not in plain
    finally:
        for namespace in (staging, prod):
            kube.delete(namespaces, None, namespace)


def _signed(ref: str, private: Any, identity: str, issuer: str) -> None:
    from runner.common.oci import MANIFEST, Descriptor
    from runner.common.reference import parse_ref
    from runner.common.store import RegistryOptions, open_store
    from runner.supply.referrers import attach, bundle_manifest

    parsed = parse_ref(ref)
    store = open_store(parsed, RegistryOptions(), create=True)
    try:
        raw, _ = store.fetch_manifest_raw(parsed.digest or "")
        subject = Descriptor(MANIFEST, parsed.digest or "", len(raw))
        manifest, blobs = bundle_manifest(private.sign(raw, identity, issuer), subject)
        attach(store, manifest, blobs)
    finally:
        store.close()


def test_ship_verifies_then_rolls_back_an_environment_whose_wait_fails(
    temporal: TemporalEndpoint, control_plane: ClusterEndpoint, registry: RegistryEndpoint,
    kube: Any, ns: str, start_worker: StartWorker, tmp_path: Path, capsys: Any,
    monkeypatch: Any,
) -> None:
    from tests.sigstore_instance import PrivateInstance

    signer = ("https://github.com/acme/shop/.github/workflows/release.yml@refs/heads/main",
              "https://token.actions.githubusercontent.com")
    private = PrivateInstance()
    root = tmp_path / "trusted_root.json"
    root.write_text(json.dumps(private.trusted_root()))
    repo = f"{registry.host}/{unique('rollback')}/app"
    good = publish([config_map("app", ns, {"v": "1"})], f"{repo}:v1")
    # Its pods ask for a node that does not exist: the Deployment never becomes ready, whether
    # or not this session's cluster runs controllers and a kwok node.
    web = deployment("web", ns)
    web["spec"]["template"]["spec"]["nodeSelector"] = {"lading.dev/no-such-node": "true"}
    stuck = publish([config_map("app", ns, {"v": "2"}), web], f"{repo}:v2")
    for ref in (good, stuck):
        _signed(ref, private, *signer)
    queue = unique("env")
    start_worker(queue, "worker-env")

    def ship(ref: str, identity: str) -> tuple[int, dict[str, Any]]:
        plan = {
            "apiVersion": "lading.dev/v1", "kind": "ShipPlan", "artifact": ref,
            "verify": {"identity": identity, "issuer": signer[1], "trusted_root": str(root)},
            "environments": [{"name": "dev", "install": _install_plan(
                repo, ns, control_plane.kubeconfig, timeout="3s")}],
            "options": {"heartbeat_timeout": "10s", "maximum_attempts": 2},
        }
        path = tmp_path / f"{unique('ship')}.json"
        path.write_text(json.dumps(plan))
        ran = lading(capsys, monkeypatch, "submit", "-f", str(path), "-t", queue, "--wait",
                     "--address", temporal.address, "-o", "json")
        return ran.code, json.loads(ran.out)

    code, first = ship(good, signer[0])
    assert code == 0, first
    assert first["result"]["verify"]["signature"]["identity"] == signer[0]
    assert first["result"]["environments"][0]["status"] == "succeeded"

    code, second = ship(stuck, signer[0])
    assert (code, second["status"]) == (1, "failed")
    dev = second["result"]["environments"][0]
    assert dev["status"] == "rolled-back"
    assert "not ready" in dev["install"]["error"]
    assert dev["rollback"]["status"] == "succeeded"
    assert inv.read(kube, "app", ns).digest == good.rsplit("@", 1)[1]
    assert kube.get(Resource("apps", "v1", "Deployment", "deployments", True), ns, "web") is None

    code, refused = ship(stuck, "https://github.com/mallory/fork")
    assert (code, refused["status"]) == (1, "failed")
    assert refused["result"]["error"].startswith("verify:")
    assert refused["result"]["environments"] == []
    assert inv.read(kube, "app", ns).digest == good.rsplit("@", 1)[1]


# Failure, cancellation and retries -----------------------------------------------------------


def test_sigkill_of_the_worker_holding_an_install_lets_another_finish_it_applying_each_once(
    temporal: TemporalEndpoint, control_plane: ClusterEndpoint, registry: RegistryEndpoint,
    kube: Any, ns: str, start_worker: StartWorker, slow_relay: SlowRelay, tmp_path: Path,
) -> None:
    count = 60
    ref = publish([config_map(f"cm-{i:03}", ns, {"i": str(i)}) for i in range(count)],
                  f"{registry.host}/{unique('kill')}/app:v1")
    kubeconfig = slow_relay.kubeconfig(control_plane.kubeconfig, tmp_path / "slow.kubeconfig")
    queue = unique("kill")
    first = start_worker(queue, "worker-first")
    events = ConfigMapEvents(control_plane, ns)
    client = _client(temporal)
    handle = run(client.start_workflow(
        "run", _run_request("install", _install_plan(ref, ns, kubeconfig, concurrency=1)),
        id=unique("kill"), task_queue=queue,
    ))

    first.wait_for("stage namespaced: applying", timeout=120)
    time.sleep(1.5)
    first.kill()
    applied = [n for n in (f"cm-{i:03}" for i in range(count))
               if kube.get(CONFIG_MAPS, ns, n) is not None]
    assert 0 < len(applied) < count, "the kill should land inside the apply stage"

    start_worker(queue, "worker-second")
    result = run(asyncio.wait_for(handle.result(), timeout=180))
    assert result["status"] == "succeeded"
    assert result["summary"]["created"] + result["summary"]["unchanged"] == count
    assert result["summary"]["unchanged"] >= len(applied)

    seen = events.stop()
    for i in range(count):
        name = f"cm-{i:03}"
        assert seen[("ADDED", name)] == 1, name
        assert seen[("MODIFIED", name)] == 0, f"{name} was written twice"
    current = inv.read(kube, "app", ns)
    assert current.digest == ref.rsplit("@", 1)[1]
    assert current.group_kinds == frozenset({"ConfigMap"})
    assert kube.get(LEASES, ns, lease_name("app")) is None

    started = _of_type(_history_events(client, handle.id),
                       EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED)
    assert [s.activity_task_started_event_attributes.identity for s in started] == \
        ["worker-second"]
    retried = started[0].activity_task_started_event_attributes
    assert retried.attempt == 2
    assert "heartbeat" in retried.last_failure.message.lower()


def test_a_workflow_cancelled_mid_install_stops_after_the_stage_and_releases_the_lease(
    temporal: TemporalEndpoint, control_plane: ClusterEndpoint, registry: RegistryEndpoint,
    kube: Any, ns: str, start_worker: StartWorker, slow_relay: SlowRelay, tmp_path: Path,
) -> None:
    # Enough ClusterRoles that the cancellation (carried by the next heartbeat's answer)
    # reaches the worker while their stage still runs.
    prefix = unique("cancel")
    roles = [{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
              "metadata": {"name": f"{prefix}-{i:02}"}, "rules": []} for i in range(60)]
    maps = [config_map(f"cm-{i:02}", ns, {"i": str(i)}) for i in range(10)]
    ref = publish(roles + maps, f"{registry.host}/{prefix}/app:v1")
    kubeconfig = slow_relay.kubeconfig(control_plane.kubeconfig, tmp_path / "slow.kubeconfig")
    queue = unique("cancel")
    worker = start_worker(queue, "worker-cancel")
    client = _client(temporal)
    handle = run(client.start_workflow(
        "run", _run_request("install", _install_plan(ref, ns, kubeconfig, concurrency=1)),
        id=prefix, task_queue=queue,
    ))
    try:
        worker.wait_for("stage cluster: applying", timeout=120)
        run(handle.cancel())
        with pytest.raises(WorkflowFailureError) as failed:
            run(asyncio.wait_for(handle.result(), timeout=120))
        assert isinstance(failed.value.cause, CancelledError)

        # The activity stopped before the next stage: no ConfigMap was written, and the
        # inventory lease is free for the next install.
        assert all(kube.get(CONFIG_MAPS, ns, m["metadata"]["name"]) is None for m in maps)
        assert kube.get(LEASES, ns, lease_name("app")) is None
        events = _history_events(client, handle.id)
        [stopped] = _of_type(events, EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED)
        failure = stopped.activity_task_failed_event_attributes.failure
        assert failure.application_failure_info.type == "Cancelled"
        assert failure.application_failure_info.non_retryable
        [report] = [json.loads(p.data)
                    for p in failure.application_failure_info.details.payloads]
        assert report["last_step"].startswith("stage cluster: applying")
        assert report["stopped_before"].startswith("stage namespaced: applying")
        states = {o["id"]: o["state"] for o in report["objects"]}
        assert states[f"rbac.authorization.k8s.io/v1/ClusterRole//{prefix}-00"] == "in-sync"
        assert states[f"/v1/ConfigMap/{ns}/cm-00"] == "missing"
        assert _of_type(events, EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED)
    finally:
        for role in roles:
            kube.delete(CLUSTER_ROLES, None, role["metadata"]["name"])


def test_a_bad_plan_fails_once_non_retryably_and_says_why_in_history(
    temporal: TemporalEndpoint, control_plane: ClusterEndpoint, start_worker: StartWorker,
    ns: str,
) -> None:
    queue = unique("bad")
    start_worker(queue, "worker-bad")
    client = _client(temporal)
    # Sent as a Go or TypeScript control plane would, past submit's own checks.
    plan = _install_plan("not a reference!", ns, control_plane.kubeconfig)
    handle = run(client.start_workflow("run", _run_request("install", plan), id=unique("bad"),
                                       task_queue=queue))
    with pytest.raises(WorkflowFailureError) as failed:
        run(asyncio.wait_for(handle.result(), timeout=60))
    cause = failed.value.cause
    assert isinstance(cause, ApplicationError)
    assert cause.type == "InputError"
    assert cause.non_retryable
    events = _history_events(client, handle.id)
    started = _of_type(events, EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED)
    assert [s.activity_task_started_event_attributes.attempt for s in started] == [1]
    [activity_failed] = _of_type(events, EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED)
    failure = activity_failed.activity_task_failed_event_attributes.failure
    assert "not a reference!" in failure.message
    assert failure.application_failure_info.non_retryable
    assert _of_type(events, EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED)


def test_an_unreachable_registry_is_retried_with_backoff_then_reported_as_remote(
    temporal: TemporalEndpoint, control_plane: ClusterEndpoint, start_worker: StartWorker,
    ns: str, capsys: Any, monkeypatch: Any, tmp_path: Path,
) -> None:
    queue = unique("remote")
    # One try per attempt inside the runner: the retries under test are Temporal's.
    start_worker(queue, "worker-remote", env={"LADING_REGISTRY_ATTEMPTS": "1"})
    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there now
    plan = _install_plan(f"127.0.0.1:{port}/team/app@sha256:{'0' * 64}", ns,
                         control_plane.kubeconfig)
    path = tmp_path / "request.json"
    path.write_text(json.dumps(_run_request("install", plan, maximum_attempts=3)))
    ran = lading(capsys, monkeypatch, "submit", "-f", str(path), "-t", queue, "--wait",
                 "--address", temporal.address, "-o", "json")
    assert ran.code == 3, ran.out + ran.err
    submission = json.loads(ran.out)
    assert submission["status"] == "failed"
    events = _history_events(_client(temporal), submission["workflow_id"])
    [started] = _of_type(events, EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED)
    assert started.activity_task_started_event_attributes.attempt == 3
