"""`lading build` and `lading inspect`: flags → BuildPlan (or a reference) → one function →
result."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from plans.build import BuildPlan, BuildResult
from plans.common import read_document, validate_document
from plans.documents import read_stdin
from plans.inspect import InspectResult
from runner.build.confine import confine_plan
from runner.common.cliopts import fmt, given, output_options, progress_for, registry_flags
from runner.common.errors import InputError
from runner.common.output import emit
from runner.common.reference import parse_ref

# flag name → BuildPlan field (dotted). Source flags are handled apart: they replace the
# plan's whole source, because a plan holds exactly one.
_FLAG_FIELDS = {
    "to": "to",
    "version": "version",
    "inventory": "inventory",
    "source_url": "metadata.url",
    "revision": "metadata.revision",
    "source_path": "metadata.path",
    "plain_http": "plain_http",
    "ca_file": "ca_file",
    "sign": "sign",
    "trust_config": "sign_trust_config",
    "check_reproducible": "check_reproducible",
}
_SOURCE_FLAGS = ("inline", "kustomize", "artifact", "app", "compose")
_KUSTOMIZE_FLAGS = {"enable_helm": "enable_helm", "load_restrictor": "load_restrictor"}
_COMPOSE_FLAGS = {"service": "services", "env_file": "env_files", "strict": "strict"}


def _annotations(values: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for value in values:
        key, sep, text = value.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{value!r} is not KEY=VALUE", param_hint="--annotation")
        out[key] = text
    return out


def plan_from_flags(ctx: click.Context, plan_file: str | None) -> tuple[BuildPlan, Path]:
    """The BuildPlan the command line describes, and the directory its paths are relative to.
    Flags given on the command line override the plan file's fields. A plan file's paths are
    confined to its workspace; the flags are the person's own and are not."""
    document: dict[str, Any] = {}
    base = Path.cwd()
    what = "build flags"
    if plan_file:
        stdin = plan_file == "-"
        raw = read_document(None if stdin else Path(plan_file), read_stdin() if stdin else None)
        if not isinstance(raw, dict):
            raise InputError(f"build plan {plan_file} must be a mapping")
        base = Path.cwd() if stdin else Path(plan_file).absolute().parent
        document = dict(raw)
        what = f"build plan {plan_file}"
    elif given(ctx, "workspace"):
        raise click.UsageError("--workspace confines a plan file's paths: give it with -f PLAN")

    params = ctx.params

    def typed(path: str) -> str:
        # Paths typed on the command line are relative to the working directory, even when a
        # plan file (whose own paths are relative to its directory) is given too.
        return str(Path(path).absolute()) if plan_file else path

    sources = [name for name in _SOURCE_FLAGS if params.get(name)]
    if len(sources) > 1:
        raise click.UsageError(
            "give one source: " + " or ".join(f"--{s}" for s in sources) + ", not several"
        )
    if sources:
        if params["inline"]:
            document["source"] = {"inline": {"files": [typed(f) for f in params["inline"]]}}
        elif params["kustomize"]:
            document["source"] = {"kustomize": {"path": typed(params["kustomize"])}}
        elif params["app"]:
            document["source"] = {"app": {"file": typed(params["app"])}}
        elif params["compose"]:
            document["source"] = {"compose": {"file": typed(params["compose"])}}
        else:
            document["source"] = {"artifact": {"ref": params["artifact"]}}
    elif not plan_file:
        raise click.UsageError(
            "give a source: -f PLAN, --inline FILE, --kustomize DIR, --app FILE, "
            "--compose FILE or --artifact REF"
        )

    compose_flags = {f: params[f] for f in _COMPOSE_FLAGS if given(ctx, f)}
    if compose_flags:
        source = document.get("source")
        compose = source.get("compose") if isinstance(source, dict) else None
        if not isinstance(compose, dict):
            flags = ", ".join("--" + f.replace("_", "-") for f in compose_flags)
            raise click.UsageError(f"{flags} apply only to a compose source (--compose FILE)")
        for flag, value in compose_flags.items():
            if flag == "env_file":
                value = [typed(v) for v in value]
            compose[_COMPOSE_FLAGS[flag]] = list(value) if isinstance(value, tuple) else value

    kustomize_flags = {f: params[f] for f in _KUSTOMIZE_FLAGS if given(ctx, f)}
    if kustomize_flags:
        source = document.get("source")
        kustomize = source.get("kustomize") if isinstance(source, dict) else None
        if not isinstance(kustomize, dict):
            flags = ", ".join("--" + f.replace("_", "-") for f in kustomize_flags)
            raise click.UsageError(f"{flags} apply only to a kustomize source (--kustomize DIR)")
        for flag, value in kustomize_flags.items():
            kustomize[_KUSTOMIZE_FLAGS[flag]] = value

    for flag, dotted in _FLAG_FIELDS.items():
        if given(ctx, flag):
            value = params[flag]
            document = _set(document, dotted, list(value) if isinstance(value, tuple) else value)
    if params["annotation"]:
        existing = document.get("annotations")
        merged = dict(existing) if isinstance(existing, dict) else {}
        merged.update(_annotations(params["annotation"]))
        document["annotations"] = merged
    if "to" not in document:
        raise click.UsageError("give a destination: --to REF (repeat it for more tags)")
    plan = validate_document(BuildPlan, document, what)
    if not plan_file:
        return plan, base
    from_flags = {field for flag, field in _FLAG_FIELDS.items() if given(ctx, flag)}
    workspace = Path(params["workspace"]) if params["workspace"] else base
    confined = confine_plan(
        plan,
        workspace,
        base=base,
        # Typed by the person running lading, so theirs to allow; a plan alone cannot.
        allow_load_restrictor_none=given(ctx, "load_restrictor")
        and params["load_restrictor"] == "none",
        typed=from_flags | ({"source"} if sources else set()),
    )
    return confined, base


def _set(document: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    node = document
    *parents, leaf = dotted.split(".")
    for key in parents:
        child = node.get(key)
        if not isinstance(child, dict):
            child = node[key] = {}
        node = child
    node[leaf] = value
    return document


def render_build(result: BuildResult) -> str:
    source = result.source
    where = " ".join(
        part
        for part in (
            source.url,
            f"{'@' if source.url else 'revision'} {source.revision[:12]}"
            if source.revision
            else None,
            f"({source.path})" if source.path else None,
        )
        if part
    )
    lines = [
        ("copied " if result.copied else "built ") + result.digest,
        f"  ref:     {result.ref}",
    ]
    lines += [f"           {ref}" for ref in result.refs[1:]]
    lines += [
        f"  tags:    {', '.join(result.tags) or '-'}",
        f"  size:    {result.size} bytes",
        f"  objects: {result.objects}",
        f"  version: {result.version or '-'}",
        f"  inventory: {result.inventory or '-'}",
        f"  source:  {where or '-'}",
        f"  created: {source.created or '-'}",
    ]
    if result.reproducible:
        lines.append("  reproducible: yes (two renders, one digest)")
    for commit in result.git:
        state = "committed" if commit.changed else "already there"
        lines.append(f"  git:     {commit.repo}#{commit.branch}:{commit.dir or '.'} "
                     f"{commit.commit[:12]} ({state})")
    if result.untranslated:
        from runner.build.compose import describe

        lines.append(f"  not translated ({len(result.untranslated)}):")
        lines += [f"    {describe(item)}" for item in result.untranslated]
    return "\n".join(lines)


@click.command("build")
@click.option(
    "-f",
    "--plan",
    "plan_file",
    metavar="PLAN",
    help="BuildPlan file (YAML/JSON), or - for stdin; its paths are relative to it.",
)
@click.option(
    "--workspace",
    type=click.Path(file_okay=False, exists=True),
    help="Directory the plan file's paths must stay inside "
    "[default: the plan file's directory; the current one for stdin].",
)
@click.option("--inline", multiple=True, metavar="FILE", help="Manifest file to pack (repeatable).")
@click.option("--kustomize", metavar="DIR", help="Kustomize directory (base or overlay).")
@click.option(
    "--artifact",
    metavar="REF",
    help="Existing artifact to copy unchanged (bring your own artifact).",
)
@click.option("--app", metavar="FILE", help="App spec to generate objects from (kind: App).")
@click.option("--compose", metavar="FILE", help="Compose file to translate (compose.yaml).")
@click.option(
    "--service",
    multiple=True,
    metavar="NAME",
    help="Compose service to build (repeatable) [default: all without a profile].",
)
@click.option(
    "--env-file",
    multiple=True,
    metavar="FILE",
    help="Env file for compose interpolation (repeatable) [default: .env beside the file].",
)
@click.option(
    "--strict", is_flag=True, help="Refuse compose features that have no translation."
)
@click.option(
    "--to",
    multiple=True,
    metavar="REF",
    help="Destination: registry/repo:tag, oci-layout:DIR[:tag], FILE.tar or "
    "git:REPO[#BRANCH][:DIR] (repeatable, one per tag).",
)
@click.option(
    "--check-reproducible",
    is_flag=True,
    help="Render twice; fail naming the objects when the digests differ.",
)
@click.option("--version", help="Artifact version, e.g. 1.4.0.")
@click.option(
    "--inventory",
    metavar="NAME",
    help="Inventory name to record in the artifact, the install's default "
    "[default: the first --to's last path component].",
)
@click.option(
    "--source", "source_url", metavar="URL", help="Source URL (default: the git remote `origin`)."
)
@click.option("--revision", metavar="REV", help="Source revision (default: git HEAD).")
@click.option(
    "--source-path",
    metavar="PATH",
    help="Path inside the source repository (default: detected from git).",
)
@click.option(
    "--annotation",
    multiple=True,
    metavar="KEY=VALUE",
    help="Extra manifest annotation (repeatable).",
)
@click.option("--enable-helm", is_flag=True, help="Inflate kustomize helmCharts (runs helm).")
@click.option(
    "--load-restrictor",
    type=click.Choice(["rootOnly", "none"]),
    default="rootOnly",
    show_default=True,
    help="kustomize load restrictor (a plan's `none` needs this flag too).",
)
@click.option(
    "--sign",
    is_flag=True,
    help="Sign each pushed reference keylessly with Sigstore "
    "(identity from SIGSTORE_ID_TOKEN or the CI system's OIDC credential).",
)
@click.option(
    "--trust-config",
    type=click.Path(exists=True, dir_okay=False),
    help="Client trust config of a private Sigstore instance (with --sign).",
)
@registry_flags
@output_options
@click.pass_context
def build_cmd(
    ctx: click.Context, /, plan_file: str | None, output: str, quiet: bool, verbose: bool, **_: Any
) -> None:
    """Build a reproducible artifact from manifests and push it.

    \b
    Examples:
      lading build --kustomize examples/overlays/prod --to localhost:5000/shop/app:1.0.0 \\
          --to localhost:5000/shop/app:latest --version 1.0.0
      lading build --inline ns.yaml --inline app.yaml --to oci-layout:./carry:v1
      lading build --artifact ghcr.io/org/app@sha256:… --to localhost:5000/mirror/app:v1
      lading build -f plans/examples/build.yaml -o json
      lading build --app examples/app/shop.yaml --to localhost:5000/shop/web:1.0.0
      lading build --compose compose.yaml --service web --env-file prod.env --strict \\
          --to localhost:5000/shop/stack:1.0.0
      lading build --app app.yaml --to git:../gitops#main:clusters/prod/web
      lading build --kustomize deploy --to oci-layout:./out --check-reproducible
      SIGSTORE_ID_TOKEN=… lading build --kustomize deploy --to ghcr.io/org/app:1.0.0 --sign
    """
    from runner.build.build import build

    plan, base = plan_from_flags(ctx, plan_file)
    result = build(plan, base=base, progress=progress_for(quiet, verbose))
    emit(result, fmt(output), render_build)


def render_inspect(result: InspectResult) -> str:
    config = result.config
    source = config.get("source") or {}
    inputs = config.get("inputs") or {}
    lines = [
        f"{result.ref}",
        f"  digest:        {result.digest}",
        f"  artifact type: {result.artifact_type or '-'}",
        f"  format:        {result.format}",
        f"  size:          {result.size} bytes",
    ]
    if config:
        lines += [
            f"  version:       {config.get('version') or '-'}",
            f"  created:       {config.get('created') or '-'}",
            "  source:        "
            + (
                " ".join(
                    str(v)
                    for v in (source.get("url"), source.get("revision"), source.get("path"))
                    if v
                )
                or "-"
            ),
            f"  inputs:        {inputs.get('type', '-')}"
            + "".join(f", {k} {v}" for k, v in sorted((inputs.get("tools") or {}).items())),
            f"  checksum:      {config.get('checksum') or '-'}",
        ]
    if result.annotations:
        lines.append("  annotations:")
        lines += [f"    {k}: {v}" for k, v in sorted(result.annotations.items())]
    lines.append(f"  objects ({len(result.objects)}):")
    lines += [f"    {oid}" for oid in result.objects]
    if result.referrers is None:
        lines.append(f"  referrers:     unknown ({result.referrers_note})")
    else:
        lines.append(
            f"  referrers ({len(result.referrers)}):"
            if result.referrers
            else "  referrers:     none"
        )
        lines += [f"    {r.artifact_type or r.media_type} {r.digest}" for r in result.referrers]
    return "\n".join(lines)


@click.command("inspect")
@click.argument("ref")
@registry_flags
@output_options
def inspect_cmd(
    ref: str, plain_http: bool, ca_file: str | None, output: str, quiet: bool, verbose: bool
) -> None:
    """Show an artifact's metadata, objects and referrers (signatures), verified by digest.

    \b
    Examples:
      lading inspect localhost:5000/shop/app:1.0.0
      lading inspect oci-layout:./carry@sha256:… -o json
    """
    from runner.build.inspect import inspect
    from runner.common.store import RegistryOptions

    options = RegistryOptions.of(plain_http, ca_file)
    result = inspect(parse_ref(ref), options, progress_for(quiet, verbose))
    emit(result, fmt(output), render_inspect)


COMMANDS = (build_cmd, inspect_cmd)
