"""`lading worker`: poll one task queue for the `run` and `ship` workflows and the runner
activities, until SIGINT or SIGTERM.

A worker only ever dials out to Temporal, so one inside a private or air-gapped network needs
no inbound route: give each cluster or environment its own task queue, run its workers where
they reach that cluster, and name the queue in the plan (README, "Control planes").
"""

from __future__ import annotations

import asyncio
import signal
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta

from temporalio.worker import Worker

from runner.common.output import Progress
from runner.worker.activities import Activities, WorkerSettings
from runner.worker.connect import Connection, connect
from runner.worker.workflows import RunWorkflow, ShipWorkflow


@dataclass(frozen=True)
class WorkerOptions:
    task_queue: str
    max_concurrent_activities: int = 4
    # Activities that are running when the worker is told to stop get this long to finish;
    # the rest are cancelled (they stop at their next progress report) and retried elsewhere.
    graceful_shutdown_seconds: float = 30.0


async def serve(
    connection: Connection, options: WorkerOptions, settings: WorkerSettings, progress: Progress
) -> None:
    client = await connect(connection)
    with ThreadPoolExecutor(
        max_workers=options.max_concurrent_activities, thread_name_prefix="lading-activity"
    ) as executor:
        worker = Worker(
            client,
            task_queue=options.task_queue,
            activities=Activities(settings, executor).all(),
            workflows=[RunWorkflow, ShipWorkflow],
            max_concurrent_activities=options.max_concurrent_activities,
            graceful_shutdown_timeout=timedelta(seconds=options.graceful_shutdown_seconds),
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        progress(
            f"worker polling task queue {options.task_queue!r} on {connection.address} "
            f"(namespace {connection.namespace}, up to {options.max_concurrent_activities} "
            f"activities, payloads {'encrypted' if connection.keyring else 'in clear'})",
            event="worker-started",
        )
        async with worker:
            await stop.wait()
            progress("stopping: finishing running activities", event="worker-stopping")
    progress("worker stopped", event="worker-stopped")
