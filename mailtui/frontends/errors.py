"""The one error every front end reports the same way: a line on stderr and an exit status."""


class CliError(Exception):
    """A failure to report as one line (exit status ``code``)."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code
