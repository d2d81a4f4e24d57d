"""`lading worker` and `lading submit`: flags into values, one call each, the result rendered.

Connection flags and their environment variables are Temporal CLI's own (`--address`,
`--namespace`, `--api-key`, `--tls-*`), so a shell set up for `temporal` is set up for lading.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from pydantic import SecretStr

from plans.common import read_document
from plans.documents import read_stdin
from plans.ship import ACTIVITIES, Submission
from runner.common.cliopts import fmt, log_format_option, output_options, progress_for
from runner.common.output import emit
from runner.worker.codec import ENV_KEY, ENV_KEY_FILE, load_keyring
from runner.worker.connect import DEFAULT_ADDRESS, Connection

F = TypeVar("F", bound=Callable[..., Any])
DEFAULT_TASK_QUEUE = "lading"


def temporal_options(fn: F) -> F:
    """Connection flags, named (with their environment variables) as in Temporal's CLI."""
    options = [
        click.option("--address", envvar="TEMPORAL_ADDRESS", default=DEFAULT_ADDRESS,
                     show_default=True, help="Temporal frontend host:port [$TEMPORAL_ADDRESS]."),
        click.option("--namespace", "temporal_namespace", envvar="TEMPORAL_NAMESPACE",
                     default="default", show_default=True,
                     help="Temporal namespace [$TEMPORAL_NAMESPACE]."),
        click.option("--api-key", envvar="TEMPORAL_API_KEY", default=None,
                     help="API key (implies TLS) [$TEMPORAL_API_KEY; prefer the variable]."),
        click.option("--tls", is_flag=True, envvar="TEMPORAL_TLS",
                     help="Connect with TLS (implied by any --tls-* flag) [$TEMPORAL_TLS]."),
        click.option("--tls-cert-path", envvar="TEMPORAL_TLS_CLIENT_CERT_PATH",
                     type=click.Path(dir_okay=False, path_type=Path),
                     help="Client certificate for mTLS [$TEMPORAL_TLS_CLIENT_CERT_PATH]."),
        click.option("--tls-key-path", envvar="TEMPORAL_TLS_CLIENT_KEY_PATH",
                     type=click.Path(dir_okay=False, path_type=Path),
                     help="Client key for mTLS [$TEMPORAL_TLS_CLIENT_KEY_PATH]."),
        click.option("--tls-ca-path", envvar="TEMPORAL_TLS_SERVER_CA_CERT_PATH",
                     type=click.Path(dir_okay=False, path_type=Path),
                     help="CA of the server [$TEMPORAL_TLS_SERVER_CA_CERT_PATH]."),
        click.option("--tls-server-name", envvar="TEMPORAL_TLS_SERVER_NAME",
                     help="Server name to verify [$TEMPORAL_TLS_SERVER_NAME]."),
        click.option("--codec-key-file", envvar=ENV_KEY_FILE,
                     type=click.Path(dir_okay=False, path_type=Path),
                     help="Keyring (ID:BASE64KEY lines) of the AES-GCM payload codec; the "
                          f"first key encrypts [${ENV_KEY_FILE}, or the keys in ${ENV_KEY}]."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def task_queue_option(fn: F) -> F:
    return click.option("-t", "--task-queue", envvar="LADING_TASK_QUEUE",
                        default=DEFAULT_TASK_QUEUE, show_default=True,
                        help="Task queue [$LADING_TASK_QUEUE]: one per cluster or environment.")(fn)


def connection_from(values: dict[str, Any], identity: str | None = None) -> Connection:
    api_key = values.pop("api_key")
    return Connection(
        address=values.pop("address"),
        namespace=values.pop("temporal_namespace"),
        api_key=SecretStr(api_key) if api_key else None,
        tls=values.pop("tls"),
        tls_cert_path=values.pop("tls_cert_path"),
        tls_key_path=values.pop("tls_key_path"),
        tls_ca_path=values.pop("tls_ca_path"),
        tls_server_name=values.pop("tls_server_name"),
        keyring=load_keyring(values.pop("codec_key_file")),
        identity=identity,
    )


@click.command("worker")
@temporal_options
@task_queue_option
@click.option("--max-concurrent-activities", type=click.IntRange(1, 256), default=4,
              show_default=True, help="Activities run at once (each in its own thread).")
@click.option("--workspace", type=click.Path(file_okay=False, exists=True, path_type=Path),
              default=".", show_default=True,
              help="Relative paths in plans resolve here; a BuildPlan's must stay inside.")
@click.option("--identity", help="Worker identity shown in history [default: pid@host].")
@click.option("-v", "--verbose", is_flag=True, help="More progress detail on stderr.")
@click.option("-q", "--quiet", is_flag=True, help="No progress on stderr.")
@log_format_option
def worker_cmd(task_queue: str, max_concurrent_activities: int, workspace: Path,
               identity: str | None, verbose: bool, quiet: bool, **connection: Any) -> None:
    """Run lading's activities and workflows for a Temporal task queue.

    Registers the activities build, install, diff, uninstall, rollback, verify and sign
    (each takes a plan document and returns a result document, see `lading schema`) and the
    workflows `run` and `ship`. The worker dials out only: run one per cluster or network,
    each on its own task queue. Stops on SIGINT/SIGTERM, letting running activities finish.

    \b
    Examples:
      lading worker --task-queue prod-eu --address temporal.example:7233
      TEMPORAL_ADDRESS=127.0.0.1:7233 lading worker -t dev --log-format json
    """
    from runner.worker.activities import WorkerSettings
    from runner.worker.worker import WorkerOptions, serve

    progress = progress_for(quiet, verbose)
    conn = connection_from(connection, identity)
    settings = WorkerSettings(
        workspace=workspace.resolve(),
        encrypted=conn.keyring is not None,
        log_format=progress.log_format,
        stream=sys.stderr,
    )
    asyncio.run(serve(
        conn, WorkerOptions(task_queue, max_concurrent_activities), settings, progress
    ))


def _summary(submission: Submission) -> str:
    line = f"{submission.workflow} workflow {submission.workflow_id} {submission.status} " \
           f"(task queue {submission.task_queue})"
    result = submission.result or {}
    if result.get("status"):
        line += f"\nresult: {result.get('kind', '')} {result['status']}"
    if submission.error:
        line += f"\nerror: {submission.error}"
    return line


@click.command("submit")
@click.option("-f", "--plan", "plan_file", required=True, metavar="PLAN",
              help="ShipPlan, RunRequest, BuildPlan, InstallPlan, VerifyPlan or SignPlan "
                   "(YAML or JSON), or - for stdin.")
@task_queue_option
@click.option("--activity", type=click.Choice(ACTIVITIES),
              help="For a single plan: the activity to run [default: by kind — build, "
                   "install, verify, sign]; diff, uninstall and rollback take an InstallPlan.")
@click.option("-w", "--workflow-id", help="Workflow id [default: lading-<workflow>-<random>].")
@click.option("--wait", is_flag=True, help="Wait for the workflow and print its result.")
@temporal_options
@output_options
@click.pass_context
def submit_cmd(ctx: click.Context, /, plan_file: str, task_queue: str, activity: str | None,
               workflow_id: str | None, wait: bool, output: str, verbose: bool, quiet: bool,
               **connection: Any) -> None:
    """Start a plan on Temporal: a ShipPlan as the `ship` workflow, any other plan as the
    `run` workflow. Prints the workflow id; with --wait, the result document too.

    Exit 0 started (or succeeded), 1 the workflow failed, 2 bad plan, 3 Temporal, registry
    or cluster unreachable.

    \b
    Examples:
      lading submit -f ship.yaml --task-queue ci -o json
      lading submit -f install.yaml -t prod-eu --wait -o json
      lading submit -f install.yaml --activity diff --wait
      approve with: temporal workflow signal -w ID --name approve --input '"prod"'
    """
    from runner.worker.submit import submit

    del verbose, quiet
    if plan_file == "-":
        document, where = read_document(None, read_stdin()), "<stdin>"
    else:
        document, where = read_document(Path(plan_file)), plan_file
    submission, code = asyncio.run(submit(
        document,
        where,
        connection_from(connection),
        task_queue,
        activity=activity,  # type: ignore[arg-type]
        workflow_id=workflow_id,
        wait=wait,
    ))
    emit(submission, fmt(output), _summary)
    ctx.exit(code)


COMMANDS = (worker_cmd, submit_cmd)
