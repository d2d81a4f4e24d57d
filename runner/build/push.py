"""Writing an artifact to its destinations (registries, layouts) and reading it back."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from runner.common.errors import InputError, RemoteError
from runner.common.oci import Descriptor
from runner.common.reference import ArtifactRef
from runner.common.store import RegistryOptions, Store, fetch_manifest, open_store


def check_destinations(refs: Iterable[ArtifactRef]) -> None:
    for ref in refs:
        if ref.digest:
            raise InputError(
                f"destination {ref} names a digest",
                hint="a destination is a repository with an optional tag; the digest is "
                "the result of the build",
            )


def push(
    destinations: list[ArtifactRef],
    manifest: Descriptor,
    manifest_bytes: bytes,
    blobs: list[tuple[Descriptor, Callable[[], bytes]]],
    options: RegistryOptions,
    progress: Callable[[str], None],
) -> list[str]:
    """Push blobs then the manifest to every destination (once per tag), skipping blobs that
    are already there; read the manifest back by digest and check it. Returns pinned refs."""
    pinned: list[str] = []
    for ref in destinations:
        store: Store = open_store(ref, options, create=True)
        try:
            for descriptor, data in blobs:
                if store.has_blob(descriptor.digest):
                    progress(f"{ref.name}: blob {descriptor.digest[:19]} already present")
                    continue
                store.push_blob(data(), descriptor.digest)
                progress(
                    f"{ref.name}: pushed blob {descriptor.digest[:19]} ({descriptor.size} bytes)"
                )
            store.push_manifest(manifest_bytes, manifest.media_type, ref.tag)
            back = fetch_manifest(store, store.resolve(manifest.digest))
            if back.descriptor.digest != manifest.digest:
                raise RemoteError(f"{ref.name} returned a different manifest than was pushed")
            progress(
                f"{ref.name}: pushed manifest {manifest.digest}"
                + (f" as :{ref.tag}" if ref.tag else "")
            )
        finally:
            store.close()
        pinned.append(ref.with_tag(None).with_digest(manifest.digest).pinned())
    return pinned
