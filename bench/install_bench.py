"""lading's install engine next to its peers, in one run on this machine: lading, `kubectl apply
--server-side`, and a raw loop (bench/rawloop: forced server-side apply, 32 requests in flight,
nothing else) — the floor.

    .venv/bin/python bench/install_bench.py [--objects 1000] [--rtt 0,10,50] [--rounds 3]
        [--cases fresh,noop,drift,diff] [--concurrency N]

Cases: fresh (into an empty namespace), noop (the same again), drift (10 % of the objects edited
behind the tools' backs, then installed again), diff (lading diff / kubectl diff of an in-sync
namespace). RTT puts bench/delayproxy in front of the API server, adding RTT/2 each way (a CI
runner talking to a managed cluster). Rounds are interleaved (tool A, B, C, then A, B, C…) and
medians reported. Wall time, client CPU (user+sys) and peak RSS come from GNU time, which
measures each tool's own process tree, not this script's. The CPU the servers spent meanwhile
(etcd, kube-apiserver and the delay proxy, from /proc) is the rest of the work: on a small
machine that shares its cores with the servers, a run's wall time follows the work of all of
them, and the second table shows it for the fresh installs.

Starts its own control plane (etcd + kube-apiserver, as `lading dev up` does) unless
LADING_BENCH_KUBECONFIG names a cluster. Run on demand; never part of the test suite.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from runner.common.kube import KubeClient, Resource, Target  # noqa: E402
from runner.common.objects import dump_stream  # noqa: E402
from runner.dev import env as dev_env  # noqa: E402
from runner.dev.tools import find_kubectl  # noqa: E402
from tests.artifacts import publish  # noqa: E402

KINDS = ("ConfigMap", "Secret", "Service", "ServiceAccount", "Deployment", "Role", "RoleBinding")
PLURALS = {"ConfigMap": "configmaps", "Secret": "secrets", "Service": "services",
           "ServiceAccount": "serviceaccounts", "Deployment": "deployments", "Role": "roles",
           "RoleBinding": "rolebindings"}
NAMESPACES = Resource("", "v1", "Namespace", "namespaces", False)
CONFIGMAPS = Resource("", "v1", "ConfigMap", "configmaps", True)
SERVICES = Resource("", "v1", "Service", "services", True)
TOOLS = ("lading", "kubectl", "raw")
# What a round leaves in its namespaces: the objects, lading's inventory Secret and lock Lease.
CONTENTS = (
    Resource("", "v1", "ConfigMap", "configmaps", True),
    Resource("", "v1", "Secret", "secrets", True),
    SERVICES,
    Resource("", "v1", "ServiceAccount", "serviceaccounts", True),
    Resource("apps", "v1", "Deployment", "deployments", True),
    Resource("rbac.authorization.k8s.io", "v1", "Role", "roles", True),
    Resource("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", True),
    Resource("coordination.k8s.io", "v1", "Lease", "leases", True),
    Resource("", "v1", "Event", "events", True),
)


def generate(count: int, namespace: str) -> list[dict[str, Any]]:
    objects: list[dict[str, Any]] = []
    for i in range(count):
        kind, name = KINDS[i % len(KINDS)], f"obj-{i:05d}"
        meta = {"name": name, "namespace": namespace, "labels": {"app": name}}
        obj: dict[str, Any] = {"apiVersion": "v1", "kind": kind, "metadata": meta}
        if kind == "ConfigMap":
            obj["data"] = {"index": str(i), "payload": "x" * 200}
        elif kind == "Secret":
            obj["stringData"] = {"token": f"not-a-real-secret-{i}"}
        elif kind == "Service":
            obj["spec"] = {"selector": {"app": name}, "ports": [{"port": 80, "targetPort": 8080}]}
        elif kind == "Deployment":
            obj["apiVersion"] = "apps/v1"
            obj["spec"] = {
                "replicas": 1, "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [
                    {"name": "app", "image": "example/app:1",
                     "ports": [{"containerPort": 8080}]}]}}}
        elif kind == "Role":
            obj["apiVersion"] = "rbac.authorization.k8s.io/v1"
            obj["rules"] = [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}]
        elif kind == "RoleBinding":
            obj["apiVersion"] = "rbac.authorization.k8s.io/v1"
            obj["roleRef"] = {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                              "name": f"obj-{i - 1:05d}"}
            obj["subjects"] = [{"kind": "ServiceAccount", "name": "default",
                                "namespace": namespace}]
        objects.append(obj)
    return objects


def raw_lines(objects: list[dict[str, Any]]) -> str:
    """bench/rawloop's input: request path, a tab, the object as JSON."""
    lines = []
    for obj in objects:
        api = obj["apiVersion"]
        base = f"/apis/{api}" if "/" in api else f"/api/{api}"
        meta = obj["metadata"]
        path = f"{base}/namespaces/{meta['namespace']}/{PLURALS[obj['kind']]}/{meta['name']}"
        lines.append(f"{path}\t{json.dumps(obj, separators=(',', ':'))}")
    return "\n".join(lines) + "\n"


@dataclass
class Measure:
    wall: float
    cpu: float
    rss_mib: float
    server_cpu: float | None = None  # etcd, kube-apiserver and the proxy, while it ran


def process_cpu(pids: list[int]) -> float | None:
    """CPU seconds (user+sys) these processes have used so far; None when one is gone or
    none is known (a cluster the bench did not start)."""
    if not pids:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return None
        fields = stat.rpartition(")")[2].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def measured(cmd: list[str], env: dict[str, str], ok_codes: tuple[int, ...] = (0,),
             servers: list[int] | None = None) -> Measure:
    """Run `cmd` under GNU time: its own wall time, CPU and peak RSS (not this process's),
    and what the `servers` spent meanwhile."""
    servers = servers or []
    before = process_cpu(servers)
    with tempfile.NamedTemporaryFile("r", suffix=".time") as report:
        proc = subprocess.run(
            ["/usr/bin/time", "-o", report.name, "-f", "%e %U %S %M", *cmd],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if proc.returncode not in ok_codes:
            sys.exit(f"bench: {' '.join(cmd[:3])} exited {proc.returncode}:\n"
                     f"{proc.stderr[-3000:]}")
        wall, user, system, rss_kib = report.read().split()[-4:]
    after = process_cpu(servers)
    spent = after - before if before is not None and after is not None else None
    return Measure(float(wall), float(user) + float(system), int(rss_kib) / 1024, spent)


def installed_env() -> dict[str, str]:
    """The environment lading runs in as installed: `pip install` leaves compiled bytecode, so
    the measured runs get it too (compiled here once) instead of compiling lading's modules
    from source on every start, as PYTHONDONTWRITEBYTECODE=1 would have them do."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "runner"),
                    str(REPO / "plans")], check=True, stdout=subprocess.DEVNULL)
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def build_tools(out: Path) -> tuple[Path, Path]:
    bench = REPO / "bench"
    for tool in ("rawloop", "delayproxy"):
        subprocess.run(["go", "build", "-o", str(out / tool), f"./{tool}"], cwd=bench, check=True)
    return out / "rawloop", out / "delayproxy"


def credentials(kubeconfig: Path, out: Path) -> dict[str, str]:
    """The server and the client certificate of the (dev) kubeconfig, as files for rawloop."""
    doc = yaml.safe_load(kubeconfig.read_text())
    cluster = doc["clusters"][0]["cluster"]
    user = doc["users"][0]["user"]
    files = {"ca": cluster["certificate-authority-data"],
             "cert": user["client-certificate-data"], "key": user["client-key-data"]}
    found = {"server": cluster["server"]}
    for name, data in files.items():
        (out / name).write_bytes(base64.b64decode(data))
        found[name] = str(out / name)
    return found


def through_proxy(kubeconfig: Path, server: str, out: Path) -> Path:
    doc = yaml.safe_load(kubeconfig.read_text())
    doc["clusters"][0]["cluster"]["server"] = server
    out.write_text(yaml.safe_dump(doc))
    out.chmod(0o600)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=1000)
    parser.add_argument("--rtt", default="0,10", help="round-trip times to add, in ms")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cases", default="fresh,noop,drift,diff")
    parser.add_argument("--concurrency", type=int, default=None,
                        help="lading's --concurrency (default: lading's own default)")
    args = parser.parse_args()
    cases = args.cases.split(",")
    rtts = [int(r) for r in args.rtt.split(",")]

    with tempfile.TemporaryDirectory(prefix="lading-bench-") as tmp_text:
        tmp = Path(tmp_text)
        rawloop, delayproxy = build_tools(tmp)
        kubeconfig_env = os.environ.get("LADING_BENCH_KUBECONFIG")
        started = None
        if not kubeconfig_env:
            print("bench: starting a local control plane", file=sys.stderr)
            started = dev_env.up(tmp / "dev")
            kubeconfig = Path(started.cluster.kubeconfig)
        else:
            kubeconfig = Path(kubeconfig_env)
        creds = credentials(kubeconfig, tmp)
        upstream = creds["server"].removeprefix("https://")
        client = KubeClient(Target(kubeconfig=str(kubeconfig)), pool_size=32)
        lading = str(Path(sys.executable).parent / "lading")
        kubectl = str(find_kubectl())
        results: dict[tuple[int, str, str], list[Measure]] = {}
        try:
            for rtt in rtts:
                proxy = None
                server, config = creds["server"], kubeconfig
                if rtt:
                    proxy = subprocess.Popen(
                        [str(delayproxy), "-upstream", upstream, "-delay", f"{rtt / 2}ms"],
                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                    assert proxy.stdout is not None
                    server = "https://" + proxy.stdout.readline().strip()
                    config = through_proxy(kubeconfig, server, tmp / f"kubeconfig-{rtt}")
                env = {**installed_env(), "KUBECONFIG": str(config)}
                servers = [p.pid for p in started.processes
                           if p.name in ("etcd", "kube-apiserver")] if started else []
                if servers and proxy is not None:
                    servers.append(proxy.pid)
                try:
                    run_rtt(args, cases, rtt, tmp, client, env, server, creds,
                            lading, kubectl, str(rawloop), results, servers)
                finally:
                    if proxy is not None:
                        proxy.terminate()
                        proxy.wait()
        finally:
            client.close()
            if started is not None:
                dev_env.down(started.state_dir)
    report(args, cases, rtts, results)
    return 0


def run_rtt(args: argparse.Namespace, cases: list[str], rtt: int, tmp: Path,
            client: KubeClient, env: dict[str, str], server: str, creds: dict[str, str],
            lading: str, kubectl: str, rawloop: str,
            results: dict[tuple[int, str, str], list[Measure]], servers: list[int]) -> None:
    for round_ in range(args.rounds):
        spaces = {tool: f"bench-{tool}-{rtt}-{round_}" for tool in TOOLS}
        commands: dict[str, dict[str, list[str]]] = {}
        for tool, ns in spaces.items():
            client.apply(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace",
                                      "metadata": {"name": ns}}, field_manager="bench")
            objects = generate(args.objects, ns)
            if tool == "lading":
                ref = publish(objects, f"oci-layout:{tmp}/art-{rtt}-{round_}:v1")
                install = [lading, "install", ref, "-n", ns, "--no-wait", "--quiet",
                           "--force-conflicts", "--inventory", "bench"]
                if args.concurrency:
                    install += ["--concurrency", str(args.concurrency)]
                commands[tool] = {"apply": install, "diff": [lading, "diff", ref, "-n", ns,
                                                             "--inventory", "bench", "--quiet"]}
            elif tool == "kubectl":
                manifest = tmp / f"kubectl-{rtt}-{round_}.yaml"
                manifest.write_text(dump_stream(objects))
                commands[tool] = {
                    "apply": [kubectl, "apply", "--server-side", "--field-manager", "bench",
                              "--force-conflicts", "-f", str(manifest)],
                    "diff": [kubectl, "diff", "--server-side", "--field-manager", "bench",
                             "-f", str(manifest)]}
            else:
                lines = tmp / f"raw-{rtt}-{round_}.txt"
                lines.write_text(raw_lines(objects))
                commands[tool] = {"apply": [rawloop, "-server", server, "-ca", creds["ca"],
                                            "-cert", creds["cert"], "-key", creds["key"],
                                            "-objects", str(lines)]}
        for case in cases:
            for tool in TOOLS:
                if case == "drift":
                    drift(client, spaces[tool], args.objects)
                if case == "diff":
                    if "diff" not in commands[tool]:
                        continue
                    m = measured(commands[tool]["diff"], env, ok_codes=(0, 1), servers=servers)
                else:
                    m = measured(commands[tool]["apply"], env, servers=servers)
                results.setdefault((rtt, case, tool), []).append(m)
                print(f"bench: rtt {rtt} round {round_ + 1} {case:5} {tool:7} {m.wall:6.2f}s "
                      f"cpu {m.cpu:5.2f}s rss {m.rss_mib:4.0f} MiB", file=sys.stderr)
        for ns in spaces.values():
            remove_namespace(client, ns)


def remove_namespace(client: KubeClient, namespace: str) -> None:
    """Delete a round's namespace and everything in it before the next round starts.

    The bench's control plane runs no kube-controller-manager (its Deployment controller would
    create ReplicaSets while tools are measured), so nothing would empty a Terminating namespace:
    every round would leave its objects in etcd and the API server's caches, and later rounds
    would run against an ever larger store. Do the namespace controller's work here, unmeasured.
    """
    client.delete(NAMESPACES, None, namespace)
    for resource in CONTENTS:
        if resource.plural == "services":  # no DELETE on the collection: one by one
            services = client.list(resource, namespace)
            with ThreadPoolExecutor(16) as pool:
                list(pool.map(lambda s: client.delete(SERVICES, namespace, s["metadata"]["name"]),
                              services))
        else:
            client.request("DELETE", resource.collection_path(namespace), answer=False)
    client.request("PUT", f"/api/v1/namespaces/{namespace}/finalize", body={
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace},
        "spec": {"finalizers": []}}, answer=False)
    deadline = time.monotonic() + 60
    while client.get(NAMESPACES, None, namespace) is not None:
        if time.monotonic() > deadline:
            sys.exit(f"bench: namespace {namespace} still there a minute after its deletion")
        time.sleep(0.2)


def drift(client: KubeClient, namespace: str, count: int) -> None:
    """Edit every tenth ConfigMap's data as another manager would (kubectl edit)."""
    for i in range(0, count, len(KINDS) * 10):
        name = f"obj-{i:05d}"
        client.request("PATCH", CONFIGMAPS.object_path(namespace, name),
                       body={"data": {"payload": "edited"}},
                       content_type="application/merge-patch+json",
                       query={"fieldManager": "kubectl-edit"})


def report(args: argparse.Namespace, cases: list[str], rtts: list[int],
           results: dict[tuple[int, str, str], list[Measure]]) -> None:
    def med(rtt: int, case: str, tool: str, what: str) -> float | None:
        found = results.get((rtt, case, tool))
        return statistics.median(getattr(m, what) for m in found) if found else None

    print(f"\n{args.objects} objects ({', '.join(KINDS)}), one namespace; lading "
          f"--concurrency {args.concurrency or '(its default)'}, rawloop 32 in flight; "
          f"medians of {args.rounds} interleaved rounds; "
          f"load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} cores")
    print("| case | RTT ms | lading s | kubectl s | raw s | lading/raw | kubectl/lading "
          "| lading CPU s | kubectl CPU s | lading RSS MiB | kubectl RSS MiB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for rtt in rtts:
        for case in cases:
            lt, kt, rt = (med(rtt, case, t, "wall") for t in TOOLS)
            lc, kc = med(rtt, case, "lading", "cpu"), med(rtt, case, "kubectl", "cpu")
            lr, kr = med(rtt, case, "lading", "rss_mib"), med(rtt, case, "kubectl", "rss_mib")
            if case == "diff":  # compared with lading's own no-op install
                rt = med(rtt, "noop", "lading", "wall")

            def f(x: float | None, spec: str = ".2f") -> str:
                return "–" if x is None else format(x, spec)

            ratio_raw = f(lt / rt) + ("×" if case != "diff" else "× of no-op") if lt and rt \
                else "–"
            ratio_k = f(kt / lt) + "×" if lt and kt else "–"
            print(f"| {case} | {rtt} | {f(lt)} | {f(kt)} | "
                  f"{f(rt) if case != 'diff' else '–'} | {ratio_raw} | {ratio_k} | "
                  f"{f(lc)} | {f(kc)} | {f(lr, '.0f')} | {f(kr, '.0f')} |")
    work(cases, rtts, results)
    if not shutil.which("go"):
        print("(go not found: rawloop and delayproxy need the Go toolchain)")


def work(cases: list[str], rtts: list[int],
         results: dict[tuple[int, str, str], list[Measure]]) -> None:
    """The fresh installs' CPU, the tool's own and the servers' (etcd, kube-apiserver, the
    proxy) while it ran, lading next to the raw loop: medians of the rounds."""
    if "fresh" not in cases or not any(m.server_cpu is not None
                                       for m in results.get((rtts[0], "fresh", "lading"), [])):
        return
    print("\nfresh installs, CPU seconds while each ran (medians): the tool's own + the servers'"
          " (etcd, kube-apiserver, delay proxy)")
    print("| RTT ms | lading | raw | lading work ÷ raw work | lading wall ÷ raw wall |")
    print("|---|---|---|---|---|")
    for rtt in rtts:
        totals: dict[str, tuple[float, float, float]] = {}
        for tool in ("lading", "raw"):
            found = [m for m in results.get((rtt, "fresh", tool), []) if m.server_cpu is not None]
            if not found:
                break
            own = statistics.median(m.cpu for m in found)
            servers = statistics.median(m.server_cpu or 0.0 for m in found)
            totals[tool] = (own, servers, statistics.median(m.wall for m in found))
        if len(totals) < 2:
            continue
        (lo, ls, lw), (ro, rs, rw) = totals["lading"], totals["raw"]
        print(f"| {rtt} | {lo:.2f} + {ls:.2f} | {ro:.2f} + {rs:.2f} | "
              f"{(lo + ls) / (ro + rs):.2f}× | {lw / rw:.2f}× |")


if __name__ == "__main__":
    sys.exit(main())
