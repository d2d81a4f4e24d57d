"""Source metadata: where the configuration came from (git URL, revision, path, commit time),
detected from the git work tree the source lives in, overridable by the plan."""

from __future__ import annotations

import os
import subprocess
import urllib.parse
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from plans.build import SourceMetadata
from runner.common.errors import InputError


@dataclass(frozen=True)
class SourceFacts:
    url: str | None
    revision: str | None
    path: str | None
    created: str  # RFC 3339, UTC
    dirty: bool = False  # uncommitted changes under the source: the revision is not the build


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def redact_url(url: str) -> str:
    """A remote URL without credentials: https://user:token@host/x → https://host/x."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme and "@" in parts.netloc:
        host = parts.netloc.rsplit("@", 1)[1]
        return urllib.parse.urlunsplit(parts._replace(netloc=host))
    return url


def rfc3339(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def source_date_epoch() -> int | None:
    value = os.environ.get("SOURCE_DATE_EPOCH")
    if value is None or value == "":
        return None
    if not value.isdigit():
        raise InputError(f"SOURCE_DATE_EPOCH={value!r} is not a number of seconds since 1970")
    return int(value)


def detect(where: Path | None, overrides: SourceMetadata) -> SourceFacts:
    """Source facts for a build. `created` is SOURCE_DATE_EPOCH, else the commit time of the
    revision, else 1970-01-01: never the wall clock, so the same inputs give the same digest."""
    url, revision, path, commit_time, dirty = None, None, None, None, False
    if where is not None:
        top = _git(["rev-parse", "--show-toplevel"], where)
        if top:
            revision = _git(["rev-parse", "HEAD"], where)
            dirty = bool(_git(["status", "--porcelain", "--", "."], where))
            remote = _git(["remote", "get-url", "origin"], where)
            url = redact_url(remote) if remote else None
            rel = where.resolve().relative_to(Path(top).resolve()).as_posix()
            path = rel if rel != "." else ""
    if overrides.url is not None:
        url = redact_url(overrides.url)
    if overrides.path is not None:
        path = overrides.path
    if overrides.revision is not None:
        revision = overrides.revision
        dirty = False  # the caller vouches for this revision
    if revision and where is not None:
        stamp = _git(["log", "-1", "--format=%ct", revision, "--"], where)
        commit_time = int(stamp) if stamp and stamp.isdigit() else None
    epoch = source_date_epoch()
    created = rfc3339(epoch if epoch is not None else commit_time or 0)
    return SourceFacts(url=url, revision=revision, path=path, created=created, dirty=dirty)
