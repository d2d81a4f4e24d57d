"""Pure logic of the local environment: tool lookup, state files, shell exports, registry
configuration, and never signalling a process that is not ours."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time
from pathlib import Path

import bcrypt
import pytest
from pydantic import SecretStr

from runner.common.errors import InputError
from runner.dev import env as dev_env
from runner.dev import process, tools
from runner.dev.controlplane import fake_node, kubeconfig, node_ready
from runner.dev.endpoints import ClusterEndpoint, RegistryEndpoint
from runner.dev.pki import issue, new_ca
from runner.dev.registry import distribution_config, docker_config, htpasswd_line


def test_versions_file_pins_every_cached_tool() -> None:
    versions = tools.pinned_versions()

    for tool in tools.CACHED_TOOLS:
        assert versions[tool.version_key].startswith("v")


def test_versions_parser_ignores_comments_and_rejects_garbage() -> None:
    assert tools.parse_versions("# c\n\nA=1\n B = v2 \n") == {"A": "1", "B": "v2"}
    with pytest.raises(InputError):
        tools.parse_versions("no equals sign")


def test_missing_tool_error_names_the_provisioning_script(tmp_path: Path) -> None:
    with pytest.raises(InputError) as raised:
        tools.find(tools.KWOK, cache=tmp_path)

    assert "scripts/provision-tools" in str(raised.value)
    assert str(tmp_path) in str(raised.value)


def test_tool_is_found_in_its_versioned_cache_directory(tmp_path: Path) -> None:
    version = tools.pinned_versions()["KUSTOMIZE_VERSION"]
    binary = tmp_path / "kustomize" / version / "bin" / "kustomize"
    binary.parent.mkdir(parents=True)
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)

    assert tools.find(tools.KUSTOMIZE, cache=tmp_path) == binary


def test_cache_root_honours_lading_cache() -> None:
    assert tools.cache_root({"LADING_CACHE": "/x/cache"}) == Path("/x/cache")
    assert tools.cache_root({}) == Path.home() / ".cache" / "lading"


def test_default_state_dir_prefers_lading_dev_state_then_xdg() -> None:
    assert dev_env.default_state_dir({"LADING_DEV_STATE": "/s"}) == Path("/s")
    assert dev_env.default_state_dir({"XDG_STATE_HOME": "/x"}) == Path("/x/lading/dev")
    assert dev_env.default_state_dir({}) == Path.home() / ".local/state/lading/dev"


def _environment(tmp_path: Path, **registry: object) -> dev_env.DevEnvironment:
    return dev_env.DevEnvironment(
        state_dir=tmp_path / "with space",
        cluster=ClusterEndpoint(kubeconfig=tmp_path / "with space" / "kubeconfig",
                                server="https://127.0.0.1:6443"),
        registry=RegistryEndpoint(host="127.0.0.1:5000", **registry),  # type: ignore[arg-type]
        processes=[],
        startup_seconds=1.0,
    )


def test_shell_exports_quote_paths_and_add_lines_only_for_enabled_features(
    tmp_path: Path,
) -> None:
    plain = dev_env.shell_exports(_environment(tmp_path))
    assert f"export KUBECONFIG='{tmp_path}/with space/kubeconfig'" in plain
    assert "export LADING_REGISTRY=127.0.0.1:5000" in plain
    assert not any("DOCKER_CONFIG" in line or "CA_FILE" in line for line in plain)

    secured = dev_env.shell_exports(
        _environment(tmp_path, tls=True, ca_file=tmp_path / "ca.crt",
                     docker_config=tmp_path / "docker")
    )
    assert f"export LADING_REGISTRY_CA_FILE={tmp_path}/ca.crt" in secured
    assert f"export DOCKER_CONFIG={tmp_path}/docker" in secured


def test_state_file_never_contains_the_registry_password(tmp_path: Path) -> None:
    environment = _environment(tmp_path, username="lading", password=SecretStr("hunter2-xyz"))

    assert "hunter2-xyz" not in environment.model_dump_json()
    assert "hunter2-xyz" not in repr(environment)


def test_password_is_read_back_from_the_credentials_file(tmp_path: Path) -> None:
    credentials = tmp_path / "credentials.json"
    credentials.write_text(json.dumps({"username": "lading", "password": "s3cret"}))
    endpoint = RegistryEndpoint(host="h:1", username="lading", credentials_file=credentials)

    loaded = endpoint.with_password_from_file()

    assert loaded.password is not None
    assert loaded.password.get_secret_value() == "s3cret"


def test_down_without_state_is_a_no_op(tmp_path: Path) -> None:
    assert dev_env.down(tmp_path) == []


def test_corrupt_state_file_is_an_input_error(tmp_path: Path) -> None:
    (tmp_path / dev_env.STATE_FILE).write_text("{not json")

    with pytest.raises(InputError):
        dev_env.load(tmp_path)


def test_htpasswd_line_is_a_bcrypt_hash_of_the_password() -> None:
    user, hashed = htpasswd_line("lading", "pw").rstrip("\n").split(":", 1)

    assert user == "lading"
    assert bcrypt.checkpw(b"pw", hashed.encode())


def test_docker_config_holds_basic_credentials_for_the_host() -> None:
    config = docker_config("127.0.0.1:5000", "u", "p")

    assert base64.b64decode(config["auths"]["127.0.0.1:5000"]["auth"]) == b"u:p"


def test_distribution_config_enables_tls_and_htpasswd_only_when_asked(tmp_path: Path) -> None:
    plain = distribution_config(tmp_path, "127.0.0.1:1", tls=None, htpasswd=None)
    assert "tls" not in plain["http"]
    assert "auth" not in plain

    secured = distribution_config(tmp_path, "127.0.0.1:1",
                                  tls=(tmp_path / "c", tmp_path / "k"), htpasswd=tmp_path / "h")
    assert secured["http"]["tls"] == {"certificate": str(tmp_path / "c"),
                                      "key": str(tmp_path / "k")}
    assert secured["auth"]["htpasswd"]["path"] == str(tmp_path / "h")


def test_kubeconfig_embeds_the_ca_and_client_certificate() -> None:
    ca = new_ca()
    client = issue(ca, "admin", client=True)

    config = kubeconfig("https://127.0.0.1:1", ca.cert_pem, client, "admin")

    cluster = config["clusters"][0]["cluster"]
    assert base64.b64decode(cluster["certificate-authority-data"]) == ca.cert_pem
    assert base64.b64decode(config["users"][0]["user"]["client-key-data"]) == client.key_pem
    assert config["current-context"] == config["contexts"][0]["name"]


def test_fake_node_is_annotated_for_kwok_and_ready_only_with_a_true_condition() -> None:
    node = fake_node("n")
    assert node["metadata"]["annotations"]["kwok.x-k8s.io/node"] == "fake"

    assert not node_ready(node)
    assert not node_ready(None)
    node["status"] = {"conditions": [{"type": "Ready", "status": "True"}]}
    assert node_ready(node)


def test_stop_never_signals_a_process_whose_executable_differs(tmp_path: Path) -> None:
    sleeper = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        # What a stale state file looks like after the pid was reused by another program.
        stale = process.ProcessRecord(name="etcd", pid=sleeper.pid,
                                      executable=tmp_path / "etcd", log=tmp_path / "etcd.log")
        assert not process.is_running(stale)
        process.stop(stale)
        assert sleeper.poll() is None
    finally:
        sleeper.kill()
        sleeper.wait()


def test_stop_ends_the_whole_process_group(tmp_path: Path) -> None:
    sh = shutil.which("sh")
    assert sh is not None
    record = process.start("forker", [sh, "-c", "sleep 30 & echo $! > child; wait"], tmp_path,
                           cwd=tmp_path)
    child_file = tmp_path / "child"
    deadline = time.monotonic() + 5
    while not (child_file.exists() and child_file.read_text().strip()):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    child = int(child_file.read_text())

    process.stop(record)

    assert not process.is_running(record)
    assert _gone_or_zombie(child)


def _gone_or_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    # An orphaned child is reaped by init a moment after it dies.
    return stat.rsplit(")", 1)[1].split()[0] == "Z"
