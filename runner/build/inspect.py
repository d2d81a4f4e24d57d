"""`inspect`: what an artifact holds, read and verified the way `install` reads it."""

from __future__ import annotations

from collections.abc import Callable

from plans.inspect import InspectResult, Layer, Referrer
from runner.common.artifact import read_content
from runner.common.errors import LadingError
from runner.common.objects import check_objects, object_id
from runner.common.oci import ANN_TITLE
from runner.common.output import silent
from runner.common.reference import ArtifactRef
from runner.common.store import RegistryOptions, fetch_manifest, open_store, resolve_manifest


def inspect(
    ref: ArtifactRef, options: RegistryOptions, progress: Callable[[str], None] = silent
) -> InspectResult:
    """Resolve `ref`, verify its manifest and blobs, and describe it. Objects are validated
    as `install` would, so a clean inspect means the artifact is installable as far as its
    content goes."""
    store = open_store(ref, options)
    try:
        manifest = resolve_manifest(store, ref)
        progress(f"resolved {ref} to {manifest.descriptor.digest}")
        content = read_content(store, manifest)
        objects = check_objects(content.objects())
        referrers: list[Referrer] | None
        note = None
        try:
            listed = store.referrers(manifest.descriptor.digest)
            referrers = []
            for descriptor in listed:
                # The index entry's artifactType is the config media type on registries that
                # predate OCI 1.1's artifactType field, and its annotations may be missing:
                # read (and verify) the referrer itself.
                referrer = fetch_manifest(store, descriptor)
                referrers.append(
                    Referrer(
                        digest=descriptor.digest,
                        media_type=referrer.descriptor.media_type,
                        artifact_type=referrer.artifact_type,
                        annotations=referrer.annotations,
                    )
                )
        except LadingError as e:
            # Referrers are extra information; a registry without the API (or the tag
            # fallback) must not hide what the artifact itself holds.
            referrers, note = None, e.message
    finally:
        store.close()
    blobs = [manifest.config, *manifest.layers]
    return InspectResult(
        ref=ref.with_tag(None).with_digest(manifest.descriptor.digest).pinned(),
        digest=manifest.descriptor.digest,
        media_type=manifest.descriptor.media_type,
        artifact_type=manifest.artifact_type,
        format=content.format,
        size=len(manifest.raw) + sum(d.size for d in blobs),
        annotations=manifest.annotations,
        config=content.config,
        layers=[
            Layer(
                digest=d.digest,
                media_type=d.media_type,
                size=d.size,
                title=d.annotations.get(ANN_TITLE),
            )
            for d in manifest.layers
        ],
        objects=[str(object_id(o)) for o in objects],
        referrers=referrers,
        referrers_note=note,
    )
