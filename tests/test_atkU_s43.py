"""The defects a tester (atkU, s43) found in the day's serve, export and checkpoint-message fixes: a Range with one
range past the end, checkpoints that are links to nothing, and a diverged run whose kept last.pt was deleted.

Servers run on 127.0.0.1 only, in a thread (``make_server``, as the command builds it), each bounded in time.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import cnnlab
from apps_helpers import draw_digit, tiny_checkpoint
from cnnlab.cli import main
from cnnlab.engine import train
from cnnlab.predict import Predictor
from cnnlab.runs import write_status
from conftest import tiny_config

STATIC = Path(__file__).resolve().parents[1] / "src" / "cnnlab" / "serve" / "static"
DIVERGED = ("training diverged: the loss exploded (1.66e+06 per image, where a net that guesses scores 2.3) at step 12 "
            "(epoch 1, batch 12); the learning rate (0.3) is the likely cause: lower --lr (e.g. 0.03) or use a recipe "
            "(--recipe fast); the last finite checkpoint is kept: {run}/last.pt")
WHY = "training diverged: the loss exploded (1.66e+06 per image, where a net that guesses scores 2.3) at step 12 " \
      "(epoch 1, batch 12)"


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


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
    return _one_line(capsys)


# ----------------------------------------------------------------------------- a diverged run


def _diverged(run: Path) -> Path:
    write_status(run, "failed", DIVERGED.format(run=run))
    return run


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
