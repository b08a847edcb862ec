"""The one exception type users see: a one-line message that names the problem and the fix."""

import difflib
import re
import reprlib
import sys

_SHORT = reprlib.Repr()  # (keyword arguments only from Python 3.12)
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxstring, _SHORT.maxother = 2, 4, 4, 60, 60


class CnnlabError(Exception):
    """A user-facing error. ``str(err)`` is a single line: what is wrong, and what to do about it."""

    def reworded(self, message: str) -> "CnnlabError":
        """The same error said in other words (the Python API's, :func:`cnnlab.api.as_arguments`): its class and
        what it carries (an exit code, a path) kept, ``str()`` now ``message``."""
        new = type(self).__new__(type(self), message)
        new.__dict__.update(vars(self))
        new.args = (message,)
        return new


def yes_no(name: str, value, none: str | None = None) -> bool | None:
    """A yes/no argument as the bool it is: ``True`` or ``False``, Python's or numpy's (``np.bool_``, what a
    comparison of arrays gives); ``None`` too where ``none`` is given, returned as None: ``none`` says what it means
    in the refusal (``"automatic"``), or, ``""``, nothing (a default that reads as False).
    Anything else is one line: a truthy string (``pretrained="no"`` loaded the weights), and also ``0``, ``1`` or
    ``0.0``, which compare equal to False and True but are no answer (``preprocess=0`` ran the preprocessing that
    ``preprocess=False`` turns off)."""
    numpy = sys.modules.get("numpy")  # an np.bool_ exists only where numpy is loaded: this module imports none
    if isinstance(value, bool) or (numpy is not None and isinstance(value, numpy.bool_)):
        return bool(value)
    if value is None and none is not None:
        return None
    either = f"None ({none}), True or False" if none else "True or False"
    raise CnnlabError(f"{name} must be {either}, got {short_repr(value)}")


def did_you_mean(name: object, choices) -> str:
    """`` (did you mean 'resnet'?)`` for a name that differs from one choice only in case, starts one choice
    (``fashion``), or is a typo of one of its length (``inceptoin``); otherwise ``""``."""
    meant = close_match(name, choices)
    return f" (did you mean {meant!r}?)" if meant else ""


def close_match(name: object, choices) -> str | None:
    """The one choice :func:`did_you_mean` would suggest for ``name``, else None."""
    by_lower = {str(c).lower(): str(c) for c in choices}
    key = str(name).lower()
    hits = [by_lower[key]] if key in by_lower else [c for low, c in by_lower.items() if key and low.startswith(key)]
    if not hits:
        same_length = [low for low in by_lower if len(low) == len(key)]  # a typo, not another name ('kmnist')
        hits = [by_lower[m] for m in difflib.get_close_matches(key, same_length, n=1, cutoff=0.75)]
    return hits[0] if len(hits) == 1 else None


def printable(text: str) -> str:
    """``text`` with control characters (a newline or an undecodable byte in a file name) escaped as
    Python writes them, so that a message that quotes it stays on one line.

    A backslash is left as it is, so ``x<newline>y`` and a literal ``x\\ny`` both show ``x\\ny``: this keeps a
    message on one line and the terminal safe, and it is applied in layers (a message escaped where it is made is
    escaped again where the CLI prints it, a ``repr`` quoted inside one holds backslashes of its own), so it must
    change nothing the second time. A name shown for the user to copy back is :func:`shell_quoted`."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


#: The characters of a word that a shell takes as they are (letters and digits of any script included).
_SHELL_PLAIN = re.compile(r"[\w@%+=:,./-]+")


def shell_quoted(text: str) -> str:
    """``text`` in a form a shell takes back exactly, as ``ls`` shows a file's name, for a name shown to be copied
    into a command (``--resume``): a plain name as it is; one with a space, a quote or another character a shell
    reads (``*``, ``$``, a backslash) in single quotes, ``'x\\ny'``; one with a character that needs escaping (a
    newline, a terminal escape, a byte that is no UTF-8) as ``$'x\\ny'``, its backslashes and quotes escaped too.
    What it returns is printable (:func:`printable` leaves it as it is).
    A relative name that starts with ``-`` gets ``./`` (``--resume -dash`` read it as an option); on a stdout that
    cannot write a character of the name (``PYTHONIOENCODING=ascii``, a Latin-1 console) the name is ``$'...'`` with
    that character as ``\\u...``, which a shell turns back into it (stdout's own ``\\xe9`` was one byte, not é)."""
    if text.startswith("-"):
        text = "./" + text
    plain = _writable(text)
    if text and _SHELL_PLAIN.fullmatch(text) and plain:
        return text
    if text.isprintable() and plain:
        return "'" + text.replace("'", "'\\''") + "'"
    return "$'" + "".join(_ansi_c(ch, plain) for ch in text) + "'"


def _writable(text: str) -> bool:
    """Whether stdout's encoding writes ``text`` as it is (not escaped by its error handler)."""
    try:
        text.encode(getattr(sys.stdout, "encoding", None) or "utf-8")
        return True
    except (UnicodeEncodeError, LookupError):
        return False


def _ansi_c(ch: str, raw: bool = True) -> str:
    """One character inside ``$'...'`` (bash's, zsh's and ksh's ANSI-C quoting); ``raw``: a printable character
    other than ASCII as it is (else as ``\\u...``)."""
    if ch in "\\'":
        return "\\" + ch
    if ch.isprintable() and (raw or ord(ch) < 0x80):
        return ch
    code = ord(ch)
    if 0xDC80 <= code <= 0xDCFF:  # a byte of a file name that is no UTF-8 (os.fsdecode's surrogateescape)
        return f"\\x{code - 0xDC00:02x}"
    if code < 0x80:
        return ascii(ch)[1:-1]  # \n, \t, \x1b, as printable writes them
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"  # (\x80 is a byte to a shell)


#: The parts of a shell word as :func:`shell_quoted` writes them: ``$'...'``, ``'...'``, ``\x``, plain text.
_SHELL_PART = re.compile(r"\$'((?:[^'\\]|\\.)*)'|'([^']*)'|\\(.)|((?:[^'\\$]|\$(?!'))+)")
#: An escape inside ``$'...'``: a byte, a code point, or a letter (``\n``), or a character escaped as itself.
_ANSI_ESCAPE = re.compile(r"\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|.)")
_ANSI_LETTERS = {"n": "\n", "t": "\t", "r": "\r", "e": "\x1b", "a": "\a", "b": "\b", "f": "\f", "v": "\v"}


def shell_unquoted(word: str) -> str:
    """The text a shell reads in ``word``, a name as :func:`shell_quoted` wrote it (``'my run'``, ``'it'\''s'``,
    ``$'x\ny'``): :func:`shell_quoted` undone, a byte that is no UTF-8 (``\xff``) back to what ``os.fsdecode`` makes
    of it. To say a quoted command in other words (the Python API's: ``cnnlab.train(resume='my run')``)."""
    out = []
    for match in _SHELL_PART.finditer(word):
        ansi, single, escaped, plain = match.groups()
        out.append(_ANSI_ESCAPE.sub(_ansi_char, ansi) if ansi is not None else
                   single if single is not None else escaped if escaped is not None else plain)
    return "".join(out)


def _ansi_char(match: re.Match) -> str:
    """The character of one escape inside ``$'...'`` (:func:`_ansi_c` undone)."""
    escape = match.group(1)
    if len(escape) == 1:
        return _ANSI_LETTERS.get(escape, escape)
    code = int(escape[1:], 16)
    return chr(0xDC00 + code) if escape[0] == "x" and code >= 0x80 else chr(code)


def short_repr(value: object) -> str:
    """``repr(value)`` bounded (a few items, two levels, 60 characters a string), for quoting a refused value in
    a one-line message: a YAML alias bomb (a 600-byte file whose value is hundreds of millions of strings,
    shared) is not spelt out whole."""
    return _SHORT.repr(value)


def first_line(err: BaseException) -> str:
    """The first line of another library's error, to quote inside a one-line message (its type's name when
    it says nothing)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


class DataError(CnnlabError):
    """Bad, missing or unreachable data."""


class DataUnreadable(DataError):
    """A data file that could not be opened or read though it is there (an input/output error, permission denied,
    memory or open files short): not damage, the file may be whole, so never a reason to fetch it again, rewrite
    it or advise deleting it. ``path`` and ``cause`` (the ``OSError``) are for lines that word it their own way."""

    def __init__(self, message: str, path: str, cause: OSError):
        super().__init__(message)
        self.path, self.cause = path, cause


class CheckpointError(CnnlabError):
    """A checkpoint that cannot be trusted or does not fit the request."""


class RunError(CnnlabError):
    """A run folder that cannot be used as asked (in use, already holds a run, changed flags on resume)."""


class RunBusy(RunError):
    """A run folder another cnnlab process holds (its lock taken): wait, or use another folder."""


class Diverged(CnnlabError):
    """Training stopped because the loss became NaN or infinite; the last finite checkpoint is kept."""


#: How a :class:`Diverged` line begins, and so the detail of a run's status.json when its training diverged (a
#: ``--teacher`` of that run is refused by it: ``runs.diverged``).
DIVERGED = "training diverged"
#: The clause that ends that line when the run had saved a last.pt before (its last finite weights, kept): a run folder
#: without it has had it deleted or moved since (``runs.checkpoints_gone``).
DIVERGED_KEPT = "the last finite checkpoint is kept"


class Interrupted(CnnlabError):
    """Training stopped by SIGINT or SIGTERM after saving its position.

    ``exit_code`` is the shell's convention for the signal: 130 for SIGINT (Ctrl-C), 143 for SIGTERM.
    """

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


class SignalTaken(KeyboardInterrupt):
    """A signal taken as an interruption where no line of cnnlab's was said yet (SIGTERM or SIGHUP before a training
    loop, a second signal inside one): it unwinds as Ctrl-C does (no ``except Exception`` swallows it); ``signum``
    gives the exit code, 128 + it."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


class WriteError(CnnlabError, OSError):
    """A file that could not be written (read-only folder, disk full...): one line naming the path and the fix.

    Also an :class:`OSError` (with the original ``errno``), so that code which may go on without the file
    (a cache) catches it as before.
    """

    def __init__(self, message: str, errno: int | None, reason: str | None = None, out_of: str | None = None,
                 path=None):
        OSError.__init__(self, errno, message)
        self.reason = reason or message  # what went wrong without the fix (a caller with a fix of its own says that)
        #: what the file system had run out of when the write failed ("inodes", as cnnlab.fileio.write_error saw it
        #: then: a staging folder removed since may have freed some), or None
        self.out_of = out_of
        #: the file that could not be written, where cnnlab.fileio.write_error knew it (a caller's own fix for a
        #: protected file: cnnlab.fileio.protection_of), else None
        self.path = path

    def __str__(self) -> str:
        return str(self.strerror)

    def reworded(self, message: str) -> "WriteError":
        """As :meth:`CnnlabError.reworded`, its ``errno`` kept (an OSError's message is its ``strerror``)."""
        new = super().reworded(message)
        new.errno, new.strerror = self.errno, message
        return new


class FolderGone(WriteError):
    """The folder a command was writing into was moved or deleted meanwhile (:class:`cnnlab.fileio.FolderGuard`):
    nothing more is written, nor a folder made in its place. ``moved_to``: where it is now, None where it was deleted
    or that cannot be told."""

    def __init__(self, message: str, moved_to=None):
        super().__init__(message, None)
        self.moved_to = moved_to
