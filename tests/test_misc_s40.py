"""Found in the sessions of 2026-12-07 (morning): hints to copy that named a folder as it is, not as a shell takes
it back."""

from __future__ import annotations

import shutil

from conftest import tiny_config, write_idx_dataset

from cnnlab.cli import main
from cnnlab.engine import train
from cnnlab.errors import shell_quoted

QUIET = dict(quiet=True, log=lambda m: None)


def test_a_moved_datasets_hint_quotes_the_run_folder_it_names(tmp_path, capsys):
    data, run = tmp_path / "data", tmp_path / "my run"
    write_idx_dataset(data)
    train(tiny_config(data, max_steps=2), out=run, **QUIET)
    shutil.move(data, tmp_path / "elsewhere")
    capsys.readouterr()
    assert main(["evaluate", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"cnnlab evaluate {shell_quoted(str(run))} --dataset idx:NEW_DIR" in err
    assert shell_quoted(str(run)) != str(run)


def test_a_distilled_reruns_refusal_quotes_the_folders_it_names(tiny_idx, tmp_path, capsys):
    teacher, student = tmp_path / "the teacher", tmp_path / "a student"
    train(tiny_config(tiny_idx, max_steps=2, seed=5), out=teacher, **QUIET)
    train(tiny_config(tiny_idx, max_steps=2, teacher=str(teacher)), out=student, **QUIET)
    shutil.move(teacher, tmp_path / "moved")
    capsys.readouterr()
    assert main(["train", "--config", str(student), "--out", str(tmp_path / "again"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"--config {shell_quoted(str(student))}:" in err and f"--teacher {shell_quoted(str(student / 'teacher.pt'))}" in err


def test_show_input_into_a_read_only_folder_gives_its_own_fix_alone(tmp_path, monkeypatch, capsys):
    """Its warning carried write_error's generic "(e.g. another --out)", a flag predict does not have, inside its
    own right advice (--show-input DIR)."""
    import errno
    from types import SimpleNamespace

    import cnnlab.predict
    from cnnlab.cli.predict import save_input_images
    from cnnlab.fileio import write_error

    def read_only(pred, folder, taken):
        raise write_error(folder / "a.input.png", OSError(errno.EROFS, "Read-only file system"))

    monkeypatch.setattr(cnnlab.predict, "save_input_image", read_only)
    assert save_input_images([SimpleNamespace(name=str(tmp_path / "a.png"))], tmp_path / "shown") == [None]
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Read-only file system); give a writable folder: --show-input DIR" in err
    assert "--out" not in err


def test_a_folder_held_by_another_thread_of_the_process_is_not_blamed_on_another_process(tiny_idx, tmp_path):
    """Two cnnlab.train(out=same) in two threads: the second was refused as "in use by another cnnlab process (pid
    N)", N being the caller's own pid (a notebook user would look for, or kill, their own kernel)."""
    import os

    import pytest

    from cnnlab.errors import RunBusy
    from cnnlab.runs import RunLock

    run = tmp_path / "run"
    with RunLock(run):
        with pytest.raises(RunBusy) as err:
            train(tiny_config(tiny_idx, max_steps=2), out=run, **QUIET)
    said = str(err.value)
    assert "is in use by another thread of this process (a call that has not returned yet)" in said
    assert "another cnnlab process" not in said and "kill" not in said and str(os.getpid()) not in said


def test_another_process_with_the_same_pid_is_another_process(tmp_path):
    """Two containers sharing a runs folder both run cnnlab as pid 1: the pid in the lock file matched the caller's
    own, and a real second process was said to be "another thread of this process"."""
    import os
    import subprocess
    import sys

    import pytest

    from cnnlab.errors import RunBusy
    from cnnlab.runs import LOCK_FILE, RunLock

    run = tmp_path / "run"
    run.mkdir()
    code = ("import sys, time; from pathlib import Path; from cnnlab.runs import RunLock; "
            "lock = RunLock(Path(sys.argv[1])).acquire(); print('held', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        (run / LOCK_FILE).write_text(str(os.getpid()))  # the pid it wrote, as a process of another namespace
        with pytest.raises(RunBusy) as err:
            RunLock(run).acquire()
    finally:
        holder.kill()
        holder.wait()
    assert f"in use by another cnnlab process (pid {os.getpid()})" in str(err.value)


def test_a_run_folder_moved_or_deleted_while_listed_is_left_out_not_called_damaged(tiny_idx, tmp_path, monkeypatch,
                                                                                   capsys):
    """`cnnlab runs` while a run folder was renamed (or removed): it listed the folder as damaged, "config.json:
    missing ... put back the one the run wrote", or the folder under its passing name without its last.pt; then
    (left out) a run renamed once went missing from that listing: it is found under its new name."""
    import json
    import shutil

    import cnnlab.runs
    from cnnlab.api import list_runs

    root = tmp_path / "runs"
    for name in ("a", "b", "c"):
        train(tiny_config(tiny_idx), out=root / name, **QUIET)
    real = cnnlab.runs.describe_run

    def racing(run, moves):
        if run.name in moves:  # the folder leaves while it is read: its files go missing to the reader
            how = moves.pop(run.name)
            away = run.with_name(run.name + "-moved")
            run.rename(away)
            row = real(run)
            if how == "back":
                away.rename(run)
            elif how == "deleted":
                shutil.rmtree(away)
            return row
        return real(run)

    def listed(rows):
        return sorted((row["run"].rsplit("/", 1)[1], row["status"]) for row in rows)

    monkeypatch.setattr(cnnlab.runs, "describe_run", lambda run: racing(run, moves))
    moves = {"a": "renamed", "b": "back", "c": "deleted"}
    assert listed(list_runs(root)) == [("a-moved", "finished"), ("b", "finished")]
    (root / "a-moved").rename(root / "a")
    moves = {"a": "renamed", "b": "back"}
    assert main(["runs", "--root", str(root), "--json"]) == 0
    assert listed(json.loads(capsys.readouterr().out)) == [("a-moved", "finished"), ("b", "finished")]


def test_a_link_at_the_default_name_in_the_out_folder_is_replaced_not_written_through(tiny_idx, tmp_path):
    """`export RUN --out DIR/` where DIR/last.onnx (the default name) was a link planted by someone else: the export
    overwrote the file it named (a user's notes.txt, its owner and mode taken over). The name typed as --out is
    still written through (tests/test_export.py); a default name is replaced like any file there."""
    import os

    from test_export import tiny_checkpoint

    ckpt = tiny_checkpoint(tmp_path / "run" / "last.pt", dataset_dir=tiny_idx)
    notes, shared = tmp_path / "notes.txt", tmp_path / "shared"
    notes.write_text("my notes")
    os.chmod(notes, 0o600)
    shared.mkdir()
    (shared / "last.onnx").symlink_to(notes)
    (shared / "model.safetensors").symlink_to(notes)
    assert main(["export", str(ckpt), "--samples", "4", "--out", f"{shared}/"]) == 0
    assert main(["export-weights", str(ckpt.parent), "--out", str(shared)]) == 0
    assert notes.read_text() == "my notes"
    for name in ("last.onnx", "model.safetensors"):
        assert not (shared / name).is_symlink() and (shared / name).stat().st_size > 1000
        assert (shared / name).stat().st_mode & 0o777 == 0o666 & ~_umask()


def _umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_loaded_net_holds_no_uninitialised_memory_where_the_file_leaves_a_buffer_out():
    """A net built on the meta device for loading was filled by a strict load_state_dict; BatchNorm takes a missing
    num_batches_tracked from the net itself (no error), which after to_empty was whatever the memory held."""
    import torch

    import cnnlab
    from cnnlab.checkpoint import model_from_checkpoint

    args = {"depth": 2, "norm": "batch"}
    sd = {k: v for k, v in cnnlab.create_model("plain_stack", **args).state_dict().items()
          if not k.endswith("num_batches_tracked")}
    for _ in range(3):
        torch.empty(10**6, dtype=torch.int64).fill_(123456789)  # memory the next allocation may reuse
        net = model_from_checkpoint({"model": {"name": "plain_stack", "args": args}, "state_dict": dict(sd)})
        assert [int(v) for k, v in net.state_dict().items() if k.endswith("num_batches_tracked")] == [0, 0, 0]


def test_a_nested_tensor_in_the_weights_is_refused_in_one_line(tiny_idx, tmp_path, capsys):
    import torch

    import cnnlab

    sd = dict(cnnlab.create_model("resnet").state_dict())
    sd["fc.bias"] = torch.nested.nested_tensor([torch.zeros(10)])
    torch.save(sd, tmp_path / "nested.pt")
    assert main(["evaluate", "--weights", str(tmp_path / "nested.pt"), "--model", "resnet", "--dataset",
                 f"idx:{tiny_idx}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "fc.bias a nested tensor instead of 10" in err


def test_refusals_of_a_run_held_in_this_process_name_the_thread_and_quote_the_folder(tiny_idx, tmp_path, capsys):
    """A run another thread of the process trains: --teacher and export said "another cnnlab process holds it";
    export's example command named the folder raw (`cnnlab export runs/busy run --out last-mid.onnx`)."""
    import pytest

    from cnnlab.errors import CnnlabError, RunError
    from cnnlab.export import export_run
    from cnnlab.runs import RunLock

    run = tmp_path / "busy run"
    train(tiny_config(tiny_idx, max_steps=2), out=run, **QUIET)
    with RunLock(run):
        with pytest.raises(RunError) as taught:
            train(tiny_config(tiny_idx, max_steps=1, teacher=str(run)), out=tmp_path / "student", **QUIET)
        with pytest.raises(CnnlabError) as exported:
            export_run(run, "torchscript", samples=2)
    assert "still training (another thread of this process holds it)" in str(taught.value)
    said = str(exported.value)
    assert "(another thread of this process holds it)" in said and f"cnnlab export {shell_quoted(str(run))} --out" in said


def test_more_hints_to_copy_quote_their_folders(tiny_idx, tmp_path, capsys):
    """`train --resume 'my run'` of a run whose idx: data moved, and `train --out 'my dir'` (a folder with other
    files): their hints named the folder raw, and the pasted command failed."""
    data, run, mine = tmp_path / "data", tmp_path / "my run", tmp_path / "my dir"
    write_idx_dataset(data)
    train(tiny_config(data, epochs=2, max_steps=3), out=run, **QUIET)
    shutil.move(data, tmp_path / "elsewhere")
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    capsys.readouterr()
    assert main(["train", "--resume", str(run)]) == 2
    assert f"cnnlab train --resume {shell_quoted(str(run))} --dataset idx:NEW_DIR" in capsys.readouterr().err
    assert main(["train", "--model", "basic_cnn", "--dataset", f"idx:{tiny_idx}", "--out", str(mine)]) == 2
    assert f"e.g. --out {shell_quoted(str(mine / 'run1'))}" in capsys.readouterr().err


def test_export_weights_replaces_a_link_to_the_checkpoint_at_its_default_name(tiny_idx, tmp_path, capsys):
    """A link RUN/model.safetensors -> last.pt was refused as "the default output file is that very file", though
    the link is replaced, not written through: the checkpoint is safe."""
    run = tmp_path / "run"
    train(tiny_config(tiny_idx, max_steps=2), out=run, **QUIET)
    before = (run / "last.pt").read_bytes()
    (run / "model.safetensors").symlink_to("last.pt")
    assert main(["export-weights", str(run)]) == 0
    assert not (run / "model.safetensors").is_symlink() and (run / "last.pt").read_bytes() == before


def test_a_run_records_the_cpu_threads_it_trained_at_and_a_rerun_at_another_count_is_warned(tiny_idx, tmp_path,
                                                                                          capsys):
    """config.json said "threads": 0 (torch's default) whatever count trained: `--config RUN` under another
    OMP_NUM_THREADS, or on a machine with other cores, trained at another count, other weights, without a word
    (the thread count alone moves a run's last digits); a resume at another count made `--config` re-run all of it
    at the last one's. It records the counts that ran, and a re-run at another is warned, as another number of
    torchrun processes is."""
    import json

    base = ["--model", "basic_cnn", "--dataset", f"idx:{tiny_idx}", "--quiet"]
    run, mixed = tmp_path / "run", tmp_path / "mixed"
    assert main(["train", *base, "--epochs", "1", "--threads", "1", "--out", str(run)]) == 0
    assert json.loads((run / "config.json").read_text())["cpu_threads"] == [1]
    capsys.readouterr()
    assert main(["train", "--config", str(run), "--threads", "2", "--dry-run"]) == 0
    err = capsys.readouterr().out
    assert "that run trained at 1 CPU threads and this one at 2" in err
    assert f"cnnlab train --config {run / 'config.json'} --threads 1" in err
    assert main(["train", "--config", str(run), "--threads", "1", "--dry-run"]) == 0
    assert "CPU threads" not in capsys.readouterr().out
    assert main(["train", *base, "--epochs", "2", "--max-steps", "3", "--threads", "1", "--out", str(mixed)]) == 0
    assert main(["train", "--resume", str(mixed), "--threads", "2", "--quiet"]) == 0
    assert json.loads((mixed / "config.json").read_text())["cpu_threads"] == [1, 2]
    capsys.readouterr()
    assert main(["train", "--config", str(mixed), "--dry-run"]) == 0
    assert "trained at 1 then 2 CPU threads" in capsys.readouterr().out


def test_a_config_files_relative_paths_are_recorded_absolute_and_rerun_from_anywhere(tiny_idx, tmp_path, monkeypatch,
                                                                                      capsys):
    """A YAML file's `dataset: idx:tiny` was recorded as written (the flag records it absolute): `--config RUN` from
    another folder said "no such directory", or trained on that folder's own tiny/."""
    import json

    monkeypatch.chdir(tiny_idx.parent)
    (tmp_path / "s.yaml").write_text(f"model: basic_cnn\ndataset: idx:{tiny_idx.name}\nepochs: 1\nmax_steps: 2\n")
    assert main(["train", "--config", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    assert json.loads((tmp_path / "run" / "config.json").read_text())["config"]["dataset"] == f"idx:{tiny_idx}"
    elsewhere = tmp_path / "elsewhere"
    write_idx_dataset(elsewhere / tiny_idx.name, seed=9)  # another tiny/ there
    monkeypatch.chdir(elsewhere)
    capsys.readouterr()
    assert main(["train", "--config", str(tmp_path / "run"), "--dry-run"]) == 0
    assert "not the data that run trained on" not in capsys.readouterr().out


def test_a_recorded_data_dir_that_cannot_apply_is_dropped_not_refused(tiny_idx, tmp_path, capsys):
    """`--config RUN` of a run trained with --data-dir dd: from elsewhere "--data-dir dd: no such directory", with
    --dataset idx:... "--data-dir dd does nothing for the dataset": a flag nobody typed, and no way to leave it out."""
    import json

    record = {"config": {"model": "basic_cnn", "dataset": "mnist", "data_dir": str(tmp_path / "gone"), "epochs": 1}}
    (tmp_path / "config.json").write_text(json.dumps(record))
    assert main(["train", "--config", str(tmp_path / "config.json"), "--dataset", f"idx:{tiny_idx}", "--dry-run"]) == 0
    capsys.readouterr()
    main(["train", "--config", str(tmp_path / "config.json"), "--dry-run"])  # no MNIST in the test's home: refused
    said = capsys.readouterr()
    assert f"its data folder ({tmp_path / 'gone'}) is not there; the data comes from the cache" in said.out
    assert str(tmp_path / "gone") not in said.err  # not refused for it (the download, offline here, is)


def test_a_rerun_under_another_net_takes_the_recipes_values_for_that_net(tiny_idx, tmp_path):
    """`--config RUN --model inception` of a resnet `--recipe best` run kept resnet's lr 0.008 and 15 epochs, and
    recorded "recipe": "best", whose Inception column is lr 0.004 and 10 epochs."""
    import json

    from cnnlab.config import recipe_values

    base = ["--dataset", f"idx:{tiny_idx}", "--recipe", "best", "--max-steps", "1", "--quiet", "--threads", "1"]
    assert main(["train", "--model", "resnet", *base, "--lr", "0.02", "--out", str(tmp_path / "res")]) == 0
    assert main(["train", "--config", str(tmp_path / "res"), "--model", "inception", "--out", str(tmp_path / "inc")]) == 0
    got = json.loads((tmp_path / "inc" / "config.json").read_text())["config"]
    want = recipe_values("best", "inception", f"idx:{tiny_idx}")
    assert got["epochs"] == want["epochs"] and got["batch_size"] == want["batch_size"]
    assert got["lr"] == 0.02  # set on purpose in the run re-run: kept


def test_a_teacher_that_is_the_runs_own_out_is_named_so(tiny_idx, tmp_path, capsys):
    run = tmp_path / "self"
    assert main(["train", "--model", "basic_cnn", "--dataset", f"idx:{tiny_idx}", "--teacher", str(run), "--out",
                 str(run)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "that is this run's own folder (--out); a run cannot teach itself" in err


def test_config_takes_a_runs_checkpoint_as_its_run_and_refuses_a_lone_weights_file(tiny_idx, tmp_path, capsys):
    run = tmp_path / "run"
    train(tiny_config(tiny_idx, max_steps=2), out=run, **QUIET)
    assert main(["train", "--config", str(run / "last.pt"), "--dry-run"]) == 0
    shutil.copy(run / "last.pt", tmp_path / "lone.pt")
    capsys.readouterr()
    assert main(["train", "--config", str(tmp_path / "lone.pt")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "a weights file, not settings; give its run folder" in err


def test_staging_folders_of_killed_cache_writers_go_when_the_cache_is_read(tmp_path):
    """A `data fetch` killed while it wrote the cache left a 17-45 MB `.incoming-PID-x` folder that nothing removed:
    a healthy cache is never written again, and only a write looked for them (the docs said: after an hour)."""
    import os
    import subprocess
    import sys
    import time

    from cnnlab.data import sources
    from cnnlab.data.catalog import DatasetSpec

    spec = DatasetSpec(name="tiny", md5={}, mirrors=(), classes=tuple("0123456789"), mean=0.5, std=0.25)
    folder = sources.cache_dir(spec, tmp_path)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()  # a pid that has just ended
    ages = {f".incoming-{dead}-aa": 700, f".incoming-{dead}-bb": 60, f".incoming-{os.getpid()}-cc": 700,
            f".incoming-{os.getpid()}-dd": 4000}
    for name, age in ages.items():
        (folder / name).mkdir(parents=True)
        (folder / name / "part.tmp").write_bytes(b"x" * 100)
        os.utime(folder / name, (time.time() - age, time.time() - age))
    assert sources.from_cache(spec, tmp_path, print) is None  # no cache there: a miss, after the clean-up
    left = {p.name for p in folder.iterdir()}
    assert left == {f".incoming-{dead}-bb", f".incoming-{os.getpid()}-cc"}  # young, or its writer alive


def test_a_signal_while_the_teacher_loads_leaves_no_run_folder(tiny_idx, tmp_path, monkeypatch):
    """`train --teacher T` stopped while T loaded (after its copy was written): the folder stayed with .lock,
    status.json and teacher.pt, hidden from `cnnlab runs`, and `--resume` of it said "no such checkpoint"."""
    import pytest

    import cnnlab.distill

    teacher, run = tmp_path / "teacher", tmp_path / "student"
    train(tiny_config(tiny_idx, max_steps=2), out=teacher, **QUIET)

    def stopped(ckpt):
        raise KeyboardInterrupt

    monkeypatch.setattr(cnnlab.distill, "model_from_checkpoint", stopped)
    with pytest.raises(BaseException):
        train(tiny_config(tiny_idx, max_steps=1, teacher=str(teacher)), out=run, **QUIET)
    assert not run.exists()


def test_torch_loads_with_the_stopping_signals_held_back_then_taken(tmp_path):
    """Ctrl-C 0.3-0.9 s after a command started landed inside torch's C++ import of numpy: ignored (2 in 60 here,
    6 in 50 on a loaded machine), or "cannot load module more than once", or an abort. The command line imports
    torch with SIGINT, SIGTERM and SIGHUP held back; one sent meanwhile is taken as soon as torch is in."""
    import subprocess
    import sys

    code = ("import os, signal, sys\n"
            "from cnnlab.cli import import_torch_whole\n"
            "import builtins\n"
            "real = builtins.__import__\n"
            "def sending(name, *a, **k):  # a Ctrl-C in the middle of torch's import, at numpy's\n"
            "    if name == 'numpy' and 'torch' in sys.modules and not sent:\n"
            "        sent.append(os.kill(os.getpid(), signal.SIGINT))\n"
            "    return real(name, *a, **k)\n"
            "sent = []\n"
            "builtins.__import__ = sending\n"
            "try:\n"
            "    import_torch_whole()\n"
            "except KeyboardInterrupt:\n"
            "    print('taken after', 'torch' in sys.modules and hasattr(sys.modules['torch'], 'tensor'), bool(sent))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "taken after True True", (out.stdout, out.stderr[-500:])


def test_an_analysis_stopped_between_its_files_leaves_no_half_folder(tmp_path, capsys):
    """`analyze gradients` stopped (Ctrl-C, SIGTERM) after gradients.json and before its figures: a results folder
    with the JSON and no figures stayed among the results, nothing saying it was incomplete."""
    import pytest

    from cnnlab.cli.analyze import _write

    def stop(path):
        raise KeyboardInterrupt

    fresh, given = tmp_path / "runs" / "gradients-1", tmp_path / "mine"
    for out in (fresh, given):
        out.mkdir(parents=True)
        with pytest.raises(KeyboardInterrupt):
            _write(out, ("a.json", {}), [("a.png", stop)], "table", 1.0, quiet=True, fresh=out == fresh)
    assert not fresh.exists() and (given / "a.json").is_file()
    err = capsys.readouterr().err
    assert f"results incomplete: wrote a.json in {given}, not a.png: stopped; run it again" in err


def test_evaluate_into_out_writes_its_report_when_its_reader_goes(tiny_idx, tmp_path):
    """`cnnlab evaluate RUN --out DIR | head -1`: exit 141 and no report in DIR (its next line met the closed pipe
    before the report was written); analyze, export and compare wrote their files all the same."""
    import subprocess
    import sys

    run, out = tmp_path / "run", tmp_path / "report"
    train(tiny_config(tiny_idx, max_steps=2), out=run, **QUIET)
    cmd = f"{sys.executable} -m cnnlab evaluate {run} --out {out} --dataset idx:{tiny_idx} | head -1; " \
          "exit ${PIPESTATUS[0]}"
    done = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=120)
    assert done.returncode in (141, 0) and done.stdout.startswith("evaluating") and done.stderr == ""  # 0: head was slow
    assert (out / "summary.json").is_file() and (out / "confusion.png").is_file()


def test_data_fetch_imports_torch_with_the_signals_held_back_data_info_and_runs_not_at_all(tiny_idx, monkeypatch):
    """`data fetch` imports torch (it loads the data as training does) and was left out of the guard: a Ctrl-C while
    torch loaded was lost (3 in 40), or exit 1, or an abort."""
    import cnnlab.cli

    calls = []
    monkeypatch.setattr(cnnlab.cli, "import_torch_whole", lambda: calls.append(True))
    for argv, guarded in ((["data", "fetch", f"idx:{tiny_idx}"], True), (["data", "info"], False),
                          (["runs"], False), (["models"], True)):
        calls.clear()
        main(argv)
        assert bool(calls) == guarded, argv


def test_analyze_stopped_by_sigterm_between_its_files_leaves_no_half_folder(tiny_idx, tmp_path):
    """SIGTERM or SIGHUP (not only Ctrl-C) between gradients.json and its figures killed the process on the spot:
    the folder with the JSON alone stayed."""
    import subprocess
    import sys

    code = ("import os, signal, sys; import cnnlab.analysis.plots as plots; from cnnlab.cli import main\n"
            "def stopped(*a, **k):\n"
            "    os.kill(os.getpid(), signal.SIGTERM)\n"
            "    import time; time.sleep(5)\n"
            "plots.plot_gradients = stopped\n"
            f"sys.exit(main(['analyze', 'gradients', '--depths', '2', '--seeds', '1', '--epochs', '0', '--dataset', "
            f"'idx:{tiny_idx}']))\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 143, done.stderr[-500:]
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_a_run_of_an_older_cnnlab_resumed_records_its_first_part_as_unknown(tiny_idx, tmp_path, capsys):
    """An older cnnlab's run (no cpu_threads) resumed at 1 thread was recorded as trained at 1 thread throughout:
    a re-run at the wrong count was not warned, one at the right count was told to use the wrong one."""
    import json

    run = tmp_path / "run"
    assert main(["train", "--model", "basic_cnn", "--dataset", f"idx:{tiny_idx}", "--epochs", "2", "--max-steps", "3",
                 "--threads", "2", "--out", str(run), "--quiet"]) == 0
    record = json.loads((run / "config.json").read_text())
    del record["cpu_threads"]  # as an older cnnlab wrote it
    (run / "config.json").write_text(json.dumps(record))
    assert main(["train", "--resume", str(run), "--threads", "1", "--quiet"]) == 0
    assert json.loads((run / "config.json").read_text())["cpu_threads"] == [None, 1]
    capsys.readouterr()
    assert main(["train", "--config", str(run), "--threads", "1", "--dry-run"]) == 0
    said = capsys.readouterr().out
    assert "trained at an unrecorded number of then 1 CPU threads" in said and "no one run repeats it" in said


def test_a_settings_files_own_values_stay_under_another_model_and_a_typed_dataset_drops_a_recorded_data_dir(
        tiny_idx, tmp_path):
    """A YAML `lr: 0.008` was replaced by the Inception column's 0.004 under `--model inception` (it equalled the
    residual net's recipe value); a run's recorded --data-dir was still refused under another typed named dataset."""
    import json

    (tmp_path / "s.yaml").write_text(f"model: resnet\nrecipe: best\nlr: 0.008\nepochs: 1\nmax_steps: 1\n"
                                     f"dataset: idx:{tiny_idx}\nthreads: 1\n")
    assert main(["train", "--config", str(tmp_path / "s.yaml"), "--model", "inception", "--out", str(tmp_path / "y"),
                 "--quiet"]) == 0
    assert json.loads((tmp_path / "y" / "config.json").read_text())["config"]["lr"] == 0.008
    record = {"config": {"model": "basic_cnn", "dataset": "fashion-mnist", "data_dir": str(tmp_path), "epochs": 1}}
    (tmp_path / "config.json").write_text(json.dumps(record))
    assert main(["train", "--config", str(tmp_path / "config.json"), "--dataset", f"idx:{tiny_idx}", "--dry-run"]) == 0
    from cnnlab.cli import _parse
    from cnnlab.cli.train import config_from_args

    args, _ = _parse(["train", "--config", str(tmp_path / "config.json"), "--dataset", "mnist"])
    assert config_from_args(args).data_dir is None  # fashion-mnist's folder: not mnist's files


def test_an_analysis_in_a_run_folder_names_the_weights_it_measured_and_a_resume_says_it_is_out_of_date(
        tiny_idx, tmp_path, capsys):
    """`analyze branches RUN` of a stopped run, then `train --resume RUN`: branches.json and branches.png still
    described the half-trained net, recording only "last.pt", and nothing said so (a lab's own workflow)."""
    import hashlib
    import json

    run = tmp_path / "inc"
    assert main(["train", "--model", "inception", "--dataset", f"idx:{tiny_idx}", "--epochs", "2", "--max-steps", "3",
                 "--device", "cpu", "--out", str(run), "--quiet"]) == 0
    assert main(["analyze", "branches", str(run), "--train-images", "64", "--test-images", "32", "--device", "cpu"]) == 0
    result = json.loads((run / "branches.json").read_text())
    assert result["checkpoint_step"] == 3
    assert result["checkpoint_sha256"] == hashlib.sha256((run / "last.pt").read_bytes()).hexdigest()
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--quiet"]) == 0
    assert "branches.json and branches.png measured the run's weights before this resume" in capsys.readouterr().out


def test_a_background_runs_kill_int_while_torch_loads_is_taken_not_lost(tiny_idx, tmp_path):
    """A script's `cnnlab train ... &` starts with SIGINT ignored; `train` takes it back (take_sigint), but since the
    import of torch was masked that happened after the import, and a `kill -INT` then was discarded: the run trained
    to its end and exited 0 (7 in 7)."""
    import subprocess
    import sys

    code = ("import os, signal, sys\n"
            "signal.signal(signal.SIGINT, signal.SIG_IGN)  # as a shell's background job starts\n"
            "import cnnlab.cli as cli\n"
            "real = cli.import_torch_whole\n"
            "def kill_int_then_import():\n"
            "    os.kill(os.getpid(), signal.SIGINT)  # the kill -INT, while torch is about to load\n"
            "    real()\n"
            "cli.import_torch_whole = kill_int_then_import\n"
            f"sys.exit(cli.main(['train', '--model', 'basic_cnn', '--dataset', 'idx:{tiny_idx}', '--epochs', '1',"
            f" '--out', {str(tmp_path / 'run')!r}]))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 130 and done.stderr.strip().endswith("interrupted"), (done.returncode, done.stderr[-300:])
    assert not (tmp_path / "run").exists()


def test_a_signal_while_the_program_exits_ends_it_without_a_handlers_traceback(tmp_path):
    """A second SIGTERM while `analyze`/`train` exited raised in cnnlab's handler inside torch's exit hooks:
    "Exception ignored in atexit callback" and 12 lines of traceback. After its command, the program leaves the stop
    signals at their defaults (the process ends at once)."""
    import subprocess
    import sys

    code = ("import atexit, signal, sys\n"
            "from cnnlab.cli import console\n"
            "atexit.register(lambda: print('at exit', signal.getsignal(signal.SIGTERM) is signal.SIG_DFL,"
            " signal.getsignal(signal.SIGINT) is signal.SIG_DFL, flush=True))\n"
            f"console(['train', '--model', 'basic_cnn', '--dataset', 'idx:{tmp_path / 'none'}'])\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stdout.strip() == "at exit True True", (done.stdout, done.stderr[-300:])


def test_compare_goes_on_without_its_stdout_and_says_when_stopped_between_its_files(tiny_idx, tmp_path, monkeypatch,
                                                                                    capsys):
    """`compare > /dev/full` (or stdout closed) trained its first run, then stopped at its next line, exit 2, with
    neither comparison file; stopped between comparison.md and comparison.png it left a table beside no figure (or
    the last compare's) without a word."""
    import subprocess
    import sys

    import cnnlab.compare

    out = tmp_path / "cmp"
    cmd = [sys.executable, "-m", "cnnlab", "compare", "--models", "basic_cnn", "--seeds", "2", "--dataset",
           f"idx:{tiny_idx}", "--epochs", "1", "--out", str(out)]
    with open("/dev/full", "w") as full:
        done = subprocess.run(cmd, stdout=full, stderr=subprocess.PIPE, text=True, timeout=300)
    assert done.returncode == 0 and "going on without it" in done.stderr
    assert (out / "comparison.md").is_file() and (out / "comparison.png").is_file() and len(list(out.glob("basic*"))) == 2

    def stopped(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cnnlab.compare, "_plot", stopped)
    capsys.readouterr()
    assert main(cmd[3:]) == 130
    assert f"results incomplete: wrote {out / 'comparison.md'}, not comparison.png: stopped" in capsys.readouterr().err


def test_evaluate_into_out_with_stdout_on_a_full_disk_writes_its_report_then_says_so(tiny_idx, tmp_path):
    """`evaluate RUN --out DIR > /dev/full` stopped at its first line: exit 2 and no report (its --json form, and
    analyze, export and predict --show-input, wrote their files)."""
    import subprocess
    import sys

    run, out = tmp_path / "run", tmp_path / "report"
    train(tiny_config(tiny_idx, max_steps=2), out=run, **QUIET)
    with open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, "-m", "cnnlab", "evaluate", str(run), "--out", str(out), "--dataset",
                               f"idx:{tiny_idx}"], stdout=full, stderr=subprocess.PIPE, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "cannot write the output" in done.stderr
    assert (out / "summary.json").is_file() and (out / "confusion.png").is_file()
