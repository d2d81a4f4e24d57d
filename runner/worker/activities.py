"""The activities a worker registers: build, install, diff, uninstall, rollback, verify, sign.

Each takes one plan document and returns one result document (plans/), and runs the same
function the CLI runs, so a worker enforces exactly the CLI's policy: verification, ownership,
namespace scope, prune safety, workspace confinement. The runner code is synchronous: it runs
in the worker's thread pool while the activity's coroutine heartbeats for it.

Heartbeats carry the latest progress message (`{"message", "elapsed"}`): one per progress
report — pull, each apply stage, each wait report, each lease wait — and a repeat every third
of the heartbeat timeout in between, so a long quiet stage is not mistaken for a dead worker.
A cancellation request is honoured at the runner's next progress report: the sink raises
`Cancelled`, the runner stops after the requests in flight and releases its inventory lease,
and the failure details say what the cluster holds for each object at that moment.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from pydantic import BaseModel, SecretStr
from temporalio import activity
from temporalio.exceptions import ApplicationError

from plans.build import BuildPlan
from plans.common import validate_document
from plans.install import InstallPlan
from plans.ship import SignPlan, VerifyPlan
from runner.common.errors import InputError, LadingError
from runner.common.output import LogFormat, Progress, silent, to_document
from runner.common.store import RegistryOptions
from runner.run import load_plan, rebase
from runner.worker.failures import Cancelled, application_error

Work = Callable[[dict[str, Any], Progress], BaseModel]
DEFAULT_BEAT_SECONDS = 10.0


@dataclass(frozen=True)
class WorkerSettings:
    workspace: Path
    encrypted: bool  # a codec keyring is configured: payloads are ciphertext in history
    log_format: LogFormat = "text"
    stream: TextIO | None = None


class ActivityProgress(Progress):
    """The runner's progress sink inside an activity: logs on the worker's stderr with the
    activity's ids, heartbeats, and stops the runner once cancellation was requested."""

    def __init__(
        self,
        stop: threading.Event,
        beat: Callable[[str], None],
        ids: dict[str, Any],
        settings: WorkerSettings,
    ) -> None:
        super().__init__(stream=settings.stream, log_format=settings.log_format, live=False)
        self.stop = stop
        self.beat = beat
        self.ids = ids
        self.last = "started"
        self.refused: str | None = None

    def __call__(self, message: str, *, event: str = "progress", **fields: Any) -> None:
        if self.stop.is_set():
            self.refused = message.splitlines()[0]
            raise Cancelled(f"cancelled; stopped before: {self.refused}")
        self.last = message
        super().__call__(message, event=event, **self.ids, **fields)
        self.beat(message)

    def tick(self) -> None:
        """Called on every poll of a long wait, whose message may not change for minutes: a
        cancel is noticed within one poll, and the heartbeat keeps going."""
        if self.stop.is_set():
            self.refused = self.last.splitlines()[0]
            raise Cancelled(f"cancelled; stopped while: {self.refused}")
        self.beat(self.last)


class Activities:
    """The activities, bound to one worker's settings and thread pool."""

    def __init__(self, settings: WorkerSettings, executor: ThreadPoolExecutor) -> None:
        self.settings = settings
        self.executor = executor

    def all(self) -> list[Callable[..., Any]]:
        return [self.build, self.install, self.diff, self.uninstall, self.rollback,
                self.verify, self.sign]

    @activity.defn(name="build")
    async def build(self, plan: dict[str, Any]) -> dict[str, Any]:
        return await self._run(plan, self._build)

    @activity.defn(name="install")
    async def install(self, plan: dict[str, Any]) -> dict[str, Any]:
        return await self._run(plan, self._install)

    @activity.defn(name="diff")
    async def diff(self, plan: dict[str, Any]) -> dict[str, Any]:
        return await self._run(plan, self._diff)

    @activity.defn(name="uninstall")
    async def uninstall(self, plan: dict[str, Any]) -> dict[str, Any]:
        return await self._run(plan, self._uninstall)

    @activity.defn(name="rollback")
    async def rollback(self, plan: dict[str, Any]) -> dict[str, Any]:
        return await self._run(plan, self._rollback)

    @activity.defn(name="verify")
    async def verify(self, plan: dict[str, Any]) -> dict[str, Any]:
        return await self._run(plan, self._verify)

    @activity.defn(name="sign")
    async def sign(self, plan: dict[str, Any]) -> dict[str, Any]:
        return await self._run(plan, self._sign)

    # The asynchronous shell: heartbeats, cancellation, failures.

    async def _run(self, document: dict[str, Any], work: Work) -> dict[str, Any]:
        info = activity.info()
        loop = asyncio.get_running_loop()
        context = contextvars.copy_context()
        started = time.monotonic()
        latest: list[str] = ["started"]

        def heartbeat(message: str) -> None:
            latest[0] = message
            detail = {"message": message, "elapsed": round(time.monotonic() - started, 1)}
            loop.call_soon_threadsafe(context.run, activity.heartbeat, detail)

        stop = threading.Event()
        ids = {"activity": info.activity_type, "workflow_id": info.workflow_id,
               "attempt": info.attempt}
        progress = ActivityProgress(stop, heartbeat, ids, self.settings)
        if info.attempt > 1 and info.heartbeat_details:
            progress(f"attempt {info.attempt}; the last one had reached: "
                     f"{_message(info.heartbeat_details[0])}")
        future = loop.run_in_executor(self.executor, self._call, work, document, progress)
        interval = (
            info.heartbeat_timeout.total_seconds() / 3
            if info.heartbeat_timeout else DEFAULT_BEAT_SECONDS
        )
        ticker = asyncio.create_task(_repeat(lambda: heartbeat(latest[0]), interval))
        try:
            while True:
                try:
                    return await asyncio.shield(future)
                except asyncio.CancelledError:
                    # Temporal asked us to stop (or the worker is shutting down): let the
                    # runner reach its next progress report rather than abandon its thread
                    # mid-request, then report what it did.
                    stop.set()
        except Cancelled as e:
            if activity.is_worker_shutdown():
                raise ApplicationError(
                    f"worker shutting down; {e.message}", type="WorkerShutdown"
                ) from None
            raise application_error(e, e.report) from None
        except LadingError as e:
            raise application_error(e) from None
        finally:
            ticker.cancel()

    def _call(self, work: Work, document: dict[str, Any], progress: ActivityProgress) -> Any:
        try:
            return to_document(work(document, progress))
        except Cancelled as e:
            e.report = self._stopped(work, document, progress)
            raise

    def _stopped(
        self, work: Work, document: dict[str, Any], progress: ActivityProgress
    ) -> dict[str, Any]:
        """Where a cancelled activity stopped and, for an install, what the cluster holds for
        each object, read back with the drift check (the install's own record ends where it
        stopped)."""
        report: dict[str, Any] = {
            "cancelled": True, "last_step": progress.last, "stopped_before": progress.refused,
        }
        if work != self._install:  # the only one with per-object state worth reading back
            return report
        from runner.install.diff import diff

        try:
            drift = diff(self._install_plan(document), silent)
        except LadingError as e:
            report["objects_error"] = e.message
            return report
        report["digest"] = drift.digest
        report["objects"] = [{"id": o.id, "state": o.state} for o in drift.objects]
        return report

    # The synchronous work: exactly what the CLI calls.

    def _build(self, document: dict[str, Any], progress: Progress) -> BaseModel:
        from runner.build.build import build
        from runner.build.confine import confine_plan

        plan = load_plan(document, "build activity input")
        if not isinstance(plan, BuildPlan):
            raise InputError(f"the build activity takes a BuildPlan, not {plan.kind}")
        workspace = self.settings.workspace
        confined = confine_plan(plan, workspace, base=workspace)
        return build(confined, base=workspace, progress=progress)

    def _install_plan(self, document: dict[str, Any]) -> InstallPlan:
        plan = load_plan(document, "activity input")
        if not isinstance(plan, InstallPlan):
            raise InputError(f"this activity takes an InstallPlan, not {plan.kind}")
        if plan.target.token is not None and not self.settings.encrypted:
            raise InputError(
                "target.token travels inside the plan, so Temporal history holds it in clear",
                hint="name the credential instead (target.token_file or a kubeconfig context "
                "on the worker, or in_cluster), or give worker and submitter a codec key "
                "(--codec-key-file)",
            )
        return rebase(plan, self.settings.workspace)

    def _install(self, document: dict[str, Any], progress: Progress) -> BaseModel:
        from runner.install.install import install

        return install(self._install_plan(document), progress=progress)

    def _diff(self, document: dict[str, Any], progress: Progress) -> BaseModel:
        from runner.install.diff import diff

        return diff(self._install_plan(document), progress)

    def _uninstall(self, document: dict[str, Any], progress: Progress) -> BaseModel:
        from runner.install.uninstall import uninstall

        return uninstall(self._install_plan(document), progress=progress)

    def _rollback(self, document: dict[str, Any], progress: Progress) -> BaseModel:
        from runner.install.rollback import rollback

        return rollback(self._install_plan(document), progress)

    def _verify(self, document: dict[str, Any], progress: Progress) -> BaseModel:
        from runner.supply.verify import verify

        plan = validate_document(VerifyPlan, document, "VerifyPlan")
        policy = plan.policy.model_copy(
            update={"trusted_root": self._local(plan.policy.trusted_root)}
        )
        return verify(plan.ref, policy, self._registry(plan.plain_http, plan.ca_file), progress)

    def _sign(self, document: dict[str, Any], progress: Progress) -> BaseModel:
        from runner.supply.sign import sign

        plan = validate_document(SignPlan, document, "SignPlan")
        token = os.environ.get(plan.identity_token_env)
        trust = self._local(plan.trust_config)
        return sign(
            plan.ref,
            token=SecretStr(token) if token else None,
            trust_config_path=Path(trust) if trust else None,
            options=self._registry(plan.plain_http, plan.ca_file),
            progress=progress,
        )

    def _local(self, path: str | None) -> str | None:
        """A plan's file path on this worker: relative ones resolve in its workspace."""
        if path is None or Path(path).is_absolute():
            return path
        return str(self.settings.workspace / path)

    def _registry(self, plain_http: bool, ca_file: str | None) -> RegistryOptions:
        return RegistryOptions.of(plain_http, self._local(ca_file))


def _message(detail: Any) -> str:
    return str(detail.get("message") if isinstance(detail, dict) else detail)


async def _repeat(beat: Callable[[], None], interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        beat()
