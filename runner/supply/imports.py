"""`lading import`: copy everything an OCI layout holds (as written by `lading export`) into a
registry repository with the same digests, referrers kept.

Everything is verified before the first write: the checksum list, then every manifest and
blob against its digest; a tampered layout is refused with nothing pushed. Pushing skips blobs
the registry already has and re-puts manifests idempotently, so an interrupted import is
resumed by running it again.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable

from plans.documents import load_json
from plans.supply import TransferResult
from runner.common.digest import DigestMismatch
from runner.common.errors import InputError
from runner.common.layout import LayoutStore
from runner.common.oci import ANN_REF_NAME, MANIFEST, MAX_MANIFEST_BYTES, Descriptor
from runner.common.output import silent
from runner.common.reference import parse_ref
from runner.common.store import RegistryOptions, Store, fetch_blob, open_store
from runner.supply.export import (
    CHECKSUMS,
    MAX_BLOB_BYTES,
    Node,
    artifact_summary,
    copy_node,
    manifest_node,
    open_layout,
)
from runner.supply.referrers import index_referrer
from runner.supply.verify import read_manifest

MAX_CHECKSUMS_BYTES = 1024 * 1024


def check_checksums(layout: LayoutStore) -> int:
    """Verify the layout's SHA256SUMS, if it has one; returns how many files it lists."""
    path = layout.root / CHECKSUMS
    if not path.is_file():
        return 0
    what = f"{CHECKSUMS} in {layout.label}"
    try:
        if path.stat().st_size > MAX_CHECKSUMS_BYTES:
            raise InputError(f"{what} is larger than {MAX_CHECKSUMS_BYTES} bytes")
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{what} is not text") from None
    except OSError as e:
        raise InputError(f"{what} is unreadable: {e.strerror or e}") from None
    root = layout.root.resolve()
    count = 0
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        expected, _, name = line.partition("  ")
        target = (layout.root / name).resolve() if name and "\0" not in name else None
        if target is None or not target.is_relative_to(root):
            raise InputError(f"{what}: line {number} is malformed: {line[:120]!r}")
        if not target.is_file():
            raise InputError(f"{what} lists {name}, which the layout lacks")
        digest = hashlib.sha256()
        with open(target, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        if digest.hexdigest() != expected:
            raise DigestMismatch(
                f"{name} in {layout.label} does not match {CHECKSUMS}: expected {expected}, "
                f"content hashes to {digest.hexdigest()}",
                hint="the layout was altered or damaged in transit; do not import it",
            )
        count += 1
    return count


def layout_nodes(layout: LayoutStore) -> list[tuple[Node, str | None]]:
    """Every manifest the layout's index lists, read and verified, with its tag; subjects
    ordered before their referrers."""
    nodes: dict[str, tuple[Node, str | None]] = {}
    for descriptor in layout.index_entries():
        raw, read = read_manifest(layout, descriptor.digest)
        media_type = descriptor.media_type or read.media_type or MANIFEST
        node = manifest_node(raw, Descriptor(media_type, read.digest, read.size))
        tag = descriptor.annotations.get(ANN_REF_NAME)
        if descriptor.digest not in nodes or tag:
            nodes[descriptor.digest] = (node, tag)
    ordered: list[tuple[Node, str | None]] = []
    placed: set[str] = set()
    while len(ordered) < len(nodes):
        ready = [
            (n, t) for d, (n, t) in nodes.items()
            if d not in placed and (n.subject is None or n.subject not in nodes
                                    or n.subject in placed)
        ]
        if not ready:
            raise InputError(f"{layout.label}: referrers form a cycle")
        for n, t in ready:
            ordered.append((n, t))
            placed.add(n.descriptor.digest)
    return ordered


def verify_blobs(layout: Store, nodes: list[tuple[Node, str | None]]) -> None:
    for node, _ in nodes:
        for blob in node.blobs:
            fetch_blob(layout, blob, MAX_BLOB_BYTES)


def import_layout(
    source: str,
    to: str,
    options: RegistryOptions | None = None,
    progress: Callable[[str], None] = silent,
) -> TransferResult:
    started = time.monotonic()
    dest_ref = parse_ref(to)
    if dest_ref.digest:
        raise InputError(
            f"destination {to} names a digest",
            hint="give a repository (with an optional tag); digests come from the layout",
        )
    layout = open_layout(source, create=False)
    try:
        listed = check_checksums(layout)
        nodes = layout_nodes(layout)
        if not nodes:
            raise InputError(f"{source} holds no manifests")
        verify_blobs(layout, nodes)
        progress(f"verified {len(nodes)} manifest(s) and {listed} checksummed file(s)")
        roots = [(n, t) for n, t in nodes if n.subject is None]
        dest = open_store(dest_ref, options, create=True)
        copied = skipped = 0
        try:
            for node, tag in nodes:
                push_tag = (dest_ref.tag or tag) if node.subject is None else None
                c, s = copy_node(layout, dest, node, push_tag)
                copied, skipped = copied + c, skipped + s
                if node.subject is not None:
                    index_referrer(dest, node.subject, referrer_descriptor(node))
            objects, origin = artifact_summary(layout, roots[0][0]) if roots else (None, None)
        finally:
            dest.close()
    finally:
        layout.close()
    main = roots[0][0] if roots else nodes[0][0]
    tag = (dest_ref.tag or roots[0][1]) if roots else None
    progress(
        f"imported {main.descriptor.digest} into {dest_ref.name}: {copied} blob(s) pushed, "
        f"{skipped} already there, {len(nodes) - len(roots)} referrer(s)"
    )
    return TransferResult(
        kind="ImportResult",
        digest=main.descriptor.digest,
        ref=dest_ref.with_tag(None).with_digest(main.descriptor.digest).pinned(),
        tags=[tag] if tag else [],
        size=main.descriptor.size + sum(b.size for b in main.blobs),
        objects=objects,
        source=origin,
        referrers=[n.descriptor.digest for n, _ in nodes if n.subject is not None],
        blobs_copied=copied,
        blobs_skipped=skipped,
        seconds=round(time.monotonic() - started, 3),
    )


def referrer_descriptor(node: Node) -> Descriptor:
    document = load_json(node.raw, f"manifest {node.descriptor.digest}", MAX_MANIFEST_BYTES)
    return Descriptor(
        node.descriptor.media_type,
        node.descriptor.digest,
        node.descriptor.size,
        dict(document.get("annotations") or {}),
        document.get("artifactType"),
    )
