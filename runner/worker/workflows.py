"""The workflows a worker runs.

`run`   one activity on one plan (RunRequest): what `lading submit -f PLAN` starts.
`ship`  build (or take) an artifact → verify its signature → install it into each environment
        in order, waiting for an `approve` signal before the environments that ask for one,
        and rolling back an environment whose install failed after writing. Each
        environment's activities go to that environment's task queue, so the worker that can
        reach its cluster — inside a private network, polling outbound — does the work.

Plans stay JSON documents on their way through: a parsed plan masks secret fields when
serialised, and the activity must receive exactly what the control plane sent.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any, NoReturn, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, TimeoutError

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel, ValidationError

    from plans.common import format_validation_error
    from plans.ship import (
        NON_RETRYABLE,
        ActivityOptions,
        EnvironmentResult,
        RunRequest,
        ShipPlan,
        ShipResult,
    )
    from runner.common.reference import parse_ref


M = TypeVar("M", bound="BaseModel")


def _with(model: M, **update: Any) -> M:
    """`model` with fields replaced, validated again (model_copy would not validate)."""
    return type(model).model_validate({**model.model_dump(), **update})


def _validated(model: type[Any], document: Any, what: str) -> Any:
    try:
        return model.model_validate(document)
    except ValidationError as e:
        raise ApplicationError(
            format_validation_error(e, what), type="InputError", non_retryable=True
        ) from None


async def _execute(
    name: str, plan: dict[str, Any], options: ActivityOptions, task_queue: str | None
) -> dict[str, Any]:
    result: dict[str, Any] = await workflow.execute_activity(
        name,
        plan,
        task_queue=task_queue,
        start_to_close_timeout=timedelta(seconds=options.seconds("start_to_close_timeout")),
        heartbeat_timeout=timedelta(seconds=options.seconds("heartbeat_timeout")),
        retry_policy=RetryPolicy(
            initial_interval=timedelta(seconds=options.seconds("initial_interval")),
            maximum_interval=timedelta(seconds=options.seconds("maximum_interval")),
            maximum_attempts=options.maximum_attempts,
            non_retryable_error_types=list(NON_RETRYABLE),
        ),
        # A cancelled install stops at its next progress report and releases its lease; the
        # workflow waits for that rather than leaving it running behind its back.
        cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
    )
    return result


def _cause(error: ActivityError) -> tuple[str, str, list[Any]]:
    """(type, message, details) of why an activity failed for good."""
    cause = error.cause
    if isinstance(cause, ApplicationError):
        return cause.type or "ApplicationError", cause.message, list(cause.details)
    if isinstance(cause, TimeoutError):
        return "Timeout", f"activity timed out ({cause.type.name if cause.type else ''})", []
    return type(cause).__name__ if cause else "ActivityError", str(cause or error), []


def _stop_if_cancelled() -> None:
    if workflow.cancellation_reason() is not None:
        raise asyncio.CancelledError()


@workflow.defn(name="run")
class RunWorkflow:
    """One plan, one activity; fails with the activity's failure, result document included."""

    @workflow.run
    async def run(self, request: dict[str, Any]) -> dict[str, Any]:
        checked: RunRequest = _validated(RunRequest, request, "RunRequest")
        try:
            return await _execute(
                checked.activity, request["plan"], checked.options, checked.task_queue
            )
        except ActivityError as e:
            _stop_if_cancelled()
            kind, message, details = _cause(e)
            raise ApplicationError(message, *details, type=kind, non_retryable=True) from None


def pinned(ref: str, digest: str) -> str:
    """`ref`'s repository at `digest`: what an environment pulls, whatever tag it names."""
    return parse_ref(ref).with_tag(None).with_digest(digest).pinned()


@workflow.defn(name="ship")
class ShipWorkflow:
    """build → verify → install per environment, with approvals and rollback."""

    def __init__(self) -> None:
        self.approved: set[str] = set()
        self.rejected: set[str] = set()
        self.waiting_for: str | None = None
        self.stage = "starting"
        self.outcome = ShipResult(status="succeeded")

    @workflow.signal(name="approve")
    def approve(self, environment: str) -> None:
        self.approved.add(environment)

    @workflow.signal(name="reject")
    def reject(self, environment: str) -> None:
        self.rejected.add(environment)

    @workflow.query(name="status")
    def status(self) -> dict[str, Any]:
        """Where the ship is: its stage, the environment awaiting approval, results so far."""
        return {
            "stage": self.stage,
            "waiting_for_approval": self.waiting_for,
            "result": self.outcome.model_dump(mode="json", exclude_none=True),
        }

    @workflow.run
    async def run(self, document: dict[str, Any]) -> dict[str, Any]:
        plan: ShipPlan = _validated(ShipPlan, document, "ShipPlan")
        options = plan.options
        ref = plan.artifact
        if document.get("build") is not None:
            self.stage = "build"
            built = await self._step("build", _as_plan("BuildPlan", document["build"]),
                                     options, None)
            if built is None:
                self._fail()
            self.outcome = _with(self.outcome, build=built)
            ref = str(built["ref"])
        assert ref is not None  # ShipPlan guarantees build or artifact
        digest = parse_ref(ref).digest or ""
        self.outcome = _with(self.outcome, ref=ref, digest=digest)
        if plan.verify is not None:
            self.stage = "verify"
            verify_plan = {
                "apiVersion": "lading.dev/v1", "kind": "VerifyPlan", "ref": ref,
                "policy": document["verify"],
                **_registry_fields(document.get("build") or {}),
            }
            verified = await self._step("verify", verify_plan, options, None)
            if verified is None:
                self._fail()
            self.outcome = _with(self.outcome, verify=verified)

        for index, environment in enumerate(plan.environments):
            spec = document["environments"][index]
            if not await self._deploy(environment.name, spec, digest, options):
                skipped = [EnvironmentResult(name=e.name, status="skipped")
                           for e in plan.environments[index + 1:]]
                self._record(*skipped)
                self._fail()
        self.stage = "done"
        return self.outcome.model_dump(mode="json", exclude_none=True)

    async def _deploy(
        self, name: str, spec: dict[str, Any], digest: str, options: ActivityOptions
    ) -> bool:
        if spec.get("approval"):
            self.stage, self.waiting_for = f"approval of {name}", name
            await workflow.wait_condition(lambda: name in self.approved | self.rejected)
            self.waiting_for = None
            if name in self.rejected:
                self._record(EnvironmentResult(name=name, status="rejected",
                                               error=f"{name} was rejected"))
                return False
        self.stage = f"install {name}"
        queue = spec.get("task_queue")
        install = _as_plan("InstallPlan", spec["install"])
        install["artifact"] = {**install["artifact"], "ref": pinned(install["artifact"]["ref"],
                                                                   digest)}
        try:
            result = await _execute("install", install, options, queue)
        except ActivityError as e:
            _stop_if_cancelled()
            kind, message, details = _cause(e)
            failed = EnvironmentResult(
                name=name,
                status="failed",
                install=details[0] if kind == "InstallFailed" and details else None,
                error=message,
            )
            wrote = failed.install is not None and not failed.install.refused
            if wrote and spec.get("rollback_on_failure", True):
                self.stage = f"rollback {name}"
                failed = await self._roll_back(failed, install, options, queue)
            self._record(failed)
            return False
        self._record(EnvironmentResult.model_validate(
            {"name": name, "status": "succeeded", "install": result}
        ))
        return True

    async def _roll_back(
        self,
        failed: EnvironmentResult,
        install: dict[str, Any],
        options: ActivityOptions,
        queue: str | None,
    ) -> EnvironmentResult:
        if not install.get("inventory") and failed.install is not None:
            # The install reported the inventory it used (the artifact's default when the
            # plan names none); rollback needs it named.
            install = {**install, "inventory": failed.install.inventory}
        try:
            result = await _execute("rollback", install, options, queue)
        except ActivityError as e:
            _stop_if_cancelled()
            _, message, details = _cause(e)
            rolled = details[0] if details and isinstance(details[0], dict) else None
            return _with(failed, rollback=rolled,
                         error=f"{failed.error}\nrollback failed too: {message}")
        return _with(failed, status="rolled-back", rollback=result)

    async def _step(
        self, name: str, plan: dict[str, Any], options: ActivityOptions, queue: str | None
    ) -> dict[str, Any] | None:
        try:
            return await _execute(name, plan, options, queue)
        except ActivityError as e:
            _stop_if_cancelled()
            _, message, _ = _cause(e)
            self.outcome = _with(self.outcome, error=f"{name}: {message}")
            return None

    def _record(self, *results: EnvironmentResult) -> None:
        self.outcome = _with(
            self.outcome, environments=[*self.outcome.environments, *results]
        )

    def _fail(self) -> NoReturn:
        failed = [e for e in self.outcome.environments if e.status in ("failed", "rolled-back",
                                                                      "rejected")]
        error = self.outcome.error or "; ".join(f"{e.name}: {e.error}" for e in failed)
        self.stage = "failed"
        self.outcome = _with(self.outcome, status="failed", error=error)
        document = self.outcome.model_dump(mode="json", exclude_none=True)
        raise ApplicationError(
            f"ship failed: {error.splitlines()[0] if error else 'see the result'}",
            document,
            type="ShipFailed",
            non_retryable=True,
        )


def _as_plan(kind: str, document: dict[str, Any]) -> dict[str, Any]:
    """A nested plan as a document of its own: the activity checks apiVersion and kind."""
    return {"apiVersion": "lading.dev/v1", "kind": kind, **document}


def _registry_fields(build: dict[str, Any]) -> dict[str, Any]:
    """How the build reached its registry is how verify reaches it."""
    return {k: build[k] for k in ("plain_http", "ca_file") if build.get(k) is not None}
