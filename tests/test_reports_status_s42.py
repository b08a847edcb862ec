"""Found by a tester of session 42's fixes to reports, evaluate's stops and the causes of failed runs (atkL): a status
written by an earlier process spoke for a later one, a stopped or killed report left an earlier curves.png, a full
disk failed a finished run that was only re-evaluated, a second stop lost the line of what was written, a copied
checkpoint's folder was named as a run, and one row of a page sank the others. docs/reliability.md lists them."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import no_room_for, tiny_config

import cnnlab.checkpoint
import cnnlab.drawing
import cnnlab.plots
from cnnlab.cli import main
from cnnlab.engine import train
from cnnlab.fileio import write_error

QUIET = dict(quiet=True, log=lambda m: None)


def _full_disk_for(monkeypatch, name: str) -> None:
    """Writes of the checkpoint ``name`` fail as fileio says a full disk does."""
    real = cnnlab.checkpoint.atomic_write_bytes

    def write(path, data, **options):
        if Path(path).name == name:
            raise write_error(path, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
        real(path, data, **options)

    monkeypatch.setattr(cnnlab.checkpoint, "atomic_write_bytes", write)


# ----------------------------------------------------------------------------- 2: a full disk before the first save


def test_evaluate_of_a_run_that_failed_before_its_first_save_names_the_failure(tiny_idx, tmp_path, monkeypatch,
                                                                                capsys):
    """A run whose disk filled up as it wrote its first last.pt (metrics.csv written): `evaluate` said its
    checkpoints were "deleted or moved: put them back", where `export`, `predict` and `--resume` named the failure."""
    run = tmp_path / "fd2"
    _full_disk_for(monkeypatch, "last.pt")
    assert main(["train", "--model", "basic_cnn", "--dataset", f"idx:{tiny_idx}", "--batch-size", "32", "--device",
                 "cpu", "--out", str(run), "--quiet"]) == 2
    monkeypatch.undo()
    cause = json.loads((run / "status.json").read_text())["detail"]
    assert f"cannot write {run / 'last.pt'}: No space left on device" in cause and (run / "metrics.csv").is_file()
    capsys.readouterr()
    for command in (["evaluate", str(run)], ["export", str(run)]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert err == (f"cnnlab: error: {run}: no last.pt in this run directory; the run saved no checkpoint: it failed "
                       f"({cause})\n"), err


# ----------------------------------------------------------------------------- 6: a copied checkpoint's figures


def test_the_figures_of_a_copied_checkpoint_name_the_file_not_its_folder_as_a_run(tiny_idx, tmp_path, monkeypatch):
    """`evaluate shared/model-from-colleague.pt --out R2`: its figures read `run shared · checkpoint
    model-from-colleague.pt`, a folder that is no run; now `weights model-from-colleague.pt`, as `--weights FILE`."""
    contexts = []
    real = cnnlab.plots.plot_confusion
    monkeypatch.setattr(cnnlab.plots, "plot_confusion",
                        lambda *a, **k: contexts.append(cnnlab.drawing.context_text(k["context"])) or real(*a, **k))
    run = tmp_path / "runs" / "r1"
    train(tiny_config(tiny_idx), out=run, **QUIET)
    contexts.clear()  # the training's own
    shared = tmp_path / "shared"
    shared.mkdir()
    shutil.copy(run / "last.pt", shared / "model-from-colleague.pt")
    shutil.copy(run / "last.pt", shared / "last.pt")
    data = f"idx:{tiny_idx}"
    for name, out in (("model-from-colleague.pt", "R2"), ("last.pt", "R3")):
        assert main(["evaluate", str(shared / name), "--out", str(tmp_path / out), "--device", "cpu"]) == 0
    assert main(["evaluate", str(run / "best.pt"), "--out", str(tmp_path / "R4"), "--device", "cpu"]) == 0
    assert contexts == [f"model basic_cnn · dataset {data} · weights model-from-colleague.pt",
                        f"model basic_cnn · dataset {data} · weights last.pt",
                        f"model basic_cnn · dataset {data} · run r1 · checkpoint best.pt"], contexts


# ----------------------------------------------------------------------------- 3, 8: an earlier report's curves.png


def test_a_resumes_report_removes_the_earlier_curves_with_the_earlier_summary(tiny_idx, tmp_path, monkeypatch):
    """A resume killed (SIGKILL, a second SIGTERM) after its new summary.json left the earlier curves.png (1 epoch,
    "best test accuracy 59.00%") beside the new summary (2 epochs): curves.png was not among the figures removed the
    moment before a summary.json is renamed into place. Where its drawing begins (the new summary.json in place),
    the folder now holds no curves.png; it is then drawn from every epoch."""
    run = tmp_path / "tpl"
    train(tiny_config(tiny_idx, epochs=2, max_steps=10), out=run, **QUIET)
    assert (run / "curves.png").is_file()
    seen, earlier = [], (run / "summary.json").read_text()
    real = cnnlab.plots.plot_curves

    def drawing(history, path, **kwargs):
        seen.append(((run / "summary.json").read_text() != earlier, len(history), path.exists()))
        return real(history, path, **kwargs)

    monkeypatch.setattr(cnnlab.plots, "plot_curves", drawing)
    train(tiny_config(tiny_idx, epochs=2), resume=run, **QUIET)
    assert seen == [(True, 2, False)], seen
    assert (run / "curves.png").is_file()


def test_an_evaluation_into_another_folder_leaves_no_earlier_reports_curves(tiny_idx, tmp_path, capsys):
    """`evaluate r1 --out D2` over an earlier report holding curves.png: the earlier curves.png stayed beside the
    new report, which draws none, without a word. It goes with the earlier summary.json; a run's own report keeps
    its curves.png while metrics.csv is not newer (tests/test_cli.py)."""
    a, b = tmp_path / "runs" / "a", tmp_path / "runs" / "b"
    train(tiny_config(tiny_idx), out=a, **QUIET)
    train(tiny_config(tiny_idx, seed=7), out=b, **QUIET)
    out = tmp_path / "D2"
    out.mkdir()
    for name in ("curves.png", "summary.json", "confusion.png", "mistakes.png"):
        shutil.copy(a / name, out / name)
    assert main(["evaluate", str(b), "--out", str(out), "--device", "cpu"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["confusion.png", "mistakes.png", "summary.json"]
    assert main(["evaluate", str(a), "--device", "cpu"]) == 0  # its own folder: its curves.png stays
    assert (a / "curves.png").is_file()


# ----------------------------------------------------------------------------- 3, 5: two stops in a row

SRC = str(Path(__file__).resolve().parents[1] / "src")

#: A drawing of confusion.png that stops its own process twice (the signal, then again 0.3 s later, as Ctrl-C
#: pressed twice) and then draws.
STOPPED_TWICE_WHILE_DRAWING = """
import os, signal, sys, time
import cnnlab.plots
from cnnlab.cli import main
real = cnnlab.plots.plot_confusion
def stopping(*args, **kwargs):
    os.kill(os.getpid(), getattr(signal, sys.argv[1]))
    time.sleep(0.3)
    os.kill(os.getpid(), getattr(signal, sys.argv[1]))
    time.sleep(0.5)
    return real(*args, **kwargs)
cnnlab.plots.plot_confusion = stopping
print("exit", main(sys.argv[2:]), flush=True)
"""


def _stopped_twice(signal_name: str, *command: str):
    env = {**os.environ, "PYTHONPATH": SRC}
    return subprocess.run([sys.executable, "-c", STOPPED_TWICE_WHILE_DRAWING, signal_name, *command],
                          capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.parametrize("signal_name, code", [("SIGINT", 130), ("SIGTERM", 143)])
def test_an_evaluation_stopped_twice_while_drawing_still_says_what_it_wrote(tiny_idx, tmp_path, signal_name, code):
    """Ctrl-C twice (SIGTERM, SIGHUP twice) 20 ms apart while evaluate drew its figures: only `cnnlab: interrupted`,
    the new summary.json without figures: the second stop broke the wait for the figure being drawn, and the line
    of what was written and what not was lost. A stop while stopping is held back until that line is said."""
    run = tmp_path / "runs" / "r1"
    train(tiny_config(tiny_idx), out=run, **QUIET)
    out = tmp_path / "E2"
    done = _stopped_twice(signal_name, "evaluate", str(run), "--out", str(out), "--device", "cpu")
    assert f"exit {code}" in done.stdout, (done.returncode, done.stdout[-500:], done.stderr[-2000:])
    assert (f"cnnlab: warning: report incomplete: wrote summary.json, confusion.png in {out}, not mistakes.png: "
            "stopped; run it again\n") in done.stderr, done.stderr
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["confusion.png", "summary.json"]


#: A command whose process signals itself (twice: Ctrl-C pressed twice) the moment its summary.json is renamed in.
STOPPED_AS_ITS_SUMMARY_IS_RENAMED = """
import os, signal, sys
from pathlib import Path
from cnnlab.cli import main
real = os.replace
def replace(src, dst):
    real(src, dst)
    if Path(dst).name == "summary.json":
        os.kill(os.getpid(), getattr(signal, sys.argv[1]))
        os.kill(os.getpid(), getattr(signal, sys.argv[1]))
os.replace = replace
print("exit", main(sys.argv[2:]), flush=True)
"""


def test_an_evaluation_stopped_as_its_summary_is_renamed_in_says_what_it_wrote(tiny_idx, tmp_path):
    """A stop in the moment after the new summary.json was renamed in, before its figures began (the tester's
    `sig2.py INT E2/summary.json 0 0.01`): `cnnlab: interrupted` alone, the summary without figures. The stops
    are held from the summary's write until its figures are being drawn, and taken by them then."""
    run = tmp_path / "runs" / "r1"
    train(tiny_config(tiny_idx), out=run, **QUIET)
    out = tmp_path / "E2"
    env = {**os.environ, "PYTHONPATH": SRC}
    done = subprocess.run([sys.executable, "-c", STOPPED_AS_ITS_SUMMARY_IS_RENAMED, "SIGINT", "evaluate", str(run),
                           "--out", str(out), "--device", "cpu"], capture_output=True, text=True, env=env, timeout=300)
    assert "exit 130" in done.stdout, (done.returncode, done.stdout[-500:], done.stderr[-2000:])
    line = next((x for x in done.stderr.splitlines() if "report incomplete" in x), "")
    assert line.startswith("cnnlab: warning: report incomplete: wrote summary.json") and f" in {out}, not " in line
    assert line.endswith("mistakes.png: stopped; run it again"), done.stderr


def test_a_run_stopped_twice_while_drawing_its_figures_says_what_it_wrote(tiny_idx, tmp_path):
    """A second SIGTERM while a run drew its figures (its training over): `stopped at once by a second SIGTERM`, and
    no word of its figures (the earlier curves.png beside the new summary on a resume). Now the line names what was
    written and how the figures are drawn again."""
    run = tmp_path / "T2"
    done = _stopped_twice("SIGTERM", "train", "--model", "basic_cnn", "--dataset", f"idx:{tiny_idx}", "--batch-size",
                          "32", "--device", "cpu", "--out", str(run), "--quiet")
    assert "exit 143" in done.stdout, (done.returncode, done.stdout[-500:], done.stderr[-2000:])
    assert (f"cnnlab: warning: report incomplete: wrote summary.json, curves.png, confusion.png in {run}, not "
            f"mistakes.png: stopped; 'cnnlab evaluate {run}' draws them again\n") in done.stderr, done.stderr
    assert f"stopped at once by a second SIGTERM; continue with: cnnlab train --resume {run}" in done.stderr
    assert json.loads((run / "status.json").read_text())["status"] == "stopped"


# ----------------------------------------------------------------------------- 1, 3, 4: whose status.json it is

HERE = Path(__file__).resolve().parent
ARGS = ["--model", "basic_cnn", "--batch-size", "32", "--lr", "0.05", "--device", "cpu", "--threads", "1", "--quiet"]


def _killed_at(fault: str, *args: str) -> subprocess.CompletedProcess:
    """``cnnlab ARGS`` SIGKILLed at the write boundary ``fault`` (tests/fault_worker.py)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(HERE / "fault_worker.py"), fault, "--", *args], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == -9, done.stderr[-2000:]
    return done


def _row(run: Path) -> tuple[str, str]:
    from cnnlab.runs import describe_run

    row = describe_run(run)
    return row["status"], row["detail"]


def test_a_run_killed_before_its_first_save_is_not_blamed_on_an_earlier_runs_failure(tiny_idx, tmp_path, capsys):
    """A run diverged in a folder (status.json: failed, `the learning rate (1e+06)`); a run started again there with
    another --lr was SIGKILLed before its first checkpoint: evaluate, export, predict, --resume and `cnnlab runs`
    all said it failed by a divergence at 1e+06, the status.json of the earlier process. A process that begins to
    train a run now writes "running" first: killed, it reads as stopped before its first epoch ended."""
    run = tmp_path / "dv2"
    assert main(["train", "--dataset", f"idx:{tiny_idx}", *ARGS[:4], "--lr", "1e6", *ARGS[6:], "--out", str(run)]) == 2
    assert json.loads((run / "status.json").read_text())["detail"].startswith("training diverged")
    _killed_at("metrics.csv:before-rename:1", "train", "--dataset", f"idx:{tiny_idx}", *ARGS, "--out", str(run))
    assert json.loads((run / "config.json").read_text())["config"]["lr"] == 0.05
    assert _row(run) == ("failed", "no checkpoint was saved")
    capsys.readouterr()
    for command in (["evaluate", str(run)], ["export", str(run)], ["predict", str(run), "x.png"],
                    ["train", "--resume", str(run)]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert "diverged" not in err and "1e+06" not in err and err.count("\n") == 1, err
        assert "the run saved no" in err and "before" in err, err


def test_a_resume_killed_while_it_writes_its_report_is_listed_as_killed(tiny_idx, tmp_path):
    """A resume SIGKILLed after its new summary.json (5 of 20 random kills): `cnnlab runs` showed the previous
    process's `stopped (--max-steps 40: resume to go on)` beside the new summary. Now the resume's own "running"
    says it was killed; its resume re-evaluates and writes the report whole."""
    run = tmp_path / "T3"
    train(tiny_config(tiny_idx, epochs=2, max_steps=10), out=run, **QUIET)
    assert _row(run) == ("stopped", "--max-steps 10: resume to go on")
    earlier = (run / "summary.json").read_text()
    _killed_at("curves.png:before-rename:1", "train", "--resume", str(run), "--threads", "1", "--quiet")
    assert (run / "summary.json").read_text() != earlier and not (run / "curves.png").exists()
    status, detail = _row(run)
    assert status == "stopped" and detail.startswith("killed, or interrupted without saying so: it resumes from last.pt")
    assert train(tiny_config(tiny_idx, epochs=2), resume=run, **QUIET).stopped == "nothing to train"
    assert _row(run) == ("finished", "") and (run / "curves.png").is_file()


def test_a_full_disk_while_a_finished_run_is_re_evaluated_leaves_it_finished(tiny_idx, tmp_path, monkeypatch, capsys):
    """`train --resume` of a finished run (nothing to train, re-evaluating) on a full disk: exit 2 and status.json
    `failed`, though its training, checkpoints, summary and figures were whole. As `evaluate` into the run's folder,
    its status now stays what it was, and so does its report."""
    run = tmp_path / "f"
    train(tiny_config(tiny_idx), out=run, **QUIET)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != ".lock"}
    no_room_for(monkeypatch, "summary.json")  # no room for the new summary.json
    assert main(["train", "--resume", str(run), "--quiet"]) == 2
    assert f"cannot write {run / 'summary.json'}: No space left on device" in capsys.readouterr().err
    after = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != ".lock"}
    assert after.keys() == before.keys()
    assert {n: b for n, b in after.items() if n != "config.json"} == {n: b for n, b in before.items() if n != "config.json"}
    assert _row(run) == ("finished", "")


# ----------------------------------------------------------------------------- 7: one row of a page refused


def _page(blobs: tuple[bool, bool]):
    """A page of two rows, a '7' and a '1' each, the '1' of a row a filled oval (one blob) where ``blobs`` says."""
    from PIL import Image, ImageDraw

    img = Image.new("L", (400, 300), 255)
    draw = ImageDraw.Draw(img)
    for top, blob in zip((30, 180), blobs):
        draw.line([(40, top), (100, top), (60, top + 80)], fill=0, width=10)
        if blob:
            draw.ellipse([150, top, 215, top + 80], fill=0)
        else:
            draw.line([(170, top), (170, top + 80)], fill=0, width=10)
    return img


def test_a_row_that_cannot_be_read_leaves_the_pages_other_rows_read(tmp_path, capsys):
    """`predict --lines`: a page of two rows, one holding a digit refused as "one dot or blob" (a broad-pen '2' fills
    0.79 of its box, a disc 0.785), was refused whole, `0 images predicted, 1 failed`. Each row's verdict is its own
    now: the row refused is said as a file is (`skipped page.png line 2: ...`, its `--json` entry `line` and `error`,
    `NumberPrediction.refused` in Python), the other rows read; a page of no readable row is refused as before."""
    from cnnlab.imageio import BadImageError
    from cnnlab.predict import Predictor
    from cnnlab.preprocessing import number_lines

    found = number_lines(_page((False, True)), name="page.png")
    assert [len(f.fields) for f in found] == [2, 0] and not found[0].refused
    assert found[1].refused.startswith("page.png line 2: the ink is one dot or blob (")
    with pytest.raises(BadImageError, match=r"^page\.png line 1: the ink is one dot or blob"):
        number_lines(_page((True, True)), name="page.png")
    page = tmp_path / "page.png"
    _page((True, False)).save(page)
    assert main(["predict", "--model", "resnet", "--lines", str(page)]) == 1
    out, err = capsys.readouterr()
    assert out.startswith(f"{page} line 2  71 ") and out.count("\n") == 1, out
    assert err.splitlines() == [f"cnnlab: skipped {page} line 1: the ink is one dot or blob (66x81 px), not a "
                                "digit's strokes; write or draw a digit", "1 image predicted, 1 failed"], err
    assert main(["predict", "--model", "resnet", "--lines", "--json", str(page)]) == 1
    rows = json.loads(capsys.readouterr().out)
    assert [(r["line"], r.get("number"), "error" in r) for r in rows] == [(2, "71", False), (1, None, True)], rows
    read = Predictor.pretrained("resnet", device="cpu").read_lines(page)
    assert [(r.line, r.label, r.probability == 0, bool(r.refused)) for r in read] == [(1, "", True, True),
                                                                                      (2, "71", False, False)]
