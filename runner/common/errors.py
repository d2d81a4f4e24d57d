"""One error hierarchy for lading; the CLI maps each class to an exit code in `exit_code`.

Every error carries a message a user can act on. Messages must never contain secrets
(tokens, passwords, Secret data): build them from names and ids, not from payloads.
"""

from __future__ import annotations


class LadingError(Exception):
    """Base of every error lading raises on purpose."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\n  hint: {self.hint}" if self.hint else self.message


class InputError(LadingError):
    """Bad input: a plan, manifest, reference, flag or artifact content the user can fix."""

    exit_code = 2


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
