"""Hostile and broken OCI layouts, layout tars and references (issue 10): each is refused with
its own exit code and a message naming the user's file, never a traceback, in bounded time and
memory, with no scratch space left behind and, for `lading import`, nothing pushed.

Every case starts from a good layout (one small lading artifact tagged v1) or its export tar,
breaks one thing, and runs the real `lading` in a subprocess with a private TMPDIR.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from runner.common.digest import sha256_digest
from runner.common.oci import INDEX, MANIFEST
from runner.dev.endpoints import RegistryEndpoint
from runner.supply.export import export
from tests.artifacts import config_map, publish, unique
from tests.refusals import assert_refused, run_lading


@dataclass(frozen=True)
class Good:
    """The unbroken inputs every case starts from."""

    layout: Path  # an OCI layout directory holding one artifact tagged v1
    tar: Path  # `lading export` of it: a layout tar with SHA256SUMS
    manifest: str
    config: str
    layer: str
    bomb: Path  # a 1 GiB member gzipped to about a megabyte, named .tar


@pytest.fixture(scope="session")
def good(tmp_path_factory: pytest.TempPathFactory) -> Good:
    root = tmp_path_factory.mktemp("good")
    layout = root / "layout"
    pinned = publish([config_map("settings", None, {"mode": "blue"})], f"oci-layout:{layout}:v1")
    manifest = pinned.rsplit("@", 1)[1]
    document = json.loads(_blob(layout, manifest).read_bytes())
    tar = root / "export.tar"
    export(f"oci-layout:{layout}:v1", str(tar))
    return Good(layout, tar, manifest, document["config"]["digest"],
                document["layers"][0]["digest"], _gzip_bomb(root / "bomb.tar"))


def _gzip_bomb(path: Path) -> Path:
    zeros = bytes(1 << 20)
    with gzip.open(path, "wb", compresslevel=9) as gz, tarfile.open(fileobj=gz, mode="w|") as tar:
        info = tarfile.TarInfo("blobs/sha256/" + "0" * 64)
        info.size = 1 << 30

        class Zeros(io.RawIOBase):
            left = info.size

            def readable(self) -> bool:
                return True

            def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
                n = min(len(buffer), self.left, len(zeros))
                buffer[:n] = zeros[:n]
                self.left -= n
                return n

        tar.addfile(info, io.BufferedReader(Zeros()))
    return path


# Building broken inputs ---------------------------------------------------------------------


def _blob(layout: Path, digest: str) -> Path:
    return layout / "blobs" / "sha256" / digest.split(":", 1)[1]


def _put(layout: Path, data: bytes) -> str:
    digest = sha256_digest(data)
    _blob(layout, digest).write_bytes(data)
    return digest


def _index(layout: Path) -> dict:
    return json.loads((layout / "index.json").read_text())


def _write_index(layout: Path, index: object) -> None:
    (layout / "index.json").write_text(json.dumps(index))


def _edit_entry(layout: Path, **fields: object) -> None:
    index = _index(layout)
    index["manifests"][0].update(fields)
    _write_index(layout, index)


def _point_at(layout: Path, data: bytes) -> None:
    """Store `data` as a blob and make the v1 entry name it (digest and size right)."""
    _edit_entry(layout, digest=_put(layout, data), size=len(data))


def _deep(depth: int) -> str:
    return "[" * depth + "]" * depth


def _flip(data: bytes) -> bytes:
    """The same bytes with one bit changed, in the middle."""
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 1]) + data[middle + 1:]


def _sparse(path: Path, size: int) -> None:
    with path.open("wb") as f:
        f.truncate(size)


def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes]], mode: str = "w") -> Path:
    with tarfile.open(path, mode) as tar:
        for info, data in members:
            if info.isreg():
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return path


def _file(name: str) -> tarfile.TarInfo:
    return tarfile.TarInfo(name)


def _special(name: str, kind: bytes, target: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


def _layout_members(good: Good) -> list[tuple[tarfile.TarInfo, bytes]]:
    return [
        (_file(p.relative_to(good.layout).as_posix()), p.read_bytes())
        for p in sorted(good.layout.rglob("*")) if p.is_file()
    ]


def _truncated(source: Path, path: Path, keep: float) -> Path:
    data = source.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def _truncated_at(source: Path, path: Path, size: int) -> Path:
    path.write_bytes(source.read_bytes()[:size])
    return path


def _gzipped(source: Path, path: Path) -> Path:
    path.write_bytes(gzip.compress(source.read_bytes()))
    return path


# The corpus ---------------------------------------------------------------------------------

# A case gets the good inputs and a directory of its own, breaks something, and returns the
# lading arguments; {layout} and {tar} in `says` stand for the case's copies.
Make = Callable[[Good, Path], list[str]]


@dataclass(frozen=True)
class Case:
    id: str
    make: Make
    says: tuple[str, ...]
    code: int = 2
    within: float = 20.0


def _inspect(ref: str) -> list[str]:
    return ["inspect", ref]


def _layout_case(breaks: Callable[[Good, Path], object], ref: str = "{layout}:v1") -> Make:
    """Copy the good layout, break it, inspect it."""

    def make(good: Good, work: Path) -> list[str]:
        layout = work / "layout"
        shutil.copytree(good.layout, layout, symlinks=True)
        breaks(good, layout)
        return _inspect(ref.format(layout=f"oci-layout:{layout}", good=good))

    return make


def _tar_case(build: Callable[[Good, Path], Path], verb: str = "inspect") -> Make:
    def make(good: Good, work: Path) -> list[str]:
        tar = build(good, work / "in.tar")
        return _inspect(f"{tar}:v1") if verb == "inspect" else ["import", str(tar)]

    return make


def _rm(*parts: str) -> Callable[[Good, Path], None]:
    return lambda good, layout: layout.joinpath(*parts).unlink()


def _write(name: str, data: bytes) -> Callable[[Good, Path], None]:
    return lambda good, layout: (layout / name).write_bytes(data)


def _replace_blob(which: str, change: Callable[[bytes], bytes]) -> Callable[[Good, Path], None]:
    def breaks(good: Good, layout: Path) -> None:
        path = _blob(layout, getattr(good, which))
        path.write_bytes(change(path.read_bytes()))

    return breaks


def _symlink_outside(good: Good, layout: Path) -> None:
    path = _blob(layout, good.manifest)
    outside = layout.parent / "outside-manifest"
    outside.write_bytes(path.read_bytes())
    path.unlink()
    path.symlink_to(outside)


def _blobs_dir_outside(good: Good, layout: Path) -> None:
    outside = layout.parent / "outside-blobs"
    shutil.move(layout / "blobs" / "sha256", outside)
    (layout / "blobs" / "sha256").symlink_to(outside)


def _fifo(good: Good, layout: Path) -> None:
    path = _blob(layout, good.manifest)
    path.unlink()
    os.mkfifo(path)


def _directory(good: Good, layout: Path) -> None:
    path = _blob(layout, good.manifest)
    path.unlink()
    path.mkdir()


def _huge_manifest(good: Good, layout: Path) -> None:
    digest = "sha256:" + "ab" * 32
    _sparse(_blob(layout, digest), 5 * 1024 * 1024)
    _edit_entry(layout, digest=digest, size=5 * 1024 * 1024)


def _many_tags(good: Good, layout: Path) -> None:
    index = _index(layout)
    entry = index["manifests"][0]
    index["manifests"] = [
        {**entry, "annotations": {"org.opencontainers.image.ref.name": f"t{i:05d}"}}
        for i in range(20_000)
    ]
    _write_index(layout, index)


def _manifest_document(**changes: object) -> Callable[[Good, Path], None]:
    def breaks(good: Good, layout: Path) -> None:
        document = json.loads(_blob(layout, good.manifest).read_bytes())
        document.update(changes)
        _point_at(layout, json.dumps(document).encode())

    return breaks


def _members(build: Callable[[Good], list[tuple[tarfile.TarInfo, bytes]]], mode: str = "w"
             ) -> Callable[[Good, Path], Path]:
    return lambda good, path: _tar(path, build(good), mode)


def _with(extra: list[tuple[tarfile.TarInfo, bytes]], *, first: bool = False
          ) -> Callable[[Good], list[tuple[tarfile.TarInfo, bytes]]]:
    return lambda good: [*extra, *_layout_members(good)] if first else [
        *_layout_members(good), *extra]


def _untar(good: Good, work: Path) -> Path:
    layout = work / "export"
    with tarfile.open(good.tar) as tar:
        tar.extractall(layout, filter="data")
    return layout


def _import_case(breaks: Callable[[Path], None]) -> Make:
    """Unpack the good export tar, break it, import it (as a directory layout)."""

    def make(good: Good, work: Path) -> list[str]:
        layout = _untar(good, work)
        breaks(layout)
        return ["import", f"oci-layout:{layout}"]

    return make


def _checksums(text: bytes) -> Callable[[Path], None]:
    return lambda layout: (layout / "SHA256SUMS").write_bytes(text)


def _first_sum_wrong(layout: Path) -> None:
    lines = (layout / "SHA256SUMS").read_text().splitlines()
    lines[0] = "0" * 64 + lines[0][64:]
    (layout / "SHA256SUMS").write_text("\n".join(lines) + "\n")


CASES = [
    # The layout directory and its marker.
    Case("missing-directory", lambda good, work: _inspect(f"oci-layout:{work}/nowhere:v1"),
         ("nowhere is not an OCI image layout",)),
    Case("no-oci-layout-file", _layout_case(_rm("oci-layout")), ("no oci-layout file",)),
    Case("oci-layout-not-json", _layout_case(_write("oci-layout", b"layout, honest")),
         ("oci-layout is not valid JSON",)),
    Case("oci-layout-version-2", _layout_case(
        _write("oci-layout", b'{"imageLayoutVersion": "2.0.0"}')),
         ("unsupported OCI image layout version '2.0.0'",)),
    # index.json
    Case("index-missing", _layout_case(_rm("index.json")), ("index.json is missing",)),
    Case("index-not-json", _layout_case(_write("index.json", b'{"manifests": [')),
         ("index.json is not valid JSON",)),
    Case("index-binary", _layout_case(_write("index.json", b"\x1f\x8b\x08\x00\xff\xfe")),
         ("index.json is not UTF-8 text",)),
    Case("index-schema-version-1", _layout_case(
        lambda good, layout: _write_index(layout, {**_index(layout), "schemaVersion": 1})),
         ("index.json: unsupported schemaVersion 1",)),
    Case("index-a-list", _layout_case(_write("index.json", b"[]")),
         ("index.json is not a JSON object",)),
    Case("index-manifests-not-a-list", _layout_case(
        _write("index.json", b'{"schemaVersion": 2, "manifests": {"a": 1}}')),
         ("index.json has no manifests list",)),
    Case("index-10000-deep", _layout_case(_write(
        "index.json", f'{{"schemaVersion": 2, "manifests": {_deep(10_000)}}}'.encode())),
         ("index.json: nested deeper than 100 levels",)),
    Case("index-200-deep", _layout_case(_write(
        "index.json", f'{{"schemaVersion": 2, "manifests": [{_deep(200)}]}}'.encode())),
         ("index.json: nested deeper than 100 levels",)),
    Case("index-70-MiB", _layout_case(lambda good, layout: _sparse(
        layout / "index.json", 70 * 1024 * 1024)),
         ("index.json is 70.0 MiB, more than the 64.0 MiB lading reads",
          "LADING_MAX_INPUT_BYTES")),
    Case("index-entry-without-digest", _layout_case(lambda good, layout: _write_index(
        layout, {**_index(layout), "manifests": [{"mediaType": MANIFEST, "size": 1}]})),
         ("index.json entry 0: descriptor lacks 'digest'",)),
    Case("index-entry-bad-digest", _layout_case(
        lambda good, layout: _edit_entry(layout, digest="sha256:xyz")), ("invalid digest",)),
    Case("index-entry-digest-traversal", _layout_case(
        lambda good, layout: _edit_entry(layout, digest="sha256:../../../../etc/passwd")),
         ("invalid digest",)),
    Case("index-entry-annotations-a-list", _layout_case(
        lambda good, layout: _edit_entry(layout, annotations=["v1"]), "{layout}@{good.manifest}"),
         ("descriptor annotations must map strings to strings",)),
    Case("index-entry-negative-size", _layout_case(
        lambda good, layout: _edit_entry(layout, size=-1)),
         ("descriptor size must be a non-negative integer",)),
    # The manifest blob.
    Case("manifest-missing", _layout_case(lambda good, layout: _blob(
        layout, good.manifest).unlink()), ("is missing from the layout",)),
    Case("manifest-tampered", _layout_case(_replace_blob("manifest", _flip)),
         ("does not match its digest",)),
    Case("manifest-symlink-outside", _layout_case(_symlink_outside), ("is a symbolic link",)),
    Case("blobs-directory-linked-outside", _layout_case(_blobs_dir_outside),
         ("lies outside it",)),
    Case("manifest-a-fifo", _layout_case(_fifo), ("is missing from the layout",)),
    Case("manifest-a-directory", _layout_case(_directory), ("is missing from the layout",)),
    Case("manifest-not-json", _layout_case(lambda good, layout: _point_at(
        layout, b"schemaVersion: 2\n")), ("is not valid JSON",)),
    Case("manifest-binary", _layout_case(lambda good, layout: _point_at(
        layout, gzip.compress(b"not a manifest"))), ("is not UTF-8 text",)),
    Case("manifest-10000-deep", _layout_case(lambda good, layout: _point_at(
        layout, f'{{"schemaVersion": 2, "layers": {_deep(10_000)}}}'.encode())),
         ("nested deeper than 100 levels",)),
    Case("manifest-an-image-index", _layout_case(lambda good, layout: _point_at(
        layout, json.dumps({"schemaVersion": 2, "mediaType": INDEX, "manifests": []}).encode())),
         ("is an image index, not a manifests artifact",)),
    Case("manifest-schema-version-1", _layout_case(_manifest_document(schemaVersion=1)),
         ("unsupported schemaVersion",)),
    Case("manifest-layers-an-object", _layout_case(_manifest_document(layers={"a": 1})),
         ("has no layers list",)),
    Case("manifest-over-4-MiB", _layout_case(_huge_manifest), ("over the 4194304-byte limit",)),
    # Config and layer blobs.
    Case("layer-missing", _layout_case(lambda good, layout: _blob(layout, good.layer).unlink()),
         ("is missing from the layout",)),
    Case("layer-tampered", _layout_case(_replace_blob("layer", _flip)),
         ("does not match its digest",)),
    Case("layer-truncated", _layout_case(_replace_blob("layer", lambda b: b[: len(b) // 2])),
         ("expected", "bytes, got")),
    Case("config-missing", _layout_case(lambda good, layout: _blob(layout, good.config).unlink()),
         ("is missing from the layout",)),
    # References into a layout.
    Case("digest-names-the-layer", _layout_case(lambda good, layout: None, "{layout}@{good.layer}"),
         ("is not a manifest (a config or layer blob?)",)),
    Case("digest-names-the-config", _layout_case(
        lambda good, layout: None, "{layout}@{good.config}"),
         ("is not a manifest (a config or layer blob?)",)),
    Case("digest-not-in-the-layout", _layout_case(
        lambda good, layout: None, "{layout}@sha256:" + "0" * 64), ("is not in the layout",)),
    Case("unknown-tag", _layout_case(lambda good, layout: None, "{layout}:v2"),
         ("v2 is not in the layout", "tags in this layout: v1")),
    Case("unknown-tag-among-20000", _layout_case(_many_tags, "{layout}:v2"),
         ("tags in this layout: t00000, t00001", "… and 19,990 more")),
    Case("layout-path-empty", lambda good, work: _inspect("oci-layout:"),
         ("missing layout path",)),
    Case("digest-malformed", lambda good, work: _inspect(f"oci-layout:{good.layout}@sha256:abc"),
         ("invalid digest",)),
    # Destinations.
    Case("to-layout-that-is-a-file", lambda good, work: [
        "export", f"oci-layout:{good.layout}:v1", "-O",
        f"oci-layout:{_regular(work / 'notes.txt')}"],
         ("notes.txt is a file, not an OCI image layout directory",)),
    Case("to-layout-under-a-file", lambda good, work: [
        "export", f"oci-layout:{good.layout}:v1", "-O",
        f"oci-layout:{_regular(work / 'notes.txt')}/sub"],
         ("cannot write the layout", "Not a directory")),
    Case("to-tar-that-is-not-a-tar", lambda good, work: [
        "export", f"oci-layout:{good.layout}:v1", "-O", str(_regular(work / "notes.tar"))],
         ("notes.tar is not a readable tar",)),
    # Layout tars.
    Case("gzip-bomb", _tar_case(lambda good, path: good.bomb),
         ("bomb.tar is compressed more than 100 to 1",), within=15.0),
    Case("member-claims-5-GiB", _tar_case(lambda good, path: _claims(path, 5 << 30)),
         ("unpacks to more than 4294967296 bytes",)),
    Case("member-dot-dot", _tar_case(_members(_with([(_file("../escaped"), b"x")], first=True))),
         ("entry '../escaped' escapes the layout",)),
    Case("member-absolute", _tar_case(_members(_with([(_file("/tmp/escaped"), b"x")]))),
         ("entry '/tmp/escaped' escapes the layout",)),
    Case("member-dot-dot-inside", _tar_case(_members(_with([(_file("blobs/../../x"), b"x")]))),
         ("escapes the layout",)),
    Case("member-symlink", _tar_case(_members(_with(
        [(_special("blobs/link", tarfile.SYMTYPE, "/etc/passwd"), b"")]))),
         ("entry 'blobs/link' is a link",)),
    Case("member-hardlink", _tar_case(_members(_with(
        [(_special("blobs/link", tarfile.LNKTYPE, "index.json"), b"")]))),
         ("entry 'blobs/link' is a link",)),
    Case("member-fifo", _tar_case(_members(_with([(_special("fifo", tarfile.FIFOTYPE), b"")]))),
         ("entry 'fifo' is a link, device or sparse file",)),
    Case("member-device", _tar_case(_members(_with([(_special("dev", tarfile.CHRTYPE), b"")]))),
         ("entry 'dev' is a link, device or sparse file",)),
    Case("member-twice", _tar_case(_members(_with([(_file("index.json"), b"{}")]))),
         ("entry 'index.json' appears twice",)),
    Case("file-where-a-directory-goes", _tar_case(_members(_with(
        [(_file("blobs"), b"x")], first=True))), ("cannot unpack", "entry")),
    Case("over-10000-entries", _tar_case(_members(lambda good: [
        (_file(f"f{i}"), b"") for i in range(10_001)], "w:gz")),
         ("holds more than 10000 entries",)),
    Case("truncated-tar", _tar_case(lambda good, path: _truncated(good.tar, path, 0.6)),
         ("in.tar is truncated or damaged",)),
    Case("truncated-at-a-header", _tar_case(lambda good, path: _truncated_at(good.tar, path, 2000)),
         ("in.tar is truncated or damaged: it ends in the middle of an entry",)),
    Case("truncated-gzip-tar", _tar_case(lambda good, path: _truncated(
        _gzipped(good.tar, path.with_suffix(".gz")), path, 0.5)),
         ("in.tar is truncated or damaged",)),
    Case("empty-file", _tar_case(lambda good, path: _regular(path, b"")),
         ("in.tar is not a readable tar",)),
    Case("random-bytes", _tar_case(lambda good, path: _regular(path, os.urandom(4096))),
         ("in.tar is not a readable tar",)),
    Case("tar-that-is-a-directory", _tar_case(lambda good, path: _mkdir(path)),
         ("in.tar is not a readable tar",)),
    Case("tar-without-a-layout", _tar_case(_members(lambda good: [
        (_file("README.md"), b"# not a layout\n")])),
         ("in.tar is not an OCI image layout",)),
    Case("tar-with-a-deep-index", _tar_case(_members(lambda good: [
        (m, _deep(5_000).encode() if m.name == "index.json" else data)
        for m, data in _layout_members(good)])),
         ("in.tar/index.json: nested deeper than 100 levels",)),
]

# `lading import` refuses before pushing anything.
IMPORT_CASES = [
    Case("import-truncated-export", _tar_case(
        lambda good, path: _truncated(good.tar, path, 0.6), "import"),
         ("in.tar is truncated or damaged",)),
    Case("import-gzip-bomb", _tar_case(lambda good, path: good.bomb, "import"),
         ("compressed more than 100 to 1",), within=15.0),
    Case("import-checksum-wrong", _import_case(_first_sum_wrong),
         ("does not match SHA256SUMS",)),
    Case("import-checksums-traversal", _import_case(_checksums(b"0" * 64 + b"  ../../x\n")),
         ("SHA256SUMS in", "line 1 is malformed")),
    Case("import-checksums-binary", _import_case(_checksums(b"\xff\xfe\x00binary")),
         ("SHA256SUMS in", "is not text")),
    Case("import-checksums-list-a-missing-file", _import_case(_checksums(
        b"0" * 64 + b"  blobs/sha256/" + b"1" * 64 + b"\n")), ("which the layout lacks",)),
    Case("import-no-manifests", _import_case(lambda layout: _write_index(
        layout, {"schemaVersion": 2, "manifests": []})), ("holds no manifests",)),
    Case("import-manifest-tampered", _import_case(lambda layout: _tamper_first_manifest(layout)),
         ("does not match",)),
]


def _regular(path: Path, data: bytes = b"my notes\n") -> Path:
    path.write_bytes(data)
    return path


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


def _claims(path: Path, size: int) -> Path:
    """A tar whose one member says it holds `size` bytes, and holds none."""
    info = tarfile.TarInfo("blobs/sha256/" + "1" * 64)
    info.size = size
    path.write_bytes(info.tobuf(format=tarfile.PAX_FORMAT) + bytes(1024))
    return path


def _tamper_first_manifest(layout: Path) -> None:
    (layout / "SHA256SUMS").unlink()
    digest = _index(layout)["manifests"][0]["digest"]
    path = _blob(layout, digest)
    path.write_bytes(path.read_bytes().replace(b'"schemaVersion":2', b'"schemaVersion": 2'))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_a_broken_layout_or_reference_is_refused_cleanly(
    case: Case, good: Good, tmp_path: Path
) -> None:
    args = case.make(good, tmp_path)
    outcome = run_lading(args, tmp_path)
    assert_refused(outcome, case.code, *case.says, within=case.within)
    assert "lading-layout-" not in outcome.err, "the message names scratch, not the user's file"
    assert len(outcome.err) < 4000, f"{len(outcome.err)} bytes of message"


@pytest.mark.registry
@pytest.mark.parametrize("case", IMPORT_CASES, ids=[c.id for c in IMPORT_CASES])
def test_a_broken_import_is_refused_before_anything_is_pushed(
    case: Case, good: Good, registry: RegistryEndpoint, tmp_path: Path
) -> None:
    repository = f"hostile/{unique('import')}"
    args = [*case.make(good, tmp_path), "--to", f"{registry.host}/{repository}:v1"]
    outcome = run_lading(args, tmp_path)
    assert_refused(outcome, case.code, *case.says, within=case.within)
    assert "lading-layout-" not in outcome.err
    tags = requests.get(f"{registry.url}/v2/{repository}/tags/list", timeout=10)
    assert tags.status_code == 404, f"something was pushed: {tags.text}"


def test_the_good_inputs_are_accepted(good: Good, registry: RegistryEndpoint,
                                      tmp_path: Path) -> None:
    """The corpus is only meaningful if what it breaks works unbroken."""
    inspected = run_lading(["inspect", f"oci-layout:{good.layout}:v1"], tmp_path / "a")
    assert inspected.code == 0, inspected.err
    assert good.manifest in inspected.out
    imported = run_lading(["import", str(good.tar), "--to",
                           f"{registry.host}/hostile/{unique('good')}"], tmp_path / "b")
    assert imported.code == 0, imported.err
    assert imported.scratch == []
