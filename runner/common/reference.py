"""Artifact references: registry repositories, OCI image layout directories and their tars.

registry.example:5000/team/app:tag         registry.example/team/app@sha256:...
oci-layout:PATH[:tag|@sha256:...]          PATH.tar (or oci-layout:PATH.tar...)
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from runner.common.digest import check_digest_syntax
from runner.common.errors import InputError

LAYOUT_PREFIX = "oci-layout:"

# distribution/reference grammar, simplified: path components are lowercase alnum with
# separators; tags are up to 128 word characters, dots and dashes. ASCII only (Python's \w
# and \d would take any script's letters and digits, which no registry accepts), and matched
# whole with fullmatch (`$` would let a trailing newline through).
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPO = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG = re.compile(r"\w[\w.-]{0,127}", re.ASCII)
_HOST = re.compile(r"(?:[a-zA-Z0-9.-]+|\[[0-9a-fA-F:]+\])(?::([0-9]{1,5}))?")


@dataclass(frozen=True)
class ArtifactRef:
    """A parsed reference. `kind` says where the artifact lives."""

    kind: Literal["registry", "layout", "layout-tar"]
    location: str  # registry host[:port] or layout path
    repository: str = ""  # registry repository path; empty for layouts
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """The repository (or layout) without tag or digest."""
        if self.kind == "registry":
            return f"{self.location}/{self.repository}"
        return f"{LAYOUT_PREFIX}{self.location}"

    @property
    def short_name(self) -> str:
        """The last path component: the default inventory name (`app` for team/app)."""
        if self.kind == "registry":
            return self.repository.rsplit("/", 1)[-1]
        stem = Path(self.location).name
        return stem.removesuffix(".tar") or "artifact"

    def with_digest(self, digest: str) -> ArtifactRef:
        return replace(self, digest=digest)

    def with_tag(self, tag: str | None) -> ArtifactRef:
        return replace(self, tag=tag)

    def pinned(self) -> str:
        """`name@digest`: the form lading installs and reports."""
        if not self.digest:
            raise InputError(f"{self} is not pinned to a digest")
        return f"{self.name}@{self.digest}"

    def __str__(self) -> str:
        out = self.name
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out

    @property
    def is_loopback(self) -> bool:
        host = self.location.rsplit(":", 1)[0].strip("[]") if self.kind == "registry" else ""
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False


def _split_digest(text: str) -> tuple[str, str | None]:
    if "@" in text:
        rest, digest = text.rsplit("@", 1)
        return rest, check_digest_syntax(digest)
    return text, None


def parse_ref(text: str) -> ArtifactRef:
    """Parse a reference, raising InputError with the accepted forms when it is malformed."""
    raw = text.strip()
    if not raw:
        raise InputError("empty artifact reference")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in raw):
        raise InputError(f"invalid reference {raw!r}: it holds a control character")
    if raw.startswith(LAYOUT_PREFIX) or raw.endswith(".tar") or ".tar@" in raw or ".tar:" in raw:
        return _parse_layout(raw.removeprefix(LAYOUT_PREFIX), raw)
    return _parse_registry(raw)


def _parse_layout(body: str, raw: str) -> ArtifactRef:
    body, digest = _split_digest(body)
    tag = None
    # A tag follows the last ':' after the last '/', so Windows-free paths with ':' in a
    # directory name still parse.
    tail = body.rsplit("/", 1)[-1]
    if ":" in tail:
        body, tag = body.rsplit(":", 1)
        if not _TAG.fullmatch(tag):
            raise InputError(f"invalid tag {tag!r} in {raw!r}")
    if not body:
        raise InputError(
            f"missing layout path in {raw!r}", hint="use oci-layout:PATH[:tag|@sha256:…]"
        )
    kind: Literal["layout", "layout-tar"] = "layout-tar" if body.endswith(".tar") else "layout"
    return ArtifactRef(kind=kind, location=body, tag=tag, digest=digest)


def _parse_registry(raw: str) -> ArtifactRef:
    forms = "use registry.example/repo:tag, registry.example/repo@sha256:…, or oci-layout:PATH"
    body, digest = _split_digest(raw)
    if "/" not in body:
        raise InputError(f"invalid reference {raw!r}: no registry host", hint=forms)
    host, path = body.split("/", 1)
    host_match = _HOST.fullmatch(host)
    port = host_match.group(1) if host_match else None
    if (
        not ("." in host or ":" in host or host == "localhost")
        or not host_match
        or (port is not None and not 0 < int(port) < 65536)
    ):
        raise InputError(
            f"invalid reference {raw!r}: {host!r} is not a registry host",
            hint=forms + " (lading never guesses a default registry)",
        )
    tag = None
    last = path.rsplit("/", 1)[-1]
    if ":" in last:
        path, tag = path.rsplit(":", 1)
        if not _TAG.fullmatch(tag):
            raise InputError(f"invalid tag {tag!r} in {raw!r}", hint=forms)
    if not _REPO.fullmatch(path):
        raise InputError(
            f"invalid repository {path!r} in {raw!r}",
            hint="repository paths are lowercase letters, digits and . _ - separated by /",
        )
    return ArtifactRef(kind="registry", location=host, repository=path, tag=tag, digest=digest)
