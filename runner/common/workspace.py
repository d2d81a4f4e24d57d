"""Keeping the files a plan names inside its workspace.

A plan comes from a control plane or a repository, not from the person at the keyboard, so the
files it may read (manifests, kustomize trees, CA files) and write (OCI layouts, tars) are
confined to one directory. A path is judged by where it lands once every symlink on the way is
followed, so `..`, absolute paths and links that lead out are all refused alike.
"""

from __future__ import annotations

import os
from pathlib import Path

from runner.common.errors import InputError


def confine(path: str | Path, workspace: Path, field: str, *, base: Path | None = None) -> Path:
    """`path` (relative to `base`, by default the workspace) resolved through every symlink,
    refused with an InputError naming `field` when it lands outside `workspace`. The path need
    not exist: a destination is created later, inside."""
    root = _resolve(workspace, field)
    resolved = _resolve((base or root) / path, field)
    if not resolved.is_relative_to(root):
        raise InputError(
            f"{field}: {str(path)!r} leads outside the workspace {root} (to {resolved})",
            hint="keep the plan's files inside its workspace, or pass --workspace DIR to widen it",
        )
    return resolved


def refuse_escaping_links(root: Path, field: str) -> None:
    """Refuse a symlink anywhere under `root` that leads outside it.

    kustomize's load restrictor stops a kustomization reading files outside its root, but a
    directory named as a resource is a new root that may sit anywhere; a symlink to such a
    directory hides that from whoever reads the kustomization (a `../` is at least visible in
    review). So no link under the root may lead out of it, whatever kustomize would allow."""
    top = _resolve(root, field)
    for directory, dirs, files in os.walk(top, followlinks=False):
        # kustomize never reads git's own files, and a large repository's .git is slow to walk.
        dirs[:] = [d for d in dirs if d != ".git"]
        for name in (*dirs, *files):
            link = Path(directory, name)
            if not link.is_symlink():
                continue
            target = _resolve(link, field)
            if not target.is_relative_to(top):
                raise InputError(
                    f"{field}: the symlink {link.relative_to(top).as_posix()!r} in {root} "
                    f"leads outside it (to {target})",
                    hint="copy what it points to into the directory, or name that directory "
                    "in kustomization.yaml by its relative path",
                )


def _resolve(path: Path, field: str) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError) as e:  # RuntimeError: a symlink loop (Python < 3.13)
        raise InputError(f"{field}: cannot resolve {str(path)!r}: {e}") from None
