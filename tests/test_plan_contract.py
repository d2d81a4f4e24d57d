"""The control-plane contract without servers: schemas are current, example plans are valid,
and `lading run` refuses what it cannot run with a message that says what it can."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from plans.build import BuildPlan
from plans.install import InstallPlan
from plans.schema import SCHEMA_DIR, SCHEMAS, schema_text, stale_schemas, write_schemas
from runner.common.errors import InputError
from runner.run import load_plan, rebase
from tests.clirun import lading

EXAMPLES = sorted((Path(__file__).parent.parent / "plans" / "examples").glob("*.yaml"))


def test_schemas_on_disk_match_the_models() -> None:
    stale = stale_schemas()
    assert not stale, f"stale schemas {stale}: run `lading schema --write` and commit the files"


def test_schema_write_regenerates_every_file(tmp_path: Path) -> None:
    changed = write_schemas(tmp_path)
    assert sorted(p.name for p in changed) == sorted(f for _, f, _ in SCHEMAS.values())
    assert write_schemas(tmp_path) == []
    assert stale_schemas(tmp_path) == []


def test_lading_schema_prints_the_committed_schema(capsys, monkeypatch) -> None:
    ran = lading(capsys, monkeypatch, "schema", "install")
    assert ran.code == 0
    assert ran.out == (SCHEMA_DIR / "install-plan.json").read_text()
    jsonschema.Draft202012Validator.check_schema(json.loads(ran.out))


def test_every_schema_is_a_valid_json_schema() -> None:
    for name in SCHEMAS:
        jsonschema.Draft202012Validator.check_schema(json.loads(schema_text(name)))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_plan_is_valid_for_the_model_and_the_schema(path: Path) -> None:
    document = yaml.safe_load(path.read_text())
    plan = load_plan(document, str(path))
    name = "build" if isinstance(plan, BuildPlan) else "install"
    jsonschema.validate(document, json.loads(schema_text(name)))


def test_there_are_build_and_install_examples() -> None:
    kinds = {yaml.safe_load(p.read_text())["kind"] for p in EXAMPLES}
    assert kinds == {"BuildPlan", "InstallPlan"}


def _refused(document: object) -> InputError:
    with pytest.raises(InputError) as refused:
        load_plan(document, "plan.yaml")
    return refused.value


def test_run_refuses_an_unknown_api_version_and_names_the_supported_ones() -> None:
    error = _refused({"apiVersion": "lading.dev/v2", "kind": "BuildPlan"})
    assert "'lading.dev/v2'" in str(error)
    assert "lading.dev/v1 BuildPlan, lading.dev/v1 InstallPlan" in str(error)
    assert error.exit_code == 2


def test_run_refuses_an_unknown_kind_and_names_the_supported_ones() -> None:
    error = _refused({"apiVersion": "lading.dev/v1", "kind": "DeployPlan"})
    assert "'DeployPlan'" in str(error)
    assert "lading.dev/v1 InstallPlan" in str(error)


def test_run_refuses_a_plan_without_kind() -> None:
    assert "has no kind" in str(_refused({"apiVersion": "lading.dev/v1"}))
    assert "not a mapping" in str(_refused(["a", "list"]))


def test_run_refuses_fields_from_a_newer_plan_version() -> None:
    error = _refused({
        "apiVersion": "lading.dev/v1", "kind": "InstallPlan",
        "artifact": {"ref": "localhost:5000/a@sha256:" + "a" * 64},
        "rollout": {"canary": 10},
    })
    assert "rollout: unknown field" in str(error)
    assert "newer plan version" in str(error)
    assert "lading schema install" in str(error)


def test_lading_run_exits_2_for_a_broken_plan_on_stdin(capsys, monkeypatch) -> None:
    ran = lading(capsys, monkeypatch, "run", "-f", "-", stdin="kind: [unclosed\n")
    assert ran.code == 2
    assert "neither valid YAML nor JSON" in ran.err
    assert ran.out == ""


def test_lading_run_reports_errors_as_json_lines_with_log_format_json(capsys, monkeypatch) -> None:
    ran = lading(capsys, monkeypatch, "run", "-f", "-", "--log-format", "json",
                 stdin="apiVersion: lading.dev/v9\nkind: BuildPlan\n")
    assert ran.code == 2
    record = json.loads(ran.err.strip().splitlines()[-1])
    assert record["level"] == "error"
    assert record["exit_code"] == 2
    assert "lading.dev/v9" in record["message"]
    assert set(record) >= {"time", "level", "event", "message"}


def test_relative_paths_in_a_plan_resolve_against_its_directory(tmp_path: Path) -> None:
    plan = InstallPlan.model_validate({
        "artifact": {"ref": "oci-layout:carry@sha256:" + "b" * 64, "ca_file": "ca.pem"},
        "target": {"kubeconfig": "kube/config"},
    })
    moved = rebase(plan, tmp_path)
    assert isinstance(moved, InstallPlan)
    assert moved.artifact.ref == f"oci-layout:{tmp_path}/carry@sha256:" + "b" * 64
    assert moved.artifact.ca_file == f"{tmp_path}/ca.pem"
    assert moved.target.kubeconfig == f"{tmp_path}/kube/config"
    registry = InstallPlan.model_validate(
        {"artifact": {"ref": "localhost:5000/a@sha256:" + "b" * 64}}
    )
    assert rebase(registry, tmp_path).artifact.ref == registry.artifact.ref  # type: ignore[union-attr]
