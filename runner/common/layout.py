"""OCI image layouts as Stores: a directory, or a `.tar` of one.

A layout tar is read in place (members looked up by name, links and devices refused) and
written by building the directory in a scratch area, then packing it deterministically.
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from runner.common.digest import check_digest_syntax, sha256_digest
from runner.common.errors import InputError
from runner.common.oci import ANN_REF_NAME, INDEX, Descriptor, canonical_json

_LAYOUT_FILE = {"imageLayoutVersion": "1.0.0"}


def _blob_path(root: Path, digest: str) -> Path:
    algorithm, hexpart = check_digest_syntax(digest).split(":", 1)
    return root / "blobs" / algorithm / hexpart


class LayoutStore:
    """An OCI image layout directory. `create=True` makes one if it does not exist."""

    def __init__(self, root: Path, *, create: bool = False):
        self.root = root
        if not (root / "oci-layout").exists():
            if not create:
                raise InputError(
                    f"{root} is not an OCI image layout (no oci-layout file)",
                    hint="point at a directory written by `lading build --to oci-layout:DIR` "
                    "or `lading export`",
                )
            root.mkdir(parents=True, exist_ok=True)
            (root / "oci-layout").write_bytes(canonical_json(_LAYOUT_FILE))
            self._write_index([])

    # index.json ----------------------------------------------------------------------------

    def _read_index(self) -> list[dict[str, Any]]:
        try:
            index = json.loads((self.root / "index.json").read_text())
        except (OSError, ValueError) as e:
            raise InputError(f"{self.root}/index.json is unreadable: {e}") from None
        manifests = index.get("manifests", []) if isinstance(index, dict) else None
        if not isinstance(manifests, list):
            raise InputError(f"{self.root}/index.json has no manifests list")
        return manifests

    def _write_index(self, manifests: list[dict[str, Any]]) -> None:
        index = {"schemaVersion": 2, "mediaType": INDEX, "manifests": manifests}
        tmp = self.root / "index.json.tmp"
        tmp.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
        tmp.replace(self.root / "index.json")

    # Store ---------------------------------------------------------------------------------

    def resolve(self, reference: str) -> Descriptor:
        entries = [Descriptor.from_json(m, "index.json entry") for m in self._read_index()]
        if reference.startswith("sha256:"):
            if _blob_path(self.root, reference).exists():
                for entry in entries:
                    if entry.digest == reference:
                        return entry
                raw = _blob_path(self.root, reference).read_bytes()
                media_type = json.loads(raw).get("mediaType", "")
                return Descriptor(media_type, reference, len(raw))
        else:
            for entry in entries:
                if entry.annotations.get(ANN_REF_NAME) == reference:
                    return entry
        known = sorted({e.annotations.get(ANN_REF_NAME, "") for e in entries} - {""})
        raise InputError(
            f"{reference} is not in the layout {self.root}",
            hint=f"tags in this layout: {', '.join(known) or 'none'}",
        )

    def fetch_manifest_raw(self, digest: str) -> tuple[bytes, str]:
        raw = self.fetch_blob_raw(digest, 4 * 1024 * 1024)
        try:
            media_type = str(json.loads(raw).get("mediaType", ""))
        except (ValueError, AttributeError):
            media_type = ""
        return raw, media_type

    def fetch_blob_raw(self, digest: str, limit: int) -> bytes:
        path = _blob_path(self.root, digest)
        if not path.is_file() or path.is_symlink():
            raise InputError(f"blob {digest} is missing from the layout {self.root}")
        if path.stat().st_size > limit:
            raise InputError(f"blob {digest} is over the {limit}-byte limit")
        return path.read_bytes()

    def has_blob(self, digest: str) -> bool:
        return _blob_path(self.root, digest).is_file()

    def push_blob(self, data: bytes, digest: str) -> bool:
        path = _blob_path(self.root, digest)
        if path.is_file():
            return False
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
        return True

    def push_manifest(self, data: bytes, media_type: str, tag: str | None) -> None:
        digest = sha256_digest(data)
        self.push_blob(data, digest)
        entry = Descriptor(
            media_type, digest, len(data), {ANN_REF_NAME: tag} if tag else {}
        ).to_json()
        try:
            artifact_type = json.loads(data).get("artifactType")
        except ValueError:
            artifact_type = None
        if artifact_type:
            entry["artifactType"] = artifact_type
        manifests = self._read_index()
        if tag:
            manifests = [
                m for m in manifests if (m.get("annotations") or {}).get(ANN_REF_NAME) != tag
            ]
        elif any(m.get("digest") == digest and not m.get("annotations") for m in manifests):
            return
        manifests.append(entry)
        self._write_index(manifests)

    def referrers(self, digest: str) -> list[Descriptor]:
        found = []
        for entry in self._read_index():
            desc = Descriptor.from_json(entry, "index.json entry")
            raw = _blob_path(self.root, desc.digest)
            if not raw.is_file():
                continue
            try:
                subject = (json.loads(raw.read_bytes()).get("subject") or {}).get("digest")
            except ValueError:
                continue
            if subject == digest:
                found.append(desc)
        return found

    def close(self) -> None:
        return None


class LayoutTarStore(LayoutStore):
    """A `.tar` of an OCI layout. Reading unpacks it (safely) into a scratch directory; writing
    builds there and packs the tar deterministically on close()."""

    def __init__(self, tar_path: Path, *, create: bool = False):
        self.tar_path = tar_path
        self._scratch = Path(tempfile.mkdtemp(prefix="lading-layout-"))
        self._dirty = False
        if tar_path.exists():
            safe_extract(tar_path, self._scratch)
        elif not create:
            raise InputError(f"{tar_path} does not exist")
        super().__init__(self._scratch, create=create)

    def push_blob(self, data: bytes, digest: str) -> bool:
        self._dirty = True
        return super().push_blob(data, digest)

    def push_manifest(self, data: bytes, media_type: str, tag: str | None) -> None:
        self._dirty = True
        super().push_manifest(data, media_type, tag)

    def close(self) -> None:
        try:
            if self._dirty:
                self.tar_path.parent.mkdir(parents=True, exist_ok=True)
                tmp = self.tar_path.with_suffix(".tar.tmp")
                write_deterministic_tar(self._scratch, tmp)
                tmp.replace(self.tar_path)
        finally:
            shutil.rmtree(self._scratch, ignore_errors=True)


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


def safe_extract(tar_path: Path, dest: Path, max_total: int = 4 * 1024**3) -> None:
    """Unpack a layout tar, refusing anything but regular files and directories inside `dest`."""
    try:
        tar = tarfile.open(tar_path, "r:*")  # noqa: SIM115 - closed by the with below
    except (tarfile.TarError, OSError) as e:
        raise InputError(f"{tar_path} is not a readable tar: {e}") from None
    total = 0
    with tar:
        for member in tar:
            name = member.name[2:] if member.name.startswith("./") else member.name
            target = (dest / name).resolve()
            if (
                name.startswith("/")
                or ".." in Path(name).parts
                or not target.is_relative_to(dest.resolve())
            ):
                raise InputError(f"{tar_path}: entry {member.name!r} escapes the layout")
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            if not member.isfile():
                raise InputError(
                    f"{tar_path}: entry {member.name!r} is a link or device; layouts hold "
                    "only files and directories"
                )
            total += member.size
            if total > max_total:
                raise InputError(f"{tar_path} unpacks to more than {max_total} bytes")
            source = tar.extractfile(member)
            if source is None:
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with source, open(target, "wb") as sink:
                shutil.copyfileobj(source, sink)
