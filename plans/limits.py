"""What lading accepts from outside, before any of it is parsed: the limits (each set by a
LADING_MAX_* variable, documented in the README's "Limits"), text that must be UTF-8, and byte
counts as messages show them.

Kept apart from plans.documents, which parses within these limits, so that what needs only
them loads no YAML library: runner.build.child starts kustomize under its output limit before
the rest of a build has loaded.
"""

from __future__ import annotations

import os

from plans.errors import InputError

MiB = 1024 * 1024


class Limits:
    """What lading accepts from outside. Defaults are generous for real manifests and small
    enough that a hostile input is refused in well under a second.

    Not a dataclass: runner.build.child reads the limits before it starts kustomize, and
    `dataclasses` takes longer to import than the rest of what comes before that start."""

    # The largest YAML or JSON text parsed at once (a file, a tool's output, a layer member),
    # and the largest size a YAML stream may expand to through its aliases.
    input_bytes: int = 64 * MiB
    # Nesting of mappings and sequences. Deep CRD schemas reach about 40.
    depth: int = 100
    # Alias references per YAML stream; kustomize and helm output never has any.
    aliases: int = 100
    # Documents per YAML stream.
    documents: int = 10_000
    # One object as JSON: etcd's default request limit, which the API server enforces too.
    object_bytes: int = 3 * MiB // 2
    # Everything an artifact's layers unpack to, together.
    unpacked_bytes: int = 64 * MiB

    def __init__(self, **overrides: int) -> None:
        unknown = sorted(set(overrides) - set(Limits.__annotations__))
        if unknown:
            raise TypeError(f"no such limit: {', '.join(unknown)}")
        self.__dict__.update(overrides)


# Environment variable, field, upper bound. Depth stays well inside Python's recursion limit
# (normalising and JSON-encoding an object recurse once per level); libyaml stops at 1,000.
_ENV = (
    ("LADING_MAX_INPUT_BYTES", "input_bytes", 1 << 40),
    ("LADING_MAX_DEPTH", "depth", 500),
    ("LADING_MAX_ALIASES", "aliases", 1_000_000),
    ("LADING_MAX_DOCUMENTS", "documents", 10_000_000),
    ("LADING_MAX_OBJECT_BYTES", "object_bytes", 1 << 40),
    ("LADING_MAX_UNPACKED_BYTES", "unpacked_bytes", 1 << 40),
)


def limits() -> Limits:
    """The limits in force: the defaults, overridden by LADING_MAX_* variables."""
    values: dict[str, int] = {}
    for variable, field, ceiling in _ENV:
        raw = os.environ.get(variable)
        if raw is None or not raw.strip():
            continue
        try:
            value = int(raw.strip().replace("_", ""))
        except ValueError:
            value = 0
        if not 1 <= value <= ceiling:
            raise InputError(f"{variable}={raw!r}: expected a whole number from 1 to {ceiling}")
        values[field] = value
    return Limits(**values)


def size_text(n: int) -> str:
    """A byte count for messages: `1.5 MiB`, `512 bytes`."""
    if n < 1024:
        return f"{n} bytes"
    if n < MiB:
        return f"{n / 1024:.1f} KiB"
    if n < 1024 * MiB:
        return f"{n / MiB:.1f} MiB"
    return f"{n / (1024 * MiB):.1f} GiB"


def too_big(what: str, size: int, cap: int, variable: str) -> InputError:
    return InputError(
        f"{what} is {size_text(size)}, more than the {size_text(cap)} lading reads",
        hint=f"raise {variable} if this input is genuine",
    )


def decode(data: bytes, what: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"{what} is not UTF-8 text (byte {e.start} is not valid UTF-8)") from None
