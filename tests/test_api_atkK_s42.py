"""Defects a tester (atkK) found in session 42's fixes: the API's suggested ``cnnlab.train(resume=...)`` named another
folder when the run's name held a quote before a space or a mark (``kids' run``: ``resume="kids'"``, and that call
resumed the other run); "it is training now" was said of a run an ``evaluate`` held; ``Run.checkpoint()``'s refusals
named flags, and the reworded ones said ``use which last``; a channels-last tensor was pointed at ``t.unsqueeze(1)``;
a folder's newline, a shell-quoted path, or a name that reads as a command, in the API's refusals.
docs/reliability.md lists them."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import cnnlab
from cnnlab.api import as_arguments
from cnnlab.cli import main
from cnnlab.engine import train
from cnnlab.errors import CheckpointError, RunBusy, printable, shell_quoted
from cnnlab.runs import RunLock, is_running, write_status

from conftest import HeldElsewhere, tiny_config, write_idx_dataset

#: Folder names that a quote, a mark, a newline or a flag in them made hard to say back: the tester's, and others.
AWKWARD = ["kids' run", "a' b", "x', y", "a'.b", "a'; b", "q' --epochs 3", "nl\nx", "dv\udcff", "cnnlab train --out x",
           "bob's run", "my run", "it's", "x'", "'", "''", "a'\\''b", "a'), b", "$HOME", "a\\b", "中文 x", "-dash", "a,b",
           "a:b", "t\tx", '"dq"', "a (b)", "tr ", "it's\nnl"]


def _calls(said: str) -> list[dict]:
    """The keyword arguments of each ``cnnlab.train(...)`` in ``said``, read by Python's own parser (the shortest
    text from ``cnnlab.train(`` that parses as a call: a ``)`` inside a name does not end it)."""
    calls, at = [], 0
    while (start := said.find("cnnlab.train(", at)) >= 0:
        ends = [i + 1 for i, ch in enumerate(said) if ch == ")" and i > start]
        for end in ends:
            try:
                node = ast.parse(said[start:end], mode="eval").body
            except SyntaxError:
                continue
            calls.append({k.arg: ast.literal_eval(k.value) for k in node.keywords if k.arg})
            break
        else:
            raise AssertionError(f"no call parses in {said!r}")
        at = end
    return calls


def _same_folder(a, b) -> bool:
    return Path(a).absolute() == Path(b).absolute()


# ----------------------------------------------------------------------------- 1 and 5: a folder's name said exactly


@pytest.mark.parametrize("name", AWKWARD)
def test_the_call_a_refusal_suggests_names_the_exact_folder(name):
    """Each message that quotes a ``cnnlab train --resume`` (as the library writes it: the name through
    ``shell_quoted``, the command in quotes or not) is said as the call that resumes that very folder, in one line."""
    q = shell_quoted(name)
    messages = [
        (f"--out {name} already holds a run; continue it with 'cnnlab train --resume {q}', or pick a fresh --out",
         {"out": name}),
        (f"--resume {name}/teacher.pt: the copy of this run's teacher, not the run's own checkpoint; resume the run "
         f"itself with 'cnnlab train --resume {q}', or copy the file into a folder of its own", {"resume": f"{name}/teacher.pt"}),
        (f"/abs/{name}: no best.pt; its best epoch's save was lost: use --checkpoint last, or resume the run (cnnlab "
         f"train --resume {q}), which writes best.pt again", {"which": "best"}),
        (f"interrupted at step 2; continue with: cnnlab train --resume {q} --max-steps 20", {}),
        (f"--resume {name}: its dataset is not there; give its new place: cnnlab train --resume {q} --dataset "
         "idx:NEW_DIR", {"resume": name}),
    ]
    for message, given in messages:
        said = as_arguments(message, given)
        rest = said.replace(repr(name), "").replace(name, "")  # (a name may hold a flag, or read as a command)
        assert "--" not in rest and "'cnnlab train" not in rest, said
        calls = _calls(said)
        assert len(calls) == 1 and Path(calls[0]["resume"]) == Path(name), (said, calls)  # ('./-dash' is '-dash')
    said = as_arguments(messages[0][0], messages[0][1])
    resumed = name if not name.startswith("-") else f"./{name}"  # as shell_quoted makes it no option
    assert said.startswith(f"out={name!r} already holds a run; continue it with cnnlab.train(resume={resumed!r}), or")
    # a path quoted to be copied (--teacher FILE) is a Python value too, not a shell word (a plain one stays a word)
    best = "/r/" + name
    said = as_arguments(f"--teacher t: that run failed; give its best.pt (--teacher {shell_quoted(best)}), or",
                        {"teacher": "t"})
    value = f"={best!r}" if shell_quoted(best) != best else f" {best}"
    assert said == f"teacher='t': that run failed; give its best.pt (teacher{value}), or"


@pytest.fixture(scope="module")
def stopped(tmp_path_factory) -> tuple[Path, str]:
    """A run stopped in its second epoch (its first one's best.pt saved), and its dataset's name."""
    root = tmp_path_factory.mktemp("atkK")
    data = write_idx_dataset(root / "tiny")
    train(tiny_config(data, epochs=2, max_steps=10), out=root / "base", quiet=True, log=lambda m: None)
    return root / "base", f"idx:{data}"


def _copy(base: Path, to: Path, best: bool = True) -> Path:
    shutil.copytree(base, to)
    if not best:
        for name in ("best.pt", "best.pt.sha256"):
            (to / name).unlink()
    return to


def test_the_apis_refusals_name_an_awkward_folder_exactly_in_one_line(stopped, tmp_path, monkeypatch):
    """Through the API itself, for every awkward name: the out already holding a run, the resume of its teacher.pt,
    its lost best.pt (Run.checkpoint): each refusal one line, its suggested call naming that very folder."""
    base, dataset = stopped
    monkeypatch.chdir(tmp_path)
    for name in AWKWARD:
        run = _copy(base, tmp_path / name, best=False)
        shutil.copy(run / "last.pt", run / "teacher.pt")
        shutil.copy(run / "last.pt.sha256", run / "teacher.pt.sha256")
        tries = [(lambda: cnnlab.train("basic_cnn", dataset=dataset, out=name, quiet=True), f"out={name!r} "),
                 (lambda: cnnlab.train(resume=f"{name}/teacher.pt", quiet=True), f"resume={name + '/teacher.pt'!r}: "),
                 (lambda: cnnlab.load_run(name).checkpoint("best"), f"{printable(str(run))}: no best.pt in this run ")]
        for call, starts in tries:
            with pytest.raises(cnnlab.CnnlabError) as err:
                call()
            said = str(err.value)
            assert "\n" not in said and said.startswith(starts), said
            assert "--" not in said.replace(printable(name), "").replace(name, ""), said  # (the name's own flag)
            (suggested,) = _calls(said)
            assert _same_folder(suggested["resume"], run), (name, said)
    # a folder whose name reads as a command stays its name
    with pytest.raises(cnnlab.RunError) as err:
        cnnlab.train("basic_cnn", dataset=dataset, out="cnnlab train --out x", quiet=True)
    assert str(err.value) == ("out='cnnlab train --out x' already holds a run; continue it with "
                              "cnnlab.train(resume='cnnlab train --out x'), or pick a fresh out")


@pytest.mark.parametrize("name, other", [("kids' run", "kids'"), ("q' --epochs 3", "q'"), ("a'.b", "a'")])
def test_the_suggested_call_resumes_the_run_it_names(stopped, tmp_path, monkeypatch, name, other):
    """The tester's run: ``out="kids' run"`` suggested ``cnnlab.train(resume="kids'")``, which resumed the run in
    ``kids'`` to its end."""
    base, dataset = stopped
    monkeypatch.chdir(tmp_path)
    for folder in (name, other):
        _copy(base, tmp_path / folder)
    with pytest.raises(cnnlab.RunError) as err:
        cnnlab.train("basic_cnn", dataset=dataset, out=name, quiet=True)
    (suggested,) = _calls(str(err.value))
    result = cnnlab.train(**suggested, quiet=True)
    assert _same_folder(result.run_dir, tmp_path / name) and cnnlab.load_run(name).status == "finished"
    assert cnnlab.load_run(other).status == "stopped"  # the other run untouched


def test_a_newline_in_a_given_folder_is_one_line_and_a_diverged_teachers_best_pt_a_python_value(stopped, tmp_path,
                                                                                                 monkeypatch):
    base, dataset = stopped
    monkeypatch.chdir(tmp_path)
    for missing in (dict(resume="gone\nx"), dict(teacher="gone\nx", out="s1")):
        with pytest.raises(cnnlab.CnnlabError) as err:
            cnnlab.train("basic_cnn", dataset=dataset, quiet=True, **missing) if "teacher" in missing else \
                cnnlab.train(quiet=True, **missing)
        assert "\n" not in str(err.value) and "gone\\nx" in str(err.value), str(err.value)
    for name in ("dv\nnl", "dv\udcff", "dv'q", "dv' x"):
        teacher = _copy(base, tmp_path / name)
        write_status(teacher, "failed", "training diverged: the loss exploded at step 4")
        with pytest.raises(cnnlab.RunError) as err:
            cnnlab.train("basic_cnn", dataset=dataset, teacher=name, out="student", quiet=True)
        said = str(err.value)
        assert "\n" not in said and said.startswith(f"teacher={name!r}: that run failed"), said
        best = ast.literal_eval(said.split("(teacher=", 1)[1].split("), or", 1)[0])
        assert Path(best) == (teacher / "best.pt").resolve(), said


# ----------------------------------------------------------------------------- 2: training, or another holder


class Holding:
    """A run folder's lock held by another process through :class:`RunLock` itself, recording ``task``."""

    def __init__(self, folder: Path, task: str):
        self.folder, self.task = folder, task

    def __enter__(self) -> "Holding":
        code = ("import sys; from cnnlab.runs import RunLock; RunLock(sys.argv[1], task=sys.argv[2]).acquire(); "
                "print('held', flush=True); sys.stdin.read()")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        self.proc = subprocess.Popen([sys.executable, "-c", code, str(self.folder), self.task], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=env)
        assert self.proc.stdout.readline().strip() == "held"
        return self

    def __exit__(self, *exc) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def test_a_run_an_evaluate_holds_is_not_said_to_be_training(stopped, tmp_path, capsys):
    """``evaluate RUN`` holds the run's lock while it writes the run's report: a best.pt whose save was lost was said
    then to be "training now and has not written best.pt yet", and a resume to be refused as "it is training now"."""
    from cnnlab.runs import is_training, lock_task  # (new: the test fails, not its module, where they are not)

    base, dataset = stopped
    run = _copy(base, tmp_path / "rb", best=False)
    lost = "its best epoch's save was lost"
    with Holding(run, "evaluation"):
        assert is_running(run) and not is_training(run) and lock_task(run) == "evaluation"
        assert main(["evaluate", str(run), "--checkpoint", "best"]) == 2
        assert lost in capsys.readouterr().err
        with pytest.raises(CheckpointError, match=lost):
            cnnlab.load_run(run).checkpoint("best")
        with pytest.raises(RunBusy) as err:
            train(tiny_config(Path(dataset[4:])), resume=run, quiet=True, log=lambda m: None)
        assert "it is writing its evaluation report now; let it finish" in str(err.value)
        assert "training" not in str(err.value)
    with Holding(run, "training"):  # a training that holds it has not written best.pt yet
        assert is_training(run) and lock_task(run) == "training"
        with pytest.raises(CheckpointError, match="it is training now and has not written best.pt yet"):
            cnnlab.load_run(run).checkpoint("best")
    with HeldElsewhere(run):  # a holder that records its pid alone (an older cnnlab's): a training, as before
        assert is_training(run)
    assert lock_task(run) is None and not is_training(run)
    with RunLock(run, task="compare"):  # held here: the record is read the same
        assert lock_task(run) == "compare"
    assert (run / ".lock").read_bytes().strip() == b""  # let go: no holder's record left behind


# ----------------------------------------------------------------------------- 3: Run.checkpoint in the API's words


def test_run_checkpoint_refusals_are_said_in_the_apis_words(stopped, tmp_path, monkeypatch):
    base, dataset = stopped
    monkeypatch.chdir(tmp_path)
    run = _copy(base, tmp_path / "rb", best=False)
    young = tmp_path / "r1"
    train(tiny_config(Path(dataset[4:]), max_steps=3), out=young, quiet=True, log=lambda m: None)
    for call in (lambda: cnnlab.load_run("rb").checkpoint("best"), lambda: cnnlab.load_run("rb").model("best"),
                 lambda: cnnlab.load_run("rb").predictor("best"), lambda: cnnlab.predictor("rb", which="best"),
                 lambda: cnnlab.load_run("rb").evaluate("best", device="cpu")):
        with pytest.raises(CheckpointError) as err:
            call()
        said = str(err.value)
        assert "--" not in said and "use which='last', or resume the run (cnnlab.train(resume=" in said, said
        assert _same_folder(_calls(said)[0]["resume"], run)
    with pytest.raises(CheckpointError) as err:
        cnnlab.load_run("r1").checkpoint("best")
    assert str(err.value).endswith("no epoch has ended yet, so there is no best.pt: use which='last'")


# ----------------------------------------------------------------------------- 4: a tensor's channels last


@pytest.fixture(scope="module")
def shipped():
    return cnnlab.predictor(model="resnet")


def _seven() -> np.ndarray:
    img = np.zeros((28, 28), np.uint8)
    img[6:9, 7:21] = 255
    for row in range(9, 23):
        img[row, 19 - (row - 9) // 2:22 - (row - 9) // 2] = 255
    return img


@pytest.mark.parametrize("shape_of, fix", [
    (lambda g: np.stack([g] * 3, -1), "t.permute(2, 0, 1).unsqueeze(0), shape (1, 3, 28, 28)"),  # (28, 28, 3)
    (lambda g: np.stack([np.kron(g, np.ones((2, 2), np.uint8))] * 4, -1), "t.permute(2, 0, 1), shape (4, 56, 56)"),
    (lambda g: g[:, :, None], "t.permute(2, 0, 1), shape (1, 28, 28)"),
    (lambda g: np.stack([np.stack([g] * 3, -1)] * 2), "t.permute(0, 3, 1, 2), shape (2, 3, 28, 28)"),
    (lambda g: np.stack([g] * 5), "for N gray images (N, H, W) give t.unsqueeze(1)"),
])
def test_a_tensor_hint_names_the_fix_that_works_for_its_shape(shipped, shape_of, fix):
    """An (H, W, C) tensor, as ``torch.from_numpy(np.asarray(pil_rgb))`` gives, was told to give ``t.unsqueeze(1)``:
    28 strips of 28x3, each refused as having no ink. The fix named now predicts the digit."""
    t = torch.from_numpy(np.ascontiguousarray(shape_of(_seven())))
    with pytest.raises(cnnlab.CnnlabError) as err:
        shipped(t)
    said = str(err.value)
    assert fix in said and "\n" not in said, said
    if "unsqueeze(1)" in fix:
        assert "permute" not in said
    else:
        assert "unsqueeze(1)" not in said
    code = said.split("give ")[-1].split(", shape")[0]
    got = shipped(eval(code, {"t": t}))
    labels = [p.label for p in got] if isinstance(got, list) else [got.label]
    assert set(labels) == {"7"}, (code, labels)


# ----------------------------------------------------------------------------- atkM: the same, attacked again


@pytest.mark.parametrize("name", ["r{pid}", "r{doing}", "r{{x}}", "r}{"])
def test_a_folder_whose_name_holds_braces_keeps_it_in_the_busy_refusal(stopped, tmp_path, name):
    """(atkM 2.) A resume refused while another holds the run filled its busy line's ``{pid}`` and ``{doing}`` in the
    folder's own name too: a folder called ``r{pid}`` was told ``cnnlab train --resume 'r584'``."""
    base, dataset = stopped
    run = _copy(base, tmp_path / name)
    with Holding(run, "training"):
        with pytest.raises(RunBusy) as err:
            train(tiny_config(Path(dataset[4:])), resume=run, quiet=True, log=lambda m: None)
    said = str(err.value)
    assert said.endswith(f"resume then: cnnlab train --resume {shell_quoted(str(run))}"), said
    assert "it is training now" in said


@pytest.mark.parametrize("name", ["EXP1", "R1", "RUN", "RUN_DIR"])
def test_a_folder_named_in_capitals_is_a_python_string_in_the_suggested_call(stopped, tmp_path, monkeypatch, name):
    """(atkM 3.) ``cnnlab.train(resume=EXP1)``: a folder named like a placeholder was said bare, a NameError (or, in
    a notebook with such a variable, another run)."""
    base, _ = stopped
    monkeypatch.chdir(tmp_path)
    _copy(base, tmp_path / name)
    with pytest.raises(cnnlab.CnnlabError) as err:
        cnnlab.train("basic_cnn", out=name, quiet=True)
    assert f"cnnlab.train(resume={name!r})" in str(err.value), str(err.value)


def test_evaluate_says_what_the_holder_of_a_run_does(stopped, tmp_path, capsys):
    """(atkM 4.) While a compare held a finished run's lock, ``evaluate`` said "its training resumed, or another
    evaluation writes its report ... may not be its final weights": the lock's record says what it does."""
    base, _ = stopped
    run = _copy(base, tmp_path / "held")
    with Holding(run, "compare"):
        assert main(["evaluate", str(run)]) == 0
        err = capsys.readouterr()
        said = err.out + err.err
    assert "it is rewriting its metrics.csv now" in said and "training" not in said and "final weights" not in said
    from cnnlab.evaluation import _held_by_another  # a training that took the run after it was loaded

    with Holding(run, "training"):
        assert _held_by_another(run).endswith("(its training resumed), so the checkpoint evaluated may not be its "
                                              "final weights")
