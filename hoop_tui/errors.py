"""The one exception the command line turns into a one-line message and an exit status."""


class CommandError(Exception):
    """An error to print as `hoop-tui: MESSAGE`, exiting with `status` (1 unless told)."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status
