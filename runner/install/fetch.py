"""Fetching an artifact for install: resolve to a digest (a tag only when allowed), verify
every byte, unpack within bounds, and parse and validate the objects."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from plans.install import ArtifactSpec
from plans.supply import SignaturePolicy
from runner.common.artifact import ArtifactContent, read_content
from runner.common.errors import InputError
from runner.common.objects import Obj, check_objects, normalise
from runner.common.oci import Manifest
from runner.common.reference import ArtifactRef, parse_ref
from runner.common.store import RegistryOptions, open_store, resolve_manifest


@dataclass(frozen=True)
class Fetched:
    ref: ArtifactRef  # pinned to the digest that was verified
    manifest: Manifest
    content: ArtifactContent
    located: list[tuple[Obj, str]]  # validated, normalised objects and where each came from

    @property
    def default_inventory(self) -> str:
        """The inventory this artifact installs into unless told otherwise: the name recorded
        at build time, so one digest lands in one inventory however it is referenced; for
        artifacts without one (Flux, plain tars, older lading builds), the reference's last
        path component."""
        recorded = self.content.config.get("inventory")
        return recorded if isinstance(recorded, str) and recorded else self.ref.short_name


def registry_options(spec: ArtifactSpec) -> RegistryOptions:
    return RegistryOptions.of(spec.plain_http, spec.ca_file)


def pin(ref: ArtifactRef, allow_tag: bool) -> ArtifactRef:
    if ref.digest:
        return ref
    if not allow_tag:
        raise InputError(
            f"{ref} is not pinned to a digest; lading installs by digest",
            hint=f"use {ref.name}@sha256:…, or allow_tag: true in the plan to resolve the tag once",
        )
    return ref


def fetch(
    spec: ArtifactSpec, progress: Callable[[str], None], verify: SignaturePolicy | None = None
) -> Fetched:
    ref = pin(parse_ref(spec.ref), spec.allow_tag)
    store = open_store(ref, registry_options(spec))
    try:
        manifest = resolve_manifest(store, ref)
        pinned = ref.with_digest(manifest.descriptor.digest)
        if not ref.digest:
            progress(f"resolved {ref} to {pinned.pinned()}; installing by digest from here on")
        if verify is not None:
            # Imported here: sigstore is heavy and only needed when a policy is set.
            from runner.supply.verify import check_signature

            check_signature(store, manifest.descriptor, verify, progress=progress)
        content = read_content(store, manifest)
    finally:
        store.close()
    located = content.objects()
    objects = check_objects(located)
    wheres = {id(obj): where for obj, where in located}
    return Fetched(
        pinned, manifest, content, [(normalise(obj), wheres[id(obj)]) for obj in objects]
    )
