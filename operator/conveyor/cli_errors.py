"""The CLI's one user-facing error type."""

from conveyor.errors import UserError


class CliError(UserError):
    """A user-facing error: printed without a traceback, exit code 1 (or `code`)."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code
