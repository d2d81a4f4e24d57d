"""Scale-out through Temporal: 50 installs into 50 namespaces, run by 1, 2 and 4 `lading worker`
processes polling one task queue; throughput, per-install latency and each worker's memory.

    .venv/bin/python bench/worker_bench.py [--installs 50] [--workers 1,2,4]
        [--per-worker 2] [--objects 20]

Starts its own environment (etcd + kube-apiserver, docker-registry and Temporal's dev server,
as `lading dev up --temporal` does) in a temporary state directory and stops it at the end.
Every install is a `run` workflow around the `install` activity, started at once; the clock
runs from the first start to the last result. Memory is each worker's peak resident set
(VmHWM) and its resident set at the end (VmRSS), read from /proc. Each worker runs at most
--per-worker activities at a time, so adding workers adds capacity. Run on demand; never part
of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from runner.dev import env as dev_env  # noqa: E402
from runner.worker.connect import Connection, connect  # noqa: E402
from tests.artifacts import publish  # noqa: E402


def objects(count: int) -> list[dict[str, Any]]:
    """A small application: ConfigMaps, Secrets, Services and ServiceAccounts, no namespace
    (each install puts them into its own)."""
    made: list[dict[str, Any]] = []
    for i in range(count):
        kind = ("ConfigMap", "Secret", "Service", "ServiceAccount")[i % 4]
        obj: dict[str, Any] = {"apiVersion": "v1", "kind": kind,
                               "metadata": {"name": f"obj-{i:03d}", "labels": {"app": "bench"}}}
        if kind == "ConfigMap":
            obj["data"] = {"index": str(i), "payload": "x" * 256}
        elif kind == "Secret":
            obj["stringData"] = {"token": f"not-a-secret-{i}"}
        elif kind == "Service":
            obj["spec"] = {"selector": {"app": "bench"}, "ports": [{"port": 80 + i}]}
        made.append(obj)
    return made


def memory_kib(pid: int) -> dict[str, int]:
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            fields[key] = int(value.split()[0])
    return fields


def start_workers(count: int, queue: str, address: str, per_worker: int,
                  logs: Path) -> list[subprocess.Popen[bytes]]:
    workers = []
    for n in range(count):
        log = (logs / f"worker-{queue}-{n}.log").open("wb")
        workers.append(subprocess.Popen(
            [sys.executable, "-m", "runner.cli", "worker", "--address", address,
             "--task-queue", queue, "--identity", f"bench-{n}", "--log-format", "json",
             "--max-concurrent-activities", str(per_worker), "-q"],
            stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
        ))
    time.sleep(3.0)  # connected and polling
    return workers


async def installs(address: str, queue: str, ref: str, kubeconfig: Path,
                   count: int) -> tuple[float, list[float], int]:
    client = await connect(Connection(address=address))
    run_id = uuid.uuid4().hex[:6]

    async def one(i: int) -> tuple[float, bool]:
        started = time.monotonic()
        plan = {"apiVersion": "lading.dev/v1", "kind": "InstallPlan", "artifact": {"ref": ref},
                "namespace": f"bench-{run_id}-{i:02d}", "create_namespace": True,
                "inventory": "app", "target": {"kubeconfig": str(kubeconfig)}}
        request = {"apiVersion": "lading.dev/v1", "kind": "RunRequest", "activity": "install",
                   "plan": plan, "options": {"heartbeat_timeout": "30s"}}
        handle = await client.start_workflow("run", request, id=f"bench-{run_id}-{i}",
                                             task_queue=queue)
        result = await handle.result()
        return time.monotonic() - started, result["status"] == "succeeded"

    t0 = time.monotonic()
    outcomes = await asyncio.gather(*(one(i) for i in range(count)))
    wall = time.monotonic() - t0
    return wall, [seconds for seconds, _ in outcomes], sum(ok for _, ok in outcomes)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--installs", type=int, default=50)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--per-worker", type=int, default=2,
                        help="--max-concurrent-activities of each worker")
    parser.add_argument("--objects", type=int, default=20, help="objects per install")
    args = parser.parse_args()

    state = Path(tempfile.mkdtemp(prefix="lading-worker-bench-"))
    print(f"starting the environment in {state}", file=sys.stderr)
    environment = dev_env.up(state, temporal=True)
    assert environment.temporal is not None
    address = environment.temporal.address
    rows = []
    try:
        ref = publish(objects(args.objects),
                      f"{environment.registry.host}/bench/app:{uuid.uuid4().hex[:8]}")
        for count in (int(n) for n in args.workers.split(",")):
            queue = f"bench-{count}-{uuid.uuid4().hex[:6]}"
            workers = start_workers(count, queue, address, args.per_worker, environment.log_dir)
            try:
                wall, latencies, ok = asyncio.run(installs(
                    address, queue, ref, environment.cluster.kubeconfig, args.installs))
                memory = [memory_kib(w.pid) for w in workers]
            finally:
                for w in workers:
                    w.terminate()
                for w in workers:
                    w.wait(timeout=60)
            latencies.sort()
            rows.append((count, ok, wall, args.installs / wall * 60,
                         statistics.median(latencies),
                         latencies[max(0, int(len(latencies) * 0.95) - 1)],
                         max(m["VmHWM"] for m in memory) / 1024,
                         sum(m["VmRSS"] for m in memory) / 1024))
            print(f"{count} worker(s): {ok}/{args.installs} in {wall:.1f}s", file=sys.stderr)
    finally:
        dev_env.down(state)

    print(f"\n{args.installs} installs of {args.objects} objects each into {args.installs} "
          f"namespaces; each worker runs up to {args.per_worker} activities at a time\n")
    print("| workers | succeeded | wall (s) | installs/min | median install (s) | "
          "p95 install (s) | peak RSS per worker (MiB) | RSS of all workers (MiB) |")
    print("|---|---|---|---|---|---|---|---|")
    for count, ok, wall, rate, median, p95, peak, total in rows:
        print(f"| {count} | {ok} | {wall:.1f} | {rate:.1f} | {median:.1f} | {p95:.1f} | "
              f"{peak:.0f} | {total:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
