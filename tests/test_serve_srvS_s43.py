"""cnnlab serve against a tester's round (srvS, s43): a form's field 'file' that holds text, Range headers on the
page's files, a Content-Length over the bytes sent, which checkpoint answered (and one that changed under the
server), and a taken port refused before the net loads.

Servers run on 127.0.0.1 only, in a thread (``make_server``, as the command builds it), each bounded in time.
"""

from __future__ import annotations

import hashlib
import json
import socket
import time
import urllib.request
from pathlib import Path

import pytest

from apps_helpers import draw_digit, tiny_checkpoint
from cnnlab.checkpoint import load_checkpoint, save_checkpoint
from cnnlab.errors import CnnlabError
from cnnlab.predict import Predictor
from test_serve import _chunk, _head, _read_response, png, post
from test_serve_faults import Served

pytest.importorskip("uvicorn")
pytest.importorskip("fastapi")

MAX_BYTES = 64 * 1024
STATIC = Path(__file__).resolve().parents[1] / "src" / "cnnlab" / "serve" / "static"


def _trained_checkpoint(path: Path, seed: int = 0, step: int = 8, epoch: int = 1) -> Path:
    """A tiny checkpoint that records its place in training (step, whole epochs), as a run's last.pt does."""
    tiny_checkpoint(path, seed=seed)
    state = load_checkpoint(path)
    state["train_state"] = {"epoch": epoch, "batch": 0, "step": step}
    save_checkpoint(path, state)  # a save renames a new file into place, as a training's does
    return path


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return _trained_checkpoint(tmp_path_factory.mktemp("srvS") / "last.pt")


@pytest.fixture(scope="module")
def app(ckpt):
    from cnnlab.serve.app import create_app

    return create_app(Predictor.from_run(ckpt, device="cpu"), max_bytes=MAX_BYTES, body_grace=1.5)


def _raw(srv, request: bytes) -> tuple[int, dict, bytes]:
    with srv.connect(request) as sock:
        return _read_response(sock)


def _form(part_head: bytes, data: bytes) -> bytes:
    body = b"--xyz\r\n" + part_head + b"\r\n\r\n" + data + b"\r\n--xyz--\r\n"
    return (b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=xyz\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)) + body


# ----------------------------------------------------------------------------- 2. a field 'file' that holds text


@pytest.mark.parametrize("data", [png(draw_digit()), b"hello"], ids=["png", "text"])
def test_a_form_field_file_that_holds_text_is_named_so(app, data):
    """``curl -F "file=<d.png"`` (and requests' ``files={'file': (None, data)}``) send the file's bytes as a field with
    no filename: answered "no file in the form; send the image as multipart field 'file'", what the user did."""
    with Served(app) as srv:
        status, _, body = _raw(srv, _form(b'Content-Disposition: form-data; name="file"', data))
    error = json.loads(body)["error"]
    assert status == 400 and error.startswith(f"field 'file' holds text ({len(data):,} bytes, no filename), not a "
                                              "file upload; send the image as a file: curl -F file=@digit.png"), error


def test_a_file_named_by_filename_star_alone_is_taken_as_a_file(app):
    """A part naming its file only by RFC 5987's ``filename*`` (which the form's parser does not read: RFC 7578 4.2)
    was "no file in the form": it is the file it is, its name decoded."""
    data = png(draw_digit())
    head = b"Content-Disposition: form-data; name=\"file\"; filename*=UTF-8''%e2%82%ac.png\r\nContent-Type: image/png"
    with Served(app) as srv:
        status, _, body = _raw(srv, _form(head, data))
        assert status == 200 and json.loads(body)["probabilities"] == post(srv.url, data)[1]["probabilities"]
        status, _, body = _raw(srv, _form(head, b"not an image"))
        assert status == 400 and "upload '\u20ac.png'" in json.loads(body)["error"]
        status, _, body = _raw(srv, _form(b'Content-Disposition: form-data; name="image"; filename="d.png"', data))
        assert status == 400 and json.loads(body)["error"].startswith("no file in the form")


# ----------------------------------------------------------------------------- 3. Range on the page's files


def test_an_unknown_range_unit_or_an_invalid_range_is_ignored(app):
    """``Range: chars=0-1`` and ``Range: bytes=50-10`` were 400 in plain text (Starlette's "Only support bytes range",
    "start must be less than end"); RFC 9110 14.2: an unknown unit MUST be ignored, an invalid range MAY be."""
    with Served(app) as srv:
        for path, name, rng in (("/static/app.js", "app.js", "chars=0-1"), ("/", "index.html", "bytes=50-10"),
                                ("/", "index.html", "bytes"), ("/static/app.js", "app.js", "bytes=x-y")):
            req = urllib.request.Request(srv.url + path, headers={"Range": rng})
            with urllib.request.urlopen(req, timeout=30) as res:
                assert res.status == 200 and res.read() == (STATIC / name).read_bytes(), (path, rng)
        req = urllib.request.Request(srv.url + "/static/app.js", headers={"Range": "bytes=0-9"})
        with urllib.request.urlopen(req, timeout=30) as res:  # a range that is one: served as before
            assert res.status == 206 and res.read() == (STATIC / "app.js").read_bytes()[:10]


@pytest.mark.parametrize("path, name", [("/", "index.html"), ("/static/app.js", "app.js")])
def test_a_range_past_the_end_is_416_in_json(app, path, name):
    """``Range: bytes=999999-`` was 416 with an empty body; every refusal is ``{"error": "<one line>"}``."""
    size = (STATIC / name).stat().st_size
    with Served(app) as srv:
        status, headers, body = _raw(srv, f"GET {path} HTTP/1.1\r\nHost: x\r\nRange: bytes=999999-\r\n"
                                          "Connection: close\r\n\r\n".encode())
    assert status == 416 and headers["content-range"] == f"bytes */{size}"
    assert headers["content-type"] == "application/json"
    assert json.loads(body)["error"] == (f"Range bytes=999999- asks for no byte of this file, which has {size:,}; ask "
                                         f"for bytes within 0-{size - 1}, or send no Range for the whole file")


# ----------------------------------------------------------------------------- 4. a Content-Length over what came


def test_a_content_length_over_the_bytes_sent_is_named(app):
    """1,182 bytes sent at once under ``Content-Length: 1282``: 408 "the request body stopped arriving before its end;
    send it at once", though the client had sent everything at once."""
    data = png(draw_digit())
    with Served(app) as srv:
        status, _, body = _raw(srv, _head(b"image/png", length=len(data) + 100) + data)
    assert status == 408 and json.loads(body)["error"] == (
        f"the request body stopped arriving before its end: {len(data):,} of the {len(data) + 100:,} bytes its "
        "Content-Length declares came, then nothing; check the Content-Length, or send the whole body at once")


def test_a_body_that_never_comes_is_not_told_a_rate(app):
    """A head declaring 3 bytes and no body: "did not arrive within 5.00018 s; send it at 16 KiB/s or more" (the
    time unrounded, a rate for 3 bytes)."""
    with Served(app) as srv:
        status, _, body = _raw(srv, _head(b"image/png", length=3))
        assert status == 408 and json.loads(body)["error"] == (
            "the request body did not arrive within 1.5 s: none of the 3 bytes its Content-Length declares came; "
            "send the body right after its head, or check the Content-Length")
        status, _, body = _raw(srv, _head(b"image/png") + _chunk(b"a" * 100))  # chunked, its last chunk never sent
    error = json.loads(body)["error"]
    assert status == 408 and "100 bytes of a chunked body came (its last, empty chunk never did)" in error, error


# ----------------------------------------------------------------------------- a. which checkpoint answered


def test_info_and_each_answer_name_the_checkpoint_served(app, ckpt):
    """Neither /info nor /predict named the checkpoint served: a page or a script could not tell which net answered."""
    with Served(app) as srv:
        with urllib.request.urlopen(srv.url + "/info", timeout=30) as res:
            info = json.loads(res.read())
        answer = post(srv.url, png(draw_digit()))[1]
    assert info["checkpoint"] == answer["checkpoint"] == {
        "file": f"{ckpt.parent.name}/last.pt", "step": 8, "epochs": 1,  # no folders above the run's
        "sha256": hashlib.sha256(ckpt.read_bytes()).hexdigest()}

    from cnnlab.predict import _checkpoint_shown

    class Entry:  # the shipped weights: their file and the manifest's hash, no step
        file, sha256 = "resnet-mnist.safetensors", "ab" * 32

    shipped = _checkpoint_shown("pretrained resnet-mnist", {"pretrained": Entry()}, "")
    assert shipped == {"file": "resnet-mnist.safetensors", "step": None, "epochs": None, "sha256": "ab" * 32}


def test_a_checkpoint_that_changed_on_disk_is_loaded_again_and_said_so(tmp_path):
    """A running server kept answering with the net it loaded at start after ``train --resume`` rewrote its last.pt
    (7 0.1797 where a fresh server said 7 0.9431), and nothing said which net answered. Now the file's stat is
    checked at each request: a changed file is loaded again (one log line); one that does not load, or is gone, leaves
    the net served as it was, with one warning."""
    from cnnlab.serve.app import Service

    ckpt = _trained_checkpoint(tmp_path / "run" / "last.pt", seed=0, step=8, epoch=1)
    logs, warns = [], []
    service = Service(Predictor.from_run(ckpt, device="cpu"), say=logs.append, warn=warns.append)
    data = png(draw_digit())
    first = service.predict(data, "upload")
    assert first["checkpoint"]["step"] == 8 and service.predict(data, "upload") == first and logs == warns == []
    _trained_checkpoint(ckpt, seed=1, step=16, epoch=2)  # the run trained on
    second = service.predict(data, "upload")
    assert second["checkpoint"]["step"] == 16 and second["checkpoint"]["sha256"] != first["checkpoint"]["sha256"]
    assert second["checkpoint"]["sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert second["probabilities"] != first["probabilities"]
    assert logs == [f"{ckpt} changed on disk: loaded it again, now step 16, 2 epochs, sha256 "
                    f"{second['checkpoint']['sha256'][:12]} (was step 8, 1 epoch, sha256 "
                    f"{first['checkpoint']['sha256'][:12]})"]
    ckpt.write_bytes(ckpt.read_bytes()[:1000])  # cut short in place: it does not load
    for _ in range(2):
        assert service.predict(data, "upload")["checkpoint"] == second["checkpoint"]
    assert len(warns) == 1 and f"{ckpt} changed on disk but does not load (" in warns[0], warns
    assert warns[0].endswith(f"still serving the net loaded before (step 16, 2 epochs, sha256 "
                             f"{second['checkpoint']['sha256'][:12]})")
    ckpt.unlink()
    for _ in range(2):
        assert service.info(MAX_BYTES)["checkpoint"] == second["checkpoint"]
    assert len(warns) == 2 and warns[1].startswith(f"{ckpt} is gone (deleted or moved); still serving")
    _trained_checkpoint(ckpt, seed=2, step=24, epoch=3)  # put back: loaded
    assert service.info(MAX_BYTES)["checkpoint"]["step"] == 24 and len(logs) == 2 and len(warns) == 2


def test_the_serving_line_names_the_checkpoint(tmp_path, monkeypatch):
    from cnnlab.serve import server

    ckpt = _trained_checkpoint(tmp_path / "r1" / "last.pt")
    monkeypatch.setattr(server, "serve_forever", lambda app, sock: None)
    logs: list[str] = []
    server.run_server(ckpt, port=0, log=logs.append, warn=lambda m: None)
    digest = hashlib.sha256(ckpt.read_bytes()).hexdigest()[:12]
    assert logs[0].startswith(f"serving basic_cnn from {ckpt} (step 8, 1 epoch, sha256 {digest}; loaded again when "
                              "the file changes) on http://127.0.0.1:")


# ----------------------------------------------------------------------------- b. a taken port, before the net loads


def test_a_taken_port_is_refused_before_the_net_loads(tmp_path, monkeypatch):
    """A second server on a taken port loaded torch and its net (~5 s) before it said "Address already in use"."""
    from cnnlab.serve import server

    loaded = []
    monkeypatch.setattr(Predictor, "from_run", classmethod(lambda cls, *a, **k: loaded.append(a)))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        start = time.monotonic()
        with pytest.raises(CnnlabError, match=rf"cannot listen on 127\.0\.0\.1:{port} .*pick another --port"):
            server.run_server(tmp_path / "last.pt", port=port, log=lambda m: None, warn=lambda m: None)
    assert loaded == [] and time.monotonic() - start < 2


def test_the_command_refuses_a_taken_port_before_it_imports_torch(tmp_path, monkeypatch, capsys):
    import cnnlab.cli
    from cnnlab.cli import main

    imported = []
    monkeypatch.setattr(cnnlab.cli, "import_torch_whole", lambda: imported.append(True))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", str(tmp_path / "last.pt"), "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert err == (f"cnnlab: error: cannot listen on 127.0.0.1:{port} (Address already in use); pick another --port "
                   "or --host\n") and imported == []


def test_the_bound_socket_listens_so_clients_wait_while_the_net_loads():
    from cnnlab.serve.server import bind_socket

    with bind_socket("127.0.0.1", 0) as sock:  # as run_server holds it while the net loads
        with socket.create_connection(("127.0.0.1", sock.getsockname()[1]), timeout=5):
            pass  # queued, not refused
