"""Starting `kustomize build` for `lading build --kustomize DIR` before the build's imports.

kustomize takes most of a build's time on one core; click, pydantic, the plan models and the
registry client take a few hundred milliseconds more to import. The CLI calls `start_early`
with the build's arguments before it loads the build command, so those imports run while
kustomize does; this module and what it imports need only the standard library (a test
checks it), so kustomize starts some 30 ms after the process does.

Nothing is decided here: the directory gets the checks rendering gives it before kustomize
may read it, and runner.build.child hands the child to the render only if it asks for the
same command under the same limits. A plan file, a helm chart (helm may fetch charts) or
anything unexpected means no early start, and the build runs as it always does.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from runner.build.child import discard_early, start_early
from runner.build.tools import kustomization_dir, kustomize_command
from runner.common.errors import InputError

# Flags after which the overlay directory alone does not say what kustomize runs.
_NOT_EARLY = frozenset({"--plan", "--enable-helm", "--load-restrictor", "-h", "--help"})


@contextmanager
def kustomize_started_early(args: list[str]) -> Iterator[None]:
    """Around the build command (`args`: the arguments after `build`): a child the build did
    not take over is stopped when it ends, however it ends."""
    path = _kustomize_path(args)
    try:
        if path is not None:
            directory = kustomization_dir(Path.cwd(), path)
            start_early(kustomize_command(directory, enable_helm=False, load_restrictor="rootOnly"))
    except InputError:
        pass  # the build reports it, in its place
    try:
        yield
    finally:
        discard_early()


def _kustomize_path(args: list[str]) -> str | None:
    paths: list[str] = []
    for i, arg in enumerate(args):
        name, _, value = arg.partition("=")
        if arg == "--" or name in _NOT_EARLY or arg.startswith("-f"):  # -f PLAN, -fPLAN
            return None
        if arg == "--kustomize" and i + 1 < len(args):
            paths.append(args[i + 1])
        elif name == "--kustomize" and value:
            paths.append(value)
    return paths[0] if len(paths) == 1 else None
