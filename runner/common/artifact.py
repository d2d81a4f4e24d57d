"""Reading the Kubernetes objects out of an artifact: lading's own format, Flux's, and
kustomizer-style or plain tars of YAML. Every byte is verified against its digest (through
runner.common.store) and unpacking is bounded in bytes and so in work: decompression stops as
soon as an artifact's layers together would unpack to more than LADING_MAX_UNPACKED_BYTES, so a
200 KB gzip of 200 MB of YAML comments costs a fraction of a second, not a minute."""

from __future__ import annotations

import io
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Literal

from plans.documents import decode, limits, load_json, size_text
from runner.common.errors import InputError
from runner.common.objects import Obj, parse_stream
from runner.common.oci import ANN_TITLE, FLUX_CONTENT, LADING_CONFIG, LADING_CONTENT, Manifest
from runner.common.store import Store, fetch_blob

MAX_LAYER_BYTES = 64 * 1024 * 1024
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
        what = f"artifact config {manifest.config.digest}"
        document = load_json(raw, what, MAX_CONFIG_BYTES)
        if not isinstance(document, dict):
            raise InputError(f"{what} is not a JSON object")
        config = document
    files: list[tuple[str, str]] = []
    formats: list[Format] = []
    budget = _Budget(limits().unpacked_bytes)
    for layer in manifest.layers:
        title = layer.annotations.get(ANN_TITLE, "")
        fmt = _layer_format(layer.media_type, title)
        if fmt is None:
            continue
        data = fetch_blob(store, layer, MAX_LAYER_BYTES)
        if fmt == "yaml":
            budget.spend(len(data))
            found = [(title or layer.digest, decode(data, title or layer.digest))]
        else:
            found = _unpack_yaml(_decompressed(data, layer.digest, budget), layer.digest)
        files.extend(found)
        formats.append(fmt)
    if not files:
        kinds = ", ".join(sorted({layer.media_type for layer in manifest.layers})) or "no layers"
        raise InputError(
            f"artifact {manifest.descriptor.digest} holds no Kubernetes manifests ({kinds})",
            hint="lading installs artifacts built by lading, Flux (`flux push artifact`), "
            "kustomizer, or tars of YAML files",
        )
    _refuse_repeated_paths(files, manifest.descriptor.digest)
    return ArtifactContent(manifest, formats[0], config, files)


class _Budget:
    """The bytes an artifact's layers may still unpack to."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.left = total

    def spend(self, n: int) -> None:
        self.left -= n
        if self.left < 0:
            raise InputError(
                f"artifact unpacks to more than {size_text(self.total)}",
                hint="raise LADING_MAX_UNPACKED_BYTES if the artifact is genuine",
            )


_GZIP = b"\x1f\x8b"
_OTHER_COMPRESSION = {b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz", b"\x28\xb5\x2f\xfd": "zstd"}


def _decompressed(data: bytes, digest: str, budget: _Budget) -> bytes:
    """The tar inside a layer: gunzipped (every gzip member, as `gzip -d` and Go read them)
    without ever producing more than the budget allows, or the layer itself when it is a
    plain tar."""
    for magic, name in _OTHER_COMPRESSION.items():
        if data.startswith(magic):
            raise InputError(
                f"layer {digest} is compressed with {name}",
                hint="lading reads tar and tar+gzip layers",
            )
    if not data.startswith(_GZIP):
        budget.spend(len(data))
        return data
    members: list[bytes] = []
    rest = data
    try:
        while rest.startswith(_GZIP):
            inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
            members.append(inflater.decompress(rest, budget.left + 1))
            budget.spend(len(members[-1]))
            if not inflater.eof:
                raise InputError(f"layer {digest} is a truncated gzip stream")
            rest = inflater.unused_data
    except zlib.error as e:
        raise InputError(f"layer {digest} is not a readable gzip stream: {e}") from None
    if rest.strip(b"\0"):
        raise InputError(f"layer {digest} has data after its gzip stream")
    return b"".join(members)  # one member, the usual case, is returned without a copy


def _unpack_yaml(data: bytes, digest: str) -> list[tuple[str, str]]:
    """YAML files inside a tar layer, in path order. Links, devices, paths that escape the
    archive root and paths that occur twice are refused, not skipped: they have no business
    in a manifests artifact, and for a path held twice tools disagree on which copy counts."""
    files: list[tuple[str, str]] = []
    seen: set[str] = set()
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
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
                name = path.as_posix()
                if name in seen:
                    raise _repeated(name, f"layer {digest}")
                seen.add(name)
                if path.name in _KUSTOMIZATION_FILES or not path.name.endswith(_YAML_SUFFIXES):
                    continue
                source = tar.extractfile(member)
                if source is not None:
                    files.append((name, decode(source.read(), member.name)))
    except (tarfile.TarError, EOFError, OSError, ValueError, OverflowError) as e:
        raise InputError(f"layer {digest} is not a readable tar: {e}") from None
    files.sort(key=lambda f: f[0])
    return files


def _repeated(name: str, where: str) -> InputError:
    return InputError(
        f"{where} holds {name!r} more than once",
        hint="tar and oras keep the last copy, other tools the first: lading refuses to guess "
        "which one was meant",
    )


def _refuse_repeated_paths(files: list[tuple[str, str]], digest: str) -> None:
    seen: set[str] = set()
    for name, _ in files:
        if name in seen:
            raise _repeated(name, f"artifact {digest}")
        seen.add(name)
