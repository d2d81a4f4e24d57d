"""Packing canonical YAML into a lading v1 artifact. Pure: bytes in, bytes out, so the same
inputs give the same digest on any machine."""

from __future__ import annotations

import gzip
import io
import tarfile
from dataclasses import dataclass
from typing import Any

from runner.common.digest import sha256_digest
from runner.common.oci import (
    ANN_CREATED,
    ANN_REVISION,
    ANN_SOURCE,
    ANN_TITLE,
    ANN_VERSION,
    LADING_ARTIFACT,
    LADING_CONFIG,
    LADING_CONTENT,
    MANIFEST,
    Descriptor,
    canonical_json,
)

CONTENT_FILE = "manifests.yaml"
# The layer's file name for tools that save layers by title (`oras pull`): it is a gzipped tar,
# so naming it manifests.yaml would hand users gzip bytes under a YAML name.
LAYER_TITLE = "manifests.tar.gz"


@dataclass(frozen=True)
class Blob:
    descriptor: Descriptor
    data: bytes


@dataclass(frozen=True)
class Package:
    manifest: Blob
    blobs: list[Blob]  # config first, then layers

    @property
    def digest(self) -> str:
        return self.manifest.descriptor.digest

    @property
    def size(self) -> int:
        return self.manifest.descriptor.size + sum(b.descriptor.size for b in self.blobs)


@dataclass(frozen=True)
class ArtifactMeta:
    title: str
    created: str
    version: str | None
    source_url: str | None
    revision: str | None
    source_path: str | None
    inputs: dict[str, Any]
    annotations: dict[str, str]
    dirty: bool = False  # built from uncommitted changes
    # The install's default inventory: recorded here, so one digest lands in one inventory
    # however it is referenced (a registry, an oci-layout: directory, a tar).
    inventory: str | None = None


def deterministic_tar_gz(name: str, content: bytes) -> bytes:
    """One file in a tar in a gzip, with every varying field pinned: zero mtime, uid and gid,
    no owner names, mode 0644, and no name or time in the gzip header."""
    tar_buffer = io.BytesIO()
    with tarfile.open(fileobj=tar_buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size = len(content)
        info.mode = 0o644
        info.mtime = 0
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        tar.addfile(info, io.BytesIO(content))
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=9) as gz:
        gz.write(tar_buffer.getvalue())
    return out.getvalue()


def package(stream: str, object_ids: list[str], meta: ArtifactMeta) -> Package:
    content = stream.encode()
    layer_data = deterministic_tar_gz(CONTENT_FILE, content)
    layer = Blob(
        Descriptor(
            LADING_CONTENT, sha256_digest(layer_data), len(layer_data), {ANN_TITLE: LAYER_TITLE}
        ),
        layer_data,
    )
    config_doc = {
        "version": meta.version,
        "created": meta.created,
        "source": {
            "url": meta.source_url,
            "revision": meta.revision,
            "path": meta.source_path,
            # Only when set, so clean builds keep the digests they always had.
            **({"dirty": True} if meta.dirty else {}),
        },
        "inputs": meta.inputs,
        "checksum": sha256_digest(content),
        "objects": {"count": len(object_ids), "ids": object_ids},
        **({"inventory": meta.inventory} if meta.inventory else {}),
    }
    config_data = canonical_json(config_doc)
    config = Blob(
        Descriptor(LADING_CONFIG, sha256_digest(config_data), len(config_data)), config_data
    )
    annotations = {ANN_CREATED: meta.created, ANN_TITLE: meta.title}
    for key, value in (
        (ANN_SOURCE, meta.source_url),
        (ANN_REVISION, meta.revision),
        (ANN_VERSION, meta.version),
    ):
        if value:
            annotations[key] = value
    annotations.update(meta.annotations)
    manifest_doc = {
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "artifactType": LADING_ARTIFACT,
        "config": config.descriptor.to_json(),
        "layers": [layer.descriptor.to_json()],
        "annotations": dict(sorted(annotations.items())),
    }
    manifest_data = canonical_json(manifest_doc)
    manifest = Blob(
        Descriptor(
            MANIFEST,
            sha256_digest(manifest_data),
            len(manifest_data),
            artifact_type=LADING_ARTIFACT,
        ),
        manifest_data,
    )
    return Package(manifest, [config, layer])
