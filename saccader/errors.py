"""One error type for mistakes a user can fix: the CLI prints it as one line, without a traceback."""


class UserError(Exception):
    """A problem with the user's input. The message names the problem and the fix, on one line."""

    def __init__(self, problem: str, fix: str | None = None):
        message = problem if fix is None else f"{problem}; fix: {fix}"
        super().__init__(" ".join(message.split()))
