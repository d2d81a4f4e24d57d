"""lading's errors as Temporal failures, classified the way the exit codes are.

exit 2  InputError      non-retryable: the same plan fails the same way on every worker
exit 3  RemoteError     retryable with backoff: a registry or cluster may come back
exit 1  InstallFailed   non-retryable, the InstallResult in the failure details
        OperationFailed non-retryable (a refused signature, a lock held too long)
        Cancelled       non-retryable, what had happened when the work stopped in the details

Messages are lading's own, which never carry secrets (runner.common.errors), so they are safe
in history and shown there unencrypted for operators to read.
"""

from __future__ import annotations

from typing import Any

from temporalio.exceptions import ApplicationError

from plans.errors import InputError, LadingError
from runner.common.errors import OperationFailed, RemoteError
from runner.common.output import to_document
from runner.install.install import InstallFailed


class Cancelled(LadingError):
    """Raised from the progress sink once Temporal asked the activity to stop: the runner
    stops at its next progress report, after the requests in flight, releasing its lease.
    `report` says how far it got; it becomes the failure's details."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.report: dict[str, Any] = {"cancelled": True}


def application_error(error: LadingError, *details: Any) -> ApplicationError:
    """The ApplicationError a failed activity raises for `error`."""
    message = str(error)
    if isinstance(error, InstallFailed):
        return ApplicationError(
            message, to_document(error.result), *details, type="InstallFailed",
            non_retryable=True,
        )
    if isinstance(error, Cancelled):
        return ApplicationError(message, *details, type="Cancelled", non_retryable=True)
    if isinstance(error, RemoteError):
        return ApplicationError(message, *details, type="RemoteError", non_retryable=False)
    if isinstance(error, InputError):
        return ApplicationError(message, *details, type="InputError", non_retryable=True)
    if isinstance(error, OperationFailed):
        return ApplicationError(message, *details, type="OperationFailed", non_retryable=True)
    return ApplicationError(message, *details, type=type(error).__name__, non_retryable=True)
