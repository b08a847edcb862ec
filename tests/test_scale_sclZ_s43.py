"""What a tester found at scale (sclZ): a folder of thousands of images predicted with nothing printed until the
end and nothing kept at Ctrl-C; a run's metrics.csv of a million rows (under cnnlab's own cap) that made listing runs
take a minute and a gigabyte; a multi-line warning of ``data fetch`` printed as one line; the curves of 1,000 epochs
drawn as a band of markers. docs/reliability.md lists them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import cnnlab.predict
from apps_helpers import mnist_like_fields as _fields, tiny_checkpoint
from cnnlab.cli import main

HERE = Path(__file__).parent


def _stop_at_chunk(monkeypatch, at: int) -> list[int]:
    """Ctrl-C while the ``at``-th chunk of images is predicted (a KeyboardInterrupt from the net's pass)."""
    calls: list[int] = []
    real = cnnlab.predict.Predictor.predictions

    def predictions(self, names, *args, **kwargs):
        calls.append(len(names))
        if len(calls) == at:
            raise KeyboardInterrupt
        return real(self, names, *args, **kwargs)

    monkeypatch.setattr(cnnlab.predict.Predictor, "predictions", predictions)
    return calls


@pytest.mark.parametrize("as_json", [False, True])
def test_a_predict_stopped_midway_keeps_and_prints_what_is_done(tmp_path, monkeypatch, capsys, as_json):
    """(sclZ 1.) ``cnnlab predict DIR`` predicted every image, then printed the table at once: Ctrl-C after minutes
    kept nothing (``--json > out.json``: 0 bytes). Rows now come a chunk at a time; a stop keeps those done (the
    JSON array closed after them, with the failures so far), says how far it got, then ``cnnlab: interrupted``, 130."""
    ckpt = tiny_checkpoint(tmp_path / "run" / "last.pt")
    folder = tmp_path / "imgs"
    _fields(folder, ["a.png", "c.png", "d.png", "e.png"])
    (folder / "b.png").write_bytes(b"not a png")
    monkeypatch.setattr(cnnlab.predict, "CHUNK", 2, raising=False)
    calls = _stop_at_chunk(monkeypatch, 2)
    code = main(["predict", str(ckpt.parent), str(folder), *(["--json"] if as_json else [])])
    out, err = capsys.readouterr()
    assert code == 130 and calls == [2, 2], (code, calls)
    if as_json:
        rows = json.loads(out)  # valid JSON: what was done
        assert [Path(r["file"]).name for r in rows] == ["a.png", "c.png", "b.png"] and "error" in rows[2]
    else:
        assert [line.split()[0].rsplit("/", 1)[-1] for line in out.splitlines()] == ["a.png", "c.png"]
    lines = err.splitlines()
    assert lines[0].startswith(f"cnnlab: skipped {folder / 'b.png'}")
    assert lines[-2:] == ["stopped: 2 images predicted, 1 failed, of 5 images given", "cnnlab: interrupted"], lines


def test_a_folder_of_several_chunks_is_one_table_and_one_json_array(tmp_path, monkeypatch, capsys):
    """The names' column is as wide as the widest name of all the images (known before any is predicted), so that
    rows printed chunk by chunk line up; --json's array, written an entry at a time, is the same text as before."""
    ckpt = tiny_checkpoint(tmp_path / "run" / "last.pt")
    folder = tmp_path / "imgs"
    _fields(folder, ["a.png", "b.png", "c.png", "d.png", "zz-a-much-longer-name.png"])
    monkeypatch.setattr(cnnlab.predict, "CHUNK", 2, raising=False)
    assert main(["predict", str(ckpt.parent), str(folder), "--top-k", "2"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert len(rows) == 5 and len({len(row) for row in rows}) == 1, rows  # ASCII names: aligned, one length
    assert main(["predict", str(ckpt.parent), str(folder), "--json"]) == 0
    out = capsys.readouterr().out
    assert out == json.dumps(json.loads(out), indent=2) + "\n"
    monkeypatch.setattr(cnnlab.predict, "CHUNK", 256, raising=False)
    assert main(["predict", str(ckpt.parent), str(folder), "--json"]) == 0
    assert capsys.readouterr().out == out  # in chunks or in one: the same numbers, the same text


def test_a_sigterm_keeps_the_rows_printed_and_exits_143(tmp_path):
    """A SIGTERM (a job's time limit, a container stopped) killed predict outright: nothing printed. The first
    chunk's rows are out as soon as it is done; SIGTERM while the rest is read (here: standard input, still
    open) keeps them, says how far it got and exits 143."""
    ckpt = tiny_checkpoint(tmp_path / "run" / "last.pt")
    folder = tmp_path / "imgs"
    _fields(folder, [f"d{i:03d}.png" for i in range(cnnlab.predict.__dict__.get("CHUNK", 256) + 4)])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "cnnlab", "predict", str(ckpt.parent), str(folder), "-", "--device", "cpu"]
    proc = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    watchdog = threading.Timer(120, proc.kill)  # a predict that prints nothing before it reads stdin: no hang
    watchdog.start()
    try:
        first = proc.stdout.readline()  # the first chunk's rows come before standard input is read
        assert first.startswith(str(folder / "d000.png")), first
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.stdout.read(), proc.stderr.read()  # communicate() skips what readline buffered
        proc.wait(timeout=120)
    finally:
        watchdog.cancel()
        proc.kill()
        proc.wait()
    rows = (first + out).splitlines()
    assert proc.returncode == 143, (proc.returncode, err)
    assert len(rows) == 256 and rows[-1].startswith(str(folder / "d255.png")), len(rows)
    assert err.splitlines()[-2:] == ["stopped: 256 images predicted, of 261 images given",
                                     "cnnlab: interrupted by signal 15"], err


HEADER = "epoch,step,train_loss,train_acc,val_loss,val_acc,test_loss,test_acc,lr,seconds,images_per_s\n"


def _metrics(run: Path, rows: int) -> None:
    """A metrics.csv of ``rows`` well-formed rows, as the tester's (his: 920,000 rows, 60 MB, under the 64 MB cap)."""
    with open(run / "metrics.csv", "w") as f:
        f.write(HEADER)
        f.writelines(f"{i},{i * 10},1.92014,52.6562,,,1.77358,55.5,0.01,1.90431,336.08\n" for i in range(1, rows + 1))


def _epochs(run: Path, epochs: int) -> None:
    path = run / "config.json"
    record = json.loads(path.read_text())
    record["config"]["epochs"] = epochs
    path.write_text(json.dumps(record))


def test_a_metrics_csv_with_more_rows_than_the_runs_epochs_is_damaged_unread_past_them(finished, monkeypatch):
    """(sclZ 2.) 920,000 rows in a 1-epoch run's metrics.csv: ``cnnlab runs`` took 43 s and 1.07 GB (every cell
    parsed twice), ``load_run`` 74 s (the file read twice), and the row said ``epochs 920000/1``, ``finished``. A
    row past the run's epochs is damage, with metrics.csv's own fix, found without parsing the rest."""
    import cnnlab
    import cnnlab.runs
    from cnnlab.errors import RunError

    _metrics(finished, 5000)
    parsed = []
    real = cnnlab.runs._parse
    monkeypatch.setattr(cnnlab.runs, "_parse", lambda cell: parsed.append(cell) or real(cell))
    row = cnnlab.list_runs(finished.parent)[0]
    assert row["status"] == "damaged" and row["epochs_done"] != 5000, row
    assert row["detail"].startswith("metrics.csv: damaged (line 3: a row past the run's 1 epoch, where cnnlab writes "
                                    "one row an epoch); delete it: the run's checkpoints do not need it"), row["detail"]
    assert len(parsed) <= 2 * 11, len(parsed)  # the first row, not the 5,000
    with pytest.raises(RunError, match=r"metrics.csv: damaged \(line 3: a row past the run's 1 epoch"):
        cnnlab.load_run(finished)


def test_a_metrics_csv_over_the_cap_gets_its_own_fix(finished, monkeypatch):
    """(sclZ 2.) A metrics.csv over the 64 MB cap (200 MB) was listed damaged with the generic `the run folder is
    damaged (cnnlab writes these files whole)`, not metrics.csv's own fix."""
    import cnnlab
    import cnnlab.runs

    monkeypatch.setattr(cnnlab.runs, "METRICS_LIMIT", 1000)
    _metrics(finished, 20)
    _epochs(finished, 20)
    detail = cnnlab.list_runs(finished.parent)[0]["detail"]
    assert "bytes, far more than cnnlab writes there; delete it: the run's checkpoints do not need it" in detail, detail


def test_listing_a_run_keeps_neither_its_metrics_rows_nor_its_file_and_load_run_reads_it_once(finished, monkeypatch):
    """(sclZ 2.) A run whose metrics.csv is as long as its (edited) epochs: the listing held every row as a dict
    (about 1.2 KB each) and the file's text; ``load_run`` read and parsed the file twice (its row, then its rows)."""
    import tracemalloc

    import cnnlab
    import cnnlab.runs

    _metrics(finished, 1)
    cnnlab.list_runs(finished.parent)  # the imports and caches a listing needs, before memory is measured
    _metrics(finished, 20_000)
    _epochs(finished, 1_000_000)
    tracemalloc.start()
    try:
        row = cnnlab.list_runs(finished.parent)[0]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert row["epochs_done"] == 20_000 and row["best_acc"] == 55.5 and row["best_split"] == "test"
    assert peak < 2_000_000, peak  # 20,000 rows as dicts: about 25 MB
    opened = []
    real = cnnlab.runs.open_regular
    monkeypatch.setattr(cnnlab.runs, "open_regular",
                        lambda path, *a, **kw: opened.append(Path(path).name) or real(path, *a, **kw))
    run = cnnlab.load_run(finished)
    assert len(run.metrics) == 20_000 and run.info["epochs_done"] == 20_000
    assert opened.count("metrics.csv") == 1, opened


def test_data_fetch_of_a_folder_prints_its_skipped_images_a_line_each(tmp_path, capsys):
    """(sclZ 3.) ``cnnlab data fetch folder:G`` printed its unreadable files' warning as one line with literal
    ``\\n`` between the files (its note escaped the whole message); ``train`` printed the breaks. Each file is now a
    line of its own, as in train, and a file's name holding a newline is still one line (escaped)."""
    from test_datasets_more import add_bad_files, make_folder

    root = make_folder(tmp_path / "G")
    add_bad_files(root / "dog")
    (root / "cat" / "new\nline.png").write_bytes(b"not an image")
    assert main(["data", "fetch", f"folder:{root}"]) == 0
    err = capsys.readouterr().err
    start = next(i for i, line in enumerate(err.splitlines()) if line.startswith("warning: folder:"))
    warning = err.splitlines()[start:start + 5]
    assert warning[0].endswith("skipped 4 unreadable image file(s), not used for training or testing; fix or delete "
                               "them:") and "\\n" not in warning[0], warning[0]
    assert all(line.startswith(("  cat/", "  dog/")) for line in warning[1:]), warning
    assert any(line.startswith("  cat/new\\nline.png: ") for line in warning[1:]), warning


def _history(epochs: int) -> list[dict]:
    """Falling losses, rising accuracies (the test accuracy under the running train accuracy, as the tester's)."""
    return [{"epoch": e, "step": 10 * e, "train_loss": 2 / e + 0.05, "train_acc": 100 - 60 / e, "val_loss": None,
             "val_acc": None, "test_loss": 2 / e + 0.08, "test_acc": 99 - 60 / e, "lr": 0.01, "seconds": 1.0,
             "images_per_s": 300.0} for e in range(1, epochs + 1)]


def test_curves_of_many_epochs_are_lines_without_markers(tmp_path, monkeypatch):
    """(sclZ 4.) curves.png of 1,000 epochs drew a marker at every point: a band of markers hid the lines, the test
    accuracy's under the train accuracy's triangles. Markers only up to MARKERS_MOST points a series, the line
    thinner above; and README said ``evaluate --out`` writes curves.png, which it does not (the epochs are the
    run's)."""
    import cnnlab.drawing
    from cnnlab.drawing import COLOURS
    from cnnlab.plots import plot_curves

    markers = []
    real = cnnlab.drawing._marker
    monkeypatch.setattr(cnnlab.drawing, "_marker", lambda *a, **kw: markers.append(a) or real(*a, **kw))
    plot_curves(_history(20), tmp_path / "few.png")
    assert len(markers) == 4 * 20 + 4  # each point of the four series, and the legends' samples
    markers.clear()
    plot_curves(_history(1000), tmp_path / "many.png")
    assert markers == []  # in the legend neither: its samples as the lines are drawn
    widths = []
    real_line = cnnlab.drawing.ImageDraw.ImageDraw.line
    monkeypatch.setattr(cnnlab.drawing.ImageDraw.ImageDraw, "line",
                        lambda self, xy, fill=None, width=0, **kw: widths.append((fill, width)) or
                        real_line(self, xy, fill=fill, width=width, **kw))
    plot_curves(_history(1000), tmp_path / "many.png")
    assert {w for fill, w in widths if fill == COLOURS["green"]} == {cnnlab.drawing.SCALE}  # 1 px once shrunk
    row = next(line for line in (HERE.parent / "README.md").read_text().splitlines()
               if "rewritten by `cnnlab evaluate RUN`" in line)
    assert "`--out DIR` writes `summary.json`, `confusion.png` and `mistakes.png` there, no `curves.png`" in row
