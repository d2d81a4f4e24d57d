"""`--to git:REPO[#BRANCH][:DIR]`: the canonical manifests committed to a Git repository for a
GitOps controller (Flux, Argo CD) to apply.

DIR receives `manifests.yaml`, byte for byte the artifact's content (its sha256 is the
artifact's `checksum`). The commit message ends in trailers a GitOps user can grep
(`git log --format=%(trailers:key=Lading-Digest)`); a branch whose last commit under DIR
already carries the digest is left alone. A plain Secret never goes to Git: only ExternalSecret
and SealedSecret objects, which hold no values.

Real `git` does the work, so credentials, SSH keys and hooks are the user's usual ones.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from plans.build import GitCommit
from runner.build.source import redact_url
from runner.common.errors import InputError, RemoteError
from runner.common.objects import Obj

PREFIX = "git:"
MANIFESTS = "manifests.yaml"
GIT_TIMEOUT = 300
TRAILER_DIGEST = "Lading-Digest"


@dataclass(frozen=True)
class GitTarget:
    repo: str  # a path or URL, as `git clone` takes it
    branch: str | None  # None: the repository's default branch
    dir: str  # inside the repository, '' for its root

    def __str__(self) -> str:
        return f"{PREFIX}{redact_url(self.repo)}#{self.branch or ''}:{self.dir}"

    def pinned(self, branch: str, commit: str) -> str:
        return f"{PREFIX}{redact_url(self.repo)}#{branch}:{self.dir}@{commit}"


def is_git_target(text: str) -> bool:
    return text.startswith(PREFIX)


def _is_url(repo: str) -> bool:
    # URLs (https://, ssh://, file://) and scp-like remotes (git@host:org/repo.git).
    return "://" in repo or re.match(r"^[^/]+@[^/:]+:", repo) is not None


def parse_git_target(text: str) -> GitTarget:
    """git:REPO[#BRANCH][:DIR]. With a URL REPO, DIR comes after the branch
    (`git:https://host/x.git#main:deploy`, or `#:deploy` for the default branch), since a URL
    has colons of its own."""
    rest = text.removeprefix(PREFIX)
    forms = ("accepted: git:REPO, git:REPO#BRANCH, git:REPO#BRANCH:DIR, git:PATH:DIR "
             "(REPO a path or URL)")
    if "#" in rest:
        repo, _, tail = rest.partition("#")
        branch, _, directory = tail.partition(":")
    elif _is_url(rest):
        repo, branch, directory = rest, "", ""
    else:
        repo, _, directory = rest.partition(":")
        branch = ""
    if not repo:
        raise InputError(f"{text!r} names no repository", hint=forms)
    if branch and (branch.startswith("-") or re.search(r"[\s~^:?*\[\\]|\.\.|@\{", branch)):
        raise InputError(f"{text!r}: {branch!r} is not a valid branch name", hint=forms)
    clean = PurePosixPath(directory.strip("/")) if directory else PurePosixPath()
    if clean.is_absolute() or ".." in clean.parts or ".git" in clean.parts:
        raise InputError(f"{text!r}: DIR {directory!r} must stay inside the repository",
                         hint=forms)
    return GitTarget(repo=repo, branch=branch or None,
                     dir="" if str(clean) == "." else str(clean))


def refuse_plain_secrets(objects: Iterable[Obj]) -> None:
    plain = [f"{o.get('metadata', {}).get('namespace') or '-'}/{o['metadata']['name']}"
             for o in objects if o.get("apiVersion") == "v1" and o.get("kind") == "Secret"]
    if plain:
        raise InputError(
            f"a Git destination cannot hold plain Secrets ({', '.join(plain)}): their values "
            "would be in the repository's history for good",
            hint="for an App, use secret strategy `external` (ExternalSecret) or `sealed` "
            "(SealedSecret); for compose, move credentials out of the environment",
        )


class _Git:
    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd
        self.binary = shutil.which("git")
        if self.binary is None:
            raise InputError("`git` is not installed", hint="install it (apt-get install git)")

    def __call__(self, *args: str, check: bool = True, remote: bool = False) -> str:
        assert self.binary is not None
        env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}
        try:
            proc = subprocess.run([self.binary, *args], cwd=self.cwd, capture_output=True,
                                  text=True, timeout=GIT_TIMEOUT, env=env)
        except subprocess.TimeoutExpired:
            raise RemoteError(f"git {args[0]} did not finish within {GIT_TIMEOUT}s") from None
        if check and proc.returncode != 0:
            message = redact_url(proc.stderr.strip().splitlines()[-1]) if proc.stderr else ""
            error = RemoteError if remote else InputError
            raise error(f"git {args[0]} failed: {message or f'exit {proc.returncode}'}")
        return proc.stdout.strip()


def commit_message(title: str, trailers: dict[str, str]) -> str:
    lines = [title, ""]
    lines += [f"{key}: {value}" for key, value in trailers.items() if value]
    return "\n".join(lines) + "\n"


def push_manifests(
    target: GitTarget,
    stream: str,
    digest: str,
    trailers: dict[str, str],
    title: str,
    progress: Callable[[str], None],
) -> GitCommit:
    """Commit `stream` as DIR/manifests.yaml on the branch and push it. `trailers` (source,
    version…) follow the digest's in the message."""
    if not _is_url(target.repo) and not Path(target.repo).is_dir():
        raise InputError(
            f"{target}: the repository {target.repo!r} does not exist",
            hint="create it first, e.g. `git init --bare --initial-branch=main PATH`",
        )
    with tempfile.TemporaryDirectory(prefix="lading-git-") as tmp:
        work = Path(tmp) / "work"
        git = _Git(Path(tmp))
        # A whole clone: the last commit under DIR decides the no-op, and a shallow history
        # would make its root look as if it touched everything.
        git("clone", "--quiet", "--no-tags", "--", target.repo, str(work), remote=True)
        git = _Git(work)
        branch = target.branch or git("symbolic-ref", "--short", "HEAD", check=False) or "main"
        exists = bool(git("ls-remote", "--heads", "origin", f"refs/heads/{branch}", remote=True))
        if exists:
            git("fetch", "--quiet", "origin",
                f"+refs/heads/{branch}:refs/remotes/origin/{branch}", remote=True)
            git("checkout", "--quiet", "-B", branch, f"origin/{branch}")
            last = git("log", "-1", f"--format=%(trailers:key={TRAILER_DIGEST},valueonly)",
                       "--", target.dir or ".")
            if last.strip() == digest:
                head = git("rev-parse", "HEAD")
                progress(f"{target}: {digest[:19]} is already committed ({head[:12]})")
                return _result(target, branch, head, changed=False)
        else:
            git("checkout", "--quiet", "--orphan", branch)
            git("rm", "-r", "--quiet", "--cached", "--ignore-unmatch", ".")
        directory = work / target.dir
        directory.mkdir(parents=True, exist_ok=True)
        (directory / MANIFESTS).write_text(stream)
        path = f"{target.dir}/{MANIFESTS}" if target.dir else MANIFESTS
        git("add", "--", path)
        identity = []
        if not git("config", "user.email", check=False):
            # A build machine without a Git identity still commits, as lading.
            identity = ["-c", "user.name=lading", "-c", "user.email=lading@localhost"]
        message = commit_message(title, {TRAILER_DIGEST: digest, **trailers})
        _commit(git, identity, message, work)
        git("push", "--quiet", "origin", f"HEAD:refs/heads/{branch}", remote=True)
        head = git("rev-parse", "HEAD")
        progress(f"{target}: committed {digest[:19]} as {head[:12]} and pushed")
        return _result(target, branch, head, changed=True)


def _commit(git: _Git, identity: list[str], message: str, work: Path) -> str:
    # The message goes through a file: trailers need the exact bytes, and -m would split them.
    message_file = work.parent / "message"
    message_file.write_text(message)
    # Allowed empty: the same manifests under a new digest (a new version, another source)
    # still record which artifact the branch now stands for.
    return git(*identity, "commit", "--quiet", "--allow-empty", "-F", str(message_file))


def _result(target: GitTarget, branch: str, commit: str, *, changed: bool) -> GitCommit:
    return GitCommit(repo=redact_url(target.repo), branch=branch, dir=target.dir,
                     commit=commit, changed=changed)
