"""Fixes of the API prober's defects (s44, /work/logs/s44/probe/api_report.md): a caller's autocast, ``runs --json``,
``Predictor``'s class methods, "did you mean", a config file's values checked outside ``validate``, a run's record
with a newer key, ``load_run`` of best.pt, and a re-run whose ``idx:`` folder moved."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

import cnnlab
from cnnlab.checkpoint import load_checkpoint
from cnnlab.cli import main
from cnnlab.errors import CheckpointError, CnnlabError, RunError
from cnnlab.evaluation import evaluate_run
from conftest import trained_once

QUIET = dict(quiet=True, threads=1, device="cpu")


@pytest.fixture(scope="module")
def shared_run(tmp_path_factory):
    """One finished tiny run (basic_cnn, 1 epoch) for the tests that only read it, or copy it to change it."""
    return trained_once(tmp_path_factory, "fixA_s44")


def _weights(run) -> dict:
    return load_checkpoint(run / "last.pt")["state_dict"]


def test_did_you_mean_names_the_setting_for_the_typo(tmp_path, capsys):
    """With two unknown keys it said ``(did you mean 'epochz' for 'epochs'?)``: the typo for the setting."""
    settings = tmp_path / "two.yaml"
    settings.write_text("epochz: 2\nlrr: 0.1\nmodel: resnet\n")
    assert main(["train", "--config", str(settings), "--out", str(tmp_path / "z")]) == 2
    assert "unknown settings ['epochz', 'lrr'] (did you mean 'epochs' for 'epochz'?)" in capsys.readouterr().err


def test_a_runs_record_with_a_key_of_a_newer_cnnlab_is_rerun(shared_run, tmp_path, capsys):
    """A top-level key config.json did not have (a newer cnnlab's record) was refused: "put them inside it", and
    inside it was refused again. It is no setting, and is ignored as the record's other keys are; a setting there
    is still refused."""
    run = tmp_path / "fut"
    shutil.copytree(shared_run, run)
    record = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**record, "hardware": {"cpu": "x"}}))
    assert cnnlab.TrainConfig.from_file(run / "config.json").to_dict() == record["config"]
    assert main(["train", "--config", str(run), "--max-steps", "1", "--out", str(tmp_path / "z"), "--quiet"]) == 0
    (run / "config.json").write_text(json.dumps({**record, "hardware": {"cpu": "x"}, "epochz": 3}))
    with pytest.raises(CnnlabError, match=r"unknown settings \['epochz'\] beside 'config' \(put them inside it\)"):
        cnnlab.TrainConfig.from_file(run / "config.json")


def test_runs_json_lists_every_run_or_says_how_many_it_left_out(shared_run, tmp_path, capsys):
    """``cnnlab runs --json`` cut the list to 20 without a word (the table says "... and 5 older")."""
    root = tmp_path / "runs"
    for i in range(22):
        shutil.copytree(shared_run, root / f"r{i:02d}")
    assert main(["runs", "--root", str(root), "--json"]) == 0
    out, err = capsys.readouterr()
    assert len(json.loads(out)) == 22 and err == ""
    assert main(["runs", "--root", str(root), "--json", "--limit", "5"]) == 0
    out, err = capsys.readouterr()
    assert len(json.loads(out)) == 5 and err == "... and 17 older left out of the JSON (--limit 0 shows all)\n"
    assert main(["runs", "--root", str(root)]) == 0  # the table keeps its 20
    assert "... and 2 older (--limit 0 shows all)" in capsys.readouterr().out


@pytest.mark.parametrize("path, said", [(None, "must be a path (a str or pathlib.Path), got None; give one"),
                                        (3, "must be a path (a str or pathlib.Path), got 3; give one"),
                                        ("", "is an empty path (an unset variable?); give a path")])
def test_predictor_from_file_of_no_path_is_one_line(path, said):
    """``Predictor.from_file(None | 3 | "")``: a bare TypeError / ValueError ("PosixPath('.') has an empty name")."""
    with pytest.raises(CheckpointError) as err:
        cnnlab.Predictor.from_file(path)
    assert str(err.value) == f"a checkpoint file {said}"


def test_predictor_class_methods_name_the_arguments_not_the_flags(shared_run, tmp_path):
    """``cnnlab.Predictor``'s class methods said ``--checkpoint last``, ``--device``, ``cnnlab train --model NAME``,
    and for a folder given to ``from_file`` "pass a run directory", which it refuses."""
    early = tmp_path / "early"
    shutil.copytree(shared_run, early)
    (early / "best.pt").unlink()
    (early / "metrics.csv").unlink()  # as before its first epoch ended: no best.pt yet
    calls = [(lambda: cnnlab.Predictor.from_run(early, which="best"), "use which='last'"),
             (lambda: cnnlab.Predictor.from_run(shared_run, device="tpu"), "^device must be auto, cpu,"),
             (lambda: cnnlab.Predictor.pretrained("vgg"), r"cnnlab\.train\(model=NAME, dataset=DATA\)"),
             (lambda: cnnlab.Predictor.from_file(shared_run),
              rf"a folder, not a checkpoint file; give its checkpoint \({shared_run / 'last.pt'}\), or "
              rf"Predictor\.from_run\('{shared_run}'\)")]
    for call, said in calls:
        with pytest.raises(CnnlabError, match=said) as err:
            call()
        assert "--" not in str(err.value)
    from cnnlab.predict import Predictor  # the library's, which the command line calls: its flags kept

    with pytest.raises(CheckpointError, match="use --checkpoint last"):
        Predictor.from_run(early, which="best")
    predictor = cnnlab.Predictor.from_run(shared_run, device="cpu")
    assert isinstance(predictor, cnnlab.Predictor) and isinstance(cnnlab.predictor(shared_run), cnnlab.Predictor)


def test_load_run_of_best_pt_uses_best_pt(shared_run, tmp_path):
    """``load_run("r/best.pt").predictor()`` and ``.evaluate()`` used last.pt, another net, without a word."""
    best = cnnlab.load_run(shared_run / "best.pt")
    assert best.which == "best" and best.path == shared_run
    assert best.predictor().checkpoint["file"].endswith("best.pt")
    assert best.checkpoint()["train_state"] == load_checkpoint(shared_run / "best.pt")["train_state"]
    assert best.evaluate(device="cpu") == evaluate_run(shared_run, which="best", device="cpu")[0]
    assert best.predictor(which="last").checkpoint["file"].endswith("last.pt")  # another, when asked for
    assert cnnlab.load_run(shared_run).which == cnnlab.load_run(shared_run / "last.pt").which == "last"
    copy = tmp_path / "r"
    shutil.copytree(shared_run, copy)
    shutil.copy(copy / "last.pt", copy / "epoch1.pt")
    with pytest.raises(RunError, match=r"epoch1\.pt: not one of its run's checkpoints \(last\.pt, best\.pt\)"):
        cnnlab.load_run(copy / "epoch1.pt")


def test_a_callers_autocast_does_not_reach_the_run(tiny_idx, tmp_path):
    """Under a caller's ``torch.autocast("cpu", dtype=torch.bfloat16)`` the run trained and evaluated in bf16 (19%
    where it reached 67%) while config.json said fp32; it now computes what its config records, bit for bit."""
    settings = dict(dataset=f"idx:{tiny_idx}", epochs=1, max_steps=3, batch_size=32, lr=0.05, **QUIET)
    plain = cnnlab.train("basic_cnn", out=tmp_path / "plain", **settings)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        wrapped = cnnlab.train("basic_cnn", out=tmp_path / "wrapped", **settings)
        assert torch.is_autocast_enabled("cpu")  # the caller's own autocast is on again after the call
        measured = cnnlab.load_run(tmp_path / "plain").evaluate(device="cpu")
    mine, theirs = _weights(tmp_path / "plain"), _weights(tmp_path / "wrapped")
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)
    assert wrapped.final.loss == plain.final.loss and wrapped.final.accuracy == plain.final.accuracy
    assert measured.loss == plain.final.loss  # an evaluation under the caller's autocast stays float32 too


def test_a_bf16_run_under_a_callers_autocast_is_the_same_bf16_run(tiny_idx, tmp_path):
    """The engine's own bf16 autocast (``precision="bf16"``) still acts inside a caller's autocast turned off."""
    settings = dict(dataset=f"idx:{tiny_idx}", epochs=1, max_steps=2, batch_size=32, lr=0.05, precision="bf16",
                    **QUIET)
    cnnlab.train("basic_cnn", out=tmp_path / "plain", **settings)
    with torch.autocast("cpu", dtype=torch.float16):
        cnnlab.train("basic_cnn", out=tmp_path / "wrapped", **settings)
    mine, theirs = _weights(tmp_path / "plain"), _weights(tmp_path / "wrapped")
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)


@pytest.mark.parametrize("line, said", [
    ("device: CPU", "device must be auto, cpu, cuda, cuda:N or mps, got 'CPU'"),
    ("augment: SHIFT", "augment 'SHIFT': unknown op 'SHIFT'"),
    ("teacher: {tmp}/nope", "teacher: {tmp}/nope: no such checkpoint"),
    ("data_dir: {tmp}/nope", "data_dir {tmp}/nope: no such directory; check the path, or leave data_dir out"),
])
def test_a_settings_files_values_are_refused_as_its_keys(tmp_path, capsys, line, said):
    """A settings file's device, augment, teacher and data_dir were refused as flags nobody typed (``--device must
    be ...``); they are named as the file's keys, as validate's refusals are, before anything is made."""
    settings = tmp_path / "s.yaml"
    settings.write_text(f"model: resnet\ndataset: mnist\n{line.format(tmp=tmp_path)}\n")
    assert main(["train", "--config", str(settings), "--threads", "1", "--max-steps", "1",
                 "--out", str(tmp_path / "z")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{settings}: {said.format(tmp=tmp_path)}" in err and "--" not in err
    assert not (tmp_path / "z").exists()


def test_a_typed_flag_keeps_its_name_beside_a_settings_file(tmp_path, capsys):
    settings = tmp_path / "s.yaml"
    settings.write_text("model: resnet\ndataset: mnist\n")
    assert main(["train", "--config", str(settings), "--device", "CPU", "--out", str(tmp_path / "z")]) == 2
    assert "--device must be auto, cpu" in capsys.readouterr().err


def test_a_rerun_whose_idx_folder_moved_says_how_to_give_its_new_place(tiny_idx, tmp_path, capsys):
    """``--config RUN`` of a run whose ``idx:`` folder moved said ``idx:DIR: no such directory; pass idx:DIR with
    the four IDX files``, naming neither the run nor --dataset; it now says it as a resume does."""
    data = tmp_path / "data"
    shutil.copytree(tiny_idx, data)
    assert main(["train", "--model", "basic_cnn", "--dataset", f"idx:{data}", "--epochs", "1", "--max-steps", "2",
                 "--device", "cpu", "--threads", "1", "--out", str(tmp_path / "r"), "--quiet"]) == 0
    data.rename(tmp_path / "data2")
    capsys.readouterr()
    assert main(["train", "--config", str(tmp_path / "r"), "--out", str(tmp_path / "r2"), "--quiet"]) == 2
    err = capsys.readouterr().err
    record = tmp_path / "r" / "config.json"
    assert err.count("\n") == 1 and f"--config {record}: its dataset idx:{data} is not there (moved or deleted?); " \
        f"if it moved, give its new place: cnnlab train --config {record} --dataset idx:NEW_DIR" in err
    assert not (tmp_path / "r2").exists()
    assert main(["train", "--config", str(tmp_path / "r"), "--dataset", f"idx:{tmp_path / 'data2'}",
                 "--out", str(tmp_path / "r2"), "--quiet"]) == 0
    mine, theirs = _weights(tmp_path / "r"), _weights(tmp_path / "r2")
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)
