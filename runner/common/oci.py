"""OCI values: media types, descriptors, manifests. Pure data, no I/O."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from plans.documents import load_json
from runner.common.errors import InputError

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
EMPTY_CONFIG = "application/vnd.oci.empty.v1+json"

LADING_ARTIFACT = "application/vnd.lading.manifests.v1"
LADING_CONFIG = "application/vnd.lading.config.v1+json"
LADING_CONTENT = "application/vnd.lading.content.v1.tar+gzip"
FLUX_CONTENT = "application/vnd.cncf.flux.content.v1.tar+gzip"
FLUX_CONFIG = "application/vnd.cncf.flux.config.v1+json"

MANIFEST_TYPES = (MANIFEST, DOCKER_MANIFEST)
ACCEPT = ", ".join((MANIFEST, INDEX, DOCKER_MANIFEST, DOCKER_LIST))

ANN_CREATED = "org.opencontainers.image.created"
ANN_SOURCE = "org.opencontainers.image.source"
ANN_REVISION = "org.opencontainers.image.revision"
ANN_VERSION = "org.opencontainers.image.version"
ANN_TITLE = "org.opencontainers.image.title"
ANN_REF_NAME = "org.opencontainers.image.ref.name"

# Upper bound for a manifest document; registries commonly cap them at 4 MiB.
MAX_MANIFEST_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    annotations: dict[str, str] = field(default_factory=dict)
    artifact_type: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.size,
        }
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        if self.annotations:
            out["annotations"] = dict(sorted(self.annotations.items()))
        return out

    @classmethod
    def from_json(cls, data: Any, where: str) -> Descriptor:
        if not isinstance(data, dict):
            raise InputError(f"{where}: a descriptor must be an object")
        try:
            media_type, digest, size = data["mediaType"], data["digest"], data["size"]
        except KeyError as e:
            raise InputError(f"{where}: descriptor lacks {e.args[0]!r}") from None
        if not isinstance(media_type, str) or not isinstance(digest, str):
            raise InputError(f"{where}: descriptor mediaType and digest must be strings")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InputError(f"{where}: descriptor size must be a non-negative integer")
        annotations = data.get("annotations") or {}
        if not isinstance(annotations, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()
        ):
            raise InputError(f"{where}: descriptor annotations must map strings to strings")
        artifact_type = data.get("artifactType")
        if artifact_type is not None and not isinstance(artifact_type, str):
            raise InputError(f"{where}: descriptor artifactType must be a string")
        return cls(media_type, digest, size, dict(annotations), artifact_type)


def canonical_json(value: Any) -> bytes:
    """The byte form lading writes for manifests and configs: sorted keys, no whitespace, so
    the same value always has the same digest."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class Manifest:
    """An image manifest as read: its descriptor, raw bytes and parsed document."""

    descriptor: Descriptor
    raw: bytes
    document: dict[str, Any]

    @property
    def config(self) -> Descriptor:
        return Descriptor.from_json(self.document.get("config"), "manifest config")

    @property
    def layers(self) -> list[Descriptor]:
        layers = self.document.get("layers")
        if not isinstance(layers, list):
            raise InputError(f"manifest {self.descriptor.digest} has no layers list")
        return [Descriptor.from_json(layer, f"layer {i}") for i, layer in enumerate(layers)]

    @property
    def artifact_type(self) -> str | None:
        value = self.document.get("artifactType")
        if isinstance(value, str):
            return value
        config = self.document.get("config")
        return config.get("mediaType") if isinstance(config, dict) else None

    @property
    def annotations(self) -> dict[str, str]:
        return dict(self.document.get("annotations") or {})

    @property
    def subject(self) -> Descriptor | None:
        subject = self.document.get("subject")
        return Descriptor.from_json(subject, "manifest subject") if subject else None


def parse_manifest(raw: bytes, descriptor: Descriptor) -> Manifest:
    document = load_json(raw, f"manifest {descriptor.digest}", MAX_MANIFEST_BYTES)
    if not isinstance(document, dict):
        raise InputError(f"manifest {descriptor.digest} is not a JSON object")
    media_type = document.get("mediaType") or descriptor.media_type
    if media_type in (INDEX, DOCKER_LIST):
        raise InputError(
            f"{descriptor.digest} is an image index, not a manifests artifact",
            hint="point lading at a single artifact manifest (a multi-platform index holds images)",
        )
    if document.get("schemaVersion") != 2:
        raise InputError(f"manifest {descriptor.digest}: unsupported schemaVersion")
    return Manifest(descriptor, raw, document)
