"""Reading the Kubernetes objects out of an artifact: lading's own format, Flux's, and
kustomizer-style or plain tars of YAML. Every byte is verified against its digest (through
runner.common.store) and unpacking is bounded."""

from __future__ import annotations

import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Literal

from runner.common.errors import InputError
from runner.common.objects import Obj, parse_stream
from runner.common.oci import ANN_TITLE, FLUX_CONTENT, LADING_CONFIG, LADING_CONTENT, Manifest
from runner.common.store import Store, fetch_blob

MAX_LAYER_BYTES = 64 * 1024 * 1024
MAX_UNPACKED_BYTES = 256 * 1024 * 1024
MAX_CONFIG_BYTES = 4 * 1024 * 1024
MAX_TAR_ENTRIES = 20_000

Format = Literal["lading", "flux", "tar", "yaml"]
_YAML_SUFFIXES = (".yaml", ".yml", ".json")
_KUSTOMIZATION_FILES = {"kustomization.yaml", "kustomization.yml", "Kustomization"}


@dataclass(frozen=True)
class ArtifactContent:
    manifest: Manifest
    format: Format
    config: dict[str, Any]  # lading's config document; empty for foreign artifacts
    files: list[tuple[str, str]]  # (path inside the artifact, YAML text), in a stable order

    def objects(self) -> list[tuple[Obj, str]]:
        """Every object with where it came from, e.g. `manifests.yaml (document 3)`."""
        located: list[tuple[Obj, str]] = []
        for name, text in self.files:
            for i, obj in enumerate(parse_stream(text, name), start=1):
                if _is_kustomize_config(obj):
                    continue
                located.append((obj, f"{name} (object {i})"))
        return located


def _is_kustomize_config(obj: Obj) -> bool:
    return str(obj.get("apiVersion", "")).startswith("kustomize.config.k8s.io/")


def _layer_format(media_type: str, title: str) -> Format | None:
    if media_type == LADING_CONTENT:
        return "lading"
    if media_type == FLUX_CONTENT:
        return "flux"
    if "tar" in media_type or title.endswith((".tar", ".tar.gz", ".tgz")):
        return "tar"
    if "yaml" in media_type or title.endswith((".yaml", ".yml")):
        return "yaml"
    return None


def read_content(store: Store, manifest: Manifest) -> ArtifactContent:
    """Fetch, verify and unpack an artifact's manifests. Raises InputError when it holds none."""
    config: dict[str, Any] = {}
    if manifest.config.media_type == LADING_CONFIG:
        raw = fetch_blob(store, manifest.config, MAX_CONFIG_BYTES)
        try:
            config = json.loads(raw)
        except ValueError as e:
            raise InputError(f"artifact config {manifest.config.digest} is not JSON: {e}") from None
    files: list[tuple[str, str]] = []
    formats: list[Format] = []
    budget = MAX_UNPACKED_BYTES
    for layer in manifest.layers:
        title = layer.annotations.get(ANN_TITLE, "")
        fmt = _layer_format(layer.media_type, title)
        if fmt is None:
            continue
        data = fetch_blob(store, layer, MAX_LAYER_BYTES)
        if fmt == "yaml":
            found = [(title or layer.digest, _text(data, title or layer.digest))]
            budget -= len(data)
        else:
            found, budget = _unpack_yaml(data, layer.digest, budget)
        files.extend(found)
        formats.append(fmt)
    if not files:
        kinds = ", ".join(sorted({layer.media_type for layer in manifest.layers})) or "no layers"
        raise InputError(
            f"artifact {manifest.descriptor.digest} holds no Kubernetes manifests ({kinds})",
            hint="lading installs artifacts built by lading, Flux (`flux push artifact`), "
            "kustomizer, or tars of YAML files",
        )
    return ArtifactContent(manifest, formats[0], config, files)


def _text(data: bytes, name: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{name} is not UTF-8 text") from None


def _unpack_yaml(data: bytes, digest: str, budget: int) -> tuple[list[tuple[str, str]], int]:
    """YAML files inside a (gzipped) tar layer, in path order. Links, devices and paths that
    escape the archive root are refused, not skipped: they have no business in a manifests
    artifact."""
    files: list[tuple[str, str]] = []
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
            for count, member in enumerate(tar, start=1):
                if count > MAX_TAR_ENTRIES:
                    raise InputError(f"layer {digest} has more than {MAX_TAR_ENTRIES} entries")
                path = PurePosixPath(member.name)
                if path.is_absolute() or ".." in path.parts:
                    raise InputError(f"layer {digest}: entry {member.name!r} escapes the archive")
                if member.isdir():
                    continue
                if not member.isfile():
                    raise InputError(
                        f"layer {digest}: entry {member.name!r} is a link or device",
                        hint="manifest artifacts may hold only regular files",
                    )
                # Skipped members are decompressed too, so every member counts: a gzip bomb
                # hidden in a file we ignore still has to be refused.
                budget -= member.size
                if budget < 0:
                    raise InputError(f"artifact unpacks to more than {MAX_UNPACKED_BYTES} bytes")
                if path.name in _KUSTOMIZATION_FILES or not path.name.endswith(_YAML_SUFFIXES):
                    continue
                source = tar.extractfile(member)
                if source is not None:
                    files.append((path.as_posix(), _text(source.read(), member.name)))
    except (tarfile.TarError, EOFError, OSError) as e:
        raise InputError(f"layer {digest} is not a readable tar: {e}") from None
    files.sort(key=lambda f: f[0])
    return files, budget
