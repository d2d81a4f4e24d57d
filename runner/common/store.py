"""Where artifacts live: one interface over registries and OCI image layouts.

Every manifest and blob read through a Store is verified against its digest here, so
callers can trust what they get.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from runner.common.digest import verify
from runner.common.errors import InputError
from runner.common.oci import MAX_MANIFEST_BYTES, Descriptor, Manifest, parse_manifest
from runner.common.reference import ArtifactRef
from runner.common.registry_options import RegistryOptions, RegistryTimeouts

__all__ = ["RegistryOptions", "RegistryTimeouts", "Store", "fetch_blob", "fetch_manifest",
           "open_store", "resolve_manifest"]

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

    if ref.kind == "registry":
        from runner.common.registry import RegistryStore

        return RegistryStore(
            ref.location, ref.repository, options or RegistryOptions(), ref.is_loopback
        )
    if ref.kind == "layout-tar":
        return LayoutTarStore(Path(ref.location), create=create)
    return LayoutStore(Path(ref.location), create=create)
