"""Build + push time of examples/overlays/prod and of a generated 1,000-object overlay, next to
plain `kustomize build` of the same directories, and whether two runs give the same digest.

    .venv/bin/python bench/build_bench.py [--objects 1000] [--rounds 3]

Starts a local docker-registry (as `lading dev up` does) unless LADING_BENCH_REGISTRY names
one (host:port, plain HTTP). Both tools run as subprocesses, one after the other in each
round; each round pushes to a fresh repository, so every blob is really uploaded. Run on
demand; never part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from runner.dev import tools  # noqa: E402
from runner.dev.registry import start_docker_registry  # noqa: E402

LADING = str(REPO / ".venv" / "bin" / "lading")


def generate_overlay(root: Path, count: int) -> Path:
    """A base of `count` objects (ConfigMaps, Services, Deployments) and an overlay that
    sets a namespace, a label, an image tag and patches every Deployment."""
    base = root / "base"
    base.mkdir(parents=True)
    docs: list[dict[str, Any]] = []
    for i in range(count):
        name = f"svc-{i:04d}"
        kind = ("ConfigMap", "Service", "Deployment")[i % 3]
        meta = {"name": name, "labels": {"app": name}}
        if kind == "ConfigMap":
            docs.append({"apiVersion": "v1", "kind": kind, "metadata": meta,
                         "data": {"index": str(i), "payload": "x" * 200}})
        elif kind == "Service":
            docs.append({"apiVersion": "v1", "kind": kind, "metadata": meta,
                         "spec": {"selector": {"app": name}, "ports": [{"port": 80}]}})
        else:
            docs.append({"apiVersion": "apps/v1", "kind": kind, "metadata": meta, "spec": {
                "replicas": 1, "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [
                    {"name": "app", "image": "registry.example/app:0"}]}}}})
    (base / "objects.yaml").write_text(yaml.safe_dump_all(docs))
    (base / "kustomization.yaml").write_text("resources: [objects.yaml]\n")
    overlay = root / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump({
        "resources": ["../base"],
        "namespace": "bench",
        "labels": [{"pairs": {"tier": "bench"}}],
        "images": [{"name": "registry.example/app", "newTag": "1.0.0"}],
        "patches": [{"target": {"kind": "Deployment"}, "patch":
                     "- op: replace\n  path: /spec/replicas\n  value: 2\n"}],
    }))
    return overlay


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr}")
    return elapsed, proc.stdout


def bench(name: str, directory: Path, registry: str, rounds: int, env: dict[str, str]) -> None:
    kustomize = str(tools.find(tools.KUSTOMIZE))
    plain: list[float] = []
    lading: list[float] = []
    digests, durations = set(), []
    # Alternated, so a machine that slows down or speeds up part way through (another job,
    # a warmer page cache) weighs on both columns alike.
    for _ in range(rounds):
        plain.append(timed([kustomize, "build", str(directory)], env)[0])
        to = f"{registry}/bench-{uuid.uuid4().hex[:8]}/{name}:v1"
        seconds, out = timed([LADING, "build", "--kustomize", str(directory), "--to", to,
                              "-o", "json", "-q"], env)
        result = json.loads(out)
        lading.append(seconds)
        digests.add(result["digest"])
        durations.append(result["durations"])
    med_k, med_l = statistics.median(plain), statistics.median(lading)
    inner = {k: round(statistics.median(d[k] for d in durations), 3) for k in durations[0]}
    print(f"{name}: {result['objects']} objects, {result['size']} bytes")
    runs = {"kustomize build": plain, "lading build + push": lading}
    for label, times in runs.items():
        each = ", ".join(f"{s:.3f}" for s in times)
        print(f"  {label:<22}  median {statistics.median(times):6.3f}s  ({each})")
    print(f"  lading stages (median)  {inner}")
    paired = statistics.median(lad / kus for lad, kus in zip(lading, plain, strict=True))
    print(f"  ratio lading/kustomize  {med_l / med_k:.2f}x  (median of each round's: "
          f"{paired:.2f}x)")
    print(f"  digests over {rounds} runs: {', '.join(sorted(digests))}"
          + ("  (identical)" if len(digests) == 1 else "  (DIFFERENT)"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--objects", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    env = {**os.environ, "LADING_KUSTOMIZE": str(tools.find(tools.KUSTOMIZE))}
    env.pop("SOURCE_DATE_EPOCH", None)
    with tempfile.TemporaryDirectory(prefix="lading-build-bench-") as tmp:
        server = None
        registry = os.environ.get("LADING_BENCH_REGISTRY")
        if not registry:
            server = start_docker_registry(Path(tmp) / "registry")
            registry = server.endpoint.host
        try:
            bench("examples-prod", REPO / "examples" / "overlays" / "prod", registry,
                  args.rounds, env)
            overlay = generate_overlay(Path(tmp) / "gen", args.objects)
            bench(f"generated-{args.objects}", overlay, registry, args.rounds, env)
        finally:
            if server is not None:
                server.stop()


if __name__ == "__main__":
    main()
