"""The os tester's defects fixed by osE (s46): a report's folder moved or deleted while it was written
(:class:`cnnlab.fileio.FolderGuard`), a figure that ran out of memory after a finished training, ``--show-input``'s
pair of images half written, an export's folders left behind, a figure that is no whole PNG kept as "unchanged",
and a run's ``.lock`` replaced by a folder. docs/reliability.md lists them."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

import cnnlab.analysis.plots
import cnnlab.compare
import cnnlab.plots
import cnnlab.predict
from conftest import no_room_for, one_line, tiny_config, trained_once
from cnnlab.cli import main
from cnnlab.errors import WriteError
from cnnlab.runs import describe_run


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """One finished tiny run (basic_cnn, one epoch), copied by each test that uses it."""
    return trained_once(tmp_path_factory, "osE")


@pytest.fixture
def run(trained, tmp_path, monkeypatch) -> Path:
    """A copy of the run in ``tmp_path/R``, the current folder ``tmp_path`` (paths said as typed)."""
    monkeypatch.chdir(tmp_path)
    shutil.copytree(trained, tmp_path / "R")
    monkeypatch.setenv("CNNLAB_HOME", str(trained.parent / "home"))
    return Path("R")


def _moving(real, folder: str, how: str):
    """``real`` (a drawing function), after ``folder`` is moved to ``<folder>moved`` or deleted, as a user did while
    the command wrote into it."""
    def draw(*args, **kwargs):
        os.rename(folder, f"{folder}moved") if how == "moved" else shutil.rmtree(folder)
        return real(*args, **kwargs)
    return draw


def _digit(path: Path, zero: bool) -> Path:
    im = Image.new("L", (60, 60), 255)
    draw = ImageDraw.Draw(im)
    draw.ellipse([12, 8, 48, 52], outline=0, width=6) if zero else draw.line([(30, 8), (30, 52)], fill=0, width=6)
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path)
    return path


# ----------------------------------------------------------------------------- D1: a folder moved while written


@pytest.mark.parametrize("how", ["moved", "deleted"])
def test_evaluate_out_moved_while_its_figures_are_drawn_is_never_made_anew(run, capsys, monkeypatch, how):
    monkeypatch.setattr(cnnlab.plots, "plot_confusion", _moving(cnnlab.plots.plot_confusion, "EV", how))
    assert main(["evaluate", str(run), "--out", "EV"]) == 1
    out, err = capsys.readouterr()
    assert "\n" not in err.strip() and "Traceback" not in err
    assert not os.path.lexists("EV")  # no folder made anew at its old path, holding the figures
    assert "wrote summary.json, confusion.png" not in out
    if how == "deleted":
        assert "report incomplete: wrote summary.json in EV, not confusion.png, mistakes.png: EV was moved or " \
               "deleted while this command wrote into it" in err
        return
    assert "report incomplete: wrote summary.json in EVmoved, not confusion.png, mistakes.png: EV was moved to " \
           "EVmoved while this command wrote into it; nothing more is written, nor a folder made in its place" in err
    assert sorted(os.listdir("EVmoved")) == ["summary.json"]


def test_an_analysis_folder_moved_between_its_files_is_never_made_anew(run, capsys, monkeypatch):
    monkeypatch.setattr(cnnlab.analysis.plots, "plot_gradients",
                        _moving(cnnlab.analysis.plots.plot_gradients, "G", "moved"))
    data = json.loads((run / "config.json").read_text())["config"]["dataset"]
    assert main(["analyze", "gradients", "--depths", "2", "--width", "2", "--seeds", "1", "--epochs", "0",
                 "--batch-size", "32", "--dataset", data, "--out", "G"]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    assert "results incomplete: wrote gradients.json in Gmoved, not gradients.png, depth.png: G was moved to " \
           "Gmoved while this command wrote into it" in err
    assert not os.path.lexists("G") and sorted(os.listdir("Gmoved")) == [".analysis.lock", "gradients.json"]


def test_a_compare_folder_moved_before_its_figure_is_never_made_anew(trained, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cnnlab.compare, "plot_comparison", _moving(cnnlab.compare.plot_comparison, "C", "moved"))
    base = tiny_config(trained.parent / "tiny", max_steps=2, threads=1)
    with pytest.raises(WriteError) as caught:
        cnnlab.compare.compare(["basic_cnn"], 1, base, out="C", quiet=True, log=lambda line: None)
    assert str(caught.value).startswith("results incomplete: wrote Cmoved/comparison.md, not comparison.png: C was "
                                        "moved to Cmoved while this command wrote into it")
    assert not os.path.lexists("C") and (tmp_path / "Cmoved" / "comparison.md").is_file()


def test_show_input_dir_moved_while_its_images_are_written_is_never_made_anew(run, capsys, monkeypatch):
    images = [str(_digit(Path(f"in/{name}.png"), zero=name == "b")) for name in ("a", "b", "c")]
    real, calls = cnnlab.predict.save_input_image, []

    def second_moves(pred, folder, *args, **kwargs):
        calls.append(pred.name)
        if len(calls) == 2:
            os.rename("SI", "SImoved")
        return real(pred, folder, *args, **kwargs)

    monkeypatch.setattr(cnnlab.predict, "save_input_image", second_moves)
    assert main(["predict", str(run), *images, "--show-input", "SI"]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    assert "--show-input: the input image of in/b.png and those after it were not written: SI was moved to SImoved " \
           "while this command wrote into it" in err
    assert not os.path.lexists("SI") and sorted(os.listdir("SImoved")) == ["a.input.png", "a.input.x10.png"]


# ----------------------------------------------------------------------------- D2: out of memory drawing a figure


def test_out_of_memory_drawing_a_figure_leaves_a_finished_training_finished(run, capsys, monkeypatch):
    def no_memory(*args, **kwargs):
        raise MemoryError

    data = json.loads((run / "config.json").read_text())["config"]["dataset"]
    with pytest.MonkeyPatch.context() as m:
        m.setattr(cnnlab.plots, "plot_curves", no_memory)
        assert main(["train", "--model", "basic_cnn", "--dataset", data, "--epochs", "1", "--batch-size", "32",
                     "--lr", "0.05", "--threads", "1", "--out", "T"]) == 0
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    assert err == ("cnnlab: warning: report incomplete: wrote summary.json, confusion.png, mistakes.png in T, not "
                   "curves.png: out of memory while drawing curves.png; free some memory (close other programs) or "
                   "raise the memory limit (ulimit -v); the run's checkpoint is written: 'cnnlab evaluate T' draws "
                   "the figures again")
    assert json.loads(Path("T/status.json").read_text())["status"] == "finished"
    assert describe_run(Path("T"))["status"] == "finished"
    assert main(["evaluate", "T"]) == 0 and Path("T/curves.png").stat().st_size > 0  # the documented redraw


# ----------------------------------------------------------------------------- D3: --show-input's pair as one


def _digests(folder: str) -> dict[str, str]:
    return {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(Path(folder).iterdir())}


@pytest.mark.parametrize("why, fix", [
    ("full", "(cannot write SI/d.input.x10.png: No space left on device); free some disk space and run it again"),
    ("efbig", "(cannot write SI/d.input.x10.png: file too large (over a file-size limit: ulimit -f, or the file "
              "system's largest file)); raise the limit (ulimit -f unlimited) and run it again"),
])
def test_show_input_writes_its_pair_whole_or_not_at_all(run, capsys, monkeypatch, why, fix):
    one, zero = _digit(Path("a/d.png"), zero=False), _digit(Path("b/d.png"), zero=True)
    assert main(["predict", str(run), str(one), "--show-input", "SI"]) == 0
    before = _digests("SI")
    capsys.readouterr()
    with pytest.MonkeyPatch.context() as m:
        no_room_for(m, "d.input.x10.png", None if why == "full" else errno.EFBIG)
        assert main(["predict", str(run), str(zero), "--show-input", "SI"]) == 1
    err = one_line(capsys)
    assert _digests("SI") == before  # the new small image is not left beside the earlier one's enlarged copy
    assert err == f"warning: --show-input: the input image of b/d.png was not written into SI {fix}"
    assert main(["predict", str(run), str(zero), "--show-input", "SI"]) == 0
    after = _digests("SI")
    assert after.keys() == before.keys() and all(after[k] != before[k] for k in after)  # both the new image's


# ----------------------------------------------------------------------------- D4: an export's folders


@pytest.mark.parametrize("command, target", [
    (["export-weights"], "new2/sub/x.safetensors"),
    (["export", "--format", "torchscript", "--samples", "4"], "new3/a/b/x.pt"),
])
def test_an_export_that_cannot_be_written_leaves_no_folder_it_made(run, capsys, monkeypatch, command, target):
    with pytest.MonkeyPatch.context() as m:
        no_room_for(m, Path(target).name)
        assert main([command[0], str(run), *command[1:], "--out", target]) == 2
    assert f"cannot write {target}: No space left on device" in one_line(capsys)
    assert not os.path.lexists(target.split("/")[0])
    assert main([command[0], str(run), *command[1:], "--out", target]) == 0 and Path(target).is_file()


# ----------------------------------------------------------------------------- D5: only a whole PNG is unchanged


@pytest.mark.parametrize("damage", ["emptied", "cut short", "a link"])
def test_a_figure_that_is_no_whole_png_is_drawn_again(run, capsys, monkeypatch, damage):
    figure = run / "confusion.png"
    whole = figure.read_bytes()
    if damage == "emptied":
        figure.write_bytes(b"")
    elif damage == "cut short":
        figure.write_bytes(whole[: len(whole) // 2])
    else:
        shutil.copy(figure, "elsewhere.png")
        figure.unlink()
        figure.symlink_to(Path("elsewhere.png").resolve())
    os.utime(figure, follow_symlinks=False)
    assert main(["evaluate", str(run)]) == 0
    assert "wrote summary.json, confusion.png in R (mistakes.png unchanged)" in capsys.readouterr().out
    assert not figure.is_symlink() and figure.read_bytes().startswith(b"\x89PNG") and len(figure.read_bytes()) > 1000


def test_a_folder_in_place_of_a_figure_is_refused_in_one_line(run, capsys):
    (run / "mistakes.png").unlink()
    (run / "mistakes.png").mkdir()
    assert main(["evaluate", str(run)]) == 1
    err = one_line(capsys)
    assert err.startswith("cnnlab: warning: report incomplete: wrote summary.json in R (confusion.png unchanged), "
                          "not mistakes.png: cannot write R/mistakes.png: it is a directory, not a file")
    assert (run / "mistakes.png").is_dir() and not [p for p in os.listdir(run) if p.endswith(".tmp")]


# ----------------------------------------------------------------------------- D6: a folder in place of .lock


@pytest.mark.parametrize("command", [["train", "--resume", "R", "--epochs", "2"], ["evaluate", "R"]])
def test_a_folder_in_place_of_the_runs_lock_is_named_with_its_fix(run, capsys, command):
    (run / ".lock").unlink()
    (run / ".lock").mkdir()
    line = "R/.lock is a directory, not the lock file cnnlab writes; remove it (rmdir R/.lock)"
    row = describe_run(run)
    assert row["status"] == "damaged" and row["detail"] == line  # not "finished", offering a resume that fails
    if command[0] == "train":
        assert main(command) == 2
        assert one_line(capsys) == f"cnnlab: error: {line} if the folder is yours, else copy the run and use the copy"
    else:
        assert main(command) == 0
        assert f"no report written: {line} if the folder is yours" in capsys.readouterr().out
    (run / ".lock").rmdir()
    assert describe_run(run)["status"] == "finished"
