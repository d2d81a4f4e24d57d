"""Sigstore bundles as OCI referrers, the way cosign and sigstore-python attach them.

A signature is an image manifest with `artifactType` = the bundle media type, the empty config
(`{}`), one layer holding the bundle JSON, and `subject` = the signed artifact. Registries with
the OCI 1.1 referrers API index it themselves; for the others the distribution spec's
tag-schema fallback applies: an image index tagged `sha256-<hex>` listing the referrers, which
the pusher maintains. Layouts list referrers as index.json entries.
"""

from __future__ import annotations

import json
from typing import Literal

from runner.common.digest import sha256_digest
from runner.common.errors import InputError
from runner.common.layout import LayoutStore
from runner.common.oci import EMPTY_CONFIG, INDEX, MANIFEST, Descriptor, Manifest, canonical_json
from runner.common.registry import RegistryStore
from runner.common.store import Store, fetch_manifest

BUNDLE = "application/vnd.dev.sigstore.bundle.v0.3+json"
# Older bundle media types seen in the wild; accepted when reading, never written.
BUNDLE_TYPES = (
    BUNDLE,
    "application/vnd.dev.sigstore.bundle+json;version=0.3",
    "application/vnd.dev.sigstore.bundle+json;version=0.2",
    "application/vnd.dev.sigstore.bundle+json;version=0.1",
)
EMPTY_JSON = b"{}"
MAX_BUNDLE_BYTES = 1024 * 1024
ANN_BUNDLE_CONTENT = "dev.sigstore.bundle.content"

Attached = Literal["referrers-api", "tag-fallback", "layout"]


def is_bundle_type(media_type: str | None) -> bool:
    return media_type in BUNDLE_TYPES


Blobs = list[tuple[Descriptor, bytes]]


def bundle_manifest(bundle: bytes, subject: Descriptor) -> tuple[bytes, Blobs]:
    """The referrer manifest for a bundle signing `subject`, and the blobs it needs."""
    config = Descriptor(EMPTY_CONFIG, sha256_digest(EMPTY_JSON), len(EMPTY_JSON))
    layer = Descriptor(BUNDLE, sha256_digest(bundle), len(bundle))
    document = {
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "artifactType": BUNDLE,
        "config": config.to_json(),
        "layers": [layer.to_json()],
        "subject": Descriptor(subject.media_type, subject.digest, subject.size).to_json(),
        "annotations": {ANN_BUNDLE_CONTENT: "message-signature"},
    }
    return canonical_json(document), [(config, EMPTY_JSON), (layer, bundle)]


def attach(store: Store, manifest: bytes, blobs: Blobs) -> Attached:
    """Push a referrer (blobs, then the manifest by digest) and make sure it can be found."""
    for descriptor, data in blobs:
        store.push_blob(data, descriptor.digest)
    store.push_manifest(manifest, MANIFEST, None)
    document = json.loads(manifest)
    subject = Descriptor.from_json(document["subject"], "referrer subject")
    entry = Descriptor(
        MANIFEST,
        sha256_digest(manifest),
        len(manifest),
        dict(document.get("annotations") or {}),
        document.get("artifactType"),
    )
    return index_referrer(store, subject.digest, entry)


def index_referrer(store: Store, subject: str, referrer: Descriptor) -> Attached:
    """Make `referrer` discoverable from `subject`: nothing to do for layouts and registries
    with the referrers API; otherwise add it to the `sha256-<hex>` fallback index."""
    if isinstance(store, LayoutStore):
        return "layout"
    if not isinstance(store, RegistryStore):
        raise InputError(f"cannot attach referrers to {type(store).__name__}")
    if store.has_referrers_api(subject):
        return "referrers-api"
    tag = subject.replace(":", "-")
    manifests = store.fallback_referrers(subject)
    if any(isinstance(m, dict) and m.get("digest") == referrer.digest for m in manifests):
        return "tag-fallback"
    manifests.append(referrer.to_json())
    index = {"schemaVersion": 2, "mediaType": INDEX, "manifests": manifests}
    store.push_manifest(canonical_json(index), INDEX, tag)
    return "tag-fallback"


def bundle_referrers(store: Store, subject: str) -> list[Descriptor]:
    """Referrers of `subject` that hold Sigstore bundles. Descriptors without an
    artifactType (some fallback indexes omit it) or with the empty config's type (some
    registries, go-containerregistry's among them, report the config media type instead of
    the manifest's artifactType) are fetched to decide."""
    found = []
    for descriptor in store.referrers(subject):
        if is_bundle_type(descriptor.artifact_type) or (
            descriptor.artifact_type in (None, EMPTY_CONFIG)
            and descriptor.media_type == MANIFEST
            and is_bundle_type(fetch_manifest(store, descriptor).artifact_type)
        ):
            found.append(descriptor)
    return found


def bundle_layer(referrer: Manifest) -> Descriptor:
    layers = [layer for layer in referrer.layers if is_bundle_type(layer.media_type)]
    if len(layers) != 1:
        raise InputError(
            f"referrer {referrer.descriptor.digest} holds {len(layers)} Sigstore bundle "
            "layers; exactly one is expected"
        )
    return layers[0]
