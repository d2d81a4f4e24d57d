"""`lading dev`: start, describe and stop the local environment (see runner/dev/env.py)."""

from __future__ import annotations

from pathlib import Path

import click

from runner.common.errors import InputError
from runner.common.output import Progress
from runner.dev import env as dev_env
from runner.dev import tools

STATE_DIR_HELP = (
    "Where state, keys and logs live [default: $LADING_DEV_STATE or ~/.local/state/lading/dev]."
)


def _state_dir(value: Path | None) -> Path:
    return value if value is not None else dev_env.default_state_dir()


state_dir_option = click.option(
    "--state-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
    help=STATE_DIR_HELP,
)


@click.group()
def dev() -> None:
    """A local control plane and OCI registry for trying lading and for its tests.

    \b
    Example: start it, point your shell at it, stop it:
      eval "$(lading dev up --rollout)"
      lading dev env
      lading dev down
    """


@dev.command()
@click.option("--rollout", is_flag=True,
              help="Also run kube-controller-manager, kube-scheduler and a kwok fake node, so "
                   "Deployments, StatefulSets and Jobs progress.")
@click.option("--referrers", is_flag=True,
              help="Also run a registry with the OCI referrers API (refreg, standing in for zot).")
@click.option("--auth", is_flag=True,
              help="Protect the registry with basic auth; credentials go to a docker config.")
@click.option("--tls", is_flag=True, help="Serve the registry over TLS with a test CA.")
@click.option("--temporal", is_flag=True,
              help="Also run Temporal's dev server (for `lading worker` and `lading submit`).")
@click.option("--apiserver-port", type=int, default=None, help="[default: a free port]")
@click.option("--registry-port", type=int, default=None, help="[default: a free port]")
@click.option("--referrers-port", type=int, default=None, help="[default: a free port]")
@click.option("--temporal-port", type=int, default=None, help="[default: a free port]")
@state_dir_option
def up(
    rollout: bool,
    referrers: bool,
    auth: bool,
    tls: bool,
    temporal: bool,
    apiserver_port: int | None,
    registry_port: int | None,
    referrers_port: int | None,
    temporal_port: int | None,
    state_dir: Path | None,
) -> None:
    """Start etcd + kube-apiserver and a docker-registry on loopback.

    Progress goes to stderr; stdout gets the `export` lines of `lading dev env`, so the
    output can be eval'ed. Ports are random unless given.

    \b
    Example:
      eval "$(lading dev up --rollout --referrers --state-dir /tmp/lading-dev)"
      eval "$(lading dev up --temporal)" && lading worker &
    """
    progress = Progress()
    environment = dev_env.up(
        _state_dir(state_dir),
        rollout=rollout,
        referrers=referrers,
        auth=auth,
        tls=tls,
        apiserver_port=apiserver_port,
        registry_port=registry_port,
        referrers_port=referrers_port,
        temporal=temporal,
        temporal_port=temporal_port,
        progress=progress,
    )
    parts = [f"control plane {environment.cluster.startup_seconds}s",
             f"registry {environment.registry.startup_seconds}s"]
    if environment.referrers_registry:
        parts.append(f"referrers registry {environment.referrers_registry.startup_seconds}s")
    if environment.temporal:
        parts.append(f"temporal {environment.temporal.startup_seconds}s")
    progress(f"started in {environment.startup_seconds}s ({', '.join(parts)})")
    progress(f"state and logs: {environment.state_dir}; stop with `lading dev down"
             + (f" --state-dir {environment.state_dir}`" if state_dir else "`"))
    click.echo("\n".join(dev_env.shell_exports(environment)))


@dev.command()
@state_dir_option
def down(state_dir: Path | None) -> None:
    """Stop the environment and remove its state; logs stay in the state directory.

    Safe to run when nothing is running.

    \b
    Example:
      lading dev down --state-dir /tmp/lading-dev
    """
    directory = _state_dir(state_dir)
    stopped = dev_env.down(directory)
    if stopped:
        click.echo(f"stopped {', '.join(stopped)} ({directory})", err=True)
    else:
        click.echo(f"nothing running from {directory}", err=True)


@dev.command()
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text",
              help="text: shell export lines; json: the whole state record.")
@state_dir_option
def env(output: str, state_dir: Path | None) -> None:
    """Print shell lines that point kubectl and lading at the environment.

    The registry speaks plain HTTP on loopback: lading knows, other clients need telling
    (`oras pull --plain-http "$LADING_REGISTRY/…"`).

    \b
    Example:
      eval "$(lading dev env)"
      kubectl get nodes && echo "$LADING_REGISTRY"
      oras repo ls --plain-http "$LADING_REGISTRY"
    """
    directory = _state_dir(state_dir)
    environment = dev_env.load(directory)
    if environment is None:
        raise InputError(f"no dev environment recorded in {directory}",
                         hint="start one with `lading dev up`")
    if output == "json":
        click.echo(environment.model_dump_json(indent=2))
    else:
        click.echo("\n".join(dev_env.shell_exports(environment)))


@dev.command("tools")
def tools_command() -> None:
    """Show where each pinned tool is; fail (exit 2) if any is missing.

    Tools are built by scripts/provision-tools into $LADING_CACHE (~/.cache/lading).

    \b
    Example:
      lading dev tools || scripts/provision-tools
    """
    missing = []
    for binary, version, path in tools.report():
        click.echo(f"{binary:<24} {version:<10} {path or 'MISSING'}")
        if path is None:
            missing.append(binary)
    if missing:
        raise InputError(f"not provisioned: {', '.join(missing)}", hint=tools.PROVISION_HINT)
