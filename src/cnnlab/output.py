"""Printing to stdout that may be a pipe whose reader has gone (``cnnlab runs | head -1``) or a file on a full disk.

When the reader of a pipe exits, the next write to it fails (``BrokenPipeError``); a file on a full disk fails
with ``ENOSPC``. A line of progress is not worth a run: :func:`say` drops what can no longer be written, and
points stdout at ``/dev/null`` so that nothing later (the last flush at exit included) fails on it again.
A training run stops at a closed pipe as on a signal, its position saved (``observers.SignalStop`` handles
the SIGPIPE that comes with the failed write); at a full disk it goes on, with one warning. Other commands
end at once: exit code 141 for a closed pipe (128 + SIGPIPE, as a shell reports a program that SIGPIPE
ended), one line and exit code 2 for any other error (:class:`OutputError`, raised by :func:`guard_stdout`'s
stream). A stdout closed before the start (``cnnlab runs >&-``) is such an error too: the first write fails, as
on a full disk, instead of Python's silence (its ``sys.stdout`` is None, ``print`` writes nothing, and the exit
code said all went well).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import select
import signal
import sys
import threading
from typing import Callable, Iterator

from cnnlab.errors import CnnlabError, first_line
from cnnlab.fileio import json_safe

#: What a shell reports for a program ended by SIGPIPE.
EXIT_PIPE_CLOSED = 141

_reader_gone = False


#: What a closed stdout's write fails with (:class:`_ClosedOutput`).
STDOUT_CLOSED = "standard output is closed"


class OutputError(CnnlabError):
    """stdout cannot be written: a full disk, an I/O error, a stdout closed from the start (a closed pipe stays a
    ``BrokenPipeError``)."""

    def __init__(self, reason: str):
        fix = ("give the command an output (> FILE, or > /dev/null to drop it)" if reason == STDOUT_CLOSED else
               "free some space where it goes, or send it elsewhere")
        super().__init__(f"cannot write the output ({reason}); {fix}")
        self.reason = reason


class _ClosedOutput:
    """``sys.stdout`` when the process started with file descriptor 1 closed (``>&-``): every write fails."""

    encoding, errors = "utf-8", "strict"

    def write(self, text: str) -> int:
        raise OSError(errno.EBADF, STDOUT_CLOSED)

    def flush(self) -> None:
        pass

    def fileno(self) -> int:
        raise OSError(errno.EBADF, STDOUT_CLOSED)

    def isatty(self) -> bool:
        return False

    def writable(self) -> bool:
        return True


class _GuardedStream:
    """A text stream whose write errors other than a closed pipe are :class:`OutputError` (the rest is the stream's).
    ``lost``: :func:`say` warned that the output is lost, and says nothing more."""

    lost = False

    def __init__(self, stream):
        self._stream = stream

    def write(self, text: str) -> int:
        return self._guarded(self._stream.write, text)

    def flush(self) -> None:
        self._guarded(self._stream.flush)

    def _guarded(self, call, *args):
        try:
            return call(*args)
        except BrokenPipeError:
            raise
        except OSError as err:
            raise OutputError(_reason(err)) from None

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def guard_stdout() -> None:
    """Make ``sys.stdout``'s write errors :class:`OutputError` (the ``cnnlab`` program; once a process), those of a
    stdout closed from the start included; the standard descriptors closed from the start get ``/dev/null``
    (:func:`hold_closed_standard_fds`)."""
    hold_closed_standard_fds()
    if sys.stdout is None and sys.__stdout__ is None:  # descriptor 1 was closed when Python started
        sys.stdout = _GuardedStream(_ClosedOutput())
    elif sys.stdout is not None and not isinstance(sys.stdout, _GuardedStream):
        sys.stdout = _GuardedStream(sys.stdout)


def escape_unencodable() -> None:
    """stdout writes what its encoding cannot (``réseau`` under ``PYTHONIOENCODING=ascii`` or a C locale) escaped,
    ``r\\xe9seau``, as Python's stderr does, instead of a ``UnicodeEncodeError`` at the first such name."""
    stream = sys.stdout
    try:
        if stream is not None and stream.errors not in _ESCAPING:
            stream.reconfigure(errors="backslashreplace")
    except (AttributeError, OSError, ValueError):  # not a text file (a test's own stream), or closed
        pass


#: The error handlers that write every character somehow.
_ESCAPING = ("backslashreplace", "namereplace", "xmlcharrefreplace", "replace", "ignore")


def hold_closed_standard_fds() -> None:
    """Open ``/dev/null`` on each of the descriptors 0, 1 and 2 that is closed. Else the next file opened takes
    it (the lowest free number): an export's temp file as descriptor 2 would get every warning torch's C++ code
    prints to stderr, written into the ONNX file."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
            continue
        except OSError:
            pass
        try:
            null = os.open(os.devnull, os.O_RDONLY if fd == 0 else os.O_WRONLY)
            if null != fd:
                os.dup2(null, fd, inheritable=True)
                os.close(null)
            else:
                os.set_inheritable(fd, True)
        except OSError:
            pass


def json_text(obj, indent: int | None = None) -> str:
    """``obj`` as strict JSON, what every ``--json`` prints: a non-finite float (a diverged net's loss, a damaged
    file's accuracy) is ``null``, never Python's ``NaN`` or ``Infinity``, which JSON parsers refuse."""
    return json.dumps(json_safe(obj), indent=indent, allow_nan=False)


def say(msg: str) -> None:
    """``print(msg)`` to stdout, flushed; nothing when stdout's reader has gone, a warning when it cannot be written
    (once: nothing more after it)."""
    if getattr(sys.stdout, "lost", False):
        return
    try:
        print(msg, flush=True)
    except BrokenPipeError:
        discard_stdout(reader_gone=True)
    except (OutputError, OSError) as err:
        discard_stdout()
        if isinstance(sys.stdout, _GuardedStream):
            sys.stdout.lost = True
        complain(f"cnnlab: warning: cannot write the output ({_reason(err)}); going on without it (a run's "
              "figures are in its folder)")


def _reason(err: BaseException) -> str:
    """``No space left on device``, not ``[Errno 28] No space left on device``."""
    return getattr(err, "reason", None) or getattr(err, "strerror", None) or first_line(err)


def complain(line: str) -> None:
    """``line`` on stderr, flushed (nothing when stderr itself has gone: ``2>&1 | head``, or there is none:
    ``sys.stderr`` is None under pythonw and some embedders, where ``print(file=None)`` wrote to stdout instead)."""
    if sys.stderr is None:
        return
    try:
        print(line, file=sys.stderr, flush=True)
    except (OSError, ValueError):  # ValueError: a closed stream
        pass


def stderr_is_terminal() -> bool:
    """Whether stderr is a terminal (where a progress bar goes); False when there is no stderr at all
    (``sys.stderr`` None, or closed)."""
    try:
        return sys.stderr is not None and sys.stderr.isatty()
    except (AttributeError, OSError, ValueError):
        return False


def stdout_closed() -> bool:
    """Whether stdout is a pipe (or socket) whose reader has gone: writing to it would fail."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no stdout, not a real file, or no poll() here
        return False


def discard_stdout(reader_gone: bool = False) -> None:
    """From now on stdout writes to ``/dev/null`` (what was buffered for it is dropped)."""
    global _reader_gone
    _reader_gone = _reader_gone or reader_gone
    try:
        fd = sys.stdout.fileno()
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, fd)
        os.close(null)
    except (AttributeError, OSError, ValueError):
        pass


def stdout_reader_gone() -> bool:
    """Whether stdout was found to be a pipe whose reader had gone (and was discarded) in this process."""
    return _reader_gone


#: The signals that stop a command (:func:`cnnlab.cli.common.take_sigint`).
STOPS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


@contextlib.contextmanager
def stops_taken(take: Callable[[int, object], None] | None) -> Iterator[dict]:
    """Ctrl-C, SIGTERM and SIGHUP, where a handler of the process's takes them (the KeyboardInterrupt a command
    stops with), go to ``take`` inside instead (None: as before); yields the handlers replaced, by signal. A command
    stopping finishes its last bounded step so (the figure being drawn, one line said), then exits with the first
    signal's code. Main thread only; a signal ignored or left to its default (nohup, the API's caller) stays so."""
    saved = {}
    if take is not None and threading.current_thread() is threading.main_thread():
        for sig in STOPS:
            if callable(handler := signal.getsignal(sig)):
                saved[sig] = handler
                signal.signal(sig, take)
    try:
        yield saved
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def handed_on(handlers: dict, held: list[int]) -> KeyboardInterrupt | None:
    """The stops ``held`` (:func:`stops_taken`) handed to the handlers they were sent to: the stop the first of
    them raises (a command's KeyboardInterrupt), or None (none held; a training's first signal, which it notes)."""
    for signum in held:
        try:
            handlers[signum](signum, None)
        except KeyboardInterrupt as stop:
            return stop
    return None


@contextlib.contextmanager
def stops_held() -> Iterator[None]:
    """The block done whole: a stop meanwhile (Ctrl-C, SIGTERM, SIGHUP; :func:`stops_taken`) is held, then raised
    once it is done, as its own handler raises it. A write of output blocked on a slow reader is retried when the
    signal comes, not cut short (a ``--json`` entry half written, or lost from the stream's buffer); an error inside
    the block is raised as it is."""
    held: list[int] = []
    with stops_taken(lambda signum, frame: held.append(signum)) as handlers:
        yield
    if (stop := handed_on(handlers, held)) is not None:
        raise stop
