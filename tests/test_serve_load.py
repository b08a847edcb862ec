"""cnnlab serve against a tester's second round (2026-12): branch energies under load, a client that resets before
the half-close, empty and loopback hosts, absolute-form targets, slow uploaders holding every upload slot, and half
a head that came with the request before it.

Servers run on 127.0.0.1 only, in a thread (``make_server``, as the command builds it), each bounded in time.
"""

from __future__ import annotations

import errno
import json
import logging
import socket
import threading
import time

import numpy as np
import pytest

from apps_helpers import draw_digit, tiny_checkpoint
from cnnlab.cli import main
from cnnlab.errors import CnnlabError
from cnnlab.predict import Predictor
from test_serve import _chunk, _head, _read_response, png, post
from test_serve_faults import Served, _closed_within, _json_error

pytest.importorskip("uvicorn")
pytest.importorskip("fastapi")

MAX_BYTES = 64 * 1024


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    return Predictor.from_run(tiny_checkpoint(tmp_path_factory.mktemp("load") / "last.pt", model="inception"),
                              device="cpu")


@pytest.fixture(scope="module")
def app(predictor):
    from cnnlab.serve.app import create_app

    return create_app(predictor, max_bytes=MAX_BYTES)


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record)


# ----------------------------------------------------------------------------- 1. branch energies under load


def test_the_nets_pass_while_finding_digits_never_lands_in_another_requests_branches(predictor, monkeypatch):
    """Request A holds the net's lock (its branch-energy hooks installed, its pass done) while request B, a row of
    digits, finds its digits: ``number_fields`` runs the net on a wide digit's halves. That pass ran outside the lock
    and wrote B's energies into A's answer (26 of 400 under load); now it waits for the lock. Deterministic: A waits
    inside its pass until B's pass has run, or 2 s when B (rightly) cannot run it."""
    from cnnlab.serve.app import Service

    service = Service(predictor)
    a_data, b_data = png(draw_digit()), png(draw_digit(box=(20, 60, 120, 240)))
    alone = service.predict(a_data, "upload")["branches"]["energy"]
    a_in, b_ran, first = threading.Event(), threading.Event(), threading.Event()
    noise = np.random.default_rng(0).random((28, 28), dtype=np.float32)
    real_prepared, real_number_fields = predictor.prepared, predictor.number_fields

    def prepared(data, name=None, preprocess=None):  # B: "several digits side by side"
        field, marks = real_prepared(data, name, preprocess)
        return field, 2 if isinstance(data, bytes) and data == b_data else marks

    def number_fields(data, name=None, **kwargs):  # as Predictor.number_fields on a wide digit: a pass of the net
        predictor.probabilities([noise])
        b_ran.set()
        return real_number_fields(data, name, **kwargs)

    def hold(_module, _inputs, _output):  # A's pass, done: wait for B's
        if not first.is_set():
            first.set()
            a_in.set()
            b_ran.wait(2)

    monkeypatch.setattr(predictor, "prepared", prepared)
    monkeypatch.setattr(predictor, "number_fields", number_fields)
    handle = predictor.model.register_forward_hook(hold)
    got = {}
    try:
        a = threading.Thread(target=lambda: got.setdefault("a", service.predict(a_data, "upload")))
        a.start()
        assert a_in.wait(30)
        b = threading.Thread(target=lambda: got.setdefault("b", service.predict(b_data, "upload")))
        b.start()
        a.join(30)
        b.join(30)
    finally:
        handle.remove()
    assert got["a"]["branches"]["energy"] == alone
    assert got["b"]["number"] is not None and b_ran.is_set()


# ----------------------------------------------------------------------------- 2. a reset before the half-close


class _GoneTransport:
    """A transport whose client has reset the connection by the time the half-close is sent."""

    def __init__(self, raw):
        self._raw = raw

    def __getattr__(self, name):
        return getattr(self._raw, name)

    def write_eof(self):
        raise OSError(errno.ENOTCONN, "Transport endpoint is not connected")


@pytest.mark.parametrize("head", [(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                                   b"Content-Length: 1000000000\r\n\r\n"),
                                  b"GET /info HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n"])
def test_a_client_gone_before_the_half_close_is_closed_without_a_word(app, monkeypatch, head):
    """The tester's rst.py: a client that reads 20 bytes of an early answer and resets made ``write_eof`` raise
    ENOTCONN, logged as ``Exception in ASGI application`` and a 29-line traceback. Now the connection just closes."""
    from cnnlab.serve import protocol

    made = protocol.JsonErrorsProtocol.connection_made
    monkeypatch.setattr(protocol.JsonErrorsProtocol, "connection_made",
                        lambda self, transport: made(self, _GoneTransport(transport)))
    theirs = _Records()
    logging.getLogger("uvicorn.error").addHandler(theirs)
    try:
        with Served(app) as srv, srv.connect(head + b"x" * 10) as sock:
            answer, after = _closed_within(sock, 10)
            assert _json_error(answer)[0] in (400, 413)
            assert after < 3  # closed at once, not after the linger's idle time
            assert post(srv.url, png(draw_digit()))[0] == 200
    finally:
        logging.getLogger("uvicorn.error").removeHandler(theirs)
    assert [r.getMessage() for r in theirs.records if r.levelno >= logging.WARNING or r.exc_info] == []


# ----------------------------------------------------------------------------- 3, 4. hosts


def _run_server(tmp_path, monkeypatch, host: str) -> tuple[list[str], list[str]]:
    """``run_server`` as the command runs it, up to serving: (its log lines, its warnings)."""
    from cnnlab.serve import server

    monkeypatch.setattr(server, "serve_forever", lambda app, sock: None)
    logs, warns = [], []
    server.run_server(tiny_checkpoint(tmp_path / "last.pt"), host=host, port=0, log=logs.append, warn=warns.append)
    return logs, warns


@pytest.mark.parametrize("host", ["", "  "])
def test_an_empty_host_is_refused_in_one_line(tmp_path, monkeypatch, capsys, host):
    """``--host ''`` bound every address and printed ``http://:PORT/`` and ``serving on , reachable ...``."""
    with pytest.raises(CnnlabError, match=r"give an address such as 127\.0\.0\.1"):
        _run_server(tmp_path, monkeypatch, host)
    capsys.readouterr()
    assert main(["serve", "--host", host, "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "give an address such as 127.0.0.1" in err


def _ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.parametrize("host", ["127.1", "localhost", "::ffff:127.0.0.1"])
def test_loopback_hosts_however_written_get_no_warning(tmp_path, monkeypatch, host):
    """``127.1`` and ``::ffff:127.0.0.1`` are loopback: decided on the address bound, IPv4-mapped unwrapped."""
    if ":" in host and not _ipv6():
        pytest.skip("no IPv6 here")
    logs, warns = _run_server(tmp_path, monkeypatch, host)
    assert warns == [] and len(logs) == 1


def test_a_host_reachable_from_other_machines_is_still_warned_of():
    from cnnlab.serve.server import is_loopback

    assert not is_loopback("0.0.0.0") and not is_loopback("::") and not is_loopback("::ffff:10.0.0.1")
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("::ffff:127.0.0.1")


def test_a_taken_ipv6_port_is_named_in_brackets():
    from cnnlab.serve.server import bind_socket

    if not _ipv6():
        pytest.skip("no IPv6 here")
    with socket.socket(socket.AF_INET6) as taken:
        taken.bind(("::", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(CnnlabError, match=rf"cannot listen on \[::\]:{port} "):
            bind_socket("::", port)


# ----------------------------------------------------------------------------- 5. request targets


def test_absolute_form_targets_are_served_by_their_path(app):
    """RFC 9112 3.2.2: a server must accept ``GET http://host/path``; it was 404 naming ``/http://x/info``."""
    with Served(app) as srv:
        with srv.connect(b"GET http://x/info?a=1 HTTP/1.1\r\nHost: x\r\n\r\n") as sock:
            status, _, body = _read_response(sock)
        assert status == 200 and json.loads(body)["model"] == "inception"
        with srv.connect(b"GET http://x HTTP/1.1\r\nHost: x\r\n\r\n") as sock:
            assert _read_response(sock)[0] == 200  # the page
        with srv.connect(b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n") as sock:
            status, _, body = _read_response(sock)
        assert status == 404 and json.loads(body)["error"].startswith("OPTIONS * is not served here; ")


# ----------------------------------------------------------------------------- 6. slow uploads


def _trickle(sock, times: int, every: float) -> None:
    """A byte every ``every`` seconds, ``times`` times, on a thread of its own (until the server closes)."""
    def send():
        for _ in range(times):
            time.sleep(every)
            try:
                sock.sendall(b"a")
            except OSError:
                return

    threading.Thread(target=send, daemon=True).start()


@pytest.fixture
def one_slot(predictor):
    """A server that takes one upload at a time and wants 1,000 bytes a second after 0.5 s (30 s in all)."""
    from cnnlab.serve.app import create_app

    with Served(create_app(predictor, max_pending=1, body_timeout=30.0, min_body_rate=1000, body_grace=0.5)) as srv:
        yield srv


def test_a_body_that_trickles_is_408_at_once_and_frees_its_slot(one_slot):
    """The tester's slow.py: 200 bytes, then a byte every 3 s held every upload slot for 30 s (every real upload
    503). Now a body under the least rate after the grace is 408 at once; a real upload is then served."""
    start = time.monotonic()
    with one_slot.connect(_head(b"image/png", length=100_000) + b"a" * 200) as sock:
        _trickle(sock, times=40, every=0.3)
        status, _, body = _read_response(sock)
    assert status == 408 and "slower than" in json.loads(body)["error"]
    assert time.monotonic() - start < 5
    assert post(one_slot.url, png(draw_digit()))[0] == 200


def test_a_slow_but_steady_upload_is_served(one_slot):
    """A body above the least rate, however long it takes within the time limit, is served (a phone photo)."""
    data = png(draw_digit())
    with one_slot.connect(_head(b"image/png", length=len(data))) as sock:
        for i in range(0, len(data), 200):  # ~2,000 bytes a second, twice the least
            sock.sendall(data[i:i + 200])
            time.sleep(0.1)
        assert _read_response(sock)[0] == 200


def test_the_default_rate_lets_a_phone_on_a_slow_link_upload():
    """2 MB at 64 KB/s (a phone photo on a slow link) passes the defaults: over the rate, within the time. And so does
    a body at the limit, 4 MiB, at 64 KB/s (66 s), which the fixed 60 s refused with "send it at once", nearly all of
    it uploaded: the time allowed is the grace plus the body's length at the least rate, so a client that keeps the
    rate always finishes (a chunked body: as if at the limit, and over it by what is drained)."""
    from cnnlab.serve import DEFAULT_MAX_BYTES
    from cnnlab.serve.app import DEFAULT_BODY_GRACE, DEFAULT_MIN_BODY_RATE, DRAIN_BYTES, RequestGuard

    assert 64_000 >= 2 * DEFAULT_MIN_BODY_RATE
    guard = RequestGuard(None, DEFAULT_MAX_BYTES)
    for size in (2 * 1024 * 1024, DEFAULT_MAX_BYTES):
        assert guard.time_limit(size) >= size / 64_000 + 10
    for size in (2 * 1024 * 1024, DEFAULT_MAX_BYTES, 10):
        assert guard.time_limit(size) >= size / DEFAULT_MIN_BODY_RATE  # at the least rate, too
    assert guard.time_limit(None) >= (DEFAULT_MAX_BYTES + DRAIN_BYTES) / DEFAULT_MIN_BODY_RATE
    assert guard.time_limit(10) <= DEFAULT_BODY_GRACE + 1  # a body that trickles is still refused soon


def test_a_body_at_the_least_rate_is_never_refused_for_time(predictor):
    """Without a fixed time limit, a body sent a little over the least rate is served, however long it takes: 3,000
    bytes at ~1,400 bytes a second (2 s), the least 1,000 after 0.5 s, where a fixed limit would be 1 s."""
    from cnnlab.serve.app import create_app

    data = png(draw_digit())
    padded = data + b"\0" * max(0, 3000 - len(data))  # trailing bytes after the PNG's end: still the same image
    with Served(create_app(predictor, min_body_rate=1000, body_grace=0.5)) as srv:
        assert srv.server.config.app.time_limit(len(padded)) == pytest.approx(0.5 + len(padded) / 1000)
        with srv.connect(_head(b"image/png", length=len(padded))) as sock:
            for i in range(0, len(padded), 140):
                sock.sendall(padded[i:i + 140])
                time.sleep(0.1)
            assert _read_response(sock)[0] == 200


# ----------------------------------------------------------------------------- 7. half a head before the answer


def test_half_a_head_that_came_with_the_request_before_is_408(app):
    """Half a head sent with a kept-alive request, before its answer: closed silently after uvicorn's 5 s
    keep-alive timeout; now 408 after the head's time limit, as for one sent after the answer."""
    with Served(app, head_timeout=1.0) as srv:
        with srv.connect(b"GET /info HTTP/1.1\r\nHost: x\r\n\r\nGET /info HTTP/1.1\r\nHo") as sock:
            assert _read_response(sock)[0] == 200
            answer, after = _closed_within(sock, 10)
        assert after < 4
        assert _json_error(answer) == (408, "the request's headers did not arrive within 1 s; send them at once")


# ----------------------------------------------------------------------------- 8. upload capacity costs real bytes


@pytest.fixture
def two_slots(predictor):
    """A server that decodes two uploads at a time and holds at most 100,000 bytes of bodies (64 KiB each)."""
    from cnnlab.serve.app import create_app

    with Served(create_app(predictor, max_bytes=MAX_BYTES, max_pending=2, max_buffered=100_000)) as srv:
        yield srv


def test_heads_without_a_body_hold_no_upload_capacity(predictor):
    """The tester's hold_slots.py: 32 clients sending a ``POST /predict`` head with ``Content-Length: 4000000`` and no
    body, reconnecting at each 408, held every upload slot for ~544 bytes a second in all (56 of 56 real uploads 503):
    a slot was taken at the head. Now only bytes received count: heads without a body hold nothing."""
    from cnnlab.serve.app import create_app

    with Served(create_app(predictor, max_bytes=MAX_BYTES, max_pending=2)) as srv:
        socks = [srv.connect(_head(b"image/png", length=60_000)) for _ in range(6)]
        try:
            time.sleep(0.3)  # every head is in
            for _ in range(3):
                assert post(srv.url, png(draw_digit()))[0] == 200
        finally:
            for sock in socks:
                sock.close()


def test_bodies_arriving_count_their_bytes_against_what_the_server_holds(two_slots):
    """60,000 bytes received of one body leave 40,000: a head declaring 50,000 is 503 at once (with ``Expect:
    100-continue``, before its body is sent), a chunked body is 503 at the part that would go over, a small upload
    is served; once the first body is answered, its bytes are free again."""
    data = png(draw_digit())
    with two_slots.connect(_head(b"image/png", length=61_000) + b"a" * 60_000) as first:
        time.sleep(0.3)  # its 60,000 bytes are in
        with two_slots.connect(_head(b"image/png", length=50_000, expect=True)) as declared:
            assert declared.recv(12) == b"HTTP/1.1 503"  # no "100 Continue" first: the body is never sent
        with two_slots.connect(_head(b"image/png") + _chunk(b"a" * 30_000)) as chunked:
            time.sleep(0.2)
            chunked.sendall(_chunk(b"a" * 30_000))
            status, headers, body = _read_response(chunked)
        assert status == 503 and headers["retry-after"] == "1"
        assert json.loads(body)["error"] == ("the server is busy (the uploads in progress hold the 100,000 bytes it "
                                             "takes); retry in 1 s")
        assert post(two_slots.url, data)[0] == 200  # 4 KB fit
        first.sendall(b"a" * 1000)
        assert _read_response(first)[0] == 400  # not an image, but answered: its bytes are freed
    with two_slots.connect(_head(b"image/png", length=50_000) + b"a" * 50_000) as again:
        assert _read_response(again)[0] == 400


def test_complete_uploads_beyond_the_decode_queue_are_503(predictor, monkeypatch):
    """``max_pending`` now counts the uploads whose body is complete (waiting for a decode, or decoded): with one
    taken, a second complete upload is 503 with Retry-After, its body dropped; then the slot is free again."""
    from cnnlab.serve.app import create_app

    inside, release = threading.Event(), threading.Event()
    real = predictor.prepared

    def prepared(data, *rest, **kwargs):
        inside.set()
        release.wait(30)
        return real(data, *rest, **kwargs)

    data = png(draw_digit())
    with Served(create_app(predictor, max_bytes=MAX_BYTES, max_pending=1)) as srv:
        monkeypatch.setattr(predictor, "prepared", prepared)
        first = threading.Thread(target=post, args=(srv.url, data), daemon=True)
        first.start()
        assert inside.wait(30)
        status, body = post(srv.url, data)
        assert status == 503 and body["error"] == "the server is busy (1 uploads in progress); retry in 1 s"
        release.set()
        first.join(30)
        monkeypatch.undo()
        assert post(srv.url, data)[0] == 200


# ----------------------------------------------------------------------------- 9. the head's clock after an answer


def test_the_next_heads_clock_starts_at_its_first_byte(app):
    """The tester's head_clock.py: after an answer, the next head's clock started at the answer, so a head begun
    4.5 s after it and taking 6 s was 408 (10 s limit). It starts at the head's first byte (here: 1 s limit, the
    head begun 0.7 s after the answer, taking 0.6 s)."""
    with Served(app, head_timeout=1.0) as srv, srv.connect(b"GET /info HTTP/1.1\r\nHost: x\r\n\r\n") as sock:
        assert _read_response(sock)[0] == 200
        time.sleep(0.7)
        sock.sendall(b"GET /info HTTP/1.1\r\n")
        time.sleep(0.6)
        sock.sendall(b"Host: x\r\n\r\n")
        status, _, body = _read_response(sock)
        assert status == 200 and json.loads(body)["model"] == "inception"
        sock.sendall(b"GET /info HTTP/1.1\r\n")  # and a head that stops halfway is still 408 after its limit
        answer, after = _closed_within(sock, 10)
    assert _json_error(answer)[0] == 408 and after < 4


# ----------------------------------------------------------------------------- 10. hosts as typed


def test_a_bracketed_ipv6_host_is_bound_without_its_brackets(tmp_path, monkeypatch):
    """``--host '[::1]'`` said ``cannot listen on [[::1]]:PORT (Name or service not known)``: the brackets are URLs'."""
    from cnnlab.serve.server import check_host

    assert check_host("[::1]") == "::1" and check_host("::1") == "::1" and check_host("127.0.0.1") == "127.0.0.1"
    if not _ipv6():
        pytest.skip("no IPv6 here")
    logs, warns = _run_server(tmp_path, monkeypatch, "[::1]")
    assert warns == [] and len(logs) == 1 and " on http://[::1]:" in logs[0]


@pytest.mark.parametrize("host, says", [
    (" 127.0.0.1", "--host ' 127.0.0.1' has spaces around the address; give --host '127.0.0.1'"),
    ("::1 ", "--host '::1 ' has spaces around the address; give --host '::1'"),
    ("[::1", "--host '[::1' is not an address or a host name; give an IPv6 address without brackets (--host ::1) "
             "or an IPv4 address (--host 127.0.0.1)"),
    ("[]", "--host '[]' is not an address or a host name; give an IPv6 address without brackets (--host ::1) "
           "or an IPv4 address (--host 127.0.0.1)")])
def test_a_host_with_spaces_or_stray_brackets_is_refused_before_the_model_loads(monkeypatch, capsys, host, says):
    """``--host ' 127.0.0.1'`` said ``cannot listen on  127.0.0.1:PORT (Name or service not known)``, the space
    unseen, after loading the model. Now one line, the host quoted, before anything is loaded."""
    from cnnlab.predict import Predictor as LivePredictor

    def never(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(LivePredictor, "pretrained", never)
    monkeypatch.setattr(LivePredictor, "from_run", never)
    assert main(["serve", "--host", host, "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and says in err


# ----------------------------------------------------------------------------- 11. control characters in a 404


def test_control_characters_in_a_path_are_escaped_in_its_404(app):
    """``/static/a%0d%0ab%09c`` was ``GET /static/a\\r\\nb\\tc is not served here`` with a real CR, LF and TAB: the
    one-line error broke in three. Now they are escaped as Python writes them."""
    with Served(app) as srv, srv.connect(b"GET /static/a%0d%0ab%09c HTTP/1.1\r\nHost: x\r\n\r\n") as sock:
        status, _, body = _read_response(sock)
    error = json.loads(body)["error"]
    assert status == 404 and error.startswith("GET /static/a\\r\\nb\\tc is not served here; ")
    assert error.isprintable()


def test_a_refused_upload_sent_whole_before_reading_gets_its_503(predictor):
    """test_serve's busy test, with bytes held instead of slots taken at the head: a body of 3.5 MB held, a 3 MB upload
    (declared, or chunked) sent whole before reading gets the 503, not a reset connection (the protocol reads and
    drops the rest after the answer); one that asked ``Expect: 100-continue`` gets it without sending its body."""
    from cnnlab.serve.app import create_app

    srv = Served(create_app(predictor, max_pending=1))  # 4 MiB bodies, 4 MiB held at most
    srv.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)  # no room for unread bodies in the kernel
    big = b"a" * (3 * 1024 * 1024)
    with srv, srv.connect(_head(b"image/png", length=4_000_000) + b"a" * 3_500_000) as first:
        time.sleep(0.5)  # its 3.5 MB are in
        for head, body in ((_head(b"image/png", length=len(big)), big),
                           (_head(b"image/png"), _chunk(big[:1_000_000]) * 3 + b"0\r\n\r\n")):
            with socket.socket() as second:
                second.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32 * 1024)
                second.settimeout(30)
                second.connect(("127.0.0.1", srv.port))
                second.sendall(head + body)
                status, headers, answer = _read_response(second)
            assert status == 503 and headers["retry-after"] == "1" and "busy" in json.loads(answer)["error"]
        with srv.connect(_head(b"image/png", length=len(big), expect=True)) as third:
            assert third.recv(12) == b"HTTP/1.1 503"  # no "100 Continue" first: the body is never sent
        first.sendall(b"a" * 500_000)
        assert _read_response(first)[0] == 400  # not an image, but answered, and its bytes freed
        assert post(srv.url, png(draw_digit()))[0] == 200


def test_a_body_that_stalls_ahead_of_the_rate_is_408_after_the_idle_gap(predictor, monkeypatch):
    """A tester sent all but the last byte of 4 MiB at once, then nothing: far ahead of the least rate, each such body
    held its 4 MiB of the budget for 256 s (32 of them: every real upload 503 for minutes). A body that stops arriving
    for BODY_IDLE_S is 408, its bytes freed."""
    from cnnlab.serve import app as served
    from cnnlab.serve.app import create_app

    monkeypatch.setattr(served, "BODY_IDLE_S", 1.0)
    data = png(draw_digit())
    big = 3 * len(data)  # the stalled body holds nearly all of the budget: a real upload fits once it is freed
    with Served(create_app(predictor, max_bytes=big + 1000, max_buffered=big + 1000)) as srv:
        start = time.monotonic()
        with srv.connect(_head(b"image/png", length=big) + b"a" * (big - 1)) as sock:
            status, _, body = _read_response(sock)
        assert status == 408 and "stopped arriving before its end" in json.loads(body)["error"]
        assert time.monotonic() - start < 5  # not the 5 s grace plus its length at 16 KiB/s
        assert post(srv.url, data)[0] == 200  # its bytes are free again: the budget holds one such body only


def test_the_serving_line_escapes_the_run_folders_name(tmp_path, monkeypatch):
    """`serve $'r/nl\\nx\\e[31mRED'` printed the folder's newline and escape sequence raw in its serving line."""
    from cnnlab.serve import server

    folder = tmp_path / "nl\nx\x1b[31mRED"
    folder.mkdir()
    monkeypatch.setattr(server, "serve_forever", lambda app, sock: None)
    logs: list[str] = []
    server.run_server(tiny_checkpoint(folder / "last.pt"), host="127.0.0.1", port=0, log=logs.append,
                      warn=lambda m: None)
    line = next(line for line in logs if line.startswith("serving "))
    assert "\n" not in line and "\x1b" not in line and "nl\\nx\\x1b[31mRED" in line


def test_a_body_that_trickles_a_byte_now_and_then_after_a_burst_is_408_within_a_window(predictor, monkeypatch):
    """A tester sent 4 MiB but 40 bytes at once, then a byte every 9 s (never 10 s idle, always ahead of the average
    rate): every real upload 503 for 4 minutes. After the grace, each window must bring the least rate."""
    from cnnlab.serve import app as served
    from cnnlab.serve.app import create_app

    monkeypatch.setattr(served, "BODY_IDLE_S", 1.0)
    monkeypatch.setattr(served, "BODY_WINDOW_S", 2.0)
    big = 200_000
    with Served(create_app(predictor, max_bytes=big + 1000, min_body_rate=1000, body_grace=0.5)) as srv:
        start = time.monotonic()
        with srv.connect(_head(b"image/png", length=big) + b"a" * (big - 40)) as sock:
            _trickle(sock, times=30, every=0.6)
            status, _, body = _read_response(sock)
        assert status == 408 and "slower than" in json.loads(body)["error"]
        assert time.monotonic() - start < 6  # the grace and one window, not the body's 200 s at the rate


def test_a_body_over_the_limit_is_413_even_when_the_server_is_full(predictor):
    """A 5,000,000-byte body (within the drained margin) got 503 "busy, retry in 1 s" 13 times in 200 when bodies
    filled the budget: it can never be taken, so 413 whatever is free."""
    from cnnlab.serve.app import create_app

    with Served(create_app(predictor, max_bytes=100_000, max_buffered=100_000)) as srv:
        with srv.connect(_head(b"image/png", length=100_000) + b"a" * 99_500):  # holds nearly all of the budget
            time.sleep(0.3)
            with srv.connect(_head(b"image/png", length=150_000) + b"a" * 2_000) as over:  # a first part within the
                time.sleep(0.3)  # limit: it was held, found no room, and the body that can never be taken got 503
                over.sendall(b"a" * 148_000)
                assert _read_response(over)[0] == 413


def test_a_form_cut_before_its_closing_boundary_is_named_so(app):
    """A form with its `file` part but no closing `--boundary--` was answered "no file in the form" (the parser
    drops a part it never saw end): the form is cut short, and the answer says so."""
    data = png(draw_digit())
    part = (b"--xxB\r\nContent-Disposition: form-data; name=\"file\"; filename=\"d.png\"\r\n"
            b"Content-Type: image/png\r\n\r\n" + data)
    with Served(app) as srv:
        for body, said in ((part, "cut short"), (part + b"\r\n--xxB--\r\n", None)):
            head = (b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=xxB\r\n"
                    b"Content-Length: %d\r\n\r\n" % len(body))
            with srv.connect(head + body) as sock:
                status, _, answer = _read_response(sock)
            if said:
                assert status == 400 and said in json.loads(answer)["error"]
            else:
                assert status == 200
