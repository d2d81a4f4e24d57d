"""`lading build --app`: the App spec's objects (pure), its secret strategies, its errors, and
the artifact it builds."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from plans.app import App
from plans.build import AppSource
from runner.build.app import app_objects, render_app
from runner.common.errors import InputError
from tests.build_helpers import objects_by_id, read_back
from tests.clirun import lading

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "app"


def _app(**fields: Any) -> App:
    return App.model_validate({
        "name": "web",
        "image": "ghcr.io/example/web:1.0.0",
        "ports": [{"name": "http", "port": 80, "container_port": 8080}],
        **fields,
    })


def _kinds(objects: list[dict[str, Any]]) -> list[str]:
    return sorted(o["kind"] for o in objects)


def test_core_objects_are_a_deployment_and_a_service_and_nothing_else() -> None:
    objects = app_objects(_app(env={"LOG_LEVEL": "info"}), None)

    assert _kinds(objects) == ["Deployment", "Service"]
    deployment = objects[0]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["env"] == [{"name": "LOG_LEVEL", "value": "info"}]
    assert container["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    service = objects[1]
    assert service["spec"]["ports"][0] == {
        "name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}


def test_optional_objects_appear_when_switched_on() -> None:
    app = _app(
        namespace="shop",
        env={"FEATURE": "on"},
        config_map=True,
        ingress={"host": "shop.example.com", "ingress_class": "nginx",
                 "tls": {"issuer": "letsencrypt"}},
        autoscaling={"min_replicas": 2, "max_replicas": 6, "cpu_utilization": 70},
        volume={"size": "5Gi", "mount_path": "/data", "storage_class": "fast"},
    )
    objects = {o["kind"]: o for o in app_objects(app, None)}

    assert set(objects) == {"Deployment", "Service", "ConfigMap", "Ingress",
                            "HorizontalPodAutoscaler", "PersistentVolumeClaim"}
    assert all(o["metadata"]["namespace"] == "shop" for o in objects.values())
    ingress = objects["Ingress"]
    assert ingress["metadata"]["annotations"] == {"cert-manager.io/cluster-issuer": "letsencrypt"}
    assert ingress["spec"]["tls"] == [{"hosts": ["shop.example.com"], "secretName": "web-tls"}]
    hpa = objects["HorizontalPodAutoscaler"]["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 6)
    assert hpa["metrics"][0]["resource"]["target"]["averageUtilization"] == 70
    deployment = objects["Deployment"]["spec"]
    # The HPA owns the replica count, and a single-node volume needs Recreate.
    assert "replicas" not in deployment
    assert deployment["strategy"] == {"type": "Recreate"}
    container = deployment["template"]["spec"]["containers"][0]
    assert container["envFrom"] == [{"configMapRef": {"name": "web-config"}}]
    assert objects["PersistentVolumeClaim"]["spec"]["storageClassName"] == "fast"


def test_external_secret_uses_the_eso_v1_api_and_is_mounted_with_env_from() -> None:
    app = _app(secret={"strategy": "external", "store": {"name": "vault"},
                       "keys": {"DB_PASSWORD": {"key": "prod/db", "property": "password"}}})
    rendered = render_app(AppSource(spec=app), Path("."))
    objects = list(yaml.safe_load_all(rendered.yaml))
    external = next(o for o in objects if o["kind"] == "ExternalSecret")

    assert external["apiVersion"] == "external-secrets.io/v1"
    assert external["spec"]["secretStoreRef"] == {"name": "vault", "kind": "ClusterSecretStore"}
    assert external["spec"]["target"]["name"] == "web-secret"
    assert external["spec"]["data"] == [
        {"secretKey": "DB_PASSWORD", "remoteRef": {"key": "prod/db", "property": "password"}}]
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["envFrom"] == [{"secretRef": {"name": "web-secret"}}]
    assert rendered.inputs["secret"] == {"strategy": "external", "keys": ["DB_PASSWORD"]}


def test_plain_secret_reads_values_from_the_environment_and_files_beside_the_spec(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WEB_DB_PASSWORD", "hunter2")
    (tmp_path / "token").write_text("tok-123")
    spec = tmp_path / "app.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "web", "image": "nginx", "ports": [{"name": "http", "port": 80}],
        "secret": {"strategy": "plain", "values": {
            "DB_PASSWORD": {"env": "WEB_DB_PASSWORD"}, "API_TOKEN": {"file": "token"}}},
    }))
    rendered = render_app(AppSource(file="app.yaml"), tmp_path)
    secret = next(o for o in yaml.safe_load_all(rendered.yaml) if o["kind"] == "Secret")

    assert {k: base64.b64decode(v).decode() for k, v in secret["data"].items()} == {
        "API_TOKEN": "tok-123", "DB_PASSWORD": "hunter2"}
    assert "hunter2" not in json.dumps(rendered.inputs)


def test_a_secret_file_outside_the_spec_directory_is_refused(tmp_path: Path) -> None:
    spec_dir = tmp_path / "spec"
    spec_dir.mkdir()
    (tmp_path / "outside").write_text("stolen")
    app = {"name": "web", "image": "nginx", "ports": [{"name": "http", "port": 80}],
           "secret": {"strategy": "plain", "values": {"X_TOKEN": {"file": "../outside"}}}}
    (spec_dir / "app.yaml").write_text(yaml.safe_dump(app))

    with pytest.raises(InputError, match=r"secret\.values\.X_TOKEN\.file.*outside"):
        render_app(AppSource(file="app.yaml"), spec_dir)


def test_a_missing_environment_variable_names_the_field_not_a_value(tmp_path: Path) -> None:
    app = _app(secret={"strategy": "plain", "values": {"DB_PASSWORD": {"env": "NOPE_UNSET"}}})
    with pytest.raises(InputError, match=r"secret\.values\.DB_PASSWORD\.env.*NOPE_UNSET"):
        render_app(AppSource(spec=app), tmp_path)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"ports": [{"name": "HTTP", "port": 80}]}, "ports.0.name"),
        ({"ports": [{"name": "1234", "port": 80}]}, "ports.0"),
        ({"ports": [{"name": "http", "port": 80}, {"name": "http", "port": 81}]}, "unique"),
        ({"replicas": "two"}, "replicas"),
        ({"autoscaling": {"min_replicas": 5, "max_replicas": 2}}, "autoscaling"),
        ({"secret": {"strategy": "sealed", "certificate": "c.pem",
                     "values": {"A_KEY": {"env": "X"}}}}, "namespace"),
        ({"ingress": {"host": "x", "port": "admin"}}, "ingress.port"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_bad_app_specs_exit_2_naming_the_file_and_field(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    change: dict[str, Any],
    field: str,
) -> None:
    spec = {"name": "web", "image": "nginx", "ports": [{"name": "http", "port": 80}], **change}
    (tmp_path / "app.yaml").write_text(yaml.safe_dump(spec))
    monkeypatch.chdir(tmp_path)

    ran = lading(capsys, monkeypatch, "build", "--app", "app.yaml", "--to", "oci-layout:out")

    assert ran.code == 2, ran.err
    assert "app.yaml" in ran.err
    assert field in ran.err


def test_the_same_app_spec_builds_the_same_digest_and_records_its_kind(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    example = EXAMPLES / "shop-web.yaml"
    digests = []
    for n in (1, 2):
        ran = lading(capsys, monkeypatch, "build", "--app", str(example), "-o", "json",
                     "--to", f"oci-layout:{tmp_path / f'out{n}'}:v1", "--inventory", "web",
                     "--check-reproducible")
        assert ran.code == 0, ran.err
        result = json.loads(ran.out)
        assert result["reproducible"] is True
        digests.append(result["digest"])

    assert digests[0] == digests[1]
    content = read_back(f"oci-layout:{tmp_path / 'out1'}@{digests[0]}")
    assert content.config["inputs"]["type"] == "app"
    assert content.config["inputs"]["tools"]["lading"]
    assert "external-secrets.io/v1/ExternalSecret/shop/web-secret" in objects_by_id(content)


def test_values_sealed_before_are_kept_so_the_digest_repeats_without_kubeseal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "cert.pem").write_text("not needed: nothing is sealed now\n")
    spec = {"name": "web", "namespace": "shop", "image": "nginx",
            "ports": [{"name": "http", "port": 80}],
            "secret": {"strategy": "sealed", "certificate": "cert.pem",
                       "values": {"DB_PASSWORD": {"sealed": "AgBy3i4OJSWK+PiTySYZZA=="}}}}
    (tmp_path / "app.yaml").write_text(yaml.safe_dump(spec))
    monkeypatch.setenv("LADING_KUBESEAL", str(tmp_path / "no-kubeseal-here"))

    ran = lading(capsys, monkeypatch, "build", "--app", str(tmp_path / "app.yaml"),
                 "--check-reproducible", "--to", f"oci-layout:{tmp_path / 'out'}", "-o", "json")

    assert ran.code == 0, ran.err
    content = read_back(json.loads(ran.out)["ref"])
    sealed = objects_by_id(content)["bitnami.com/v1alpha1/SealedSecret/shop/web-secret"]
    assert sealed["spec"]["encryptedData"] == {"DB_PASSWORD": "AgBy3i4OJSWK+PiTySYZZA=="}
    assert sealed["spec"]["template"]["metadata"]["name"] == "web-secret"
    assert "kubeseal" not in content.config["inputs"]["tools"]
