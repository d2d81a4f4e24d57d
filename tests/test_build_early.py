"""`lading build --kustomize DIR` starts kustomize before the build's imports: the build takes
that child over only when it is the one it would have started, and stops it otherwise."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from runner.build import child
from runner.build.early import _kustomize_path
from tests.build_helpers import EXAMPLES
from tests.clirun import lading
from tests.refusals import wait_until

pytestmark = [pytest.mark.kustomize]


@pytest.fixture
def runs(kustomize_bin: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """kustomize behind a wrapper that logs the pid of each `build` (then waits
    $LADING_TEST_DELAY seconds); the log's path."""
    log = tmp_path / "kustomize-runs.log"
    wrapper = tmp_path / "kustomize"
    wrapper.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = build ]; then echo $$ >> {log}; sleep "${{LADING_TEST_DELAY:-0}}"; fi\n'
        f'exec {kustomize_bin} "$@"\n'
    )
    wrapper.chmod(0o755)
    monkeypatch.setenv("LADING_KUSTOMIZE", str(wrapper))
    return log


def _pids(log: Path) -> list[int]:
    return [int(line) for line in log.read_text().split()] if log.exists() else []


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_kustomize_build_runs_kustomize_once_and_packs_what_a_plan_file_packs(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    runs: Path,
) -> None:
    overlay = str(EXAMPLES / "overlays" / "prod")
    early = lading(capsys, monkeypatch, "build", "--kustomize", overlay,
                   "--to", f"oci-layout:{tmp_path}/a:v1", "--inventory", "app", "-o", "json")
    assert early.code == 0, early.err
    assert len(_pids(runs)) == 1
    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump({
        "source": {"kustomize": {"path": overlay}}, "inventory": "app",
    }))
    # A plan file never starts kustomize early: this build ran it the ordinary way.
    planned = lading(capsys, monkeypatch, "build", "-f", str(plan), "--workspace", str(EXAMPLES),
                     "--to", f"oci-layout:{tmp_path}/b:v1", "-o", "json")
    assert planned.code == 0, planned.err
    assert len(_pids(runs)) == 2
    assert json.loads(early.out)["digest"] == json.loads(planned.out)["digest"]


def test_a_kustomize_started_early_is_stopped_when_the_build_fails_before_rendering(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    runs: Path,
) -> None:
    monkeypatch.setenv("LADING_TEST_DELAY", "30")
    started = time.monotonic()
    ran = lading(capsys, monkeypatch, "build", "--kustomize", str(EXAMPLES / "overlays" / "prod"),
                 "--to", "not a reference")
    assert ran.code == 2, ran.err
    assert time.monotonic() - started < 15
    assert not any(_alive(pid) for pid in _pids(runs))


def test_an_early_child_is_not_taken_over_when_the_environment_changed(
    monkeypatch: pytest.MonkeyPatch, runs: Path
) -> None:
    cmd = [os.environ["LADING_KUSTOMIZE"], "build", str(EXAMPLES / "overlays" / "prod")]
    child.start_early(cmd)
    try:
        wait_until(lambda: len(_pids(runs)) == 1, 30, "the early kustomize to start")
        monkeypatch.setenv("KUSTOMIZE_PLUGIN_HOME", "/elsewhere")
        text = child.run_tool(cmd, what="kustomize build", timeout=60, scrub={})
    finally:
        child.discard_early()
    assert "kind: Deployment" in text
    first, _ = _pids(runs)
    assert not _alive(first)


def test_what_runs_before_kustomize_starts_loads_neither_click_nor_yaml_nor_pydantic() -> None:
    # Every module loaded before the start delays kustomize, the longest part of a build;
    # dataclasses and typing alone take 10 ms.
    probe = (
        "import sys, runner.cli, runner.build.early\n"
        "print([m for m in ('click', 'yaml', 'pydantic', 'dataclasses', 'typing') "
        "if m in sys.modules])"
    )
    ran = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert ran.stdout.strip() == "[]"


@pytest.mark.parametrize("to", ["oci-layout:{tmp}/out:v1", "{tmp}/out.tar"])
def test_a_build_run_as_a_program_prints_its_result_and_leaves_no_temporary_files(
    tmp_path: Path, kustomize_bin: Path, to: str
) -> None:
    # The process ends without the interpreter's teardown (runner.cli._exit_now).
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {**os.environ, "TMPDIR": str(scratch), "LADING_KUSTOMIZE": str(kustomize_bin)}
    ran = subprocess.run(
        [sys.executable, "-m", "runner.cli", "build", "--kustomize",
         str(EXAMPLES / "overlays" / "prod"), "--to", to.format(tmp=tmp_path), "-o", "json"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["objects"] == 14
    assert list(scratch.iterdir()) == []


def test_ending_without_teardown_runs_the_exit_handlers_and_flushes_first(tmp_path: Path) -> None:
    probe = (
        "import atexit, pathlib, sys\n"
        "from runner.cli import _exit_now\n"
        "atexit.register(lambda: pathlib.Path(sys.argv[1]).write_text('ran'))\n"
        "print('unflushed', end='')\n"
        "_exit_now(SystemExit(3))\n"
    )
    marker = tmp_path / "marker"
    ran = subprocess.run([sys.executable, "-c", probe, str(marker)], capture_output=True,
                         text=True, timeout=60)
    assert (ran.returncode, ran.stdout) == (3, "unflushed")
    assert marker.read_text() == "ran"


@pytest.mark.parametrize(
    ("args", "path"),
    [
        (["--kustomize", "app", "--to", "r/x:v1"], "app"),
        (["--to", "r/x:v1", "--kustomize=app"], "app"),
        (["-f", "plan.yaml", "--kustomize", "app"], None),
        (["-fplan.yaml", "--kustomize", "app"], None),
        (["--plan=plan.yaml", "--kustomize", "app"], None),
        (["--kustomize", "app", "--enable-helm"], None),
        (["--kustomize", "app", "--load-restrictor", "none"], None),
        (["--kustomize", "a", "--kustomize", "b"], None),
        (["--kustomize", "app", "--help"], None),
        (["--", "--kustomize", "app"], None),
        (["--inline", "a.yaml"], None),
    ],
)
def test_kustomize_starts_early_only_when_the_flags_alone_say_what_it_runs(
    args: list[str], path: str | None
) -> None:
    assert _kustomize_path(args) == path
