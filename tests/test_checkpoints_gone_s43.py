"""(srvS.) A run whose checkpoints were deleted or moved is said to be so by every command and by the API: one source
of the line (``checkpoint._why_none``, through ``resolve_checkpoint``; ``runs.checkpoints_gone`` its words)."""

from __future__ import annotations

import shutil

import pytest

import cnnlab
from apps_helpers import draw_digit
from cnnlab.cli import main
from cnnlab.engine import train
from conftest import tiny_config

GONE = "but its checkpoints (last.pt, best.pt) were deleted or moved: put them back, or train it again"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Two runs: one stopped by --max-steps before its first epoch ended (last.pt and summary.json, no metrics.csv:
    the tester's), one finished (every file)."""
    from conftest import write_idx_dataset

    root = tmp_path_factory.mktemp("gone")
    data = write_idx_dataset(root / "tiny")
    runs = {"stopped": root / "stopped", "finished": root / "finished", "data": data}
    train(tiny_config(data, max_steps=2), out=runs["stopped"], quiet=True, log=lambda m: None)
    train(tiny_config(data), out=runs["finished"], quiet=True, log=lambda m: None)
    return runs


@pytest.fixture(params=["stopped", "finished"])
def gone(request, trained, tmp_path):
    """A copy of the run, its checkpoints (and their sidecars) deleted."""
    run = tmp_path / request.param
    shutil.copytree(trained[request.param], run)
    for name in ("last.pt", "last.pt.sha256", "best.pt", "best.pt.sha256"):
        (run / name).unlink(missing_ok=True)
    return run


def _refusal(capsys, argv: list[str]) -> str:
    capsys.readouterr()
    assert main(argv) != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


def test_every_command_says_the_checkpoints_were_deleted(gone, tmp_path, capsys, monkeypatch):
    """`serve` and `predict` said "the run saved no checkpoint (it stopped before its first epoch ended): train it
    again" of a run whose last.pt was deleted, where `evaluate` said it was deleted or moved."""
    import cnnlab.serve.server as srv

    monkeypatch.setattr(srv, "serve_forever", lambda app, sock: None)  # (refused before it would serve)
    image = tmp_path / "d.png"
    draw_digit().save(image)
    commands = [["predict", str(gone), str(image)], ["evaluate", str(gone)], ["serve", str(gone), "--port", "0"],
                ["export", str(gone), "--out", str(tmp_path / "net.onnx")],
                ["analyze", "branches", str(gone), "--out", str(tmp_path / "an")]]
    for argv in commands:
        err = _refusal(capsys, argv)
        assert "no last.pt in this run directory; the run trained (" in err and GONE in err, (argv, err)
        assert "before its first epoch" not in err, (argv, err)
    err = _refusal(capsys, ["evaluate", str(gone), "--checkpoint", "best"])
    assert "no best.pt in this run directory" in err and GONE in err
    err = _refusal(capsys, ["train", "--resume", str(gone)])  # was "the run saved no last.pt before it stopped"
    assert "no position to continue from" in err and GONE in err and "saved no last.pt" not in err
    kept = "(metrics.csv and summary.json remain)" if (gone / "metrics.csv").exists() else "(summary.json remains)"
    assert kept in err


def test_the_api_says_the_checkpoints_were_deleted(gone):
    for call in (lambda: cnnlab.load_run(gone).model(), lambda: cnnlab.load_run(gone).predictor(),
                 lambda: cnnlab.load_run(gone).checkpoint(), lambda: cnnlab.predictor(gone)):
        with pytest.raises(cnnlab.CheckpointError) as err:
            call()
        assert GONE in str(err.value) and "before its first epoch" not in str(err.value)


def test_a_teacher_whose_checkpoints_were_deleted_is_said_so(gone, trained, tmp_path, capsys):
    err = _refusal(capsys, ["train", "--model", "basic_cnn", "--dataset", f"idx:{trained['data']}",
                            "--teacher", str(gone), "--epochs", "1", "--out", str(tmp_path / "student")])
    assert GONE in err and "before its first epoch" not in err


def test_a_run_that_never_saved_is_still_said_to_have_stopped_before_its_first_epoch(trained, tmp_path, capsys):
    """The line for a run that never saved (killed in its first epoch: config.json alone) is kept."""
    run = tmp_path / "killed"
    run.mkdir()
    shutil.copy(trained["stopped"] / "config.json", run / "config.json")
    err = _refusal(capsys, ["predict", str(run), str(tmp_path / "none.png")])
    assert "the run saved no checkpoint (it stopped before its first epoch ended)" in err
