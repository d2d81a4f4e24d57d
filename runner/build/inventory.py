"""The inventory name an artifact records at build time.

The install runner's default inventory comes from the artifact, not from how it is referenced,
so one digest lands in one inventory whether it is installed from a registry, an `oci-layout:`
directory or a tar, and successive versions built to one repository land in one inventory.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from plans.build import INVENTORY_MAX
from runner.common.errors import InputError
from runner.common.reference import ArtifactRef

_NOT_ALLOWED = re.compile(r"[^a-z0-9]+")


def default_inventory(destination: ArtifactRef) -> str:
    """The destination's last path component as an inventory name: the repository's (`app` for
    registry.example/team/app), or the layout directory's or tar's base name without `.tar`,
    lowercased, with runs of other characters turned into `-`, and cut to the maximum length."""
    if destination.kind == "registry":
        stem = destination.repository.rsplit("/", 1)[-1]
    else:
        # abspath: `oci-layout:.` is named after the directory it stands for.
        stem = Path(os.path.abspath(destination.location)).name.removesuffix(".tar")
    return inventory_from(stem, str(destination))


def inventory_from(stem: str, destination: str) -> str:
    """`stem` lowercased, runs of other characters turned into `-`, cut to the maximum."""
    name = _NOT_ALLOWED.sub("-", stem.lower()).strip("-")[:INVENTORY_MAX].rstrip("-")
    if not name:
        raise InputError(
            f"cannot make an inventory name from {destination}: {stem!r} holds no letters "
            "or digits",
            hint="name it with --inventory NAME (inventory: in a plan): lowercase letters, "
            "digits and '-'",
        )
    return name
