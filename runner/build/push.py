"""Writing an artifact to its destinations (registries, layouts) and reading it back."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

from runner.common.digest import DigestMismatch
from runner.common.errors import InputError, RemoteError
from runner.common.oci import Descriptor
from runner.common.reference import ArtifactRef
from runner.common.store import RegistryOptions, Store, fetch_manifest, open_store

# Blobs uploaded at once to one registry: a lading artifact has two (config and layer).
_CONCURRENT_BLOBS = 4


def check_destinations(refs: Iterable[ArtifactRef]) -> None:
    for ref in refs:
        if ref.digest:
            raise InputError(
                f"destination {ref} names a digest",
                hint="a destination is a repository with an optional tag; the digest is "
                "the result of the build",
            )


def load_clients(destinations: Iterable[ArtifactRef]) -> None:
    """Import the registry client (requests, oras: a tenth of a second) ahead of the push, so
    it loads while a kustomize started early (runner.build.early) still runs. So do the
    layout stores (open_store imports them for any destination) and netrc, which requests
    imports at its first request to look for credentials."""
    importlib.import_module("runner.common.layout")
    if any(ref.kind == "registry" for ref in destinations):
        importlib.import_module("runner.common.registry")
        importlib.import_module("netrc")


def push(
    destinations: list[ArtifactRef],
    manifest: Descriptor,
    manifest_bytes: bytes,
    blobs: list[tuple[Descriptor, bytes | Callable[[], bytes]]],
    options: RegistryOptions,
    progress: Callable[[str], None],
) -> list[str]:
    """Push blobs (side by side) then the manifest to every destination (once per tag),
    skipping blobs that are already there; read the manifest back by digest and check it.
    A blob given as a callable is loaded only for a destination that lacks it. Returns pinned
    refs."""
    pinned: list[str] = []
    for ref in destinations:
        store: Store = open_store(ref, options, create=True)
        try:
            sent = _push_blobs(store, ref, blobs)
            for (descriptor, _), pushed in zip(blobs, sent, strict=True):
                progress(
                    f"{ref.name}: pushed blob {descriptor.digest[:19]} ({descriptor.size} bytes)"
                    if pushed
                    else f"{ref.name}: blob {descriptor.digest[:19]} already present"
                )
            store.push_manifest(manifest_bytes, manifest.media_type, ref.tag)
            try:
                fetch_manifest(store, manifest)
            except DigestMismatch:
                raise RemoteError(
                    f"{ref.name} returned a different manifest than was pushed"
                ) from None
            progress(
                f"{ref.name}: pushed manifest {manifest.digest}"
                + (f" as :{ref.tag}" if ref.tag else "")
            )
        finally:
            store.close()
        pinned.append(ref.with_tag(None).with_digest(manifest.digest).pinned())
    return pinned


def _push_blobs(
    store: Store, ref: ArtifactRef, blobs: list[tuple[Descriptor, bytes | Callable[[], bytes]]]
) -> list[bool]:
    # Uploads to a registry overlap: each is round trips, mostly waiting. A blob still to be
    # loaded comes from a source that may not take concurrent reads (a tar), and a layout on
    # disk gains nothing; those go one by one.
    if ref.kind != "registry" or len(blobs) < 2 or any(callable(data) for _, data in blobs):
        return [_push_blob(store, descriptor, data) for descriptor, data in blobs]
    with ThreadPoolExecutor(min(_CONCURRENT_BLOBS, len(blobs))) as pool:
        sent = [pool.submit(_push_blob, store, descriptor, data) for descriptor, data in blobs]
        # In order: the first blob's failure is the one reported, as when pushed one by one.
        return [future.result() for future in sent]


def _push_blob(
    store: Store, descriptor: Descriptor, data: bytes | Callable[[], bytes]
) -> bool:
    """False when the blob was there already. push_blob checks that itself; a blob still to
    be loaded is looked for first, so it is loaded only when missing."""
    if callable(data):
        if store.has_blob(descriptor.digest):
            return False
        data = data()
    return store.push_blob(data, descriptor.digest)
