"""`lading run -f PLAN`: the container entrypoint a control plane dispatches.

The plan's `apiVersion` and `kind` pick the runner; the result document goes to stdout (or
`--result FILE`) and the exit code follows the design: 0 success, 1 the job ran and failed,
2 bad plan, 3 registry or cluster unreachable. Relative paths in a plan are resolved against
the plan file's directory (`--base` for a plan on stdin), so a plan means the same thing
whatever directory the runner starts in; a BuildPlan's paths must stay inside its workspace
(`--workspace`, by default that same directory).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import click
import yaml
from pydantic import BaseModel, ValidationError

from plans.build import BuildPlan
from plans.common import SUPPORTED_API_VERSIONS, format_validation_error, read_document
from plans.documents import read_stdin
from plans.install import InstallPlan
from runner import __version__
from runner.common.cliopts import log_format_option, progress_for
from runner.common.errors import InputError
from runner.common.output import OutputFormat, Progress, emit, finish_live
from runner.common.reference import LAYOUT_PREFIX, parse_ref

Plan = BuildPlan | InstallPlan
KINDS: dict[str, type[BuildPlan] | type[InstallPlan]] = {
    "BuildPlan": BuildPlan,
    "InstallPlan": InstallPlan,
}


def supported() -> str:
    return ", ".join(f"{api} {kind}" for api in SUPPORTED_API_VERSIONS for kind in KINDS)


def load_plan(document: Any, where: str) -> Plan:
    """A plan document → its model, refusing what this lading does not understand with a
    message that says what it does understand."""
    runs = f"lading {__version__} runs {supported()}"
    if not isinstance(document, dict):
        raise InputError(
            f"plan {where} is not a mapping", hint=f"a plan has apiVersion, kind and fields; {runs}"
        )
    api, kind = document.get("apiVersion"), document.get("kind")
    if api is None or kind is None:
        missing = " and ".join(n for n, v in (("apiVersion", api), ("kind", kind)) if v is None)
        raise InputError(f"plan {where} has no {missing}", hint=runs)
    if api not in SUPPORTED_API_VERSIONS:
        raise InputError(
            f"plan {where} has apiVersion {api!r}, which lading {__version__} does not support",
            hint=f"{runs}; a newer apiVersion needs a newer lading",
        )
    if kind not in KINDS:
        raise InputError(f"plan {where} has kind {kind!r}, which lading cannot run", hint=runs)
    model = KINDS[kind]
    try:
        return model.model_validate(document)
    except ValidationError as e:
        unknown = any(item["type"] == "extra_forbidden" for item in e.errors())
        hint = (
            f"{api} {kind} has no such field: a typo, or a field from a newer plan version "
            f"than lading {__version__} knows; `lading schema {_schema_name(kind)}` prints "
            "what it accepts"
            if unknown
            else f"`lading schema {_schema_name(kind)}` prints what {kind} accepts"
        )
        raise InputError(format_validation_error(e, f"{kind} {where}"), hint=hint) from None


def _schema_name(kind: str) -> str:
    return kind.removesuffix("Plan").lower()


def _rebased(path: str | None, base: Path) -> str | None:
    if path is None or Path(path).is_absolute():
        return path
    return str(base / path)


def _rebased_ref(text: str, base: Path) -> str:
    """oci-layout:DIR and FILE.tar references name files; registry references do not."""
    ref = parse_ref(text)
    if ref.kind == "registry" or Path(ref.location).is_absolute():
        return text
    moved = str(replace(ref, location=str(base / ref.location)))
    return moved if moved.startswith(LAYOUT_PREFIX) else LAYOUT_PREFIX + moved


def rebase(plan: InstallPlan, base: Path) -> InstallPlan:
    """The plan with its relative file paths resolved against `base`. (A BuildPlan's paths are
    confined to a workspace as they are resolved: `confine_plan`.)"""
    artifact = plan.artifact.model_copy(update={
        "ref": _rebased_ref(plan.artifact.ref, base),
        "ca_file": _rebased(plan.artifact.ca_file, base),
    })
    target = plan.target.model_copy(update={
        "kubeconfig": _rebased(plan.target.kubeconfig, base),
        "ca_file": _rebased(plan.target.ca_file, base),
        "token_file": _rebased(plan.target.token_file, base),
    })
    return plan.model_copy(update={"artifact": artifact, "target": target})


@dataclass(frozen=True)
class Outcome:
    result: BaseModel
    exit_code: int


def run_plan(
    plan: Plan,
    *,
    base: Path,
    progress: Progress,
    workspace: Path | None = None,
    allow_load_restrictor_none: bool = False,
) -> Outcome:
    """Run one plan: the function behind `lading run`, for callers that have a plan value.
    Relative paths resolve against `base`; a BuildPlan's must stay inside `workspace` (by
    default `base`), and its kustomize load restrictor stays on unless the caller allows
    `none`."""
    if isinstance(plan, BuildPlan):
        from runner.build.build import build
        from runner.build.confine import confine_plan

        confined = confine_plan(
            plan,
            workspace or base,
            base=base,
            allow_load_restrictor_none=allow_load_restrictor_none,
        )
        progress(f"build: {len(plan.to)} destination(s)", event="start", kind="BuildPlan")
        return Outcome(build(confined, base=base, progress=progress), 0)

    from runner.install.install import InstallFailed, install

    plan = rebase(plan, base)
    progress(f"install: {plan.artifact.ref}", event="start", kind="InstallPlan")
    try:
        return Outcome(install(plan, progress=progress), 0)
    except InstallFailed as e:
        return Outcome(e.result, e.exit_code)


def _summary(result: Any) -> str:
    document = result.model_dump(mode="json", exclude_none=True)
    if document.get("kind") == "BuildResult":
        return f"built {document['objects']} objects: {document['ref']}"
    summary = ", ".join(f"{n} {a}" for a, n in document.get("summary", {}).items() if n)
    line = f"{document.get('operation', 'install')} {document['status']}: {document.get('ref')}"
    line += f" ({summary})" if summary else ""
    return line + (f"\nerror: {document['error']}" if document.get("error") else "")


def write_result(result: BaseModel, fmt: OutputFormat, path: Path) -> None:
    document = result.model_dump(mode="json", by_alias=True, exclude_none=True)
    text = yaml.safe_dump(document, sort_keys=False) if fmt == "yaml" else (
        json.dumps(document, indent=2) + "\n"
    )
    # Write then rename: a control plane polling for the file never reads half of it.
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    partial.replace(path)


@click.command("run")
@click.option("-f", "--plan", "plan_file", required=True, metavar="PLAN",
              help="BuildPlan or InstallPlan file (YAML or JSON), or - for stdin.")
@click.option("--result", "result_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the result document here instead of stdout.")
@click.option("--base", type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="Resolve relative paths in the plan against this directory "
                   "[default: the plan file's directory; the current one for stdin].")
@click.option("--workspace", type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="Directory a BuildPlan's paths must stay inside [default: the --base "
                   "directory].")
@click.option("--allow-load-restrictor-none", is_flag=True,
              help="Let a BuildPlan turn kustomize's load restrictor off "
                   "(load_restrictor: none); a plan alone never can.")
@click.option("-o", "--output", type=click.Choice(["json", "yaml", "text"]), default="json",
              show_default=True, help="Result format (text: a one-line summary).")
@click.option("-v", "--verbose", is_flag=True, help="More progress detail on stderr.")
@click.option("-q", "--quiet", is_flag=True, help="No progress on stderr.")
@log_format_option
@click.pass_context
def run_cmd(ctx: click.Context, plan_file: str, result_file: Path | None, base: Path | None,
            workspace: Path | None, allow_load_restrictor_none: bool, output: OutputFormat,
            verbose: bool, quiet: bool) -> None:
    """Run a job plan: dispatch on its kind, print the result document.

    The entrypoint of the runner image. Exit 0 success, 1 the job failed (the result says
    why), 2 bad plan, 3 registry or cluster unreachable.

    \b
    Examples:
      lading run -f plans/examples/build.yaml
      lading run -f plans/examples/install.yaml --result result.json --log-format json
      curl -s https://control.example/jobs/42/plan | lading run -f - --base /work
      lading run -f deploy/plans/build.yaml --workspace .
    """
    if plan_file == "-":
        document, where, plan_dir = read_document(None, read_stdin()), "<stdin>", Path.cwd()
    else:
        path = Path(plan_file)
        document, where, plan_dir = read_document(path), plan_file, path.resolve().parent
    plan = load_plan(document, where)
    progress = progress_for(quiet, verbose)
    outcome = run_plan(
        plan,
        base=(base or plan_dir).resolve(),
        progress=progress,
        workspace=workspace,
        allow_load_restrictor_none=allow_load_restrictor_none,
    )
    status = getattr(outcome.result, "status", "succeeded")
    error = getattr(outcome.result, "error", None)
    # The result document says why too, but whoever reads the runner's log (kubectl logs of a
    # Job, a CI step) reads stderr.
    progress(f"finished: {status}" + (f"\n{error}" if error and outcome.exit_code else ""),
             event="finished", exit_code=outcome.exit_code)
    finish_live()
    if result_file is not None:
        write_result(outcome.result, "yaml" if output == "yaml" else "json", result_file)
    else:
        emit(outcome.result, output, _summary)
    ctx.exit(outcome.exit_code)
