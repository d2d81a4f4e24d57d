"""Source metadata: where the configuration came from (git URL, revision, path, commit time),
detected from the git work tree the source lives in, overridable by the plan."""

from __future__ import annotations

import os
import re
import subprocess
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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


_GIT_TIMEOUT = 10


class _Git:
    """A git command started now; `output()` waits for its answer (None when it failed)."""

    def __init__(self, args: list[str], cwd: Path) -> None:
        try:
            self._proc: subprocess.Popen[str] | None = subprocess.Popen(
                ["git", *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                text=True,
            )
        except OSError:
            self._proc = None

    def output(self) -> str | None:
        if self._proc is None:
            return None
        try:
            out, _ = self._proc.communicate(timeout=_GIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.stop()
            return None
        return out.strip() if self._proc.returncode == 0 else None

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.communicate()


def _git(args: list[str], cwd: Path) -> str | None:
    return _Git(args, cwd).output()


# Query parameters that carry a credential: tokens (GitLab's private_token, OAuth's
# access_token), passwords, keys, and the signatures of pre-signed URLs (S3's X-Amz-*, GCS's
# X-Goog-*, Azure SAS's sig). Names are compared case-insensitively.
_SECRET_NAMES = frozenset({"sig", "key", "code", "auth", "pass", "pwd"})
_SECRET_PARTS = ("token", "secret", "passw", "signature", "credential")
_SECRET_PREFIXES = ("x-amz-", "x-goog-")
_SECRET_SUFFIXES = ("_key", "-key", "apikey")
# A scheme and the user info after it (`https://user:token@`), or the login of an scp-like git
# remote (`git@`, with no scheme).
_USER_INFO = re.compile(r"^(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)?(?P<user>[^/?#]*)@")


def _is_secret_param(name: str) -> bool:
    name = urllib.parse.unquote_plus(name).lower()
    return (
        name in _SECRET_NAMES
        or any(part in name for part in _SECRET_PARTS)
        or name.startswith(_SECRET_PREFIXES)
        or name.endswith(_SECRET_SUFFIXES)
    )


def _drop_secret_params(text: str) -> str:
    # Kept parameters stay byte for byte as given: decoding and encoding again could change them.
    return "&".join(p for p in text.split("&") if p and not _is_secret_param(p.split("=", 1)[0]))


def redact_url(url: str) -> str:
    """A source URL without credentials, for recording in an artifact: no user info
    (https://user:token@host/x → https://host/x) and no token-like query parameters
    (?private_token=…, ?X-Amz-Signature=…). The login of an scp-like git remote
    (git@host:org/repo.git) names an account, not a secret, and is kept."""
    rest, _, fragment = url.partition("#")
    rest, _, query = rest.partition("?")
    match = _USER_INFO.match(rest)
    if match and (match["scheme"] or ":" in match["user"]):
        rest = (match["scheme"] or "") + rest[match.end() :]
    query, fragment = _drop_secret_params(query), _drop_secret_params(fragment)
    return rest + (f"?{query}" if query else "") + (f"#{fragment}" if fragment else "")


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
    with detecting(where, overrides) as facts:
        return facts()


# What detect asks git once it knows the directory is in a work tree.
_FACTS = (
    ["rev-parse", "HEAD"],
    ["status", "--porcelain", "--", "."],
    ["remote", "get-url", "origin"],
)


@contextmanager
def detecting(where: Path | None, overrides: SourceMetadata) -> Iterator[Callable[[], SourceFacts]]:
    """`detect`, with its git commands started on entry: the caller does other work
    (canonicalising the objects) while they run, then calls what this yields for the facts.
    Commands still running at exit are stopped."""
    started: list[_Git] = []
    if where is not None:
        started.append(_Git(["rev-parse", "--show-toplevel"], where))
        # Outside a repository only that first command runs, as it always did; inside one
        # the rest start beside it instead of after it.
        if _in_a_repository(where):
            started += [_Git(args, where) for args in _FACTS]

    def facts() -> SourceFacts:
        answers = [git.output() for git in started]
        if where is not None and len(answers) == 1 and answers[0]:
            answers += [_git(args, where) for args in _FACTS]  # a work tree not seen from here
        return _facts(where, overrides, answers)

    try:
        yield facts
    finally:
        for git in started:
            git.stop()


def _in_a_repository(where: Path) -> bool:
    """Whether git may find a repository from `where`: $GIT_DIR, or a .git on the way up."""
    if os.environ.get("GIT_DIR"):
        return True
    here = where.resolve()
    return any((directory / ".git").exists() for directory in (here, *here.parents))


def _facts(
    where: Path | None, overrides: SourceMetadata, answers: list[str | None]
) -> SourceFacts:
    url, revision, path, commit_time, dirty = None, None, None, None, False
    top = answers[0] if answers else None
    if where is not None and top:
        revision, status, remote = answers[1:]
        dirty = bool(status)
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
