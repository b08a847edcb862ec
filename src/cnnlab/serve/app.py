"""The web app: one drawing page and a JSON endpoint, around a :class:`~cnnlab.predict.Predictor`.

Routes:
- ``GET /`` (and ``HEAD /``): the page (``static/index.html`` and ``static/app.js``): draw, see the probabilities.
  Its files take a ``Range`` as RFC 9110 14.2 says: another unit than ``bytes``, or ranges that are not valid (any
  part of them), are ignored (the whole file), ranges past the end are left out, and ``416 {"error": ...}`` when no
  range can be served (:class:`PageFile`).
- ``GET /favicon.ico``: 204 (the page links ``static/favicon.svg``; this answers browsers that ask anyway).
- ``GET /info``: the model's name, its dataset's (no folders above it), classes, whether it has Inception modules, the
  paper of its training images (``"paper"``: ``"dark"`` or ``"light"``, from their recorded mean) and how an image is
  prepared for it (``"preparation"``: ``"digit"``, ``"clothes"`` or ``"as is"``, an image folder's net), the upload
  and pixel limits, and the checkpoint served (``"checkpoint"``: ``{"file": "RUN/last.pt", "step", "epochs",
  "sha256"}``, ``Predictor.checkpoint``; the shipped weights: their file and hash, no step). A net loaded from a
  file is loaded again when the file changes on disk (a run retrained or resumed under a running server: its stat
  and its sidecar's are read at each ``/info`` and ``/predict``, one line says so; a file gone or that does not load
  leaves the net served as it was, with one warning; a diverged run's last.pt, or a link to one, is refused and the
  net served from it answers no more, 503, which ``"withdrawn"`` says, why, where it is not null: :class:`Service`).
  The page draws white ink on a black canvas for a net that reads images as they are and was trained on dark paper,
  black on white for every other.
- ``HEAD`` wherever ``GET`` is served (``/``, ``/favicon.ico``, ``/info``, ``/static/...``).
- ``POST /predict``: an image as multipart form field ``file``, a part with a ``filename`` (or ``filename*``
  alone, RFC 5987, decoded; a part with neither is text, refused naming it: ``curl -F "file=<d.png"``), or the raw
  body with an ``image/*`` or ``application/octet-stream`` content type (any other is ``415``, naming the type sent).
  Answers ``{"prediction", "probabilities", "classes", "model", "dataset",
  "paper", "preparation", "checkpoint", "top", "input_png", "branches"}`` (``model``, ``dataset``, ``paper``,
  ``preparation`` and ``checkpoint`` as ``/info`` names them: a page left open across a restart with another net, or
  a net of the same names trained on the other paper, tells by them that its bars, header or canvas are out of date;
  the checkpoint, which net answered; ``"digits_seen"`` and ``"number"`` for a digit net, the digits counted side by
  side and, 2 or more, each read; ``"thick_strokes"`` too when the
  drawing's strokes are far wider than MNIST's, ``Prediction.thick``; ``"image_paper"`` when an image read as it is
  is on the other paper than the net's training images, ``Prediction.paper``); a bad image (over the pixel cap
  included) is ``400 {"error": "<one line>"}`` (the rules of ``cnnlab predict``), a body over the limit ``413``
  however it is sent, a body that does not arrive in time ``408`` (saying what came of it: none, or how many of the
  bytes its ``Content-Length`` declares, then nothing), and a server that has as many uploads as it
  takes, or runs out of file descriptors or memory while decoding, ``503`` (with Retry-After); a net whose run
  diverged while it was served, ``503`` saying so, ``{"error": why, "withdrawn": why}`` (no Retry-After: waiting does
  not mend it; a net put back does, which the page waits for).
  The body's ``Content-Type`` is read without regard to case (``IMAGE/PNG`` is ``image/png``); a body with a content
  coding (``Content-Encoding: gzip``) is ``415`` naming it, with ``Accept-Encoding: identity``.
- Anything else: ``404`` (no such route) or ``405`` (another method), ``{"error": "<one line>"}`` like every
  other refusal, naming the routes there are.

What a request can cost is bounded before the app sees it (:class:`RequestGuard`) and while it is
decoded (:class:`Service`):

- a request whose method takes no body (GET, HEAD, OPTIONS) but declares one (a ``Content-Length`` over 0, or
  ``Transfer-Encoding``) is answered 400 at once, its body never read (the guard read such bodies, up to
  ``max_bytes`` each, and kept them without counting them as uploads: 150 clients holding 4 MB GETs open
  made the server grow by 740 MB);
- holding the server's upload capacity costs bytes really sent: the bodies the server holds (arriving, waiting or
  being decoded) count against ``max_buffered`` bytes in all (by default ``max_pending x max_bytes``), each as its
  bytes arrive; a part that would go over it is answered 503 at once (as is a head whose declared length cannot fit
  in what is free now, before its body is read: a client that asked ``Expect: 100-continue`` sends none), and the
  server's protocol drops the rest of the body after the answer. A client that has sent nothing holds nothing (32
  clients sending a head with ``Content-Length: 4000000`` and no body, reconnecting at each 408, held every upload
  slot when a slot was taken at the head);
- at most ``max_pending`` uploads whose body is complete (waiting to be decoded, or being decoded) are in the
  server at once; one more is answered 503, its body dropped;
- the guard reads each body in full before the app sees it (the app never waits on the network): over
  ``max_bytes`` is 413 (declared or chunked; a small excess is read and dropped first, and the server's
  protocol drops the rest after the answer, so that a client that sends everything before reading gets it:
  :mod:`cnnlab.serve.protocol`); a body that averages under ``min_body_rate`` bytes a second once ``body_grace``
  seconds have passed is 408 at once (so that slow uploaders cannot hold their bytes of the budget for long), and
  so a body has ``body_grace`` plus its length at ``min_body_rate`` to arrive (a chunked body: as if at the limit),
  which a client that keeps the rate always meets (``body_timeout``, where given, is a fixed time limit instead,
  408 when it passes); a client that goes away mid-upload is one INFO line on the ``cnnlab.serve`` logger, no
  traceback;
- a request target in absolute form (``GET http://host/info``, which RFC 9112 3.2.2 says a server must accept) is
  routed by its path (``/info``);
- a request still unanswered when the server stops (Ctrl+C, after its grace) is answered 503 in the app's
  shape, not uvicorn's plain-text 500 and its traceback;
- at most ``decodes`` images are decoded and preprocessed at once, each within the predictor's pixel
  cap (``max_pixels``, checked before decoding); the others wait their turn. The net runs one image at a time
  (in a pass of ``cnnlab.predict.NET_BATCH`` fields, as ``cnnlab predict``'s: the same numbers for the same file).

So the memory above an idle server stays below about ``decodes x 16 x max_pixels`` bytes (the peak of
a decode, see :mod:`cnnlab.imagelimits`) plus ``2 x max_buffered`` (the bodies held, ``max_pending x max_bytes``
by default, and the files read from them): about 0.8 GB at the defaults, whatever the number of clients, for raw
bodies (a multipart form holds a third copy while parsed: up to about 1.3 GB measured, docs/reliability.md).
"""

import base64
import concurrent.futures
import errno
import io
import json
import logging
import math
import re
import threading
import urllib.parse
from collections.abc import Callable
from pathlib import Path

import anyio
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from python_multipart.multipart import parse_options_header
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import MalformedRangeHeader, RangeNotSatisfiable
from starlette.staticfiles import NotModifiedResponse

from cnnlab.analysis.branches import inception_modules
from cnnlab.checkpoint import checkpoint_stamp, diverged_refusal
from cnnlab.errors import CnnlabError, first_line, printable
from cnnlab.imageio import ResourceError
from cnnlab.fileio import is_file, kind_of
from cnnlab.predict import BadImageError, Predictor, checkpoint_line, to_uint8_image
from cnnlab.runs import link_to_nowhere
from cnnlab.serve import DEFAULT_MAX_BYTES, ROUTES_HINT
from cnnlab.serve.branches import record_branch_energy, shares

STATIC = Path(__file__).with_name("static")
log = logging.getLogger("cnnlab.serve")

#: Images decoded and preprocessed at once: each peaks at up to 16 bytes per pixel of the cap (~270 MB at
#: the default cap, see cnnlab.imagelimits); two keep both cores of a small machine busy.
DEFAULT_DECODES = 2
#: Uploads whose body is complete (waiting to be decoded, or being decoded) in the server at once; one more is
#: answered 503. Bodies still arriving take no slot: they count against the bytes held (DEFAULT_MAX_PENDING x the
#: body limit by default), each byte as it comes; each body held may be copied once (the file read from it):
#: 2 x 32 x 4 MiB = 256 MiB at the default body limit.
DEFAULT_MAX_PENDING = 32
#: No fixed time limit on a body by default: a body has DEFAULT_BODY_GRACE seconds plus its length at
#: DEFAULT_MIN_BODY_RATE to arrive (4 MiB: 261 s), so a client that keeps the least rate always finishes. (A fixed 60 s
#: refused a 4 MiB photo sent at 64 KB/s, 66 s, nearly all of it uploaded; 30 s before it, a 2 MB one.)
DEFAULT_BODY_TIMEOUT = None
#: Bytes a second a body must average once DEFAULT_BODY_GRACE seconds have passed since its head, else 408 at once
#: (its bytes freed): 32 clients sending 200 bytes and then a byte every 3 s held every upload slot for the whole
#: body timeout, and every real upload got 503. A phone on a 64 KB/s link sends four times the rate.
DEFAULT_MIN_BODY_RATE = 16 * 1024
DEFAULT_BODY_GRACE = 5.0
#: Seconds a body that has begun may pause between two parts, however far ahead of the rate it is: a client that sent
#: all but the last byte of 4 MiB at once, then stalled, held its 4 MiB of the budget for 256 s (32 such clients:
#: every real upload 503 for minutes). A real upload never pauses that long mid-body.
BODY_IDLE_S = 10.0
#: After the grace, a body must also bring the least rate within each such window: a byte every 9 s (never idle 10 s)
#: kept a 4 MiB body sent at once but its last bytes for 256 s (ahead of the average rate all along).
BODY_WINDOW_S = 30.0
#: Seconds a 503 asks the client to wait before retrying.
RETRY_AFTER_S = 1
#: Bytes over the limit that are still read (and dropped) before answering 413, so that a client that
#: sends its whole body before reading gets the answer, not a reset connection.
DRAIN_BYTES = 1024 * 1024
#: The media type of a raw body taken as the image's bytes besides ``image/*``: what many clients send raw bytes as.
RAW_BYTES = "application/octet-stream"
#: Methods that take no request body: one that declares a body anyway is refused before it is read.
NO_BODY_METHODS = ("GET", "HEAD", "OPTIONS")


async def _answer(send, status: int, message: str, headers: tuple = ()) -> None:
    """A JSON ``{"error": message}`` response that closes the connection (the body may be unread)."""
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close"), *headers]})
    await send({"type": "http.response.body", "body": body})


def _declared_length(scope) -> int | None:
    for key, value in scope.get("headers", []):
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the HTTP layer refuses it anyway
    return None


def _unwanted_body(scope) -> str | None:
    """Why a request of a method that takes no body is refused (it declares one), or None (it does not)."""
    if scope["method"] not in NO_BODY_METHODS:
        return None
    declared = _declared_length(scope) or 0
    if any(key == b"transfer-encoding" for key, _ in scope.get("headers", [])):
        body = "sends a body (Transfer-Encoding)"
    elif declared > 0:
        body = f"declares a body of {declared:,} bytes"
    else:
        return None
    return f"a {scope['method']} request takes no body, and this one {body}; send it without one"


class RequestGuard:
    """ASGI middleware: bounds what a request can cost before the app sees it (the module docstring).

    ``buffered`` counts the bytes of the bodies held now (arriving, waiting, decoded), ``pending`` the uploads whose
    body is complete; both are only touched on the event loop's thread.
    """

    def __init__(self, app, max_bytes: int, max_pending: int = DEFAULT_MAX_PENDING,
                 body_timeout: float | None = DEFAULT_BODY_TIMEOUT, min_body_rate: float = DEFAULT_MIN_BODY_RATE,
                 body_grace: float = DEFAULT_BODY_GRACE, max_buffered: int | None = None):
        self.app, self.max_bytes, self.max_pending, self.body_timeout = app, max_bytes, max_pending, body_timeout
        self.min_body_rate, self.body_grace = min_body_rate, body_grace
        self.max_buffered = max_pending * max_bytes if max_buffered is None else max_buffered
        self.pending = self.buffered = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def watched(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self._guard(_origin_form(scope), receive, watched)
        except anyio.get_cancelled_exc_class():  # the server stops (Ctrl+C, its grace over) with this request open
            if not started:
                await _answer(send, 503, "the server is stopping; retry once it is started again")

    def time_limit(self, declared: int | None) -> float:
        """Seconds a body of ``declared`` bytes (None: chunked, taken as at the limit) has to arrive: ``body_timeout``
        where given, else the grace plus its length at the least rate (which a client keeping the rate meets)."""
        if self.body_timeout is not None:
            return self.body_timeout
        most = declared if declared is not None else self.max_bytes + DRAIN_BYTES
        return self.body_grace + most / self.min_body_rate

    async def _guard(self, scope, receive, send):
        unwanted = _unwanted_body(scope)
        if unwanted:  # answered before any of the body is read; the connection closes on the rest
            return await _answer(send, 400, unwanted)
        if scope["method"] in NO_BODY_METHODS:  # no body to read, nothing to count
            return await self.app(scope, receive, send)
        held = [0]  # the bytes of this body counted in self.buffered, until it is answered
        declared = _declared_length(scope)
        clock = _BodyClock(self.min_body_rate, self.body_grace, anyio.current_time())
        try:
            outcome, body = await self._receive(scope, receive, held, self.time_limit(declared), clock)
            if outcome == "ok" and self.pending >= self.max_pending:
                outcome = "queue"
            if outcome != "ok":
                return await self._refuse(send, outcome, clock, declared)
            self.pending += 1
            try:
                await self.app({**scope, BODY_KEY: body}, _replay(body, receive), send)  # the same bytes, no copy
            finally:
                self.pending -= 1
        finally:
            self.buffered -= held[0]

    def _late(self, outcome: str, clock: "_BodyClock", declared: int | None) -> str:
        """The 408's line for a body that did not come in time (``outcome`` ``"late"``, ``"idle"`` or ``"slow"``), by
        what came of it: nothing at all, part of it and then nothing (a ``Content-Length`` over the bytes sent reads
        so: "send it at once" told a client that had sent everything at once), or part of it too slowly."""
        rate = f"{self.min_body_rate / 1024:g} KiB/s"
        waited = f"{round(anyio.current_time() - clock.start, 1):g} s"  # (5.00018 s: the grace plus 3 bytes' time)
        length = (f"the {declared:,} bytes its Content-Length declares" if declared is not None
                  else "a chunked body's bytes")
        if not clock.seen:  # not "send it at 16 KiB/s" for a body of 3 bytes that never came
            return (f"the request body did not arrive within {waited}: none of {length} came; send the body right "
                    "after its head" + (", or check the Content-Length" if declared is not None else ""))
        came = (f"{clock.seen:,} of {length} came" if declared is not None
                else f"{clock.seen:,} bytes of a chunked body came (its last, empty chunk never did)")
        if outcome == "idle":
            fix = "check the Content-Length, or send the whole body at once" if declared is not None else \
                "send the whole body at once"
            return f"the request body stopped arriving before its end: {came}, then nothing; {fix}"
        if outcome == "late":
            fix = "send it at once" if self.body_timeout is not None else f"send it at {rate} or more"
            return f"the request body did not arrive within {waited} ({came}); {fix}"
        return (f"the request body arrived slower than {rate} after the first {self.body_grace:g} s (the least this "
                f"server waits for; {came}); send it at once, on a faster link")

    async def _refuse(self, send, outcome: str, clock: "_BodyClock", declared: int | None) -> None:
        """The answer to a body refused for ``outcome`` (:meth:`_receive`'s, or ``"queue"``: every slot taken)."""
        retry = ((b"retry-after", str(RETRY_AFTER_S).encode()),)
        if outcome == "gone":
            log.info("a client went away during its upload; nothing answered")
        elif outcome == "large":
            await _answer(send, 413, f"request body over the limit of {self.max_bytes:,} bytes; send a smaller image")
        elif outcome in ("late", "idle", "slow"):
            await _answer(send, 408, self._late(outcome, clock, declared))
        elif outcome == "full":
            await _answer(send, 503, f"the server is busy (the uploads in progress hold the {self.max_buffered:,} "
                                     f"bytes it takes); retry in {RETRY_AFTER_S} s", retry)
        else:
            await _answer(send, 503, f"the server is busy ({self.max_pending} uploads in progress); retry in "
                                     f"{RETRY_AFTER_S} s", retry)

    def _hold(self, held: list[int], size: int) -> bool:
        """Count ``size`` more bytes of a body in ``buffered`` (and ``held``); False, counting nothing, when they
        would take it over ``max_buffered``."""
        if self.buffered + size > self.max_buffered:
            return False
        self.buffered += size
        held[0] += size
        return True

    async def _receive(self, scope, receive, held: list[int], limit: float,
                       clock: "_BodyClock") -> tuple[str, bytes]:
        """Receive the request's body: ``("ok", body)``, or ``("large" | "full" | "late" | "slow" | "gone", b"")``
        when it is over the limit, would take the bytes held over ``max_buffered``, is not in within ``limit``
        seconds, arrives under ``min_body_rate`` after ``body_grace``, or the client went away.

        Each part is counted in ``held`` (and ``buffered``) as it comes. At most ``max_bytes`` are kept; a body
        over the limit by at most :data:`DRAIN_BYTES` is read to its end and dropped: a client that sends its whole
        body before reading then gets the answer, where closing on unread data would reset the connection."""
        declared = _declared_length(scope)
        if declared is not None and declared > self.max_bytes + DRAIN_BYTES:
            return "large", b""
        wanted = 1 if declared is None else declared  # a body over the limit: 413 below, whatever is free
        if wanted <= self.max_bytes and wanted > self.max_buffered - self.buffered:
            return "full", b""  # it cannot fit now: refused before any of it is read (no "100 Continue")
        chunks: list[bytes] = []
        over = declared is not None and declared > self.max_bytes  # a 413 whatever comes: drained, never held
        try:
            with anyio.fail_after(limit):
                while True:
                    if verdict := clock.verdict(anyio.current_time()):
                        return verdict, b""
                    with anyio.move_on_after(clock.deadline() - anyio.current_time()):
                        message = await receive()
                        if message["type"] == "http.disconnect":
                            return "gone", b""
                        part = message.get("body", b"")
                        clock.arrived(len(part), anyio.current_time())
                        if clock.seen <= self.max_bytes and not over:
                            if not self._hold(held, len(part)):
                                return "full", b""
                            chunks.append(part)
                        elif chunks:  # over the limit: the rest is only drained, and nothing of it is held
                            chunks.clear()
                            self.buffered -= held[0]
                            held[0] = 0
                        if not message.get("more_body", False) or clock.seen > self.max_bytes + DRAIN_BYTES:
                            break
        except TimeoutError:
            return "late", b""
        return ("large", b"") if clock.seen > self.max_bytes else ("ok", b"".join(chunks))


class _BodyClock:
    """When a body still arriving is refused (:meth:`RequestGuard._receive`): under the least rate on average once
    the grace has passed ("slow"); under it over any :data:`BODY_WINDOW_S` after the grace, however far ahead the
    average is ("slow": a byte every 9 s kept a 4 MiB body sent at once for 256 s); nothing for :data:`BODY_IDLE_S`
    once it has begun, or a stop when the average falls due ("idle": the body stopped, it was not slow)."""

    def __init__(self, rate: float, grace: float, start: float):
        self.rate, self.grace, self.start, self.last, self.seen = rate, grace, start, start, 0
        self.window_end, self.window_bytes = start + grace + BODY_WINDOW_S, 0

    def due(self) -> float:
        return self.start + max(self.grace, self.seen / self.rate)

    def deadline(self) -> float:
        return min(self.due(), self.window_end, self.last + BODY_IDLE_S if self.seen else math.inf)

    def arrived(self, size: int, now: float) -> None:
        self.seen, self.last = self.seen + size, now
        self.window_bytes += size if now >= self.start + self.grace else 0

    def verdict(self, now: float) -> str | None:
        stopped = self.seen and now - self.last >= 1.0
        if now >= self.due():
            return "idle" if stopped else "slow"
        if self.seen and now >= self.last + BODY_IDLE_S:
            return "idle"
        if now >= self.window_end:
            if self.window_bytes < self.rate * BODY_WINDOW_S:
                return "slow"
            self.window_end, self.window_bytes = self.window_end + BODY_WINDOW_S, 0
        return None


#: Where the guard hands the app the body it received (the bytes the app reads, not a copy): a form's own parser
#: drops a part cut short without a word, and the endpoint tells why from the body itself.
BODY_KEY = "cnnlab.body"


def _boundary(content_type: str) -> bytes:
    """The boundary a multipart ``Content-Type`` names (b"" where it names none)."""
    boundary = next((p.split("=", 1)[1].strip().strip('"') for p in content_type.split(";")[1:]
                     if p.strip().lower().startswith("boundary=")), "")
    return boundary.encode("latin-1", "replace")


def _cut_short(body: bytes, content_type: str) -> bool:
    """Whether a multipart ``body`` lacks its closing boundary (``--BOUNDARY--``): a form cut short, whose file part
    the parser drops without a word (answered "no file in the form", though it had one)."""
    boundary = _boundary(content_type)
    return bool(boundary) and b"--" + boundary + b"--" not in body


def _form_part(body: bytes, content_type: str, field: str) -> tuple[str, bytes] | None:
    """The ``Content-Disposition`` and the data, as sent, of the first part of the multipart ``body`` named ``field``
    (None where there is none). For a part the form's parser took for text, which keeps no headers and only the data
    decoded (a part with no ``filename``, or ``filename*`` alone, which the parser does not read: RFC 7578 4.2)."""
    delimiter = b"\r\n--" + _boundary(content_type)
    for part in (b"\r\n" + body).split(delimiter)[1:]:
        if part.startswith(b"--"):  # the closing delimiter
            break
        head, sep, data = part.partition(b"\r\n\r\n")  # (the delimiter line's padding, then the part's headers)
        for line in head.split(b"\r\n")[1:] if sep else ():
            key, _, value = line.partition(b":")
            disposition = value.decode("latin-1").strip()
            if key.strip().lower() == b"content-disposition" and \
                    parse_options_header(disposition)[1].get(b"name") == field.encode():
                return disposition, data
    return None


def _extended_filename(disposition: str) -> str | None:
    """The file name a ``Content-Disposition`` gives as ``filename*`` (RFC 5987: ``UTF-8''%e2%82%ac.png``), decoded;
    None where it gives none."""
    found = re.search(r"(?:^|;)\s*filename\*\s*=\s*([^;]*)", disposition, re.IGNORECASE)
    if found is None:
        return None
    charset, _, rest = found.group(1).strip().strip('"').partition("'")
    encoded = rest.partition("'")[2] if rest else charset  # (no charset'language' prefix: the value as it is)
    try:
        return urllib.parse.unquote(encoded, encoding=charset if rest else "utf-8", errors="replace")
    except LookupError:  # a charset Python does not know
        return urllib.parse.unquote(encoded, encoding="latin-1")


class Refused(Exception):
    """A request answered ``{"error": message}`` with ``status`` and ``headers`` (raised by the steps of ``POST
    /predict``)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


def _text_in_file_field(request: Request, text: str) -> tuple[bytes, str]:
    """The image of a form whose field ``file`` the parser read as text, not as a file: a part that names its file
    by ``filename*`` alone is taken as the file it is (its bytes as sent, its name decoded); a part with no file name
    at all is refused, naming what came (``curl -F "file=<digit.png"`` sends the file's bytes as text)."""
    part = _form_part(request.scope.get(BODY_KEY, b""), request.headers.get("content-type", ""), "file")
    disposition, data = part if part is not None else ("", text.encode("utf-8", "surrogateescape"))
    name = _extended_filename(disposition)
    if name is not None and part is not None:
        return data, _client_name(name)
    raise Refused(400, f"field 'file' holds text ({len(data):,} bytes, no filename), not a file upload; send the "
                       "image as a file: curl -F file=@digit.png (a part with filename=\"...\")")


def _refuse_coded(request: Request) -> None:
    """A body sent with a content coding (``Content-Encoding: gzip``) is :class:`Refused` 415, naming the coding, with
    ``Accept-Encoding: identity`` (RFC 9110 15.5.16): a gzipped PNG was read as its bytes and refused as "not an image
    (no PNG, JPEG, BMP, GIF or WebP data found)", the wrong cause. ``identity`` is no coding."""
    codings = [c.strip() for line in request.headers.getlist("content-encoding") for c in line.split(",")]
    coded = [c for c in codings if c and c.lower() != "identity"]
    if coded:
        named = printable(", ".join(codings))
        raise Refused(415, f"Content-Encoding {named[:80]} is not accepted; send the image uncompressed",
                      {"Accept-Encoding": "identity"})


async def _upload(request: Request, max_bytes: int) -> tuple[bytes, str]:
    """The image a ``POST /predict`` sends, and its name for messages: a multipart form's field ``file``, or the body
    of an ``image/*`` (or :data:`RAW_BYTES`) request; anything else is :class:`Refused` (415 naming the type sent)."""
    _refuse_coded(request)
    ctype = request.headers.get("content-type", "").lower()  # media types are case-insensitive (RFC 9110)
    media = ctype.split(";", 1)[0].strip()  # its parameters (charset=..., boundary=...) aside
    if media.startswith("image/") or media == RAW_BYTES:
        return await request.body(), "upload"
    if media != "multipart/form-data":  # the type itself, never a prefix of it (multipart/form-datax)
        sent = f"Content-Type {printable(media)[:80]}" if media else "no Content-Type"
        raise Refused(415, f"a body with {sent} is not read as an image; send the image as multipart form field "
                           f"'file', or as the body with Content-Type image/* (image/png...) or {RAW_BYTES}")
    try:
        form = await request.form(max_files=1, max_fields=4, max_part_size=max_bytes)
    except Exception as err:  # noqa: BLE001 - malformed multipart bodies of any kind
        raise Refused(400, f"unreadable multipart form ({str(err)[:100]}); send the image as field 'file'") from None
    try:
        upload = form.get("file")
        if isinstance(upload, str):
            return _text_in_file_field(request, upload)
        if upload is None:
            if _cut_short(request.scope.get(BODY_KEY, b""), request.headers.get("content-type", "")):
                raise Refused(400, "the multipart form is cut short (its closing boundary never came); send the "
                                   "whole form")
            raise Refused(400, "no file in the form; send the image as multipart field 'file'")
        return await upload.read(), _client_name(upload.filename)
    finally:
        await form.close()


def _origin_form(scope) -> dict:
    """``scope`` with a request target in absolute form (``http://host/info?q``, RFC 9112 3.2.2: a server must
    accept it) made the path it names (``/info``); ``*`` (``OPTIONS *``) and paths as they are."""
    path = scope.get("path", "")
    scheme, sep, rest = path.partition("://")
    if path.startswith("/") or not sep or not scheme.isalpha():
        return scope
    raw = scope.get("raw_path") or path.encode()
    raw_rest = raw.partition(b"://")[2]
    slash, raw_slash = rest.find("/"), raw_rest.find(b"/")
    return {**scope, "path": rest[slash:] if slash >= 0 else "/",
            "raw_path": raw_rest[raw_slash:] if raw_slash >= 0 else b"/"}


def _replay(body: bytes, receive):
    """A ``receive`` that hands the app the whole body in one message, then passes on what comes next
    (only ``http.disconnect`` can)."""
    held = [body]

    async def replay():
        if held:
            return {"type": "http.request", "body": held.pop(), "more_body": False}
        return await receive()

    return replay


def _shortage(err: BaseException) -> str | None:
    """What the machine ran short of, in a few words, when ``err`` says so (a :class:`ResourceError` from decoding,
    or an ``OSError`` or ``MemoryError`` from anywhere in a prediction: numpy and Pillow open modules on first use,
    and ``ulimit -n 20`` failed there too); None for any other error."""
    if isinstance(err, ResourceError):
        return err.short_of
    if isinstance(err, MemoryError) or (isinstance(err, OSError) and err.errno in (errno.ENOMEM, errno.ENOBUFS)):
        return "out of memory"
    if isinstance(err, OSError) and err.errno in (errno.EMFILE, errno.ENFILE):
        return "too many open files"
    return None


class _PastTheEnd(Exception):
    """A ``Range`` whose every range starts past the end of the file asked for (RFC 9110 15.5.17: 416)."""

    def __init__(self, asked: str, size: int):
        super().__init__(asked)
        self.asked, self.size = asked, size


#: One range of a ``bytes`` Range (RFC 9110 14.1.2): ``int-range`` (``first-pos "-" [ last-pos ]``) or ``suffix-range``
#: (``"-" suffix-length``), with the white space a list allows around it.
_BYTE_RANGE = re.compile(r"[ \t]*(?:(?P<first>[0-9]+)-(?P<last>[0-9]*)|-[0-9]+)[ \t]*")


def _valid_byte_ranges(range_set: str) -> bool:
    """Whether a ``bytes`` Range's ``range-set`` is valid by RFC 9110's grammar: every part a range (empty list
    elements aside, RFC 9110 5.6.1), at least one, and none whose last byte comes before its first (14.1.2)."""
    parts = [part for part in range_set.split(",") if part.strip(" \t")]
    for part in parts:
        found = _BYTE_RANGE.fullmatch(part)
        if found is None or (found["first"] and found["last"] and int(found["last"]) < int(found["first"])):
            return False
    return bool(parts)


class PageFile(FileResponse):
    """A file of the page (``/``, ``/static/...``), whose ``Range`` header is read as RFC 9110 14.2 says: a range unit
    other than ``bytes`` (``chars=0-1``) is ignored, and so is a ``Range`` that is not valid (``bytes=50-10``, no
    ``=``, a part that is no range, whatever is beside it: ``bytes=abc-, 0-1``, ``bytes=0x10-20, 99999-``), as the RFC
    allows: the whole file, 200 (Starlette answered the first two 400 in plain text, skipped the part that is no range
    and served the rest, or answered 416 for the range past the end beside it: :func:`_valid_byte_ranges`); valid
    ranges that all start past the file's end are 416 in the app's shape, ``{"error": ...}``, with ``Content-Range:
    bytes */SIZE`` (an empty body before). Satisfiable ranges are served as Starlette serves them (206), those past the end among them left
    out (RFC 9110 14.2: 416 only when none can be served; Starlette refused the whole header for one of them)."""

    @classmethod
    def _parse_range_header(cls, http_range: str, file_size: int) -> list[tuple[int, int]]:
        units, sep, range_set = http_range.partition("=")
        if sep and units.strip().lower() == "bytes" and not _valid_byte_ranges(range_set):
            return []  # not valid by the grammar (a part Starlette would skip, or drop as past the end): the whole file
        try:
            return super()._parse_range_header(http_range, file_size)
        except MalformedRangeHeader:
            return []  # ignored: the whole file
        except RangeNotSatisfiable:
            pass
        served = [(start, end) for start, end in cls._parse_ranges(http_range.split("=", 1)[1], file_size)
                  if 0 <= start < file_size]  # (a header that got this far has its "=")
        if not served:
            raise _PastTheEnd(http_range, file_size)
        try:  # the ones that can be served, as Starlette reads them (merged; one whose start is after its end: ignored)
            return super()._parse_range_header("bytes=" + ",".join(f"{a}-{b - 1}" for a, b in served), file_size)
        except MalformedRangeHeader:
            return []

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except _PastTheEnd as past:  # raised while the ranges are read, before anything is sent
            asked = printable(past.asked if len(past.asked) <= 80 else past.asked[:80] + "...")
            message = (f"Range {asked} asks for no byte of this file, which has {past.size:,}; ask for bytes within "
                       f"0-{max(past.size - 1, 0)}, or send no Range for the whole file")
            await JSONResponse({"error": message}, status_code=416,
                               headers={"content-range": f"bytes */{past.size}"})(scope, receive, send)


class PageFiles(StaticFiles):
    """The page's files (``/static/...``), each a :class:`PageFile`."""

    def file_response(self, full_path, stat_result, scope, status_code: int = 200) -> Response:
        response = PageFile(full_path, status_code=status_code, stat_result=stat_result)
        if self.is_not_modified(response.headers, Headers(scope=scope)):
            return NotModifiedResponse(response.headers)
        return response


def _png_data_url(img) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _client_name(filename: str | None) -> str:
    """A safe, short name for messages: the upload's base name, printable characters only."""
    base = (filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(ch for ch in base if ch.isprintable())[:80]
    return f"upload {base!r}" if base else "upload"


class Withdrawn(CnnlabError):
    """The net served answers no more (the last.pt it was loaded from is a diverged run's now): a 503 saying why."""


def _named(p: Predictor) -> tuple:
    """What tells one net of another for the page (besides its weights): model, dataset and classes."""
    return p.model_name, p.dataset, p.classes


def _net_line(p: Predictor, other: Predictor) -> str:
    """:func:`checkpoint_line` of ``p``, led by its model, dataset and classes where they differ from ``other``'s (a
    digits' file replaced by a Fashion-MNIST net's under a running server)."""
    line = checkpoint_line(p.checkpoint)
    if _named(p) == _named(other):
        return line
    return f"{p.model_name} trained on {p.dataset} ({len(p.classes)} classes), {line}"


class Service:
    """Prediction for the app: images decoded on the service's own ``decodes`` threads (so at most that
    many at once), the net one image at a time (a lock), branch energies for Inception nets.

    A net loaded from a file (:meth:`Predictor.from_run`) is loaded again when the file changes on disk (its stat and
    its SHA-256 sidecar's: a run retrained or resumed, whose save renames a new last.pt into place; a file copied in,
    then its sidecar), at the next request (:meth:`served`), and ``say`` says so, naming the model and dataset when
    they differ from the net's before; only that file is read (a folder put in its place is not read as a run folder).
    A file gone (a link to nowhere named with its target), or one that does not load (``warn`` says why, once per
    change), leaves the net served as it was, and the file is tried again when it (or its sidecar) changes. The
    last.pt of a run that diverged, or a link to one (:func:`cnnlab.checkpoint.diverged_refusal`; its run's
    status.json is watched too), is refused as at the start, and the net served from that file stops answering
    (:meth:`predict` raises :class:`Withdrawn`, a 503 saying why; ``/info``'s ``"withdrawn"``) until the file changes
    to one that loads; gone meanwhile, it still answers no more, and the warning and the 503 say so. Each answer names
    the checkpoint that gave it (``"checkpoint"``). A line that cannot be written (stdout's reader gone) fails no
    request (:func:`_unfailing`)."""

    def __init__(self, predictor: Predictor, decodes: int = DEFAULT_DECODES,
                 say: Callable[[str], None] | None = None, warn: Callable[[str], None] | None = None):
        if decodes < 1:
            raise CnnlabError(f"decodes must be at least 1, got {decodes}")
        self._served = (predictor, bool(inception_modules(predictor.model)))
        self._lock = threading.Lock()
        self._reload = threading.Lock()  # one load at a time; the others answer with the net loaded before
        self._passed: tuple | None | bool = False  # the stamp of a file change already warned of (False: none)
        self._withdrawn = ""  # why the net served answers no more (its run diverged): "" while it answers
        self._decoders = concurrent.futures.ThreadPoolExecutor(decodes, thread_name_prefix="cnnlab-decode")
        self.say, self.warn = _unfailing(say or log.info), _unfailing(warn or log.warning)

    @property
    def predictor(self) -> Predictor:
        return self._served[0]

    @property
    def has_inception(self) -> bool:
        return self._served[1]

    def served(self) -> tuple[Predictor, bool]:
        """The predictor to answer with, and whether its net has Inception modules: its checkpoint loaded again first
        when the file's stamp changed since it was loaded (while another request loads it: the net loaded before)."""
        predictor = self._served[0]
        if predictor.stamp is None:  # the shipped weights, or a net not loaded from a file
            return self._served
        now = checkpoint_stamp(predictor.source)
        if now == predictor.stamp or now == self._passed or not self._reload.acquire(blocking=False):
            return self._served
        try:
            if self._served[0] is predictor:  # (not loaded again meanwhile by another request)
                self._load_again(predictor, now)
            return self._served
        finally:
            self._reload.release()

    def _load_again(self, old: Predictor, now: tuple) -> None:
        source, was = printable(old.source), checkpoint_line(old.checkpoint)
        self._passed = now  # what follows is said once for this stamp
        if now[0] is None:
            self.warn(self._gone(old, was))
            return
        if refusal := diverged_refusal(old.source, file_given=True):  # refused at the start; the net served from it
            # answers no more, and a restart names the file (its run's best.pt: serve takes it as it takes a folder)
            if refusal != self._withdrawn:  # (said once a reason)
                self.warn(printable(f"{refusal}; the net served from {old.source} ({was}) answers no more (503) "
                                    "until the file changes"))
            self._withdrawn = refusal
            return
        if now[0] == old.stamp[0]:  # the very file served (its sidecar changed, or its run's status.json)
            self._answer_again(old, now, was)
            return
        if not is_file(old.source, if_unknown=True):  # a folder put in its place: not read as a run folder
            self.warn(f"{source} is now {kind_of(old.source)}, not a checkpoint file; still serving the net loaded "
                      f"before ({was})")
            return
        try:
            new = Predictor.from_file(old.source, device=old.device, max_pixels=old.max_pixels)
        except Exception as err:  # noqa: BLE001 - any failure to load keeps the net served, and says why
            self.warn(f"{source} changed on disk but does not load ({first_line(err)[:300]}); still serving the net "
                      f"loaded before ({was})")
            return
        if new.checkpoint["sha256"] == old.checkpoint["sha256"]:  # the same bytes again (a copy of the file served)
            self._answer_again(old, new.stamp, was)
            return
        self._served, self._passed, self._withdrawn = (new, bool(inception_modules(new.model))), False, ""
        other = "another net, " if _named(new) != _named(old) else ""
        self.say(printable(f"{old.source} changed on disk: loaded it again, now {other}{_net_line(new, old)} "
                           f"(was {_net_line(old, new)})"))

    def _gone(self, old: Predictor, was: str) -> str:
        """The warning of a file served that is gone: a link to nowhere named with its target (as ``predict`` names
        it, :func:`cnnlab.runs.link_to_nowhere`), then what the server answers with now: the net loaded from it, or,
        where its run diverged (withdrawn), still nothing, 503, whose line then says the file is gone (its last.pt
        and status.json named no more)."""
        source = printable(old.source)
        target = link_to_nowhere(Path(old.source))
        gone = (f"{source} is gone (deleted or moved)" if target is None else
                f"{source} is a link to {printable(target)}, which does not exist (remount what held it, or put it back)")
        if not self._withdrawn:
            return f"{gone}; still serving the net loaded from it ({was})"
        fix = "put a checkpoint that loads in its place (the run trained again with a lower --lr), or serve another run"
        self._withdrawn = f"the net served from {source} answers no more: its run diverged, and {gone}; {fix}"
        return f"{gone}; the net loaded from it ({was}) still answers no more (503), its run having diverged; {fix}"

    def _answer_again(self, old: Predictor, now: tuple, was: str) -> None:
        """The file served is the net served (its bytes unchanged): its new stamp kept, and it answers (again)."""
        old.stamp, self._passed = now, False
        if self._withdrawn:
            self._withdrawn = ""
            self.say(printable(f"{old.source}: its run no longer reads as diverged; answering with it again ({was})"))

    def info(self, max_bytes: int) -> dict:
        """``GET /info``: the net served (its checkpoint loaded again first, where it changed) and the limits."""
        p, inception = self.served()
        return {"model": p.model_name, "dataset": printable(p.dataset), "classes": p.classes, "inception": inception,
                "paper": p.paper, "preparation": p.preparation, "image_size": p.image_size,
                "max_upload_bytes": max_bytes, "max_pixels": p.max_pixels, "checkpoint": p.checkpoint,
                "withdrawn": self._withdrawn or None}

    def _number_fields(self, predictor: Predictor, data: bytes, name: str):
        """The digits' fields: found on a decode thread, then the net's pass on a wide digit's halves under the net's
        lock (outside it, that pass fired the branch-energy hooks of the request holding it: 26 of 400 answers under
        load drew another image's energies)."""
        found = self._decoders.submit(_bare, predictor.number_fields, data, name, halves=False).result()
        with self._lock:
            return predictor.halves_where_surer(found)

    def answer(self, data: bytes, name: str) -> dict | str:
        """:meth:`predict`'s answer, or why the image is refused (a :class:`BadImageError`'s line), returned, not
        raised: an error raised through the thread pool kept its frames, and the decoded arrays and the 4 MB body they
        hold, alive until Python's cycle collector ran (with :func:`_bare`: 2.2 GB -> see docs/reliability.md)."""
        try:
            return self.predict(data, name)
        except BadImageError as err:
            return str(err)

    def predict(self, data: bytes, name: str) -> dict:
        # Decoding and preprocessing (BadImageError for bad input) run on the decode threads, outside the
        # net's lock; the caller waits. Own threads, not a semaphore in the caller's: glibc keeps a thread's
        # freed memory in that thread's malloc arena, so decodes spread over the server's 40 pool threads
        # left up to 40 decodes' worth resident (measured: 1.75 GB for 40 uploads); on 2 threads, 2 at most.
        p, inception = self.served()  # one net for the whole answer, whatever a reload does meanwhile
        if self._withdrawn:
            raise Withdrawn(self._withdrawn)
        field_01, marks = self._decoders.submit(_bare, p.prepared, data, name).result()
        # several digits side by side: each read on its own field too (the image decoded again; a page's drawing)
        digits = self._number_fields(p, data, name) if marks > 1 else None
        with self._lock, record_branch_energy(p.model) as energies:  # the field as the net reads it
            pred = p.predictions([name], [field_01], [marks])[0]
        with self._lock:
            number = p.number(name, digits).to_dict(3) if digits else None
        # counted only by a digit net's steps: a clothes or an image folder's net takes the image whole (its 1 was
        # no count), and the key is left out for it, as cnnlab predict --json leaves it out
        counted = {"digits_seen": marks} if p.preparation == "digit" else {}
        return {
            **{k: v for k, v in pred.to_dict(3).items() if k != "file"},
            **counted,  # 2 or more: several digits side by side, and the net read one field
            "number": {k: v for k, v in number.items() if k != "file"} if number else None,  # each of them read
            "probabilities": pred.probabilities,
            "classes": pred.classes,
            # /info's values: the page compares them with its own (a server restarted with another net under it;
            # the paper too: two folder runs of one model, dataset name and classes, trained on dark and light paper)
            "model": p.model_name,
            "dataset": printable(p.dataset),
            "paper": p.paper,
            "preparation": p.preparation,
            "checkpoint": p.checkpoint,  # which net answered: its file, step, epochs and SHA-256
            "input_png": _png_data_url(to_uint8_image(pred.input_image)),
            "branches": ({"energy": energies, "share": shares(energies)} if inception else None),
        }


def _unfailing(line: Callable[[str], None]) -> Callable[[str], None]:
    """``line`` said where a line that cannot be written fails nothing: a reload's line is said in the request that
    found the change, and a stdout or stderr closed (its reader gone), on a full disk or shut (``OSError``,
    :class:`cnnlab.output.OutputError`, ``ValueError``) is not that client's problem; the line is dropped."""
    def said(msg: str) -> None:
        try:
            line(msg)
        except (OSError, ValueError, CnnlabError):
            pass

    return said


def _bare(fn, *args, **kwargs):
    """``fn(...)`` on a decode thread; an error it raises goes on without the frames it was raised through. Those
    frames hold the decoded image's arrays, and the error's traceback kept them until Python's cycle collector ran:
    32 clients uploading a 4 MB photo with no ink (each a 400) took the server to 2.2-3.4 GB, where the memory bound
    is about 0.8 GB (630 MB with the collector run every 0.2 s)."""
    try:
        return fn(*args, **kwargs)
    except Exception as err:
        raise err.with_traceback(None) from None


def create_app(predictor: Predictor, max_bytes: int = DEFAULT_MAX_BYTES, *, decodes: int = DEFAULT_DECODES,
               max_pending: int = DEFAULT_MAX_PENDING, body_timeout: float | None = DEFAULT_BODY_TIMEOUT,
               min_body_rate: float = DEFAULT_MIN_BODY_RATE, body_grace: float = DEFAULT_BODY_GRACE,
               max_buffered: int | None = None, say: Callable[[str], None] | None = None,
               warn: Callable[[str], None] | None = None):
    """The FastAPI app serving ``predictor``, behind a :class:`RequestGuard` (the module docstring); ``say`` and
    ``warn`` (by default the ``cnnlab.serve`` logger) tell when the checkpoint served is loaded again
    (:class:`Service`)."""
    if not (STATIC / "index.html").is_file():
        raise CnnlabError(f"the page is missing from this install ({STATIC}/index.html); reinstall cnnlab")
    if max_pending < 1:
        raise CnnlabError(f"max_pending must be at least 1, got {max_pending}")
    if max_buffered is not None and max_buffered < max_bytes:
        raise CnnlabError(f"max_buffered must be at least max_bytes ({max_bytes:,}), got {max_buffered:,}")
    if min_body_rate <= 0:
        raise CnnlabError(f"min_body_rate must be over 0 bytes a second, got {min_body_rate}")
    service = Service(predictor, decodes, say=say, warn=warn)
    app = FastAPI(title="cnnlab", docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/static", PageFiles(directory=STATIC), name="static")

    def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status, headers=headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        # routing's own answers (404, 405) in the app's one shape, {"error": "<one line>"}, naming what exists
        target = request.scope["path"]  # as routed: ``*`` stays ``*`` (request.url.path made it ``/*``)
        # control characters decoded from the path (%0d%0a, %09) escaped: the message stays one line
        path = printable(target if len(target) <= 80 else target[:80] + "...")
        message = (f"{request.method} {path} is not served here; {ROUTES_HINT}" if exc.status_code in (404, 405)
                   else str(exc.detail))
        return JSONResponse({"error": message}, status_code=exc.status_code, headers=exc.headers)

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    def index():
        return PageFile(STATIC / "index.html", media_type="text/html")

    @app.api_route("/favicon.ico", methods=["GET", "HEAD"], include_in_schema=False)
    def favicon():
        return Response(status_code=204)  # the page's icon is static/favicon.svg; no 404 in the browser's log

    @app.api_route("/info", methods=["GET", "HEAD"])
    def info():
        return service.info(max_bytes)

    @app.post("/predict")
    async def predict(request: Request):
        try:
            data, name = await _upload(request, max_bytes)
        except Refused as refused:
            return error(refused.status, refused.message, refused.headers)
        try:
            answer = await run_in_threadpool(service.answer, data, name)
            return error(400, answer) if isinstance(answer, str) else answer
        except BadImageError as err:
            return error(400, str(err))
        except Withdrawn as err:  # the net's run diverged: no answer of it, and no retry that would change that
            # "withdrawn", as /info names it: the page tells this 503 from a gateway's or a stopping server's, which
            # waiting mends (it said "error 503 from the server on this port (...). Waiting for it")
            return JSONResponse({"error": str(err), "withdrawn": str(err)}, status_code=503)
        except (ResourceError, MemoryError, OSError) as err:  # the machine short of files or memory, not the image bad
            short = _shortage(err)
            if short is None:
                raise
            log.info("%s: %s", name, short)
            return JSONResponse({"error": f"the server is busy ({short} now); try again in {RETRY_AFTER_S} s"},
                                status_code=503, headers={"retry-after": str(RETRY_AFTER_S)})

    return RequestGuard(app, max_bytes, max_pending=max_pending, body_timeout=body_timeout,
                        min_body_rate=min_body_rate, body_grace=body_grace, max_buffered=max_buffered)
