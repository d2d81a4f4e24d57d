"""Builds on a shared runner (issue 9), with the real kustomize and the real registry: a plan's
paths stay inside its workspace, kustomize's load restrictor stays on unless the person running
lading turns it off, source URLs lose their credentials, and the artifact records the inventory
it installs into, whatever it is later called."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from runner.common.errors import LadingError
from runner.dev.endpoints import RegistryEndpoint
from tests.artifacts import unique
from tests.build_helpers import read_back
from tests.clirun import Ran, lading

pytestmark = [pytest.mark.kustomize]

CONFIG_MAP = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  a: '1'\n"
# `lading build -f` and `lading run -f` load a BuildPlan the same way.
COMMANDS = ["build", "run"]


@pytest.fixture(autouse=True)
def _tools(kustomize_bin: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LADING_KUSTOMIZE", str(kustomize_bin))
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _plan(directory: Path, **fields: Any) -> Path:
    document = {"apiVersion": "lading.dev/v1", "kind": "BuildPlan", **fields}
    return _write(directory / "plan.yaml", yaml.safe_dump(document))


def _run(capsys, monkeypatch, command: str, plan: Path, *args: str) -> Ran:
    return lading(capsys, monkeypatch, command, "-f", str(plan), *args)


def _refused(ran: Ran, *says: str) -> None:
    assert ran.code == 2, (ran.code, ran.err)
    assert ran.out == ""
    for text in says:
        assert text in ran.err


def _json(ran: Ran) -> dict[str, Any]:
    assert ran.code == 0, ran.err
    document: dict[str, Any] = json.loads(ran.out)
    return document


def _absent(ref: str) -> None:
    with pytest.raises(LadingError):
        read_back(ref)


def _inline(name: str = "c") -> dict[str, Any]:
    return {"inline": {"manifests": CONFIG_MAP.format(name=name)}}


# -- paths stay inside the workspace -----------------------------------------------------------


@pytest.mark.registry
@pytest.mark.parametrize("command", COMMANDS)
def test_a_plan_naming_etc_passwd_exits_2_and_pushes_nothing(
    capsys, monkeypatch, tmp_path: Path, registry: RegistryEndpoint, command: str
) -> None:
    to = f"{registry.host}/{unique('safety')}/app:v1"
    plan = _plan(tmp_path, source={"inline": {"files": ["/etc/passwd"]}}, to=[to])
    _refused(
        _run(capsys, monkeypatch, command, plan),
        "source.inline.files[0]",
        "/etc/passwd",
        "outside the workspace",
    )
    _absent(to)


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"source": {"inline": {"files": ["../secret.yaml"]}}}, "source.inline.files[0]"),
        (
            {"source": {"inline": {"files": ["cm.yaml", "sub/../../secret.yaml"]}}},
            "source.inline.files[1]",
        ),
        ({"source": {"kustomize": {"path": "../outside"}}}, "source.kustomize.path"),
        ({"source": _inline(), "ca_file": "/etc/ssl/certs/ca.pem"}, "ca_file"),
        (
            {"source": _inline(), "sign": True, "sign_trust_config": "../trust.json"},
            "sign_trust_config",
        ),
    ],
)
def test_a_path_that_escapes_the_workspace_is_refused_naming_the_field(
    capsys, monkeypatch, tmp_path: Path, command: str, fields: dict[str, Any], field: str
) -> None:
    _write(tmp_path / "secret.yaml", CONFIG_MAP.format(name="secret"))
    _write(tmp_path / "outside" / "kustomization.yaml", "resources: [../secret.yaml]\n")
    _write(tmp_path / "trust.json", "{}")
    workspace = tmp_path / "ws"
    _write(workspace / "cm.yaml", CONFIG_MAP.format(name="c"))
    plan = _plan(workspace, to=["oci-layout:out:v1"], **fields)
    _refused(_run(capsys, monkeypatch, command, plan), field, "outside the workspace")
    assert not (workspace / "out").exists()


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("link", ["directory", "file"])
def test_a_symlink_anywhere_in_a_path_that_leads_out_is_refused(
    capsys, monkeypatch, tmp_path: Path, command: str, link: str
) -> None:
    _write(tmp_path / "outside" / "cm.yaml", CONFIG_MAP.format(name="secret"))
    workspace = tmp_path / "ws"
    workspace.mkdir()
    if link == "directory":
        (workspace / "shared").symlink_to(tmp_path / "outside")
        name = "shared/cm.yaml"
    else:
        (workspace / "cm.yaml").symlink_to(tmp_path / "outside" / "cm.yaml")
        name = "cm.yaml"
    plan = _plan(workspace, source={"inline": {"files": [name]}}, to=["oci-layout:out:v1"])
    _refused(
        _run(capsys, monkeypatch, command, plan),
        "source.inline.files[0]",
        str(tmp_path / "outside"),
    )
    assert not (workspace / "out").exists()


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("to", ["oci-layout:../../../escaped:v1", "../../../escaped.tar"])
def test_a_layout_destination_outside_the_workspace_is_refused_and_nothing_is_written(
    capsys, monkeypatch, tmp_path: Path, command: str, to: str
) -> None:
    workspace = tmp_path / "a" / "b" / "ws"
    plan = _plan(workspace, source=_inline(), to=[to])
    _refused(_run(capsys, monkeypatch, command, plan), "to[0]", "outside the workspace")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]


@pytest.mark.parametrize("command", COMMANDS)
def test_a_wider_workspace_given_on_the_command_line_lets_a_plan_reach_into_it(
    capsys, monkeypatch, tmp_path: Path, command: str
) -> None:
    _write(tmp_path / "manifests" / "cm.yaml", CONFIG_MAP.format(name="c"))
    plan = _plan(
        tmp_path / "plans",
        source={"inline": {"files": ["../manifests/cm.yaml"]}},
        to=["oci-layout:../out:v1"],
    )
    _refused(_run(capsys, monkeypatch, command, plan), "source.inline.files[0]", "--workspace")
    result = _json(
        _run(capsys, monkeypatch, command, plan, "--workspace", str(tmp_path), "-o", "json")
    )
    assert result["ref"].startswith(f"oci-layout:{tmp_path / 'out'}@sha256:")
    assert result["objects"] == 1


def test_flags_a_person_types_are_not_confined_to_a_workspace(
    capsys, monkeypatch, tmp_path: Path
) -> None:
    # A plan in one directory, a manifest and a destination named on the command line elsewhere.
    plan = _plan(tmp_path / "plans", source=_inline(), to=["oci-layout:out:v1"])
    manifest = _write(tmp_path / "elsewhere" / "cm.yaml", CONFIG_MAP.format(name="typed"))
    to = f"oci-layout:{tmp_path / 'elsewhere' / 'out'}:v1"
    result = _json(
        lading(
            capsys,
            monkeypatch,
            "build",
            "-f",
            str(plan),
            "--inline",
            str(manifest),
            "--to",
            to,
            "-o",
            "json",
        )
    )
    assert result["objects"] == 1
    assert read_back(to).config["objects"]["ids"] == ["/v1/ConfigMap//typed"]


def test_a_workspace_without_a_plan_file_is_a_usage_error(
    capsys, monkeypatch, tmp_path: Path
) -> None:
    ran = lading(
        capsys,
        monkeypatch,
        "build",
        "--inline",
        str(_write(tmp_path / "cm.yaml", CONFIG_MAP.format(name="c"))),
        "--to",
        f"oci-layout:{tmp_path / 'out'}:v1",
        "--workspace",
        str(tmp_path),
    )
    _refused(ran, "--workspace", "-f PLAN")
    assert not (tmp_path / "out").exists()


# -- symlinks inside a kustomize tree --------------------------------------------------------


def _tree_with_a_link_out(tmp_path: Path) -> Path:
    """ws/app/kustomization.yaml names `shared`, a symlink to a kustomization outside ws."""
    _write(tmp_path / "outside" / "kustomization.yaml", "resources: [cm.yaml]\n")
    _write(tmp_path / "outside" / "cm.yaml", CONFIG_MAP.format(name="secret"))
    app = tmp_path / "ws" / "app"
    _write(app / "kustomization.yaml", "resources: [shared]\n")
    (app / "shared").symlink_to(Path("..", "..", "outside"), target_is_directory=True)
    return app


@pytest.mark.parametrize("how", ["build -f", "run -f", "build --kustomize"])
def test_a_directory_symlink_in_a_kustomize_tree_that_leads_out_is_refused(
    capsys, monkeypatch, tmp_path: Path, kustomize_bin: Path, how: str
) -> None:
    app = _tree_with_a_link_out(tmp_path)
    # kustomize's own load restrictor lets this through: the linked directory is a new root.
    plain = subprocess.run(
        [str(kustomize_bin), "build", str(app)], capture_output=True, text=True, check=True
    )
    assert "name: secret" in plain.stdout

    out = tmp_path / "ws" / "out"
    if how == "build --kustomize":
        ran = lading(
            capsys, monkeypatch, "build", "--kustomize", str(app), "--to", f"oci-layout:{out}:v1"
        )
    else:
        plan = _plan(tmp_path / "ws", source={"kustomize": {"path": "app"}}, to=["oci-layout:out"])
        ran = _run(capsys, monkeypatch, how.split()[0], plan)
    _refused(ran, "source.kustomize.path", "symlink 'shared'", str(tmp_path / "outside"))
    assert not out.exists()


def test_a_symlink_that_stays_inside_the_kustomize_tree_is_followed(
    capsys, monkeypatch, tmp_path: Path
) -> None:
    app = tmp_path / "app"
    _write(app / "real" / "cm.yaml", CONFIG_MAP.format(name="inside"))
    _write(app / "kustomization.yaml", "resources: [linked/cm.yaml]\n")
    (app / "linked").symlink_to("real", target_is_directory=True)
    to = f"oci-layout:{tmp_path / 'out'}:v1"
    result = _json(
        lading(capsys, monkeypatch, "build", "--kustomize", str(app), "--to", to, "-o", "json")
    )
    assert result["objects"] == 1


# -- kustomize's load restrictor ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "allow"),
    [("build", "--load-restrictor=none"), ("run", "--allow-load-restrictor-none")],
)
def test_load_restrictor_none_in_a_plan_needs_a_flag_on_the_command_line(
    capsys, monkeypatch, tmp_path: Path, command: str, allow: str
) -> None:
    workspace = tmp_path / "ws"
    _write(workspace / "settings.env", "LEVEL=debug\n")
    # A generator reading a file above its kustomization: only with the restrictor off.
    _write(
        workspace / "app" / "kustomization.yaml",
        "configMapGenerator:\n- name: settings\n  envs: [../settings.env]\n",
    )
    plan = _plan(
        workspace,
        source={"kustomize": {"path": "app", "load_restrictor": "none"}},
        to=["oci-layout:out:v1"],
    )
    _refused(_run(capsys, monkeypatch, command, plan), "load_restrictor", allow.split("=")[0])
    assert not (workspace / "out").exists()

    result = _json(_run(capsys, monkeypatch, command, plan, allow, "-o", "json"))
    assert result["objects"] == 1
    content = read_back(f"oci-layout:{workspace / 'out'}:v1")
    assert content.config["inputs"]["load_restrictor"] == "none"


# -- credentials in source URLs ----------------------------------------------------------------

SECRETS = ("pa55word", "tok-123", "sig-456", "glpat-789")


def _nowhere(content_ref: str, ran: Ran) -> None:
    content = read_back(content_ref)
    places = {
        "config": json.dumps(content.config),
        "manifest": content.manifest.raw.decode(),
        "result": ran.out,
        "log": ran.err,
    }
    for where, text in places.items():
        for secret in SECRETS:
            assert secret not in text, f"{secret} in the {where}"


@pytest.mark.registry
def test_credentials_in_the_source_url_reach_neither_the_registry_nor_the_result(
    capsys, monkeypatch, tmp_path: Path, registry: RegistryEndpoint
) -> None:
    manifest = _write(tmp_path / "cm.yaml", CONFIG_MAP.format(name="c"))
    to = f"{registry.host}/{unique('safety')}/app:v1"
    url = (
        "https://ci:pa55word@git.example/shop/config.git"
        "?access_token=tok-123&ref=main&X-Amz-Signature=sig-456&Private_Token=glpat-789"
    )
    ran = lading(
        capsys,
        monkeypatch,
        "build",
        "--inline",
        str(manifest),
        "--to",
        to,
        "--source",
        url,
        "--annotation",
        f"org.opencontainers.image.source={url}",
        "-v",
        "-o",
        "json",
    )
    clean = "https://git.example/shop/config.git?ref=main"
    assert _json(ran)["source"]["url"] == clean
    content = read_back(to)
    assert content.config["source"]["url"] == clean
    assert content.manifest.annotations["org.opencontainers.image.source"] == clean
    _nowhere(to, ran)


def test_a_git_remote_with_credentials_is_recorded_without_them(
    capsys, monkeypatch, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    _write(repo / "deploy" / "cm.yaml", CONFIG_MAP.format(name="c"))
    remote = "https://bot:pa55word@git.example/o/r.git?private_token=glpat-789"
    env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}
    for args in (["init", "-q", "-b", "main"], ["remote", "add", "origin", remote]):
        subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True)
    plan = _plan(repo / "deploy", source={"inline": {"files": ["cm.yaml"]}}, to=["oci-layout:out"])
    ran = _run(capsys, monkeypatch, "run", plan)
    result = _json(ran)
    assert result["source"]["url"] == "https://git.example/o/r.git"
    _nowhere(result["ref"], ran)


# -- the inventory an artifact records ---------------------------------------------------------


@pytest.mark.registry
def test_the_config_records_the_inventory_so_registry_and_layout_builds_share_a_digest(
    capsys, monkeypatch, tmp_path: Path, registry: RegistryEndpoint
) -> None:
    manifest = _write(tmp_path / "cm.yaml", CONFIG_MAP.format(name="c"))

    def build(to: str, *args: str) -> dict[str, Any]:
        return _json(
            lading(
                capsys,
                monkeypatch,
                "build",
                "--inline",
                str(manifest),
                "--to",
                to,
                *args,
                "-o",
                "json",
            )
        )

    to = f"{registry.host}/{unique('safety')}/team/app:1"
    pushed = build(to)
    assert pushed["inventory"] == "app"
    assert read_back(to).config["inventory"] == "app"

    carried = build(f"oci-layout:{tmp_path / 'carry'}:1", "--inventory", "app")
    assert carried["inventory"] == "app"
    assert carried["digest"] == pushed["digest"]

    # Named after the layout directory, it is another artifact: another inventory.
    other = build(f"oci-layout:{tmp_path / 'Carry_Dir'}:1")
    assert other["inventory"] == "carry-dir"
    assert other["digest"] != pushed["digest"]


def test_a_plan_records_the_inventory_it_names(capsys, monkeypatch, tmp_path: Path) -> None:
    plan = _plan(tmp_path, source=_inline(), to=["bundle.tar"], inventory="shop-web")
    result = _json(_run(capsys, monkeypatch, "run", plan))
    assert result["inventory"] == "shop-web"
    assert read_back(result["ref"]).config["inventory"] == "shop-web"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--inventory", "Shop_Web"], "inventory"),
        (["--inventory", "x" * 54], "inventory"),
        (["--to", "oci-layout:{tmp}/___:v1"], "--inventory NAME"),
    ],
)
def test_an_inventory_name_that_cannot_be_valid_is_refused(
    capsys, monkeypatch, tmp_path: Path, args: list[str], says: str
) -> None:
    manifest = _write(tmp_path / "cm.yaml", CONFIG_MAP.format(name="c"))
    args = [a.format(tmp=tmp_path) for a in args]
    if "--to" not in args:
        args += ["--to", f"oci-layout:{tmp_path / 'out'}:v1"]
    _refused(lading(capsys, monkeypatch, "build", "--inline", str(manifest), *args), says)
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "___").exists()


def test_a_copied_artifact_reports_its_recorded_inventory_and_takes_no_new_one(
    capsys, monkeypatch, tmp_path: Path
) -> None:
    manifest = _write(tmp_path / "cm.yaml", CONFIG_MAP.format(name="c"))
    source = f"oci-layout:{tmp_path / 'src'}:v1"
    built = _json(
        lading(
            capsys,
            monkeypatch,
            "build",
            "--inline",
            str(manifest),
            "--to",
            source,
            "--inventory",
            "shop",
            "-o",
            "json",
        )
    )
    copy = ["build", "--artifact", source, "--to", f"oci-layout:{tmp_path / 'dst'}:v1"]
    copied = _json(lading(capsys, monkeypatch, *copy, "-o", "json"))
    assert (copied["digest"], copied["inventory"], copied["copied"]) == (
        built["digest"],
        "shop",
        True,
    )
    _refused(lading(capsys, monkeypatch, *copy, "--inventory", "other"), "copied", "install")
