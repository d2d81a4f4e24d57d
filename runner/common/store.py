"""Where artifacts live: one interface over registries and OCI image layouts.

Every manifest and blob read through a Store is verified against its digest here, so
callers can trust what they get.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from runner.common.digest import verify
from runner.common.errors import InputError
from runner.common.oci import MAX_MANIFEST_BYTES, Descriptor, Manifest, parse_manifest
from runner.common.reference import ArtifactRef

# name, environment variable, lowest accepted value
_TIMEOUT_SETTINGS = (
    ("connect", "LADING_REGISTRY_CONNECT_TIMEOUT", 0.1),
    ("stall", "LADING_REGISTRY_STALL_TIMEOUT", 0.1),
    ("min_rate", "LADING_REGISTRY_MIN_RATE", 1.0),
    ("attempts", "LADING_REGISTRY_ATTEMPTS", 1.0),
)


@dataclass(frozen=True)
class RegistryTimeouts:
    """Bounds on every registry operation (one manifest, one blob), so a registry that stalls
    or trickles fails in bounded time. An operation may take `stall` seconds plus one second
    per `min_rate` bytes it moves, retries included; each attempt also gives up after `stall`
    seconds without a byte moving."""

    connect: float = 10.0  # seconds to open a connection
    stall: float = 60.0  # seconds without progress
    min_rate: float = 16 * 1024  # bytes per second a transfer must keep up, on average
    attempts: int = 4  # tries on HTTP 429/5xx, time-outs and dropped connections

    def budget(self, size: int) -> float:
        """Seconds an operation moving `size` bytes may take."""
        return self.stall + size / self.min_rate

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RegistryTimeouts:
        env = os.environ if environ is None else environ
        values: dict[str, float] = {}
        for name, variable, lowest in _TIMEOUT_SETTINGS:
            text = env.get(variable, "").strip()
            if not text:
                continue
            try:
                value = float(text)
            except ValueError:
                value = float("nan")
            if not value >= lowest or value == float("inf"):
                raise InputError(
                    f"{variable}={text!r} is not a number of at least {lowest:g}",
                    hint="registry time-outs are seconds, LADING_REGISTRY_MIN_RATE is bytes per "
                    "second, LADING_REGISTRY_ATTEMPTS a count",
                )
            values[name] = value
        attempts = int(values.pop("attempts", cls.attempts))
        return cls(**values, attempts=attempts)


@dataclass(frozen=True)
class RegistryOptions:
    """How to talk to registries. Plain HTTP is implied for loopback hosts, as Docker does."""

    plain_http: bool = False
    ca_file: Path | None = None
    docker_config: Path | None = None  # a config.json; default $DOCKER_CONFIG or ~/.docker
    timeouts: RegistryTimeouts = field(default_factory=RegistryTimeouts.from_env)


class Store(Protocol):
    """One repository in a registry, or one OCI image layout."""

    def resolve(self, reference: str) -> Descriptor:
        """A tag or digest → the manifest descriptor it names."""
        ...

    def fetch_manifest_raw(self, digest: str) -> tuple[bytes, str]:
        """The raw manifest bytes (unverified) and their media type."""
        ...

    def fetch_blob_raw(self, digest: str, limit: int) -> bytes:
        """The raw blob bytes (unverified); more than `limit` bytes is an InputError."""
        ...

    def has_blob(self, digest: str) -> bool: ...

    def push_blob(self, data: bytes, digest: str) -> bool:
        """Store a blob; False if it was already there (nothing sent)."""
        ...

    def push_manifest(self, data: bytes, media_type: str, tag: str | None) -> None: ...

    def referrers(self, digest: str) -> list[Descriptor]: ...

    def close(self) -> None: ...


def fetch_manifest(store: Store, descriptor: Descriptor) -> Manifest:
    raw, media_type = store.fetch_manifest_raw(descriptor.digest)
    if len(raw) > MAX_MANIFEST_BYTES:
        raise InputError(f"manifest {descriptor.digest} is larger than {MAX_MANIFEST_BYTES} bytes")
    verify(raw, descriptor.digest, None, "manifest")
    return parse_manifest(
        raw, Descriptor(media_type or descriptor.media_type, descriptor.digest, len(raw))
    )


def fetch_blob(store: Store, descriptor: Descriptor, limit: int) -> bytes:
    if descriptor.size > limit:
        raise InputError(
            f"blob {descriptor.digest} is {descriptor.size} bytes, over the {limit}-byte limit"
        )
    return verify(
        store.fetch_blob_raw(descriptor.digest, limit), descriptor.digest, descriptor.size, "blob"
    )


def resolve_manifest(store: Store, ref: ArtifactRef) -> Manifest:
    """Resolve `ref` (digest wins over tag) and fetch its verified manifest."""
    target = ref.digest or ref.tag
    if not target:
        raise InputError(f"{ref} names neither a tag nor a digest")
    descriptor = store.resolve(target)
    if ref.digest and descriptor.digest != ref.digest:
        raise InputError(f"{ref} resolved to {descriptor.digest}, not the digest it names")
    return fetch_manifest(store, descriptor)


def open_store(
    ref: ArtifactRef, options: RegistryOptions | None = None, *, create: bool = False
) -> Store:
    """Open the Store a reference points into; `create` makes a missing layout."""
    # Imported here: registry pulls in requests/oras, layouts need neither.
    from runner.common.layout import LayoutStore, LayoutTarStore
    from runner.common.registry import RegistryStore

    if ref.kind == "registry":
        return RegistryStore(
            ref.location, ref.repository, options or RegistryOptions(), ref.is_loopback
        )
    if ref.kind == "layout-tar":
        return LayoutTarStore(Path(ref.location), create=create)
    return LayoutStore(Path(ref.location), create=create)
