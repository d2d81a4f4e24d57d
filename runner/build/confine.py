"""A BuildPlan from a file or a control plane, held to its workspace.

Every path the plan names is resolved (against `base`, the plan file's directory) and must land
inside the workspace; kustomize's load restrictor stays on unless the person running lading
turned it off on the command line. Flags a person types are their own files and are not
confined; `typed` names the fields they set.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import replace
from pathlib import Path

from plans.build import BuildPlan
from runner.build.gitops import is_git_target, parse_git_target
from runner.common.errors import InputError
from runner.common.reference import parse_ref
from runner.common.workspace import confine


def confine_plan(
    plan: BuildPlan,
    workspace: Path,
    *,
    base: Path,
    allow_load_restrictor_none: bool = False,
    typed: Collection[str] = (),
) -> BuildPlan:
    """The plan with every file path absolute and inside `workspace`, or an InputError naming
    the field that leads out."""

    def inside(path: str, field: str) -> str:
        return str(confine(path, workspace, field, base=base))

    update: dict[str, object] = {}
    source = plan.source
    if "source" not in typed:
        if source.inline is not None and source.inline.files:
            files = [
                inside(f, f"source.inline.files[{i}]") for i, f in enumerate(source.inline.files)
            ]
            source = source.model_copy(
                update={"inline": source.inline.model_copy(update={"files": files})}
            )
        if source.kustomize is not None:
            path = inside(source.kustomize.path, "source.kustomize.path")
            source = source.model_copy(
                update={"kustomize": source.kustomize.model_copy(update={"path": path})}
            )
        if source.app is not None and source.app.file is not None:
            path = inside(source.app.file, "source.app.file")
            source = source.model_copy(
                update={"app": source.app.model_copy(update={"file": path})}
            )
        if source.compose is not None:
            compose = source.compose
            env_files = [
                inside(f, f"source.compose.env_files[{i}]") for i, f in enumerate(compose.env_files)
            ]
            compose = compose.model_copy(
                update={"file": inside(compose.file, "source.compose.file"),
                        "env_files": env_files}
            )
            source = source.model_copy(update={"compose": compose})
        update["source"] = source
    restrictor = source.kustomize.load_restrictor if source.kustomize else None
    if restrictor == "none" and not allow_load_restrictor_none:
        raise InputError(
            "source.kustomize.load_restrictor: none lets kustomize read files anywhere on the "
            "runner, and a plan alone cannot turn the restriction off",
            hint="the person running lading allows it with --load-restrictor none "
            "(lading build) or --allow-load-restrictor-none (lading run)",
        )
    if "to" not in typed:
        update["to"] = [_confined_ref(r, i, inside) for i, r in enumerate(plan.to)]
    for field in ("ca_file", "sign_trust_config"):
        value = getattr(plan, field)
        if field not in typed and value is not None:
            update[field] = inside(value, field)
    return plan.model_copy(update=update)


def _confined_ref(text: str, index: int, inside: Callable[[str, str], str]) -> str:
    """oci-layout:DIR and FILE.tar destinations name files, and so does a git: destination
    that is a local repository; registry references and repository URLs do not."""
    if is_git_target(text):
        target = parse_git_target(text)
        if "://" in target.repo or ":" in target.repo:
            return text
        repo = inside(target.repo, f"to[{index}]")
        return f"git:{repo}#{target.branch or ''}:{target.dir}"
    ref = parse_ref(text)
    if ref.kind == "registry":
        return text
    return str(replace(ref, location=inside(ref.location, f"to[{index}]")))
