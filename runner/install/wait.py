"""Readiness with kstatus semantics, and explanations when something is not ready.

`status()` is pure: an object in, (state, reason) out. `wait()` polls the cluster (one LIST
per kind and namespace per round) until every object is Current, one Fails, or time runs out;
then it names each object that is not ready and why, with its recent events.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from runner.common.kube import KubeClient, KubeError, Resource
from runner.common.objects import Obj, ObjectId

State = Literal["Current", "InProgress", "Failed"]

# Container states that will not fix themselves by waiting longer.
_STUCK_REASONS = {
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
}


def _conditions(obj: Obj) -> dict[str, dict[str, Any]]:
    return {str(c.get("type")): c for c in (obj.get("status") or {}).get("conditions") or []}


def _is(obj: Obj, condition: str, value: str = "True") -> bool:
    return str(_conditions(obj).get(condition, {}).get("status")) == value


def status(obj: Obj) -> tuple[State, str]:
    """kstatus-style state of one object and a human reason."""
    kind = obj.get("kind")
    meta = obj.get("metadata") or {}
    st = obj.get("status") or {}
    spec = obj.get("spec") or {}
    generation = meta.get("generation")
    observed = st.get("observedGeneration")
    if meta.get("deletionTimestamp"):
        return "InProgress", "being deleted"
    if generation is not None and observed is not None and observed < generation:
        return "InProgress", f"controller has not observed generation {generation} yet"
    if kind == "CustomResourceDefinition":
        if _is(obj, "NamesAccepted", "False"):
            return "Failed", str(_conditions(obj)["NamesAccepted"].get("message", "names rejected"))
        return (
            ("Current", "established")
            if _is(obj, "Established")
            else ("InProgress", "not established yet")
        )
    if kind == "Namespace":
        phase = st.get("phase")
        return ("Current", "active") if phase == "Active" else ("InProgress", f"phase {phase}")
    if kind == "Deployment":
        return _deployment(spec, st, obj)
    if kind == "StatefulSet":
        return _statefulset(spec, st)
    if kind == "DaemonSet":
        want = st.get("desiredNumberScheduled", 0)
        if observed is None:
            return "InProgress", "not observed yet"
        for field, label in (
            ("updatedNumberScheduled", "updated"),
            ("numberAvailable", "available"),
        ):
            if st.get(field, 0) < want:
                return "InProgress", f"{st.get(field, 0)}/{want} pods {label}"
        return "Current", f"{want} pods available"
    if kind == "Job":
        if _is(obj, "Failed"):
            return "Failed", str(_conditions(obj)["Failed"].get("message") or "job failed")
        if _is(obj, "Complete"):
            return "Current", "complete"
        return "InProgress", f"{st.get('succeeded', 0)} succeeded, {st.get('active', 0)} active"
    if kind == "Pod":
        return _pod(obj)
    if kind == "PersistentVolumeClaim":
        phase = st.get("phase")
        return ("Current", "bound") if phase == "Bound" else ("InProgress", f"phase {phase}")
    if kind == "Service" and spec.get("type") == "LoadBalancer":
        ingress = (st.get("loadBalancer") or {}).get("ingress")
        return (
            ("Current", "has an address")
            if ingress
            else ("InProgress", "waiting for a load balancer")
        )
    conditions = _conditions(obj)
    if "Ready" in conditions and kind not in ("Node",):
        ready = conditions["Ready"]
        if ready.get("status") == "True":
            return "Current", "ready"
        return "InProgress", str(ready.get("message") or ready.get("reason") or "not ready")
    return "Current", "no readiness to wait for"


def _deployment(spec: dict[str, Any], st: dict[str, Any], obj: Obj) -> tuple[State, str]:
    replicas = spec.get("replicas", 1)
    progressing = _conditions(obj).get("Progressing", {})
    if progressing.get("reason") == "ProgressDeadlineExceeded":
        return "Failed", str(progressing.get("message") or "progress deadline exceeded")
    if st.get("observedGeneration") is None:
        return "InProgress", "not observed yet"
    for field, label in (
        ("updatedReplicas", "updated"),
        ("readyReplicas", "ready"),
        ("availableReplicas", "available"),
    ):
        if st.get(field, 0) < replicas:
            return "InProgress", f"{st.get(field, 0)}/{replicas} replicas {label}"
    if st.get("replicas", 0) > replicas:
        return "InProgress", f"{st['replicas'] - replicas} old replicas terminating"
    return "Current", f"{replicas}/{replicas} replicas available"


def _statefulset(spec: dict[str, Any], st: dict[str, Any]) -> tuple[State, str]:
    replicas = spec.get("replicas", 1)
    if st.get("observedGeneration") is None:
        return "InProgress", "not observed yet"
    if st.get("readyReplicas", 0) < replicas:
        return "InProgress", f"{st.get('readyReplicas', 0)}/{replicas} replicas ready"
    if (spec.get("updateStrategy") or {}).get("type", "RollingUpdate") == "RollingUpdate":
        if st.get("updatedReplicas", 0) < replicas:
            return "InProgress", f"{st.get('updatedReplicas', 0)}/{replicas} replicas updated"
        if st.get("currentRevision") != st.get("updateRevision"):
            return "InProgress", "rolling update in progress"
    return "Current", f"{replicas}/{replicas} replicas ready"


def pod_problems(pod: Obj) -> list[str]:
    """Why a pod is not ready: stuck container states, failed probes, scheduling failures."""
    problems: list[str] = []
    st = pod.get("status") or {}
    scheduled = _conditions(pod).get("PodScheduled", {})
    if scheduled.get("status") == "False":
        problems.append(
            f"{scheduled.get('reason', 'Unschedulable')}: {scheduled.get('message', '')}".rstrip(
                ": "
            )
        )
    for cs in (st.get("initContainerStatuses") or []) + (st.get("containerStatuses") or []):
        state = cs.get("state") or {}
        waiting = state.get("waiting") or {}
        terminated = (cs.get("lastState") or {}).get("terminated") or {}
        if waiting.get("reason") in _STUCK_REASONS:
            text = f"container {cs.get('name')}: {waiting['reason']}"
            if waiting.get("message"):
                text += f" ({waiting['message']})"
            if terminated:
                text += f", last exit code {terminated.get('exitCode')}"
            problems.append(text)
        elif not cs.get("ready") and state.get("running"):
            problems.append(
                f"container {cs.get('name')}: running but not ready (readiness probe failing)"
            )
    return problems


def _pod(pod: Obj) -> tuple[State, str]:
    phase = (pod.get("status") or {}).get("phase")
    if phase == "Succeeded":
        return "Current", "succeeded"
    if phase == "Failed":
        return "Failed", "pod failed"
    if _is(pod, "Ready"):
        return "Current", "ready"
    problems = pod_problems(pod)
    return "InProgress", "; ".join(problems) if problems else f"phase {phase}"


@dataclass(frozen=True)
class Waiting:
    oid: ObjectId
    resource: Resource
    state: State
    reason: str


def wait(
    client: KubeClient,
    targets: list[tuple[ObjectId, Resource]],
    timeout: float,
    progress: Callable[[str], None],
    interval: float = 1.0,
) -> list[Waiting]:
    """Poll until all targets are Current; return the ones that are not (empty = all ready)."""
    deadline = time.monotonic() + timeout
    by_list: dict[tuple[Resource, str], dict[str, ObjectId]] = defaultdict(dict)
    for oid, resource in targets:
        by_list[(resource, oid.namespace)][oid.name] = oid
    last_report = ""
    while True:
        pending: list[Waiting] = []
        for (resource, namespace), names in by_list.items():
            live = {o["metadata"]["name"]: o for o in client.list(resource, namespace or None)}
            for name, oid in names.items():
                obj = live.get(name)
                state, reason = status(obj) if obj else ("InProgress", "not found")
                if state != "Current":
                    pending.append(Waiting(oid, resource, state, reason))
        failed = [w for w in pending if w.state == "Failed"]
        if not pending or failed or time.monotonic() >= deadline:
            return failed or pending
        report = f"waiting for {len(pending)} object(s): " + ", ".join(
            f"{w.oid.kind}/{w.oid.name} ({w.reason})" for w in pending[:3]
        )
        if report != last_report:
            progress(report)
            last_report = report
        tick = getattr(progress, "tick", None)
        if callable(tick):  # a sink that heartbeats or can be cancelled hears from every poll
            tick()
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))


PODS = Resource("", "v1", "Pod", "pods", True)
EVENTS = Resource("", "v1", "Event", "events", True)


def explain(client: KubeClient, waiting: Waiting, max_events: int = 5) -> str:
    """One paragraph on why an object is not ready: its reason, its pods' problems, events."""
    oid = waiting.oid
    lines = [
        f"{oid.kind}/{oid.name}"
        + (f" in {oid.namespace}" if oid.namespace else "")
        + f": {waiting.reason}"
    ]
    try:
        workload = client.get(waiting.resource, oid.namespace or None, oid.name)
        selector = ((workload or {}).get("spec") or {}).get("selector") or {}
        labels = selector.get("matchLabels") if isinstance(selector, dict) else None
        if labels and oid.kind in ("Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"):
            query = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
            for pod in client.list(PODS, oid.namespace, label_selector=query)[:3]:
                for problem in pod_problems(pod):
                    lines.append(f"  pod {pod['metadata']['name']}: {problem}")
                lines.extend(_events(client, oid.namespace, pod["metadata"]["name"], max_events))
        lines.extend(_events(client, oid.namespace, oid.name, max_events))
    except KubeError as e:
        lines.append(f"  (could not read details: {e.message})")
    return "\n".join(lines)


def _events(client: KubeClient, namespace: str, name: str, limit: int) -> list[str]:
    if not namespace:
        return []
    events = client.request(
        "GET",
        EVENTS.collection_path(namespace),
        query={"fieldSelector": f"involvedObject.name={name}"},
    )
    items = sorted(
        events.get("items", []),
        key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or ""),
    )
    return [
        f"  event {e.get('type', '')} {e.get('reason', '')}: {e.get('message', '')}"
        f" (x{e.get('count', 1)})"
        for e in items[-limit:]
    ]
