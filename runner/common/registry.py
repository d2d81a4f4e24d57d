"""A registry repository as a Store, over oras-py's session and auth backends.

oras-py gives us the HTTP session, docker-config credential lookup (inline auths, credsStore,
credHelpers) and the bearer-token dance. Three things it does not do the way a deploy tool
needs, so they live here: registries that answer with a `Basic` challenge (docker-registry with
htpasswd), retries that give up in seconds rather than sleeping for minutes, and digest
verification (done by the Store callers in runner.common.store).
"""

from __future__ import annotations

import os
import time
import urllib.parse
from pathlib import Path
from typing import Any

import oras.provider
import requests

from runner.common.digest import sha256_digest
from runner.common.errors import InputError, RemoteError
from runner.common.oci import ACCEPT, INDEX, Descriptor
from runner.common.store import RegistryOptions

_RETRY_DELAYS = (0.2, 0.6, 1.5)  # seconds; four tries in about two seconds
_RETRY_STATUS = {429, 500, 502, 503, 504}


def docker_config_path(options: RegistryOptions) -> Path:
    if options.docker_config:
        return options.docker_config
    root = os.environ.get("DOCKER_CONFIG")
    return Path(root) / "config.json" if root else Path.home() / ".docker" / "config.json"


class RegistryStore:
    def __init__(self, host: str, repository: str, options: RegistryOptions, loopback: bool):
        self.host = host
        self.repository = repository
        # Loopback implies plain HTTP (as Docker does) unless a CA file says the registry
        # speaks TLS: a local TLS registry (e.g. with a test CA) answers HTTP with a 400.
        plain = options.plain_http or (loopback and options.ca_file is None)
        tls_verify: bool | str = str(options.ca_file) if options.ca_file else True
        self.scheme = "http" if plain else "https"
        self._oras = oras.provider.Registry(
            hostname=host, insecure=plain, tls_verify=tls_verify, auth_backend="token"
        )
        self._session: requests.Session = self._oras.session
        self._verify = tls_verify
        self._authorization: str | None = None
        config = docker_config_path(options)
        container = self._oras.get_container(f"{host}/{repository}")
        self._oras.auth.load_configs(container, configs=[str(config)] if config.exists() else None)
        self._basic: str | None = (
            self._oras.auth._basic_auth if self._oras.auth._load_auth(host) else None
        )

    # -- HTTP ---------------------------------------------------------------------------------

    def _url(self, path: str) -> str:
        return f"{self.scheme}://{self.host}/v2/{self.repository}/{path}"

    def _send(
        self, method: str, url: str, headers: dict[str, str], data: bytes | None, stream: bool
    ) -> requests.Response:
        if self._authorization:
            headers = {**headers, "Authorization": self._authorization}
        return self._session.request(
            method,
            url,
            headers=headers,
            data=data,
            stream=stream,
            verify=self._verify,
            timeout=(10, 120),
            allow_redirects=True,
        )

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        data: bytes | None = None,
        stream: bool = False,
    ) -> requests.Response:
        headers = headers or {}
        authenticated = False
        for attempt in range(len(_RETRY_DELAYS) + 1):
            last = attempt == len(_RETRY_DELAYS)
            try:
                response = self._send(method, url, headers, data, stream)
            except requests.exceptions.SSLError as e:
                raise RemoteError(
                    f"TLS handshake with registry {self.host} failed: {_reason(e)}",
                    hint="pass --ca-file for a private CA, or --plain-http for a registry "
                    "without TLS",
                ) from None
            except requests.exceptions.RequestException as e:
                if last:
                    raise RemoteError(
                        f"cannot reach registry {self.host}: {_reason(e)}",
                        hint="check the address and that the registry is running",
                    ) from None
                time.sleep(_RETRY_DELAYS[attempt])
                continue
            if response.status_code in (401, 403) and not authenticated:
                authenticated = True
                if self._authenticate(response):
                    response = self._send(method, url, headers, data, stream)
            if response.status_code in (401, 403):
                raise RemoteError(
                    f"registry {self.host} refused access to {self.repository} "
                    f"(HTTP {response.status_code})",
                    hint="log in with `docker login` (lading reads the docker config; "
                    "DOCKER_CONFIG is honoured) and check the account may access this repository",
                )
            if response.status_code == 400 and self.scheme == "http" and (
                method == "HEAD" or "HTTP request to an HTTPS server" in response.text
            ):
                # Plain HTTP (implied for loopback) sent to a TLS port.
                raise RemoteError(
                    f"registry {self.host} speaks HTTPS, not plain HTTP",
                    hint="pass --ca-file with the registry's CA (lading uses plain HTTP for "
                    "loopback registries unless given a CA)",
                )
            if response.status_code in _RETRY_STATUS and not last:
                time.sleep(_RETRY_DELAYS[attempt])
                continue
            return response
        raise AssertionError("unreachable")

    def _authenticate(self, response: requests.Response) -> bool:
        challenge = response.headers.get("WWW-Authenticate", "")
        scheme = challenge.split(" ", 1)[0].lower()
        if scheme == "basic":
            if not self._basic:
                raise RemoteError(
                    f"registry {self.host} requires credentials and none are configured for it",
                    hint="run `docker login " + self.host + "` or set DOCKER_CONFIG",
                )
            self._authorization = f"Basic {self._basic}"
            return True
        if scheme == "bearer":
            headers, changed = self._oras.auth.authenticate_request(response, {})
            token = headers.get("Authorization") if changed else None
            if token:
                self._authorization = token
                return True
        return False

    def _check(self, response: requests.Response, what: str) -> None:
        if response.status_code < 300:
            return
        detail = _registry_error(response)
        if response.status_code == 404:
            raise InputError(f"{what}: not found in {self.host}/{self.repository}{detail}")
        raise RemoteError(
            f"{what}: registry {self.host} answered HTTP {response.status_code}{detail}"
        )

    # -- Store --------------------------------------------------------------------------------

    def resolve(self, reference: str) -> Descriptor:
        response = self.request(
            "HEAD", self._url(f"manifests/{reference}"), headers={"Accept": ACCEPT}
        )
        digest = response.headers.get("Docker-Content-Digest")
        if response.status_code >= 300 or not digest:
            # Some registries omit the digest header on HEAD; GET and hash it ourselves.
            raw, media_type = self.fetch_manifest_raw(reference)
            return Descriptor(media_type, sha256_digest(raw), len(raw))
        media_type = response.headers.get("Content-Type", "").split(";")[0]
        size = int(response.headers.get("Content-Length") or 0)
        return Descriptor(media_type, digest, size)

    def fetch_manifest_raw(self, digest: str) -> tuple[bytes, str]:
        response = self.request("GET", self._url(f"manifests/{digest}"), headers={"Accept": ACCEPT})
        self._check(response, f"manifest {digest}")
        return response.content, response.headers.get("Content-Type", "").split(";")[0]

    def fetch_blob_raw(self, digest: str, limit: int) -> bytes:
        response = self.request("GET", self._url(f"blobs/{digest}"), stream=True)
        self._check(response, f"blob {digest}")
        chunks: list[bytes] = []
        total = 0
        for chunk in response.iter_content(1 << 16):
            total += len(chunk)
            if total > limit:
                response.close()
                raise InputError(f"blob {digest} is over the {limit}-byte limit")
            chunks.append(chunk)
        return b"".join(chunks)

    def has_blob(self, digest: str) -> bool:
        response = self.request("HEAD", self._url(f"blobs/{digest}"))
        if response.status_code == 404:
            return False
        self._check(response, f"blob {digest}")
        return True

    def push_blob(self, data: bytes, digest: str) -> bool:
        if self.has_blob(digest):
            return False
        start = self.request("POST", self._url("blobs/uploads/"))
        self._check(start, "starting a blob upload")
        location = start.headers.get("Location", "")
        if not location:
            raise RemoteError(f"registry {self.host} gave no upload location")
        location = urllib.parse.urljoin(self._url("blobs/uploads/"), location)
        sep = "&" if "?" in location else "?"
        put = self.request(
            "PUT",
            f"{location}{sep}digest={urllib.parse.quote(digest)}",
            data=data,
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(len(data))},
        )
        self._check(put, f"uploading blob {digest}")
        return True

    def push_manifest(self, data: bytes, media_type: str, tag: str | None) -> None:
        reference = tag or sha256_digest(data)
        response = self.request(
            "PUT",
            self._url(f"manifests/{reference}"),
            data=data,
            headers={"Content-Type": media_type},
        )
        self._check(response, f"pushing manifest {reference}")

    def referrers(self, digest: str) -> list[Descriptor]:
        response = self.request("GET", self._url(f"referrers/{digest}"), headers={"Accept": INDEX})
        if response.status_code == 404:
            return self._referrers_by_tag(digest)
        self._check(response, f"referrers of {digest}")
        return _index_descriptors(response.json())

    def _referrers_by_tag(self, digest: str) -> list[Descriptor]:
        # OCI distribution-spec fallback: an index tagged `sha256-<hex>` lists the referrers.
        tag = digest.replace(":", "-")
        response = self.request("GET", self._url(f"manifests/{tag}"), headers={"Accept": INDEX})
        if response.status_code == 404:
            return []
        self._check(response, f"referrers tag {tag}")
        return _index_descriptors(response.json())

    def close(self) -> None:
        self._session.close()


def _index_descriptors(document: Any) -> list[Descriptor]:
    manifests = document.get("manifests", []) if isinstance(document, dict) else []
    return [Descriptor.from_json(m, "referrer") for m in manifests]


def _registry_error(response: requests.Response) -> str:
    try:
        errors = response.json().get("errors", [])
        messages = [f"{e.get('code', '')}: {e.get('message', '')}" for e in errors]
        return " (" + "; ".join(messages) + ")" if messages else ""
    except ValueError:
        return ""


def _reason(error: Exception) -> str:
    # requests nests the interesting part (e.g. "Connection refused") a few levels down.
    text = str(error)
    for marker in (
        "Connection refused",
        "Name or service not known",
        "timed out",
        "certificate verify failed",
        "wrong version number",
    ):
        if marker in text:
            return marker
    return type(error).__name__
