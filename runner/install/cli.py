"""`lading install | diff | uninstall | rollback`: flags → InstallPlan → one function → result."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from plans.common import read_document, validate_document
from plans.documents import read_stdin
from plans.install import DiffResult, InstallPlan, InstallResult
from runner.common.cliopts import (
    cluster_options,
    current_log_format,
    fmt,
    given,
    output_options,
    progress_for,
    registry_flags,
    set_path,
)
from runner.common.errors import InputError
from runner.common.output import emit, report_error
from runner.supply.cli import apply_install_verify, install_verify_options

# flag name → InstallPlan field (dotted)
_FLAG_FIELDS = {
    "namespace": "namespace",
    "create_namespace": "create_namespace",
    "field_manager": "field_manager",
    "inventory": "inventory",
    "prune": "prune",
    "wait": "wait",
    "timeout": "timeout",
    "force_conflicts": "force_conflicts",
    "take_ownership": "take_ownership",
    "recreate_on_immutable": "recreate_on_immutable",
    "recreate": "recreate",
    "dry_run": "dry_run",
    "concurrency": "concurrency",
    "allow_empty": "allow_empty",
    "adopt": "adopt",
    "allow_namespace": "allow_namespaces",
    "allow_data_loss": "allow_data_loss",
    "kubeconfig": "target.kubeconfig",
    "context": "target.context",
    "plain_http": "artifact.plain_http",
    "ca_file": "artifact.ca_file",
}


# uninstall and rollback take their reference from the inventory; this one is never fetched.
_UNUSED_REF = "oci-layout:unused@sha256:" + "0" * 64


def build_plan(
    ctx: click.Context, plan_file: str | None, ref: str | None, *, needs_ref: bool = True
) -> InstallPlan:
    """The one way every install-side command (install, diff, rollback, uninstall) turns a
    plan file and flags into an InstallPlan, so they all enforce the same verify, ownership,
    namespace and prune policy. Flags given on the command line override the plan."""
    document: dict[str, Any] = {}
    if plan_file:
        raw = read_document(
            None if plan_file == "-" else Path(plan_file),
            read_stdin() if plan_file == "-" else None,
        )
        if not isinstance(raw, dict):
            raise InputError(f"plan {plan_file} must be a mapping")
        if plan_file != "-":
            # Paths in a plan file are relative to the plan (as with `lading run` and
            # `lading build -f`); paths given as flags stay relative to the working directory.
            from runner.run import rebase

            plan = validate_document(InstallPlan, raw, f"install plan {plan_file}")
            raw = rebase(plan, Path(plan_file).resolve().parent).model_dump(
                mode="json", exclude_unset=True
            )
            raw["target"] = {**raw.get("target", {}), **_secret_fields(plan)}
        document = raw
    elif ref:
        # A reference typed by a person may be a tag: resolve it once, then use the digest.
        document = {"artifact": {"ref": ref, "allow_tag": True}}
    elif needs_ref:
        raise click.UsageError("give an artifact reference or -f PLAN")
    if not needs_ref:
        document["artifact"] = {**document.get("artifact", {}), "ref": _UNUSED_REF}
    if plan_file and ref:
        raise click.UsageError("give either REF or -f PLAN, not both")
    for flag, dotted in _FLAG_FIELDS.items():
        if flag in ctx.params and given(ctx, flag):
            value = ctx.params[flag]
            set_path(document, dotted, list(value) if isinstance(value, tuple) else value)
    if "verify_signature" in ctx.params:
        apply_install_verify(ctx, document)
    return validate_document(InstallPlan, document, f"install plan {plan_file or ''}".strip())


def _secret_fields(plan: InstallPlan) -> dict[str, str]:
    """model_dump masks SecretStr; carry the token across the rebase round trip as is."""
    token = plan.target.token
    return {"token": token.get_secret_value()} if token else {}


def install_options(fn: Any) -> Any:
    options = [
        click.option(
            "-n",
            "--namespace",
            help="Namespace for namespaced objects without one; also holds the inventory.",
        ),
        click.option("--create-namespace", is_flag=True, help="Create the namespace if missing."),
        click.option("--field-manager", default="lading", show_default=True),
        click.option(
            "--inventory", help="Inventory name (default: the repository's last path component)."
        ),
        click.option(
            "--prune/--no-prune",
            default=True,
            show_default=True,
            help="Delete inventory members the artifact no longer holds.",
        ),
        click.option("--allow-empty", is_flag=True, help="Let an empty artifact prune all."),
        click.option(
            "--wait/--no-wait", default=True, show_default=True, help="Wait for readiness."
        ),
        click.option("--timeout", default="5m", show_default=True, help="Wait timeout."),
        click.option("--force-conflicts", is_flag=True, help="Take fields other managers own."),
        click.option(
            "--take-ownership",
            multiple=True,
            metavar="MANAGER",
            help="Take fields from this manager only (prefix, e.g. kubectl, helm).",
        ),
        click.option(
            "--recreate-on-immutable",
            is_flag=True,
            help="Recreate objects whose immutable fields change.",
        ),
        click.option(
            "--recreate",
            multiple=True,
            metavar="KIND/NAME",
            help="Recreate this object if an immutable field changes.",
        ),
        click.option("--dry-run", is_flag=True, help="Report what would change; write nothing."),
        click.option("--concurrency", type=int, default=128, show_default=True,
                     help="Requests in flight at most; writes keep 32 plus one per ms of "
                     "round trip in flight, fewer while the server throttles."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return policy_options(fn)


def _adopt_option(fn: Any) -> Any:
    return click.option(
        "--adopt",
        multiple=True,
        metavar="KIND/NAME|all",
        help="Take over this object from its owner (another inventory or ApplySet, a Helm "
        "release, a Flux Kustomization); refused otherwise.",
    )(fn)


def _allow_namespace_option(fn: Any) -> Any:
    return click.option(
        "--allow-namespace",
        multiple=True,
        metavar="NS",
        help="Let objects name this namespace besides -n (a pattern; * for any).",
    )(fn)


def _allow_data_loss_option(fn: Any) -> Any:
    return click.option(
        "--allow-data-loss",
        is_flag=True,
        help="Delete CRDs that still have custom resources and Namespaces holding objects "
        "this inventory did not install.",
    )(fn)


def policy_options(fn: Any) -> Any:
    """Ownership, namespace scope and prune safety: the same flags on every command that
    writes."""
    return _adopt_option(_allow_namespace_option(_allow_data_loss_option(fn)))


def _render_install(result: InstallResult) -> str:
    head = (
        f"{result.operation} {result.status}"
        + (" (dry run)" if result.dry_run else "")
        + f": {result.ref or '-'}\n  inventory {result.namespace}/{result.inventory}, "
        + ", ".join(f"{n} {a}" for a, n in result.summary.items() if n)
        + f" in {result.durations.get('total', 0):.1f}s"
    )
    lines = [head]
    for action in ("failed", "created", "configured", "deleted", "skipped", "unchanged"):
        group = [c for c in result.changes if c.action == action]
        if not group:
            continue
        lines.append(f"{action}:")
        for change in group[:200]:
            note = change.error or change.reason
            lines.append(f"  {change.id}" + (f"\n    {note}" if note else ""))
        if len(group) > 200:
            lines.append(f"  … and {len(group) - 200} more")
    for adoption in result.adopted:
        lines.append(f"adopted {adoption.id} from {adoption.owner}")
    if result.cluster_scoped:
        lines.append(f"cluster-scoped ({len(result.cluster_scoped)}):")
        lines.extend(f"  {oid}" for oid in result.cluster_scoped[:200])
    if result.error:
        lines.append(f"error: {result.error}")
    return "\n".join(lines)


def _emit_install(run: Any, output: str) -> None:
    from runner.install.install import InstallFailed

    try:
        result = run()
    except InstallFailed as e:
        emit(e.result, fmt(output), _render_install)
        if output != "text":  # stdout holds the document; a person still reads stderr
            report_error(e.result.error or "failed", current_log_format(), e.exit_code)
        sys.exit(e.exit_code)
    emit(result, fmt(output), _render_install)


@click.command("install")
@click.argument("ref", required=False)
@click.option("-f", "--plan", "plan_file", help="InstallPlan file (YAML/JSON), or - for stdin.")
@install_options
@install_verify_options
@cluster_options
@registry_flags
@output_options
@click.pass_context
def install_cmd(
    ctx: click.Context,
    /,
    ref: str | None,
    plan_file: str | None,
    output: str,
    quiet: bool,
    verbose: bool,
    **_: Any,
) -> None:
    """Install an artifact by digest with server-side apply.

    \b
    Examples:
      lading install localhost:5000/shop/app@sha256:… -n shop --create-namespace
      lading install -f plans/examples/install.yaml -o json
      lading install oci-layout:./carry@sha256:… --dry-run
    """
    from runner.install.install import install

    plan = build_plan(ctx, plan_file, ref)
    _emit_install(lambda: install(plan, progress=progress_for(quiet, verbose)), output)


def _render_diff(result: DiffResult) -> str:
    if result.in_sync:
        return f"in sync: {result.ref} ({len(result.objects)} objects)"
    lines = [f"drift: {result.ref}"]
    for obj in result.objects:
        if obj.state == "in-sync":
            continue
        lines.append(f"{obj.state}: {obj.id}")
        if obj.error:
            lines.append(f"  {obj.error}")
        if obj.diff:
            lines.append(obj.diff.rstrip("\n"))
        elif obj.fields:
            lines.extend(f"  {f.path}: want {f.want!r}, have {f.have!r}" for f in obj.fields)
    return "\n".join(lines)


@click.command("diff")
@click.argument("ref", required=False)
@click.option("-f", "--plan", "plan_file", help="InstallPlan file (YAML/JSON).")
@click.option("-n", "--namespace")
@click.option("--field-manager", default="lading", show_default=True)
@click.option("--inventory")
@cluster_options
@registry_flags
@output_options
@click.pass_context
def diff_cmd(
    ctx: click.Context,
    /,
    ref: str | None,
    plan_file: str | None,
    output: str,
    quiet: bool,
    verbose: bool,
    **_: Any,
) -> None:
    """Compare the live cluster with an artifact, or without REF with what the inventory
    installed last. Exit 0 in sync, 1 drift, 2+ error.

    \b
    Examples:
      lading diff localhost:5000/shop/app@sha256:… -n shop
      lading diff --inventory app -n shop
    """
    from runner.install.diff import diff

    from_inventory = ref is None and plan_file is None
    if from_inventory and not ctx.params.get("inventory"):
        raise click.UsageError("give an artifact reference, -f PLAN, or --inventory NAME")
    plan = build_plan(ctx, plan_file, ref, needs_ref=not from_inventory)
    result = diff(plan, progress_for(quiet, verbose), from_inventory=from_inventory)
    emit(result, fmt(output), _render_diff)
    ctx.exit(0 if result.in_sync else 1)


@click.command("uninstall")
@click.option("-f", "--plan", "plan_file", help="InstallPlan file whose inventory to remove.")
@click.option("--inventory", help="Inventory to remove.")
@click.option("-n", "--namespace")
@click.option("--dry-run", is_flag=True)
@_allow_data_loss_option
@cluster_options
@output_options
@click.pass_context
def uninstall_cmd(
    ctx: click.Context, /, plan_file: str | None, output: str, quiet: bool, verbose: bool,
    **_: Any,
) -> None:
    """Delete everything an inventory installed, then the inventory.

    Refuses (exit 2, nothing deleted) to delete a CRD that still has custom resources or a
    Namespace holding objects the inventory did not install, unless --allow-data-loss.

    \b
    Example:
      lading uninstall --inventory app -n shop
    """
    from runner.install.uninstall import uninstall

    plan = build_plan(ctx, plan_file, None, needs_ref=False)
    if not plan.inventory:
        raise click.UsageError("give --inventory NAME (or -f PLAN naming one)")
    _emit_install(lambda: uninstall(plan, progress=progress_for(quiet, verbose)), output)


@click.command("rollback")
@click.option("-f", "--plan", "plan_file", help="InstallPlan file (its verify policy applies).")
@click.option("--inventory", help="Inventory to roll back.")
@click.option("-n", "--namespace")
@click.option("--field-manager", default="lading", show_default=True)
@click.option("--wait/--no-wait", default=True, show_default=True)
@click.option("--timeout", default="5m", show_default=True)
@click.option("--force-conflicts", is_flag=True)
@click.option("--prune/--no-prune", default=True, show_default=True)
@click.option("--dry-run", is_flag=True)
@policy_options
@install_verify_options
@cluster_options
@registry_flags
@output_options
@click.pass_context
def rollback_cmd(
    ctx: click.Context, /, plan_file: str | None, output: str, quiet: bool, verbose: bool,
    **_: Any,
) -> None:
    """Reinstall the digest the inventory held before the current one, under the same
    verify, ownership and namespace policy as install.

    \b
    Example:
      lading rollback --inventory app -n shop
      lading rollback --inventory app -n shop --verify --certificate-identity … \\
        --certificate-oidc-issuer https://token.actions.githubusercontent.com
    """
    from runner.install.rollback import rollback

    plan = build_plan(ctx, plan_file, None, needs_ref=False)
    if not plan.inventory:
        raise click.UsageError("give --inventory NAME (or -f PLAN naming one)")
    _emit_install(lambda: rollback(plan, progress_for(quiet, verbose)), output)


@click.command("unlock")
@click.option("--inventory", required=True, help="Inventory whose lock to break.")
@click.option("-n", "--namespace")
@click.option("--force", is_flag=True, help="Delete the Lease even if lading did not create it.")
@cluster_options
@output_options
def unlock_cmd(
    inventory: str,
    namespace: str | None,
    force: bool,
    kubeconfig: str | None,
    context: str | None,
    output: str,
    **_: Any,
) -> None:
    """Break an inventory lock deliberately: delete its Lease, saying who held it.

    A crashed install needs none of this; its lock expires 30s after its last renewal.

    \b
    Example:
      lading unlock --inventory app -n shop
    """
    from plans.install import TargetSpec
    from runner.install.unlock import unlock

    result = unlock(TargetSpec(kubeconfig=kubeconfig, context=context), inventory, namespace,
                    force=force)
    emit(result.to_document(), fmt(output), lambda _: result.text())


COMMANDS = (install_cmd, diff_cmd, uninstall_cmd, rollback_cmd, unlock_cmd)
