"""The web app: one drawing page and a JSON endpoint, around a :class:`~cnnlab.predict.Predictor`.

Routes:
- ``GET /`` (and ``HEAD /``): the page (``static/index.html`` and ``static/app.js``): draw, see the probabilities.
- ``GET /favicon.ico``: 204 (the page links ``static/favicon.svg``; this answers browsers that ask anyway).
- ``GET /info``: the model's name, its dataset's (no folders above it), classes, whether it has Inception modules, the upload and pixel limits.
- ``HEAD`` wherever ``GET`` is served (``/``, ``/favicon.ico``, ``/info``, ``/static/...``).
- ``POST /predict``: an image as multipart form field ``file`` (or the raw body with an
  ``image/*`` content type). Answers ``{"prediction", "probabilities", "classes", "top",
  "input_png", "branches"}``; a bad image (over the pixel cap included) is ``400 {"error": "<one line>"}``
  (the rules of ``cnnlab predict``), a body over the limit ``413`` however it is sent, a body that does
  not arrive in time ``408``, and a server that has as many uploads as it takes, or runs out of file
  descriptors or memory while decoding, ``503`` (with Retry-After).
  The body's ``Content-Type`` is read without regard to case (``IMAGE/PNG`` is ``image/png``).
- Anything else: ``404`` (no such route) or ``405`` (another method), ``{"error": "<one line>"}`` like every
  other refusal, naming the routes there are.

What a request can cost is bounded before the app sees it (:class:`RequestGuard`) and while it is
decoded (:class:`Service`):

- a request whose method takes no body (GET, HEAD, OPTIONS) but declares one (a ``Content-Length`` over 0, or
  ``Transfer-Encoding``) is answered 400 at once, its body never read (the guard read such bodies, up to
  ``max_bytes`` each, and kept them without counting them as uploads: 150 clients holding 4 MB GETs open
  made the server grow by 740 MB);
- at most ``max_pending`` uploads (requests of other methods) are in the server at once, being received,
  waiting or decoded; one more is answered 503 without its body being kept (it is read and dropped, so
  that the client gets the answer, unless the client asked ``Expect: 100-continue``);
- the guard reads each body in full before the app sees it (the app never waits on the network): over
  ``max_bytes`` is 413 (declared or chunked; a small excess is read and dropped first, and the server's
  protocol drops the rest after the answer, so that a client that sends everything before reading gets it:
  :mod:`cnnlab.serve.protocol`), not received within ``body_timeout`` seconds is 408, as is one that arrives
  slower than ``min_body_rate`` bytes a second on average once ``body_grace`` seconds have passed (at once, so that
  a few slow uploaders cannot hold every upload slot for ``body_timeout``), and a client that goes away mid-upload
  is one INFO line on the ``cnnlab.serve`` logger, no traceback;
- a request target in absolute form (``GET http://host/info``, which RFC 9112 3.2.2 says a server must accept) is
  routed by its path (``/info``);
- a request still unanswered when the server stops (Ctrl+C, after its grace) is answered 503 in the app's
  shape, not uvicorn's plain-text 500 and its traceback;
- at most ``decodes`` images are decoded and preprocessed at once, each within the predictor's pixel
  cap (``max_pixels``, checked before decoding); the others wait their turn. The net runs one image at a time.

So the memory above an idle server stays below about ``decodes x 16 x max_pixels`` bytes (the peak of
a decode, see :mod:`cnnlab.imagelimits`) plus ``max_pending x 2 x max_bytes`` (each body, and the file
read from it): about 0.8 GB at the defaults, whatever the number of clients.
"""

import base64
import concurrent.futures
import errno
import io
import json
import logging
import threading
from pathlib import Path

import anyio
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from cnnlab.analysis.branches import inception_modules
from cnnlab.errors import CnnlabError, printable
from cnnlab.imageio import ResourceError
from cnnlab.predict import BadImageError, Predictor, to_uint8_image
from cnnlab.serve import DEFAULT_MAX_BYTES, ROUTES_HINT
from cnnlab.serve.branches import record_branch_energy, shares

STATIC = Path(__file__).with_name("static")
log = logging.getLogger("cnnlab.serve")

#: Images decoded and preprocessed at once: each peaks at up to 16 bytes per pixel of the cap (~270 MB at
#: the default cap, see cnnlab.imagelimits); two keep both cores of a small machine busy.
DEFAULT_DECODES = 2
#: Uploads in the server at once (received, waiting, decoding); one more is answered 503 at once. Each holds
#: at most two copies of its body: 32 x 2 x 4 MiB = 256 MiB at the default body limit.
DEFAULT_MAX_PENDING = 32
#: Seconds a client has to send its whole request body (a page's canvas takes milliseconds; a 2 MB phone photo
#: over a 64 KB/s link 31-33 s, which the 30 s this was refused).
DEFAULT_BODY_TIMEOUT = 60.0
#: Bytes a second a body must average once DEFAULT_BODY_GRACE seconds have passed since its head, else 408 at once
#: (the upload slot freed): 32 clients sending 200 bytes and then a byte every 3 s held every slot for the whole
#: body timeout, and every real upload got 503. Holding all 32 slots now takes 32 x 16 KiB/s = 512 KiB/s for at
#: most DEFAULT_BODY_TIMEOUT; a phone on a 64 KB/s link sends four times the rate.
DEFAULT_MIN_BODY_RATE = 16 * 1024
DEFAULT_BODY_GRACE = 5.0
#: Seconds a 503 asks the client to wait before retrying.
RETRY_AFTER_S = 1
#: Bytes over the limit that are still read (and dropped) before answering 413, so that a client that
#: sends its whole body before reading gets the answer, not a reset connection.
DRAIN_BYTES = 1024 * 1024
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

    ``pending`` counts the uploads in the server now; it is only touched on the event loop's thread.
    """

    def __init__(self, app, max_bytes: int, max_pending: int = DEFAULT_MAX_PENDING,
                 body_timeout: float = DEFAULT_BODY_TIMEOUT, min_body_rate: float = DEFAULT_MIN_BODY_RATE,
                 body_grace: float = DEFAULT_BODY_GRACE):
        self.app, self.max_bytes, self.max_pending, self.body_timeout = app, max_bytes, max_pending, body_timeout
        self.min_body_rate, self.body_grace = min_body_rate, body_grace
        self.pending = 0

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

    async def _guard(self, scope, receive, send):
        unwanted = _unwanted_body(scope)
        if unwanted:  # answered before any of the body is read; the connection closes on the rest
            return await _answer(send, 400, unwanted)
        if scope["method"] in NO_BODY_METHODS:  # no body to read, nothing to count
            return await self.app(scope, receive, send)
        busy = self.pending >= self.max_pending  # an upload: every other method
        counted = not busy
        self.pending += counted
        try:
            outcome, body = await self._receive(scope, receive, keep=not busy)
            if outcome == "gone":
                log.info("a client went away during its upload; nothing answered")
            elif outcome == "large":
                await _answer(send, 413, f"request body over the limit of {self.max_bytes:,} bytes; "
                                         "send a smaller image")
            elif outcome == "late":
                await _answer(send, 408, f"the request body did not arrive within {self.body_timeout:g} s; "
                                         "send it at once")
            elif outcome == "slow":
                await _answer(send, 408, f"the request body arrived slower than {self.min_body_rate / 1024:g} KiB/s "
                                         "(the least this server waits for); send it at once, on a faster link")
            elif busy:
                await _answer(send, 503, f"the server is busy ({self.max_pending} uploads in progress); retry in "
                                         f"{RETRY_AFTER_S} s", ((b"retry-after", str(RETRY_AFTER_S).encode()),))
            else:
                await self.app(scope, _replay(body, receive), send)
        finally:
            self.pending -= counted

    async def _receive(self, scope, receive, keep: bool) -> tuple[str, bytes]:
        """Receive the request's body: ``("ok", body)`` (empty unless ``keep``), or ``("large" | "late" | "slow" |
        "gone", b"")`` when it is over the limit, not in within ``body_timeout``, arriving under ``min_body_rate``
        after ``body_grace``, or the client went away.

        At most ``max_bytes`` are kept. A body over the limit by at most :data:`DRAIN_BYTES` is read to its
        end and dropped, as is the body of a request that is refused anyway (``keep=False``): a client that
        sends its whole body before reading then gets the answer, where closing on unread data would reset
        the connection. A client that asked ``Expect: 100-continue`` has sent nothing yet: not drained."""
        declared = _declared_length(scope)
        if declared is not None and declared > self.max_bytes + DRAIN_BYTES:
            return "large", b""
        if not keep and (b"expect", b"100-continue") in [(k, v.lower()) for k, v in scope.get("headers", [])]:
            return "ok", b""
        chunks: list[bytes] = []
        seen = 0
        start = anyio.current_time()
        try:
            with anyio.fail_after(self.body_timeout):
                while True:
                    # the time by which what has come would fall under the rate: the next part must come before it
                    due = start + max(self.body_grace, seen / self.min_body_rate)
                    with anyio.move_on_after(due - anyio.current_time()) as wait:
                        message = await receive()
                    if wait.cancelled_caught:
                        return "slow", b""
                    if message["type"] == "http.disconnect":
                        return "gone", b""
                    seen += len(message.get("body", b""))
                    if keep and seen <= self.max_bytes:
                        chunks.append(message.get("body", b""))
                    else:
                        chunks.clear()  # over the limit, or refused anyway: the rest is only drained
                    if not message.get("more_body", False) or seen > self.max_bytes + DRAIN_BYTES:
                        break
        except TimeoutError:
            return "late", b""
        return ("large", b"") if seen > self.max_bytes else ("ok", b"".join(chunks))


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


def _png_data_url(img) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _client_name(filename: str | None) -> str:
    """A safe, short name for messages: the upload's base name, printable characters only."""
    base = (filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(ch for ch in base if ch.isprintable())[:80]
    return f"upload {base!r}" if base else "upload"


class Service:
    """Prediction for the app: images decoded on the service's own ``decodes`` threads (so at most that
    many at once), the net one image at a time (a lock), branch energies for Inception nets."""

    def __init__(self, predictor: Predictor, decodes: int = DEFAULT_DECODES):
        if decodes < 1:
            raise CnnlabError(f"decodes must be at least 1, got {decodes}")
        self.predictor = predictor
        self.has_inception = bool(inception_modules(predictor.model))
        self._lock = threading.Lock()
        self._decoders = concurrent.futures.ThreadPoolExecutor(decodes, thread_name_prefix="cnnlab-decode")

    def _number_fields(self, data: bytes, name: str):
        """The digits' fields: found on a decode thread, then the net's pass on a wide digit's halves under the net's
        lock (outside it, that pass fired the branch-energy hooks of the request holding it: 26 of 400 answers under
        load drew another image's energies)."""
        found = self._decoders.submit(self.predictor.number_fields, data, name, halves=False).result()
        with self._lock:
            return self.predictor.halves_where_surer(found)

    def predict(self, data: bytes, name: str) -> dict:
        # Decoding and preprocessing (BadImageError for bad input) run on the decode threads, outside the
        # net's lock; the caller waits. Own threads, not a semaphore in the caller's: glibc keeps a thread's
        # freed memory in that thread's malloc arena, so decodes spread over the server's 40 pool threads
        # left up to 40 decodes' worth resident (measured: 1.75 GB for 40 uploads); on 2 threads, 2 at most.
        field_01, marks = self._decoders.submit(self.predictor.prepared, data, name).result()
        # several digits side by side: each read on its own field too (the image decoded again; a page's drawing)
        digits = self._number_fields(data, name) if marks > 1 else None
        with self._lock, record_branch_energy(self.predictor.model) as energies:
            pred = self.predictor(field_01, name=name, preprocess=False)
        with self._lock:
            number = self.predictor.number(name, digits).to_dict(3) if digits else None
        return {
            **{k: v for k, v in pred.to_dict(3).items() if k != "file"},
            "digits_seen": marks,  # 2 or more: several digits side by side, and the net read one field
            "number": {k: v for k, v in number.items() if k != "file"} if number else None,  # each of them read
            "probabilities": pred.probabilities,
            "classes": pred.classes,
            "input_png": _png_data_url(to_uint8_image(pred.input_image)),
            "branches": ({"energy": energies, "share": shares(energies)} if self.has_inception else None),
        }


def create_app(predictor: Predictor, max_bytes: int = DEFAULT_MAX_BYTES, *, decodes: int = DEFAULT_DECODES,
               max_pending: int = DEFAULT_MAX_PENDING, body_timeout: float = DEFAULT_BODY_TIMEOUT,
               min_body_rate: float = DEFAULT_MIN_BODY_RATE, body_grace: float = DEFAULT_BODY_GRACE):
    """The FastAPI app serving ``predictor``, behind a :class:`RequestGuard` (the module docstring)."""
    if not (STATIC / "index.html").is_file():
        raise CnnlabError(f"the page is missing from this install ({STATIC}/index.html); reinstall cnnlab")
    if max_pending < 1:
        raise CnnlabError(f"max_pending must be at least 1, got {max_pending}")
    if min_body_rate <= 0:
        raise CnnlabError(f"min_body_rate must be over 0 bytes a second, got {min_body_rate}")
    service = Service(predictor, decodes)
    app = FastAPI(title="cnnlab", docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        # routing's own answers (404, 405) in the app's one shape, {"error": "<one line>"}, naming what exists
        target = request.scope["path"]  # as routed: ``*`` stays ``*`` (request.url.path made it ``/*``)
        path = target if len(target) <= 80 else target[:80] + "..."
        message = (f"{request.method} {path} is not served here; {ROUTES_HINT}" if exc.status_code in (404, 405)
                   else str(exc.detail))
        return JSONResponse({"error": message}, status_code=exc.status_code, headers=exc.headers)

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    def index():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.api_route("/favicon.ico", methods=["GET", "HEAD"], include_in_schema=False)
    def favicon():
        return Response(status_code=204)  # the page's icon is static/favicon.svg; no 404 in the browser's log

    @app.api_route("/info", methods=["GET", "HEAD"])
    def info():
        return {"model": predictor.model_name, "dataset": printable(predictor.dataset), "classes": predictor.classes,
                "inception": service.has_inception,
                "image_size": predictor.image_size, "max_upload_bytes": max_bytes, "max_pixels": predictor.max_pixels}

    @app.post("/predict")
    async def predict(request: Request):
        ctype = request.headers.get("content-type", "").lower()  # media types are case-insensitive (RFC 9110)
        if ctype.startswith("multipart/form-data"):
            try:
                form = await request.form(max_files=1, max_fields=4, max_part_size=max_bytes)
            except Exception as err:  # noqa: BLE001 - malformed multipart bodies of any kind
                return error(400, f"unreadable multipart form ({str(err)[:100]}); send the image as field 'file'")
            upload = form.get("file")
            if upload is None or isinstance(upload, str):
                return error(400, "no file in the form; send the image as multipart field 'file'")
            data, name = await upload.read(), _client_name(upload.filename)
            await form.close()
        elif ctype.startswith("image/") or ctype.startswith("application/octet-stream"):
            data, name = await request.body(), "upload"
        else:
            return error(415, "send the image as multipart form field 'file', or as the body with Content-Type image/*")
        try:
            return await run_in_threadpool(service.predict, data, name)
        except BadImageError as err:
            return error(400, str(err))
        except (ResourceError, MemoryError, OSError) as err:  # the machine short of files or memory, not the image bad
            short = _shortage(err)
            if short is None:
                raise
            log.info("%s: %s", name, short)
            return JSONResponse({"error": f"the server is busy ({short} now); try again in {RETRY_AFTER_S} s"},
                                status_code=503, headers={"retry-after": str(RETRY_AFTER_S)})

    return RequestGuard(app, max_bytes, max_pending=max_pending, body_timeout=body_timeout,
                        min_body_rate=min_body_rate, body_grace=body_grace)
