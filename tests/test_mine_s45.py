"""The session's own fixes (s45): ``evaluate --out`` inside the ``folder:`` dataset it evaluates on refused, as
train's, analyze's and compare's are. docs/reliability.md lists them."""

from __future__ import annotations

from pathlib import Path

from cnnlab.cli import main
from test_fixN_s44 import image_folder, inside, run


def test_evaluate_out_inside_its_folder_dataset_is_refused(tmp_path, monkeypatch, capsys):
    """``cnnlab evaluate RUN --out DATA/train/rep`` wrote summary.json and the figures into the dataset's train split,
    where every later load of ``folder:DATA`` took ``rep`` for a third class (train's, analyze's and compare's
    ``--out`` were refused there). Now refused before the evaluation (``evaluation.check_report_folder`` asks
    ``data.folder.check_not_read``), on the run's own dataset and on a ``--dataset`` given; a hidden folder or
    one outside is written."""
    data = image_folder(tmp_path / "pets")
    run_dir = tmp_path / "r1"
    assert main(["train", "--model", "basic_cnn", "--dataset", f"folder:{data}", "--epochs", "1", "--threads", "1",
                 "--quiet", "--out", str(run_dir)]) == 0
    capsys.readouterr()
    monkeypatch.chdir(data)
    for extra in ([], ["--dataset", "folder:."]):
        code, out, err = run(["evaluate", str(run_dir), "--out", "cats/rep", *extra], capsys)
        assert (code, out, err) == (2, "", inside(data, "--out cats/rep", "cats")), err
        assert sorted(p.name for p in (data / "cats").iterdir() if not p.name.endswith(".png")) == []
    for out_dir in (".rep", str(tmp_path / "rep")):
        code, out, err = run(["evaluate", str(run_dir), "--out", out_dir], capsys)
        assert code == 0 and (Path(out_dir) / "summary.json").is_file(), err
    assert sorted(p.name for p in data.iterdir()) == [".rep", "cats", "dogs"]
