"""Helpers for build runner tests: read an artifact back the way install does, and publish
foreign (Flux-style, or manifest-less) artifacts through the Store API."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

from runner.build.package import deterministic_tar_gz
from runner.common.artifact import ArtifactContent, read_content
from runner.common.digest import sha256_digest
from runner.common.objects import object_id
from runner.common.oci import FLUX_CONFIG, FLUX_CONTENT, MANIFEST, Descriptor, canonical_json
from runner.common.reference import parse_ref
from runner.common.store import RegistryOptions, open_store, resolve_manifest

REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = REPO_ROOT / "examples"
DATA = Path(__file__).resolve().parent / "data" / "build"


def read_back(ref: str, options: RegistryOptions | None = None) -> ArtifactContent:
    store = open_store(parse_ref(ref), options)
    try:
        return read_content(store, resolve_manifest(store, parse_ref(ref)))
    finally:
        store.close()


def objects_by_id(content: ArtifactContent) -> dict[str, dict[str, Any]]:
    return {str(object_id(obj)): obj for obj, _ in content.objects()}


def _tar_gz(files: dict[str, str]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for name, text in sorted(files.items()):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


def push_foreign(
    to: str,
    layers: list[tuple[str, bytes]],
    config_type: str = FLUX_CONFIG,
    annotations: dict[str, str] | None = None,
) -> str:
    """Push a non-lading artifact (layers given as (media type, bytes)) and return its pinned
    reference. The config is `{}`, as `flux push artifact` writes it."""
    ref = parse_ref(to)
    config = b"{}"
    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": Descriptor(config_type, sha256_digest(config), len(config)).to_json(),
        "layers": [
            Descriptor(media_type, sha256_digest(data), len(data)).to_json()
            for media_type, data in layers
        ],
        "annotations": annotations or {"org.opencontainers.image.created": "2024-05-06T07:08:09Z"},
    }
    data = canonical_json(manifest)
    store = open_store(ref, RegistryOptions(), create=True)
    try:
        store.push_blob(config, sha256_digest(config))
        for _, blob in layers:
            store.push_blob(blob, sha256_digest(blob))
        store.push_manifest(data, MANIFEST, ref.tag)
    finally:
        store.close()
    return ref.with_tag(None).with_digest(sha256_digest(data)).pinned()


def push_flux_artifact(to: str, files: dict[str, str]) -> str:
    """An artifact as `flux push artifact` makes it: one tar.gz layer of YAML files."""
    return push_foreign(
        to,
        [(FLUX_CONTENT, _tar_gz(files))],
        annotations={
            "org.opencontainers.image.created": "2024-05-06T07:08:09Z",
            "org.opencontainers.image.source": "https://git.example/flux/app.git",
            "org.opencontainers.image.revision": "main@sha1:0123456789abcdef",
        },
    )


def push_manifestless_artifact(to: str) -> str:
    """An artifact that holds a binary and a README, not Kubernetes manifests."""
    return push_foreign(
        to,
        [
            ("application/octet-stream", b"\x7fELF not manifests"),
            (
                "application/vnd.example.readme.v1+tar+gzip",
                deterministic_tar_gz("README.md", b"# nothing to install\n"),
            ),
        ],
        config_type="application/vnd.example.config.v1+json",
    )


def signature_for(to: str, subject: Descriptor) -> str:
    """A sigstore-bundle-shaped referrer of `subject` (its content is not a real signature:
    inspect lists referrers, `lading verify` checks them)."""
    ref = parse_ref(to)
    empty = b"{}"
    bundle = json.dumps({"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json"}).encode()
    bundle_type = "application/vnd.dev.sigstore.bundle.v0.3+json"
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "artifactType": bundle_type,
        "config": Descriptor(
            "application/vnd.oci.empty.v1+json", sha256_digest(empty), 2
        ).to_json(),
        "layers": [Descriptor(bundle_type, sha256_digest(bundle), len(bundle)).to_json()],
        "subject": subject.to_json(),
        "annotations": {"dev.sigstore.bundle.predicateType": "https://sigstore.dev/cosign/sign/v1"},
    }
    data = canonical_json(manifest)
    store = open_store(ref, RegistryOptions(), create=True)
    try:
        store.push_blob(empty, sha256_digest(empty))
        store.push_blob(bundle, sha256_digest(bundle))
        store.push_manifest(data, MANIFEST, None)
    finally:
        store.close()
    return sha256_digest(data)
