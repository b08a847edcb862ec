"""Knowledge distillation (--teacher RUN): the loss, the checks on the teacher, and a resume that ends bitwise."""

from __future__ import annotations

import json
import re

import pytest
import torch
import torch.nn.functional as F

from cnnlab.checkpoint import load_checkpoint
from cnnlab.cli import main
from cnnlab.config import TrainConfig
from cnnlab.distill import TEACHER_FILE, Teacher
from cnnlab.engine import train
from cnnlab.errors import CnnlabError

QUIET = dict(quiet=True, log=lambda m: None)


def cfg(tiny_idx, **kw) -> TrainConfig:
    base = dict(model="basic_cnn", dataset=f"idx:{tiny_idx}", epochs=2, batch_size=32, device="cpu", lr=0.05)
    return TrainConfig(**{**base, **kw})


@pytest.fixture
def teacher_run(tiny_idx, tmp_path):
    return train(cfg(tiny_idx, seed=5), out=tmp_path / "teacher", **QUIET).run_dir


def test_the_loss_is_hintons_mix_of_cross_entropy_and_the_teachers_softened_targets():
    torch.manual_seed(0)
    net = torch.nn.Linear(6, 4)
    x, logits, ce = torch.randn(8, 6), torch.randn(8, 4), torch.tensor(1.25)
    for w, t in ((0.5, 1.0), (0.9, 4.0), (1.0, 2.0)):
        got = Teacher(net, None, "", w, t).loss(ce, logits, x)
        p = F.softmax(net(x).detach() / t, dim=1)
        kl = (p * (p.log() - F.log_softmax(logits / t, dim=1))).sum() / len(x)
        assert torch.allclose(got, (1 - w) * ce + w * t * t * kl, atol=1e-6)
    student = logits.clone().requires_grad_(True)
    Teacher(net, None, "", 0.5, 1.0).loss(ce, student, x).backward()
    assert student.grad is not None and all(p.grad is None for p in net.parameters())  # the teacher learns nothing


def test_a_distilled_run_records_and_copies_its_teacher_and_resumes_bitwise(tiny_idx, tmp_path, teacher_run):
    settings = dict(model="resnet", teacher=str(teacher_run), distill=0.7, distill_temperature=2.0,
                    augment="shift", ema=0.9, schedule="onecycle", optimizer="adamw", lr=0.01)
    straight = train(cfg(tiny_idx, **settings), out=tmp_path / "straight", **QUIET)
    plain = train(cfg(tiny_idx, **{**settings, "teacher": None}), out=tmp_path / "plain", **QUIET)
    saved = json.loads((tmp_path / "straight" / "config.json").read_text())["config"]
    assert saved["teacher"] == str((teacher_run / "last.pt").resolve()) and saved["distill"] == 0.7
    assert (tmp_path / "straight" / TEACHER_FILE).read_bytes() == (teacher_run / "last.pt").read_bytes()
    assert straight.history[-1]["train_loss"] != plain.history[-1]["train_loss"]  # the teacher changed the objective
    from cnnlab.cli.runs import format_runs
    from cnnlab.runs import describe_run
    rows = [describe_run(tmp_path / "straight"), describe_run(tmp_path / "plain")]
    assert rows[0]["teacher"] == saved["teacher"] and rows[1]["teacher"] is None and rows[0]["recipe"] == "lecture"
    table = format_runs(rows).splitlines()
    assert " lecture* " in table[1] and " lecture " in table[2] and table[-1].startswith("* taught by another run")
    train(cfg(tiny_idx, **settings, max_steps=5, save_every=2), out=tmp_path / "cut", **QUIET)
    # the teacher's own run goes on training (its last.pt changes): the student resumes from its copy
    train(TrainConfig(epochs=3), resume=teacher_run, changes={"epochs": 3}, **QUIET)
    resumed = train(TrainConfig(), resume=tmp_path / "cut", **QUIET)
    a, b = (load_checkpoint(tmp_path / n / "last.pt") for n in ("straight", "cut"))
    for key in ("state_dict", "train_weights"):
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key]), key
    assert a["teacher"]["sha256"] == b["teacher"]["sha256"]
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("seconds", "images_per_s")} for r in rows]  # noqa: E731
    assert strip(straight.history) == strip(resumed.history)
    # the run's copy altered: one line, nothing trained
    (tmp_path / "cut" / TEACHER_FILE).write_bytes((teacher_run / "last.pt").read_bytes())
    with pytest.raises(CnnlabError, match="its copy of the teacher .teacher.pt. is not the file the run trained with"):
        train(TrainConfig(), resume=tmp_path / "cut", **QUIET)


def test_a_teacher_that_could_not_teach_this_run_is_refused_in_one_line(tiny_idx, tmp_path, teacher_run, capsys):
    base = ["train", "--model", "basic_cnn", "--dataset", f"idx:{tiny_idx}", "--device", "cpu", "--epochs", "1",
            "--batch-size", "32", "--quiet"]
    other = tmp_path / "other"
    from tests.conftest import write_idx_dataset  # another dataset of the same shape
    write_idx_dataset(other, seed=3)
    cases = [
        (["--teacher", str(tmp_path / "nope")], "--teacher: "),
        (["--teacher", str(teacher_run), "--val-split", "0.25"], "so it saw images this run holds out for validation"),
        (["--teacher", str(teacher_run), "--distill", "0"], "--distill is the weight of the teacher's term"),
        (["--teacher", str(teacher_run), "--distill-temperature", "-1"], "--distill-temperature must be in (0, 100]"),
    ]
    for extra, message in cases:
        assert main([*base, *extra, "--out", str(tmp_path / "s")]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
        assert not (tmp_path / "s").exists()
    assert main([*base[:4], f"idx:{other}", *base[5:], "--teacher", str(teacher_run), "--out", str(tmp_path / "s")]) == 2
    assert "it was trained on" in capsys.readouterr().err
    # the teacher's dataset (an idx: folder) changed since it learned it: its normalisation no longer fits
    write_idx_dataset(tiny_idx, n_train=192, seed=9)
    assert main([*base, "--teacher", str(teacher_run), "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert "it was trained on another version of" in err and "the number of train images" in err and not (tmp_path / "s").exists()


def test_compare_with_teachers_distils_each_run_from_its_model_and_seeds_run(tiny_idx, tmp_path, capsys):
    from cnnlab.compare import compare, config_key

    base = cfg(tiny_idx, epochs=1)
    with pytest.raises(CnnlabError, match="no finished basic_cnn seed 0 run of these settings there"):
        compare(["basic_cnn"], 2, base, tmp_path / "cmp-distilled", log=lambda m: None, teachers=tmp_path / "cmp")
    with pytest.raises(CnnlabError, match="is the teachers' folder"):
        compare(["basic_cnn"], 2, base, tmp_path / "cmp", log=lambda m: None, teachers=tmp_path / "cmp")
    flags = ["compare", "--models", "basic_cnn", "--seeds", "2", "--dataset", f"idx:{tiny_idx}", "--epochs", "1",
             "--batch-size", "32", "--device", "cpu"]
    assert main([*flags, "--out", str(tmp_path / "cmp")]) == 0
    table = (tmp_path / "cmp" / "comparison.md").read_text()
    assert main([*flags, "--teachers", str(tmp_path / "cmp")]) == 0
    assert "distilled from the runs in " in capsys.readouterr().out
    students = sorted((tmp_path / "cmp-distilled").glob("basic_cnn-seed*"))
    teachers = sorted((tmp_path / "cmp").glob("basic_cnn-seed*"))
    assert len(students) == 2 and (tmp_path / "cmp" / "comparison.md").read_text() == table  # teachers untouched
    for seed, (student, teacher) in enumerate(zip(students, teachers)):
        saved = TrainConfig.from_dict(json.loads((student / "config.json").read_text())["config"])
        assert saved.seed == seed and saved.teacher == str((teacher / "last.pt").resolve())
        assert config_key(saved) != config_key(TrainConfig.from_dict({**saved.to_dict(), "teacher": None}))


def test_compare_with_teachers_auto_makes_the_teachers_first_in_one_command(tiny_idx, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    flags = ["compare", "--models", "basic_cnn", "--seeds", "1", "--dataset", f"idx:{tiny_idx}", "--epochs", "1",
             "--batch-size", "32", "--device", "cpu", "--teachers", "auto"]
    assert main(flags) == 0
    out = capsys.readouterr().out
    teachers, students = sorted(p for p in (tmp_path / "runs").iterdir())
    assert students.name == teachers.name + "-distilled" and "distilled from the runs in" in out
    (teacher,), (student,) = teachers.glob("basic_cnn-seed0-*"), students.glob("basic_cnn-seed0-*")
    assert json.loads((student / "config.json").read_text())["config"]["teacher"] == str((teacher / "last.pt").resolve())
    assert not (teachers / "comparison.md").exists()  # the teachers' runs, not a table of them
    assert main(flags) == 0  # again: both reused, nothing trained
    assert "trained" not in capsys.readouterr().out.replace("untrained", "")


def test_compare_with_a_teacher_model_teaches_every_model_by_that_models_runs(tiny_idx, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    flags = ["compare", "--models", "basic_cnn", "--seeds", "1", "--dataset", f"idx:{tiny_idx}", "--epochs", "1",
             "--batch-size", "32", "--device", "cpu"]
    assert main([*flags, "--teacher-model", "resnet"]) == 2
    assert "give --teachers DIR (or auto) too" in capsys.readouterr().err
    assert main([*flags, "--teachers", "auto", "--teacher-model", "resnet"]) == 0
    assert "(resnet's)" in capsys.readouterr().out
    teachers, students = sorted(p for p in (tmp_path / "runs").iterdir())
    assert [p.name.split("-")[0] for p in teachers.iterdir()] == ["resnet"]  # only the teacher model was trained
    (student,) = students.glob("basic_cnn-seed0-*")
    (teacher,) = teachers.glob("resnet-seed0-*")
    assert json.loads((student / "config.json").read_text())["config"]["teacher"] == str((teacher / "last.pt").resolve())


def test_a_teacher_whose_run_has_not_finished_is_warned_about(tiny_idx, tmp_path, teacher_run):
    """Found by probing: a run stopped after 20 steps (8% accuracy) was taken as a teacher without a word."""
    stopped = train(cfg(tiny_idx, max_steps=3), out=tmp_path / "stopped", **QUIET).run_dir

    def warnings(teacher) -> list[str]:
        lines: list[str] = []
        train(cfg(tiny_idx, epochs=1, max_steps=1, teacher=str(teacher)), write=False, log=lines.append)
        return [line for line in lines if line.startswith("warning: --teacher")]

    assert warnings(stopped) == [f"warning: --teacher {stopped / 'last.pt'}: its run stopped after 0 of 2 epochs "
                                 f"(step 3), and it teaches what it knew then; finish it first (cnnlab train --resume "
                                 f"{stopped}) for a better teacher"]
    assert warnings(teacher_run) == warnings(teacher_run / "best.pt") == []  # a finished run, either checkpoint


def test_a_teacher_whose_run_diverged_is_refused_and_its_best_pt_is_not_advised_a_resume(tiny_idx, tmp_path, capsys):
    """Found by probing (wflW): a run that diverged at step 4 (its last.pt at 9%) was taken as --teacher with
    "its run stopped ...; finish it first (cnnlab train --resume RUN)", a resume that diverges again at that step."""
    from cnnlab.errors import Diverged
    from cnnlab.runs import write_status

    bad = tmp_path / "bad"
    with pytest.raises(Diverged):
        train(cfg(tiny_idx, lr=1.0, momentum=0.9, save_every=2), out=bad, **QUIET)
    base = ["train", "--model", "basic_cnn", "--dataset", f"idx:{tiny_idx}", "--device", "cpu", "--epochs", "1",
            "--batch-size", "32", "--quiet", "--out", str(tmp_path / "s")]
    for given in (bad, bad / "last.pt"):
        assert main([*base, "--teacher", str(given)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"cnnlab: error: --teacher {given}: that run failed, training diverged: the loss ") and \
            err.count("\n") == 1, err
        assert "(a resume of it diverges again); give a finished run (e.g. this one trained again with a lower --lr)" in err
        assert "finish it first" not in err and not (tmp_path / "s").exists()
    # diverged in its second epoch, after its last save: its best.pt (the first epoch's) teaches, with a warning
    later = train(cfg(tiny_idx, max_steps=10), out=tmp_path / "later", **QUIET).run_dir
    write_status(later, "failed", "training diverged: the loss became NaN or infinite at step 12 (epoch 2, batch 4); "
                                  f"the learning rate (0.05) is the likely cause: ...; the last finite checkpoint is kept: {later}/last.pt")
    with pytest.raises(CnnlabError, match=r"that run failed, training diverged: the loss became NaN or infinite at step 12 "
                                          r"\(epoch 2, batch 4\) \(its status.json\), .*; give its best.pt, the weights of its "
                                          rf"best epoch before that \(--teacher {re.escape(str(later / 'best.pt'))}\), or a finished run"):
        train(cfg(tiny_idx, epochs=1, max_steps=1, teacher=str(later)), write=False, **QUIET)
    lines: list[str] = []
    train(cfg(tiny_idx, epochs=1, max_steps=1, teacher=str(later / "best.pt")), write=False, quiet=True, log=lines.append)
    assert [line for line in lines if line.startswith("warning: --teacher")] == [
        f"warning: --teacher {later / 'best.pt'}: its run stopped after 1 of 2 epochs (step 8), and it teaches what it "
        "knew then; that run diverged later (its status.json): train it again with a lower --lr for a better teacher"]


def test_compare_refuses_teachers_whose_run_diverged_without_advising_to_make_them_again(tiny_idx, tmp_path):
    """Found by probing (wflW): `compare --teachers DIR` whose teacher run there diverged said "make the teachers
    first: the same compare", which resumes that run into the same divergence."""
    from cnnlab.compare import compare
    from cnnlab.errors import Diverged

    base = cfg(tiny_idx, epochs=1, lr=1.0, momentum=0.9, save_every=2)
    with pytest.raises(Diverged):
        compare(["basic_cnn"], 1, base, tmp_path / "cmp", log=lambda m: None)
    with pytest.raises(CnnlabError, match=r"--teachers .*cmp: its basic_cnn seed 0 run of these settings \(basic_cnn-seed0-"
                                          r"\w+\) failed, training diverged: .* so it cannot teach, and making it again "
                                          r"diverges again; compare with settings that train \(e.g. a lower --lr\)"):
        compare(["basic_cnn"], 1, base, tmp_path / "cmp-distilled", log=lambda m: None, teachers=tmp_path / "cmp")
    assert not (tmp_path / "cmp-distilled").exists()
