"""cnnlab serve against clients that hold connections, send more than it takes, or catch it stopping (2026-12 report):
a time limit on request heads, a cap on connections below the open-file limit, one quiet warning when accept()
fails, the 413 delivered to clients that send everything before reading, and a prompt Ctrl+C without a traceback.

Servers run on 127.0.0.1 only, in a thread (``make_server``, as the command builds it) or as ``cnnlab serve`` in a
subprocess (for ``ulimit -n`` and Ctrl+C), each bounded in requests and time.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

import cnnlab
from apps_helpers import draw_digit, tiny_checkpoint
from cnnlab.predict import Predictor
from test_serve import Server, _read_response, png, post

pytest.importorskip("uvicorn")
pytest.importorskip("fastapi")

MAX_BYTES = 64 * 1024
HALF_HEAD = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Ty"  # the tester's: the head stops halfway


class Served(Server):
    """test_serve's server, with ``make_server``'s options, and raw connections to it."""

    def connect(self, data: bytes = b"", timeout: float = 30) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        if data:
            sock.sendall(data)
        return sock


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    from cnnlab.serve.app import create_app

    ckpt = tiny_checkpoint(tmp_path_factory.mktemp("faults") / "last.pt")
    return create_app(Predictor.from_run(ckpt, device="cpu"), max_bytes=MAX_BYTES)


def _closed_within(sock: socket.socket, seconds: float) -> tuple[bytes, float]:
    """What ``sock`` receives until the server closes it (at most ``seconds``), and when it closed."""
    start, got = time.monotonic(), b""
    sock.settimeout(seconds)
    while True:
        try:
            more = sock.recv(65536)
        except ConnectionResetError:
            more = b""
        if not more:
            return got, time.monotonic() - start
        got += more


def _json_error(answer: bytes) -> tuple[int, str]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)["error"]


# ----------------------------------------------------------------------------- 1. heads, idle connections, the cap


def test_a_head_that_stops_halfway_is_408_and_a_silent_connection_is_closed(app):
    """A connection that sent half a request's head was held forever (only bodies had a time limit): now 408 in the
    app's shape after ``head_timeout``; one that sends nothing is closed without a word; the clock starts again
    for the next request on a kept-alive connection."""
    with Served(app, head_timeout=1.0) as srv:
        half, silent, kept = srv.connect(HALF_HEAD), srv.connect(), srv.connect()
        kept.sendall(b"GET /info HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _read_response(kept)[0] == 200
        kept.sendall(b"GET /info HTTP/1.1\r\nHo")  # the next request's head stops too
        answer, after = _closed_within(half, 10)
        assert after < 5
        status, error = _json_error(answer)
        assert status == 408 and error == "the request's headers did not arrive within 1 s; send them at once"
        assert _closed_within(silent, 10)[0] == b""
        assert _json_error(_closed_within(kept, 10)[0])[0] == 408
        assert post(srv.url, png(draw_digit()))[0] == 200  # a request sent at once is served as ever
        for sock in (half, silent, kept):
            sock.close()


def test_connections_over_the_cap_are_answered_503_at_once(app):
    lines: list[str] = []
    with Served(app, max_connections=4, head_timeout=2.0, log=lines.append, warn=lines.append) as srv:
        held = [srv.connect(HALF_HEAD) for _ in range(4)]
        time.sleep(0.3)
        status, headers, body = _read_response(srv.connect(b"GET /info HTTP/1.1\r\nHost: x\r\n\r\n", timeout=5))
        assert status == 503 and headers["retry-after"] == "1" and headers["content-type"] == "application/json"
        assert json.loads(body)["error"] == "the server has as many connections open as it takes (4); retry in 1 s"
        for sock in held:  # their heads time out and free the places
            assert _json_error(_closed_within(sock, 10)[0])[0] == 408
            sock.close()
        assert post(srv.url, png(draw_digit()))[0] == 200
    assert lines == []


def _cnnlab_src() -> str:
    return str(Path(cnnlab.__file__).resolve().parents[1])


class serve_command:
    """``cnnlab serve CKPT --port 0`` in a subprocess (optionally under ``ulimit -n nofile``), its output in a file
    (a server writing thousands of lines a second cannot block on a pipe); ``self.port`` once it listens."""

    def __init__(self, tmp_path: Path, nofile: int | None = None):
        self.out_path = tmp_path / "serve.out"
        ckpt = tiny_checkpoint(tmp_path / "last.pt")
        env = {**os.environ, "OMP_NUM_THREADS": "1",
               "PYTHONPATH": os.pathsep.join([_cnnlab_src(), os.environ.get("PYTHONPATH", "")])}
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        limit = (lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, hard))) if nofile else None
        with open(self.out_path, "w") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "cnnlab", "serve", str(ckpt), "--port", "0"],
                                         stdout=out, stderr=subprocess.STDOUT, env=env, preexec_fn=limit)

    def output(self) -> str:
        return self.out_path.read_text(errors="replace")

    def __enter__(self):
        deadline = time.monotonic() + 60
        while not (found := re.search(r"on http://127\.0\.0\.1:(\d+)/", self.output())):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                pytest.fail(f"cnnlab serve did not start: {self.output()[:2000]}")
            time.sleep(0.1)
        self.port = int(found.group(1))
        while True:  # the line comes just before uvicorn listens
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=5).close()
                return self
            except ConnectionRefusedError:
                assert time.monotonic() < deadline, "cnnlab serve does not listen"
                time.sleep(0.05)

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)

    def get_info(self, timeout: float = 5) -> tuple[int | str, bytes]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/info", timeout=timeout) as res:
                return res.status, res.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()
        except OSError as err:
            return type(err).__name__, b""


def test_half_sent_heads_under_a_low_open_file_limit_neither_stall_the_server_nor_flood_its_log(tmp_path):
    """The tester's: ``ulimit -n 64`` and 60 connections that each sent half a head. The server stopped answering
    (a GET timed out), and asyncio wrote ~70,000 lines of ``socket.accept() out of system resource`` tracebacks
    a second. Now the server holds what its limit allows, answers the rest 503 at once, says so in at most a
    couple of lines, and after the head timeout (10 s) answers again."""
    with serve_command(tmp_path, nofile=64) as served:
        held = []
        for _ in range(60):
            held.append(socket.create_connection(("127.0.0.1", served.port), timeout=30))
            held[-1].sendall(HALF_HEAD)
        time.sleep(1.0)
        status, body = served.get_info()
        # an answer, not a stall: 503 at the cap (or 200 where the server had not yet accepted every half head: the
        # order in which a loaded machine accepts them; the cap's 503 itself: test_connections_over_the_cap_...)
        assert status in (200, 503), (status, body)
        assert status == 200 or "as many connections open as it takes" in json.loads(body)["error"], body
        time.sleep(1.0)
        lines = served.output().splitlines()
        assert len(lines) <= 3 and "Traceback" not in served.output(), lines[:20]
        assert "so the server holds at most" in lines[1] and "raise the limit (ulimit -n 4096)" in lines[1]
        answers = [_closed_within(sock, 15)[0] for sock in held]
        assert sum(a.startswith(b"HTTP/1.1 408") for a in answers) >= 10  # the ones it held, at 10 s
        assert {a.split(b"\r\n")[0] for a in answers} <= {b"HTTP/1.1 408 Request Timeout", b"HTTP/1.1 503 Service Unavailable"}
        for sock in held:
            sock.close()
        assert served.get_info()[0] == 200
        assert len(served.output().splitlines()) <= 3


ACCEPT_SCRIPT = """
import resource, socket, sys, time
sys.path.insert(0, {tests!r})
from apps_helpers import tiny_checkpoint
from cnnlab.predict import Predictor
from cnnlab.serve.app import create_app
from cnnlab.serve.server import make_server
app = create_app(Predictor.from_run(tiny_checkpoint(__import__("pathlib").Path({ckpt!r})), device="cpu"))
resource.setrlimit(resource.RLIMIT_NOFILE, (48, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
sock = socket.socket()
sock.bind(("127.0.0.1", 0))
print("port", sock.getsockname()[1], flush=True)
try:  # a cap the descriptors cannot reach
    server = make_server(app, max_connections=10_000, head_timeout=60)
except TypeError:  # make_server took no options before the cap existed: the server as it was
    server = make_server(app)
server.run(sockets=[sock])
"""


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_accept_out_of_descriptors_is_one_warning_line_and_503s_not_a_spinning_traceback(tmp_path):
    """When ``accept()`` itself fails for lack of descriptors (here the cap is set above what ``ulimit -n 48`` allows),
    asyncio logged a traceback per try, 2,048 tries a turn, and re-armed itself as many times: hundreds of
    thousands of lines and a busy core. Now one warning line, the waiting connections answered 503, little CPU."""
    if not Path("/proc/self/stat").is_file():
        pytest.skip("needs /proc to read the server's CPU time")
    script = ACCEPT_SCRIPT.format(tests=str(Path(__file__).parent), ckpt=str(tmp_path / "last.pt"))
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([_cnnlab_src(), os.environ.get("PYTHONPATH", "")])}
    err_path = tmp_path / "stderr"
    with open(err_path, "w") as err:
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=err, text=True, env=env)
    held = []
    try:
        port = int(proc.stdout.readline().split()[1])
        deadline = time.monotonic() + 30
        for _ in range(80):
            while True:
                try:
                    held.append(socket.create_connection(("127.0.0.1", port), timeout=30))
                    break
                except ConnectionRefusedError:  # not listening yet
                    assert time.monotonic() < deadline
                    time.sleep(0.05)
        time.sleep(1.5)
        cpu = _cpu_seconds(proc.pid)
        time.sleep(3)
        spent = _cpu_seconds(proc.pid) - cpu
        refused = 0
        for sock in held:
            sock.settimeout(0.2)
            try:
                refused += sock.recv(100).startswith(b"HTTP/1.1 503 Service Unavailable")
            except OSError:
                pass
        lines = err_path.read_text(errors="replace").splitlines()
    finally:
        for sock in held:
            sock.close()
        proc.kill()
        proc.wait(10)
    assert len(lines) == 1, lines[:10]
    assert lines[0].startswith("cnnlab: warning: cannot accept a connection: too many open files (this process may "
                               "open 48: ulimit -n); raise the limit (ulimit -n 4096); connections are answered 503")
    assert refused >= 10
    assert spent < 1.0, f"the server spent {spent:.2f} s of CPU in 3 s while out of descriptors"


# ----------------------------------------------------------------------------- 2. the 413 reaches every client


BIG = os.urandom(6_000_000)  # far over the limit (64 KiB) and over the 1 MiB the guard reads before answering


def _urllib(url: str, data: bytes) -> tuple[int, bytes]:
    req = urllib.request.Request(url + "/predict", data=data, headers={"Content-Type": "image/jpeg"})
    try:
        with urllib.request.urlopen(req, timeout=30) as res:
            return res.status, res.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def _http_client(url: str, data: bytes) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(*url.split("//")[1].split(":"), timeout=30)
    try:
        conn.request("POST", "/predict", body=data, headers={"Content-Type": "image/jpeg"})
        res = conn.getresponse()
        return res.status, res.read()
    finally:
        conn.close()


def _curl(url: str, data: bytes, tmp_path: Path, chunked: bool) -> tuple[int, bytes]:
    path = tmp_path / "big.jpg"
    path.write_bytes(data)
    command = ["curl", "-sS", "-m", "30", "-o", "-", "-w", "\n%{http_code}", "-H", "Content-Type: image/jpeg",
               "--data-binary", f"@{path}", url + "/predict"]
    if chunked:
        command[1:1] = ["-H", "Transfer-Encoding: chunked"]
    done = subprocess.run(command, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    body, _, code = done.stdout.rpartition(b"\n")
    return int(code), body


@pytest.mark.parametrize("client", ["urllib", "http.client", "curl", "curl chunked"])
def test_an_upload_far_over_the_limit_gets_the_413_from_any_client(app, client, tmp_path):
    """An upload more than DRAIN_BYTES over the limit was refused and the connection closed at once: urllib and
    http.client, which send the whole body before reading, got ``Broken pipe`` / ``Connection reset by peer``, and
    curl sometimes the status line without the JSON. Now each reads the 413 and its message."""
    if client.startswith("curl") and not shutil.which("curl"):
        pytest.skip("curl is not installed")
    with Served(app) as srv:
        for _ in range(2):
            if client == "urllib":
                status, body = _urllib(srv.url, BIG)
            elif client == "http.client":
                status, body = _http_client(srv.url, BIG)
            else:
                status, body = _curl(srv.url, BIG, tmp_path, chunked=client.endswith("chunked"))
            assert status == 413, (status, body[:200])
            assert json.loads(body)["error"] == "request body over the limit of 65,536 bytes; send a smaller image"
        assert post(srv.url, png(draw_digit()))[0] == 200


def test_the_rest_of_a_refused_body_is_read_only_within_bounds(app, monkeypatch):
    """After the 413 the server reads the rest of the body and drops it, but not forever: a client that stops sending
    is closed after LINGER_IDLE_S, and one that sends more than LINGER_BYTES is cut off there."""
    from cnnlab.serve import protocol

    monkeypatch.setattr(protocol, "LINGER_IDLE_S", 1.0)
    monkeypatch.setattr(protocol, "LINGER_BYTES", 4 * 1024 * 1024)
    head = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: %d\r\n\r\n"
    with Served(app) as srv:
        quiet = srv.connect(head % 10**9 + b"a" * 100_000)  # then nothing more
        answer, after = _closed_within(quiet, 10)
        assert _json_error(answer)[0] == 413 and after < 5
        endless = srv.connect(head % 10**9)
        sent = 0
        with pytest.raises(OSError):  # reset (or a broken pipe) once the server stops reading
            while sent < 64 * 1024 * 1024:
                endless.sendall(b"a" * 65536)
                sent += 65536
        assert sent < 32 * 1024 * 1024
        for sock in (quiet, endless):
            sock.close()
        assert post(srv.url, png(draw_digit()))[0] == 200


# ----------------------------------------------------------------------------- 3. Ctrl+C


def _stop_during_an_upload(tmp_path, signals: int) -> tuple[float, str, bytes]:
    """``cnnlab serve``; a client sends a head and 1,000 of 50,000 bytes, then waits; ``signals`` Ctrl+Cs, a second
    after the first. Returns the seconds to exit, the output, and what the client got."""
    with serve_command(tmp_path) as served:
        client = socket.create_connection(("127.0.0.1", served.port), timeout=30)
        client.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 50000\r\n\r\n"
                       + b"a" * 1000)
        time.sleep(0.5)
        start = time.monotonic()
        served.proc.send_signal(signal.SIGINT)
        if signals == 2:
            time.sleep(1.0)
            served.proc.send_signal(signal.SIGINT)
        try:
            served.proc.wait(15)
        except subprocess.TimeoutExpired:
            pass
        took = time.monotonic() - start
        got = _closed_within(client, 5)[0]
        client.close()
        return took, served.output(), got


@pytest.mark.parametrize("signals", [1, 2])
def test_ctrl_c_during_an_upload_stops_promptly_and_answers_in_the_apps_shape(tmp_path, signals):
    """One Ctrl+C stopped the server only when the stalled upload's 408 fired (~28 s), printing nothing; a second
    one printed a 46-line traceback and the client got ``500 Internal Server Error`` in plain text. Now the first
    says that it waits (3 s at most) and that Ctrl+C again stops at once; either way no traceback, and a 503 JSON."""
    took, output, got = _stop_during_an_upload(tmp_path, signals)
    assert took < (6 if signals == 1 else 3), f"stopped after {took:.1f} s: {output}"
    lines = output.splitlines()
    assert "Traceback" not in output and "ERROR" not in output, output
    assert lines[1:] == ["stopping: waiting up to 3 s for 1 request being answered (Ctrl+C again stops at once)"]
    status, error = _json_error(got)
    assert status == 503 and error == "the server is stopping; retry once it is started again"


def test_ctrl_c_with_nothing_being_answered_stops_at_once_without_a_word(tmp_path):
    with serve_command(tmp_path) as served:
        assert served.get_info()[0] == 200
        idle = socket.create_connection(("127.0.0.1", served.port), timeout=30)  # a connection, no request
        start = time.monotonic()
        served.proc.send_signal(signal.SIGINT)
        served.proc.wait(15)
        took = time.monotonic() - start
        idle.close()
        assert took < 2 and served.output().splitlines()[1:] == []


# ----------------------------------------------------------------------------- 4. the server short of files or memory


@pytest.mark.parametrize("raised, short_of", [(OSError(24, "Too many open files"), "too many open files"),
                                              (OSError(23, "Too many open files in system"), "too many open files"),
                                              (MemoryError(), "out of memory")])
def test_a_server_short_of_files_or_memory_while_decoding_answers_503_busy(app, monkeypatch, raised, short_of):
    """With ``ulimit -n 20`` and 30 uploads at once, valid PNGs were answered 400 "damaged or truncated image
    ([Errno 24] Too many open files: '.../PIL/BmpImagePlugin.py'); re-save or re-export the file": Pillow opens its
    format modules on first use. The machine's shortage is the server's problem: 503, try again."""
    from PIL import Image

    def short(*args, **kwargs):
        raise raised

    with Served(app) as srv:
        monkeypatch.setattr(Image, "open", short)
        req = urllib.request.Request(srv.url + "/predict", data=png(draw_digit()), headers={"Content-Type": "image/png"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(req, timeout=30)
        assert refused.value.code == 503 and refused.value.headers["retry-after"] == "1"
        assert json.loads(refused.value.read()) == {"error": f"the server is busy ({short_of} now); try again in 1 s"}
        monkeypatch.undo()
        assert post(srv.url, png(draw_digit()))[0] == 200


def test_a_server_short_of_files_anywhere_in_a_prediction_answers_503_not_500(app, monkeypatch):
    """Under ``ulimit -n 20`` numpy's first ``np.median`` imports ``numpy.ma`` in the preprocessing, outside the image
    decoder: that OSError was a 500 in plain text and a traceback in the server's log. Now 503 like the rest."""
    def short(self, *args, **kwargs):
        raise OSError(24, "Too many open files", ".../numpy/ma/extras.py")

    with Served(app) as srv:
        monkeypatch.setattr(Predictor, "prepared", short)
        req = urllib.request.Request(srv.url + "/predict", data=png(draw_digit()), headers={"Content-Type": "image/png"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(req, timeout=30)
        assert refused.value.code == 503
        assert json.loads(refused.value.read()) == {"error": "the server is busy (too many open files now); try again in 1 s"}
