"""The defects a tester (probe trust, s44) found in the refusals of diverged runs, in resumes of a checkpoint copied
into a folder of the user's, under a data-segment limit (``ulimit -d``), in ``analyze branches`` of a run it writes
nothing into, and in the folders a failed command made on the way to its own.

A divergence is recorded as the training writes it (:func:`cnnlab.runs.write_status`, the engine's line), on tiny runs.
"""

from __future__ import annotations

import errno
import json
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import cnnlab
import cnnlab.cli
import cnnlab.runs
from apps_helpers import draw_digit
from cnnlab.cli import main
from cnnlab.errors import CnnlabError
from cnnlab.runs import write_status
from conftest import no_room_for, one_line, trained_once

WHY = ("training diverged: the loss exploded (1.66e+06 per image, where a net that guesses scores 2.3) at step 2 "
       "(epoch 1, batch 2)")
DIVERGED = WHY + ("; the learning rate (0.3) is the likely cause: lower --lr (e.g. 0.03) or use a recipe (--recipe "
                  "fast); the last finite checkpoint is kept: {run}/last.pt")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A tiny run that finished its epoch: last.pt, best.pt, metrics.csv, summary.json."""
    return trained_once(tmp_path_factory, "fixT-finished")


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory) -> Path:
    """A tiny run stopped at step 2 of its first epoch (--max-steps 2): last.pt, no best.pt, no metrics.csv."""
    return trained_once(tmp_path_factory, "fixT-stopped", max_steps=2)


def _copy(run: Path, tmp_path: Path, name: str = "run") -> Path:
    return Path(shutil.copytree(run, tmp_path / name))


def _diverged(run: Path) -> Path:
    """``run`` as a run whose training diverged after it saved its last.pt (its status.json, as the engine writes it)."""
    write_status(run, "failed", DIVERGED.format(run=run))
    return run


def _image(tmp_path: Path) -> Path:
    image = tmp_path / "d.png"
    draw_digit().save(image)
    return image


def _snapshot(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


# ----------------------------------------------------------------------------- D2: no best.pt in a diverged run


def test_a_diverged_run_without_best_pt_says_to_train_again_not_to_use_last(stopped_run, finished_run, tmp_path,
                                                                           capsys):
    """D2. `predict dv x.png --checkpoint best` of a run that diverged before its first epoch ended said "use
    --checkpoint last", which is refused (its last.pt is the net it diverged with); with metrics.csv, "its best epoch's
    save was lost (a full disk...): use --checkpoint last, or resume the run", whose resume diverges again. The line
    says that the run diverged, and the fix the refusal gives (checkpoint._why_none asks diverged_refusal)."""
    image = _image(tmp_path)
    early = _diverged(_copy(stopped_run, tmp_path, "early"))
    late = _diverged(_copy(finished_run, tmp_path, "late"))
    (late / "best.pt").unlink()
    (late / "best.pt.sha256").unlink()
    for run in (early, late):
        for argv in (["predict", str(run), str(image), "--checkpoint", "best"],
                     ["export", str(run), "--checkpoint", "best"]):
            capsys.readouterr()
            assert main(argv) == 2, argv
            err = one_line(capsys)
            assert err == (f"cnnlab: error: {run}: no best.pt in this run directory; {run} failed, {WHY} (its "
                           "status.json), and its last.pt holds the weights it diverged with (a resume of it diverges "
                           "again); train it again with a lower --lr"), err
            assert "--checkpoint last" not in err and "--resume" not in err


# ----------------------------------------------------------------------------- D3: RUN/last.pt given as a file


def test_the_refusal_of_a_diverged_last_pt_given_as_a_file_names_its_best_pt_file(finished_run, tmp_path, capsys):
    """D3. `predict dvb/last.pt x.png` advised "(--checkpoint best)", which that command refuses beside a file ("picks
    a file of a run folder"); evaluate's warning said the same. A file given: the best.pt file is named; a folder
    given: --checkpoint best, as before."""
    run = _diverged(_copy(finished_run, tmp_path))
    image = _image(tmp_path)
    capsys.readouterr()
    assert main(["predict", str(run / "last.pt"), str(image)]) == 2
    err = one_line(capsys)
    assert err.endswith(f"use its best.pt, the weights of its best epoch before that ({run / 'best.pt'}), or train it "
                        "again with a lower --lr"), err
    assert main(["predict", str(run / "best.pt"), str(image)]) == 0  # what it names works
    capsys.readouterr()
    assert main(["predict", str(run), str(image)]) == 2
    assert "before that (--checkpoint best), or train" in one_line(capsys)  # a folder: the flag works there
    with pytest.raises(cnnlab.CheckpointError, match=rf"before that \({run / 'best.pt'}\)"):
        cnnlab.predictor(run / "last.pt")
    assert main(["evaluate", str(run / "last.pt")]) == 0
    err = capsys.readouterr().err
    assert f"what is measured is that net; {run / 'best.pt'} holds its best epoch's weights, saved before that" in err
    assert "--checkpoint best" not in err


# ----------------------------------------------------------------------------- D4: a resume in a folder of the user's


def test_a_resume_of_a_checkpoint_copied_into_a_folder_of_the_users_is_refused_before_anything_is_written(
        stopped_run, tmp_path, monkeypatch, capsys):
    """D4. `train --resume project/model.pt` of a run's last.pt copied into a project folder wrote cnnlab's config.json
    and summary.json over the user's, read their metrics.csv as the run's, and left .lock, last.pt, status.json and
    the figures among their files (`--out project` is refused for the same folder). Refused in one line, nothing
    written (runs.check_resumed_folder); a folder of the file's own still resumes."""
    monkeypatch.chdir(tmp_path)
    project = tmp_path / "project"
    project.mkdir()
    (project / "config.json").write_text('{"my": "project settings"}')
    (project / "summary.json").write_text("my own summary")
    (project / "metrics.csv").write_text("a,b\n")
    (project / "todo.txt").write_text("notes")
    shutil.copy(stopped_run / "last.pt", project / "model.pt")
    before = _snapshot(project)
    capsys.readouterr()
    assert main(["train", "--resume", "project/model.pt", "--max-steps", "3", "--quiet"]) == 2
    err = one_line(capsys)
    assert err.startswith("cnnlab: error: --resume project/model.pt: project is not a run folder (it holds "
                          "'config.json', 'metrics.csv', 'summary.json', 'todo.txt'), and a resume writes "), err
    assert err.endswith("copy the file into a folder of its own (a new, empty one) and resume it there"), err
    assert sorted(os.listdir(project)) == sorted(before) and _snapshot(project) == before
    # only the user's own file beside it, or only their config.json: refused as well
    for keep in ("todo.txt", "config.json"):
        for name in set(before) - {"model.pt"}:
            (project / name).unlink(missing_ok=True) if name != keep else (project / name).write_bytes(before[name])
        assert main(["train", "--resume", "project/model.pt", "--max-steps", "3", "--quiet"]) == 2
        assert f"it holds '{keep}')" in one_line(capsys)
        assert sorted(os.listdir(project)) == sorted([keep, "model.pt"])
    # the file alone in a folder (its sidecar, a hidden file beside it): resumed there, as before
    mine = tmp_path / "mine"
    mine.mkdir()
    shutil.copy(stopped_run / "last.pt", mine / "model.pt")
    shutil.copy(stopped_run / "last.pt.sha256", mine / "model.pt.sha256")
    (mine / ".DS_Store").write_text("")
    assert main(["train", "--resume", "mine/model.pt", "--max-steps", "3", "--quiet"]) == 0
    assert json.loads((mine / "status.json").read_text())["detail"] == "--max-steps 3: resume to go on"
    # and again: the folder is a run's now (its config.json cnnlab's)
    assert main(["train", "--resume", "mine/model.pt", "--max-steps", "3", "--quiet"]) == 0


# ----------------------------------------------------------------------------- D5: ulimit -d


def _limits(**kb):
    """A ``resource.getrlimit`` where the limits named (``RLIMIT_DATA=250_000``) are set, in KB."""
    real = resource.getrlimit

    def getrlimit(which):
        for name, value in kb.items():
            if which == getattr(resource, name):
                return value * 1024, resource.RLIM_INFINITY
        if which in (resource.RLIMIT_AS, resource.RLIMIT_DATA):
            return resource.RLIM_INFINITY, resource.RLIM_INFINITY
        return real(which)
    return getrlimit


def test_a_data_segment_limit_under_what_torch_needs_is_one_line_naming_it(tmp_path, monkeypatch):
    """D5. `(ulimit -d 100000; cnnlab evaluate --pretrained resnet)` ended in OpenBLAS's C abort ("Memory allocation
    still failed after 10 retries", exit 1): only ulimit -v was checked. RLIMIT_DATA is checked as RLIMIT_AS is, against
    its own measured floor (cli.TORCH_DATA_FLOOR_KB), the limit named; OpenBLAS held to one thread under it."""
    floor = cnnlab.cli._torch_floor(cnnlab.cli.TORCH_DATA_FLOOR_KB, lowered=False)
    if not floor:
        pytest.skip("no floor for this torch build")

    def limited():
        resource.setrlimit(resource.RLIMIT_DATA, (100_000 * 1024, resource.getrlimit(resource.RLIMIT_DATA)[1]))

    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    proc = subprocess.run([sys.executable, "-m", "cnnlab", "models"], capture_output=True, text=True, timeout=120,
                          preexec_fn=limited, cwd=tmp_path, env={**env, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert (proc.returncode, proc.stdout) == (2, ""), proc.stderr[-3000:]
    assert proc.stderr == (f"cnnlab: error: not enough memory to load torch's libraries (they need at least {floor:,} "
                           f"KB of data segment; a small net about {cnnlab.cli.SMALL_NET_DATA_KB:,} KB); raise the "
                           "memory limit (now ulimit -d 100000)\n"), proc.stderr[-3000:]
    # in process, as before numpy loads: the same line, OpenBLAS given one thread; a data limit above the floor passes
    monkeypatch.delitem(sys.modules, "numpy")
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    monkeypatch.setattr(resource, "getrlimit", _limits(RLIMIT_DATA=100_000))
    with pytest.raises(CnnlabError, match=r"KB of data segment; .*\(now ulimit -d 100000\)$"):
        cnnlab.cli.check_torch_can_load()
    assert os.environ["OPENBLAS_NUM_THREADS"] == "1"
    monkeypatch.setattr(resource, "getrlimit", _limits(RLIMIT_DATA=floor + 10_000))
    cnnlab.cli.check_torch_can_load()


def test_out_of_memory_under_a_data_limit_names_that_limit(monkeypatch, capsys):
    """D5. `(ulimit -d 250000; cnnlab evaluate --pretrained resnet --batch-size 1)`: "out of memory (Python could not
    allocate); ask for less (a smaller --batch-size), or free some memory": the limit not named, the only fix that
    works. The smaller limit is named (the address space's where they are the same)."""
    import cnnlab.cli.models

    monkeypatch.setattr(cnnlab.cli, "check_torch_can_load", lambda: None)
    monkeypatch.setattr(cnnlab.cli.models, "cmd_models", lambda args: (_ for _ in ()).throw(MemoryError()))
    for limits, named in (({"RLIMIT_DATA": 250_000}, "ulimit -d 250000"),
                          ({"RLIMIT_AS": 900_000, "RLIMIT_DATA": 250_000}, "ulimit -d 250000"),
                          ({"RLIMIT_AS": 450_000, "RLIMIT_DATA": 450_000}, "ulimit -v 450000")):
        monkeypatch.setattr(resource, "getrlimit", _limits(**limits))
        assert main(["models"]) == 2
        assert capsys.readouterr().err == (f"cnnlab: error: out of memory (Python could not allocate); raise the "
                                           f"memory limit (now {named}), or free some memory\n")


# ----------------------------------------------------------------------------- D6: analyze branches writes nothing


@pytest.fixture(scope="module")
def inception_run(tmp_path_factory) -> Path:
    return trained_once(tmp_path_factory, "fixT-inception", model="inception", batch_size=64)


def test_analyze_branches_takes_no_lock_in_a_run_it_writes_nothing_into(inception_run, tmp_path, monkeypatch, capsys):
    """D6. `analyze branches dvb` of a diverged run ("nothing written into dvb") left .analysis.lock in it, and in an
    immutable run was refused ("cannot write dvb/.analysis.lock") where evaluate measures it; so with --checkpoint
    best. A measurement that writes nothing into the run takes no lock there (analyze_branches(ready=) is told)."""
    import cnnlab.cli.analyze as analyze

    run = _diverged(_copy(inception_run, tmp_path))
    real = analyze._lock
    locked: list[Path] = []
    monkeypatch.setattr(analyze, "_lock", lambda folder: locked.append(folder) or real(folder))
    args = ["--train-images", "64", "--test-images", "32", "--device", "cpu"]
    for extra in ([], ["--checkpoint", "best"]):
        capsys.readouterr()
        assert main(["analyze", "branches", str(run), *extra, *args]) == 0
        assert f"nothing written into {run}" in capsys.readouterr().out
        assert locked == [] and not (run / ".analysis.lock").exists()
    write_status(run, "finished", "")  # its own result: measured into the run, under its lock, as before
    assert main(["analyze", "branches", str(run), *args]) == 0
    assert locked == [run] and (run / "branches.json").is_file()


# ----------------------------------------------------------------------------- D7: a resume with nothing to train


def test_a_diverged_run_resumed_with_nothing_to_train_stays_diverged(stopped_run, tmp_path, capsys):
    """D7. `train --resume dv --max-steps 4` of a run that diverged at its step 4 re-evaluated it and wrote status.json
    "stopped (--max-steps 4: resume to go on)" and a summary.json of the diverged net: its divergence forgotten, its
    last.pt exported and predicted with. A resume that trains nothing leaves the record as it was (its status.json, no
    report: engine._record_stands), and every refusal still holds."""
    run = _diverged(_copy(stopped_run, tmp_path))
    for name in ("summary.json", "confusion.png", "mistakes.png", "curves.png"):  # a diverged run has no report
        (run / name).unlink(missing_ok=True)
    status = (run / "status.json").read_bytes()
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--max-steps", "2"]) == 0
    out = capsys.readouterr().out
    assert f"no report written: {run} failed ({WHY}: its status.json), and a resume that trains nothing leaves it so" \
        in out, out
    assert "run saved in" not in out
    assert (run / "status.json").read_bytes() == status and not (run / "summary.json").exists()
    assert not (run / "confusion.png").exists()
    assert main(["export", str(run)]) == 2 and "diverged" in one_line(capsys)
    row = cnnlab.list_runs(tmp_path)[0]
    assert (row["status"], row["detail"].split(";")[0]) == ("failed", WHY)


# ----------------------------------------------------------------------------- D8: the folders made on the way


def test_a_failed_command_removes_every_folder_it_made_on_the_way(finished_run, tmp_path, monkeypatch, capsys):
    """D8. On a full disk `evaluate --pretrained resnet --out full/a/b/c` and `train --out full/p/q/r` removed the leaf
    folder they made and left full/a, full/a/b, full/p, full/p/q. Every folder the command made goes, if still empty
    (runs.folders_made, remove_if_unused(made=)); a folder that was there stays."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "there").mkdir()
    with monkeypatch.context() as m:
        m.setattr(cnnlab.runs.os, "pwrite", lambda fd, data, offset: (_ for _ in ()).throw(
            OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))))
        assert main(["train", "--dataset", f"idx:{finished_run.parent / 'tiny'}", "--model", "basic_cnn",
                     "--device", "cpu", "--out", "there/p/q/r"]) == 2
    assert "No space left on device" in one_line(capsys)
    assert os.listdir("there") == []
    with monkeypatch.context() as m:
        no_room_for(m, "summary.json")
        main(["evaluate", str(finished_run), "--out", "there/a/b/c"])
    assert "No space left on device" in capsys.readouterr().err
    assert os.listdir("there") == []

    def failing(*a, ready=lambda: None, **k):
        ready()
        raise CnnlabError("the measuring failed")

    import cnnlab.analysis.gradients as gradients
    monkeypatch.setattr(gradients, "analyze_gradients", failing)
    assert main(["analyze", "gradients", "--epochs", "0", "--out", "there/g/h"]) == 2
    assert main(["analyze", "gradients", "--epochs", "0"]) == 2  # its default folder, and runs/ made for it
    assert "the measuring failed" in capsys.readouterr().err
    assert os.listdir("there") == [] and not Path("runs").exists()
