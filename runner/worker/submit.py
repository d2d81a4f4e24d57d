"""`lading submit -f PLAN`: start a plan on Temporal — a ShipPlan as the `ship` workflow, any
other plan as the `run` workflow around the activity its kind names — and, with `wait`, return
how it ended with the result document.

The plan is checked here first, so a bad one is refused with exit 2 before anything is
started, and a credential written inline is refused unless payloads are encrypted.
"""

from __future__ import annotations

import uuid
from typing import Any, Literal

from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ApplicationError, CancelledError, TerminatedError
from temporalio.service import RPCError

from plans.common import validate_document
from plans.install import InstallPlan
from plans.ship import (
    PLAN_KINDS,
    ActivityName,
    RunRequest,
    ShipPlan,
    SignPlan,
    Submission,
    VerifyPlan,
)
from runner.common.errors import InputError, RemoteError
from runner.run import load_plan
from runner.worker.connect import Connection, connect

DEFAULT_ACTIVITY: dict[str, ActivityName] = {
    "BuildPlan": "build", "InstallPlan": "install", "VerifyPlan": "verify", "SignPlan": "sign",
}
# How a failed workflow maps to lading's exit codes.
EXIT_CODES = {"InputError": 2, "RemoteError": 3}
WorkflowName = Literal["run", "ship"]


def workflow_input(
    document: Any, where: str, activity: ActivityName | None = None
) -> tuple[WorkflowName, dict[str, Any]]:
    """The workflow to start for a plan document and its input, checked as the worker will."""
    kind = document.get("kind") if isinstance(document, dict) else None
    if kind == "ShipPlan":
        if activity is not None:
            raise InputError("--activity goes with a single plan, not a ShipPlan")
        validate_document(ShipPlan, document, f"ShipPlan {where}")
        return "ship", document
    if kind == "RunRequest":
        request = validate_document(RunRequest, document, f"RunRequest {where}")
        _check_plan(request.plan, where)
        return "run", document
    if kind not in DEFAULT_ACTIVITY:
        raise InputError(
            f"plan {where} has kind {kind!r}",
            hint="submit takes a ShipPlan, RunRequest, BuildPlan, InstallPlan, VerifyPlan or "
            "SignPlan",
        )
    chosen = activity or DEFAULT_ACTIVITY[kind]
    if PLAN_KINDS[chosen] != kind:
        raise InputError(f"activity {chosen} takes a {PLAN_KINDS[chosen]}, not a {kind}")
    _check_plan(document, where)
    return "run", {"apiVersion": "lading.dev/v1", "kind": "RunRequest", "activity": chosen,
                   "plan": document}


def _check_plan(document: dict[str, Any], where: str) -> None:
    if document.get("kind") == "VerifyPlan":
        validate_document(VerifyPlan, document, f"VerifyPlan {where}")
    elif document.get("kind") == "SignPlan":
        validate_document(SignPlan, document, f"SignPlan {where}")
    else:
        load_plan(document, where)


def inline_secrets(workflow: WorkflowName, document: dict[str, Any]) -> list[str]:
    """Where a plan carries a credential itself rather than naming one."""
    if workflow == "ship":
        ship = ShipPlan.model_validate(document)
        plans = {f"environments.{e.name}.install": e.install for e in ship.environments}
    else:
        inner = document["plan"]
        plans = (
            {"plan": InstallPlan.model_validate(inner)}
            if inner.get("kind") == "InstallPlan" else {}
        )
    return [f"{where}.target.token" for where, plan in plans.items() if plan.target.token]


async def submit(
    document: Any,
    where: str,
    connection: Connection,
    task_queue: str,
    *,
    activity: ActivityName | None = None,
    workflow_id: str | None = None,
    wait: bool = False,
) -> tuple[Submission, int]:
    """Start the workflow for `document`; with `wait`, also its outcome. Returns the
    submission and the exit code it means."""
    workflow, argument = workflow_input(document, where, activity)
    carried = inline_secrets(workflow, argument)
    if carried and connection.keyring is None:
        raise InputError(
            f"{', '.join(carried)} would be written to Temporal history in clear",
            hint="name the credential by reference (target.token_file or a kubeconfig context "
            "on the worker), or encrypt payloads with a codec key (--codec-key-file) shared "
            "with the workers",
        )
    client = await connect(connection)
    workflow_id = workflow_id or f"lading-{workflow}-{uuid.uuid4().hex[:12]}"
    try:
        handle = await client.start_workflow(
            workflow, argument, id=workflow_id, task_queue=task_queue
        )
    except RPCError as e:
        raise RemoteError(f"cannot start workflow {workflow_id}: {e.message}") from None
    submission = Submission(
        workflow=workflow,
        workflow_id=workflow_id,
        run_id=handle.result_run_id,
        namespace=connection.namespace,
        task_queue=task_queue,
    )
    if not wait:
        return submission, 0
    try:
        result = await handle.result()
    except WorkflowFailureError as e:
        return _failed(submission, e)
    return submission.model_copy(update={"status": "succeeded", "result": result}), 0


def _failed(submission: Submission, error: WorkflowFailureError) -> tuple[Submission, int]:
    cause = error.cause
    if isinstance(cause, CancelledError | TerminatedError):
        return submission.model_copy(update={"status": "cancelled", "error": str(cause)}), 1
    if isinstance(cause, ApplicationError):
        details = list(cause.details)
        result = details[0] if details and isinstance(details[0], dict) else None
        return submission.model_copy(update={
            "status": "failed", "error": cause.message, "result": result,
        }), EXIT_CODES.get(cause.type or "", 1)
    return submission.model_copy(update={"status": "failed", "error": str(cause or error)}), 1
