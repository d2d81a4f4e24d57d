"""Rendering sources to YAML with the real `kustomize` binary.

Inline manifests become an implicit kustomization (their files as resources), and plan-level
patches and image overrides become a wrapper kustomization around the user's directory, so
every source flows through one path: `kustomize build`.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from plans.build import InlineSource, KustomizeSource, Untranslated
from plans.documents import read_text
from runner.build.child import run_tool
from runner.build.tools import kustomization_dir, kustomize_command, tool_path, tool_version
from runner.common.errors import InputError
from runner.common.objects import Obj, check_objects, parse_stream

KUSTOMIZE_TIMEOUT = 300


@dataclass(frozen=True)
class Rendered:
    yaml: str
    inputs: dict[str, Any]  # recorded in the artifact config: source type, tool versions
    where: Path | None  # the directory the source lives in (for git metadata)
    # What a generator could not translate (compose), reported with the result.
    untranslated: tuple[Untranslated, ...] = ()


def kustomize_build(
    directory: Path, *, enable_helm: bool, load_restrictor: str, display: str
) -> str:
    cmd = kustomize_command(directory, enable_helm=enable_helm, load_restrictor=load_restrictor)
    # Bounded in memory, CPU, time and output; kustomize names temporary wrapper
    # directories, so messages show the user's path instead.
    return run_tool(
        cmd,
        what=f"kustomize build {display}",
        timeout=KUSTOMIZE_TIMEOUT,
        scrub={str(directory): display},
    )


def render_kustomize(source: KustomizeSource, base: Path) -> Rendered:
    directory = kustomization_dir(base, source.path)
    kustomize = tool_path("kustomize")
    inputs: dict[str, Any] = {
        "type": "kustomize",
        "tools": {"kustomize": tool_version(kustomize)},
        "enable_helm": source.enable_helm,
        "load_restrictor": source.load_restrictor,
    }
    if source.enable_helm:
        inputs["tools"]["helm"] = tool_version(tool_path("helm"))
    if not source.patches and not source.images:
        text = kustomize_build(
            directory,
            enable_helm=source.enable_helm,
            load_restrictor=source.load_restrictor,
            display=source.path,
        )
        return Rendered(text, inputs, directory)
    inputs["patches"] = len(source.patches)
    inputs["images"] = [i.model_dump(exclude_none=True) for i in source.images]
    with tempfile.TemporaryDirectory(prefix="lading-kustomize-") as tmp:
        # kustomize refuses absolute resource paths ("new root cannot be absolute").
        wrapper: dict[str, Any] = {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": [os.path.relpath(directory, tmp)],
        }
        if source.patches:
            wrapper["patches"] = [p.model_dump(exclude_none=True) for p in source.patches]
        if source.images:
            wrapper["images"] = inputs["images"]
        Path(tmp, "kustomization.yaml").write_text(yaml.safe_dump(wrapper, sort_keys=True))
        text = kustomize_build(
            Path(tmp),
            enable_helm=source.enable_helm,
            load_restrictor=source.load_restrictor,
            display=source.path,
        )
    return Rendered(text, inputs, directory)


def render_inline(source: InlineSource, base: Path) -> Rendered:
    """Write the inline manifests into a scratch kustomization and build it."""
    documents: list[tuple[str, str]] = []
    for name in source.files:
        path = (base / name).resolve()
        if not path.exists():
            raise InputError(f"inline manifest file {name!r} does not exist")
        # Bounded: naming /dev/zero or a 10 GB file stops at the input limit.
        documents.append((name, read_text(path, f"inline manifest file {name!r}")))
    if source.manifests:
        documents.append(("inline manifests", source.manifests))
    # Parse and check here first: our errors name the user's file, line and object (both places
    # of a duplicate); kustomize's name the scratch files below.
    located: list[tuple[Obj, str]] = []
    for name, text in documents:
        objects = parse_stream(text, name)
        located += [(obj, f"{name} (object {i})") for i, obj in enumerate(objects, start=1)]
    check_objects(located)
    kustomize = tool_path("kustomize")
    with tempfile.TemporaryDirectory(prefix="lading-inline-") as tmp:
        resources = []
        for i, (_, text) in enumerate(documents):
            file = f"resource-{i:04d}.yaml"
            Path(tmp, file).write_text(text)
            resources.append(file)
        kustomization = {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": resources,
        }
        Path(tmp, "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
        text = kustomize_build(
            Path(tmp), enable_helm=False, load_restrictor="rootOnly", display="inline manifests"
        )
    where = (base / source.files[0]).resolve().parent if source.files else None
    inputs = {
        "type": "inline",
        "tools": {"kustomize": tool_version(kustomize)},
        "files": len(source.files),
        "text": bool(source.manifests),
    }
    return Rendered(text, inputs, where)
