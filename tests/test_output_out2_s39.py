"""Issue 'out2' (s39): a 400-digit or non-finite number in a run's files is that run's damage (not a traceback for
every run); names shown for copying are quoted as a shell takes them back; compare and data print names escaped;
the runs table is padded by what stdout actually writes, and by the width of zero-width marks."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

import cnnlab
from cnnlab.cli import main
from cnnlab.runs import describe_run

HUGE = "1" + "0" * 400


def _cnnlab(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cnnlab", *args], text=True, timeout=120, capture_output=True,
                          env={**os.environ, **(env or {})})


# ----------------------------------------------------------------------------- 1. numbers no float holds


def _rewrite_metrics(run, column: str, value: str) -> None:
    lines = (run / "metrics.csv").read_text().splitlines()
    header = lines[0].split(",")
    cells = lines[1].split(",")
    cells[header.index(column)] = value
    (run / "metrics.csv").write_text("\n".join([lines[0], ",".join(cells), *lines[2:]]) + "\n")


@pytest.mark.parametrize("where", ["summary", "metrics"])
def test_a_400_digit_accuracy_damages_its_run_only(finished, capsys, where):
    """`"accuracy": 1` and 400 zeros in summary.json (or as a test_acc in metrics.csv): `cnnlab runs`, --json and
    cnnlab.list_runs were an OverflowError traceback (math.isfinite, the table's format) for every run."""
    other = finished.parent / "r2"
    shutil.copytree(finished, other)
    if where == "summary":
        text = (finished / "summary.json").read_text()
        summary = json.loads(text)
        (finished / "summary.json").write_text(json.dumps({**summary, "accuracy": int(HUGE)}))
        file = "summary.json"
    else:
        _rewrite_metrics(finished, "test_acc", HUGE)
        file = "metrics.csv"
    row = describe_run(finished)
    assert row["status"] == "damaged" and row["detail"].startswith(file), row
    assert describe_run(other)["status"] == "finished"
    capsys.readouterr()
    assert main(["runs", "--root", str(finished.parent)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert any(line.startswith("r2 ") or "/r2 " in line for line in table) and any("damaged" in line for line in table)
    assert main(["runs", "--root", str(finished.parent), "--json"]) == 0
    rows = {os.path.basename(r["run"]): r for r in json.loads(capsys.readouterr().out)}
    assert rows["r1"]["status"] == "damaged" and file in rows["r1"]["detail"] and rows["r2"]["status"] == "finished"
    listed = {os.path.basename(r["run"]): r["status"] for r in cnnlab.list_runs(finished.parent)}
    assert listed == {"r1": "damaged", "r2": "finished"}


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_a_non_finite_accuracy_in_metrics_csv_is_damage(finished, value):
    """A NaN test_acc in metrics.csv: best showed '-' (max() of a NaN) and the run 'finished'."""
    _rewrite_metrics(finished, "test_acc", value)
    row = describe_run(finished)
    assert row["status"] == "damaged" and row["detail"].startswith("metrics.csv: damaged"), row
    assert row["best_acc"] is None


# ----------------------------------------------------------------------------- 2. compare and data print names escaped


def test_compare_prints_its_run_folders_escaped_and_quoted(tiny_idx, tmp_path):
    """`compare --out $'cmp\\nx\\e[31m'`: "trained, ... (DIR)" and "reused" printed the folder raw, a newline and a
    terminal escape in it."""
    from cnnlab.compare import compare
    from cnnlab.config import TrainConfig

    out = tmp_path / "cmp\nx\x1b[31m"
    base = TrainConfig(model="basic_cnn", dataset=f"idx:{tiny_idx}", epochs=1, batch_size=32, device="cpu", threads=1)
    logs: list[str] = []
    compare(["basic_cnn"], 1, base, out, quiet=True, log=logs.append)
    compare(["basic_cnn"], 1, base, out, quiet=True, log=logs.append)  # reused
    (run,) = [p for p in out.iterdir() if p.is_dir()]
    said = [m for m in logs if "seed 0:" in m]
    assert [m.split(",")[0] for m in said] == ["basic_cnn seed 0: trained", "basic_cnn seed 0: reused"], logs
    for line in logs:
        assert "\n" not in line and "\x1b" not in line, line
    assert all(m.endswith(f"($'{tmp_path}/cmp\\nx\\x1b[31m/{run.name}')") for m in said), said


def test_data_info_and_fetch_print_the_folders_escaped(tmp_path, monkeypatch, capsys):
    """CNNLAB_HOME (or --data-dir) named with a newline and a terminal escape: `data info` printed
    `mnist: not cached (...)  (/x/hm<LF>y<ESC>[31m/datasets/mnist)`, and `data fetch` its 'from' line raw."""
    from conftest import write_idx_dataset

    home = tmp_path / "hm\ny\x1b[31m"
    monkeypatch.setenv("CNNLAB_HOME", str(home))
    data = write_idx_dataset(tmp_path / "d\nz\x1b[32m")
    capsys.readouterr()
    assert main(["data", "info"]) == 0
    assert main(["data", "fetch", f"idx:{data}"]) == 0
    captured = capsys.readouterr()
    for text in (captured.out, captured.err):
        assert "\x1b" not in text, text
    assert "hm\\ny\\x1b[31m/datasets/mnist)" in captured.out
    assert any(line.startswith("idx:") and "d\\nz\\x1b[32m" in line for line in captured.out.splitlines())
    assert not any(line.startswith(("y", "z")) for line in captured.out.splitlines())


# ----------------------------------------------------------------------------- 3. names shown to be copied back


NAMES = ["plain-1.0_x", "x\ny", "x\\ny", "it's", "a b", "ctl\x1b]0;T\x07 a\nb", "réseau", "\xa0nbsp", "byte\udcffx",
         "x'\n\\", "网络", "e\U0001F600\u200b", "$HOME*"]


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash, to read the quoted names back")
def test_shell_quoted_names_are_taken_back_exactly_by_a_shell():
    """A run named x<newline>y and one named literally x\\ny both showed x\\ny: copied into --resume, the second."""
    from cnnlab.errors import printable, shell_quoted

    assert shell_quoted("x\ny") == "$'x\\ny'" and shell_quoted("x\\ny") == "'x\\ny'"
    assert shell_quoted("runs/plain-1") == "runs/plain-1" and shell_quoted("it's") == "'it'\\''s'"
    for name in NAMES:
        quoted = shell_quoted(name)
        back = subprocess.run(["bash", "-c", f"printf %s {quoted}"], capture_output=True, timeout=30,
                              env={**os.environ, "LC_ALL": "C.UTF-8"}).stdout
        assert back == os.fsencode(name), (name, quoted)
        assert printable(quoted) == quoted and "\n" not in quoted


def test_printable_is_unchanged_by_a_second_pass():
    """Why printable itself does not escape a backslash: it is applied in layers (a message escaped where it is made
    is escaped again where the CLI prints it), so a second pass must change nothing."""
    from cnnlab.errors import printable

    for name in NAMES:
        assert printable(printable(name)) == printable(name)


def test_the_runs_table_shows_two_names_that_printed_alike_apart():
    from cnnlab.cli.runs import format_runs

    base = {"model": "resnet", "dataset": "mnist", "recipe": "lecture", "teacher": None, "epochs": 10,
            "epochs_done": 1, "final_acc": 90.0, "best_acc": None, "train_seconds": 3.0, "status": "stopped",
            "detail": "interrupted"}
    lines = format_runs([{**base, "run": r} for r in ("runs/x\ny", "runs/x\\ny", "runs/ok")]).splitlines()
    assert lines[1].startswith("$'runs/x\\ny' ") and lines[2].startswith("'runs/x\\ny' ")
    assert lines[3].startswith("runs/ok ") and len({line.index(" resnet ") for line in lines[1:]}) == 1


def test_train_and_resume_show_the_run_folder_as_a_shell_takes_it(tiny_idx, tmp_path, capsys):
    run = tmp_path / "nr" / "lit\\nname"  # a literal backslash: no escape, single quotes
    common = ["--model", "basic_cnn", "--dataset", f"idx:{tiny_idx}", "--batch-size", "32", "--device", "cpu"]
    capsys.readouterr()
    assert main(["train", *common, "--epochs", "1", "--out", str(run)]) == 0
    assert main(["train", *common, "--epochs", "2", "--resume", str(run)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert sum(line.endswith(f"run saved in '{run}'") for line in lines) == 2, lines
    assert any(line.startswith(f"resuming '{run}' at epoch 2") for line in lines), lines


# ----------------------------------------------------------------------------- 4, 5. the table's columns


def _columns(table: str, word: str) -> set[int]:
    """Where ``word`` starts on each row after the header, in terminal columns (what stdout wrote)."""
    import unicodedata

    def width(text: str) -> int:
        return sum(0 if unicodedata.category(ch) in ("Mn", "Me", "Cf") else
                   2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)

    return {width(line[:line.index(word)]) for line in table.splitlines()[1:] if word in line}


def test_runs_on_an_ascii_stdout_pads_by_what_it_writes(finished):
    """`PYTHONIOENCODING=ascii cnnlab runs`: a row with a non-ASCII name was shifted right by its escapes' length."""
    for name in ("réseau", "网络", "plain"):
        shutil.copytree(finished, finished.parent / name)
    proc = subprocess.run([sys.executable, "-m", "cnnlab", "runs"], text=True, capture_output=True, timeout=120,
                          cwd=finished.parent.parent, env={**os.environ, "PYTHONIOENCODING": "ascii"})
    assert proc.returncode == 0, proc.stderr
    assert "$'runs/r\\u00e9seau'" in proc.stdout and len(_columns(proc.stdout, "basic_cnn")) == 1, proc.stdout


def test_the_table_is_padded_as_its_encoding_writes_it():
    from cnnlab.cli.runs import format_runs

    base = {"model": "résnet", "dataset": "mnist", "recipe": "lecture", "teacher": None, "epochs": 10,
            "epochs_done": 1, "final_acc": 90.0, "best_acc": None, "train_seconds": 3.0, "status": "stopped",
            "detail": "interrupted"}
    rows = [{**base, "run": r} for r in ("runs/réseau", "runs/plain")]
    table = format_runs(rows, "ascii")
    table.encode("ascii")  # nothing left for stdout to escape
    assert len(_columns(table, " 1/10")) == 1, table


@pytest.mark.parametrize("mark", ["\u0e35", "\u0e31", "\u0947", "\ufe0f", "\u20dd"])
def test_marks_of_combining_class_0_take_no_column(mark):
    """Thai U+0E35/U+0E31, Devanagari U+0947 and VS16 have combining class 0 (an enclosing U+20DD too): each was
    counted as a column, and its row's cells shifted left."""
    from cnnlab.cli.runs import format_runs
    from cnnlab.text import display_width

    assert display_width("a" + mark) == 1
    base = {"model": "resnet", "dataset": "mnist", "recipe": "lecture", "teacher": None, "epochs": 10,
            "epochs_done": 1, "final_acc": 90.0, "best_acc": None, "train_seconds": 3.0, "status": "stopped",
            "detail": "interrupted"}
    table = format_runs([{**base, "run": r} for r in (f"runs/a{mark}" * 3, "runs/plain")])
    assert len(_columns(table, " resnet ")) == 1, table
