"""The defects a tester (probe serve, s44) found in `cnnlab serve` following its checkpoint: a link to a diverged run's
last.pt (served, predicted with, exported; never withdrawn), a withdrawn net whose file was then deleted ("still
serving", every answer 503), `--host HOST:PORT` or a URL taken for an IPv6 address, a line that could not be written
failing the request that reloaded, a served link to nowhere called "deleted or moved", and a Range whose part that is
no range was ignored, skipped or made a 416 by what was beside it.

Servers run on 127.0.0.1 only, in a thread (``make_server``, as the command builds it), each bounded in time.
"""

from __future__ import annotations

import errno
import json
import shutil
import sys
from pathlib import Path

import pytest

import cnnlab
from apps_helpers import draw_digit, tiny_checkpoint
from cnnlab import output
from cnnlab.checkpoint import load_checkpoint, save_checkpoint
from cnnlab.cli import main
from cnnlab.predict import Predictor
from cnnlab.runs import write_status
from conftest import trained_once

STATIC = Path(__file__).resolve().parents[1] / "src" / "cnnlab" / "serve" / "static"
WHY = ("training diverged: the loss exploded (1.66e+06 per image, where a net that guesses scores 2.3) at step 12 "
       "(epoch 1, batch 12)")
DIVERGED = WHY + ("; the learning rate (0.3) is the likely cause: lower --lr (e.g. 0.03) or use a recipe (--recipe "
                  "fast); the last finite checkpoint is kept: {run}/last.pt")


def _trained_checkpoint(path: Path, seed: int = 0, step: int = 8) -> Path:
    """A tiny checkpoint that records its place in training, as a run's last.pt does (a save renames it into place)."""
    tiny_checkpoint(path, seed=seed)
    state = load_checkpoint(path)
    state["train_state"] = {"epoch": 1, "batch": 0, "step": step}
    save_checkpoint(path, state)
    return path


def _served_run(run: Path, step: int = 9) -> Path:
    """A run folder (config.json, status.json: running) whose last.pt a server follows."""
    ckpt = _trained_checkpoint(run / "last.pt", step=step)
    (run / "config.json").write_text(json.dumps({"config": {"model": "basic_cnn", "dataset": "mnist", "epochs": 1}}))
    write_status(run, "running", "")
    return ckpt


def _service(ckpt: Path, say=None, warn=None):
    from cnnlab.serve.app import Service

    logs: list[str] = []
    warns: list[str] = []
    service = Service(Predictor.from_run(ckpt, device="cpu"), say=say or logs.append, warn=warn or warns.append)
    return service, logs, warns


def _png() -> bytes:
    from test_serve import png

    return png(draw_digit())


def _diverged(run: Path) -> Path:
    write_status(run, "failed", DIVERGED.format(run=run))
    return run


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    return trained_once(tmp_path_factory, "fixS")


@pytest.fixture
def run(trained, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    return copy


def _refusal(capsys, argv: list[str]) -> str:
    capsys.readouterr()
    assert main(argv) == 2, argv
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


# ----------------------------------------------------------------------------- D1. a link to a diverged run's last.pt


def test_a_link_to_a_diverged_runs_last_pt_is_refused_as_the_run_is(trained, run, tmp_path, capsys, monkeypatch):
    """`ln -s dv/last.pt lk/net.pt`: `predict dv` was refused (the run diverged), but `predict lk/net.pt` answered `1`
    at 100%, `export lk/net.pt` wrote the net and `serve lk/net.pt` served it (`--teacher lk/net.pt` taught with it):
    the refusal looked at `lk`, the link's folder. It follows the link to its run (checkpoint.run_last, as
    `train --resume LINK.pt` does)."""
    import cnnlab.serve.server as srv

    monkeypatch.setattr(srv, "serve_forever", lambda app, sock: pytest.fail("served a diverged run's net"))
    _diverged(run)
    link = tmp_path / "lk" / "net.pt"
    link.parent.mkdir()
    link.symlink_to(run / "last.pt")
    image = tmp_path / "d.png"
    draw_digit().save(image)
    said = f"cnnlab: error: {run} failed, {WHY} (its status.json), and its last.pt holds the weights it diverged with"
    for argv in (["predict", str(link), str(image)], ["export", str(link), "--format", "torchscript"],
                 ["export-weights", str(link)], ["serve", str(link), "--port", "0"]):
        err = _refusal(capsys, argv)
        assert err.startswith(said) and err.endswith("or train it again with a lower --lr"), (argv, err)
    assert f"(cnnlab export {run} --checkpoint best)" in _refusal(capsys, ["export", str(link)])
    err = _refusal(capsys, ["train", "--model", "basic_cnn", "--dataset", f"idx:{trained.parent / 'tiny'}", "--teacher",
                            str(link), "--max-steps", "1", "--threads", "1", "--out", str(tmp_path / "student")])
    assert err.startswith(f"cnnlab: error: --teacher {link}: that run failed, {WHY}") and \
        f"(--teacher {run}/best.pt)" in err, err
    for call in (lambda: cnnlab.predictor(link), lambda: Predictor.from_run(link)):
        with pytest.raises(cnnlab.CheckpointError, match="its last.pt holds the weights it diverged with"):
            call()
    assert not list(tmp_path.glob("lk/*.onnx")) and not list(tmp_path.glob("lk/*.safetensors"))


def test_a_served_link_withdraws_its_net_when_the_run_it_leads_to_diverges(tmp_path):
    """`serve lk/t.pt` (-> t1/last.pt) beside `serve t1`, then t1 trained again and diverged: the server on t1 answered
    503, the one on the link loaded the diverged saves and answered `1` for everything (it watched lk/status.json)."""
    from cnnlab.serve.app import Withdrawn

    run = tmp_path / "t1"
    ckpt = _served_run(run)
    link = tmp_path / "lk" / "t.pt"
    link.parent.mkdir()
    link.symlink_to(ckpt)
    service, logs, warns = _service(link)
    data = _png()
    assert service.predict(data, "upload")["checkpoint"]["step"] == 9
    _diverged(run)
    for _ in range(2):
        with pytest.raises(Withdrawn, match=rf"^{run} failed, training diverged: "):
            service.predict(data, "upload")
    assert len(warns) == 1 and f"the net served from {link} (step 9, " in warns[0] and logs == [], warns


# ----------------------------------------------------------------------------- D4. a line that cannot be written


class _Unwritable:
    """A stdout or stderr that can no longer be written (its reader gone, or a full disk); no fileno, so that nothing
    points the test's own descriptors elsewhere."""

    def __init__(self, error: OSError):
        self.error, self.tried = error, 0

    def write(self, text: str) -> int:
        self.tried += 1
        raise self.error

    def flush(self) -> None:
        raise self.error


def test_a_reload_line_that_cannot_be_written_fails_no_request(tmp_path, monkeypatch):
    """`serve e1 2> srv.err | head -1`, then `train --resume e1`: the request that reloaded got uvicorn's plain-text
    500 and srv.err a 90-line traceback ending in BrokenPipeError (server._say's bare print); a truncated last.pt's
    warning with stderr gone (`2>&1 | head -1`) did the same."""
    import cnnlab.serve.server as srv
    from cnnlab.serve.app import create_app
    from test_serve import post
    from test_serve_faults import Served

    monkeypatch.setattr(output, "_reader_gone", False)  # (output.say marks it; put back after the test)
    ckpt = _trained_checkpoint(tmp_path / "e1" / "last.pt", step=60)
    app = create_app(Predictor.from_run(ckpt, device="cpu"), say=srv._say, warn=srv._warn)  # as run_server does
    with Served(app) as server:
        assert post(server.url, _png())[0] == 200
        stdout, stderr = _Unwritable(BrokenPipeError(errno.EPIPE, "Broken pipe")), _Unwritable(OSError(errno.EIO, "x"))
        monkeypatch.setattr(sys, "stdout", stdout)
        monkeypatch.setattr(sys, "stderr", stderr)
        _trained_checkpoint(ckpt, seed=1, step=80)  # resumed: the next request loads it again, and says so
        status, body = post(server.url, _png())
        assert status == 200 and body["checkpoint"]["step"] == 80 and stdout.tried == 1
        ckpt.write_bytes(ckpt.read_bytes()[:100])  # truncated in place: a warning, on stderr
        status, body = post(server.url, _png())
        assert status == 200 and body["checkpoint"]["step"] == 80 and stderr.tried >= 1
        assert post(server.url, _png())[0] == 200


def test_a_services_own_line_that_fails_fails_no_request(tmp_path):
    """The API's say and warn (create_app(say=..., warn=...)) may fail too (a full disk: output.OutputError)."""
    def full(msg: str) -> None:
        raise output.OutputError("No space left on device")

    ckpt = _trained_checkpoint(tmp_path / "s1" / "last.pt", step=20)
    service, _, _ = _service(ckpt, say=full, warn=full)
    _trained_checkpoint(ckpt, seed=1, step=40)
    assert service.predict(_png(), "upload")["checkpoint"]["step"] == 40
    ckpt.unlink()
    assert service.predict(_png(), "upload")["checkpoint"]["step"] == 40


# ----------------------------------------------------------------------------- D2. a withdrawn net's file deleted


def test_a_withdrawn_net_whose_file_is_deleted_says_it_still_answers_no_more_and_info_says_why(tmp_path):
    """After a served run diverged and was deleted: `t2/last.pt is gone (deleted or moved); still serving the net
    loaded from it`, while every answer was 503 citing a status.json and a last.pt that no longer existed, and /info
    showed nothing wrong."""
    from cnnlab.serve.app import Withdrawn

    run = tmp_path / "t2"
    ckpt = _served_run(run, step=60)
    service, logs, warns = _service(ckpt)
    data = _png()
    assert service.predict(data, "upload")["checkpoint"]["step"] == 60 and service.info(1 << 20)["withdrawn"] is None
    _diverged(run)
    with pytest.raises(Withdrawn, match=rf"^{run} failed, training diverged: "):
        service.predict(data, "upload")
    assert service.info(1 << 20)["withdrawn"].startswith(f"{run} failed, training diverged: ")
    shutil.rmtree(run)
    gone = (f"{ckpt} is gone (deleted or moved); the net loaded from it (step 60, 1 epoch, sha256 "
            f"{service.predictor.checkpoint['sha256'][:12]}) still answers no more (503), its run having diverged; put "
            "a checkpoint that loads in its place (the run trained again with a lower --lr), or serve another run")
    with pytest.raises(Withdrawn) as refused:
        service.predict(data, "upload")
    assert str(refused.value) == (f"the net served from {ckpt} answers no more: its run diverged, and {ckpt} is gone "
                                  "(deleted or moved); put a checkpoint that loads in its place (the run trained "
                                  "again with a lower --lr), or serve another run")
    assert "status.json" not in str(refused.value) and service.info(1 << 20)["withdrawn"] == str(refused.value)
    assert warns[-1] == gone and len(warns) == 2 and "still serving" not in " ".join(warns), warns
    _served_run(run, step=80)  # trained again, well: its save loads and answers
    assert service.predict(data, "upload")["checkpoint"]["step"] == 80 and service.info(1 << 20)["withdrawn"] is None


# ----------------------------------------------------------------------------- D5. a served link to nowhere


def test_a_served_checkpoint_whose_link_leads_nowhere_is_named_with_its_target(tmp_path):
    """`g5/last.pt -> store/last.pt`, then the store unmounted: serve warned `g5/last.pt is gone (deleted or moved)`
    where predict says `g5/last.pt is a link to .../store/last.pt, which does not exist: remount what held it, or put
    it back`."""
    store = tmp_path / "store"
    kept = _trained_checkpoint(store / "last.pt", step=60)
    run = tmp_path / "g5"
    run.mkdir()
    for name in ("last.pt", "last.pt.sha256"):
        (run / name).symlink_to(store / name)
    service, logs, warns = _service(run / "last.pt")
    data = _png()
    sha = service.predictor.checkpoint["sha256"][:12]
    store.rename(tmp_path / "store.unmounted")
    assert service.predict(data, "upload")["checkpoint"]["step"] == 60
    assert warns == [f"{run}/last.pt is a link to {kept}, which does not exist (remount what held it, or put it back); "
                     f"still serving the net loaded from it (step 60, 1 epoch, sha256 {sha})"], warns


# ----------------------------------------------------------------------------- D3. --host HOST:PORT, or a URL


@pytest.mark.parametrize("host, said", [
    ("0.0.0.0:8080", "--host '0.0.0.0:8080' holds a port; give --host 0.0.0.0 --port 8080"),
    ("localhost:8000", "--host 'localhost:8000' holds a port; give --host localhost --port 8000"),
    ("[::1]:8080", "--host '[::1]:8080' holds a port; give --host ::1 --port 8080"),
    ("http://127.0.0.1:8000/", "--host 'http://127.0.0.1:8000/' is a URL; give the address alone: --host 127.0.0.1 "
                               "--port 8000"),
    ("https://example.com/x", "--host 'https://example.com/x' is a URL; give the address alone: --host example.com"),
])
def test_a_host_with_a_port_or_a_url_is_named_so(host, said, capsys):
    """`serve --host 0.0.0.0:8080` said `cannot listen on [0.0.0.0:8080]:8000 (Name or service not known); pick
    another --port or --host`: a fake IPv6 address, the port 8000, not the 8080 asked for, and a fix that did not
    apply."""
    assert _refusal(capsys, ["serve", "--host", host]) == f"cnnlab: error: {said}"


def test_ipv6_addresses_are_not_taken_for_a_host_and_a_port():
    from cnnlab.serve.server import check_host

    for host in ("::1", "fe80::1:8080", "[::1]", "127.0.0.1", "localhost"):
        assert check_host(host) == host.strip("[]")


# ----------------------------------------------------------------------------- D6. a Range with a part that is no range


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    from cnnlab.serve.app import create_app

    return create_app(Predictor.from_run(tiny_checkpoint(tmp_path_factory.mktemp("fixS") / "last.pt"), device="cpu"))


def test_a_range_with_a_part_that_is_no_range_is_ignored_whatever_is_beside_it(app):
    """`bytes=abc-` was 200 (ignored), `bytes=abc-, 0-1` 206 (the part skipped) and `bytes=abc-, 99999-` 416 "asks for
    no byte of this file": one kind of invalid Range, three outcomes. RFC 9110: a Range not valid by the grammar is
    ignored (200, the whole file); a valid one of which no range can be served is 416."""
    from test_serve_faults import Served
    from test_serve_srvS_s43 import _raw

    whole = (STATIC / "app.js").read_bytes()

    def get(rng: str):
        return _raw(srv, f"GET /static/app.js HTTP/1.1\r\nHost: x\r\nRange: {rng}\r\nConnection: close\r\n\r\n".encode())

    with Served(app) as srv:
        for rng in ("bytes=abc-", "bytes=abc-, 99999-", "bytes=0x10-20", "bytes=0x10-20, 99999-", "bytes=5-4, 0-1",
                    "bytes=abc-, 0-1", "bytes=99999-5", "bytes=0-1, x"):
            status, headers, body = get(rng)
            assert status == 200 and body == whole and "content-range" not in headers, rng
        status, headers, body = get("bytes=0-1,, 4-5")  # empty list elements are no error (RFC 9110 5.6.1)
        assert status == 206 and headers["content-type"].startswith("multipart/byteranges")
        status, headers, body = get("bytes=0-10, 99999-")
        assert status == 206 and body == whole[:11]
        for rng in ("bytes=99999-", "bytes=-0", "bytes=99999-, 100000-200000"):
            status, headers, body = get(rng)
            assert status == 416 and json.loads(body)["error"].startswith(f"Range {rng} asks for no byte"), rng
