"""A thin Kubernetes client: raw JSON requests over `runner.common.wire` to the endpoint
`runner.common.kubeconfig` resolves (kubeconfig, contexts, exec plugins, in-cluster service
accounts, token + CA), and discovery cached per cluster.

Objects stay plain dicts. Errors become `KubeError` values carrying the API Status (reason,
message, causes) so callers can explain conflicts and invalid fields; nothing here ever puts a
token or a request body into a message, and an error answering a request that sent a Secret is
redacted (`runner.common.redact`) before it leaves this module: the server quotes rejected
values, and a Secret's values are secret.
"""

from __future__ import annotations

import builtins
import functools
import json
import random
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

from runner.common.errors import OperationFailed, RemoteError
from runner.common.kubeconfig import Target, resolve
from runner.common.objects import Obj
from runner.common.redact import redact, secret_values
from runner.common.wire import Wire, WireError

__all__ = ["KubeClient", "KubeError", "Resource", "Target"]

APPLY_PATCH = "application/apply-patch+yaml"
# An answer of its metadata only (what `kubectl get` asks for), JSON from a server that cannot:
# the server encodes a fraction of the object, ~9 % less API server CPU per apply whose answer
# nobody reads. Errors still come as a JSON Status.
METADATA_ONLY = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json"
# The API groups kube-apiserver serves itself. Server-side apply checks a built-in kind's
# object against its compiled schema in every fieldValidation mode (an unknown field at any
# depth fails the typed conversion, and the error names them all); Strict adds only a second,
# strict decode of the body to find duplicate fields, which a body lading encodes from a dict
# cannot have. Custom resources keep Strict, the documented way to have every unknown field
# refused: their schema is a CRD's, with its own pruning rules (preserved and embedded
# fields). A CRD cannot take one of these names (a group needs a dot, and *.k8s.io ones an
# approval); a group not listed here is treated as custom.
BUILT_IN_GROUPS = frozenset({
    "", "apps", "batch", "autoscaling", "policy", "admissionregistration.k8s.io",
    "apiextensions.k8s.io", "apiregistration.k8s.io", "certificates.k8s.io",
    "coordination.k8s.io", "discovery.k8s.io", "events.k8s.io", "flowcontrol.apiserver.k8s.io",
    "internal.apiserver.k8s.io", "networking.k8s.io", "node.k8s.io",
    "rbac.authorization.k8s.io", "resource.k8s.io", "scheduling.k8s.io", "storage.k8s.io",
    "storagemigration.k8s.io",
})
THROTTLE_RETRIES = 8
MAX_RETRY_AFTER = 30.0


def retry_after(header: str | None, attempt: int) -> float:
    """Seconds to wait after a 429: the server's Retry-After (capped), else an exponential
    backoff from 0.25 s; jittered so a crowd of clients does not come back at once. Pure but
    for the jitter."""
    try:
        base = min(float(header), MAX_RETRY_AFTER) if header else 0.25 * 2**attempt
    except ValueError:
        base = 0.25 * 2**attempt
    return min(base, MAX_RETRY_AFTER) * random.uniform(1.0, 1.25)  # noqa: S311 (jitter)


@dataclass
class _Slot:
    throttled: bool = False


# The requests a wave of writes needs in flight are the API server's own queue plus what is on
# the way (Little's law). Measured on a 2-core control plane 0, 10 and 50 ms away (bench/, fresh
# installs of 1,000): 32 keep it as busy next to it as 64 do, and at 10 ms as 48 or 64 do
# (more only queue there and cost threads here); at 50 ms, 32 leave it idle a third of the time
# and 64 do not.
BASE_WINDOW = 32
WINDOW_PER_MS = 1.0


def window_for(distance: float | None, most: int) -> int:
    """Requests to keep in flight to a server `distance` seconds away (None: not known yet),
    never more than `most`."""
    ms = (distance or 0.0) * 1000
    return max(1, min(most, BASE_WINDOW + round(WINDOW_PER_MS * ms)))


class Window:
    """How many requests may be in flight: the pool size at first, halved each time the server
    throttles (429), grown by one after a window's worth of successes — additive increase,
    multiplicative decrease, so a client settles at what API Priority and Fairness grants it
    instead of sending a burst into a wall of 429s."""

    def __init__(self, size: int) -> None:
        self.size = max(1, size)
        self.limit = self.size
        self._inflight = 0
        self._successes = 0
        self._changed = threading.Condition()

    def resize(self, size: int) -> None:
        with self._changed:
            self.size = max(1, size)
            self.limit = min(self.limit, self.size)

    @contextmanager
    def slot(self) -> Iterator[_Slot]:
        with self._changed:
            while self._inflight >= self.limit:
                self._changed.wait()
            self._inflight += 1
        slot = _Slot()
        try:
            yield slot
        finally:
            with self._changed:
                self._inflight -= 1
                if slot.throttled:
                    self.limit = max(1, self.limit // 2)
                    self._successes = 0
                else:
                    self._successes += 1
                    if self._successes >= self.limit and self.limit < self.size:
                        self.limit += 1
                        self._successes = 0
                self._changed.notify_all()


@dataclass(frozen=True)
class Resource:
    """An API resource as discovery describes it."""

    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool
    verbs: tuple[str, ...] = ()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def collection_path(self, namespace: str | None) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            return f"{base}/namespaces/{quote(namespace, safe='')}/{self.plural}"
        return f"{base}/{self.plural}"

    def object_path(self, namespace: str | None, name: str) -> str:
        return f"{self.collection_path(namespace)}/{quote(name, safe='')}"


class KubeError(OperationFailed):
    """A non-2xx answer from the API server, with its Status document. Callers handle the
    ones they expect (404, 409, 422…); any other reaching the CLI is a failed operation."""

    def __init__(
        self,
        status: int,
        reason: str,
        message: str,
        causes: list[dict[str, Any]],
        details: dict[str, Any],
    ):
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.causes = causes
        self.details = details

    def redacted(self, values: list[str]) -> KubeError:
        """This error with `values` and every value the server quoted masked, in the message
        and in each cause."""
        causes = [
            {k: redact(v, values) if isinstance(v, str) else v for k, v in cause.items()}
            for cause in self.causes
        ]
        details = {**self.details, "causes": causes} if "causes" in self.details else self.details
        return KubeError(self.status, self.reason, redact(self.message, values), causes, details)

    @property
    def is_not_found(self) -> bool:
        return self.status == 404

    @property
    def is_conflict(self) -> bool:
        return self.status == 409 and self.reason == "Conflict"

    @property
    def is_invalid(self) -> bool:
        return self.status == 422

    @property
    def is_immutable(self) -> bool:
        return (
            (self.is_invalid
            and any("immutable" in str(c.get("message", "")) for c in self.causes))
            or "field is immutable" in self.message
        )


class KubeClient:
    def __init__(self, target: Target, *, pool_size: int = 16, timeout: float = 60.0):
        self.target = target
        self.timeout = timeout
        resolved = resolve(target)
        self.host = resolved.endpoint.url
        self.wire = Wire(resolved.endpoint, timeout=timeout)
        self.default_namespace = resolved.namespace or "default"
        self._resources: dict[tuple[str, str, str], Resource] | None = None
        self._group_versions: dict[str, list[Resource]] = {}
        self._lock = threading.Lock()
        self._paused_until = 0.0
        self._window = Window(pool_size)
        self.throttled = 0  # how often the server answered 429 (API Priority and Fairness)

    def close(self) -> None:
        self.wire.close()

    def fit_window(self, most: int) -> int:
        """Size the window to the distance measured so far (the requests before a wave of
        writes: discovery, the lease, the LISTs), at most `most`; returns it."""
        size = window_for(self.wire.distance, min(most, self._window.size))
        self._window.resize(size)
        return size

    # -- requests ------------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, Any] | None = None,
        body: Any = None,
        content_type: str | None = None,
        answer: bool = True,
        accept: str = "application/json",
    ) -> Any:
        """The decoded answer (an empty dict when `answer` is False: the caller only needs to
        know it succeeded, and decoding a stored object costs more than sending it)."""
        headers = {"Accept": accept}
        payload = None
        if body is not None:
            headers["Content-Type"] = content_type or "application/json"
            payload = body if isinstance(body, bytes) else json.dumps(
                body, separators=(",", ":")).encode()
        url_path = path + ("?" + urlencode(query, doseq=True) if query else "")
        for attempt in range(THROTTLE_RETRIES + 1):
            self._wait_out_throttling()
            with self._window.slot() as slot:
                status, response_headers, data = self._send(method, url_path, headers, payload)
                slot.throttled = status == 429
            if status != 429 or attempt == THROTTLE_RETRIES:
                break
            # API Priority and Fairness turned us away before doing anything: every thread of
            # this client pauses for as long as the server asks, then tries again.
            self._throttled(retry_after(response_headers.get("retry-after"), attempt))
        if status == 401:
            raise RemoteError(
                f"the API server {self.host} rejected our credentials (401)",
                hint="refresh the kubeconfig credentials or token",
            )
        if not 200 <= status < 300:
            error = _kube_error(status, data)
            if isinstance(body, dict) and body.get("kind") == "Secret":
                error = error.redacted(secret_values(body))
            raise error
        if not answer:
            return {}
        return json.loads(data) if data else None

    def _send(
        self, method: str, url_path: str, headers: dict[str, str], body: bytes | None
    ) -> tuple[int, dict[str, str], bytes]:
        try:
            return self.wire.request(method, url_path, headers, body)
        except WireError as e:
            if e.kind == "tls-verify":
                raise RemoteError(
                    f"TLS handshake with the API server {self.host} failed: its certificate "
                    f"is not signed by the CA lading was given ({e.detail})",
                    hint="check the CA in your kubeconfig (certificate-authority-data)",
                ) from None
            if e.kind == "tls":
                raise RemoteError(
                    f"TLS handshake with the API server {self.host} failed ({e.detail})",
                    hint="check the CA and client certificate in your kubeconfig",
                ) from None
            if e.kind == "connect":
                raise RemoteError(
                    f"cannot reach the API server {self.host}: {e.detail}",
                    hint="check the kubeconfig/context and that the cluster is up",
                ) from None
            raise RemoteError(
                f"lost the connection to the API server {self.host} ({e.detail})",
                hint="check that the cluster is up; rerunning the install converges",
            ) from None

    def _wait_out_throttling(self) -> None:
        with self._lock:
            pause = self._paused_until - time.monotonic()
        if pause > 0:
            time.sleep(pause)

    def _throttled(self, delay: float) -> None:
        with self._lock:
            self._paused_until = max(self._paused_until, time.monotonic() + delay)
            self.throttled += 1

    def get(self, resource: Resource, namespace: str | None, name: str) -> Obj | None:
        try:
            found: Obj = self.request("GET", resource.object_path(namespace, name))
        except KubeError as e:
            if e.is_not_found:
                return None
            raise
        return found

    def list(
        self, resource: Resource, namespace: str | None = None, label_selector: str | None = None
    ) -> builtins.list[Obj]:
        query: dict[str, Any] = {"limit": 500}
        if label_selector:
            query["labelSelector"] = label_selector
        items: builtins.list[Obj] = []
        while True:
            page = self.request("GET", resource.collection_path(namespace), query=query)
            for item in page.get("items", []):
                # LIST items carry no apiVersion/kind; put them back so items are whole objects.
                item.setdefault("apiVersion", resource.api_version)
                item.setdefault("kind", resource.kind)
                items.append(item)
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return items
            query["continue"] = token

    def apply(
        self,
        resource: Resource,
        obj: Obj,
        *,
        field_manager: str,
        force: bool = False,
        dry_run: bool = False,
        answer: bool = True,
        validated: bool = False,
    ) -> Obj:
        """Server-side apply; the stored (or would-be) object, or {} when `answer` is False.

        Fields the schema does not know are refused. A custom resource asks for that
        (fieldValidation=Strict) unless `validated`: this very body passed a strict dry-run in
        this run already, and the server's strict decoding costs it CPU on every object. A
        built-in kind never needs to ask (BUILT_IN_GROUPS): 12 % less API server CPU per
        dry-run."""
        meta = obj["metadata"]
        strict = not validated and resource.group not in BUILT_IN_GROUPS
        result: Obj = self.request(
            "PATCH",
            resource.object_path(meta.get("namespace"), meta["name"])
            + _apply_query(field_manager, force, dry_run, strict),
            body=obj,
            content_type=APPLY_PATCH,
            answer=answer,
            accept="application/json" if answer else METADATA_ONLY,
        )
        return result

    def delete(
        self,
        resource: Resource,
        namespace: str | None,
        name: str,
        *,
        propagation: str = "Background",
        dry_run: bool = False,
        uid: str | None = None,
        resource_version: str | None = None,
    ) -> bool:
        body: dict[str, Any] = {
            "kind": "DeleteOptions",
            "apiVersion": "v1",
            "propagationPolicy": propagation,
        }
        preconditions = {
            k: v for k, v in (("uid", uid), ("resourceVersion", resource_version)) if v
        }
        if preconditions:
            body["preconditions"] = preconditions
        query = {"dryRun": "All"} if dry_run else None
        try:
            self.request("DELETE", resource.object_path(namespace, name), query=query, body=body)
        except KubeError as e:
            if e.is_not_found:
                return False
            raise
        return True

    # -- discovery -----------------------------------------------------------------------------

    def _load_group_version(self, api_version: str) -> builtins.list[Resource]:
        with self._lock:
            if api_version in self._group_versions:
                return self._group_versions[api_version]
        group, _, version = api_version.rpartition("/")
        path = f"/apis/{api_version}" if group else f"/api/{version}"
        try:
            doc = self.request("GET", path)
        except KubeError as e:
            if e.is_not_found:
                doc = {"resources": []}
            else:
                raise
        resources = [
            Resource(
                group,
                version,
                r["kind"],
                r["name"],
                bool(r.get("namespaced")),
                tuple(r.get("verbs", [])),
            )
            for r in doc.get("resources", [])
            if "/" not in r["name"]
        ]
        with self._lock:
            self._group_versions[api_version] = resources
        return resources

    def discover(self, api_versions: Iterable[str]) -> None:
        """Load discovery for these group/versions at once (one round trip, not one each)."""
        missing = sorted({v for v in api_versions if v not in self._group_versions})
        if len(missing) > 1:
            with ThreadPoolExecutor(max_workers=min(len(missing), 16)) as pool:
                for _ in pool.map(self._load_group_version, missing):
                    pass

    def resources_in(self, api_version: str) -> builtins.list[Resource]:
        """Every resource a group/version serves (empty when the cluster has none)."""
        return builtins.list(self._load_group_version(api_version))

    def resource_for(self, api_version: str, kind: str) -> Resource | None:
        """The resource serving apiVersion/kind, or None when the cluster has no such kind."""
        for resource in self._load_group_version(api_version):
            if resource.kind == kind:
                return resource
        return None

    def forget(self, api_version: str) -> None:
        """Drop cached discovery for a group/version (after its CRD was created)."""
        with self._lock:
            self._group_versions.pop(api_version, None)


@functools.cache
def _apply_query(field_manager: str, force: bool, dry_run: bool, strict: bool) -> str:
    """The query string of an apply, the same for every object of a run."""
    query = {"fieldManager": field_manager, "fieldValidation": "Strict" if strict else "Ignore"}
    if force:
        query["force"] = "true"
    if dry_run:
        query["dryRun"] = "All"
    return "?" + urlencode(query)


def _kube_error(status: int, data: bytes) -> KubeError:
    try:
        doc = json.loads(data)
    except ValueError:
        doc = {}
    if not isinstance(doc, dict):
        doc = {}
    details = doc.get("details") or {}
    message = str(doc.get("message") or "")
    if status == 500 and "failed to create typed patch object" in message:
        # The API server answers a type error in an apply patch (a string where the schema
        # wants a number) with 500; it is the caller's invalid object, so call it that.
        status, doc["reason"] = 422, "Invalid"
    return KubeError(
        status,
        str(doc.get("reason") or ""),
        str(doc.get("message") or f"HTTP {status}"),
        list(details.get("causes") or []),
        details,
    )
