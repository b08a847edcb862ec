"""A run's report (summary.json and figures) of many classes or on a disk that fills up; `cnnlab runs --dataset`;
the small promises of `cnnlab evaluate --help`, `cnnlab models` and docs/architecture.md."""

from __future__ import annotations

import errno
import json
import math
import os
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import cnnlab.report
from cnnlab.cli import main
from cnnlab.config import TrainConfig
from cnnlab.engine import train

ROOT = Path(__file__).resolve().parents[1]
QUIET = dict(quiet=True, log=lambda m: None)
#: Above this many classes the summary keeps the confusion matrix's non-zero cells only (report.WHOLE_CONFUSION_MAX).
WHOLE_MAX = 1000


def _outputs(n: int, classes: int, seed: int = 0):
    """Labels, predictions and (n, classes) probabilities: about a third right."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (n,), generator=g)
    logits = torch.randn(n, classes, generator=g)
    logits[torch.arange(n)[: n // 3], labels[: n // 3]] += 20.0
    probabilities = logits.softmax(1)
    return labels, probabilities.argmax(1), probabilities


def test_a_report_of_many_classes_keeps_the_non_zero_cells_and_draws_no_confusion_matrix(tmp_path, monkeypatch):
    """Found by a tester: a folder dataset of 10,000 classes (two images each) wrote a 901 MB summary.json (the
    whole confusion matrix, one number per line) from a 13.8 GB process, in 195 s, and drew a 10,000-px
    confusion.png. Above 1,000 classes the summary keeps only the matrix's non-zero cells (at most one per test
    image), the whole matrix is never built, and confusion.png is not drawn (a stale one is removed); the report
    says so."""
    from cnnlab.report import summarize, write_report

    built = []
    real = cnnlab.report.confusion_matrix
    monkeypatch.setattr(cnnlab.report, "confusion_matrix", lambda l, p, k: built.append(k) or real(l, p, k))
    n, classes = 3000, 1500
    labels, predictions, probabilities = _outputs(n, classes)
    names = [f"c{i}" for i in range(classes)]
    summary = summarize(labels=labels, predictions=predictions, probabilities=probabilities, classes=names,
                        loss=1.0, accuracy=50.0)
    assert not [k for k in built if k > WHOLE_MAX], "the whole matrix of 1,500 classes was built"
    run = tmp_path / "report"
    run.mkdir()
    (run / "confusion.png").write_bytes(b"an earlier report's picture")
    figures = write_report(run, summary, history=[], images=torch.zeros(n, 1, 28, 28, dtype=torch.uint8),
                           classes=names)
    figures.wait()
    assert (run / "summary.json").stat().st_size < 400_000  # the per-class rows; 15 MB before
    saved = json.loads((run / "summary.json").read_text())
    assert saved["confusion"] is None
    cells = saved["confusion_cells"]
    assert sum(c for _, _, c in cells) == n and len(cells) <= n
    whole = real(labels, predictions, classes)
    assert all(whole[t, p] == c for t, p, c in cells) and len(cells) == int((whole > 0).sum())
    assert len(saved["per_class"]) == classes and sum(row["support"] for row in saved["per_class"]) == n
    assert not (run / "confusion.png").exists() and (run / "mistakes.png").is_file()
    assert figures.names == ["mistakes.png"]
    assert "confusion.png not drawn: 1,500 classes, more than 1,000" in figures.left_out["confusion.png"]


def test_the_per_class_figures_are_the_same_from_the_labels_as_from_the_whole_matrix():
    """The per-class metrics are computed from the labels and predictions (no classes x classes matrix): the same
    numbers, to the last bit, as from the matrix."""
    from cnnlab.report import confusion_matrix, per_class_metrics, summarize

    labels, predictions, probabilities = _outputs(500, 37, seed=3)
    names = [f"k{i}" for i in range(37)]
    summary = summarize(labels=labels, predictions=predictions, probabilities=probabilities, classes=names, loss=0.5,
                        accuracy=33.0)
    assert summary["per_class"] == per_class_metrics(confusion_matrix(labels, predictions, 37), names)
    cm = confusion_matrix(labels, predictions, 37).double()
    for i, row in enumerate(summary["per_class"]):  # as the matrix in float64 gave them before
        assert row["precision"] == (float(100 * cm[i, i] / cm[:, i].sum()) if cm[:, i].sum() > 0 else None)
        assert row["f1"] == (float(100 * 2 * cm[i, i] / (cm[i].sum() + cm[:, i].sum()))
                             if cm[i].sum() + cm[:, i].sum() > 0 else None)
    assert summary["confusion"] == confusion_matrix(labels, predictions, 37).tolist()


def test_the_confusion_matrix_is_written_a_row_per_line(tmp_path):
    """The whole matrix (up to 1,000 classes) was indented one number per line: 1,000 classes were a million
    lines. It is a row per line; the file is the same JSON (strict: a diverged loss is null), and a class name
    cannot fake the row's place in it."""
    from cnnlab.report import summarize, write_report

    labels, predictions, probabilities = _outputs(400, 40, seed=1)
    names = [f"c{i}" for i in range(39)] + ['\n  "confusion": "\x00rows\x00"']
    summary = summarize(labels=labels, predictions=predictions, probabilities=probabilities, classes=names,
                        loss=math.nan, accuracy=20.0, extra={"tta": {"views": "shift"}})
    write_report(tmp_path, summary, history=[], images=torch.zeros(400, 1, 28, 28, dtype=torch.uint8),
                 classes=names).wait()
    text = (tmp_path / "summary.json").read_text()
    lines = text.splitlines()
    for row in summary["confusion"]:
        assert f"    {json.dumps(row, separators=(',', ':'))}," in lines or \
            f"    {json.dumps(row, separators=(',', ':'))}" in lines
    assert len(lines) < 40 * 10 + 200  # 1,600 numbers were 1,600 lines
    saved = json.loads(text)
    assert saved["loss"] is None and saved["confusion"] == summary["confusion"]
    assert saved == json.loads(json.dumps({**summary, "loss": None}))
    assert saved["per_class"][-1]["class"] == names[-1]


@pytest.fixture
def trained(tiny_idx, tmp_path) -> Path:
    run = tmp_path / "run"
    train(TrainConfig(model="basic_cnn", dataset=f"idx:{tiny_idx}", epochs=1, batch_size=32, device="cpu", lr=0.05),
          out=run, **QUIET)
    return run


def _full_for(monkeypatch, *names: str) -> None:
    """The disk is full for the files called ``names`` (their temp files cannot be made)."""
    real = tempfile.mkstemp

    def mkstemp(*args, prefix=None, **kwargs):
        if prefix and any(prefix.startswith(f".{name}.") for name in names):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(*args, prefix=prefix, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


def test_a_report_cut_short_by_a_full_disk_says_what_was_written_and_what_not(trained, tmp_path, monkeypatch,
                                                                              capsys):
    """Found by a tester: on a full disk, `cnnlab evaluate RUN --out DIR` said `no report written: cannot write
    DIR/mistakes.png` after it had written confusion.png and summary.json; into the run's own folder, summary.json
    was replaced and mistakes.png not written. The line names what was written and what not, and a figure that
    cannot be written does not keep the others from being written."""
    out = tmp_path / "ev"
    _full_for(monkeypatch, "mistakes.png")
    assert main(["evaluate", str(trained), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no report written" not in err, err
    assert (f"cnnlab: warning: report incomplete: wrote summary.json, confusion.png in {out}, not mistakes.png: "
            f"cannot write {out / 'mistakes.png'}: No space left on device") in err, err
    assert (out / "summary.json").is_file() and (out / "confusion.png").is_file() and not (out / "mistakes.png").exists()

    monkeypatch.undo()
    other = tmp_path / "ev2"
    _full_for(monkeypatch, "confusion.png")
    assert main(["evaluate", str(trained), "--out", str(other)]) == 1
    err = capsys.readouterr().err
    assert f"report incomplete: wrote summary.json, mistakes.png in {other}, not confusion.png: cannot write" in err
    assert (other / "mistakes.png").is_file() and not (other / "confusion.png").exists()

    monkeypatch.undo()  # the run's own folder: its mistakes.png older than its summary, so drawn again
    os.utime(trained / "mistakes.png", (1, 1))
    _full_for(monkeypatch, "mistakes.png")
    assert main(["evaluate", str(trained), "--tta", "shift"]) == 1
    err = capsys.readouterr().err
    assert (f"report incomplete: wrote summary.json in {trained} (confusion.png unchanged), not mistakes.png: "
            "cannot write") in err, err
    assert not (trained / "mistakes.png").exists()  # the earlier report's: removed with its summary (anaN, s42)
    assert "tta" in json.loads((trained / "summary.json").read_text())

    monkeypatch.undo()
    _full_for(monkeypatch, "summary.json")  # nothing written at all: said as before
    assert main(["evaluate", str(trained), "--out", str(tmp_path / "ev3")]) == 1
    assert "cnnlab: warning: no report written: cannot write" in capsys.readouterr().err


def test_a_report_of_many_classes_says_its_confusion_matrix_is_not_drawn(tmp_path):
    """`report_run`, as `train` and `evaluate` call it, says in its log why there is no confusion.png."""
    from cnnlab.evaluation import EvalResult, report_run

    classes = 1200
    labels, predictions, probabilities = _outputs(2400, classes, seed=2)
    data = SimpleNamespace(test_labels=labels, test_images=torch.zeros(2400, 1, 28, 28, dtype=torch.uint8),
                           classes=[f"c{i}" for i in range(classes)])
    confidences = probabilities.gather(1, predictions[:, None]).squeeze(1)
    result = EvalResult(loss=1.0, accuracy=33.3, n=2400, predictions=predictions, confidences=confidences)
    logged = []
    summary, _ = report_run(tmp_path, torch.nn.Identity(), data, torch.device("cpu"), history=[], result=result,
                            log=logged.append)
    assert any(line.startswith("confusion.png not drawn: 1,200 classes") for line in logged), logged
    assert logged[-1] == f"wrote summary.json, mistakes.png in {tmp_path}"
    assert summary["mistakes"][0]["confidence"] == pytest.approx(float(probabilities.max(1).values[
        summary["mistakes"][0]["index"]]))


def test_runs_are_found_by_their_dataset_as_the_table_shows_it_and_as_it_was_typed(tiny_idx, tmp_path, monkeypatch,
                                                                                   capsys):
    """Found by a tester: `cnnlab runs --dataset idx` found nothing though the table's dataset column shows `idx`;
    `--dataset idx:small` (the path typed at train time) found nothing either, the run recording
    `idx:/abs/path/small`; `cnnlab.list_runs(dataset='idx')` the same."""
    import cnnlab

    monkeypatch.chdir(tmp_path)
    assert main(["train", "--model", "basic_cnn", "--dataset", "idx:tiny", "--epochs", "1", "--batch-size", "32",
                 "--device", "cpu", "--out", "runs/one"]) == 0
    assert cnnlab.list_runs("runs")[0]["dataset"] == f"idx:{tiny_idx.resolve()}"
    capsys.readouterr()
    for typed in ("idx", "IDX", "idx:tiny", "idx:./tiny/", f"idx:{tiny_idx}"):
        assert main(["runs", "--dataset", typed]) == 0
        out = capsys.readouterr().out
        assert "runs/one" in out and "no runs" not in out, (typed, out)
        assert [Path(r["run"]).name for r in cnnlab.list_runs("runs", dataset=typed)] == ["one"], typed
    for other in ("folder", "idx:elsewhere", "mnist", "tiny"):
        assert main(["runs", "--dataset", other]) == 0
        assert "no runs under runs/ match" in capsys.readouterr().out, other
        assert cnnlab.list_runs("runs", dataset=other) == []


def test_evaluate_help_says_no_report_writes_nothing(capsys):
    """`--no-report` said "only print loss and accuracy", and the per-class table is printed too: it means that
    nothing is written."""
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "only print loss and accuracy" not in text
    assert "--no-report write nothing" in text


def test_models_shows_the_command_that_made_each_shipped_weight(capsys):
    """The README and `cnnlab models --help` promise the command that made the shipped weights: only --json had it."""
    from cnnlab.pretrained import pretrained_entries

    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    entries = pretrained_entries()
    assert entries
    for entry in entries:
        assert any(line.strip() == f"made by: {entry.command}" for line in lines), entry.command


def test_architecture_names_every_module_of_the_data_package():
    """data/ gained download.py (and others) that docs/architecture.md's list of the package did not name."""
    row = next(line for line in (ROOT / "docs" / "architecture.md").read_text().splitlines()
               if line.startswith("| `data/` |"))
    modules = sorted(p.name for p in (ROOT / "src" / "cnnlab" / "data").glob("*.py") if p.name != "__init__.py")
    assert "download.py" in modules
    assert [m for m in modules if f"`{m}`" not in row] == []
