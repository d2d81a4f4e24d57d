"""The build runner: BuildPlan → render → objects → canonical YAML → package → push.

`build()` is the one entry point the CLI, plan files and a control plane calling Python all use.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from pydantic import SecretStr

from plans.build import BuildPlan, BuildResult, SourceInfo
from runner import __version__
from runner.build.inventory import default_inventory
from runner.build.package import ArtifactMeta, Blob, package
from runner.build.push import check_destinations, push
from runner.build.render import Rendered, render_inline, render_kustomize
from runner.build.source import detect, redact_url
from runner.common.artifact import read_content
from runner.common.digest import sha256_digest
from runner.common.errors import InputError
from runner.common.objects import (
    canonical_order,
    check_objects,
    dump_stream,
    normalise,
    object_id,
    parse_stream,
)
from runner.common.oci import ANN_SOURCE, Descriptor
from runner.common.output import silent
from runner.common.reference import ArtifactRef, parse_ref
from runner.common.store import RegistryOptions, fetch_blob, open_store, resolve_manifest

Progress = Callable[[str], None]
MAX_COPY_BLOB_BYTES = 1 << 30


def registry_options(plan: BuildPlan) -> RegistryOptions:
    return RegistryOptions(
        plain_http=plan.plain_http, ca_file=Path(plan.ca_file) if plan.ca_file else None
    )


def render(plan: BuildPlan, base: Path) -> Rendered:
    if plan.source.kustomize is not None:
        return render_kustomize(plan.source.kustomize, base)
    if plan.source.inline is not None:
        return render_inline(plan.source.inline, base)
    raise AssertionError("artifact sources are copied, not rendered")


def canonical_yaml(text: str, source: str) -> tuple[str, list[str]]:
    """Rendered YAML → (canonical stream, object ids): validated, deduplicated, normalised
    and ordered."""
    located = [
        (obj, f"{source} (object {i})") for i, obj in enumerate(parse_stream(text, source), start=1)
    ]
    objects = canonical_order(normalise(o) for o in check_objects(located))
    return dump_stream(objects), [str(object_id(o)) for o in objects]


def build(plan: BuildPlan, *, base: Path | None = None, progress: Progress = silent) -> BuildResult:
    """Run a build plan. `base` resolves relative source paths (the plan file's directory).
    Paths are taken as given: a plan from a file or a control plane goes through
    `confine_plan` first, as `run_plan` and `lading build -f` do."""
    if not plan.sign:
        return _build(plan, base=base, progress=progress)
    from runner.supply.sign import identity_token, sign, trust_config

    trust = Path(plan.sign_trust_config) if plan.sign_trust_config else None
    raw_token = os.environ.get("SIGSTORE_ID_TOKEN")
    token = SecretStr(raw_token) if raw_token else None
    # Fail before pushing when signing cannot happen at all (no identity, no trust root), so a
    # signed build never leaves an unsigned artifact behind for those reasons.
    identity_token(token)
    trust_config(trust)
    result = _build(plan, base=base, progress=progress)
    for ref in result.refs:
        sign(
            ref,
            token=token,
            trust_config_path=trust,
            options=registry_options(plan),
            progress=progress,
        )
        progress(f"signed {ref}")
    return result.model_copy(update={"signed": list(result.refs)})


def _build(plan: BuildPlan, *, base: Path | None, progress: Progress) -> BuildResult:
    base = base or Path.cwd()
    destinations = [parse_ref(r) for r in plan.to]
    check_destinations(destinations)
    options = registry_options(plan)
    if plan.source.artifact is not None:
        if plan.inventory is not None:
            raise InputError(
                "an inventory name cannot be recorded in a copied artifact: it is copied byte "
                "for byte, config and all",
                hint="name the inventory when installing it (lading install --inventory NAME)",
            )
        return copy_artifact(parse_ref(plan.source.artifact.ref), destinations, options, progress)
    inventory = plan.inventory or default_inventory(destinations[0])

    durations: dict[str, float] = {}
    t0 = time.monotonic()
    progress("rendering with kustomize")
    rendered = render(plan, base)
    durations["render"] = time.monotonic() - t0

    t1 = time.monotonic()
    stream, ids = canonical_yaml(rendered.yaml, "rendered output")
    if not ids:
        raise InputError(
            "the source rendered no objects",
            hint="an empty artifact would prune "
            "everything it installed before; add manifests to the source",
        )
    facts = detect(rendered.where, plan.metadata)
    if facts.dirty:
        progress(
            f"warning: uncommitted changes under the source; revision {facts.revision} "
            "does not describe this build (recorded as dirty)"
        )
    meta = ArtifactMeta(
        # Named like the inventory, not the destination: one build, one digest, wherever it goes.
        title=Path(facts.path).name if facts.path else inventory,
        created=facts.created,
        version=plan.version,
        source_url=facts.url,
        revision=facts.revision,
        source_path=facts.path,
        dirty=facts.dirty,
        inputs={**rendered.inputs, "tools": {**rendered.inputs["tools"], "lading": __version__}},
        # The source annotation is the source URL however it is given: never with a credential.
        annotations={
            k: redact_url(v) if k == ANN_SOURCE else v for k, v in plan.annotations.items()
        },
        inventory=inventory,
    )
    pkg = package(stream, ids, meta)
    durations["package"] = time.monotonic() - t1
    progress(f"packaged {len(ids)} objects as {pkg.digest}")

    t2 = time.monotonic()
    refs = push(
        destinations,
        pkg.manifest.descriptor,
        pkg.manifest.data,
        [(b.descriptor, _const(b)) for b in pkg.blobs],
        options,
        progress,
    )
    durations["push"] = time.monotonic() - t2
    return BuildResult(
        digest=pkg.digest,
        ref=refs[0],
        refs=refs,
        tags=[d.tag for d in destinations if d.tag],
        size=pkg.size,
        objects=len(ids),
        source=SourceInfo(
            url=facts.url,
            revision=facts.revision,
            path=facts.path,
            created=facts.created,
            dirty=facts.dirty,
        ),
        version=plan.version,
        inventory=inventory,
        checksum=sha256_digest(stream.encode()),
        durations={k: round(v, 3) for k, v in durations.items()},
    )


def _const(blob: Blob) -> Callable[[], bytes]:
    return lambda: blob.data


def copy_artifact(
    source: ArtifactRef,
    destinations: list[ArtifactRef],
    options: RegistryOptions,
    progress: Progress,
) -> BuildResult:
    """Bring your own artifact: check it holds valid manifests, then copy it byte for byte."""
    t0 = time.monotonic()
    store = open_store(source, options)
    try:
        manifest = resolve_manifest(store, source)
        progress(f"resolved {source} to {manifest.descriptor.digest}")
        content = read_content(store, manifest)
        objects = check_objects(content.objects())
        if not objects:
            raise InputError(f"artifact {source} holds no Kubernetes objects")
        blobs = [manifest.config, *manifest.layers]
        cache: dict[str, bytes] = {}

        def loader(d: Descriptor) -> Callable[[], bytes]:
            # Fetched lazily (a destination that has the blob never needs it) and once.
            def load() -> bytes:
                if d.digest not in cache:
                    cache[d.digest] = fetch_blob(store, d, MAX_COPY_BLOB_BYTES)
                return cache[d.digest]

            return load

        refs = push(
            destinations,
            manifest.descriptor,
            manifest.raw,
            [(d, loader(d)) for d in blobs],
            options,
            progress,
        )
    finally:
        store.close()
    config = content.config
    annotations = manifest.annotations
    source_doc = config.get("source") or {}
    url = source_doc.get("url") or annotations.get(ANN_SOURCE)
    inventory = config.get("inventory")
    return BuildResult(
        digest=manifest.descriptor.digest,
        ref=refs[0],
        refs=refs,
        tags=[d.tag for d in destinations if d.tag],
        size=len(manifest.raw) + sum(d.size for d in blobs),
        objects=len(objects),
        source=SourceInfo(
            # The copy keeps whatever its config says; the result never repeats a credential.
            url=redact_url(url) if isinstance(url, str) else None,
            revision=source_doc.get("revision")
            or annotations.get("org.opencontainers.image.revision"),
            path=source_doc.get("path"),
            created=config.get("created")
            or annotations.get("org.opencontainers.image.created")
            or "",
        ),
        version=config.get("version") or annotations.get("org.opencontainers.image.version"),
        inventory=inventory if isinstance(inventory, str) else None,
        checksum=config.get("checksum"),
        copied=True,
        durations={"copy": round(time.monotonic() - t0, 3)},
    )
