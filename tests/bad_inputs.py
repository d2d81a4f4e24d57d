"""Makers of hostile inputs whose size is the point: alias bombs, deep nesting, huge objects,
gzip bombs, and OCI layouts holding hostile layers. Small hand-written inputs live in
tests/corpus/ instead, with their expected outcome in tests/corpus/expected.yaml."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any

# -- YAML ----------------------------------------------------------------------------------------


def config_map(name: str, data: str) -> str:
    return f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n{data}"


def alias_lines(levels: int, width: int) -> str:
    """`levels` anchors (indented as mapping entries), each a list of `width` aliases to the
    one before: they expand to width**levels scalars."""
    lines = ["  a0: &a0 [" + ", ".join(["lol"] * width) + "]"]
    for i in range(1, levels):
        lines.append(f"  a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


def alias_bomb(levels: int, width: int) -> str:
    """A ConfigMap whose data is `alias_lines`."""
    return config_map("bomb", alias_lines(levels, width))


def merge_bomb(levels: int) -> str:
    """The same through merge keys: each level merges the one before and holds it twice."""
    lines = ["  m0: &m0 {" + ", ".join(f"k{j}: v" for j in range(10)) + "}"]
    for i in range(1, levels):
        lines.append(f"  m{i}: &m{i} {{<<: *m{i - 1}, x{i}: [*m{i - 1}, *m{i - 1}]}}")
    return config_map("merge", "\n".join(lines) + "\n")


def deep_flow(depth: int) -> str:
    return config_map("deep", "  x: " + "[" * depth + "]" * depth + "\n")


def deep_block(depth: int) -> str:
    body = "".join(f"{'  ' * (i + 1)}k{i}:\n" for i in range(depth))
    return config_map("deep", body + f"{'  ' * (depth + 1)}leaf\n")


def big_config_map(name: str, size: int) -> str:
    return config_map(name, f"  blob: {'x' * size}\n")


def small_config_maps(count: int) -> str:
    return "".join(
        f"---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c{i}\ndata: {{a: b}}\n"
        for i in range(count)
    )


# -- JSON ----------------------------------------------------------------------------------------


def deep_json(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


# -- tar and gzip --------------------------------------------------------------------------------


def tar_of(members: list[tuple[str, bytes]], *, pax: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    fmt = tarfile.PAX_FORMAT if pax else tarfile.USTAR_FORMAT
    with tarfile.open(fileobj=buf, mode="w", format=fmt, pax_headers=pax or {}) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def tar_with_link(name: str, target: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.type = tarfile.SYMTYPE
        info.linkname = target
        tar.addfile(info)
    return buf.getvalue()


def gzip_of(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=9, mtime=0)


def comment_bomb_layer(total: int, name: str = "manifests.yaml") -> bytes:
    """A tar.gz holding one file of `total` bytes of YAML comments (4 KiB lines, which deflate
    to about 1000:1), written in chunks so the test never holds the whole file."""
    header = tarfile.TarInfo(name)
    header.size = total
    chunk = (b"# " + b"x" * 4093 + b"\n") * 256
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=9, mtime=0) as gz:
        gz.write(header.tobuf(format=tarfile.USTAR_FORMAT))
        left = total
        while left > 0:
            piece = chunk[:left]
            gz.write(piece)
            left -= len(piece)
        gz.write(b"\0" * ((512 - total % 512) % 512) + b"\0" * 1024)
    return out.getvalue()


# -- OCI layouts ---------------------------------------------------------------------------------

EMPTY_CONFIG = "application/vnd.oci.empty.v1+json"
TAR_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
TAR = "application/vnd.oci.image.layer.v1.tar"
YAML_LAYER = "application/yaml"
LADING_CONTENT = "application/vnd.lading.content.v1.tar+gzip"
LADING_CONFIG = "application/vnd.lading.config.v1+json"

Layer = tuple[str, bytes, dict[str, str]]


def _blob(root: Path, data: bytes) -> dict[str, Any]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    path = root / "blobs" / "sha256" / digest.split(":", 1)[1]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return {"digest": digest, "size": len(data)}


def write_layout(
    root: Path,
    layers: list[Layer],
    *,
    config: tuple[str, bytes] = (EMPTY_CONFIG, b"{}"),
    tag: str = "v1",
) -> str:
    """An OCI image layout at `root` holding one manifest with these (media type, bytes,
    annotations) layers, tagged `tag`; returns `oci-layout:ROOT:TAG`."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/vnd.example.hostile.v1",
        "config": {"mediaType": config[0], **_blob(root, config[1])},
        "layers": [
            {"mediaType": media, **_blob(root, data), **({"annotations": ann} if ann else {})}
            for media, data, ann in layers
        ],
    }
    raw = json.dumps(manifest).encode()
    entry = {
        "mediaType": manifest["mediaType"],
        **_blob(root, raw),
        "annotations": {"org.opencontainers.image.ref.name": tag},
    }
    (root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [entry]}))
    return f"oci-layout:{root}:{tag}"


def yaml_tar_layer(text: str, name: str = "manifests.yaml") -> Layer:
    return (TAR_GZIP, gzip_of(tar_of([(name, text.encode())])), {})
