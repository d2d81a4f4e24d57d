"""Bad input through `lading build`: each exits 2 (or 3 for a registry it cannot reach or log in
to) with a message that names the problem, and secrets never show up."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
import yaml

from runner.dev.endpoints import RegistryEndpoint
from tests.artifacts import unique
from tests.build_helpers import EXAMPLES, push_manifestless_artifact
from tests.clirun import Ran, lading

pytestmark = [pytest.mark.kustomize]


@pytest.fixture(autouse=True)
def _tools(kustomize_bin: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LADING_KUSTOMIZE", str(kustomize_bin))


def _fails(ran: Ran, code: int, *says: str) -> None:
    assert ran.code == code, (ran.code, ran.err)
    assert ran.out == ""
    for text in says:
        assert text in ran.err


def _build(capsys, monkeypatch, tmp_path: Path, *args: str) -> Ran:
    return lading(capsys, monkeypatch, "build", *args, "--to", f"oci-layout:{tmp_path}/out:v1")


def test_malformed_yaml_names_the_file_and_line(capsys, monkeypatch, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\ndata: [unclosed\n")
    _fails(_build(capsys, monkeypatch, tmp_path, "--inline", str(bad)), 2, "bad.yaml", "line 6")


def test_a_document_without_kind_is_refused(capsys, monkeypatch, tmp_path: Path) -> None:
    (tmp_path / "k.yaml").write_text("apiVersion: v1\nmetadata:\n  name: a\n")
    (tmp_path / "kustomization.yaml").write_text("resources: [k.yaml]\n")
    ran = _build(capsys, monkeypatch, tmp_path, "--kustomize", str(tmp_path))
    # kustomize itself refuses a resource without kind, and says which file.
    _fails(ran, 2, "kustomize build", "k.yaml", "kind")


def test_a_document_without_kind_in_inline_yaml_is_refused(
    capsys, monkeypatch, tmp_path: Path
) -> None:
    (tmp_path / "k.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ok}\n---\n"
        "apiVersion: v1\nmetadata: {name: a}\n"
    )
    _fails(_build(capsys, monkeypatch, tmp_path, "--inline", str(tmp_path / "k.yaml")), 2, "kind")


def test_duplicates_across_inline_files_name_both_places(
    capsys, monkeypatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("one.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: same, namespace: n}\n"
    )
    Path("two.yaml").write_text(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\n---\n"
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: same, namespace: n}\n"
    )
    ran = _build(capsys, monkeypatch, tmp_path, "--inline", "one.yaml", "--inline", "two.yaml")
    _fails(
        ran,
        2,
        "duplicate object ConfigMap n/same: defined in one.yaml (object 1) and in "
        "two.yaml (object 2)",
    )


def test_duplicates_in_a_kustomization_are_refused_by_kustomize_naming_the_object(
    capsys, monkeypatch, tmp_path: Path
) -> None:
    (tmp_path / "a.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: same}\n")
    (tmp_path / "b.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: same}\n")
    (tmp_path / "kustomization.yaml").write_text("resources: [a.yaml, b.yaml]\n")
    ran = _build(capsys, monkeypatch, tmp_path, "--kustomize", str(tmp_path))
    _fails(
        ran, 2, "kustomize build", "already registered id", "ConfigMap.v1.[noGrp]/same", "b.yaml"
    )


def test_a_kustomize_error_reaches_the_user_with_the_file(
    capsys, monkeypatch, tmp_path: Path
) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources:\n  - missing-deployment.yaml\n")
    ran = _build(capsys, monkeypatch, tmp_path, "--kustomize", str(tmp_path))
    _fails(ran, 2, "kustomize build", "missing-deployment.yaml")


def test_a_missing_kustomize_path_is_refused(capsys, monkeypatch, tmp_path: Path) -> None:
    _fails(
        _build(capsys, monkeypatch, tmp_path, "--kustomize", str(tmp_path / "nope")),
        2,
        "nope",
        "is not a directory",
    )


def test_a_directory_without_kustomization_is_refused(capsys, monkeypatch, tmp_path: Path) -> None:
    _fails(
        _build(capsys, monkeypatch, tmp_path, "--kustomize", str(tmp_path)),
        2,
        "no kustomization.yaml",
    )


def test_a_missing_inline_file_is_refused(capsys, monkeypatch, tmp_path: Path) -> None:
    _fails(
        _build(capsys, monkeypatch, tmp_path, "--inline", "absent.yaml"),
        2,
        "absent.yaml",
        "does not exist",
    )


def test_an_artifact_without_manifests_cannot_be_brought(
    capsys, monkeypatch, tmp_path: Path
) -> None:
    source = push_manifestless_artifact(f"oci-layout:{tmp_path / 'foreign'}:v1")
    ran = _build(capsys, monkeypatch, tmp_path, "--artifact", source)
    _fails(ran, 2, "holds no Kubernetes manifests", "application/octet-stream")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("change", "field", "says"),
    [
        ({"plain_http": "yes"}, "plain_http", "valid boolean"),
        ({"version": 1.2}, "version", "valid string"),
        ({"to": "registry.example/app:1"}, "to", "valid list"),
        ({"destination": ["x"]}, "destination", "unknown field"),
        (
            {"source": {"kustomize": {"path": ".", "enableHelm": True}}},
            "enableHelm",
            "unknown field",
        ),
        (
            {"source": {"kustomize": {"path": "."}, "inline": {"files": ["a"]}}},
            "source",
            "exactly one",
        ),
        (
            {"source": {"kustomize": {"path": ".", "load_restrictor": "sometimes"}}},
            "load_restrictor",
            "rootOnly",
        ),
    ],
)
def test_plan_errors_name_the_field(
    capsys, monkeypatch, tmp_path: Path, change: dict[str, object], field: str, says: str
) -> None:
    plan = {
        "apiVersion": "lading.dev/v1",
        "kind": "BuildPlan",
        "source": {"kustomize": {"path": str(EXAMPLES / "overlays/dev")}},
        "to": [f"oci-layout:{tmp_path}/out"],
    }
    plan.update(change)
    (tmp_path / "plan.yaml").write_text(yaml.safe_dump(plan))
    ran = lading(capsys, monkeypatch, "build", "-f", str(tmp_path / "plan.yaml"))
    _fails(ran, 2, field, says)


def test_a_plan_on_stdin_is_read(capsys, monkeypatch, tmp_path: Path) -> None:
    plan = {
        "source": {"kustomize": {"path": str(EXAMPLES / "overlays/dev")}},
        "to": [f"oci-layout:{tmp_path}/out:v1"],
    }
    # The plan names files in two trees (the repository's examples, a temporary directory), so
    # its workspace is one that holds both.
    ran = lading(
        capsys,
        monkeypatch,
        "build",
        "-f",
        "-",
        "--workspace",
        "/",
        "-o",
        "json",
        stdin=json.dumps(plan),
    )
    assert ran.code == 0, ran.err
    assert json.loads(ran.out)["objects"] == 13


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--inline", "a.yaml", "--kustomize", "."], "give one source"),
        (["--to", "oci-layout:x"], "give a source"),
        (
            ["--inline", "a.yaml", "--enable-helm", "--to", "oci-layout:x"],
            "apply only to a kustomize source",
        ),
        (["--kustomize", ".", "--to", "oci-layout:x", "--annotation", "novalue"], "KEY=VALUE"),
        (["--kustomize", "."], "--to"),
        (["--kustomize", ".", "--to", "registry.example/app@sha256:" + "0" * 64], "names a digest"),
        (["--kustomize", ".", "--to", "App:1"], "registry host"),
    ],
)
def test_flag_misuse_is_a_usage_error(capsys, monkeypatch, args: list[str], says: str) -> None:
    ran = lading(capsys, monkeypatch, "build", *args)
    _fails(ran, 2, says)


def test_an_unreachable_registry_exits_3(capsys, monkeypatch, tmp_path: Path) -> None:
    # Port 9 (discard) on loopback: nothing listens, the connection is refused at once.
    ran = lading(
        capsys,
        monkeypatch,
        "build",
        "--kustomize",
        str(EXAMPLES / "overlays/dev"),
        "--to",
        "127.0.0.1:9/shop/app:v1",
    )
    _fails(ran, 3, "cannot reach registry 127.0.0.1:9", "Connection refused")


@pytest.mark.registry
def test_a_wrong_password_exits_3_without_showing_it(
    capsys, monkeypatch, tmp_path: Path, registry_auth_tls: RegistryEndpoint
) -> None:
    assert registry_auth_tls.ca_file is not None
    wrong = "not-the-password-" + unique("x")
    token = base64.b64encode(f"{registry_auth_tls.username}:{wrong}".encode()).decode()
    (tmp_path / "config.json").write_text(
        json.dumps({"auths": {registry_auth_tls.host: {"auth": token}}})
    )
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    ran = lading(
        capsys,
        monkeypatch,
        "build",
        "--kustomize",
        str(EXAMPLES / "overlays/dev"),
        "--to",
        f"{registry_auth_tls.host}/shop/app:v1",
        "--ca-file",
        str(registry_auth_tls.ca_file),
        "-v",
    )
    _fails(ran, 3, "refused access", "HTTP 401")
    assert wrong not in ran.err
    assert token not in ran.err


@pytest.mark.registry
def test_no_credentials_for_an_auth_registry_exits_3(
    capsys, monkeypatch, tmp_path: Path, registry_auth_tls: RegistryEndpoint
) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))  # an empty docker config directory
    ran = lading(
        capsys,
        monkeypatch,
        "build",
        "--kustomize",
        str(EXAMPLES / "overlays/dev"),
        "--to",
        f"{registry_auth_tls.host}/shop/app:v1",
        "--ca-file",
        str(registry_auth_tls.ca_file),
    )
    _fails(ran, 3, "requires credentials", "docker login")


@pytest.mark.registry
def test_a_tls_registry_on_loopback_without_its_ca_says_to_pass_ca_file(
    capsys, monkeypatch, tmp_path: Path, registry_auth_tls: RegistryEndpoint
) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    ran = lading(
        capsys,
        monkeypatch,
        "build",
        "--kustomize",
        str(EXAMPLES / "overlays/dev"),
        "--to",
        f"{registry_auth_tls.host}/shop/app:v1",
    )
    _fails(ran, 3, "speaks HTTPS", "--ca-file")
