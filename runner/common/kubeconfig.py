"""Which cluster, and as whom: a kubeconfig (or a server + token, or the pod's service account)
turned into an `Endpoint` for `runner.common.wire`.

Kubeconfigs are read with lading's bounded reader and merged the way kubectl merges the files
of KUBECONFIG (the first file to name a cluster, user or context wins; the first
current-context wins). Users authenticating with an exec plugin or an auth-provider are handed
to the official `kubernetes` package, which runs the plugin and refreshes its token; it is
imported only then (it costs a quarter of a second to import).

Nothing here puts a credential into a message; client keys given inline live on disk only for
the instant it takes to load them into the TLS context.
"""

from __future__ import annotations

import base64
import binascii
import os
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plans.documents import load_yaml, read_text
from runner.common.errors import InputError
from runner.common.wire import Endpoint

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
TOKEN_REREAD = 60.0  # seconds; kubelet rotates projected tokens well before they expire


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
class Resolved:
    endpoint: Endpoint
    namespace: str | None  # the context's namespace, if it names one


def resolve(target: Target) -> Resolved:
    if target.server:
        return Resolved(_direct(target), None)
    if target.in_cluster:
        return Resolved(_in_cluster(), None)
    return _from_kubeconfig(target)


# -- server + token --------------------------------------------------------------------------


def _direct(target: Target) -> Endpoint:
    assert target.server
    tls = _tls_context(
        ca_file=target.ca_file, ca_data=None, insecure=target.insecure_skip_tls_verify
    )
    header = f"Bearer {target.token}" if target.token else None
    return Endpoint(target.server, tls, authorization=lambda: header)


# -- in a pod ---------------------------------------------------------------------------------


def _in_cluster() -> Endpoint:
    host = os.environ.get("KUBERNETES_SERVICE_HOST")
    port = os.environ.get("KUBERNETES_SERVICE_PORT")
    token_file, ca_file = SERVICE_ACCOUNT / "token", SERVICE_ACCOUNT / "ca.crt"
    if not host or not port or not token_file.is_file():
        raise InputError(
            "cannot load the cluster configuration: not running in a pod "
            "(KUBERNETES_SERVICE_HOST/PORT or the service account token are missing)",
            hint="drop in_cluster, and pass --kubeconfig or server + token",
        )
    if ":" in host:
        host = f"[{host}]"
    tls = _tls_context(ca_file=str(ca_file), ca_data=None, insecure=False)
    return Endpoint(f"https://{host}:{port}", tls, authorization=_TokenFile(token_file))


class _TokenFile:
    """The Authorization header from a token file, read again once a minute (projected
    service-account tokens are rotated on disk)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._read_at = -TOKEN_REREAD
        self._header: str | None = None

    def __call__(self) -> str | None:
        with self._lock:
            now = time.monotonic()
            if now - self._read_at >= TOKEN_REREAD:
                try:
                    token = self.path.read_text().strip()
                except OSError:
                    token = ""
                self._header = f"Bearer {token}" if token else self._header
                self._read_at = now
            return self._header


# -- kubeconfig files -------------------------------------------------------------------------


@dataclass
class _Merged:
    clusters: dict[str, tuple[dict[str, Any], Path]] = field(default_factory=dict)
    users: dict[str, tuple[dict[str, Any], Path]] = field(default_factory=dict)
    contexts: dict[str, dict[str, Any]] = field(default_factory=dict)
    current: str | None = None


def _files(given: str | None) -> list[Path]:
    if given:
        path = Path(given).expanduser()
        if not path.is_file():
            raise InputError(
                f"cannot load the cluster configuration: {given} does not exist",
                hint="pass --kubeconfig, or set KUBECONFIG",
            )
        return [path]
    listed = os.environ.get("KUBECONFIG")
    parts = listed.split(os.pathsep) if listed else ["~/.kube/config"]
    found = [Path(p).expanduser() for p in parts if p and Path(p).expanduser().is_file()]
    if not found:
        raise InputError(
            "cannot load the cluster configuration: no kubeconfig "
            f"({'KUBECONFIG=' + listed if listed else '~/.kube/config'} does not exist)",
            hint="pass --kubeconfig, or set KUBECONFIG",
        )
    return found


def _merge(files: list[Path]) -> _Merged:
    merged = _Merged()
    for path in files:
        doc = load_yaml(read_text(path, f"kubeconfig {path}"), f"kubeconfig {path}") or {}
        if not isinstance(doc, dict):
            raise _malformed(path, "it is not a mapping")
        for section, into in (("clusters", merged.clusters), ("users", merged.users)):
            for name, body in _named(doc, section, section[:-1], path):
                into.setdefault(name, (body, path.parent))
        for name, body in _named(doc, "contexts", "context", path):
            merged.contexts.setdefault(name, body)
        if merged.current is None and doc.get("current-context"):
            merged.current = str(doc["current-context"])
    return merged


def _named(doc: dict[str, Any], section: str, key: str,
           path: Path) -> list[tuple[str, dict[str, Any]]]:
    entries = doc.get(section) or []
    if not isinstance(entries, list):
        raise _malformed(path, f"{section} is not a list")
    found = []
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise _malformed(path, f"an entry of {section} has no name")
        body = entry.get(key) or {}
        if not isinstance(body, dict):
            raise _malformed(path, f"{section} entry {entry['name']!r} is malformed")
        found.append((entry["name"], body))
    return found


def _malformed(path: Path, detail: str) -> InputError:
    return InputError(
        f"cannot load the cluster configuration: {path} is not a valid kubeconfig ({detail})",
        hint="pass --kubeconfig with a file `kubectl config view` can read",
    )


def _from_kubeconfig(target: Target) -> Resolved:
    files = _files(target.kubeconfig)
    merged = _merge(files)
    name = target.context or merged.current
    if not name:
        raise InputError(
            "cannot load the cluster configuration: the kubeconfig sets no current-context",
            hint="pass --context NAME",
        )
    context = merged.contexts.get(name)
    if context is None:
        known = ", ".join(sorted(merged.contexts)[:10]) or "none"
        raise InputError(
            f"cannot load the cluster configuration: no context {name!r} in the kubeconfig "
            f"(contexts: {known})",
            hint="pass --context with one of them",
        )
    cluster_name, user_name = str(context.get("cluster") or ""), str(context.get("user") or "")
    if cluster_name not in merged.clusters:
        raise InputError(
            f"cannot load the cluster configuration: context {name!r} names cluster "
            f"{cluster_name!r}, which the kubeconfig does not define",
            hint="fix the kubeconfig, or pass another --context",
        )
    cluster, cluster_dir = merged.clusters[cluster_name]
    user, user_dir = merged.users.get(user_name, ({}, cluster_dir))
    namespace = context.get("namespace")
    namespace = str(namespace) if namespace else None
    if "exec" in user or "auth-provider" in user:
        return Resolved(_through_kubernetes_package(target, name), namespace)
    server = cluster.get("server")
    if not isinstance(server, str) or not server:
        raise _malformed(files[0], f"cluster {cluster_name!r} has no server")
    proxy = str(cluster.get("proxy-url") or "") or None
    if proxy and not proxy.startswith("http://"):
        raise InputError(
            f"cannot load the cluster configuration: cluster {cluster_name!r} has proxy-url "
            f"{proxy.split('://')[0]}://…; lading tunnels through http:// proxies only",
            hint="use an HTTP CONNECT proxy, or reach the API server directly",
        )
    tls = None
    if server.startswith("https://"):
        tls = _tls_context(
            ca_file=_path(cluster.get("certificate-authority"), cluster_dir),
            ca_data=_data(cluster.get("certificate-authority-data"), "certificate-authority-data"),
            insecure=bool(cluster.get("insecure-skip-tls-verify")),
        )
        _client_certificate(tls, user, user_dir)
    return Resolved(
        Endpoint(server, tls, server_name=cluster.get("tls-server-name") or None,
                 authorization=_user_authorization(user, user_dir), proxy=proxy),
        namespace,
    )


def _path(value: Any, base: Path) -> str | None:
    if not value:
        return None
    path = Path(str(value)).expanduser()
    return str(path if path.is_absolute() else base / path)


def _data(value: Any, what: str) -> bytes | None:
    if not value:
        return None
    try:
        return base64.b64decode(str(value), validate=True)
    except (binascii.Error, ValueError):
        raise InputError(
            f"cannot load the cluster configuration: the kubeconfig's {what} is not base64",
            hint="pass --kubeconfig with a file `kubectl config view` can read",
        ) from None


def _user_authorization(user: dict[str, Any], base: Path) -> Callable[[], str | None]:
    token = user.get("token")
    if token:
        header = f"Bearer {token}"
        return lambda: header
    token_file = _path(user.get("tokenFile"), base)
    if token_file:
        return _TokenFile(Path(token_file))
    if user.get("username") and user.get("password"):
        basic = base64.b64encode(f"{user['username']}:{user['password']}".encode()).decode()
        header = f"Basic {basic}"
        return lambda: header
    return lambda: None


def _tls_context(ca_file: str | None, ca_data: bytes | None, insecure: bool) -> ssl.SSLContext:
    """Verifying the server against the CA the kubeconfig names, and only it (as kubectl
    does); the system's roots when it names none."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    try:
        if ca_file or ca_data:
            context.load_verify_locations(
                cafile=ca_file, cadata=ca_data.decode("ascii", "replace") if ca_data else None
            )
        else:
            context.load_default_certs()
    except FileNotFoundError:
        raise InputError(
            f"cannot load the cluster configuration: the CA file {ca_file} does not exist",
            hint="fix certificate-authority in the kubeconfig",
        ) from None
    except (ssl.SSLError, ValueError, OSError):
        raise InputError(
            "cannot load the cluster configuration: the kubeconfig's certificate authority "
            "is not a PEM certificate",
            hint="fix certificate-authority(-data) in the kubeconfig",
        ) from None
    return context


def _client_certificate(context: ssl.SSLContext, user: dict[str, Any], base: Path) -> None:
    cert_file = _path(user.get("client-certificate"), base)
    key_file = _path(user.get("client-key"), base)
    cert_data = _data(user.get("client-certificate-data"), "client-certificate-data")
    key_data = _data(user.get("client-key-data"), "client-key-data")
    if not (cert_file or cert_data):
        return
    if not (key_file or key_data):
        raise InputError(
            "cannot load the cluster configuration: the kubeconfig user has a client "
            "certificate but no client key",
            hint="add client-key(-data) to the user in the kubeconfig",
        )
    with _key_material(cert_data, key_data) as (inline_cert, inline_key):
        try:
            context.load_cert_chain(inline_cert or str(cert_file), inline_key or str(key_file))
        except FileNotFoundError as e:
            raise InputError(
                f"cannot load the cluster configuration: {e.filename} does not exist",
                hint="fix client-certificate/client-key in the kubeconfig",
            ) from None
        except (ssl.SSLError, OSError):
            raise InputError(
                "cannot load the cluster configuration: the kubeconfig's client certificate "
                "and key do not load (not PEM, or not a pair)",
                hint="fix client-certificate(-data)/client-key(-data) in the kubeconfig",
            ) from None


@contextmanager
def _key_material(*contents: bytes | None) -> Iterator[list[str | None]]:
    """Paths ssl can load inline certificate and key data from (None for None): anonymous
    in-memory files on Linux, so a private key never touches a disk and nothing is left in
    TMPDIR by a process that ends while a client is still being built on another thread;
    elsewhere a private directory, for the instant it takes to load them."""
    if not any(c is not None for c in contents):
        yield [None for _ in contents]
        return
    if hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd"):
        descriptors: list[int] = []
        try:
            paths: list[str | None] = []
            for content in contents:
                if content is None:
                    paths.append(None)
                    continue
                fd = os.memfd_create("lading-tls", os.MFD_CLOEXEC)
                descriptors.append(fd)
                rest = memoryview(content)
                while rest:
                    rest = rest[os.write(fd, rest):]
                paths.append(f"/proc/self/fd/{fd}")
            yield paths
        finally:
            for fd in descriptors:
                os.close(fd)
        return
    with tempfile.TemporaryDirectory(prefix="lading-tls-") as private:
        yield [None if content is None else _private_file(Path(private) / name, content)
               for name, content in zip(("cert", "key"), contents, strict=False)]


def _private_file(path: Path, data: bytes) -> str:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return str(path)


# -- exec plugins and auth-providers ------------------------------------------------------------


def _through_kubernetes_package(target: Target, context: str) -> Endpoint:
    """The official package runs exec plugins and auth-providers (and refreshes what they
    give); lading takes its host, TLS files and Authorization header."""
    from kubernetes import client as k8s_client
    from kubernetes import config as k8s_config

    configuration = k8s_client.Configuration()
    try:
        k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=target.kubeconfig, context=context,
                                    client_configuration=configuration)
    except k8s_config.ConfigException as e:
        raise InputError(f"cannot load the cluster configuration: {e}",
                         hint="check the user's exec plugin or auth-provider") from None
    except (OSError, TypeError, AttributeError, KeyError, IndexError, ValueError) as e:
        raise InputError(
            "cannot load the cluster configuration: the kubeconfig user's exec plugin or "
            f"auth-provider failed ({type(e).__name__})",
            hint="run the plugin by hand (kubectl get --raw /version) to see why",
        ) from None
    tls = None
    if str(configuration.host).startswith("https://"):
        tls = _tls_context(configuration.ssl_ca_cert, None, not configuration.verify_ssl)
        if configuration.cert_file:
            _client_certificate(tls, {"client-certificate": configuration.cert_file,
                                      "client-key": configuration.key_file}, Path("/"))

    def authorization() -> str | None:
        # Refreshes an expired exec-plugin token (the package's refresh hook) on the way.
        setting: dict[str, Any] = dict(configuration.auth_settings().get("BearerToken") or {})
        value = setting.get("value")
        return str(value) if value else None

    return Endpoint(str(configuration.host), tls,
                    server_name=getattr(configuration, "tls_server_name", None) or None,
                    authorization=authorization)
