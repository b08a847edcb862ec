"""The one exception type users see: a one-line message that names the problem and the fix."""


class CnnlabError(Exception):
    """A user-facing error. ``str(err)`` is a single line: what is wrong, and what to do about it."""


def first_line(err: BaseException) -> str:
    """The first line of another library's error, to quote inside a one-line message (its type's name when
    it says nothing)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


class DataError(CnnlabError):
    """Bad, missing or unreachable data."""


class CheckpointError(CnnlabError):
    """A checkpoint that cannot be trusted or does not fit the request."""


class RunError(CnnlabError):
    """A run folder that cannot be used as asked (in use, already holds a run, changed flags on resume)."""


class Diverged(CnnlabError):
    """Training stopped because the loss became NaN or infinite; the last finite checkpoint is kept."""


class Interrupted(CnnlabError):
    """Training stopped by SIGINT or SIGTERM after saving its position.

    ``exit_code`` is the shell's convention for the signal: 130 for SIGINT (Ctrl-C), 143 for SIGTERM.
    """

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


class WriteError(CnnlabError, OSError):
    """A file that could not be written (read-only folder, disk full...): one line naming the path and the fix.

    Also an :class:`OSError` (with the original ``errno``), so that code which may go on without the file
    (a cache) catches it as before.
    """

    def __init__(self, message: str, errno: int | None):
        OSError.__init__(self, errno, message)

    def __str__(self) -> str:
        return str(self.strerror)
