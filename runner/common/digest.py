"""Content digests (OCI `algorithm:hex`) and their verification."""

from __future__ import annotations

import hashlib
import re

from runner.common.errors import InputError

_DIGEST = re.compile(r"sha256:[a-f0-9]{64}")


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def check_digest_syntax(digest: str) -> str:
    if not _DIGEST.fullmatch(digest):
        raise InputError(
            f"invalid digest {digest!r}",
            hint="a digest is 'sha256:' followed by 64 lowercase hex characters",
        )
    return digest


class DigestMismatch(InputError):
    """Content read from a registry or layout does not hash to its descriptor's digest."""


def verify(data: bytes, digest: str, size: int | None, what: str) -> bytes:
    """Return `data` if it hashes to `digest` (and has `size` bytes); raise otherwise.

    Everything lading reads from a registry or layout passes through here: a mismatch is an
    error, never a warning.
    """
    if size is not None and len(data) != size:
        raise DigestMismatch(
            f"{what} {digest}: expected {size} bytes, got {len(data)}",
            hint="the artifact was altered or truncated in transit or at rest; do not use it",
        )
    actual = sha256_digest(data)
    if actual != digest:
        raise DigestMismatch(
            f"{what} does not match its digest: expected {digest}, content hashes to {actual}",
            hint="the artifact was altered in transit or at rest; do not use it",
        )
    return data
