"""The one exception type users see: a one-line message that names the problem and the fix."""


class CnnlabError(Exception):
    """A user-facing error. ``str(err)`` is a single line: what is wrong, and what to do about it."""


class DataError(CnnlabError):
    """Bad, missing or unreachable data."""


class CheckpointError(CnnlabError):
    """A checkpoint that cannot be trusted or does not fit the request."""
