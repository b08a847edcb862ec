"""The atkV tester's defects in the path, OS and memory fixes of s43: an empty or ``0`` ``OPENBLAS_NUM_THREADS`` under
a memory limit, and the memory floor counting the machine's cores rather than the CPUs the process may run on
(:func:`cnnlab.cli.check_torch_can_load`); a symbolic link to nowhere and a long chain of links that is no loop,
each named for what it is (:func:`cnnlab.fileio.link_trouble`); ``train --resume LINK.pt`` resuming the run the link
points to (:func:`cnnlab.runs.run_dir_of`). docs/reliability.md lists them."""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

import cnnlab.cli
from conftest import trained_once
from cnnlab import fileio
from cnnlab.cli import main
from cnnlab.errors import CnnlabError, WriteError

#: What is said of ``dl -> nowhere`` on the way to a folder to make.
NOWHERE = "dl is a symbolic link to nowhere (nowhere: missing); remove or fix the link, or pick another path"
#: What is said of ``c45``, the end of a chain of 46 links (``c45 -> c44 -> ... -> c0 -> real``), no loop.
TOO_MANY = ("c45: cannot be read (more than 40 symbolic links on the way, the most the system follows; no loop); give "
            "the path they lead to instead (readlink -f {c45} prints it), or shorten the chain of links")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """One finished tiny run (basic_cnn, one epoch), beside its data (``tiny``)."""
    return trained_once(tmp_path_factory, "atkV")


@pytest.fixture
def run(trained, tmp_path) -> Path:
    return Path(shutil.copytree(trained, tmp_path / "runs" / "r1"))


def chain(folder: Path, links: int) -> Path:
    """``c0 -> real``, ``c1 -> c0`` ... in ``folder``: the last of ``links`` links, whose lookup follows them all."""
    (folder / "real").mkdir(parents=True, exist_ok=True)
    (folder / "c0").symlink_to("real")
    for i in range(1, links):
        (folder / f"c{i}").symlink_to(f"c{i - 1}")
    return folder / f"c{links - 1}"


def _environment(**changes: str) -> dict:
    """This process's environment for a ``python -m cnnlab`` of this source, without a thread count of OpenBLAS or
    OpenMP (OpenBLAS takes ``OMP_NUM_THREADS`` where its own asks for none), with ``changes``."""
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")}
    return {**env, "PYTHONPATH": os.pathsep.join(sys.path), **changes}


def _models_under(limit_kb: int, cpus: int, **env: str) -> subprocess.CompletedProcess:
    """``cnnlab models`` under ``ulimit -v limit_kb`` on the first ``cpus`` CPUs this process may use (as ``taskset``:
    the tester's 2 cores, whatever this machine has; torch's and OpenBLAS's threads count them), printing the
    ``OPENBLAS_NUM_THREADS`` numpy's OpenBLAS was started with."""
    def limited():
        resource.setrlimit(resource.RLIMIT_AS, (limit_kb * 1024, resource.getrlimit(resource.RLIMIT_AS)[1]))
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:cpus])

    code = ("import os, sys; from cnnlab.cli import main; code = main(['models']); "
            "print(os.environ['OPENBLAS_NUM_THREADS']); sys.exit(code)")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          preexec_fn=limited, env=_environment(**env))


# ----------------------------------------------------------------------------- 1, 2: OpenBLAS's threads under a limit


@pytest.mark.parametrize("asked", ["", "0", " ", "two", "-2", "+2", "٢"])
def test_an_openblas_thread_count_that_asks_for_no_number_is_one_thread_under_a_limit(monkeypatch, asked):
    """atkV 1. ``OPENBLAS_NUM_THREADS=`` (or ``0``) is OpenBLAS's "a thread on each core": it was kept, while the floor
    counted one thread (``int("")`` failed: 1), and numpy's import ended the process in C code between the two
    (SystemError, a segmentation fault, ``FATAL: Internal consistency check failed``). Set to 1 under a limit, as an
    unset one is; the floor is one thread's."""
    if not cnnlab.cli._torch_floor():
        pytest.skip("no floor for this torch build")
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    one = cnnlab.cli._torch_floor()
    monkeypatch.setattr(cnnlab.cli, "_memory_limit", lambda: 10_000_000)
    monkeypatch.delitem(sys.modules, "numpy")  # as before numpy loads (put back by monkeypatch)
    monkeypatch.setattr(cnnlab.cli, "usable_cpus", lambda: 64, raising=False)
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", asked)
    cnnlab.cli.check_torch_can_load()
    assert os.environ["OPENBLAS_NUM_THREADS"] == "1" and cnnlab.cli._torch_floor() == one
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", " 3 ")  # a number asked for is kept, and counted
    cnnlab.cli.check_torch_can_load()
    assert os.environ["OPENBLAS_NUM_THREADS"] == " 3 "
    assert cnnlab.cli._torch_floor() == one + 2 * cnnlab.cli.OPENBLAS_THREAD_KB


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="OpenBLAS starts one thread on one CPU: nothing between the two floors")
def test_an_empty_openblas_thread_count_loads_under_a_limit_its_threads_would_not_fit(tmp_path):
    """atkV 1, the tester's: ``(ulimit -v 630000; OPENBLAS_NUM_THREADS= cnnlab models)``, above the one-thread floor
    (600,000 KB) and under what two threads need (646,000): a traceback or a segmentation fault from torch's import."""
    floor = cnnlab.cli._torch_floor()
    if not floor:
        pytest.skip("no floor for this torch build")
    for asked in ("", "0"):
        proc = _models_under(floor + 30_000, 2, OPENBLAS_NUM_THREADS=asked)
        assert proc.returncode == 0 and "inception" in proc.stdout, (asked, proc.returncode, proc.stderr[-3000:])
        assert proc.stdout.splitlines()[-1] == "1"


def test_the_floor_counts_the_cpus_the_process_may_run_on(monkeypatch):
    """atkV 2. OpenBLAS starts no more threads than the CPUs it may run on (its affinity: ``taskset``, a cpuset); the
    floor counted ``os.cpu_count()``, the machine's: ``OPENBLAS_NUM_THREADS=64`` on 4 CPUs of 64 asked for 3.2 GB."""
    if not cnnlab.cli._torch_floor():
        pytest.skip("no floor for this torch build")
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    one = cnnlab.cli._torch_floor()
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(cnnlab.cli, "usable_cpus", lambda: 4, raising=False)
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "64")
    assert cnnlab.cli._torch_floor() == one + 3 * cnnlab.cli.OPENBLAS_THREAD_KB
    monkeypatch.setattr(cnnlab.cli, "usable_cpus", lambda: None)  # not to be told: one
    assert cnnlab.cli._torch_floor() == one


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="one CPU: the machine's cores and the usable ones agree")
def test_a_limit_that_works_on_one_cpu_is_not_refused(tmp_path):
    """atkV 2, the tester's: ``(ulimit -v 620000; OPENBLAS_NUM_THREADS=2 taskset -c 0 cnnlab models)`` was refused
    (`need at least 642,000 KB`), though it runs there (OpenBLAS starts one thread on one CPU)."""
    floor = cnnlab.cli._torch_floor()
    if not floor:
        pytest.skip("no floor for this torch build")
    proc = _models_under(floor + 20_000, 1, OPENBLAS_NUM_THREADS="2")
    assert proc.returncode == 0 and "inception" in proc.stdout, proc.stderr[-3000:]
    assert proc.stdout.splitlines()[-1] == "2"  # what the user asked for, kept


# ----------------------------------------------------------------------------- 3: a link to nowhere on the way


def test_a_link_to_nowhere_on_the_way_to_a_folder_is_named(tmp_path, monkeypatch):
    """atkV 3. ``mkdir -p`` of ``dl/sub`` (``dl -> nowhere``) failed at ``dl``, there as a link: "cannot create folder
    dl/sub: nothing of that name is in the way; pick another path". The link is named, and where it points; through
    a chain of links, each one; the link is left as it was."""
    monkeypatch.chdir(tmp_path)
    Path("dl").symlink_to("nowhere")
    for path, line in (("dl/sub", f"cannot create folder dl/sub: {NOWHERE}"), ("dl", f"cannot create folder dl: {NOWHERE}")):
        with pytest.raises(WriteError) as err:
            fileio.make_dirs(path)
        assert str(err.value) == line
    with pytest.raises(WriteError) as err:
        fileio.atomic_write_text("dl/sub/x.json", "{}")
    assert str(err.value) == f"cannot create folder dl/sub: {NOWHERE}"
    Path("dl2").symlink_to("dl")
    Path("dl3").symlink_to("gone/x")
    assert fileio.link_trouble("dl2/sub/x") == (Path("dl2"), "a symbolic link to nowhere (dl -> nowhere: missing)",
                                                "remove or fix the link, or pick another path", True)
    assert fileio.link_trouble("dl3/x").what == "a symbolic link to nowhere (gone/x: missing)"
    assert os.readlink("dl") == "nowhere" and not os.path.lexists("nowhere")
    for fine in ("new/sub", ".", "dl-not-a-link"):  # nothing of a link on the way
        assert fileio.link_trouble(fine) is None
    assert fileio.make_dirs("new/sub").is_dir()


@pytest.mark.parametrize("argv", [
    ["train", "--model", "basic_cnn", "--dataset", "idx:{tiny}", "--epochs", "1", "--out", "dl/sub"],
    ["export-weights", "{run}", "--out", "dl/w.safetensors"],
    ["analyze", "gradients", "--depths", "2", "--width", "2", "--seeds", "1", "--epochs", "0", "--device", "cpu",
     "--dataset", "idx:{tiny}", "--out", "dl"],
])
def test_a_link_to_nowhere_on_the_way_to_out_is_named_by_the_commands(trained, run, tmp_path, monkeypatch, capsys,
                                                                      argv):
    """atkV 3, the tester's commands: each said `... nothing of that name is in the way; pick another path`."""
    monkeypatch.chdir(tmp_path)
    Path("dl").symlink_to("nowhere")
    args = [a.format(tiny=trained.parent / "tiny", run=run) for a in argv]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("cnnlab: error: cannot create folder dl") and err.endswith(f": {NOWHERE}\n"), err
    assert sorted(os.listdir(tmp_path)) == ["dl", "runs"] and os.readlink("dl") == "nowhere"


def test_evaluate_out_through_a_link_to_nowhere_warns_with_its_line(run, tmp_path, monkeypatch, capsys):
    """atkV 3. ``evaluate RUN --out dl/sub``: its warning said `nothing of that name is in the way`."""
    monkeypatch.chdir(tmp_path)
    Path("dl").symlink_to("nowhere")
    assert main(["evaluate", str(run), "--out", "dl/sub", "--device", "cpu"]) == 1  # evaluated, no report
    assert capsys.readouterr().err == f"cnnlab: warning: no report written: cannot create folder dl/sub: {NOWHERE}\n"


# ----------------------------------------------------------------------------- 4: a long chain of links, no loop


def test_a_chain_of_more_links_than_the_system_follows_is_not_called_a_loop(tmp_path, monkeypatch):
    """atkV 4. Linux refuses a lookup past 40 links with ELOOP, as a loop: ``c45`` of a chain of 46 was said to be
    `cannot be read (symlink loop)`. It is said for what it is, with the path it leads to as the fix; a real loop is
    still a loop; a chain of 30 is followed."""
    monkeypatch.chdir(tmp_path)
    end = chain(Path("."), 46)
    assert end == Path("c45")
    line = TOO_MANY.format(c45="c45")
    for check in (fileio.resolved, fileio.is_dir, fileio.exists, fileio.make_dirs):
        with pytest.raises(CnnlabError) as err:
            check("c45")
        assert str(err.value) == line
    with pytest.raises(CnnlabError) as err:
        fileio.exists("c45/sub/w.pt")
    assert str(err.value) == line
    with pytest.raises(WriteError) as err:
        fileio.atomic_write_text("c45/w.json", "{}")
    assert str(err.value) == line
    assert os.listdir("real") == []
    assert os.path.realpath("c45") == str(tmp_path / "real")  # what readlink -f names
    fileio.atomic_write_text("c29/w.json", "{}")  # 30 links: followed
    assert os.listdir("real") == ["w.json"]
    Path("la").symlink_to("lb")
    Path("lb").symlink_to("la")
    for loop in ("la", "la/sub"):
        assert fileio.link_trouble(loop) == (Path("la"), "symlink loop", "fix or remove the symbolic link", False)
        assert fileio.symlink_loop(loop) == "la: cannot be read (symlink loop); fix or remove the symbolic link"
    # a chain into a loop is a loop; a chain past 40 links ending nowhere, too many links (the lookup ends there)
    Path("into").symlink_to("la")
    assert fileio.link_trouble("into").what == "symlink loop"
    (tmp_path / "far").mkdir()
    chain(tmp_path / "far", 46)
    shutil.rmtree(tmp_path / "far" / "real")
    assert fileio.link_trouble("far/c45").what.startswith("more than 40 symbolic links")


def test_export_weights_out_through_a_long_chain_of_links_says_so(run, tmp_path, monkeypatch, capsys):
    """atkV 4, the tester's: ``export-weights RUN --out chain/c45/w.safetensors``, and ``predict`` of an image at the
    end of such a chain."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "chain").mkdir()
    chain(Path("chain"), 46)
    assert main(["export-weights", str(run), "--out", "chain/c45/w.safetensors"]) == 2
    line = "chain/" + TOO_MANY.format(c45="chain/c45")
    assert capsys.readouterr().err == f"cnnlab: error: {line}\n"
    assert os.listdir("chain/real") == []
    img = Image.new("L", (28, 28))
    img.paste(255, (12, 5, 16, 23))
    img.save("chain/real/digit.png")
    assert main(["predict", str(run), "chain/c45/digit.png", "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert "chain/c45/digit.png: cannot be read (more than 40 symbolic links on the way" in err, err
    assert "symlink loop" not in err


# ----------------------------------------------------------------------------- 5: --resume of a link to a checkpoint


@pytest.fixture(scope="module")
def stopped(tmp_path_factory) -> Path:
    """A tiny run stopped at step 2 (``--max-steps 2``), copied by each test."""
    return trained_once(tmp_path_factory, "atkV5", run="r5", max_steps=2)


def _resumed_to(folder: Path) -> str:
    return json.loads((folder / "status.json").read_text())["detail"]


@pytest.mark.parametrize("link, target", [("mylast.pt", "runs/r5/last.pt"), ("lk/last.pt", "../runs/r5/last.pt"),
                                          ("abs.pt", "{tmp}/runs/r5/last.pt")])
def test_a_resume_of_a_link_to_a_checkpoint_continues_the_run_it_points_to(stopped, tmp_path, monkeypatch, capsys,
                                                                           link, target):
    """atkV 5. ``train --resume mylast.pt`` (``-> runs/r5/last.pt``) trained a run of the link's folder: the current
    folder got .lock, config.json, last.pt, summary.json, status.json and the figures, r5 was not continued (`run saved
    in .`; `lk/last.pt -> ../runs/r5/last.pt`: `in lk`). The run the link points to goes on; the link's folder is
    left as it was, the link too."""
    monkeypatch.chdir(tmp_path)
    shutil.copytree(stopped, "runs/r5")
    Path(link).parent.mkdir(exist_ok=True)
    Path(link).symlink_to(target.format(tmp=tmp_path))
    before = sorted(os.listdir(Path(link).parent))
    assert main(["train", "--resume", link, "--max-steps", "4", "--quiet"]) == 0
    assert capsys.readouterr().out.endswith("run saved in runs/r5\n")
    assert sorted(os.listdir(Path(link).parent)) == before and os.readlink(link) == target.format(tmp=tmp_path)
    assert _resumed_to(Path("runs/r5")) == "--max-steps 4: resume to go on"


def test_a_resume_of_a_copied_checkpoint_continues_in_the_copys_folder(stopped, tmp_path, monkeypatch, capsys):
    """atkV 5, what a link now agrees with: a plain copy of a run's last.pt in a folder of its own resumes there (the
    folder the file lies in is its run folder), as before."""
    monkeypatch.chdir(tmp_path)
    Path("mine").mkdir()
    shutil.copy(stopped / "last.pt", "mine/copy.pt")
    assert main(["train", "--resume", "mine/copy.pt", "--max-steps", "4", "--quiet"]) == 0
    assert capsys.readouterr().out.endswith("run saved in mine\n")
    assert _resumed_to(Path("mine")) == "--max-steps 4: resume to go on"
