"""`lading build --compose`: interpolation, env files, the Secret/ConfigMap split, workloads,
ports, probes, volumes, what is left out, and the errors that name file and field. Pure where
it can be (translate), through the CLI where the contract is (exit codes, the result)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from runner.build.compose import is_credential, memory_quantity, port_name
from runner.build.compose_load import load_project
from runner.build.compose_spec import load_compose
from runner.build.interpolate import InterpolationError, Lookups, interpolate, parse_env_file
from runner.common.errors import InputError
from tests.build_helpers import read_back
from tests.clirun import lading

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "compose"


def _by(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name)


def _build(tmp_path: Path, compose: str, *services: str, env: dict[str, str] | None = None
           ) -> tuple[list[dict[str, Any]], list[str]]:
    from runner.build.compose import select_services, translate

    (tmp_path / "compose.yaml").write_text(compose)
    project = load_project(tmp_path / "compose.yaml", "compose.yaml", [], environ=env or {})
    translation = translate(project, select_services(project, list(services), "compose.yaml"))
    return translation.objects, [f"{u.service}.{u.field}" for u in translation.untranslated]


@pytest.mark.parametrize(
    ("text", "variables", "expected"),
    [
        ("${A}", {"A": "1"}, "1"),
        ("$A-$B", {"A": "1"}, "1-"),
        ("${A:-dflt}", {"A": ""}, "dflt"),
        ("${A-dflt}", {"A": ""}, ""),
        ("${A:-${B:-deep}}", {}, "deep"),
        ("${A:+set}", {"A": "x"}, "set"),
        ("${A+set}", {"A": ""}, "set"),
        ("${A:+set}", {"A": ""}, ""),
        ("costs $$5", {}, "costs $5"),
        ("a $ b", {}, "a $ b"),
    ],
)
def test_interpolation_follows_the_compose_specification(
    text: str, variables: dict[str, str], expected: str
) -> None:
    assert interpolate(text, variables) == expected


def test_a_required_variable_stops_the_build_with_its_message() -> None:
    with pytest.raises(InterpolationError, match="NEEDED is unset or empty: give it"):
        interpolate("${NEEDED:?give it}", {})


def test_env_files_quote_comment_export_and_interpolate_like_compose() -> None:
    text = (
        "# comment\nexport A=1\nB=\"x${A}y\\n\"\nC='${A} literal'\nD=plain # trailing\nE\n"
    )
    values = parse_env_file(text, "x.env", {}, Lookups())

    assert values == {"A": "1", "B": "x1y\n", "C": "${A} literal", "D": "plain", "E": None}


def test_yaml_is_read_as_compose_reads_it_not_as_yaml_1_1() -> None:
    document = load_compose("services:\n  s:\n    image: x\n    ports: [22:22]\n"
                            "    environment: {A: yes, B: 0755}\n", "c.yaml")

    service = document["services"]["s"]
    assert service["ports"] == ["22:22"]
    assert service["environment"] == {"A": "yes", "B": "0755"}


@pytest.mark.parametrize(
    "name",
    ["DB_PASSWORD", "POSTGRES_PASS", "STRIPE_API_KEY", "SECRET_KEY", "GITHUB_TOKEN",
     "SESSION_SECRET", "GCP_CREDENTIALS", "password"],
)
def test_credential_names_go_to_the_secret(name: str) -> None:
    assert is_credential(name)


@pytest.mark.parametrize("name", ["DATABASE_HOST", "SSL_BYPASS", "KEYSPACE", "TOKEN_URL"])
def test_other_names_go_to_the_config_map(name: str) -> None:
    assert not is_credential(name)


def test_port_names_are_valid_unique_and_at_most_15_characters() -> None:
    taken: set[str] = set()
    names = []
    for wanted, target in [("web-ui-alertmanager", 9093), ("cluster", 9094), ("cluster", 9095),
                           (None, 8080), ("HTTP", 80), ("1234", 81), ("a--b", 82)]:
        name = port_name(wanted, target, "TCP", taken)
        taken.add(name)
        names.append(name)

    assert names == ["web-ui-alertman", "cluster", "cluster-2", "tcp-8080", "http", "tcp-81",
                     "a-b"]
    assert all(len(n) <= 15 for n in names)


def test_memory_values_read_as_docker_reads_them() -> None:
    assert [memory_quantity(v, "s") for v in ("512M", "1g", "64mb", 1536)] == [
        "512Mi", "1Gi", "64Mi", "1536"]


def test_the_shop_stack_splits_variables_mounts_both_and_keeps_state_in_statefulsets(
    tmp_path: Path,
) -> None:
    compose = (EXAMPLES / "shop" / "compose.yaml").read_text()
    objects, untranslated = _build(tmp_path, compose, env={"STRIPE_API_KEY": "sk_live_x"})

    secret = _by(objects, "Secret", "web-secret")
    assert {k: base64.b64decode(v).decode() for k, v in secret["data"].items()} == {
        "DATABASE_PASSWORD": "change-me", "SESSION_SECRET": "dev-session-secret",
        "STRIPE_API_KEY": "sk_live_x"}
    assert set(_by(objects, "ConfigMap", "web-config")["data"]) == {
        "DATABASE_HOST", "DATABASE_NAME", "DATABASE_USER", "DEBUG", "REDIS_URL"}
    web = _by(objects, "Deployment", "web")["spec"]
    container = web["template"]["spec"]["containers"][0]
    assert container["envFrom"] == [{"configMapRef": {"name": "web-config"}},
                                    {"secretRef": {"name": "web-secret"}}]
    assert web["replicas"] == 2
    assert container["resources"] == {"limits": {"cpu": "1500m", "memory": "512Mi"},
                                      "requests": {"cpu": "250m", "memory": "256Mi"}}
    assert container["readinessProbe"]["exec"]["command"][0] == "curl"
    assert container["startupProbe"]["failureThreshold"] == 4  # 20s start period / 5s
    db = _by(objects, "StatefulSet", "db")["spec"]
    assert db["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "5Gi"
    assert db["template"]["spec"]["containers"][0]["readinessProbe"]["exec"]["command"] == [
        "/bin/sh", "-c", "pg_isready -U shop -d shop"]
    # Clients in the cluster reach a service on its container port, as they do in compose.
    assert [p["port"] for p in _by(objects, "Service", "web")["spec"]["ports"]] == [8000, 9100]
    assert _by(objects, "Service", "cache")["spec"]["ports"][0]["name"] == "tcp-6379"
    assert untranslated == ["web.depends_on"]


def test_the_monitoring_stack_lists_what_has_no_kubernetes_form(tmp_path: Path) -> None:
    compose = (EXAMPLES / "monitoring" / "compose.yaml").read_text()
    objects, untranslated = _build(tmp_path, compose, env={})

    assert set(untranslated) == {
        "grafana.depends_on", "node-exporter.network_mode", "node-exporter.pid",
        "node-exporter.privileged", "node-exporter.volumes[0]", "prometheus.volumes[0]"}
    alertmanager = _by(objects, "Deployment", "alertmanager")["spec"]["template"]["spec"]
    ports = alertmanager["containers"][0]["ports"]
    assert [(p["name"], p["containerPort"], p["protocol"]) for p in ports] == [
        ("web-ui-alertman", 9093, "TCP"), ("cluster", 9094, "UDP"), ("cluster-2", 9094, "TCP")]
    assert alertmanager["volumes"] == [{"name": "vol-0", "emptyDir": {"medium": "Memory"}}]
    prometheus = _by(objects, "StatefulSet", "prometheus")["spec"]["template"]["spec"]
    assert prometheus["containers"][0]["securityContext"] == {"runAsUser": 65534,
                                                              "runAsGroup": 65534}
    assert _by(objects, "Secret", "grafana-secret")["data"].keys() == {
        "GF_SECURITY_ADMIN_PASSWORD"}


def test_only_the_named_services_are_built(tmp_path: Path) -> None:
    compose = (EXAMPLES / "shop" / "compose.yaml").read_text()
    objects, _ = _build(tmp_path, compose, "cache")

    assert {o["metadata"]["name"] for o in objects} == {"cache"}


def test_strict_refuses_untranslatable_features_naming_them(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    ran = lading(capsys, monkeypatch, "build", "--compose",
                 str(EXAMPLES / "monitoring" / "compose.yaml"), "--strict",
                 "--to", f"oci-layout:{tmp_path / 'out'}")

    assert ran.code == 2
    assert "services.node-exporter.privileged" in ran.err
    assert "services.prometheus.volumes[0]: host bind mount" in ran.err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("compose", "expected"),
    [
        ("services:\n  web:\n    image: x\n    replicas: 2\n",
         "services.web: unknown field 'replicas'"),
        ("services:\n  web:\n    image: x\n    ports: [{target: 80, protocol: 7}]\n",
         "services.web.ports[0].protocol"),
        ("services:\n  web:\n    image: x\n    volumes: [data:/d]\n",
         "the volume 'data' is not declared"),
        ("services:\n  web:\n    image: ${TAG:?TAG must be set}\n",
         "services.web.image: required variable TAG"),
        ("services:\n  web: [\n", "invalid YAML"),
    ],
)
def test_bad_compose_files_exit_2_naming_the_file_and_field(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    compose: str,
    expected: str,
) -> None:
    (tmp_path / "compose.yaml").write_text(compose)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TAG", raising=False)

    ran = lading(capsys, monkeypatch, "build", "--compose", "compose.yaml",
                 "--to", "oci-layout:out")

    assert ran.code == 2, ran.err
    assert "compose.yaml" in ran.err
    assert expected in ran.err


def test_env_files_interpolate_and_the_same_input_gives_the_same_digest(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    notes = EXAMPLES / "notes"
    for var in ("REGISTRY", "NOTES_VERSION", "WORKER_QUEUE", "NOTES_DB_PASSWORD"):
        monkeypatch.delenv(var, raising=False)
    results = []
    for n in (1, 2):
        ran = lading(capsys, monkeypatch, "build", "--compose", str(notes / "compose.yaml"),
                     "--env-file", str(notes / "prod.env"), "--inventory", "notes",
                     "--to", f"oci-layout:{tmp_path / f'out{n}'}", "-o", "json")
        assert ran.code == 0, ran.err
        results.append(json.loads(ran.out))

    assert results[0]["digest"] == results[1]["digest"]
    content = read_back(results[0]["ref"])
    inputs = content.config["inputs"]
    assert inputs["type"] == "compose"
    assert inputs["env_files"] == ["prod.env"]
    assert inputs["tools"]["compose-spec"].startswith("compose-go")
    assert inputs["variables"]["unset"] == ["REGISTRY", "WORKER_QUEUE"]
    objects = {o["metadata"]["name"] + "/" + o["kind"]: o for o, _ in content.objects()}
    api = objects["api/Deployment"]["spec"]
    assert api["replicas"] == 3
    assert api["template"]["spec"]["containers"][0]["image"] == (
        "ghcr.io/example/notes-api:1.7.0")
    config = objects["api-config/ConfigMap"]["data"]
    assert config["NOTES_DB_URL"] == "postgres://notes@db.internal:5432/notes"
    assert config["NOTES_LISTEN"] == ":9000"
    assert config["PRICE_LABEL"] == "costs $5"
    assert set(objects["api-secret/Secret"]["data"]) == {"NOTES_DB_PASSWORD",
                                                          "NOTES_SIGNING_KEY"}


def test_the_build_environment_overrides_env_files_and_its_names_are_recorded(
    tmp_path: Path,
) -> None:
    (tmp_path / "compose.yaml").write_text("services:\n  s:\n    image: x:${TAG}\n")
    (tmp_path / ".env").write_text("TAG=from-file\n")
    project = load_project(tmp_path / "compose.yaml", "compose.yaml", [],
                           environ={"TAG": "from-env"})

    assert project.document["services"]["s"]["image"] == "x:from-env"
    assert project.from_environment == ["TAG"]
    assert project.env_files[0].endswith(".env")


def test_an_env_file_outside_the_compose_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "host.env").write_text("A=1\n")
    (tmp_path / "sub" / "compose.yaml").write_text(
        "services:\n  s:\n    image: x\n    env_file: ../host.env\n")

    with pytest.raises(InputError, match=r"env_file\[0\].*outside"):
        load_project(tmp_path / "sub" / "compose.yaml", "compose.yaml", [], environ={})
