"""`lading export`: copy an artifact and everything that refers to it (signatures, and their
own referrers) into an OCI image layout, directory or `.tar`, with a `SHA256SUMS` checksum
list, for carrying into an air-gapped site. Every byte is verified as it is read."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plans.documents import load_json
from plans.supply import TransferResult
from runner.common.errors import InputError
from runner.common.layout import LayoutStore, LayoutTarStore
from runner.common.oci import LADING_CONFIG, MAX_MANIFEST_BYTES, Descriptor
from runner.common.output import silent
from runner.common.reference import LAYOUT_PREFIX, parse_ref
from runner.common.store import RegistryOptions, Store, fetch_blob, open_store
from runner.supply.verify import pinned_manifest, read_manifest

CHECKSUMS = "SHA256SUMS"
MAX_BLOB_BYTES = 4 * 1024**3
MAX_REFERRER_DEPTH = 4  # a signature of a signature of … ; real chains are one or two deep


@dataclass(frozen=True)
class Node:
    """One manifest of the closure: its bytes, descriptor and the blobs it names."""

    raw: bytes
    descriptor: Descriptor
    blobs: list[Descriptor]
    subject: str | None


def manifest_node(raw: bytes, descriptor: Descriptor) -> Node:
    document = load_json(raw, f"manifest {descriptor.digest}", MAX_MANIFEST_BYTES)
    if not isinstance(document, dict):
        raise InputError(f"manifest {descriptor.digest} is not a JSON object")
    if isinstance(document.get("manifests"), list):
        raise InputError(
            f"{descriptor.digest} is an image index; lading carries single artifacts"
        )
    blobs = [Descriptor.from_json(document.get("config"), "manifest config")]
    layers = document.get("layers") or []
    if not isinstance(layers, list):
        raise InputError(f"manifest {descriptor.digest}: layers is not a list")
    blobs += [Descriptor.from_json(layer, f"layer {i}") for i, layer in enumerate(layers)]
    subject = document.get("subject")
    subject_digest = subject.get("digest") if isinstance(subject, dict) else None
    return Node(raw, descriptor, blobs, subject_digest)


def closure(store: Store, raw: bytes, root: Descriptor) -> list[Node]:
    """The artifact's manifest node, then its referrers breadth-first: subjects before the
    manifests that refer to them, the order an importer must push them in."""
    nodes = [manifest_node(raw, root)]
    seen = {root.digest}
    frontier = [root.digest]
    for _ in range(MAX_REFERRER_DEPTH):
        following = []
        for digest in frontier:
            for referrer in store.referrers(digest):
                if referrer.digest in seen:
                    continue
                seen.add(referrer.digest)
                ref_raw, descriptor = read_manifest(store, referrer.digest)
                nodes.append(manifest_node(ref_raw, descriptor))
                following.append(referrer.digest)
        frontier = following
    return nodes


def artifact_summary(store: Store, node: Node) -> tuple[int | None, dict[str, Any] | None]:
    """Object count and source of a lading artifact, from its config; (None, None) otherwise."""
    config = node.blobs[0]
    if config.media_type != LADING_CONFIG:
        return None, None
    try:
        document = load_json(fetch_blob(store, config, MAX_MANIFEST_BYTES), "config")
        count = document.get("objects", {}).get("count")
        source = document.get("source")
    except (InputError, AttributeError):
        return None, None
    return (count if isinstance(count, int) else None), (
        source if isinstance(source, dict) else None
    )


def open_layout(path: str, *, create: bool) -> LayoutStore:
    location = path.removeprefix(LAYOUT_PREFIX)
    if location.endswith(".tar"):
        return LayoutTarStore(Path(location), create=create)
    return LayoutStore(Path(location), create=create)


def copy_node(source: Store, dest: Store, node: Node, tag: str | None) -> tuple[int, int]:
    """Copy one manifest and its blobs (verified on read), skipping blobs the destination
    already has. Returns (copied, skipped)."""
    copied = skipped = 0
    for blob in node.blobs:
        if dest.has_blob(blob.digest):
            skipped += 1
            continue
        dest.push_blob(fetch_blob(source, blob, MAX_BLOB_BYTES), blob.digest)
        copied += 1
    dest.push_manifest(node.raw, node.descriptor.media_type, tag)
    return copied, skipped


def write_checksums(layout: LayoutStore) -> None:
    """`sha256sum -c`-compatible list of every blob in the layout."""
    lines = [
        f"{path.name}  {path.relative_to(layout.root).as_posix()}"
        for path in sorted((layout.root / "blobs" / "sha256").iterdir())
        if path.is_file()
    ]
    (layout.root / CHECKSUMS).write_text("\n".join(lines) + "\n")


def export(
    ref_text: str,
    out: str,
    options: RegistryOptions | None = None,
    progress: Callable[[str], None] = silent,
) -> TransferResult:
    started = time.monotonic()
    ref = parse_ref(ref_text)
    source = open_store(ref, options)
    try:
        raw, root = pinned_manifest(source, ref)
        if not ref.digest:
            progress(f"resolved {ref} to {root.digest}; exporting that digest")
        nodes = closure(source, raw, root)
        objects, origin = artifact_summary(source, nodes[0])
        dest = open_layout(out, create=True)
        copied = skipped = 0
        try:
            for node in nodes:
                tag = ref.tag if node is nodes[0] else None
                c, s = copy_node(source, dest, node, tag)
                copied, skipped = copied + c, skipped + s
            write_checksums(dest)
        except BaseException:
            if isinstance(dest, LayoutTarStore):
                dest.discard()  # no half-written tar under the name the user gave
            raise
        finally:
            dest.close()
    finally:
        source.close()
    location = out.removeprefix(LAYOUT_PREFIX)
    progress(f"exported {root.digest} and {len(nodes) - 1} referrer(s) to {location}")
    return TransferResult(
        kind="ExportResult",
        digest=root.digest,
        ref=f"{LAYOUT_PREFIX}{location}@{root.digest}",
        tags=[ref.tag] if ref.tag else [],
        size=root.size + sum(b.size for b in nodes[0].blobs),
        objects=objects,
        source=origin,
        referrers=[n.descriptor.digest for n in nodes[1:]],
        blobs_copied=copied,
        blobs_skipped=skipped,
        seconds=round(time.monotonic() - started, 3),
    )
