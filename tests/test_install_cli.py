"""`lading install | diff | uninstall | rollback` through the real CLI entry point: exit codes,
machine-readable stdout, and error messages a user can act on."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from runner.cli import main
from runner.common.kube import KubeClient, Resource, Target
from runner.dev.endpoints import ClusterEndpoint, RegistryEndpoint
from tests.artifacts import config_map, namespace_obj, publish

pytestmark = pytest.mark.cluster

CONFIGMAPS = Resource("", "v1", "ConfigMap", "configmaps", True)
NAMESPACES = Resource("", "v1", "Namespace", "namespaces", False)


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exited:
        main(args)
    out, err = capsys.readouterr()
    code = exited.value.code
    return (code if isinstance(code, int) else 1), out, err


def test_install_json_puts_only_the_result_on_stdout_and_diff_exit_code_tracks_drift(
    tmp_path: Path, ns: str, control_plane: ClusterEndpoint, registry: RegistryEndpoint,
    capsys: pytest.CaptureFixture[str],
) -> None:
    tagged = f"{registry.host}/cli/{ns}:v1"
    pinned = publish([config_map("settings", ns, {"mode": "fast"})], tagged)
    kube = ["--kubeconfig", str(control_plane.kubeconfig)]

    code, out, err = run(["install", tagged, "-n", ns, "-o", "json", "--no-wait", *kube], capsys)

    assert code == 0, err
    result = json.loads(out)
    assert result["status"] == "succeeded"
    assert result["ref"] == pinned
    assert result["inventory"] == ns  # the repository's last path component
    assert result["summary"]["created"] == 1
    assert f"resolved {tagged}" in err  # the tag is resolved once, and said so

    code, out, _ = run(["diff", pinned, "-n", ns, "-o", "json", *kube], capsys)
    assert code == 0
    assert json.loads(out)["in_sync"] is True

    client = KubeClient(Target(kubeconfig=str(control_plane.kubeconfig)))
    client.request("PATCH", CONFIGMAPS.object_path(ns, "settings"),
                   query={"fieldManager": "kubectl-edit"}, body={"data": {"mode": "slow"}},
                   content_type="application/merge-patch+json")
    client.close()
    code, out, _ = run(["diff", pinned, "-n", ns, *kube], capsys)
    assert code == 1
    assert "-  mode: slow" in out
    assert "+  mode: fast" in out


def test_failed_install_prints_the_result_and_exits_1(
    tmp_path: Path, ns: str, control_plane: ClusterEndpoint,
    capsys: pytest.CaptureFixture[str],
) -> None:
    client = KubeClient(Target(kubeconfig=str(control_plane.kubeconfig)))
    client.apply(CONFIGMAPS, config_map("owned", ns, {"k": "theirs"}), field_manager="helm")
    client.close()
    ref = publish([config_map("owned", ns, {"k": "ours"})], f"oci-layout:{tmp_path}/a:v1")

    code, out, _ = run(["install", ref, "-n", ns, "-o", "json", "--kubeconfig",
                        str(control_plane.kubeconfig)], capsys)

    assert code == 1
    result = json.loads(out)
    assert result["status"] == "failed"
    assert "helm owns .data.k" in result["error"]
    assert [c["action"] for c in result["changes"]] == ["failed"]


@pytest.mark.parametrize(("args", "message"), [
    (["install", "not a reference"], "no registry host"),
    (["install", "oci-layout:/nonexistent/layout@sha256:" + "a" * 64], "not an OCI image layout"),
    (["install", "localhost:5000/x@sha256:short"], "invalid digest"),
    (["install"], "give an artifact reference or -f PLAN"),
    (["install", "-f", "/nonexistent/plan.yaml"], "cannot read plan"),
    (["install", "oci-layout:/tmp/x:v1", "--timeout", "soon"], "invalid duration"),
])
def test_bad_input_exits_2_with_a_message_that_says_what_is_wrong(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(args, capsys)
    assert code == 2
    assert message in err
    assert out == ""


def test_unreachable_cluster_exits_3(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ref = publish([config_map("x", None, {"k": "1"})], f"oci-layout:{tmp_path}/a:v1")
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "dead",
        "clusters": [{"name": "dead", "cluster": {"server": "https://127.0.0.1:9",
                                                  "insecure-skip-tls-verify": True}}],
        "users": [{"name": "u", "user": {"token": "not-a-real-token-value"}}],
        "contexts": [{"name": "dead", "context": {"cluster": "dead", "user": "u"}}],
    }))
    code, _, err = run(["install", ref, "-n", "default", "--kubeconfig", str(kubeconfig)],
                       capsys)
    assert code == 3
    assert "cannot reach the API server" in err
    assert "not-a-real-token-value" not in err


def test_plan_file_with_an_unknown_field_is_refused_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text("apiVersion: lading.dev/v1\nkind: InstallPlan\nartifact:\n"
                    "  ref: oci-layout:/tmp/x@sha256:" + "a" * 64 + "\nprun: false\n")
    code, _, err = run(["install", "-f", str(plan)], capsys)
    assert code == 2
    assert "prun: unknown field" in err


def test_paths_in_an_install_plan_file_are_relative_to_the_plan(
    tmp_path: Path, ns: str, control_plane: ClusterEndpoint, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    plans = tmp_path / "plans"
    plans.mkdir()
    pinned = publish([config_map("from-plan", ns, {"k": "1"})], f"oci-layout:{plans}/art:v1")
    digest = pinned.rsplit("@", 1)[1]
    (plans / "install.yaml").write_text(
        "apiVersion: lading.dev/v1\nkind: InstallPlan\n"
        f"artifact:\n  ref: oci-layout:art@{digest}\n"
        f"namespace: {ns}\nwait: false\n")
    monkeypatch.chdir(tmp_path)  # not the plan's directory

    code, out, err = run(["install", "-f", "plans/install.yaml", "-o", "json", "--kubeconfig",
                          str(control_plane.kubeconfig)], capsys)

    assert code == 0, err
    assert json.loads(out)["ref"] == f"oci-layout:{plans}/art@{digest}"


def test_verbose_names_each_object_and_diff_without_a_reference_uses_the_inventory(
    tmp_path: Path, ns: str, control_plane: ClusterEndpoint, capsys: pytest.CaptureFixture[str],
) -> None:
    ref = publish([config_map("a", ns, {"k": "1"}), config_map("b", ns, {"k": "1"})],
                  f"oci-layout:{tmp_path / 'a'}:v1")
    kube = ["--kubeconfig", str(control_plane.kubeconfig)]

    code, _, err = run(["install", ref, "-n", ns, "--inventory", "app", "--no-wait", "-v",
                        *kube], capsys)
    assert code == 0, err
    assert f"created ConfigMap/a in {ns}" in err
    assert f"created ConfigMap/b in {ns}" in err

    code, _, err = run(["install", ref, "-n", ns, "--inventory", "app", "--no-wait", *kube],
                       capsys)
    assert code == 0
    assert err.count("preflight:") == 1  # said once, not again under the lock
    assert "created ConfigMap" not in err  # detail only with -v

    code, out, _ = run(["diff", "--inventory", "app", "-n", ns, "-o", "json", *kube], capsys)
    assert code == 0
    result = json.loads(out)
    assert result["ref"] == ref
    assert result["in_sync"] is True
    assert len(result["objects"]) == 2


def test_an_api_server_whose_certificate_our_ca_did_not_sign_is_exit_3_naming_the_ca(
    control_plane: ClusterEndpoint,
) -> None:
    import certifi

    from runner.common.errors import RemoteError

    client = KubeClient(Target(server=control_plane.server, ca_file=certifi.where(),
                               token="not-a-token"))
    try:
        with pytest.raises(RemoteError, match="not signed by the CA") as failure:
            client.get(CONFIGMAPS, "default", "x")
    finally:
        client.close()
    assert failure.value.exit_code == 3
    assert "not-a-token" not in str(failure.value)


def _lading(*args: str) -> subprocess.Popen[str]:
    """lading as its own process, with real pipes to read (or stop reading)."""
    return subprocess.Popen([sys.executable, "-m", "runner.cli", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_an_install_goes_on_when_nobody_reads_its_progress_any_more(
    tmp_path: Path, ns: str, kube: KubeClient, control_plane: ClusterEndpoint,
) -> None:
    # `lading install … 2>&1 | head -3`: the reader leaves after the preflight line, before
    # the first stage. Progress is for whoever watches; the install must not end between its
    # stages, half-applied, because nobody does any more.
    other = f"{ns}-b"
    objects = [namespace_obj(other), config_map("first", other, {"k": "v"}),
               *(config_map(f"cm-{i}", ns, {"i": str(i)}) for i in range(20))]
    ref = publish(objects, f"oci-layout:{tmp_path / 'art'}:v1")
    proc = _lading("install", ref, "-n", ns, "--no-wait", "-o", "json",
                   "--kubeconfig", str(control_plane.kubeconfig))
    try:
        assert proc.stderr is not None
        assert proc.stdout is not None
        seen: list[str] = []
        while not any("preflight:" in line for line in seen):
            line = proc.stderr.readline()
            assert line, f"ended before its preflight: {seen}"
            seen.append(line)
        proc.stderr.close()
        out = proc.stdout.read()
        code = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        kube.delete(NAMESPACES, None, other)
    assert code == 0, out
    result = json.loads(out)
    assert result["status"] == "succeeded"
    assert result["summary"]["created"] == 22
    assert len(kube.list(CONFIGMAPS, ns)) >= 20


def test_an_install_whose_result_nobody_reads_exits_with_its_own_code(
    tmp_path: Path, ns: str, kube: KubeClient, control_plane: ClusterEndpoint,
) -> None:
    # `lading install -o json … | true`: the result has no reader. The install succeeded, so
    # lading says so with its exit code, and not with an internal error about a pipe.
    objects = [config_map(f"cm-{i}", ns, {"i": str(i)}) for i in range(40)]
    ref = publish(objects, f"oci-layout:{tmp_path / 'art'}:v1")
    proc = _lading("install", ref, "-n", ns, "--no-wait", "-o", "json",
                   "--kubeconfig", str(control_plane.kubeconfig))
    assert proc.stdout is not None
    assert proc.stderr is not None
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 0, err
    assert "install succeeded: 40 created" in err
    assert "error" not in err  # no internal error about a pipe
    assert kube.get(CONFIGMAPS, ns, "cm-39") is not None
