"""Install 1,000 generated objects with lading and with `kubectl apply --server-side`, fresh and
again unchanged, and print times and ratios.

    .venv/bin/python bench/install_bench.py [--objects 1000] [--concurrency 8] [--rounds 2]

Starts its own local control plane (etcd + kube-apiserver, as `lading dev up` does) unless
LADING_BENCH_KUBECONFIG names a cluster. Both tools run as subprocesses, from a file already
on disk, into fresh namespaces, without waiting for readiness (kubectl has no wait here
either). Run on demand; never part of the test suite.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from runner.common.objects import dump_stream  # noqa: E402
from runner.dev import env as dev_env  # noqa: E402
from runner.dev.tools import find_kubectl  # noqa: E402
from tests.artifacts import publish  # noqa: E402

KINDS = ("ConfigMap", "Secret", "Service", "Deployment")


def generate(count: int, namespace: str) -> list[dict[str, Any]]:
    objects: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}]
    for i in range(count):
        kind, name = KINDS[i % len(KINDS)], f"obj-{i:04d}"
        meta = {"name": name, "namespace": namespace, "labels": {"app": name}}
        if kind == "ConfigMap":
            objects.append({"apiVersion": "v1", "kind": kind, "metadata": meta,
                            "data": {"index": str(i), "payload": "x" * 200}})
        elif kind == "Secret":
            objects.append({"apiVersion": "v1", "kind": kind, "metadata": meta,
                            "stringData": {"token": f"not-a-real-secret-{i}"}})
        elif kind == "Service":
            objects.append({"apiVersion": "v1", "kind": kind, "metadata": meta, "spec": {
                "selector": {"app": name}, "ports": [{"port": 80, "targetPort": 8080}]}})
        else:
            objects.append({"apiVersion": "apps/v1", "kind": kind, "metadata": meta, "spec": {
                "replicas": 1, "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [
                    {"name": "app", "image": "example/app:1", "ports": [
                        {"containerPort": 8080}]}]}}}})
    return objects


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Run `cmd`; (wall seconds, peak RSS in MiB) of that process alone."""
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.monotonic() - t0
    stderr = proc.stderr.read().decode() if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"bench: {' '.join(cmd[:3])} failed:\n{stderr[-3000:]}")
    return elapsed, usage.ru_maxrss / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2, help="repetitions; medians reported")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="lading-bench-") as tmp_text:
        tmp = Path(tmp_text)
        kubeconfig = os.environ.get("LADING_BENCH_KUBECONFIG")
        started = None
        if not kubeconfig:
            print("bench: starting a local control plane", file=sys.stderr)
            started = dev_env.up(tmp / "dev")
            kubeconfig = str(started.cluster.kubeconfig)
        env = {**os.environ, "KUBECONFIG": kubeconfig}
        lading = str(Path(sys.executable).parent / "lading")
        kubectl = str(find_kubectl())
        times: dict[str, list[float]] = {k: [] for k in (
            "lading fresh", "lading unchanged", "kubectl fresh", "kubectl unchanged")}
        peak: dict[str, float] = {"lading": 0.0, "kubectl": 0.0}
        try:
            for round_ in range(args.rounds):
                ns_l, ns_k = f"bench-lading-{round_}", f"bench-kubectl-{round_}"
                ref = publish(generate(args.objects, ns_l), f"oci-layout:{tmp}/art{round_}:v1")
                manifest = tmp / f"kubectl-{round_}.yaml"
                manifest.write_text(dump_stream(generate(args.objects, ns_k)))
                install = [lading, "install", ref, "-n", ns_l, "--no-wait", "--quiet",
                           "--concurrency", str(args.concurrency), "--inventory", "bench"]
                apply = [kubectl, "apply", "--server-side", "--field-manager", "bench",
                         "-f", str(manifest)]
                for label, cmd in (("lading fresh", install), ("lading unchanged", install),
                                   ("kubectl fresh", apply), ("kubectl unchanged", apply)):
                    seconds, rss = timed(cmd, env)
                    times[label].append(seconds)
                    tool = label.split()[0]
                    peak[tool] = max(peak[tool], rss)
                    print(f"bench: round {round_ + 1} {label}: {times[label][-1]:.2f}s",
                          file=sys.stderr)
        finally:
            if started is not None:
                dev_env.down(started.state_dir)

    median = {k: statistics.median(v) for k, v in times.items()}
    print(f"{args.objects} objects ({', '.join(KINDS)}), concurrency {args.concurrency}, "
          f"median of {args.rounds} rounds")
    print(f"{'':20}{'lading':>10}{'kubectl':>10}{'kubectl/lading':>16}")
    for phase in ("fresh", "unchanged"):
        lt, kt = median[f"lading {phase}"], median[f"kubectl {phase}"]
        print(f"{phase:20}{lt:>9.2f}s{kt:>9.2f}s{kt / lt:>15.2f}x")
    print(f"peak RSS: lading {peak['lading']:.0f} MiB, kubectl {peak['kubectl']:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
