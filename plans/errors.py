"""The root of lading's error hierarchy.

It lives here, in the bottom layer, so that plans/ can refuse a bad document without importing
runner/ (plans is the contract a control plane may use on its own; runner builds on it, never
the reverse). `runner.common.errors` extends it with the remote and operation errors and maps
every class to an exit code in one place.
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
