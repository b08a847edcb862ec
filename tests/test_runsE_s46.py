"""The defects a tester (probe fixruns, s46) found in the run side's newest fixes: another run's best.pt on other
``idx:`` data taken for the run's own and written over (D1), a colleague's checkpoint on other data refused as "your
data changed" (D2), a checkpoint of another --epochs of a one-cycle run resumed over the run (D3), hand-started
ranks with other settings never compared (D4), the advice "--resume RUN/best.pt" for a finished run's damaged last.pt
that left it damaged (D5), and a user's own PNG under a figure's name written over (D6). All on tiny runs.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnlab.cli import main
from cnnlab.config import TrainConfig, other_run
from conftest import one_line, tiny_config, trained_once, two_ranks, write_idx_dataset


@pytest.fixture(scope="module")
def run_da(tmp_path_factory) -> Path:
    """A tiny finished run (one epoch of 8 steps, --lr 0.05, --batch-size 32) on its ``tiny`` idx: data."""
    return trained_once(tmp_path_factory, "runsE-da")


def _train(*args: str) -> int:
    return main(["train", "--threads", "1", "--quiet", *args])


def _snapshot(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def _run_on(data: Path, out: Path, *args: str) -> Path:
    assert _train("--model", "basic_cnn", "--dataset", f"idx:{data}", "--batch-size", "32", "--lr", "0.05",
                  "--out", str(out), *args) == 0
    return out


# ----------------------------------------------------------------------------- D1, D2: other data, another run


def test_another_runs_best_pt_on_other_idx_data_is_the_users_and_is_not_written_over(run_da, tmp_path, monkeypatch,
                                                                                    capsys):
    """D1. A run's last.pt copied into a folder of the user's that holds their best.pt of a run on another idx:
    directory: the resume took it for the run's (any two idx: datasets counted as one moved) and wrote over it. Now
    checkpoint.same_run_as compares the records of the runs' data (data.dataset.same_data): other data, another run;
    refused before anything is written."""
    monkeypatch.chdir(tmp_path)
    theirs = _run_on(write_idx_dataset(tmp_path / "DB", seed=5), tmp_path / "theirs", "--epochs", "1")
    proj = tmp_path / "proj"
    proj.mkdir()
    for name in ("best.pt", "best.pt.sha256"):
        shutil.copy(theirs / name, proj / name)
    shutil.copy(run_da / "last.pt", proj / "model.pt")
    before = _snapshot(proj)
    capsys.readouterr()
    assert _train("--resume", "proj/model.pt") == 2
    assert "proj is not a run folder (it holds 'best.pt', 'best.pt.sha256')" in one_line(capsys)
    assert _snapshot(proj) == before and sorted(p.name for p in proj.iterdir()) == sorted(before)


def test_a_colleagues_checkpoint_on_other_idx_data_is_another_run_not_changed_data(run_da, tmp_path, monkeypatch,
                                                                                  capsys):
    """D2. A colleague's checkpoint trained on another idx: directory, resumed in my run folder: "idx:DA is not the
    data the run trained on ...; put the data back as it was", though DA never changed. Now engine._check_own_checkpoint
    compares the checkpoint's record of its data with config.json's: another run, both datasets named."""
    monkeypatch.chdir(tmp_path)
    mine = Path(shutil.copytree(run_da, tmp_path / "mine"))
    colleague = _run_on(write_idx_dataset(tmp_path / "DB", seed=5), tmp_path / "colleague", "--epochs", "1")
    shutil.copy(colleague / "last.pt", mine / "from-colleague.pt")
    before = _snapshot(mine)
    capsys.readouterr()
    assert _train("--resume", "mine/from-colleague.pt") == 2
    assert one_line(capsys) == (
        f"cnnlab: error: --resume mine/from-colleague.pt: a checkpoint of another run (dataset 'idx:{tmp_path}/DB') "
        f"than the one in mine (dataset 'idx:{run_da.parent}/tiny'); resume the run itself with 'cnnlab train "
        "--resume mine', or copy the file into a folder of its own")
    assert _snapshot(mine) == before


def test_a_checkpoint_of_other_data_at_the_same_place_is_another_run(tmp_path, monkeypatch, capsys):
    """D2's neighbour: a colleague's checkpoint of the same idx: path when it held other data is another run too (not
    "the data the run trained on changed": mine's is as it was), named with what differs."""
    monkeypatch.chdir(tmp_path)
    data = write_idx_dataset(tmp_path / "D", seed=5)
    colleague = _run_on(data, tmp_path / "colleague", "--epochs", "1")
    shutil.rmtree(data)
    mine = _run_on(write_idx_dataset(data, seed=0), tmp_path / "mine", "--epochs", "1")
    shutil.copy(colleague / "last.pt", mine / "from-colleague.pt")
    capsys.readouterr()
    assert _train("--resume", "mine/from-colleague.pt") == 2
    err = one_line(capsys)
    assert (f"a checkpoint of another run (dataset 'idx:{data}' with other contents than this run's: the train images' "
            f"mean, their spread and the test images or labels differ) than the one in mine (dataset 'idx:{data}')") in err, err


def test_other_run_takes_a_directory_as_moved_only_where_the_records_of_the_data_agree():
    """D1/D2 in config.other_run: two idx: directories are one moved only where the data is known the same."""
    mine = dict(model="basic_cnn", dataset="idx:/a/D", epochs=3, batch_size=32)
    moved = {**mine, "dataset": "idx:/b/D"}
    assert other_run(mine, moved, same_data=True) == []
    assert other_run(mine, moved, same_data=False) == ["dataset"]
    assert other_run(mine, moved) == ["dataset"]  # not known: another place is another run's
    assert other_run(mine, dict(mine), same_data=False) == ["dataset"]
    assert other_run(mine, dict(mine), same_data=True) == []


# ----------------------------------------------------------------------------- D3: another --epochs


def test_a_checkpoint_of_another_length_of_a_one_cycle_run_is_another_run(tmp_path, monkeypatch, capsys):
    """D3. A colleague's 5-epoch checkpoint of a 3-epoch one-cycle run resumed over it (its checkpoints, metrics and
    config.json replaced), where the run's own `--resume mine --epochs 5` is refused. Now config.other_run counts
    epochs as config.resumed_config does (config.epochs_change)."""
    monkeypatch.chdir(tmp_path)
    data = write_idx_dataset(tmp_path / "D")
    mine = _run_on(data, tmp_path / "mine", "--schedule", "onecycle", "--epochs", "3", "--max-steps", "8")
    colleague = _run_on(data, tmp_path / "colleague", "--schedule", "onecycle", "--epochs", "5", "--max-steps", "8")
    shutil.copy(colleague / "last.pt", mine / "from-colleague.pt")
    before = _snapshot(mine)
    capsys.readouterr()
    assert _train("--resume", "mine/from-colleague.pt") == 2
    assert one_line(capsys) == (
        "cnnlab: error: --resume mine/from-colleague.pt: a checkpoint of another run (epochs 5) than the one in mine "
        "(epochs 3); resume the run itself with 'cnnlab train --resume mine', or copy the file into a folder of its own")
    assert _snapshot(mine) == before


def test_other_run_lets_a_constant_rate_run_be_lengthened_and_nothing_else():
    """D3's rule is the resume's own: another length is the same run only at a constant rate without clean epochs."""
    base = dict(model="basic_cnn", dataset="mnist", epochs=3, schedule="constant", clean_epochs=0, augment="shift")
    assert other_run(base, {**base, "epochs": 5}) == []
    assert other_run({**base, "schedule": "cosine"}, {**base, "schedule": "cosine", "epochs": 5}) == ["epochs"]
    assert other_run({**base, "clean_epochs": 1}, {**base, "clean_epochs": 1, "epochs": 5}) == ["epochs"]


# ----------------------------------------------------------------------------- D4: ranks with other settings


def test_hand_started_ranks_with_another_lr_are_refused_in_one_line_each_before_any_step(tmp_path):
    """D4. Two hand-started ranks (as on two machines), rank 1 typed --lr 0.1: both trained, each at its own rate on
    averaged gradients, config.json naming rank 0's; another --batch-size aborted in gloo's C++, another --epochs hung
    both. Now engine.refuse_other_ranks gathers the resolved settings (config.rank_settings) with the data's
    fingerprint, and every rank refuses before any step."""
    folders = [tmp_path / "m0", tmp_path / "m1"]
    for folder in folders:
        write_idx_dataset(folder / "data")
    out = tmp_path / "run"
    common = ["train", "--model", "basic_cnn", "--dataset", "idx:data", "--epochs", "1", "--batch-size", "32",
              "--device", "cpu", "--threads", "1", "--quiet", "--out", str(out)]
    done = two_ranks(folders, [common + ["--lr", "0.01"], common + ["--lr", "0.1"]])
    line = ("the group's processes were started with other settings: rank 1's --lr 0.1 is not rank 0's --lr 0.01; "
            "start every process with the same command\n")
    assert [d.returncode for d in done] == [2, 2], [d.stderr for d in done]
    assert done[0].stderr == f"cnnlab: error: {line}", done[0].stderr
    assert done[1].stderr == f"cnnlab: error: rank 1: {line}", done[1].stderr
    assert "step" not in done[0].stdout and not out.exists()


def test_the_ranks_compare_every_setting_but_each_processs_own():
    """D4: what the ranks compare: not the device, threads, allocator or the places of their files (their data is
    compared by its fingerprint), but --epochs, --max-steps, --eval-batch-size and whether there is a teacher."""
    from cnnlab.config import rank_settings
    from cnnlab.engine import _refuse_other_settings
    from cnnlab.errors import CnnlabError

    cfg = tiny_config(Path("/m0/data")).resolve()
    other = TrainConfig(**{**cfg.__dict__, "dataset": "idx:/m1/data", "device": "cuda", "threads": 3,
                           "malloc_tuning": False, "data_dir": None, "tensorboard": True})
    _refuse_other_settings(1, rank_settings(cfg), rank_settings(other))
    for key, value, said in (("epochs", 2, "rank 1's --epochs 2 is not rank 0's --epochs 1;"),
                             ("max_steps", 5, "rank 1's --max-steps 5 is not rank 0's --max-steps 0;"),
                             ("channels_last", False, "rank 1's --no-channels-last is not rank 0's --channels-last;"),
                             ("teacher", "/t/last.pt", "rank 1's --teacher is not rank 0's no --teacher;")):
        with pytest.raises(CnnlabError, match=said):
            _refuse_other_settings(1, rank_settings(cfg), rank_settings(TrainConfig(**{**cfg.__dict__, key: value})))


# ----------------------------------------------------------------------------- D5: a damaged last.pt, best.pt at the end


def test_a_finished_runs_damaged_last_pt_is_written_again_by_the_resume_its_advice_names(tmp_path, monkeypatch,
                                                                                        capsys):
    """D5. A finished run whose last.pt was cut short, its best.pt saved at its last step: following the advice
    `--resume r/best.pt` only re-evaluated it, and last.pt stayed damaged (the same refusal next time). Now
    engine._recover_last writes best.pt as last.pt again (the same bytes the run saved), and the run is whole."""
    monkeypatch.chdir(tmp_path)
    run = _run_on(write_idx_dataset(tmp_path / "D"), tmp_path / "r", "--epochs", "2", "--lr", "0.01")
    saved = (run / "last.pt").read_bytes()
    assert saved == (run / "best.pt").read_bytes()  # its last epoch was its best: one position, saved twice
    with open(run / "last.pt", "r+b") as fh:
        fh.truncate(20000)
    capsys.readouterr()
    assert _train("--resume", "r") == 2
    assert "use its best.pt (--resume r/best.pt)" in one_line(capsys)
    assert _train("--resume", "r/best.pt") == 0
    out = capsys.readouterr().out
    assert ("note: r/last.pt could not be read (damaged); its best.pt was saved at the same position, the run's end "
            "(step 16), and is written as last.pt again: the run is whole") in out, out
    assert (run / "last.pt").read_bytes() == saved
    assert (run / "last.pt.sha256").read_text().split()[0] == (run / "best.pt.sha256").read_text().split()[0]
    assert main(["runs", "--root", ".", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["status"], r["detail"]) for r in rows] == [("finished", "")], rows
    assert main(["evaluate", "r", "--no-report"]) == 0


def test_a_best_pt_before_the_runs_end_leaves_a_damaged_last_pt_to_the_training(tmp_path, monkeypatch, capsys):
    """D5's limit: best.pt of an earlier position is not the run's end, and is never written as last.pt: the resume
    from it trains on (and saves last.pt as it goes)."""
    from cnnlab.engine import train

    monkeypatch.chdir(tmp_path)
    data = write_idx_dataset(tmp_path / "D")
    run = tmp_path / "r"
    train(tiny_config(data, epochs=3, max_steps=12), out=run, quiet=True, log=lambda m: None)  # stopped in epoch 2
    damaged = (run / "last.pt").read_bytes()[:20000]
    (run / "last.pt").write_bytes(damaged)
    capsys.readouterr()
    assert _train("--resume", "r/best.pt", "--max-steps", "10") == 0  # at step 8, trains to 10
    assert "could not be read" not in capsys.readouterr().out
    assert (run / "last.pt").read_bytes() != damaged


# ----------------------------------------------------------------------------- D6: a user's PNG of a figure's name


def _png(**kwargs) -> bytes:
    buf = io.BytesIO()
    Image.fromarray((np.random.default_rng(1).random((30, 40, 3)) * 255).astype("uint8")).save(buf, "PNG", **kwargs)
    return buf.getvalue()


def test_a_users_png_under_a_figures_name_is_theirs_and_is_not_written_over(run_da, tmp_path, monkeypatch, capsys):
    """D6. A user's own curves.png beside a run's last.pt copied into their folder was replaced by the run's figure:
    any PNG counted as the run's. Now cnnlab's figures carry fileio.FIGURE_MARK (a PNG text chunk), and
    runs._written_by_run takes a PNG for the run's only with it; the run's own figure still is."""
    from cnnlab.fileio import png_marked

    monkeypatch.chdir(tmp_path)
    for name in ("curves.png", "confusion.png", "mistakes.png"):
        assert png_marked(io.BytesIO((run_da / name).read_bytes())), name
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "curves.png").write_bytes(_png())
    shutil.copy(run_da / "last.pt", proj / "model.pt")
    before = _snapshot(proj)
    capsys.readouterr()
    assert _train("--resume", "proj/model.pt", "--epochs", "2", "--max-steps", "10") == 2
    assert "proj is not a run folder (it holds 'curves.png')" in one_line(capsys)
    assert _snapshot(proj) == before
    (proj / "curves.png").write_bytes((run_da / "curves.png").read_bytes())  # the run's own figure
    assert _train("--resume", "proj/model.pt", "--epochs", "2", "--max-steps", "10") == 0


def test_every_figure_cnnlab_saves_carries_its_mark_and_another_pngs_text_does_not_count(tmp_path):
    """D6: both ways cnnlab saves a figure (Pillow's drawing.save_png, matplotlib's plots.save_figure) mark it; a PNG
    with other text (matplotlib's own Software line) or none is not cnnlab's."""
    from PIL import PngImagePlugin
    from matplotlib.figure import Figure

    from cnnlab.drawing import save_png
    from cnnlab.fileio import FIGURE_MARK, png_marked
    from cnnlab.plots import save_figure

    save_png(Image.new("RGB", (20, 10)), tmp_path / "a.png")
    fig = Figure()
    fig.add_subplot().plot([1, 2])
    save_figure(fig, tmp_path / "b.png")
    for name in ("a.png", "b.png"):
        with open(tmp_path / name, "rb") as fh:
            assert png_marked(fh), name
    info = PngImagePlugin.PngInfo()
    info.add_text("Software", "Matplotlib version3.9")
    assert not png_marked(io.BytesIO(_png(pnginfo=info)))
    assert not png_marked(io.BytesIO(_png()))
    assert not png_marked(io.BytesIO(b"\x89PNG\r\n\x1a\n" + b"\0\0\0\x0fIDAT" + b"Software\0cnnlab"))
    assert FIGURE_MARK == ("Software", "cnnlab")
