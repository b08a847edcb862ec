"""Running the drawing page: checks that fail early with one line (limits, a taken port), then uvicorn.

The module itself is light (no torch, FastAPI or uvicorn at import): its defaults and checks are
used by the command line's parser, which answers ``--help`` and argument errors without them;
:func:`run_server` imports the app when it builds it.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path

from cnnlab import output
from cnnlab.errors import CnnlabError, printable
from cnnlab.imagelimits import DEFAULT_MAX_PIXELS, max_file_bytes, open_file_limit
from cnnlab.serve import CANVAS_SIDE, DEFAULT_MAX_BYTES, MIN_SERVE_PIXELS

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8000
#: The smallest ``--max-upload-bytes``: the largest upload the page can send. It sends its canvas as a PNG in a form:
#: in headless Chromium a digit is 4.8 KB, a canvas scribbled black all over 11.8 KB at most, and no PNG of the
#: canvas can be larger than its pixels stored uncompressed, 280 rows of 1 + 4 x 280 bytes = 313,880 (random
#: noise in every channel, which no pen draws, came to 315,150 with the PNG's chunks), plus the form's ~200 bytes.
#: (It was 1024: the page's own drawings got 413.)
MIN_UPLOAD_BYTES = 320 * 1024
#: Connections the listening socket queues before they are accepted (uvicorn's default, which it sets again).
LISTEN_BACKLOG = 2048
#: The serving device: one image per request, which a CPU answers in milliseconds.
DEFAULT_DEVICE = "cpu"
#: Connections open at once, at most, where ``ulimit -n`` allows (:func:`connection_budget`); one more is answered 503.
MAX_CONNECTIONS = 512
#: File descriptors kept for the server's own use besides its connections: the page's files as they are sent,
#: Pillow's format modules (opened on the first upload of each format), the event loop's, a spare one.
FD_RESERVE = 32


def bind_socket(host: str, port: int, listen: bool = True) -> socket.socket:
    """The server's listening socket, bound and listening here (before the net loads) and handed to uvicorn: a taken
    port is one line, not uvicorn's log and exit after the net's seconds of loading, and no other process can take
    the port between the server's bind and its start; connections that come before uvicorn runs wait in its queue
    (``listen=False``: bound only, as :func:`check_serving` tries it). Port 0 binds a free port, which the caller
    reads from the socket (it printed ``:0``, the port it asked for)."""
    if not 0 <= port <= 65535:
        raise CnnlabError(f"--port must be in 0..65535, got {port}")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        if listen:  # now: a second server bound to the port before either listened took it too
            sock.listen(LISTEN_BACKLOG)
    except OSError as err:
        sock.close()
        why = err.strerror or str(err)  # a host that does not resolve is a gaierror, with its own text
        where = f"{shown_host(host)}:{port}"
        raise CnnlabError(f"cannot listen on {where} ({why}); pick another --port or --host") from None
    return sock


def shown_host(host: str) -> str:
    """``host`` as it goes before ``:PORT`` (an IPv6 address in brackets: ``[::]:8000``)."""
    return f"[{host}]" if ":" in host else host


def check_host(host: str) -> str:
    """``host`` as it is bound: an IPv6 address in brackets, as URLs write it (``[::1]``), without them (it was
    looked up as a name: ``Name or service not known``). Refused: an empty host (it bound every address, 0.0.0.0,
    and printed ``http://:8000/``), spaces around it (the lookup's error did not show them), a port in it or a URL
    (:func:`_ported`: it was taken for an IPv6 address, ``[0.0.0.0:8080]:8000``), stray brackets."""
    if not host.strip():
        raise CnnlabError(f"--host {host!r} is empty (it would bind every address, reachable from other machines); "
                          "give an address such as 127.0.0.1 (this machine only) or 0.0.0.0 (every address)")
    if host != host.strip():
        raise CnnlabError(f"--host {host!r} has spaces around the address; give --host {host.strip()!r}")
    if (refusal := _ported(host)) is not None:
        raise CnnlabError(refusal)
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if "[" in bare or "]" in bare or not bare.strip() or bare != bare.strip():
        raise CnnlabError(f"--host {host!r} is not an address or a host name; give an IPv6 address without "
                          "brackets (--host ::1) or an IPv4 address (--host 127.0.0.1)")
    return bare


def _split_port(netloc: str) -> tuple[str, str] | None:
    """``(address, port)`` of a host followed by a port as a URL writes them (``0.0.0.0:8080``, ``[::1]:8080``, and
    ``::1:99999``, no IPv6 address, as ``::1`` and its port); None where ``netloc`` is an address or host name alone (an
    IPv6 address's colons are its own: ``fe80::1:8080`` is an address, as :func:`ipaddress.ip_address` reads it)."""
    if netloc.startswith("[") and "]:" in netloc:
        address, _, port = netloc[1:].partition("]:")
        return (address, port) if port.isdigit() else None
    address, sep, port = netloc.rpartition(":")
    if not sep or not address or not port.isdigit() or _is_address(netloc):
        return None
    return (address, port) if ":" not in address or _is_address(address) else None


def _is_address(text: str) -> bool:
    """Whether ``text`` is an IP address (an IPv6 one with its scope too: ``fe80::1%eth0``)."""
    try:
        ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return False
    return True


def _ported(host: str) -> str | None:
    """Why ``--host`` is refused when it holds a port (``0.0.0.0:8080``: it was looked up as a name, bracketed as an
    IPv6 address, and the port asked for ignored) or is a URL (``http://127.0.0.1:8000/``), with the flags it means;
    None for anything else."""
    scheme, sep, rest = host.partition("://")
    if sep:
        netloc = rest.split("/", 1)[0].split("?", 1)[0].rsplit("@", 1)[-1]
        address, port = _split_port(netloc) or (netloc.removeprefix("[").removesuffix("]"), "")
        address = printable(address) if address else DEFAULT_HOST
        return (f"--host {host!r} is a URL; give the address alone: --host {address}"
                + (f" --port {port}" if port else ""))
    split = _split_port(host)
    if split is None:
        return None
    return f"--host {host!r} holds a port; give --host {printable(split[0])} --port {split[1]}"


def _open_descriptors() -> int | None:
    """How many file descriptors this process has open (None where the system does not list them)."""
    for folder in ("/proc/self/fd", "/dev/fd"):
        try:
            return len(os.listdir(folder))
        except OSError:
            continue
    return None


def connection_budget(wanted: int = MAX_CONNECTIONS) -> tuple[int, int | None, str | None]:
    """``(connections, refusals, note)``: how many connections the server holds at once, ``wanted`` or fewer where the
    open-file limit would run out first (each connection is a file descriptor, and the server needs
    :data:`FD_RESERVE` more); how many refused connections may linger at once (half the reserve at most; None: the
    protocol's default); and a warning to print when it holds fewer than ``wanted``."""
    soft, used = open_file_limit(), _open_descriptors()  # the limit: None where there is none (or no POSIX)
    if soft is None or used is None:
        return wanted, None, None
    free = soft - used
    reserve = min(FD_RESERVE, free // 2)
    taken = max(1, min(wanted, free - reserve))
    refusals = max(0, reserve // 2)
    if taken >= wanted:
        return wanted, refusals, None
    return taken, refusals, (f"this process may open {soft:,} files (ulimit -n) and has {used} open, so the server "
                             f"holds at most {taken} connections at once (one file each; one more is answered 503); "
                             f"raise the limit (ulimit -n {max(4096, used + wanted + FD_RESERVE)}) to hold {wanted}")


def _say(msg: str) -> None:
    """A line of the server's on stdout (:func:`cnnlab.output.say`): nothing, and no error, where it can no longer be
    written (its reader gone: ``serve RUN | head -1``; a full disk), so that the request in which a reload says so is
    answered as any other (a bare ``print`` made it uvicorn's plain-text 500 and a 90-line traceback)."""
    output.say(msg)


def _warn(msg: str) -> None:
    """A warning of the server's on stderr (:func:`cnnlab.output.complain`: nothing where stderr cannot be written)."""
    output.complain(f"cnnlab: warning: {msg}")


def make_server(app, *, max_connections: int | None = None, head_timeout: float | None = None,
                grace: float | None = None, log: Callable[[str], None] = _say, warn: Callable[[str], None] | None = None):
    """The ``uvicorn.Server`` that serves ``app``, as the command runs it (the tests run this one too).

    - uvicorn logs at level ERROR: it logs a WARNING line for each request it cannot parse (``Invalid HTTP request
      received.``) and for each ``Upgrade`` header (``Unsupported upgrade request.``, and a line asking to install
      a WebSocket library), so any client could write into the server's log (as ``python_multipart`` could, below);
    - its HTTP protocol answers a request it cannot parse in the app's JSON shape, gives a request's head
      ``head_timeout`` seconds, holds at most ``max_connections`` connections (by default
      :data:`MAX_CONNECTIONS`, or fewer as ``ulimit -n`` allows: :func:`connection_budget`, whose note ``warn``
      prints) and closes a connection whose client still sends only after it has read the answer
      (:mod:`cnnlab.serve.protocol`);
    - its server stops on Ctrl+C within ``grace`` seconds, saying so through ``log`` when requests are being
      answered, and warns through ``warn`` (at most once a minute) when connections cannot be accepted;
    - the asyncio event loop, whatever else is installed (the protocol's bounds are measured on it);
    - no WebSockets (the app serves none; an ``Upgrade`` request is answered as plain HTTP, whatever is installed);
    - no lifespan: the app has no start-up or shut-down hooks, and a Ctrl+C in its start-up logged a traceback.
    """
    import uvicorn  # uvicorn and h11: only where a server starts

    from cnnlab.serve import protocol

    warn = warn or _warn
    refusals = None
    if max_connections is None:
        max_connections, refusals, note = connection_budget()
        if note:
            warn(note)
    limits = protocol.Limits(max_connections, protocol.HEAD_TIMEOUT if head_timeout is None else head_timeout,
                             protocol.LINGER_BYTES, protocol.LINGER_S, protocol.LINGER_IDLE_S,
                             protocol.LINGERING_REFUSALS if refusals is None else min(refusals, protocol.LINGERING_REFUSALS))
    config = uvicorn.Config(app, http=functools.partial(protocol.JsonErrorsProtocol, limits=limits), ws="none",
                            lifespan="off", log_level="error", loop="asyncio")
    return protocol.CnnlabServer(config, limits, grace=protocol.GRACE_S if grace is None else grace, log=log, warn=warn)


def serve_forever(app, sock: socket.socket) -> None:
    """uvicorn on the bound socket until Ctrl+C (a graceful stop: :func:`make_server`)."""
    try:
        make_server(app).run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn raises the Ctrl+C again once it has stopped
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


def is_loopback(address: str) -> bool:
    """Whether a socket bound to ``address`` (as ``getsockname()`` gives it: ``127.1`` resolved is ``127.0.0.1``) is
    reachable from this machine only; an IPv4-mapped IPv6 address (``::ffff:127.0.0.1``) is its IPv4 address."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])  # an IPv6 scope (fe80::1%eth0) is not part of it
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def check_serving(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, *, max_bytes: int = DEFAULT_MAX_BYTES,
                  max_pixels: int = DEFAULT_MAX_PIXELS) -> str:
    """The checks that fail early with one line, without torch: the host (returned as it is bound), the limits, and
    the port, bound and let go at once (the command line asks before torch's import, ~3-5 s, and :func:`run_server`
    binds it again, before the net loads: a server that took it meanwhile is refused there)."""
    host = check_host(host)
    check_pixel_limit(max_pixels)
    check_upload_limit(max_bytes, max_pixels)
    bind_socket(host, port, listen=False).close()
    return host


def run_server(
    run: str | Path | None = None,
    *,
    model: str = "resnet",
    dataset: str = "mnist",
    which: str | None = None,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    device: str = DEFAULT_DEVICE,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    log: Callable[[str], None] = _say,
    warn: Callable[[str], None] = _warn,
) -> None:
    """Serve the page and ``POST /predict`` for the run (directory or ``.pt``) ``run``, or without one for the
    shipped weights of ``model`` on ``dataset``, until Ctrl+C.

    ``max_bytes`` bounds a request's body, ``max_pixels`` an image's width x height (checked before decoding);
    the other bounds (decodes and uploads at once, body time) are :func:`cnnlab.serve.app.create_app`'s defaults.
    """
    host = check_serving(host, port, max_bytes=max_bytes, max_pixels=max_pixels)  # before the imports and the net
    # bound and listening before the net loads (its seconds): clients that come meanwhile wait in the socket's queue
    with bind_socket(host, port) as sock:
        # FastAPI and torch (through the predictor), and uvicorn: only when a server really starts
        from cnnlab.imageio import check_max_pixels
        from cnnlab.predict import Predictor, checkpoint_line
        from cnnlab.serve.app import create_app

        check_max_pixels(max_pixels, "--max-pixels")  # named as typed (the API's callers see max_pixels)
        if run is None:
            predictor = Predictor.pretrained(model, dataset, device=device, max_pixels=max_pixels)
        else:
            predictor = Predictor.from_run(run, which=which, device=device, max_pixels=max_pixels)
        app = create_app(predictor, max_bytes=max_bytes, say=log, warn=warn)
        if not is_loopback(sock.getsockname()[0]):  # the address bound (127.1 and localhost resolved), not as typed
            warn(f"serving on {host}, reachable from other machines; there is no authentication")
        url = f"http://{shown_host(host)}:{sock.getsockname()[1]}/"
        again = "; loaded again when the file changes" if predictor.stamp is not None else ""
        log(printable(f"serving {predictor.model_name} from {predictor.source} ({checkpoint_line(predictor.checkpoint)}"
                      f"{again}) on {url}  (Ctrl+C stops)"))  # a run folder's name escaped: a newline or a terminal
        # escape in it stays one line, inert
        # the multipart parser logs a WARNING line for each malformed form a client sends; the client gets a 400
        logging.getLogger("python_multipart").setLevel(logging.ERROR)
        serve_forever(app, sock)  # its lines (a Ctrl+C's wait, no file left to accept with): stdout and stderr
