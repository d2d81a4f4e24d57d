"""What can be checked of the runner image, the compose file and the CI examples without a
Docker engine: lint, every COPY source exists, pinned versions match versions.env."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from runner.dev.tools import pinned_versions

ROOT = Path(__file__).parent.parent
DOCKERFILE = ROOT / "Dockerfile.runner"
IMAGE_TOOLS = "image-tools"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _hadolint() -> str:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    assert found, "hadolint not found: it comes with the dev extras (scripts/bootstrap)"
    return found


def test_runner_dockerfile_passes_hadolint() -> None:
    run = subprocess.run([_hadolint(), str(DOCKERFILE)], capture_output=True, text=True,
                         check=False)
    assert run.returncode == 0, run.stdout + run.stderr


def test_every_file_the_dockerfile_copies_from_the_context_exists() -> None:
    copies = [args for word, args in _instructions() if word in ("COPY", "ADD")]
    local = [a for a in copies if not a.startswith("--from")]
    assert local, "expected COPY instructions from the build context"
    for args in local:
        *sources, _dest = args.split()
        for source in sources:
            if source.startswith(f"{IMAGE_TOOLS}/"):
                # Not in the repository: scripts/image puts the pinned binaries there.
                assert IMAGE_TOOLS in (ROOT / "scripts" / "image").read_text()
                continue
            assert (ROOT / source).exists(), f"Dockerfile.runner copies {source}, which is missing"


def test_dockerfile_pins_the_versions_of_versions_env() -> None:
    pinned = pinned_versions()
    args = dict(
        a.split("=", 1) for word, a in _instructions() if word == "ARG" and "=" in a
    )
    for key in ("KUSTOMIZE_VERSION", "HELM_VERSION"):
        assert args.get(key) == pinned[key], f"Dockerfile.runner ARG {key} != versions.env"
    # kubectl comes with the Python packages, from the lock (tests/test_requirements_lock.py).
    assert "KUBECTL_WHEEL_VERSION" not in args


def test_runner_image_is_non_root_with_lading_as_entrypoint() -> None:
    instructions = _instructions()
    defaults = dict(a.split("=", 1) for w, a in instructions if w == "ARG" and "=" in a)
    froms = [re.sub(r"\$\{(\w+)\}", lambda m: defaults[m.group(1)], a)
             for w, a in instructions if w == "FROM"]
    assert len(froms) >= 2
    # Without build arguments: the official images, as Docker users have them.
    assert any(f.startswith("docker.io/library/golang:") for f in froms)
    assert froms[-1].startswith("docker.io/library/python:")
    assert "slim" in froms[-1]
    final = instructions[max(i for i, (w, _) in enumerate(instructions) if w == "FROM"):]
    users = [a for w, a in final if w == "USER"]
    assert users, "the final stage sets no USER"
    assert not users[-1].startswith(("root", "0")), users
    assert ("ENTRYPOINT", '["lading"]') in final
    copied = " ".join(a for w, a in final if w == "COPY")
    assert "kustomize" in copied
    assert "helm" in copied
    assert ("COPY", "requirements/image.lock /tmp/image.lock") in instructions
    assert any("--require-hashes" in a and "/tmp/image.lock" in a
               for w, a in instructions if w == "RUN")


def test_runner_image_is_labelled_with_version_revision_and_source() -> None:
    labels = " ".join(a for w, a in _instructions() if w == "LABEL")
    for key in ("version", "revision", "source", "created"):
        assert f"org.opencontainers.image.{key}=" in labels


def _compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((ROOT / "registry-compose.yml").read_text())
    return document


def test_registry_compose_serves_a_persistent_registry_on_port_5000() -> None:
    compose = _compose()
    registry = compose["services"]["registry"]
    assert "profiles" not in registry  # started by a plain `docker compose up`
    assert any(str(p).endswith("5000:5000") for p in registry["ports"])
    volume = registry["volumes"][0].split(":")
    assert volume[1] == "/var/lib/registry"
    assert volume[0] in compose["volumes"]  # a named volume: survives `down`


def test_registry_compose_has_zot_for_referrers_under_a_profile() -> None:
    compose = _compose()
    zot = compose["services"]["zot"]
    assert zot["profiles"] == ["referrers"]
    assert "zot" in zot["image"]
    assert zot["volumes"][0].split(":")[0] in compose["volumes"]
    host_ports = [str(p).rsplit(":", 1)[0] for p in compose["services"]["registry"]["ports"]]
    assert not any(str(p).rsplit(":", 1)[0] in host_ports for p in zot["ports"])
    for service in compose["services"].values():
        assert ":" in service["image"]
        assert not service["image"].endswith(":latest")


def test_ci_examples_build_by_merge_and_install_by_digest() -> None:
    build = yaml.safe_load((ROOT / "docs/github-actions/build-push.yml").read_text())
    install = yaml.safe_load((ROOT / "docs/github-actions/install.yml").read_text())
    # PyYAML reads the bare key `on` as True.
    assert build[True]["push"]["branches"] == ["main"]
    job = build["jobs"]["build"]
    assert job["outputs"]["digest"] == "${{ steps.build.outputs.digest }}"
    step = next(s for s in job["steps"] if s.get("id") == "build")
    assert "lading build" in step["run"]
    assert 'digest=$(jq -r .digest build.json)" >> "$GITHUB_OUTPUT"' in step["run"]
    run = "\n".join(s.get("run", "") for s in install["jobs"]["install"]["steps"])
    assert 'lading install "$REF"' in run
    assert "@sha256:" in run
