"""The build runner: BuildPlan → render → objects → canonical YAML → package → push.

`build()` is the one entry point the CLI, plan files and a control plane calling Python all use.
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from pydantic import SecretStr

from plans.build import SOURCE_KINDS, BuildPlan, BuildResult, SourceInfo
from runner import __version__
from runner.build.gitops import (
    GitTarget,
    is_git_target,
    parse_git_target,
    push_manifests,
    refuse_plain_secrets,
)
from runner.build.inventory import default_inventory, inventory_from
from runner.build.package import ArtifactMeta, Package, package
from runner.build.push import check_destinations, load_clients, push
from runner.build.render import Rendered, render_inline, render_kustomize
from runner.build.reproducible import changed_objects
from runner.build.source import SourceFacts, detecting, redact_url
from runner.common.artifact import read_content
from runner.common.digest import sha256_digest
from runner.common.errors import InputError, OperationFailed
from runner.common.objects import (
    canonical_order,
    canonical_stream,
    check_objects,
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
    return RegistryOptions.of(plan.plain_http, plan.ca_file)


def render(plan: BuildPlan, base: Path) -> Rendered:
    source = plan.source
    if source.kustomize is not None:
        return render_kustomize(source.kustomize, base)
    if source.inline is not None:
        return render_inline(source.inline, base)
    # The generators (and jsonschema, for compose) load only when a build uses them.
    if source.app is not None:
        from runner.build.app import render_app

        return render_app(source.app, base)
    if source.compose is not None:
        from runner.build.compose import render_compose

        return render_compose(source.compose, base)
    raise AssertionError("artifact sources are copied, not rendered")


def _source_kind(plan: BuildPlan) -> str:
    return next(kind for kind in SOURCE_KINDS if getattr(plan.source, kind) is not None)


def _warn(progress: Progress, message: str) -> None:
    # A Progress shows warnings even when quiet; a plain callable gets the word in front.
    log = getattr(progress, "log", None)
    if callable(log):
        log("warning", message, event="warning")
    else:
        progress(f"warning: {message}")


def canonical_yaml(text: str, source: str) -> tuple[str, list[str]]:
    """Rendered YAML → (canonical stream, object ids): validated, deduplicated, normalised
    and ordered."""
    with _collector_paused():
        located = [
            (obj, f"{source} (object {i})")
            for i, obj in enumerate(parse_stream(text, source), start=1)
        ]
        objects = canonical_order(check_objects(located))
        return canonical_stream(objects), [str(object_id(o)) for o in objects]


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cycle collector runs every 700 allocations and now and then walks everything
    the process holds (pydantic, the registry client). Canonicalising 1,000 objects allocates
    some 100,000 dicts, lists and YAML nodes in trees, freed by reference counting alone: the
    collector's passes find nothing there and cost 35 ms of the 150."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


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
    # A git: destination holds manifests, not an OCI artifact: there is nothing there to sign.
    pushed = [ref for ref in result.refs if not is_git_target(ref)]
    for ref in pushed:
        sign(
            ref,
            token=token,
            trust_config_path=trust,
            options=registry_options(plan),
            progress=progress,
        )
        progress(f"signed {ref}")
    return result.model_copy(update={"signed": pushed})


@dataclass(frozen=True)
class _Packed:
    rendered: Rendered
    stream: str
    ids: list[str]
    facts: SourceFacts
    package: Package


def _render_and_package(plan: BuildPlan, base: Path, inventory: str) -> _Packed:
    rendered = render(plan, base)
    # git answers (15-40 ms in a repository) while the objects are made canonical; its facts
    # are read once they are, so errors come in the order they always did.
    with detecting(rendered.where, plan.metadata) as facts_of_source:
        stream, ids = canonical_yaml(rendered.yaml, "rendered output")
        if not ids:
            raise InputError(
                "the source rendered no objects",
                hint="an empty artifact would prune "
                "everything it installed before; add manifests to the source",
            )
        facts = facts_of_source()
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
    return _Packed(rendered, stream, ids, facts, package(stream, ids, meta))


def _default_inventory(destinations: list[ArtifactRef], targets: list[GitTarget]) -> str:
    if destinations:
        return default_inventory(destinations[0])
    target = targets[0]
    stem = PurePosixPath(target.dir).name or PurePosixPath(target.repo.rstrip("/")).name
    return inventory_from(stem.removesuffix(".git"), str(target))


def _build(plan: BuildPlan, *, base: Path | None, progress: Progress) -> BuildResult:
    base = base or Path.cwd()
    destinations = [parse_ref(r) for r in plan.to if not is_git_target(r)]
    targets = [parse_git_target(r) for r in plan.to if is_git_target(r)]
    check_destinations(destinations)
    options = registry_options(plan)
    if plan.source.artifact is not None:
        if plan.inventory is not None:
            raise InputError(
                "an inventory name cannot be recorded in a copied artifact: it is copied byte "
                "for byte, config and all",
                hint="name the inventory when installing it (lading install --inventory NAME)",
            )
        if targets or plan.check_reproducible:
            raise InputError(
                "a copied artifact goes to OCI destinations only, unchanged",
                hint="build from its manifests (--inline, --kustomize) for a git: destination "
                "or --check-reproducible",
            )
        return copy_artifact(parse_ref(plan.source.artifact.ref), destinations, options, progress)
    inventory = plan.inventory or _default_inventory(destinations, targets)
    load_clients(destinations)

    durations: dict[str, float] = {}
    t0 = time.monotonic()
    progress(f"rendering the {_source_kind(plan)} source")
    packed = _render_and_package(plan, base, inventory)
    durations["render"] = time.monotonic() - t0
    pkg, facts, rendered = packed.package, packed.facts, packed.rendered
    if rendered.untranslated:
        from runner.build.compose import describe

        for item in rendered.untranslated:
            _warn(progress, f"not translated: {describe(item)}")
    if facts.dirty:
        progress(
            f"warning: uncommitted changes under the source; revision {facts.revision} "
            "does not describe this build (recorded as dirty)"
        )
    progress(f"packaged {len(packed.ids)} objects as {pkg.digest}")
    reproducible = None
    if plan.check_reproducible:
        t1 = time.monotonic()
        progress("rendering again to check the digest repeats")
        again = _render_and_package(plan, base, inventory)
        durations["check_reproducible"] = time.monotonic() - t1
        if again.package.digest != pkg.digest:
            changed = changed_objects(packed.stream, again.stream)
            raise OperationFailed(
                f"two renders of the same input gave two digests ({pkg.digest[:19]}…, "
                f"{again.package.digest[:19]}…)"
                + (": these objects differ:\n  " + "\n  ".join(changed) if changed
                   else ": the objects are the same, the recorded inputs differ"),
                hint="find what varies between runs in those objects (random names, "
                "timestamps, secrets sealed at build time) and pin it in the source",
            )
        reproducible = True
    if targets:
        # Before anything is pushed anywhere: all destinations or none.
        refuse_plain_secrets(parse_stream(packed.stream, "rendered output"))

    t2 = time.monotonic()
    refs = push(
        destinations,
        pkg.manifest.descriptor,
        pkg.manifest.data,
        [(b.descriptor, b.data) for b in pkg.blobs],
        options,
        progress,
    ) if destinations else []
    commits = [
        push_manifests(target, packed.stream, pkg.digest, _trailers(plan, facts, rendered),
                       f"lading: {inventory} {plan.version or pkg.digest[:19]}", progress)
        for target in targets
    ]
    refs += [t.pinned(c.branch, c.commit) for t, c in zip(targets, commits, strict=True)]
    durations["push"] = time.monotonic() - t2
    return BuildResult(
        digest=pkg.digest,
        ref=refs[0],
        refs=refs,
        tags=[d.tag for d in destinations if d.tag],
        size=pkg.size,
        objects=len(packed.ids),
        source=SourceInfo(
            url=facts.url,
            revision=facts.revision,
            path=facts.path,
            created=facts.created,
            dirty=facts.dirty,
        ),
        version=plan.version,
        inventory=inventory,
        checksum=sha256_digest(packed.stream.encode()),
        untranslated=list(rendered.untranslated),
        git=commits,
        reproducible=reproducible,
        durations={k: round(v, 3) for k, v in durations.items()},
    )


def _trailers(plan: BuildPlan, facts: SourceFacts, rendered: Rendered) -> dict[str, str]:
    source = " ".join(p for p in (facts.url, f"({facts.path})" if facts.path else None) if p)
    return {
        "Lading-Source": source,
        "Lading-Revision": facts.revision or "",
        "Lading-Version": plan.version or "",
        "Lading-Input": str(rendered.inputs.get("type", "")),
        "Lading-Tool": f"lading/{__version__}",
    }


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
