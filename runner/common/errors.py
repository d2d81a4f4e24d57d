"""One error hierarchy for lading; the CLI maps each class to an exit code in `exit_code`.

Every error carries a message a user can act on. Messages must never contain secrets
(tokens, passwords, Secret data): build them from names and ids, not from payloads.
"""

from __future__ import annotations

# The root classes live in plans/ (the bottom layer, which must not import runner/); they are
# re-exported here so the whole hierarchy is importable from one place.
from plans.errors import InputError, LadingError

__all__ = ["InputError", "LadingError", "OperationFailed", "RemoteError", "exit_code"]


class RemoteError(LadingError):
    """A registry or cluster could not be reached, or refused our credentials."""

    exit_code = 3


class OperationFailed(LadingError):
    """The operation ran and failed: an apply, a wait, a verification."""

    exit_code = 1


def exit_code(error: BaseException) -> int:
    """The process exit code for an error: the single place this mapping lives."""
    if isinstance(error, LadingError):
        return error.exit_code
    return 1
