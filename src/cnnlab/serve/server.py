"""Running the drawing page: checks that fail early with one line (limits, a taken port), then uvicorn.

The module itself is light (no torch, FastAPI or uvicorn at import): its defaults and checks are
used by the command line's parser, which answers ``--help`` and argument errors without them;
:func:`run_server` imports the app when it builds it.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import sys
from collections.abc import Callable
from pathlib import Path

from cnnlab.errors import CnnlabError
from cnnlab.imagelimits import DEFAULT_MAX_PIXELS, max_file_bytes
from cnnlab.runs import DEFAULT_CHECKPOINT
from cnnlab.serve import CANVAS_SIDE, DEFAULT_MAX_BYTES, MIN_SERVE_PIXELS

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8000
#: The smallest ``--max-upload-bytes``: the largest upload the page can send. It sends its canvas as a PNG in a form:
#: in headless Chromium a digit is 4.8 KB, a canvas scribbled black all over 11.8 KB at most, and no PNG of the
#: canvas can be larger than its pixels stored uncompressed, 280 rows of 1 + 4 x 280 bytes = 313,880 (random
#: noise in every channel, which no pen draws, came to 315,150 with the PNG's chunks), plus the form's ~200 bytes.
#: (It was 1024: the page's own drawings got 413.)
MIN_UPLOAD_BYTES = 320 * 1024
#: The serving device: one image per request, which a CPU answers in milliseconds.
DEFAULT_DEVICE = "cpu"


def bind_socket(host: str, port: int) -> socket.socket:
    """The server's listening socket, bound here and handed to uvicorn: a taken port is one line, not uvicorn's log
    and exit, and no other process can take the port between a check and the server's own bind. Port 0 binds a
    free port, which the caller reads from the socket (it printed ``:0``, the port it asked for)."""
    if not 0 <= port <= 65535:
        raise CnnlabError(f"--port must be in 0..65535, got {port}")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        why = err.strerror or str(err)  # a host that does not resolve is a gaierror, with its own text
        raise CnnlabError(f"cannot listen on {host}:{port} ({why}); pick another --port or --host") from None
    return sock


def make_server(app):
    """The ``uvicorn.Server`` that serves ``app``, as the command runs it (the tests run this one too).

    - uvicorn logs at level ERROR: it logs a WARNING line for each request it cannot parse (``Invalid HTTP request
      received.``) and for each ``Upgrade`` header (``Unsupported upgrade request.``, and a line asking to install
      a WebSocket library), so any client could write into the server's log (as ``python_multipart`` could, below);
    - its HTTP protocol answers a request it cannot parse in the app's JSON shape (:mod:`cnnlab.serve.protocol`);
    - no WebSockets (the app serves none; an ``Upgrade`` request is answered as plain HTTP, whatever is installed);
    - no lifespan: the app has no start-up or shut-down hooks, and a Ctrl+C in its start-up logged a traceback.
    """
    import uvicorn  # uvicorn and h11: only where a server starts

    from cnnlab.serve.protocol import JsonErrorsProtocol

    return uvicorn.Server(uvicorn.Config(app, http=JsonErrorsProtocol, ws="none", lifespan="off", log_level="error"))


def serve_forever(app, sock: socket.socket) -> None:
    """uvicorn on the bound socket until Ctrl+C (which uvicorn turns into a graceful shutdown)."""
    try:
        make_server(app).run(sockets=[sock])
    except KeyboardInterrupt:  # a second Ctrl+C during the shutdown
        pass


def check_upload_limit(max_bytes: int, max_pixels: int) -> None:
    """The request body limit: at least the page's own canvas, at most what the largest image within
    ``max_pixels`` can be stored in (a larger limit only lets a client make the server hold more memory: each
    upload in progress may hold twice its body)."""
    most = max_file_bytes(max_pixels)  # what predict reads of a file at most, by the same rule
    if max_bytes < MIN_UPLOAD_BYTES:
        raise CnnlabError(f"--max-upload-bytes must be at least {MIN_UPLOAD_BYTES:,} (the drawing page sends its "
                          f"{CANVAS_SIDE}x{CANVAS_SIDE} canvas as a PNG of up to about 315,000 bytes), got "
                          f"{max_bytes:,}")
    if max_bytes > most:
        raise CnnlabError(f"--max-upload-bytes {max_bytes:,} is more than any image within --max-pixels {max_pixels:,} "
                          f"can take ({most:,} bytes: 8 a pixel and 16 MiB of metadata), and each upload in progress "
                          f"may hold twice its limit; give at most {most:,}")


def check_pixel_limit(max_pixels: int) -> None:
    """Serve's pixel cap: at least the page's canvas, or the page's every drawing would be refused (400)."""
    if max_pixels < MIN_SERVE_PIXELS:
        raise CnnlabError(f"--max-pixels {max_pixels:,} is below the drawing page's {CANVAS_SIDE}x{CANVAS_SIDE} "
                          f"canvas ({MIN_SERVE_PIXELS:,} pixels), so its every drawing would be refused; give serve "
                          f"at least {MIN_SERVE_PIXELS:,}")


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _warn(msg: str) -> None:
    print(f"cnnlab: warning: {msg}", file=sys.stderr)


def run_server(
    run: str | Path | None = None,
    *,
    model: str = "resnet",
    dataset: str = "mnist",
    which: str = DEFAULT_CHECKPOINT,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    device: str = DEFAULT_DEVICE,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    log: Callable[[str], None] = lambda msg: print(msg, flush=True),
    warn: Callable[[str], None] = _warn,
) -> None:
    """Serve the page and ``POST /predict`` for the run (directory or ``.pt``) ``run``, or without one for the
    shipped weights of ``model`` on ``dataset``, until Ctrl+C.

    ``max_bytes`` bounds a request's body, ``max_pixels`` an image's width x height (checked before decoding);
    the other bounds (decodes and uploads at once, body time) are :func:`cnnlab.serve.app.create_app`'s defaults.
    """
    check_pixel_limit(max_pixels)  # before the imports' seconds: a bad limit answers at once
    check_upload_limit(max_bytes, max_pixels)
    # FastAPI and torch (through the predictor), and uvicorn: only when a server really starts
    from cnnlab.predict import Predictor
    from cnnlab.serve.app import create_app

    if run is None:
        predictor = Predictor.pretrained(model, dataset, device=device, max_pixels=max_pixels)
    else:
        predictor = Predictor.from_run(run, which=which, device=device, max_pixels=max_pixels)
    app = create_app(predictor, max_bytes=max_bytes)
    with bind_socket(host, port) as sock:
        if not is_loopback(host):
            warn(f"serving on {host}, reachable from other machines; there is no authentication")
        shown = f"[{host}]" if ":" in host else host
        log(f"serving {predictor.model_name} from {predictor.source} on http://{shown}:{sock.getsockname()[1]}/  "
            "(Ctrl+C stops)")
        # the multipart parser logs a WARNING line for each malformed form a client sends; the client gets a 400
        logging.getLogger("python_multipart").setLevel(logging.ERROR)
        serve_forever(app, sock)
