"""`--to git:REPO[#BRANCH][:DIR]`: the canonical manifests committed and pushed with trailers,
a no-op for a digest already there, plain Secrets refused; real `git` against a local bare
repository, read back by cloning it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from runner.build.gitops import GitTarget, parse_git_target
from runner.common.digest import sha256_digest
from runner.common.errors import InputError
from tests.clirun import lading

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def git(*args: str, cwd: Path | None = None) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout.strip()


@pytest.fixture
def bare(tmp_path: Path) -> Path:
    repo = tmp_path / "gitops.git"
    git("init", "--quiet", "--bare", "--initial-branch=main", str(repo))
    return repo


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("git:/srv/gitops.git", GitTarget("/srv/gitops.git", None, "")),
        ("git:../gitops:clusters/prod/web", GitTarget("../gitops", None, "clusters/prod/web")),
        ("git:./repo#release:apps/web/", GitTarget("./repo", "release", "apps/web")),
        ("git:https://host/org/gitops.git#main:deploy",
         GitTarget("https://host/org/gitops.git", "main", "deploy")),
        ("git:git@host:org/gitops.git", GitTarget("git@host:org/gitops.git", None, "")),
        ("git:ssh://git@host/gitops.git#:deploy", GitTarget("ssh://git@host/gitops.git", None,
                                                             "deploy")),
    ],
)
def test_git_targets_parse_repo_branch_and_directory(text: str, expected: GitTarget) -> None:
    assert parse_git_target(text) == expected


@pytest.mark.parametrize("text", ["git:", "git:repo#bad..branch", "git:repo#main:../out",
                                  "git:repo#main:.git/hooks"])
def test_bad_git_targets_are_refused_with_the_accepted_forms(text: str) -> None:
    with pytest.raises(InputError) as refused:
        parse_git_target(text)
    assert "git:REPO" in str(refused.value)


def test_the_manifests_are_committed_with_trailers_pushed_and_read_back(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
    bare: Path,
) -> None:
    target = f"git:{bare}#main:clusters/prod/web"
    args = ("build", "--app", str(EXAMPLES / "app" / "shop-web.yaml"), "--version", "1.4.2",
            "--to", target, "--source", "https://example.com/shop.git", "-o", "json")
    ran = lading(capsys, monkeypatch, *args)
    assert ran.code == 0, ran.err
    result = json.loads(ran.out)
    commit = result["git"][0]
    assert commit["changed"] is True
    assert result["ref"] == f"{target}@{commit['commit']}"

    clone = tmp_path / "clone"
    git("clone", "--quiet", str(bare), str(clone))
    manifests = (clone / "clusters" / "prod" / "web" / "manifests.yaml").read_text()
    # The file is the artifact's content byte for byte.
    assert sha256_digest(manifests.encode()) == result["checksum"]
    kinds = {o["kind"] for o in yaml.safe_load_all(manifests)}
    assert "ExternalSecret" in kinds
    assert "Secret" not in kinds
    trailers = git("log", "-1", "--format=%(trailers:only,unfold)", cwd=clone)
    assert f"Lading-Digest: {result['digest']}" in trailers
    assert "Lading-Source: https://example.com/shop.git" in trailers
    assert "Lading-Version: 1.4.2" in trailers
    assert "Lading-Input: app" in trailers

    again = lading(capsys, monkeypatch, *args)
    assert again.code == 0, again.err
    second = json.loads(again.out)["git"][0]
    assert second == {**commit, "changed": False}
    assert git("rev-list", "--count", "main", cwd=bare) == "1"


def test_a_new_branch_and_a_second_directory_land_beside_what_is_there(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
    bare: Path,
) -> None:
    app = str(EXAMPLES / "app" / "shop-web.yaml")
    for where in ("#staging:web", "#staging:web-copy"):
        ran = lading(capsys, monkeypatch, "build", "--app", app, "--to", f"git:{bare}{where}",
                     "--inventory", "web", "-q")
        assert ran.code == 0, ran.err

    files = git("ls-tree", "-r", "--name-only", "staging", cwd=bare).splitlines()
    assert files == ["web-copy/manifests.yaml", "web/manifests.yaml"]


def test_plain_secrets_are_refused_for_a_git_target_before_anything_is_pushed(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
    bare: Path,
) -> None:
    ran = lading(capsys, monkeypatch, "build", "--compose",
                 str(EXAMPLES / "compose" / "shop" / "compose.yaml"),
                 "--to", f"oci-layout:{tmp_path / 'layout'}", "--to", f"git:{bare}")

    assert ran.code == 2
    assert "plain Secrets" in ran.err
    assert "web-secret" in ran.err
    assert not (tmp_path / "layout").exists()
    assert git("for-each-ref", cwd=bare) == ""


def test_a_missing_local_repository_is_bad_input(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    ran = lading(capsys, monkeypatch, "build", "--app", str(EXAMPLES / "app" / "shop-web.yaml"),
                 "--to", f"git:{tmp_path / 'nowhere.git'}")

    assert ran.code == 2
    assert "does not exist" in ran.err
