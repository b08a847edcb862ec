"""The defects a tester (probe fixes, s45) found in the newest fixes: a resume of a checkpoint copied into a folder
of the user's that wrote over their best.pt, curves.png and status.json (D1), a caller's float32 matmul precision
that reached the training and evaluation (D2), every run JSON read reserving the 256 MB limit (D3), a colleague's
checkpoint resumed inside a run folder that replaced the run (D4), and the empty folders a refused ``--out
new/sub/../run`` left (D6). All on tiny runs.
"""

from __future__ import annotations

import json
import os
import shutil
import tracemalloc
from pathlib import Path

import pytest
import torch

import cnnlab
from cnnlab import devices, imageio
from cnnlab.cli import main
from cnnlab.fileio import read_json
from cnnlab.runs import folders_made
from conftest import one_line, tiny_config, trained_once


@pytest.fixture(scope="module")
def run_seed0(tmp_path_factory) -> Path:
    """A tiny finished run (one epoch of 8 steps, --lr 0.05, --batch-size 32, seed 0)."""
    return trained_once(tmp_path_factory, "trstF-seed0")


def _other_run(run: Path, out: Path, **changes) -> Path:
    """A tiny run on ``run``'s data with ``changes``: another run."""
    from cnnlab.engine import train

    train(tiny_config(run.parent / "tiny", **changes), out=out, quiet=True, log=lambda m: None)
    return out


def _snapshot(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


# ----------------------------------------------------------------------------- D1: the user's files under run names


def test_a_resume_in_a_folder_holding_the_users_files_under_run_file_names_is_refused(run_seed0, tmp_path,
                                                                                     monkeypatch, capsys):
    """D1. `--resume proj/model.pt` beside the user's best.pt (another run's), a curves.png of theirs (text) and their
    notes as status.json: all three replaced by the resumed run's, without a word (only config.json, summary.json and
    metrics.csv were looked at). Refused before anything is written (runs.check_resumed_folder, _written_by_run);
    the run's own files beside the copy (a run folder whose config.json is gone) still resume."""
    monkeypatch.chdir(tmp_path)
    proj = tmp_path / "proj"
    proj.mkdir()
    shutil.copy(run_seed0 / "last.pt", proj / "model.pt")
    shutil.copy(_other_run(run_seed0, tmp_path / "other", seed=7) / "best.pt", proj / "best.pt")
    (proj / "curves.png").write_text("my own figure")
    (proj / "status.json").write_text('{"todo": "my notes"}')
    before = _snapshot(proj)
    capsys.readouterr()
    assert main(["train", "--resume", "proj/model.pt", "--epochs", "2", "--max-steps", "10", "--quiet"]) == 2
    err = one_line(capsys)
    assert err.startswith("cnnlab: error: --resume proj/model.pt: proj is not a run folder (it holds 'best.pt', "
                          "'curves.png', 'status.json'), and a resume writes "), err
    assert err.endswith("copy the file into a folder of its own (a new, empty one) and resume it there"), err
    assert _snapshot(proj) == before and sorted(os.listdir(proj)) == sorted(before)
    # each alone is refused too: a last.pt of another run, and a status.json that is a run's but a best.pt that is not
    (proj / "curves.png").unlink()
    (proj / "status.json").unlink()
    (proj / "best.pt").rename(proj / "last.pt")
    assert main(["train", "--resume", "proj/model.pt", "--epochs", "2", "--max-steps", "10", "--quiet"]) == 2
    assert "(it holds 'last.pt')" in one_line(capsys)
    # the run's own files (its config.json gone): resumed there, as before
    mine = tmp_path / "mine"
    shutil.copytree(run_seed0, mine)
    (mine / "config.json").unlink()
    shutil.copy(mine / "last.pt", mine / "model.pt")
    assert main(["train", "--resume", "mine/model.pt", "--epochs", "2", "--max-steps", "10", "--quiet"]) == 0
    assert json.loads((mine / "status.json").read_text())["status"] == "stopped"


# ----------------------------------------------------------------------------- D2: the caller's matmul precision


#: torch's float32 precision settings (torch.backends' fp32_precision), parents first.
_SETTINGS = ("", "cuda.matmul", "cudnn", "cudnn.conv", "cudnn.rnn", "mkldnn", "mkldnn.matmul", "mkldnn.conv",
             "mkldnn.rnn")


def _backend(path: str):
    backend = torch.backends
    for name in filter(None, path.split(".")):
        backend = getattr(backend, name)
    return backend


def _precision_now() -> tuple:
    return tuple(_backend(p).fp32_precision for p in _SETTINGS)


@pytest.fixture
def callers_precision():
    """torch's float32 precision settings as they were before the test, put back after it."""
    saved = _precision_now()
    yield
    torch.set_float32_matmul_precision("highest")
    for path, value in zip(_SETTINGS, saved):
        _backend(path).fp32_precision = value


def test_a_callers_float32_matmul_precision_reaches_neither_training_nor_evaluation(tiny_idx, tmp_path, monkeypatch,
                                                                                   callers_precision):
    """D2. Under a notebook's `torch.set_float32_matmul_precision("medium")` oneDNN multiplied in bfloat16 (a CPU
    with avx512_bf16): `cnnlab.train` trained other weights and `Run.evaluate` measured another loss, while
    config.json said fp32. Inside a run and an evaluation torch's precision is its default (devices.
    default_float32_precision, entered by callers_autocast_off); the caller's is put back after, exactly."""
    import cnnlab.engine as engine

    seen = []
    real = engine.train_one_epoch
    monkeypatch.setattr(engine, "train_one_epoch", lambda t, o: seen.append(
        (torch.get_float32_matmul_precision(), _precision_now())) or real(t, o))
    default = _precision_now()
    cfg = dict(dataset=f"idx:{tiny_idx}", epochs=1, batch_size=32, lr=0.05, device="cpu", threads=1, quiet=True)
    cnnlab.train("basic_cnn", out=str(tmp_path / "plain"), **cfg)
    plain_loss = cnnlab.load_run(tmp_path / "plain").evaluate(device="cpu").loss
    torch.set_float32_matmul_precision("medium")
    torch.backends.mkldnn.conv.fp32_precision = "bf16"  # torch's newer API, set beside it
    callers = (torch.get_float32_matmul_precision(), _precision_now())
    cnnlab.train("basic_cnn", out=str(tmp_path / "medium"), **cfg)
    loss = cnnlab.load_run(tmp_path / "medium").evaluate(device="cpu").loss
    assert seen == [("highest", default)] * 2
    assert (torch.get_float32_matmul_precision(), _precision_now()) == callers  # the caller's, as it was
    plain, medium = (torch.load(tmp_path / r / "last.pt", map_location="cpu", weights_only=False)["state_dict"]
                     for r in ("plain", "medium"))
    assert all(torch.equal(plain[k], medium[k]) for k in plain)
    assert loss == plain_loss


def test_the_default_precision_is_kept_while_any_thread_computes_and_a_mix_of_torchs_apis_is_put_back(
        callers_precision):
    """D2. Threads of one process share torch's setting: the first run takes the caller's, the last puts it back (one
    that ended first put it back under the other's steps). A caller's mix of torch's two APIs (which torch refuses to
    read back with get_float32_matmul_precision) is put back as it was."""
    torch.set_float32_matmul_precision("medium")
    torch.backends.mkldnn.matmul.fp32_precision = "tf32"  # the mix: the legacy getter raises now
    with pytest.raises(RuntimeError):
        torch.get_float32_matmul_precision()
    callers = _precision_now()
    first, second = devices.default_float32_precision(), devices.default_float32_precision()
    first.__enter__()
    assert torch.get_float32_matmul_precision() == "highest"
    assert dict(zip((p for p, _ in devices.FP32_PRECISION_DEFAULTS), _precision_now())) == dict(
        devices.FP32_PRECISION_DEFAULTS)
    second.__enter__()
    first.__exit__(None, None, None)
    assert torch.get_float32_matmul_precision() == "highest"  # the other still computes
    second.__exit__(None, None, None)
    assert _precision_now() == callers
    with pytest.raises(RuntimeError):
        torch.get_float32_matmul_precision()  # still the caller's mix


# ----------------------------------------------------------------------------- D3: reads that reserved the limit


def test_a_small_file_read_under_a_large_limit_costs_its_size_not_the_limit(run_seed0, tmp_path):
    """D3. read_small_text read `fh.read(limit + 1)`: CPython allocates the whole limit first, 256 MB for each run
    JSON (RUN_FILE_LIMIT), which a data-segment limit refused (`ulimit -d 400000; cnnlab evaluate RUN` of a tiny run:
    "out of memory"); imageio's two reads the same with the image limit. Read in chunks (fileio.read_at_most)."""
    image = tmp_path / "d.png"
    from PIL import Image
    Image.new("L", (28, 28), 0).save(image)
    read_json(run_seed0 / "config.json", "config.json")  # the imports and caches, before memory is measured
    for read in (lambda: read_json(run_seed0 / "config.json", "config.json"),
                 lambda: imageio.open_image(image),
                 lambda: imageio.open_image(open(image, "rb"))):
        tracemalloc.start()
        try:
            read()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 4 << 20, peak  # 256 MB, or the image limit, before
    # the limits and their lines are as they were
    big = tmp_path / "big.json"
    big.write_bytes(b" " * ((1 << 20) + 1))
    with pytest.raises(cnnlab.CnnlabError, match="larger than 1 MB"):
        cnnlab.TrainConfig.from_file(big)


# ----------------------------------------------------------------------------- D4: another run's checkpoint


def test_a_checkpoint_of_a_run_with_other_settings_is_refused_in_a_run_folder(run_seed0, tmp_path, monkeypatch,
                                                                              capsys):
    """D4. `--resume mine/from-colleague.pt` of a run of the same net, data and seed at another --lr and --batch-size
    continued it as mine's: mine's last.pt, best.pt, metrics.csv and config.json became the other run's (only model,
    dataset, seed, teacher and recipe were compared). Every setting a resume may not change is compared (engine.
    _check_own_checkpoint, config.other_run), the differing named; the run's own checkpoints, under other names and
    with the flags a resume may change, still resume."""
    monkeypatch.chdir(tmp_path)
    mine = Path(shutil.copytree(run_seed0, tmp_path / "mine"))
    shutil.copy(_other_run(run_seed0, tmp_path / "theirs", lr=0.1, batch_size=64) / "last.pt",
                mine / "from-colleague.pt")
    before = _snapshot(mine)
    capsys.readouterr()
    assert main(["train", "--resume", "mine/from-colleague.pt", "--epochs", "2", "--quiet"]) == 2
    err = one_line(capsys)
    assert err == ("cnnlab: error: --resume mine/from-colleague.pt: a checkpoint of another run (batch_size 64, lr 0.1) "
                   "than the one in mine (batch_size 32, lr 0.05); resume the run itself with 'cnnlab train --resume "
                   "mine', or copy the file into a folder of its own"), err
    assert _snapshot(mine) == before
    (mine / "from-colleague.pt").unlink()
    shutil.copy(mine / "last.pt", mine / "backup.pt")
    assert main(["train", "--resume", "mine/backup.pt", "--epochs", "2", "--max-steps", "10", "--threads", "1",
                 "--eval-batch-size", "100", "--quiet"]) == 0
    assert main(["train", "--resume", "mine/best.pt", "--epochs", "2", "--max-steps", "10", "--quiet"]) == 0


# ----------------------------------------------------------------------------- D6: folders made before a `..`


def test_a_refused_start_removes_the_folders_its_out_made_before_a_dotdot(tmp_path, monkeypatch, capsys):
    """D6. `train --dataset idx:/nonexistent --out new/sub/../run`: refused, and the empty new/ and new/sub/ it made
    left (first_missing, now folders_made, stopped at the `..`, where mkdir -p makes the folders before it). Now they go; a folder
    that was there before (`keep/../new/run`, `new/../keep/run`) stays."""
    monkeypatch.chdir(tmp_path)
    real = Path(os.path.realpath(tmp_path))
    assert folders_made("new/sub/../run") == (real / "new", real / "new" / "sub", real / "new" / "run")
    (tmp_path / "keep").mkdir()
    for out in ("new/sub/../run", "a/b/../../c", "keep/../new/run", "new/../keep/run"):
        assert main(["train", "--model", "basic_cnn", "--dataset", "idx:/nonexistent", "--out", out]) == 2
        assert "idx:/nonexistent: no such directory" in one_line(capsys)
        assert sorted(os.listdir(tmp_path)) == ["keep"] and os.listdir(tmp_path / "keep") == [], out
