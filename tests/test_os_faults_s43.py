"""Faults found by the tester of session 43 (osO, a hostile operating system): analyses that checked their default
folder only after measuring; a memory limit (``ulimit -v``) and a current folder's path too long, under which torch's
import ended the process in C code; a full disk that left the empty folders (and lock files) of ``evaluate``,
``analyze`` and ``compare`` behind; a file in the way of ``--out DIR/sub`` and an immutable file, each told with a fix
that did not help. docs/reliability.md lists them."""

from __future__ import annotations

import errno
import json
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import cnnlab.cli
import cnnlab.runs
from cnnlab.cli import main
from cnnlab.errors import CnnlabError, WriteError
from cnnlab.fileio import atomic_write_bytes, make_dirs

from conftest import no_room_for

ARGS = ["--model", "basic_cnn", "--batch-size", "32", "--lr", "0.05", "--device", "cpu", "--threads", "1", "--quiet"]
GRAD = ["analyze", "gradients", "--depths", "2", "--width", "2", "--seeds", "1", "--epochs", "0", "--device", "cpu"]
IN_THE_WAY = "is a file in the way (not a folder); remove it or pick another path"


def _environment() -> dict:
    """This process's environment for a ``python -m cnnlab`` of this source, without a thread count of OpenBLAS."""
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    return {**env, "PYTHONPATH": os.pathsep.join(sys.path)}


# ----------------------------------------------------------------------------- 3: an analysis's default folder


def test_an_analysis_makes_its_default_folder_before_measuring_and_removes_it_when_it_fails(tiny_idx, tmp_path,
                                                                                           monkeypatch, capsys):
    """The tester's `analyze branches --pretrained inception` in a read-only current folder measured for 44 s, then
    said `cannot write runs: Read-only file system` (an --out given was refused at once). The default folder is made
    (and locked) once the input is checked, before the measuring; one made for an analysis that fails goes again."""
    from cnnlab.analysis import branches, gradients

    def computed(*a, ready=lambda: None, **k):
        ready()  # the arguments and data checked: the folder is made and locked here, before any computing
        raise AssertionError("computed before finding the folder unwritable")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(gradients, "analyze_gradients", computed)
    monkeypatch.setattr(branches, "analyze_branches", computed)
    (tmp_path / "runs").write_text("in the way")  # as a read-only folder: no folder can be made under runs/
    for command in ([*GRAD, "--dataset", f"idx:{tiny_idx}"], ["analyze", "branches", "--pretrained", "inception"]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert err == ("cnnlab: error: cannot create folder runs: a file of that name is in the way; remove it or pick "
                       "another path\n"), err
    (tmp_path / "runs").unlink()

    def failing(*a, ready=lambda: None, **k):
        ready()
        raise CnnlabError("the measuring failed")

    monkeypatch.setattr(gradients, "analyze_gradients", failing)
    assert main([*GRAD, "--dataset", f"idx:{tiny_idx}"]) == 2
    assert "the measuring failed" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # no folder holding only .analysis.lock, nor the runs/ made for it
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    assert main([*GRAD, "--dataset", f"idx:{tiny_idx}"]) == 0
    (made,) = (tmp_path / "runs").iterdir()
    assert made.name.startswith("gradients-idx-")
    assert {p.name for p in made.iterdir()} == {".analysis.lock", "gradients.json", "gradients.png", "depth.png"}


# ----------------------------------------------------------------------------- 4: a memory limit under torch's needs


def test_a_memory_limit_under_what_torch_needs_to_load_is_one_line_before_numpy_and_torch_load(tmp_path, monkeypatch):
    """The tester's `(ulimit -v N; cnnlab predict base digit.png)`: from 400,000 to 560,000 KB the process ended in C
    code: `std::bad_alloc` (SIGABRT), numpy's multi-line banner cut mid-word, OpenBLAS's `Memory allocation still
    failed after 10 retries`, glibc's `cannot allocate memory for thread-local data: ABORT`. The limit is checked
    before numpy and torch load, against what they need (docs/reliability.md: measured)."""
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    floor = cnnlab.cli._torch_floor()
    limits = [v for v in (300_000, 400_000, 450_000, 470_000, 520_000, 560_000, 590_000) if v < floor]
    if not limits:
        pytest.skip("torch's library is not found where the floor was measured (another platform's build)")
    for limit in limits:
        def limited(limit=limit):
            resource.setrlimit(resource.RLIMIT_AS, (limit * 1024, resource.getrlimit(resource.RLIMIT_AS)[1]))

        proc = subprocess.run([sys.executable, "-m", "cnnlab", "models"], capture_output=True, text=True, timeout=120,
                              preexec_fn=limited, cwd=tmp_path, env=_environment())
        assert (proc.returncode, proc.stdout) == (2, ""), (limit, proc.stderr[-3000:])
        assert proc.stderr == (f"cnnlab: error: not enough memory to load torch's libraries (they need at least "
                               f"{floor:,} KB of address space; a small net about 1,000,000 KB); raise the memory limit "
                               f"(now ulimit -v {limit})\n"), proc.stderr[-3000:]


def test_a_memory_limit_a_small_net_runs_under_is_not_refused(tmp_path):
    """The floor refuses no limit that works: `cnnlab models` (torch and a net of each model) under the limit the
    line names for a small net, numpy's OpenBLAS held to one thread there."""
    if not cnnlab.cli._torch_floor():
        pytest.skip("no floor for this torch build")

    def limited():
        hard = resource.getrlimit(resource.RLIMIT_AS)[1]
        resource.setrlimit(resource.RLIMIT_AS, (cnnlab.cli.SMALL_NET_KB * 1024, hard))

    code = ("import os, sys; from cnnlab.cli import main; code = main(['models']); "
            "print(os.environ['OPENBLAS_NUM_THREADS']); sys.exit(code)")
    env = {**_environment(), "OMP_NUM_THREADS": "1"}  # torch's own threads: one, however many cores the machine has
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          preexec_fn=limited, cwd=tmp_path, env=env)
    assert proc.returncode == 0 and "inception" in proc.stdout, proc.stderr[-3000:]
    assert proc.stdout.splitlines()[-1] == "1"


def test_the_floor_follows_torchs_library_and_openblas_threads(monkeypatch, tmp_path):
    """A smaller torch library lowers the floor by its difference (a build that needs less is never refused); each
    OpenBLAS thread asked for (OPENBLAS_NUM_THREADS) adds its buffer; no torch library found: no floor."""
    import importlib.util

    lib = tmp_path / "torch" / "lib"
    lib.mkdir(parents=True)
    with open(lib / "libtorch_cpu.so", "wb") as fh:
        fh.truncate(cnnlab.cli.TORCH_FLOOR_LIBRARY - 100 * 1024 * 1024)
    spec = importlib.util.spec_from_file_location("torch", tmp_path / "torch" / "__init__.py",
                                                  submodule_search_locations=[str(tmp_path / "torch")])
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: spec)
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    assert cnnlab.cli._torch_floor() == cnnlab.cli.TORCH_FLOOR_KB - 100 * 1024
    monkeypatch.setattr(cnnlab.cli, "usable_cpus", lambda: 4)
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "16")  # OpenBLAS starts no more threads than the CPUs it may use
    assert cnnlab.cli._torch_floor() == cnnlab.cli.TORCH_FLOOR_KB - 100 * 1024 + 3 * cnnlab.cli.OPENBLAS_THREAD_KB
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert cnnlab.cli._torch_floor() == 0


def test_onednn_refused_its_buffers_under_a_memory_limit_is_out_of_memory(monkeypatch, capsys):
    """Found by a fixer at 630,000-640,000 KB (above the floor): a training's first convolution ended in a traceback,
    `RuntimeError: could not create a primitive` (oneDNN's buffers refused). Under a memory limit it is the
    out-of-memory line; without one, still a bug's traceback (oneDNN says the same of a layout it cannot run)."""
    import cnnlab.cli.models

    def fail(args):
        raise RuntimeError("could not create a primitive")

    monkeypatch.setattr(cnnlab.cli.models, "cmd_models", fail)
    monkeypatch.setattr(resource, "getrlimit", lambda which: (635_000 * 1024, resource.RLIM_INFINITY))
    assert main(["models"]) == 2
    assert capsys.readouterr().err == ("cnnlab: error: out of memory (oneDNN could not create a primitive); raise the "
                                       "memory limit (now ulimit -v 635000), or free some memory\n")
    monkeypatch.setattr(resource, "getrlimit", lambda which: (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    with pytest.raises(RuntimeError, match="could not create a primitive"):
        main(["models"])


# ----------------------------------------------------------------------------- 5: a current folder's path too long


def _deep_folder(base: Path, size: int) -> list[str]:
    """Folders one in another under ``base``, the innermost's absolute path ``size`` bytes long: their names (made
    step by step, relative to the last: a path that long cannot be given whole)."""
    names, length = [], len(os.fsencode(str(base)))
    fd = os.open(base, os.O_RDONLY)
    try:
        while length < size:
            name = "d" * min(200, size - length - 1)
            os.mkdir(name, dir_fd=fd)
            inner = os.open(name, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd, length = inner, length + 1 + len(name)
            names.append(name)
    finally:
        os.close(fd)
    return names


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux's PATH_MAX")
def test_a_current_folder_whose_path_is_too_long_for_torch_is_one_line_before_it_loads(tmp_path):
    """The tester's `cnnlab train` in a folder whose absolute path is 4,449 bytes: `Intel oneMKL FATAL ERROR: Cannot
    load .../libtorch_cpu.so.` (os.getcwd() works). One line, for every command that loads torch, as for a removed
    current folder; `runs` (no torch) still answers; 4,095 bytes still loads."""
    names = _deep_folder(tmp_path, 4449)

    def run(command, depth=len(names)):
        def enter():
            os.chdir(tmp_path)
            for name in names[:depth]:
                os.chdir(name)

        return subprocess.run([sys.executable, "-m", "cnnlab", *command], capture_output=True, text=True, timeout=300,
                              preexec_fn=enter, env=_environment())

    for command in (["models"], ["train", "--model", "basic_cnn", "--epochs", "1", "--out", "r"]):
        proc = run(command)
        assert (proc.returncode, proc.stdout) == (2, ""), proc.stderr[-2000:]
        assert proc.stderr == ("cnnlab: error: the current folder's path is too long (4,449 bytes; torch loads only in "
                               "a folder whose path is under 4,096 bytes); cd to a shorter one\n")
    proc = run(["runs"])
    assert proc.returncode == 0 and proc.stdout.startswith("no runs under runs/ yet"), proc.stderr[-2000:]
    shallower = tmp_path / "edge"
    shallower.mkdir()
    edge = _deep_folder(shallower, 4095)
    proc = subprocess.run([sys.executable, "-c", "import os; from cnnlab.cli import check_torch_can_load; "
                           "check_torch_can_load(); import torch; print(len(os.getcwd()))"],
                          capture_output=True, text=True, timeout=300, env=_environment(),
                          preexec_fn=lambda: [os.chdir(shallower), *map(os.chdir, edge)])
    assert (proc.returncode, proc.stdout) == (0, "4095\n"), proc.stderr[-2000:]


# ----------------------------------------------------------------------------- 9: a full disk under a new --out


def test_a_full_disk_under_a_new_out_leaves_no_empty_folder_nor_lock_file(tiny_idx, finished, tmp_path, monkeypatch,
                                                                          capsys):
    """The tester's 2 MB tmpfs, full: `evaluate RUN --out D/ev`, `analyze gradients --out D/g` and `compare --out
    D/cmp` each left its folder behind (g/ and br/ with a 0-byte .analysis.lock). A folder the command made is
    removed when nothing could be written in it, as train's fresh run folder is; one that was there stays."""
    disk = tmp_path / "disk"
    disk.mkdir()
    with monkeypatch.context() as m:
        no_room_for(m, "summary.json")
        assert main(["evaluate", str(finished), "--out", str(disk / "ev")]) == 1
        assert "no report written: cannot write" in capsys.readouterr().err
        (disk / "there").mkdir()
        assert main(["evaluate", str(finished), "--out", str(disk / "there")]) == 1
    assert sorted(p.name for p in disk.iterdir()) == ["there"]

    def full(fd, data, offset):  # the lock file's record, the first write of analyze and of a compare's run
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with monkeypatch.context() as m:
        m.setattr(cnnlab.runs.os, "pwrite", full)
        capsys.readouterr()
        assert main([*GRAD, "--dataset", f"idx:{tiny_idx}", "--out", str(disk / "g")]) == 2
        assert "g/.analysis.lock: No space left on device" in capsys.readouterr().err
        assert main(["compare", "--models", "basic_cnn", "--seeds", "1", "--dataset", f"idx:{tiny_idx}", "--epochs",
                     "1", "--device", "cpu", "--out", str(disk / "cmp")]) == 2
        assert "/.lock: No space left on device" in capsys.readouterr().err
    assert sorted(p.name for p in disk.iterdir()) == ["there"]


# ----------------------------------------------------------------------------- 10: a file in the way of --out DIR/sub


def test_a_file_in_the_way_of_an_out_folder_is_named_as_export_names_it(tiny_idx, finished, tmp_path, monkeypatch,
                                                                        capsys):
    """The tester's `echo hi > afile`, then `train --out afile/sub` (and evaluate, analyze, compare --out afile):
    `cannot write afile/sub: Not a directory; check the path and the disk`; export said it right, `a file of that name
    is in the way; remove it or pick another path`."""
    monkeypatch.chdir(tmp_path)
    Path("afile").write_text("hi\n")
    with pytest.raises(WriteError) as caught:
        make_dirs("afile/sub")
    assert str(caught.value) == f"cannot create folder afile/sub: afile {IN_THE_WAY}"
    with pytest.raises(WriteError) as caught:
        atomic_write_bytes("afile/sub/deeper/x.json", b"{}")
    assert str(caught.value) == f"cannot create folder afile/sub/deeper: afile {IN_THE_WAY}"
    for command, code in ((["train", "--dataset", f"idx:{tiny_idx}", *ARGS, "--out", "afile/sub"], 2),
                          ([*GRAD, "--dataset", f"idx:{tiny_idx}", "--out", "afile/sub"], 2),
                          (["evaluate", str(finished), "--out", "afile/sub"], 2),  # refused before it evaluates
                          (["compare", "--models", "basic_cnn", "--seeds", "1", "--dataset", f"idx:{tiny_idx}",
                            "--epochs", "1", "--device", "cpu", "--out", "afile"], 2)):
        assert main(command) == code, command
        err = capsys.readouterr().err
        # compare --out afile: afile itself is no folder, said as train --out afile says it (check_output_folder,
        # before any run: fixN s44 D1), not as the file on the way to its first run's folder
        line = (": a file of that name is in the way; remove it or pick another path\n" if command[0] == "compare"
                else f": afile {IN_THE_WAY}\n")
        assert err.count("\n") == 1 and line in err and "Not a directory" not in err, err
    assert Path("afile").read_text() == "hi\n"


# ----------------------------------------------------------------------------- 11: an immutable file


def test_a_write_refused_by_an_immutable_or_append_only_mark_names_it_not_the_folders_mode(tmp_path, monkeypatch):
    """`chattr +i RUN/status.json`: `Operation not permitted; make RUN writable`, though the folder was writable (755)
    and no mode lifts the mark. Said for the file or its folder as `lsattr` shows it, with `chattr -i` (as root);
    an EPERM of a file whose marks cannot be read is said to be a protection too."""
    import cnnlab.fileio as fileio
    from cnnlab.fileio import protection_of

    target = tmp_path / "run" / "status.json"
    target.parent.mkdir()
    target.write_text("{}")
    marks = {target: ("immutable", "i")}
    monkeypatch.setattr(fileio, "_attribute", lambda path: marks.get(Path(path)))

    def refused(src, dst):
        raise PermissionError(errno.EPERM, os.strerror(errno.EPERM))

    monkeypatch.setattr(fileio.os, "replace", refused)
    with pytest.raises(WriteError) as caught:
        atomic_write_bytes(target, b"{}")
    assert str(caught.value) == (f"cannot write {target}: Operation not permitted ({target} is immutable: lsattr shows "
                                 f"'i'); lift that (chattr -i {target}, as root), or write somewhere else (e.g. "
                                 "another --out)")
    assert caught.value.path == target and [p.name for p in target.parent.iterdir()] == ["status.json"]
    marks = {target.parent: ("append-only", "a")}
    assert protection_of(target, errno.EPERM) == (f"{target.parent} is append-only: lsattr shows 'a'",
                                                  f"lift that (chattr -a {target.parent}, as root)")
    marks = {}
    what, fix = protection_of(target, errno.EPERM)
    assert what.startswith(f"{target} is protected: immutable or append-only") and "chattr -i" in fix
    assert protection_of(target.parent / "new.json", errno.EPERM) is None  # no file, no mark: the folder's mode
    assert protection_of(target, errno.EACCES) is None


@pytest.mark.skipif(os.name != "posix" or os.geteuid() != 0 or not shutil.which("chattr"), reason="root's chattr")
def test_a_resume_into_an_immutable_status_json_names_the_mark_and_the_resume(finished, capsys):
    """The tester's `chattr +i imm/status.json; cnnlab train --resume imm --epochs 2`: `make imm writable, then continue
    with: ...` (the folder was writable). The same from export-weights of an immutable file."""
    status = finished / "status.json"
    if subprocess.run(["chattr", "+i", str(status)], capture_output=True).returncode != 0:
        pytest.skip("this file system takes no immutable mark")
    try:
        assert main(["train", "--resume", str(finished), "--epochs", "2", "--quiet"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1, err
        assert err.endswith(f"cannot write {status}: Operation not permitted ({status} is immutable: lsattr shows "
                            f"'i'); lift that (chattr -i {status}, as root), then continue with: cnnlab train --resume "
                            f"{finished}\n"), err
        assert "writable" not in err
    finally:
        subprocess.run(["chattr", "-i", str(status)], check=True)
    weights = finished / "model.safetensors"
    weights.write_bytes(b"")
    subprocess.run(["chattr", "+i", str(weights)], check=True)
    try:
        assert main(["export-weights", str(finished)]) == 2
        err = capsys.readouterr().err
        assert f"({weights} is immutable: lsattr shows 'i'); lift that (chattr -i {weights}, as root)" in err, err
    finally:
        subprocess.run(["chattr", "-i", str(weights)], check=True)
    assert json.loads(status.read_text())["status"] == "finished"


def test_evaluate_out_below_a_file_is_refused_before_the_evaluation(tmp_path, capsys):
    """(A leftover of osO 10.) ``evaluate RUN --out afile/sub`` evaluated the whole split and then warned that the
    report could not be written; a file on the way to a new --out folder is now named before any work, as train's
    and compare's --out are."""
    from conftest import tiny_config, write_idx_dataset
    from cnnlab.cli import main
    from cnnlab.engine import train
    from cnnlab.runs import check_output_folder

    run = tmp_path / "r1"
    train(tiny_config(write_idx_dataset(tmp_path / "tiny")), out=run, quiet=True, log=lambda msg: None)
    (tmp_path / "afile").write_text("hi")
    capsys.readouterr()
    assert main(["evaluate", str(run), "--out", str(tmp_path / "afile" / "sub")]) == 2
    out, err = capsys.readouterr()
    assert "accuracy" not in out and err.count("\n") == 1
    assert f"cannot create folder {tmp_path / 'afile' / 'sub'}: {tmp_path / 'afile'} is a file in the way" in err
    check_output_folder(tmp_path / "new" / "sub", None)  # a path merely missing is no error: it is made later
