"""The defects a tester (atkU, s43) found in the day's serve, export and checkpoint-message fixes: a checkpoint copied
in before its sidecar, a diverged run's last.pt served and predicted with, the reload line silent on another net,
a Range with one range past the end, checkpoints that are links to nothing, a diverged run whose kept last.pt was
deleted, and a folder put in place of the file served.

Servers run on 127.0.0.1 only, in a thread (``make_server``, as the command builds it), each bounded in time.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

import cnnlab
from apps_helpers import draw_digit, tiny_checkpoint
from cnnlab.checkpoint import load_checkpoint, save_checkpoint
from cnnlab.cli import main
from cnnlab.engine import train
from cnnlab.predict import Predictor
from cnnlab.runs import write_status
from conftest import one_line, tiny_config

STATIC = Path(__file__).resolve().parents[1] / "src" / "cnnlab" / "serve" / "static"
DIVERGED = ("training diverged: the loss exploded (1.66e+06 per image, where a net that guesses scores 2.3) at step 12 "
            "(epoch 1, batch 12); the learning rate (0.3) is the likely cause: lower --lr (e.g. 0.03) or use a recipe "
            "(--recipe fast); the last finite checkpoint is kept: {run}/last.pt")
WHY = "training diverged: the loss exploded (1.66e+06 per image, where a net that guesses scores 2.3) at step 12 " \
      "(epoch 1, batch 12)"


def _trained_checkpoint(path: Path, seed: int = 0, step: int = 8, epoch: int = 1, **kwargs) -> Path:
    """A tiny checkpoint that records its place in training (step, whole epochs), as a run's last.pt does."""
    tiny_checkpoint(path, seed=seed, **kwargs)
    state = load_checkpoint(path)
    state["train_state"] = {"epoch": epoch, "batch": 0, "step": step}
    save_checkpoint(path, state)  # a save renames a new file into place, as a training's does
    return path


def _service(ckpt: Path):
    from cnnlab.serve.app import Service

    logs: list[str] = []
    warns: list[str] = []
    return Service(Predictor.from_run(ckpt, device="cpu"), say=logs.append, warn=warns.append), logs, warns


def _png() -> bytes:
    from test_serve import png

    return png(draw_digit())


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A run that finished a tiny epoch (last.pt, best.pt, metrics.csv, summary.json) and its dataset."""
    from conftest import write_idx_dataset

    root = tmp_path_factory.mktemp("atkU")
    data = write_idx_dataset(root / "tiny")
    train(tiny_config(data), out=root / "run", quiet=True, log=lambda m: None)
    return {"run": root / "run", "data": data}


@pytest.fixture
def run(trained, tmp_path) -> Path:
    """A copy of the trained run, to change."""
    copy = tmp_path / "run"
    shutil.copytree(trained["run"], copy)
    return copy


def _refusal(capsys, argv: list[str]) -> str:
    capsys.readouterr()
    assert main(argv) == 2, argv
    return one_line(capsys)


# ----------------------------------------------------------------------------- 1. a checkpoint copied in, then its sidecar


def test_a_checkpoint_copied_in_before_its_sidecar_is_loaded_when_the_sidecar_comes(tmp_path):
    """`cp r2/last.pt s1/last.pt` under a running server, then `cp r2/last.pt.sha256 s1/`: the first copy did not load
    (its hash was not the old sidecar's), and the server served the old net for good, the sidecar's change never
    seen. The stamp covers the sidecar: the file is tried again when it changes."""
    ckpt = _trained_checkpoint(tmp_path / "s1" / "last.pt", seed=0, step=20)
    other = _trained_checkpoint(tmp_path / "r2" / "last.pt", seed=1, step=40)
    service, logs, warns = _service(ckpt)
    data = _png()
    assert service.predict(data, "upload")["checkpoint"]["step"] == 20
    shutil.copyfile(other, ckpt)  # the file first, in place
    for _ in range(2):
        assert service.predict(data, "upload")["checkpoint"]["step"] == 20
    assert len(warns) == 1 and "does not match last.pt.sha256" in warns[0] and logs == [], warns
    shutil.copyfile(other.with_name("last.pt.sha256"), ckpt.with_name("last.pt.sha256"))  # then its sidecar
    answer = service.predict(data, "upload")
    assert answer["checkpoint"]["step"] == 40 and service.info(1 << 20)["checkpoint"]["step"] == 40
    assert len(logs) == 1 and logs[0].startswith(f"{ckpt} changed on disk: loaded it again, now step 40") and len(warns) == 1
    # the sidecar written again alone (as every save does, twice): the same net, nothing said
    ckpt.with_name("last.pt.sha256").write_text(ckpt.with_name("last.pt.sha256").read_text())
    os.utime(ckpt.with_name("last.pt.sha256"), ns=(1, 1))
    assert service.predict(data, "upload") == answer and len(logs) == 1 and len(warns) == 1


def test_the_same_bytes_copied_over_the_file_served_are_not_announced_as_a_new_net(tmp_path):
    ckpt = _trained_checkpoint(tmp_path / "s1" / "last.pt")
    service, logs, warns = _service(ckpt)
    before = service.info(1 << 20)["checkpoint"]
    shutil.copyfile(ckpt, tmp_path / "copy.pt")
    os.replace(tmp_path / "copy.pt", ckpt)  # another inode, the same bytes
    assert service.info(1 << 20)["checkpoint"] == before and logs == warns == []


# ----------------------------------------------------------------------------- 2. a diverged run's last.pt


def _diverged(run: Path) -> Path:
    write_status(run, "failed", DIVERGED.format(run=run))
    return run


def test_predict_serve_and_the_api_refuse_a_diverged_runs_last_pt_as_export_does(run, tmp_path, capsys, monkeypatch):
    """`serve div` and `predict div d0.png` answered with the net a run diverged with (`1` at 100% for every image),
    which `export div` refused. One refusal (checkpoint.diverged_refusal) for every command that answers with a run's
    net or writes it out, naming its best.pt."""
    import cnnlab.serve.server as srv

    monkeypatch.setattr(srv, "serve_forever", lambda app, sock: pytest.fail("served a diverged run's net"))
    _diverged(run)
    image = tmp_path / "d.png"
    draw_digit().save(image)
    said = (f"{run} failed, {WHY} (its status.json), and its last.pt holds the weights it diverged with (a resume of it "
            "diverges again); use its best.pt, the weights of its best epoch before that (")
    for argv in (["predict", str(run), str(image)], ["predict", str(run / "last.pt"), str(image)],
                 ["serve", str(run), "--port", "0"], ["export", str(run), "--format", "torchscript"]):
        err = _refusal(capsys, argv)
        assert err.startswith(f"cnnlab: error: {said}") and err.endswith("or train it again with a lower --lr"), err
    assert "(--checkpoint best)" in _refusal(capsys, ["predict", str(run), str(image)])
    assert f"(cnnlab export {run} --checkpoint best)" in _refusal(capsys, ["export", str(run)])
    for call in (lambda: cnnlab.predictor(run), lambda: cnnlab.load_run(run).predictor(),
                 lambda: Predictor.from_run(run / "last.pt")):
        with pytest.raises(cnnlab.CheckpointError, match="its last.pt holds the weights it diverged with"):
            call()
    assert main(["predict", str(run), str(image), "--checkpoint", "best"]) == 0  # its best.pt: an epoch's, before


def test_evaluate_measures_a_diverged_runs_last_pt_with_a_warning_and_writes_nothing_into_the_run(run, capsys):
    """evaluate (and analyze branches, through evaluation.open_subject) measure it: the accuracy of the broken net
    is the diagnosis; said first, and not written as the run's result."""
    _diverged(run)
    summary = (run / "summary.json").read_bytes()
    assert main(["evaluate", str(run)]) == 0
    captured = capsys.readouterr()
    assert captured.err.startswith(f"cnnlab: warning: {run} failed, {WHY} (its status.json), and its last.pt holds the "
                                   "weights it diverged with: what is measured is that net; --checkpoint best "
                                   "measures its best epoch's weights, saved before that"), captured.err
    assert f"no report written: the run failed ({WHY}), so last.pt is not its result" in captured.out
    assert (run / "summary.json").read_bytes() == summary


def test_a_served_run_that_diverges_stops_answering_and_says_why(tmp_path):
    """A server following a run folder into which a training ran and diverged loaded its saves (`changed on disk:
    loaded it again, now step 9`), then answered `1` at 100% for every image, never a warning: the run's status.json
    is watched too, and the net served from a diverged run's last.pt answers 503 saying why, until the file changes
    to one that loads."""
    from cnnlab.serve.app import Withdrawn

    run = tmp_path / "run"
    ckpt = _trained_checkpoint(run / "last.pt", step=9)
    (run / "config.json").write_text(json.dumps({"config": {"model": "basic_cnn", "dataset": "mnist", "epochs": 1}}))
    write_status(run, "running", "")
    service, logs, warns = _service(ckpt)
    data = _png()
    assert service.predict(data, "upload")["checkpoint"]["step"] == 9
    _diverged(run)
    for _ in range(2):
        with pytest.raises(Withdrawn, match=rf"^{run} failed, training diverged: .*its last.pt holds the weights it "):
            service.predict(data, "upload")
    assert service.info(1 << 20)["checkpoint"]["step"] == 9  # /info still names the net and its file
    assert len(warns) == 1 and warns[0].endswith(f"the net served from {ckpt} (step 9, 1 epoch, sha256 "
                                                 f"{service.predictor.checkpoint['sha256'][:12]}) answers no more (503) "
                                                 "until the file changes"), warns
    write_status(run, "running", "")  # trained again (a lower --lr): its saves load, and answer
    _trained_checkpoint(ckpt, seed=3, step=30)
    assert service.predict(data, "upload")["checkpoint"]["step"] == 30 and len(warns) == 1
    assert logs[-1].startswith(f"{ckpt} changed on disk: loaded it again, now step 30"), logs


def test_a_withdrawn_net_is_a_503_in_the_apps_shape(tmp_path):
    from cnnlab.serve.app import create_app
    from test_serve import post
    from test_serve_faults import Served

    run = tmp_path / "run"
    ckpt = _trained_checkpoint(run / "last.pt")
    (run / "config.json").write_text(json.dumps({"config": {"model": "basic_cnn", "dataset": "mnist", "epochs": 1}}))
    app = create_app(Predictor.from_run(ckpt, device="cpu"), say=lambda m: None, warn=lambda m: None)
    with Served(app) as srv:
        assert post(srv.url, _png())[0] == 200
        _diverged(run)
        status, body = post(srv.url, _png())
    assert status == 503 and body["error"].startswith(f"{run} failed, training diverged: "), body


# ----------------------------------------------------------------------------- 3. the reload line names another net


def test_the_reload_line_names_the_model_and_dataset_when_another_net_comes(tmp_path):
    """`cp rf/last.pt shared/tmp.pt && mv shared/tmp.pt shared/net.pt` under `serve shared/net.pt`: the digits'
    server became a Fashion-MNIST one (answering "Shirt"), and the line said only `now step 20, 0 epochs, ...`."""
    ckpt = _trained_checkpoint(tmp_path / "shared" / "net.pt", step=20, epoch=0)
    ckpt.with_name("net.pt.sha256").unlink()  # a run's file copied alone (`cp r1/last.pt shared/net.pt`)
    service, logs, warns = _service(ckpt)
    clothes = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
               "Ankle boot"]
    _trained_checkpoint(tmp_path / "shared" / "tmp.pt", seed=1, step=20, epoch=0, dataset="fashion-mnist",
                        classes=clothes).with_name("tmp.pt.sha256").unlink()
    os.replace(tmp_path / "shared" / "tmp.pt", ckpt)
    info = service.info(1 << 20)
    assert info["dataset"] == "fashion-mnist" and info["classes"] == clothes  # the page's bars follow /info's
    assert len(logs) == 1 and warns == []
    assert logs[0].startswith(f"{ckpt} changed on disk: loaded it again, now another net, basic_cnn trained on "
                              "fashion-mnist (10 classes), step 20, 0 epochs, sha256 "), logs
    assert "(was basic_cnn trained on mnist (10 classes), step 20, 0 epochs, sha256 " in logs[0]
    _trained_checkpoint(tmp_path / "shared" / "tmp.pt", seed=2, step=30, epoch=1, dataset="fashion-mnist",
                        classes=clothes).with_name("tmp.pt.sha256").unlink()
    os.replace(tmp_path / "shared" / "tmp.pt", ckpt)  # the same net trained on: its steps only
    service.info(1 << 20)
    assert logs[1].startswith(f"{ckpt} changed on disk: loaded it again, now step 30, 1 epoch, sha256 "), logs


# ----------------------------------------------------------------------------- 4. one range past the end among others


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    from cnnlab.serve.app import create_app

    return create_app(Predictor.from_run(tiny_checkpoint(tmp_path_factory.mktemp("atkU") / "last.pt"), device="cpu"))


def test_ranges_that_can_be_served_are_206_beside_one_past_the_end(app):
    """`Range: bytes=0-10, 99999-` on app.js was 416 "asks for no byte of this file" (Starlette refuses the whole
    header when any range starts past the end); RFC 9110 14.2: 416 only when none can be served."""
    from test_serve_faults import Served
    from test_serve_srvS_s43 import _raw

    whole = (STATIC / "app.js").read_bytes()
    with Served(app) as srv:
        status, headers, body = _raw(srv, b"GET /static/app.js HTTP/1.1\r\nHost: x\r\nRange: bytes=0-10, 99999-\r\n"
                                          b"Connection: close\r\n\r\n")
        assert status == 206 and body == whole[:11] and headers["content-range"] == f"bytes 0-10/{len(whole)}"
        status, headers, body = _raw(srv, b"GET / HTTP/1.1\r\nHost: x\r\nRange: bytes=99999-, -0, 0-4, 10-14\r\n"
                                          b"Connection: close\r\n\r\n")
        page = (STATIC / "index.html").read_bytes()
        assert status == 206 and headers["content-type"].startswith("multipart/byteranges")
        assert page[:5] in body and page[10:15] in body and b"99999" not in body
        status, _, body = _raw(srv, b"GET / HTTP/1.1\r\nHost: x\r\nRange: bytes=99999-, 100000-200000\r\n"
                                    b"Connection: close\r\n\r\n")
        assert status == 416 and "asks for no byte of this file" in json.loads(body)["error"]


# ----------------------------------------------------------------------------- 5. checkpoints that are links to nothing


def test_checkpoints_that_are_links_to_nothing_are_named(run, tmp_path, capsys):
    """A run whose last.pt and best.pt are links into a folder that is gone (unmounted, deleted): "the run saved no
    checkpoint (it stopped before its first epoch ended): train it again", a broken link taken for a checkpoint."""
    store = tmp_path / "store"
    store.mkdir()
    for name in ("last.pt", "best.pt"):
        (run / name).rename(store / name)
        (run / name).symlink_to(store / name)
    shutil.rmtree(store)
    image = tmp_path / "d.png"
    draw_digit().save(image)
    line = f"{run}/last.pt is a link to {store}/last.pt, which does not exist: remount what held it, or put it back"
    for argv in (["predict", str(run), str(image)], ["export", str(run)], ["evaluate", str(run)],
                 ["predict", str(run / "last.pt"), str(image)], ["export-weights", str(run)],
                 ["serve", str(run), "--port", "0"]):
        assert _refusal(capsys, argv) == f"cnnlab: error: {line}", argv
    assert f"{run}/best.pt is a link to {store}/best.pt, which does not exist" in \
        _refusal(capsys, ["evaluate", str(run), "--checkpoint", "best"])
    err = _refusal(capsys, ["train", "--resume", str(run)])
    assert err.endswith(f"no position to continue from; last.pt is a link to {store}/last.pt and best.pt is a link "
                        f"to {store}/best.pt, which do not exist: remount what held them, or put them back"), err
    with pytest.raises(cnnlab.CheckpointError, match="is a link to .*, which does not exist"):
        cnnlab.load_run(run).model()
    assert "first epoch" not in err


# ----------------------------------------------------------------------------- 6. a diverged run's kept last.pt deleted


def test_a_diverged_run_whose_kept_last_pt_was_deleted_is_said_so(run, tmp_path, capsys):
    """`g4: no last.pt ...; the run saved no checkpoint: it failed (training diverged: ...; the last finite checkpoint
    is kept: g4/last.pt)`, a line that contradicts itself, from predict, export, evaluate and train --resume."""
    _diverged(run)
    for name in ("last.pt", "last.pt.sha256", "best.pt", "best.pt.sha256"):
        (run / name).unlink()
    image = tmp_path / "d.png"
    draw_digit().save(image)
    said = (f"the run failed, {WHY} (its status.json), and the last.pt it kept, the weights it diverged with, was "
            "deleted or moved since: train it again with a lower --lr")
    for argv in (["predict", str(run), str(image)], ["export", str(run)], ["evaluate", str(run)]):
        assert _refusal(capsys, argv) == f"cnnlab: error: {run}: no last.pt in this run directory; {said}", argv
    err = _refusal(capsys, ["train", "--resume", str(run)])
    assert err.endswith(f"no position to continue from; {said}") and "saved no" not in err, err


# ----------------------------------------------------------------------------- 7. a folder in place of the file served


def test_a_folder_put_in_place_of_the_file_served_is_not_read_as_a_run_folder(tmp_path):
    """`mv s1/last.pt s1/keep.pt; mkdir s1/last.pt` under `serve s1`: the reload took the path for a run folder ("not
    a run folder"); one holding a last.pt of its own would have been served without a word."""
    ckpt = _trained_checkpoint(tmp_path / "s1" / "last.pt", step=8)
    service, logs, warns = _service(ckpt)
    before = service.info(1 << 20)["checkpoint"]
    ckpt.rename(tmp_path / "s1" / "keep.pt")
    ckpt.mkdir()
    _trained_checkpoint(ckpt / "last.pt", seed=5, step=99)  # a run's file inside it
    for _ in range(2):
        assert service.info(1 << 20)["checkpoint"] == before
    assert logs == [] and warns == [f"{ckpt} is now a directory, not a checkpoint file; still serving the net loaded "
                                    f"before (step 8, 1 epoch, sha256 {before['sha256'][:12]})"], warns
