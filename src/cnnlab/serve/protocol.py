"""uvicorn as ``cnnlab serve`` runs it: its HTTP/1.1 protocol (h11) and its server, bounded against clients that hold
connections open, and stopped promptly by Ctrl+C. (:func:`cnnlab.serve.server.make_server` builds them.)

- A request that is not valid HTTP/1.1 (``GARBAGE``, an HTTP/2 preface, headers over h11's limit) is answered 400
  in the app's shape, ``{"error": "<one line>"}``, where uvicorn answered plain text. (uvicorn also logs a WARNING
  line for each; ``make_server`` runs it at level ERROR, so that no client can write into the server's log.)
- A request's head (its request line and headers) must arrive within ``head_timeout`` seconds of the connection
  opening, or of its first byte after an answer (or of the answer, when part of the next head came before it): a
  head that stops halfway is answered 408 and the connection closed; a connection that sends nothing is closed
  without a word. (uvicorn's keep-alive timeout, 5 s, closed a kept-alive connection silently when part of the
  next head had come in with the request before it.) (uvicorn timed only the wait between
  requests: a half-sent head was held forever, and 60 of them took every file descriptor of ``ulimit -n 64``.)
- At most ``max_connections`` connections are open at once (each holds a file descriptor): one more is answered
  503 at once, rather than accepted until ``accept()`` fails (and closed after a brief linger, as below, while
  few refusals linger: at most ``lingering_refusals``).
- An answer given while the client is still sending its body (413, 408, 503; the 400 of a GET with a body) is not
  followed by a close at once: closing a socket with unread data resets the connection, and a client that sends
  its whole body before reading (urllib, http.client) got ``Broken pipe`` instead of the answer, curl the status
  line without the JSON. The answer is sent, then a half-close, and the rest of the body is read and dropped until
  the client closes: at most :data:`LINGER_BYTES`, for at most :data:`LINGER_S` seconds, and while something
  arrives every :data:`LINGER_IDLE_S` seconds. A client already gone when the half-close is sent (it read the
  status line and reset the connection: ``write_eof`` raises ``ENOTCONN``) is closed without a word (that error
  logged ``Exception in ASGI application`` and a 29-line traceback).
- ``accept()`` failing for lack of descriptors (asyncio accepts a burst of waiting connections before the cap can
  answer any, and other files take descriptors too) writes one warning line at most every
  :data:`WARN_EVERY_S` seconds (asyncio logged a traceback for each try, thousands a second), and the connection
  that waits is answered 503 with a descriptor kept spare for it, so the listening socket does not spin.
- Ctrl+C stops at once when nothing is being answered; otherwise the server says so in one line and waits up to
  ``grace`` seconds, then answers what is left 503 (in the app's shape, by :class:`cnnlab.serve.app.RequestGuard`);
  a second Ctrl+C stops at once. No traceback either way (uvicorn waited for every connection, 28 s for an upload
  that had stopped, and a second Ctrl+C logged a 46-line traceback and answered 500 in plain text).

Imported only where a server starts (uvicorn and h11 are heavy, and only ``serve`` needs them).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass


import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from cnnlab.imagelimits import open_file_limit
from cnnlab.serve import ROUTES_HINT

#: Seconds a connection has to send a request's head (a browser sends it in one packet).
HEAD_TIMEOUT = 10.0
#: After an answer given while the client was still sending its body: at most this much of the rest is read
#: and dropped, for at most this long, and while the client sends something every LINGER_IDLE_S seconds; then
#: the connection is closed (reset, if the client still sends). 256 MiB: more than any image file within the
#: pixel cap (150 MB at the default cap, cnnlab.imagelimits); on loopback it is read in about 0.2 s.
LINGER_BYTES = 256 * 1024 * 1024
LINGER_S = 30.0
LINGER_IDLE_S = 5.0
#: A connection refused over the cap lingers too (so that a client sending its request gets the 503, not a reset),
#: at most this many at once (the rest are closed at once) and this briefly: they hold descriptors the cap is for.
LINGERING_REFUSALS = 16
REFUSAL_LINGER_BYTES = 256 * 1024
REFUSAL_LINGER_S = 1.0
#: Seconds between two warnings that connections cannot be accepted (no file descriptor left).
WARN_EVERY_S = 60.0
#: Seconds a first Ctrl+C waits for the requests being answered.
GRACE_S = 3.0
#: Seconds a 503 asks the client to wait before retrying (the app's own 503s say the same).
RETRY_AFTER_S = 1

#: The answer to a request that h11 cannot parse.
NOT_HTTP = json.dumps({"error": f"not a valid HTTP/1.1 request; send one of {ROUTES_HINT}"}).encode()


def raw_answer(status: int, message: str, *, retry: bool = False) -> bytes:
    """A whole HTTP/1.1 answer ``{"error": message}`` that closes the connection, written by the protocol itself
    (where no request was parsed, so h11 cannot write one)."""
    body = json.dumps({"error": message}).encode()
    reason = {408: b"Request Timeout", 503: b"Service Unavailable"}[status]
    retry_after = b"retry-after: %d\r\n" % RETRY_AFTER_S if retry else b""
    return (b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%sconnection: close\r\n\r\n"
            % (status, reason, len(body), retry_after) + body)


@dataclass
class Limits:
    """What one server allows its connections (shared by all of them); ``max_connections``: see
    :func:`cnnlab.serve.server.connection_budget`."""

    max_connections: int
    head_timeout: float = HEAD_TIMEOUT
    linger_bytes: int = LINGER_BYTES
    linger_s: float = LINGER_S
    linger_idle_s: float = LINGER_IDLE_S
    lingering_refusals: int = LINGERING_REFUSALS

    def __post_init__(self):
        self.refusals = 0  # refused connections lingering now
        self.head_late = raw_answer(408, f"the request's headers did not arrive within {self.head_timeout:g} s; "
                                         "send them at once")
        self.full = raw_answer(503, f"the server has as many connections open as it takes ({self.max_connections:,}); "
                                    f"retry in {RETRY_AFTER_S} s", retry=True)


class _Transport:
    """A connection's transport as uvicorn sees it: its ``close()`` is the protocol's (:meth:`JsonErrorsProtocol.close`),
    which lingers while the client is still sending; everything else is the transport's own."""

    def __init__(self, raw: asyncio.Transport, protocol: JsonErrorsProtocol):
        self._raw, self._protocol = raw, protocol

    def __getattr__(self, name):
        return getattr(self._raw, name)

    def close(self) -> None:
        self._protocol.close()

    def is_closing(self) -> bool:
        return self._protocol.lingering or self._raw.is_closing()


class JsonErrorsProtocol(H11Protocol):
    """uvicorn's h11 protocol with its 400 in the app's JSON shape, a time limit on request heads, a cap on open
    connections, and a lingering close (the module docstring)."""

    def __init__(self, *args, limits: Limits, **kwargs):
        super().__init__(*args, **kwargs)
        self.limits = limits
        self.raw: asyncio.Transport | None = None
        self.lingering = self.refused = False
        self._linger_left = 0
        self._linger_end = self._last_data = 0.0
        self._linger_idle = 0.0
        self._timer: asyncio.TimerHandle | None = None

    # -- opening: the cap on connections, the head's clock

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.raw = transport
        if len(self.connections) >= self.limits.max_connections:
            self.transport = transport  # never counted; uvicorn's connection_lost closes it again, harmlessly
            transport.write(self.limits.full)
            if self.limits.refusals < self.limits.lingering_refusals and transport.can_write_eof():
                self.refused = True
                self.limits.refusals += 1
                self._linger(REFUSAL_LINGER_BYTES, REFUSAL_LINGER_S, REFUSAL_LINGER_S)
            else:
                transport.close()
            return
        super().connection_made(_Transport(transport, self))
        self._watch_head()

    def data_received(self, data: bytes) -> None:
        if self.lingering:  # the answer is sent: the rest of the body is dropped, within the bounds
            self._linger_left -= len(data)
            self._last_data = self.loop.time()
            if self._linger_left < 0:
                self.raw.close()
            return
        if self.raw.is_closing():
            return
        super().data_received(data)
        self._watch_head()

    def _watch_head(self) -> None:
        """Arm the head's clock while a request's head is awaited (h11: the client IDLE), stop it once it is in."""
        waiting = self.conn.their_state is h11.IDLE and not self.raw.is_closing()
        if waiting and self._timer is None:
            self._timer = self.loop.call_later(self.limits.head_timeout, self._head_late)
        elif not waiting and self._timer is not None and not self.lingering:
            self._timer.cancel()
            self._timer = None

    def _head_late(self) -> None:
        self._timer = None
        if self.raw.is_closing() or self.lingering or self.conn.their_state is not h11.IDLE:
            return
        if self.conn.trailing_data[0]:  # part of a head arrived: say why; a connection that sent nothing just closes
            self.raw.write(self.limits.head_late)
        self.raw.close()

    # -- closing: lingering while the client still sends

    def close(self) -> None:
        """What uvicorn's ``transport.close()`` does here: close, unless the client is still sending its body; then
        half-close after the answer and drop what still comes, until the client closes or the bounds are reached."""
        if self.lingering:
            return
        if self.conn.their_state is not h11.SEND_BODY or self.raw.is_closing() or not self.raw.can_write_eof():
            self.raw.close()
            return
        self._linger(self.limits.linger_bytes, self.limits.linger_s, self.limits.linger_idle_s)

    def _linger(self, most: int, seconds: float, idle: float) -> None:
        """Half-close after what was written, then drop what comes for at most ``most`` bytes and ``seconds``, while
        something comes every ``idle`` seconds; the client's close ends it (as uvicorn closes on end of file)."""
        self.lingering = True
        self._linger_left, self._linger_idle = most, idle
        self._last_data = now = self.loop.time()
        self._linger_end = now + seconds
        if self._timer is not None:
            self._timer.cancel()
        try:
            self.raw.write_eof()  # after the answer, once it is written
        except OSError:  # the client has gone (a reset, ENOTCONN): nothing is left to linger for
            self._timer = None
            self.raw.close()
            return
        self._timer = self.loop.call_at(min(self._linger_end, now + idle), self._linger_check)
        self.raw.resume_reading()  # uvicorn may have paused it while the body waited to be read

    def _linger_check(self) -> None:
        """Close a lingering connection whose time is up, or whose client has sent nothing for a while."""
        now = self.loop.time()
        quiet_until = self._last_data + self._linger_idle
        if now >= self._linger_end or now >= quiet_until:
            self._timer = None
            self.raw.close()
        else:
            self._timer = self.loop.call_at(min(self._linger_end, quiet_until), self._linger_check)

    def on_response_complete(self) -> None:
        """uvicorn's, and then the head's clock where part of the next head came before this answer (with the
        request): uvicorn's keep-alive timeout would close on it silently; the head's time limit answers it 408.
        Where none of it has come, the clock starts at its first byte (:meth:`data_received`), as for any head:
        started here, a head begun 4.5 s after the answer and taking 6 s was 408."""
        super().on_response_complete()
        if self.conn.their_state is h11.IDLE and self.conn.trailing_data[0] and not self.raw.is_closing():
            self._unset_keepalive_if_required()
            self._watch_head()

    def shutdown(self) -> None:
        if self.lingering:
            self.raw.close()
        else:
            super().shutdown()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.refused:
            self.refused = False
            self.limits.refusals -= 1
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:  # uvicorn's hook; msg is its plain-text reason
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(NOT_HTTP)).encode()),
                   (b"connection", b"close")]
        for event in (h11.Response(status_code=400, headers=headers, reason=b"Bad Request"),
                      h11.Data(data=NOT_HTTP), h11.EndOfMessage()):
            self.transport.write(self.conn.send(event))
        self.transport.close()


def _why(code: int) -> str:
    """Why ``accept()`` failed, and the fix, in a few words."""
    if code == errno.EMFILE:
        soft = open_file_limit()
        limit = f"{soft:,}" if soft else "its limit"
        return f"too many open files (this process may open {limit}: ulimit -n); raise the limit (ulimit -n 4096)"
    if code == errno.ENFILE:
        return "too many open files on this machine (the system's limit); close some programs or raise fs.file-max"
    return "out of memory for a connection; free some memory"


def _spare_descriptor() -> int | None:
    try:
        return os.open(os.devnull, os.O_RDONLY)
    except OSError:
        return None


class CnnlabServer(uvicorn.Server):
    """uvicorn's server with a prompt Ctrl+C (a short grace, one line) and quiet, bounded ``accept()`` failures."""

    def __init__(self, config: uvicorn.Config, limits: Limits, *, grace: float = GRACE_S,
                 log: Callable[[str], None] = print, warn: Callable[[str], None] = print):
        super().__init__(config)
        self.limits, self.grace, self.log, self.warn = limits, grace, log, warn
        self._listeners: dict[int, object] = {}
        self._spare: int | None = None
        self._next_warning = 0.0

    async def serve(self, sockets=None) -> None:
        self._listeners = {sock.fileno(): sock for sock in sockets or []}
        self._spare = _spare_descriptor()
        asyncio.get_running_loop().set_exception_handler(self._loop_error)
        try:
            await super().serve(sockets=sockets)
        finally:
            if self._spare is not None:
                os.close(self._spare)
                self._spare = None

    @staticmethod
    def _say(write: Callable[[str], None], line: str) -> None:
        with contextlib.suppress(OSError, ValueError):  # stdout or stderr a pipe whose reader has gone, or closed
            write(line)

    # -- accept() out of descriptors

    def _loop_error(self, loop: asyncio.AbstractEventLoop, context: dict) -> None:
        err = context.get("exception")
        if not (isinstance(err, OSError) and err.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
                and "accept" in str(context.get("message", ""))):
            loop.default_exception_handler(context)
            return
        now = time.monotonic()
        if now >= self._next_warning:
            self._next_warning = now + WARN_EVERY_S
            self._say(self.warn, f"cannot accept a connection: {_why(err.errno)}; connections are answered 503 "
                                 f"until some close (this warning: at most once every {WARN_EVERY_S:g} s)")
        self._refuse_one(context.get("socket"))

    def _refuse_one(self, sock) -> None:
        """Accept the connection that waits with the spare descriptor and answer it 503 at once: asyncio tries to
        accept again and again while one waits (2,048 times a turn), and the listening socket stays readable."""
        listener = self._listeners.get(sock.fileno()) if sock is not None else None
        if listener is None or self._spare is None:
            return
        os.close(self._spare)
        try:
            conn, _ = listener.accept()
        except OSError:
            conn = None
        if conn is not None:
            with conn:
                conn.setblocking(False)
                try:
                    conn.send(self.limits.full)
                except OSError:
                    pass
        self._spare = _spare_descriptor()  # the descriptor conn had

    # -- Ctrl+C

    async def shutdown(self, sockets=None) -> None:
        """Stop listening, close idle connections, give the requests being answered ``grace`` seconds (one line
        says so; a second Ctrl+C ends it), then cancel the rest (the app answers each 503) and close."""
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        for connection in list(self.server_state.connections):
            connection.shutdown()
        tasks = self.server_state.tasks
        loop = asyncio.get_running_loop()
        if tasks and not self.force_exit:
            n = len(tasks)
            self._say(self.log, f"stopping: waiting up to {self.grace:g} s for {n} request{'s' if n > 1 else ''} "
                                "being answered (Ctrl+C again stops at once)")
            deadline = loop.time() + self.grace
            while tasks and not self.force_exit and loop.time() < deadline:
                await asyncio.sleep(0.05)
        for task in list(tasks):
            task.cancel()
        if tasks:
            await asyncio.wait(list(tasks), timeout=1.0)
        deadline = loop.time() + 1.0  # the answers just given leave (a lingering close needs the client's close)
        while self.server_state.connections and not self.force_exit and loop.time() < deadline:
            await asyncio.sleep(0.05)
        for connection in list(self.server_state.connections):
            (getattr(connection, "raw", None) or connection.transport).close()
