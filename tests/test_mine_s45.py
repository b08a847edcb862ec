"""The session's own fixes (s45): ``evaluate --out`` inside the ``folder:`` dataset it evaluates on refused, as
train's, analyze's and compare's are; a served file whose run diverges names its best.pt as a file.
docs/reliability.md lists them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cnnlab.cli import main
from cnnlab.errors import shell_quoted
from cnnlab.runs import write_status
from cnnlab.serve.app import Withdrawn
from test_atkU_s43 import _diverged, _png, _service, _trained_checkpoint
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


def test_a_served_file_whose_run_diverges_names_its_best_pt_as_a_file(tmp_path):
    """A server following a run's last.pt whose run diverged while it served warned `use its best.pt ... (--checkpoint
    best)`: a flag that ``cnnlab serve`` takes beside a run folder only, and the server follows a file. Now the
    warning (and each 503) names the run's best.pt as a file (``diverged_refusal(..., file_given=True)``), what a
    restart serves."""
    run = tmp_path / "run"
    ckpt = _trained_checkpoint(run / "last.pt", step=9)
    _trained_checkpoint(run / "best.pt", step=8)
    (run / "config.json").write_text(json.dumps({"config": {"model": "basic_cnn", "dataset": "mnist", "epochs": 1}}))
    write_status(run, "running", "")
    service, logs, warns = _service(ckpt)
    assert service.predict(_png(), "upload")["checkpoint"]["step"] == 9
    _diverged(run)
    best = shell_quoted(str(run / "best.pt"))
    with pytest.raises(Withdrawn) as err:
        service.predict(_png(), "upload")
    assert f"its best epoch before that ({best})" in str(err.value) and "--checkpoint" not in str(err.value)
    assert len(warns) == 1 and f"({best})" in warns[0] and "--checkpoint" not in warns[0], warns
