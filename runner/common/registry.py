"""A registry repository as a Store, over oras-py's auth backends.

oras-py gives us docker-config credential lookup (inline auths, credsStore, credHelpers) and the
bearer-token dance, through `oras.auth` alone: its `oras.provider` client would also load
jsonschema, for manifest checks lading does itself (runner.common.oci) — about 45 ms, a fifth of
the start of an install from a registry. What it does not do the way a deploy tool needs lives
here: registries that answer with a `Basic` challenge (docker-registry with htpasswd), every
operation bounded in time with retries that back off (runner.common.transport), blob pulls
that resume where a dropped connection left off, response bodies read within a size limit, and
errors that say which registry and what lading was doing. Digests are verified by the Store
callers in runner.common.store.
"""

from __future__ import annotations

import io
import os
import re
import threading
import urllib.parse
from http.cookiejar import DefaultCookiePolicy
from pathlib import Path
from typing import Any

import oras.auth
import oras.container
import requests

from plans.documents import load_json
from runner.common.digest import sha256_digest
from runner.common.errors import InputError, RemoteError
from runner.common.oci import ACCEPT, INDEX, MAX_MANIFEST_BYTES, Descriptor
from runner.common.registry_options import RegistryOptions
from runner.common.transport import (
    Deadline,
    Retry,
    bound,
    classify,
    operation,
    retry_after,
    retryable_status,
    retrying,
)

_ERROR_BODY_BYTES = 64 * 1024
_CHUNK = 1 << 16
_DRAIN_BYTES = 4096  # the most of an unneeded answer read to keep its connection
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-\d+/(?:\d+|\*)$")


def docker_config_path(options: RegistryOptions) -> Path:
    if options.docker_config:
        return options.docker_config
    root = os.environ.get("DOCKER_CONFIG")
    return Path(root) / "config.json" if root else Path.home() / ".docker" / "config.json"


class RegistryStore:
    def __init__(self, host: str, repository: str, options: RegistryOptions, loopback: bool):
        self.host = host
        self.repository = repository
        self.name = f"{host}/{repository}"
        self.timeouts = options.timeouts
        # Loopback implies plain HTTP (as Docker does) unless a CA file says the registry
        # speaks TLS: a local TLS registry (e.g. with a test CA) answers HTTP with a 400.
        plain = options.plain_http or (loopback and options.ca_file is None)
        tls_verify: bool | str = str(options.ca_file) if options.ca_file else True
        self.scheme = "http" if plain else "https"
        self._session = requests.Session()
        # A registry that sets cookies (Harbor) takes a client that keeps them for a browser.
        self._session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
        bound(self._session)
        self._auth = oras.auth.get_auth_backend("token", self._session, plain,
                                                tls_verify=tls_verify)
        self._verify = tls_verify
        self._authorization: str | None = None
        self._login = threading.Lock()
        config = docker_config_path(options)
        container = oras.container.Container(f"{host}/{repository}", registry=host)
        self._auth.load_configs(container, configs=[str(config)] if config.exists() else None)
        self._basic: str | None = self._auth._basic_auth if self._auth._load_auth(host) else None

    # -- HTTP ---------------------------------------------------------------------------------

    def _url(self, path: str) -> str:
        return f"{self.scheme}://{self.host}/v2/{self.repository}/{path}"

    def _send(
        self, method: str, url: str, headers: dict[str, str], data: bytes | None
    ) -> requests.Response:
        """One HTTP exchange, its body left to stream; failures worth retrying raise Retry."""
        if self._authorization:
            headers = {**headers, "Authorization": self._authorization}
        # A file-like body is sent in blocks, each allowed `stall` seconds; urllib3 would send
        # bytes in one call bounded by the connect time-out.
        body: Any = io.BytesIO(data) if data else data
        try:
            return self._session.request(
                method,
                url,
                headers=headers,
                data=body,
                stream=True,
                verify=self._verify,
                timeout=(self.timeouts.connect, self.timeouts.stall),
                allow_redirects=True,
            )
        except requests.exceptions.SSLError as e:
            if "certificate verify failed" not in str(e) and "wrong version" not in str(e):
                raise classify(e, self.host, self.timeouts) from None
            raise RemoteError(
                f"TLS handshake with registry {self.host} failed: {_reason(e)}",
                hint="pass --ca-file for a private CA, or --plain-http for a registry "
                "without TLS",
            ) from None
        except requests.exceptions.RequestException as e:
            raise classify(e, self.host, self.timeouts) from None

    def _exchange(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        data: bytes | None = None,
    ) -> requests.Response:
        """One attempt: send, log in once if challenged, and turn refusals into errors."""
        headers = headers or {}
        sent_with = self._authorization
        response = self._send(method, url, headers, data)
        if response.status_code in (401, 403) and self._authenticate(response, sent_with):
            _finish(response)
            response = self._send(method, url, headers, data)
        if response.status_code in (401, 403):
            response.close()
            raise RemoteError(
                f"registry {self.host} refused access to {self.repository} "
                f"(HTTP {response.status_code})",
                hint="log in with `docker login` (lading reads the docker config; "
                "DOCKER_CONFIG is honoured) and check the account may access this repository",
            )
        if response.status_code == 400 and self.scheme == "http" and (
            method == "HEAD" or "HTTP request to an HTTPS server" in _text(response)
        ):
            # Plain HTTP (implied for loopback) sent to a TLS port.
            raise RemoteError(
                f"registry {self.host} speaks HTTPS, not plain HTTP",
                hint="pass --ca-file with the registry's CA (lading uses plain HTTP for "
                "loopback registries unless given a CA)",
            )
        if retryable_status(response.status_code):
            after = retry_after(response)
            response.close()
            raise Retry(f"registry {self.host} answered HTTP {response.status_code}", after)
        return response

    def request(
        self,
        deadline: Deadline,
        method: str,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        data: bytes | None = None,
    ) -> requests.Response:
        """`_exchange` retried within the operation's deadline; the body is left to stream."""
        return retrying(
            deadline, lambda: self._exchange(method, url, headers=headers, data=data)
        )

    def _authenticate(self, response: requests.Response, sent_with: str | None) -> bool:
        with self._login:
            # Blobs upload side by side (runner.build.push): when several are refused at once,
            # one logs in and the others retry with what it got.
            if self._authorization != sent_with:
                return True
            return self._log_in(response)

    def _log_in(self, response: requests.Response) -> bool:
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
            try:
                headers, changed = self._auth.authenticate_request(response, {})
            except requests.exceptions.RequestException as e:
                raise classify(e, self.host, self.timeouts) from None
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
            raise InputError(f"{what}: not found in {self.name}{detail}")
        raise RemoteError(
            f"{what}: registry {self.host} answered HTTP {response.status_code}{detail}"
        )

    def _operation(self, what: str, expected_bytes: int = 0) -> Any:
        return operation(what, self.timeouts, expected_bytes)

    def _read(
        self,
        deadline: Deadline,
        response: requests.Response,
        limit: int,
        what: str,
        into: bytearray | None = None,
    ) -> bytes:
        """The response body, at most `limit` bytes in all (counting what `into` holds); a
        dropped connection raises Retry, with what arrived kept in `into`."""
        received = bytearray() if into is None else into
        length = response.headers.get("Content-Length", "")
        if length.isdigit():
            if len(received) + int(length) > limit:
                response.close()
                raise InputError(f"{what} is over the {limit}-byte limit")
            deadline.expect(len(received) + int(length))
        try:
            for chunk in response.iter_content(_CHUNK):
                received += chunk
                if len(received) > limit:
                    raise InputError(f"{what} is over the {limit}-byte limit")
        except requests.exceptions.RequestException as e:
            raise classify(e, self.host, self.timeouts) from None
        finally:
            response.close()
        return bytes(received)

    def _document(self, what: str, url: str, accept: str, limit: int) -> tuple[
        int, requests.structures.CaseInsensitiveDict[str], bytes
    ]:
        """GET a JSON document (manifest, index): status, headers and body, retried whole."""
        with self._operation(what) as deadline:

            def attempt() -> tuple[int, Any, bytes]:
                response = self._exchange("GET", url, headers={"Accept": accept})
                if response.status_code == 404:
                    _finish(response)
                    return 404, response.headers, b""
                self._check(response, what)
                return response.status_code, response.headers, self._read(
                    deadline, response, limit, what
                )

            return retrying(deadline, attempt)

    # -- Store --------------------------------------------------------------------------------

    def resolve(self, reference: str) -> Descriptor:
        with self._operation(f"resolving {reference} in {self.name}") as deadline:
            response = self.request(
                deadline, "HEAD", self._url(f"manifests/{reference}"), headers={"Accept": ACCEPT}
            )
            _finish(response)
        digest = response.headers.get("Docker-Content-Digest")
        if response.status_code >= 300 or not digest:
            # Some registries omit the digest header on HEAD; GET and hash it ourselves.
            raw, media_type = self.fetch_manifest_raw(reference)
            return Descriptor(media_type, sha256_digest(raw), len(raw))
        media_type = response.headers.get("Content-Type", "").split(";")[0]
        length = response.headers.get("Content-Length", "")
        return Descriptor(media_type, digest, int(length) if length.isdigit() else 0)

    def fetch_manifest_raw(self, digest: str) -> tuple[bytes, str]:
        what = f"pulling manifest {digest} from {self.name}"
        status, headers, raw = self._document(
            what, self._url(f"manifests/{digest}"), ACCEPT, MAX_MANIFEST_BYTES
        )
        if status == 404:
            raise InputError(f"manifest {digest}: not found in {self.name}")
        return raw, headers.get("Content-Type", "").split(";")[0]

    def fetch_blob_raw(self, digest: str, limit: int) -> bytes:
        what = f"pulling blob {digest} from {self.name}"
        received = bytearray()
        with self._operation(what) as deadline:

            def attempt() -> bytes:
                # After a dropped connection, ask only for what is missing (blob GETs honour
                # Range); a registry that ignores it sends the whole blob again.
                headers = {"Range": f"bytes={len(received)}-"} if received else {}
                response = self._exchange("GET", self._url(f"blobs/{digest}"), headers=headers)
                self._check(response, f"blob {digest}")
                if response.status_code != 206 or not _resumes_at(response, len(received)):
                    received.clear()
                return self._read(deadline, response, limit, f"blob {digest}", received)

            return retrying(deadline, attempt)

    def has_blob(self, digest: str) -> bool:
        with self._operation(f"checking for blob {digest} in {self.name}") as deadline:
            response = self.request(deadline, "HEAD", self._url(f"blobs/{digest}"))
            _finish(response)
            if response.status_code == 404:
                return False
            self._check(response, f"blob {digest}")
        return True

    def push_blob(self, data: bytes, digest: str) -> bool:
        if self.has_blob(digest):
            return False
        with self._operation(f"pushing blob {digest} to {self.name}", len(data)) as deadline:

            def attempt() -> None:
                # An upload session cut short is not resumed: a monolithic PUT cannot say
                # where it stopped. Each attempt starts a new session.
                start = self._exchange("POST", self._url("blobs/uploads/"))
                self._check(start, "starting a blob upload")
                _finish(start)
                location = start.headers.get("Location", "")
                if not location:
                    raise RemoteError(f"registry {self.host} gave no upload location")
                location = urllib.parse.urljoin(self._url("blobs/uploads/"), location)
                sep = "&" if "?" in location else "?"
                put = self._exchange(
                    "PUT",
                    f"{location}{sep}digest={urllib.parse.quote(digest)}",
                    data=data,
                    headers={
                        "Content-Type": "application/octet-stream",
                        "Content-Length": str(len(data)),
                    },
                )
                self._check(put, f"uploading blob {digest}")
                _finish(put)

            retrying(deadline, attempt)
        return True

    def push_manifest(self, data: bytes, media_type: str, tag: str | None) -> None:
        reference = tag or sha256_digest(data)
        what = f"pushing manifest {reference} to {self.name}"
        with self._operation(what, len(data)) as deadline:
            response = self.request(
                deadline,
                "PUT",
                self._url(f"manifests/{reference}"),
                data=data,
                headers={"Content-Type": media_type},
            )
            self._check(response, f"pushing manifest {reference}")
            _finish(response)

    def referrers(self, digest: str) -> list[Descriptor]:
        api = self._referrers_api(digest)
        entries = api if api is not None else self.fallback_referrers(digest)
        return [Descriptor.from_json(m, "referrer") for m in entries]

    def has_referrers_api(self, digest: str) -> bool:
        return self._referrers_api(digest) is not None

    def _referrers_api(self, digest: str) -> list[Any] | None:
        what = f"listing referrers of {digest} in {self.name}"
        status, _, raw = self._document(
            what, self._url(f"referrers/{digest}"), INDEX, MAX_MANIFEST_BYTES
        )
        return None if status == 404 else _index_entries(raw, f"referrers of {digest}")

    def fallback_referrers(self, digest: str) -> list[Any]:
        """The entries of the OCI distribution-spec fallback: an index tagged `sha256-<hex>`
        listing the referrers, for registries without the referrers API."""
        tag = digest.replace(":", "-")
        what = f"reading referrers tag {tag} in {self.name}"
        status, _, raw = self._document(
            what, self._url(f"manifests/{tag}"), INDEX, MAX_MANIFEST_BYTES
        )
        return [] if status == 404 else _index_entries(raw, f"referrers tag {tag}")

    def close(self) -> None:
        self._session.close()


def _finish(response: requests.Response) -> None:
    """Done with an answer whose body is not needed. Closing it unread would drop its
    connection, and every request of a push would then open a new one (a TLS handshake each,
    to a registry across the internet); what a registry sends with a HEAD, a 201 or a 202 is
    a few bytes at most, so that is read and the connection goes back to the pool. A body
    larger than that is not waited for: the connection is closed instead."""
    try:
        length = response.headers.get("Content-Length", "")
        if response.request.method == "HEAD" or (length.isdigit()
                                                 and int(length) <= _DRAIN_BYTES):
            for _ in response.iter_content(_DRAIN_BYTES):
                pass
    except (requests.exceptions.RequestException, OSError, ValueError):
        pass  # closed below, unread: the connection goes
    finally:
        response.close()


def _resumes_at(response: requests.Response, offset: int) -> bool:
    match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
    return match is not None and int(match.group(1)) == offset


def _index_entries(raw: bytes, what: str) -> list[Any]:
    document = load_json(raw, what, MAX_MANIFEST_BYTES)
    manifests = document.get("manifests", []) if isinstance(document, dict) else None
    if not isinstance(manifests, list):
        raise InputError(f"{what}: not an image index with a manifests list")
    return manifests


def _text(response: requests.Response) -> str:
    """The start of an error body; a hostile registry may send gigabytes."""
    try:
        raw = response.raw.read(_ERROR_BODY_BYTES, decode_content=True)
    except (requests.exceptions.RequestException, OSError, ValueError):
        return ""
    finally:
        response.close()
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else ""


def _registry_error(response: requests.Response) -> str:
    try:
        document = load_json(_text(response), "error", _ERROR_BODY_BYTES)
    except InputError:
        return ""
    errors = document.get("errors", []) if isinstance(document, dict) else []
    if not isinstance(errors, list):
        return ""
    messages = [
        f"{e.get('code', '')}: {e.get('message', '')}"[:300] for e in errors if isinstance(e, dict)
    ][:5]
    return " (" + "; ".join(messages) + ")" if messages else ""


def _reason(error: Exception) -> str:
    # requests nests the interesting part (e.g. "certificate verify failed") a few levels down.
    text = str(error)
    for marker in ("certificate verify failed", "wrong version number"):
        if marker in text:
            return marker
    return type(error).__name__
