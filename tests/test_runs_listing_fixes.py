"""Issue 'runs' (s38): evaluate never writes an older checkpoint's report over a run that trained on; damaged runs
(config.json gone or half-written, checkpoints cut short or deleted) are listed as damaged; list_runs needs no torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import tiny_config
from cnnlab.cli import main
from cnnlab.engine import train
from cnnlab import runs
from cnnlab.runs import describe_run, find_runs

QUIET = dict(quiet=True, log=lambda m: None)


def run_problem(run):
    return runs.run_problem(run)  # what compare calls before it reuses a run


def _evaluate_while(monkeypatch, action):
    """Run ``action`` after the evaluation's pass and before its report is written (as a slow evaluate and a resume
    that finishes meanwhile), deterministically."""
    import cnnlab.evaluation as evaluation

    real = evaluation.evaluate_subject

    def slow(*args, **kwargs):
        result = real(*args, **kwargs)
        action()
        return result

    monkeypatch.setattr(evaluation, "evaluate_subject", slow)


def test_an_evaluation_whose_checkpoint_was_replaced_meanwhile_writes_nothing_into_the_run(finished, tiny_idx,
                                                                                           monkeypatch, capsys):
    run = finished
    _evaluate_while(monkeypatch, lambda: train(tiny_config(tiny_idx, epochs=2), resume=run, changes={"epochs": 2},
                                               **QUIET))
    capsys.readouterr()
    assert main(["evaluate", str(run)]) == 0
    out = capsys.readouterr().out
    assert "no report written: last.pt changed while it was evaluated" in out and "accuracy" in out
    resumed = json.loads((run / "summary.json").read_text())
    monkeypatch.undo()
    assert main(["evaluate", str(run), "--json"]) == 0  # the resumed run's own figure is what it wrote
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["test_acc"] == resumed["accuracy"]
    assert describe_run(run)["final_acc"] == resumed["accuracy"]


def test_an_evaluation_writes_nothing_into_a_run_that_a_process_holds_when_it_ends(finished, monkeypatch, capsys):
    from cnnlab.runs import RunLock

    run = finished
    before = (run / "summary.json").read_bytes()
    lock = RunLock(run)
    _evaluate_while(monkeypatch, lock.acquire)  # a training resumed meanwhile, still running
    try:
        capsys.readouterr()
        assert main(["evaluate", str(run)]) == 0
    finally:
        lock.release()
        monkeypatch.undo()
    assert "no report written: another thread of this process holds the run" in capsys.readouterr().out  # (held here)
    assert (run / "summary.json").read_bytes() == before
    assert main(["evaluate", str(run)]) == 0 and "wrote summary.json" in capsys.readouterr().out  # as before


def test_a_run_folder_whose_config_json_was_deleted_is_listed_as_damaged(finished, capsys):
    (finished / "config.json").unlink()
    assert find_runs(finished.parent) == [finished]
    row = describe_run(finished)
    assert row["status"] == "damaged" and row["detail"].startswith("config.json: missing")
    assert run_problem(finished).startswith("config.json: missing")
    assert main(["runs", "--root", str(finished.parent)]) == 0
    assert "damaged (config.json: missing" in capsys.readouterr().out


def test_a_truncated_checkpoint_is_listed_as_damaged(finished):
    assert describe_run(finished)["status"] == "finished"
    data = (finished / "last.pt").read_bytes()
    (finished / "last.pt").write_bytes(data[: len(data) // 2])
    row = describe_run(finished)
    assert row["status"] == "damaged" and row["detail"].startswith("last.pt: cut short"), row
    assert run_problem(finished).startswith("last.pt: cut short")
    (finished / "last.pt").write_bytes(data)
    assert run_problem(finished) == ""


def test_a_finished_run_whose_checkpoints_were_deleted_is_damaged_and_evaluate_says_so(finished, capsys):
    for name in ("last.pt", "last.pt.sha256", "best.pt", "best.pt.sha256"):
        (finished / name).unlink(missing_ok=True)
    row = describe_run(finished)
    assert row["status"] == "damaged" and "last.pt: missing, the run finished" in row["detail"]
    assert run_problem(finished)
    capsys.readouterr()
    assert main(["evaluate", str(finished)]) != 0
    err = capsys.readouterr().err
    assert "were deleted or moved" in err and "before its first epoch" not in err and err.count("\n") == 1


@pytest.mark.parametrize("settings", [{"model": "basic_cnn"}, "epochs"])
def test_a_half_written_or_absurd_config_json_is_listed_as_damaged(finished, settings):
    path = finished / "config.json"
    if settings == "epochs":
        data = json.loads(path.read_text())
        data["config"]["epochs"] = 10 ** 30
    else:
        data = {"config": settings}
    path.write_text(json.dumps(data))
    row = describe_run(finished)
    assert row["status"] == "damaged" and row["detail"].startswith("config.json: "), row
    assert row["epochs"] is None and run_problem(finished)


def test_list_runs_and_load_run_import_no_torch(finished):
    code = ("import sys, cnnlab; rows = cnnlab.list_runs(sys.argv[1]); run = cnnlab.load_run(sys.argv[2]); "
            "print(len(rows), rows[0]['status'], run.status, 'torch' in sys.modules)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, "-c", code, str(finished.parent), str(finished)], capture_output=True,
                         text=True, env=env, timeout=120)
    assert out.stdout.split() == ["1", "finished", "finished", "False"], out.stderr


@pytest.mark.parametrize("task, doing", [("evaluation", "writing its evaluation report"),
                                         ("compare", "rewriting its metrics.csv")])
def test_a_finished_run_held_for_its_report_is_listed_as_finished_not_running(finished, capsys, task, doing):
    from cnnlab.runs import RunLock

    lock = RunLock(finished, task=task)  # an evaluate writing the run's report: it trains nothing
    lock.acquire()
    try:
        row = describe_run(finished)
        capsys.readouterr()
        assert main(["runs", "--root", str(finished.parent)]) == 0
        out = capsys.readouterr().out
    finally:
        lock.release()
    assert row["status"] == "finished" and row["detail"] == f"another thread of this process is {doing} now", row
    assert row["final_acc"] is not None and f"finished ({row['detail']})" in out
    assert describe_run(finished)["detail"] == ""
    with RunLock(finished):  # a training (a resume) is running
        assert describe_run(finished)["status"] == "running"
