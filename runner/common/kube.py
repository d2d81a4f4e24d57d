"""A thin Kubernetes client: configuration from the official `kubernetes` package (kubeconfig,
contexts, exec plugins, in-cluster service accounts, token + CA), raw JSON requests, and
discovery cached per cluster.

Objects stay plain dicts. Errors become `KubeError` values carrying the API Status (reason,
message, causes) so callers can explain conflicts and invalid fields; nothing here ever puts a
token or a request body into a message, and an error answering a request that sent a Secret is
redacted (`runner.common.redact`) before it leaves this module: the server quotes rejected
values, and a Secret's values are secret.
"""

from __future__ import annotations

import builtins
import json
import os
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import urllib3
import yaml
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from plans.documents import load_yaml, read_text
from runner.common.errors import InputError, OperationFailed, RemoteError
from runner.common.objects import Obj
from runner.common.redact import redact, secret_values

APPLY_PATCH = "application/apply-patch+yaml"
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
class Target:
    """Which cluster, and as whom. A token is never logged or echoed."""

    kubeconfig: str | None = None
    context: str | None = None
    in_cluster: bool = False
    server: str | None = None
    ca_file: str | None = None
    token: str | None = field(default=None, repr=False)
    insecure_skip_tls_verify: bool = False


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
        configuration = _configuration(target)
        configuration.connection_pool_maxsize = pool_size
        # urllib3 retries would hide an unreachable server behind minutes of back-off.
        configuration.retries = False
        self.host = configuration.host
        self.api = k8s_client.ApiClient(configuration)
        self.default_namespace = _context_namespace(target) or "default"
        self._resources: dict[tuple[str, str, str], Resource] | None = None
        self._group_versions: dict[str, list[Resource]] = {}
        self._lock = threading.Lock()
        self._paused_until = 0.0
        self._window = Window(pool_size)
        self.throttled = 0  # how often the server answered 429 (API Priority and Fairness)

    def close(self) -> None:
        self.api.close()

    # -- requests ------------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, Any] | None = None,
        body: Any = None,
        content_type: str | None = None,
    ) -> Any:
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        elif body is not None:
            headers["Content-Type"] = "application/json"
        url_path = path + ("?" + urlencode(query, doseq=True) if query else "")
        for attempt in range(THROTTLE_RETRIES + 1):
            self._wait_out_throttling()
            with self._window.slot() as slot:
                status, response_headers, data = self._send(method, url_path, headers, body)
                slot.throttled = status == 429
            if status != 429 or attempt == THROTTLE_RETRIES:
                break
            # API Priority and Fairness turned us away before doing anything: every thread of
            # this client pauses for as long as the server asks, then tries again.
            self._throttled(retry_after(response_headers.get("Retry-After"), attempt))
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
        return json.loads(data) if data else None

    def _send(
        self, method: str, url_path: str, headers: dict[str, str], body: Any
    ) -> tuple[int, Any, bytes]:
        _, url, header_params, _, _ = self.api.param_serialize(
            method, url_path, header_params=headers, auth_settings=["BearerToken"]
        )
        try:
            response = self.api.call_api(
                method, url, header_params=header_params, body=body, _request_timeout=self.timeout
            )
            data = response.read()
        except ApiException as e:
            # The kubernetes package reports TLS failures, and a connection lost mid-response,
            # as an ApiException with status 0.
            if "certificate verify failed" in str(e.reason).lower():
                raise RemoteError(
                    f"TLS handshake with the API server {self.host} failed: its certificate "
                    "is not signed by the CA lading was given",
                    hint="check the CA in your kubeconfig (certificate-authority-data)",
                ) from None
            raise RemoteError(
                f"lost the connection to the API server {self.host}"
                + (f" (HTTP {e.status})" if e.status else ""),
                hint="check that the cluster is up; rerunning the install converges",
            ) from None
        except urllib3.exceptions.SSLError:
            raise RemoteError(
                f"TLS handshake with the API server {self.host} failed",
                hint="check the CA in your kubeconfig",
            ) from None
        except (urllib3.exceptions.HTTPError, OSError) as e:
            raise RemoteError(
                f"cannot reach the API server {self.host}: {type(e).__name__}",
                hint="check the kubeconfig/context and that the cluster is up",
            ) from None
        return int(response.status), response.headers or {}, data

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
    ) -> Obj:
        meta = obj["metadata"]
        query: dict[str, Any] = {"fieldManager": field_manager, "fieldValidation": "Strict"}
        if force:
            query["force"] = "true"
        if dry_run:
            query["dryRun"] = "All"
        result: Obj = self.request(
            "PATCH",
            resource.object_path(meta.get("namespace"), meta["name"]),
            query=query,
            body=obj,
            content_type=APPLY_PATCH,
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


def _configuration(target: Target) -> k8s_client.Configuration:
    configuration = k8s_client.Configuration()
    try:
        if target.server:
            configuration.host = target.server
            if target.ca_file:
                configuration.ssl_ca_cert = target.ca_file
            if target.token:
                configuration.api_key = {"authorization": f"Bearer {target.token}"}
            configuration.verify_ssl = not target.insecure_skip_tls_verify
        elif target.in_cluster:
            k8s_config.load_incluster_config(client_configuration=configuration)
        else:
            _check_kubeconfigs(target.kubeconfig)
            k8s_config.load_kube_config(
                config_file=target.kubeconfig,
                context=target.context,
                client_configuration=configuration,
            )
    except k8s_config.ConfigException as e:
        # The message names files and contexts, never credentials.
        raise InputError(
            f"cannot load the cluster configuration: {e}",
            hint="pass --kubeconfig/--context, or set KUBECONFIG",
        ) from None
    except FileNotFoundError as e:
        raise InputError(
            f"cannot load the cluster configuration: {e.filename} does not exist",
            hint="pass --kubeconfig, or set KUBECONFIG",
        ) from None
    except _MALFORMED as e:
        # The kubernetes package walks the file's YAML without checking its shape, so a
        # malformed kubeconfig surfaces as whatever its dict walk tripped over.
        if isinstance(e, yaml.YAMLError):
            detail = str(e).splitlines()[0][:200]
        elif isinstance(e, UnicodeDecodeError | RecursionError):
            detail = "not UTF-8 text" if isinstance(e, ValueError) else "nested too deeply"
        else:
            detail = "its clusters, contexts or users are malformed"
        raise InputError(
            f"cannot load the cluster configuration: {target.kubeconfig or 'the kubeconfig'} "
            f"is not a valid kubeconfig ({detail})",
            hint="pass --kubeconfig with a file `kubectl config view` can read",
        ) from None
    return configuration


_MALFORMED = (
    yaml.YAMLError, TypeError, AttributeError, KeyError, IndexError, ValueError, RecursionError
)


def _check_kubeconfigs(given: str | None) -> None:
    """The kubernetes package reads kubeconfigs with PyYAML's unbounded loader and then walks
    what it got: an alias bomb hangs it. Read each file through lading's bounded reader first."""
    for part in (given or os.environ.get("KUBECONFIG") or "~/.kube/config").split(os.pathsep):
        path = Path(part).expanduser()
        if part and path.is_file():
            load_yaml(read_text(path, f"kubeconfig {part}"), f"kubeconfig {part}")


def _context_namespace(target: Target) -> str | None:
    if target.server or target.in_cluster:
        return None
    try:
        contexts, active = k8s_config.list_kube_config_contexts(config_file=target.kubeconfig)
    except (k8s_config.ConfigException, OSError, *_MALFORMED):
        return None
    chosen = (
        next((c for c in contexts if c["name"] == target.context), None)
        if target.context
        else active
    )
    namespace = ((chosen or {}).get("context") or {}).get("namespace")
    return str(namespace) if namespace else None


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
