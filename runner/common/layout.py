"""OCI image layouts as Stores: a directory, or a `.tar` of one.

A layout is read from outside and trusted no more than a registry: index.json and manifests
are parsed within size and depth limits, blobs must be regular files inside the layout, and
errors name the layout the user gave (the `.tar`, not the scratch directory it is unpacked
into).

A layout tar is unpacked (regular files and directories only, within bounds on bytes, entries
and compression ratio) into a scratch directory that is removed however lading ends: on
close(), on an error while unpacking, at exit, and on SIGTERM (turned into SystemExit so the
cleanup runs). Writing builds the directory there and packs it deterministically on close().
"""

from __future__ import annotations

import atexit
import io
import json
import lzma
import shutil
import signal
import tarfile
import tempfile
import threading
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from plans.documents import limits, load_json, size_text
from runner.common.digest import check_digest_syntax, sha256_digest
from runner.common.errors import InputError
from runner.common.oci import (
    ANN_REF_NAME,
    INDEX,
    MAX_MANIFEST_BYTES,
    Descriptor,
    canonical_json,
)

_LAYOUT_FILE = {"imageLayoutVersion": "1.0.0"}
HINT_TAGS = 10  # tags listed in a hint; the rest are counted

# Unpacking a layout tar: total bytes, entries, and (for a compressed tar) bytes out per byte
# in, past a small allowance. Layout blobs are JSON and gzip layers: they barely compress.
MAX_UNPACKED_BYTES = 4 * 1024**3
MAX_ENTRIES = 10_000
MAX_RATIO = 100
RATIO_ALLOWANCE = 16 * 1024 * 1024


def _blob_path(root: Path, digest: str) -> Path:
    algorithm, hexpart = check_digest_syntax(digest).split(":", 1)
    return root / "blobs" / algorithm / hexpart


def tag_list(tags: list[str]) -> str:
    """`a, b, c` — or the first few and how many more, for layouts with thousands of tags."""
    if not tags:
        return "none"
    shown = ", ".join(tags[:HINT_TAGS])
    more = len(tags) - HINT_TAGS
    return f"{shown}, … and {more:,} more" if more > 0 else shown


class LayoutStore:
    """An OCI image layout directory. `create=True` makes one if it does not exist. `label` is
    how errors name the layout (default: the directory)."""

    def __init__(self, root: Path, *, create: bool = False, label: str | None = None):
        self.root = root
        self.label = label or str(root)
        if root.exists() and not root.is_dir():
            raise InputError(
                f"{self.label} is a file, not an OCI image layout directory",
                hint="name a directory (oci-layout:DIR), or a path ending in .tar for a "
                "layout tar",
            )
        marker = root / "oci-layout"
        if not marker.exists():
            if not create:
                raise InputError(
                    f"{self.label} is not an OCI image layout (no oci-layout file)",
                    hint="point at a directory written by `lading build --to oci-layout:DIR` "
                    "or `lading export`",
                )
            try:
                root.mkdir(parents=True, exist_ok=True)
                marker.write_bytes(canonical_json(_LAYOUT_FILE))
            except OSError as e:
                raise self._unwritable(e) from None
            self._write_index([])
            return
        self._check_marker(marker)

    def _check_marker(self, marker: Path) -> None:
        if not marker.is_file() or marker.stat().st_size > 4096:
            raise InputError(f"{self.label}: oci-layout is not a small regular file")
        document = load_json(marker.read_bytes(), f"{self.label}/oci-layout", 4096)
        version = document.get("imageLayoutVersion") if isinstance(document, dict) else None
        if not isinstance(version, str) or not version.startswith("1."):
            raise InputError(
                f"{self.label}: unsupported OCI image layout version {version!r}",
                hint="lading reads layouts with imageLayoutVersion 1.x",
            )

    def _unwritable(self, error: OSError) -> InputError:
        return InputError(f"cannot write the layout {self.label}: {error.strerror or error}")

    # index.json ----------------------------------------------------------------------------

    def index_entries(self) -> list[Descriptor]:
        """The manifests index.json lists, each checked to be a descriptor."""
        return [
            Descriptor.from_json(m, f"{self.label}/index.json entry {i}")
            for i, m in enumerate(self._read_index())
        ]

    def _read_index(self) -> list[dict[str, Any]]:
        path = self.root / "index.json"
        what = f"{self.label}/index.json"
        try:
            if not path.is_file():
                raise InputError(f"{what} is missing", hint="a layout lists its manifests there")
            # Checked before reading: a hostile index.json may be gigabytes.
            size, cap = path.stat().st_size, limits().input_bytes
            if size > cap:
                raise InputError(
                    f"{what} is {size_text(size)}, more than the {size_text(cap)} lading reads",
                    hint="raise LADING_MAX_INPUT_BYTES if this layout is genuine",
                )
            raw = path.read_bytes()
        except OSError as e:
            raise InputError(f"{what} is unreadable: {e.strerror or e}") from None
        index = load_json(raw, what, cap)
        if not isinstance(index, dict):
            raise InputError(f"{what} is not a JSON object")
        if index.get("schemaVersion") != 2:
            raise InputError(
                f"{what}: unsupported schemaVersion {index.get('schemaVersion')!r}",
                hint="an OCI image index has schemaVersion 2",
            )
        manifests = index.get("manifests", [])
        if not isinstance(manifests, list):
            raise InputError(f"{what} has no manifests list")
        return manifests

    def _write_index(self, manifests: list[dict[str, Any]]) -> None:
        index = {"schemaVersion": 2, "mediaType": INDEX, "manifests": manifests}
        tmp = self.root / "index.json.tmp"
        try:
            tmp.write_text(json_text(index))
            tmp.replace(self.root / "index.json")
        except OSError as e:
            raise self._unwritable(e) from None

    # Store ---------------------------------------------------------------------------------

    def resolve(self, reference: str) -> Descriptor:
        entries = self.index_entries()
        if reference.startswith("sha256:"):
            for entry in entries:
                if entry.digest == reference:
                    return entry
            if _blob_path(self.root, reference).exists():
                return self._manifest_blob(reference)
        else:
            for entry in entries:
                if entry.annotations.get(ANN_REF_NAME) == reference:
                    return entry
        known = sorted({e.annotations.get(ANN_REF_NAME, "") for e in entries} - {""})
        raise InputError(
            f"{reference} is not in the layout {self.label}",
            hint=f"tags in this layout: {tag_list(known)}",
        )

    def _manifest_blob(self, digest: str) -> Descriptor:
        """A blob named by digest but not listed in index.json: fine if it is a manifest."""
        raw = self.fetch_blob_raw(digest, MAX_MANIFEST_BYTES, what="manifest")
        not_manifest = InputError(
            f"{digest} in the layout {self.label} is not a manifest (a config or layer blob?)",
            hint="name the artifact's manifest digest, or one of the layout's tags",
        )
        try:
            document = load_json(raw, f"blob {digest}", MAX_MANIFEST_BYTES)
        except InputError:
            raise not_manifest from None
        if not isinstance(document, dict) or document.get("schemaVersion") != 2:
            raise not_manifest
        media_type = document.get("mediaType", "")
        return Descriptor(media_type if isinstance(media_type, str) else "", digest, len(raw))

    def fetch_manifest_raw(self, digest: str) -> tuple[bytes, str]:
        raw = self.fetch_blob_raw(digest, MAX_MANIFEST_BYTES, what="manifest")
        try:
            document = load_json(raw, f"manifest {digest}", MAX_MANIFEST_BYTES)
        except InputError:
            return raw, ""  # the caller parses it, and says what is wrong
        media_type = document.get("mediaType") if isinstance(document, dict) else None
        return raw, media_type if isinstance(media_type, str) else ""

    def fetch_blob_raw(self, digest: str, limit: int, what: str = "blob") -> bytes:
        path = _blob_path(self.root, digest)
        try:
            if path.is_symlink():
                raise InputError(
                    f"{what} {digest} in the layout {self.label} is a symbolic link; layouts "
                    "hold blobs as regular files"
                )
            if not path.is_file():
                raise InputError(f"{what} {digest} is missing from the layout {self.label}")
            if not path.resolve().is_relative_to(self.root.resolve()):
                raise InputError(
                    f"{what} {digest} in the layout {self.label} lies outside it "
                    "(a linked directory)"
                )
            if path.stat().st_size > limit:
                raise InputError(f"{what} {digest} is over the {limit}-byte limit")
            return path.read_bytes()
        except OSError as e:
            raise InputError(
                f"{what} {digest} in the layout {self.label} is unreadable: {e.strerror or e}"
            ) from None

    def has_blob(self, digest: str) -> bool:
        path = _blob_path(self.root, digest)
        return path.is_file() and not path.is_symlink()

    def push_blob(self, data: bytes, digest: str) -> bool:
        path = _blob_path(self.root, digest)
        if self.has_blob(digest):
            return False
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(data)
            tmp.replace(path)
        except OSError as e:
            raise self._unwritable(e) from None
        return True

    def push_manifest(self, data: bytes, media_type: str, tag: str | None) -> None:
        digest = sha256_digest(data)
        self.push_blob(data, digest)
        entry = Descriptor(
            media_type, digest, len(data), {ANN_REF_NAME: tag} if tag else {}
        ).to_json()
        document = load_json(data, f"manifest {digest}", MAX_MANIFEST_BYTES)
        artifact_type = document.get("artifactType") if isinstance(document, dict) else None
        if isinstance(artifact_type, str) and artifact_type:
            entry["artifactType"] = artifact_type
        manifests = self._read_index()
        if tag:
            manifests = [
                m for m in manifests
                if not (isinstance(m, dict) and _ref_name(m) == tag)
            ]
        elif any(
            isinstance(m, dict) and m.get("digest") == digest and not m.get("annotations")
            for m in manifests
        ):
            return
        manifests.append(entry)
        self._write_index(manifests)

    def referrers(self, digest: str) -> list[Descriptor]:
        found = []
        for entry in self.index_entries():
            try:
                raw = self.fetch_blob_raw(entry.digest, MAX_MANIFEST_BYTES, what="manifest")
                document = load_json(raw, f"manifest {entry.digest}", MAX_MANIFEST_BYTES)
            except InputError:
                continue  # not a readable manifest: it refers to nothing
            subject = document.get("subject") if isinstance(document, dict) else None
            if isinstance(subject, dict) and subject.get("digest") == digest:
                found.append(entry)
        return found

    def close(self) -> None:
        return None


def _ref_name(entry: dict[str, Any]) -> Any:
    annotations = entry.get("annotations")
    return annotations.get(ANN_REF_NAME) if isinstance(annotations, dict) else None


def json_text(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True) + "\n"


class LayoutTarStore(LayoutStore):
    """A `.tar` of an OCI layout. Reading unpacks it (safely) into a scratch directory; writing
    builds there and packs the tar deterministically on close()."""

    def __init__(self, tar_path: Path, *, create: bool = False):
        self.tar_path = tar_path
        self._dirty = False
        if not tar_path.exists() and not create:
            raise InputError(f"{tar_path} does not exist")
        self._scratch = scratch_dir("lading-layout-")
        try:
            if tar_path.exists():
                safe_extract(tar_path, self._scratch)
            super().__init__(self._scratch, create=create, label=str(tar_path))
        except BaseException:
            remove_scratch(self._scratch)
            raise

    def push_blob(self, data: bytes, digest: str) -> bool:
        self._dirty = True
        return super().push_blob(data, digest)

    def push_manifest(self, data: bytes, media_type: str, tag: str | None) -> None:
        self._dirty = True
        super().push_manifest(data, media_type, tag)

    def discard(self) -> None:
        """Forget what was written: close() then leaves the tar as it was."""
        self._dirty = False

    def close(self) -> None:
        try:
            if self._dirty:
                tmp = self.tar_path.with_suffix(".tar.tmp")
                try:
                    self.tar_path.parent.mkdir(parents=True, exist_ok=True)
                    write_deterministic_tar(self._scratch, tmp)
                    tmp.replace(self.tar_path)
                except OSError as e:
                    tmp.unlink(missing_ok=True)
                    raise InputError(
                        f"cannot write the layout tar {self.tar_path}: {e.strerror or e}"
                    ) from None
        finally:
            remove_scratch(self._scratch)


def write_deterministic_tar(root: Path, out: Path) -> None:
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(p for p in root.rglob("*")):
            rel = path.relative_to(root).as_posix()
            info = tarfile.TarInfo(rel)
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if path.is_dir():
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
            else:
                data = path.read_bytes()
                info.size = len(data)
                info.mode = 0o644
                tar.addfile(info, io.BytesIO(data))


# Scratch space ------------------------------------------------------------------------------

_scratch: set[Path] = set()
_scratch_lock = threading.Lock()


def scratch_dir(prefix: str) -> Path:
    """A private temporary directory, removed by remove_scratch(), at exit, and on SIGTERM."""
    _exit_on_sigterm()
    path = Path(tempfile.mkdtemp(prefix=prefix))
    with _scratch_lock:
        _scratch.add(path)
    return path


def remove_scratch(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    with _scratch_lock:
        _scratch.discard(path)


@atexit.register
def _remove_all_scratch() -> None:
    for path in list(_scratch):
        remove_scratch(path)


def _exit_on_sigterm() -> None:
    """SIGTERM's default action ends the process without running `finally` blocks or atexit
    handlers; exiting through SystemExit runs both, so scratch space is removed. A handler
    someone else installed is left alone, as is everything outside the main thread."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _terminate)


def _terminate(signum: int, frame: object) -> None:
    del frame
    raise SystemExit(128 + signum)


# Unpacking ----------------------------------------------------------------------------------

_DAMAGED = (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, OSError, ValueError)


def safe_extract(tar_path: Path, dest: Path, max_total: int = MAX_UNPACKED_BYTES) -> None:
    """Unpack a layout tar: regular files and directories inside `dest`, each file once,
    within bounds on bytes, entries and compression ratio. Errors name `tar_path`."""
    try:
        raw = open(tar_path, "rb")  # noqa: SIM115 - closed by the with below
        compressed = raw.read(6).startswith((b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00"))
        raw.seek(0)
    except OSError as e:
        raise InputError(f"{tar_path} is not a readable tar: {e.strerror or e}") from None
    with raw:
        try:
            tar = tarfile.open(fileobj=raw, mode="r:*")  # noqa: SIM115 - with below
        except _DAMAGED as e:
            raise InputError(f"{tar_path} is not a readable tar: {_damage(e)}") from None
        try:
            with tar:
                # The position in the file is the compressed input consumed so far.
                _unpack(tar, tar_path, dest, max_total, raw.tell if compressed else None)
                if not _ends_properly(tar):
                    raise tarfile.ReadError("it ends in the middle of an entry")
        except InputError:
            raise
        except _DAMAGED as e:
            raise InputError(
                f"{tar_path} is truncated or damaged: {_damage(e)}",
                hint="copy the file again; `lading export` writes complete tars",
            ) from None


def _unpack(
    tar: tarfile.TarFile,
    tar_path: Path,
    dest: Path,
    max_total: int,
    consumed: Callable[[], int] | None,
) -> None:
    root = dest.resolve()
    files: set[str] = set()
    written = 0
    for count, member in enumerate(tar, 1):
        if count > MAX_ENTRIES:
            raise InputError(f"{tar_path} holds more than {MAX_ENTRIES} entries")
        name = member.name.removeprefix("./").rstrip("/")
        if not name or name == ".":
            continue
        target = (dest / name).resolve()
        if name.startswith("/") or ".." in Path(name).parts or not target.is_relative_to(root):
            raise InputError(f"{tar_path}: entry {member.name!r} escapes the layout")
        if member.isdir():
            _make_dir(tar_path, member, target)
            continue
        if not member.isfile() or member.issparse():
            raise InputError(
                f"{tar_path}: entry {member.name!r} is a link, device or sparse file; layouts "
                "hold only files and directories"
            )
        if name in files:
            raise InputError(
                f"{tar_path}: entry {member.name!r} appears twice",
                hint="a tar with two versions of one file is ambiguous; lading refuses it",
            )
        files.add(name)
        if written + member.size > max_total:
            raise InputError(f"{tar_path} unpacks to more than {max_total} bytes")
        source = tar.extractfile(member)
        if source is None:
            continue
        _make_dir(tar_path, member, target.parent)
        try:
            sink = open(target, "wb")  # noqa: SIM115 - closed by the with below
        except OSError as e:
            raise _conflict(tar_path, member, e) from None
        with source, sink:
            while block := source.read(1 << 20):
                written += len(block)
                if consumed is not None and written > RATIO_ALLOWANCE and (
                    written > MAX_RATIO * max(consumed(), 1)
                ):
                    raise InputError(
                        f"{tar_path} is compressed more than {MAX_RATIO} to 1 (a decompression "
                        "bomb?); lading stopped unpacking it",
                        hint="layouts hold JSON and compressed layers, which barely compress",
                    )
                try:
                    sink.write(block)
                except OSError as e:
                    raise _conflict(tar_path, member, e) from None


def _ends_properly(tar: tarfile.TarFile) -> bool:
    """Whether the archive ends with its end-of-archive marker (a zero block): tarfile stops
    quietly at a header cut short, which would pass a truncated tar off as a shorter one."""
    fileobj = tar.fileobj
    if fileobj is None:
        return False
    fileobj.seek(tar.offset)
    block = fileobj.read(tarfile.BLOCKSIZE)
    return len(block) == tarfile.BLOCKSIZE and not any(block)


def _make_dir(tar_path: Path, member: tarfile.TarInfo, path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _conflict(tar_path, member, e) from None


def _conflict(tar_path: Path, member: tarfile.TarInfo, error: OSError) -> InputError:
    """Writing the scratch copy failed: an entry clashing with another (a file where a
    directory is), or the scratch disk full."""
    return InputError(
        f"cannot unpack {tar_path}: entry {member.name!r}: {error.strerror or error}"
    )


def _damage(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error) or type(error).__name__
