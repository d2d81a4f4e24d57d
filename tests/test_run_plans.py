"""`lading run` against the real registry and API server: the example plans in plans/examples
run (pointed at the fixtures), and their result documents validate against plans/schemas."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from plans.schema import schema
from runner.dev.endpoints import CRASH_LOOP, FAULT_ANNOTATION, ClusterEndpoint, RegistryEndpoint
from tests.clirun import lading

pytestmark = [pytest.mark.cluster, pytest.mark.registry, pytest.mark.kustomize]

EXAMPLES = Path(__file__).parent.parent / "plans" / "examples"


def _example(name: str) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((EXAMPLES / name).read_text())
    return document


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _build_example(capsys, monkeypatch, name: str, registry: RegistryEndpoint) -> dict[str, Any]:
    plan = _example(name)
    repo = f"{registry.host}/{_unique('plans')}/example"
    plan["to"] = [f"{repo}:{ref.rsplit(':', 1)[1]}" for ref in plan["to"]]
    # On stdin with --base, exactly as a control plane would pipe it; relative source paths
    # then mean what they mean in the file. build.yaml builds ../../examples: the workspace is
    # the repository.
    ran = lading(capsys, monkeypatch, "run", "-f", "-", "--base", str(EXAMPLES),
                 "--workspace", str(EXAMPLES.parent.parent), stdin=yaml.safe_dump(plan))
    assert ran.code == 0, ran.err
    result: dict[str, Any] = json.loads(ran.out)
    jsonschema.validate(result, schema("build-result"))
    assert result["ref"] == f"{repo}@{result['digest']}"
    return result


def test_build_inline_example_then_install_example_by_digest(
    capsys, monkeypatch, tmp_path: Path, registry: RegistryEndpoint, control_plane: ClusterEndpoint
) -> None:
    built = _build_example(capsys, monkeypatch, "build-inline.yaml", registry)
    assert built["objects"] == 2
    assert built["version"] == "1.0.0"

    plan = _example("install.yaml")
    plan["artifact"]["ref"] = built["ref"]
    plan["namespace"] = _unique("run")
    plan["target"] = {"kubeconfig": str(control_plane.kubeconfig)}
    plan_file = tmp_path / "install.yaml"
    plan_file.write_text(yaml.safe_dump(plan))
    result_file = tmp_path / "result.json"

    ran = lading(capsys, monkeypatch, "run", "-f", str(plan_file), "--result", str(result_file),
                 "--log-format", "json")
    assert ran.code == 0, ran.err
    assert ran.out == ""  # --result takes the document off stdout
    result = json.loads(result_file.read_text())
    jsonschema.validate(result, schema("install-result"))
    assert result["status"] == "succeeded"
    assert result["digest"] == built["digest"]
    assert result["summary"]["created"] == 2
    events = [json.loads(line) for line in ran.err.splitlines()]
    assert all({"time", "level", "event", "message"} <= set(e) for e in events)
    assert events[0]["event"] == "start"
    assert events[-1] == {**events[-1], "event": "finished", "exit_code": 0}

    again = lading(capsys, monkeypatch, "run", "-f", str(plan_file), "-q")
    assert again.code == 0, again.err
    assert json.loads(again.out)["summary"] == {**json.loads(again.out)["summary"], "unchanged": 2}
    assert again.err == ""


def test_install_plan_that_fails_exits_1_with_its_result_document(
    capsys, monkeypatch, registry: RegistryEndpoint, rollout_cluster: ClusterEndpoint
) -> None:
    if not rollout_cluster.fault_stages:
        pytest.skip("this cluster has no kwok fault stages to drive a crash loop")
    pod_annotations = {FAULT_ANNOTATION: CRASH_LOOP}
    crashing = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "bad"},
        "spec": {"selector": {"matchLabels": {"app": "bad"}}, "template": {
            "metadata": {"labels": {"app": "bad"}, "annotations": pod_annotations},
            "spec": {"containers": [{"name": "app", "image": "example/app:1"}]}}},
    }
    build_plan = {"apiVersion": "lading.dev/v1", "kind": "BuildPlan",
                  "source": {"inline": {"manifests": yaml.safe_dump(crashing)}},
                  "to": [f"{registry.host}/{_unique('plans')}/bad:v1"]}
    built = lading(capsys, monkeypatch, "run", "-f", "-", stdin=yaml.safe_dump(build_plan))
    assert built.code == 0, built.err
    install_plan = {
        "apiVersion": "lading.dev/v1", "kind": "InstallPlan",
        "artifact": {"ref": json.loads(built.out)["ref"]},
        "target": {"kubeconfig": str(rollout_cluster.kubeconfig)},
        "namespace": _unique("run"), "create_namespace": True, "timeout": "30s",
    }
    ran = lading(capsys, monkeypatch, "run", "-f", "-", stdin=yaml.safe_dump(install_plan))
    assert ran.code == 1, ran.err
    result = json.loads(ran.out)
    jsonschema.validate(result, schema("install-result"))
    assert result["status"] == "failed"
    assert "Deployment/bad" in result["error"]
    assert "CrashLoopBackOff" in result["error"]
    assert "CrashLoopBackOff" in ran.err  # a Job's log (stderr) says why, not only stdout


def test_install_plan_for_a_missing_namespace_exits_2_before_writing(
    capsys, monkeypatch, registry: RegistryEndpoint, control_plane: ClusterEndpoint
) -> None:
    built = _build_example(capsys, monkeypatch, "build-inline.yaml", registry)
    plan = _example("install.yaml")
    plan.update(namespace=_unique("absent"), create_namespace=False)
    plan["artifact"]["ref"] = built["ref"]
    plan["target"] = {"kubeconfig": str(control_plane.kubeconfig)}
    ran = lading(capsys, monkeypatch, "run", "-f", "-", stdin=yaml.safe_dump(plan))
    assert ran.code == 2, ran.err
    assert ran.out == ""
    assert f"namespace '{plan['namespace']}' does not exist" in ran.err
    assert "--create-namespace" in ran.err


def test_build_kustomize_example_builds_the_examples_overlay(
    capsys, monkeypatch, registry: RegistryEndpoint, kustomize_bin: Path
) -> None:
    del kustomize_bin
    built = _build_example(capsys, monkeypatch, "build.yaml", registry)
    assert built["objects"] > 0
    assert sorted(built["tags"]) == ["dev", "latest"]
    assert len(built["refs"]) == 2
