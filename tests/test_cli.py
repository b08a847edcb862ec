"""Smoke tests of every command, through ``main()`` and through the installed entry points."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from apps_helpers import draw_digit, tiny_checkpoint
from cnnlab.cli import build_parser, main
from cnnlab.schedules import WARMUP_SCHEDULES
from cnnlab.text import either
from conftest import write_idx_dataset


def run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_models(capsys):
    code, out, _ = run(["models"], capsys)
    assert code == 0 and "inception" in out and "97,298" in out and "41,514" in out


def test_train_evaluate_cycle(tiny_idx, tmp_path, capsys):
    out_dir = tmp_path / "run"
    code, out, _ = run(["train", "--model", "resnet", "--dataset", f"idx:{tiny_idx}", "--epochs", "1",
                        "--batch-size", "32", "--device", "cpu", "--out", str(out_dir), "--quiet"], capsys)
    assert code == 0 and "epoch   1/1" in out and "test_acc" in out and "img/s" in out
    assert (out_dir / "metrics.csv").is_file()
    code, out, _ = run(["evaluate", str(out_dir), "--json"], capsys)
    assert code == 0 and json.loads(out)["n"] == 64
    code, out, _ = run(["evaluate", str(out_dir / "best.pt")], capsys)
    assert code == 0 and "accuracy" in out


def test_evaluate_redraws_the_curves_only_when_the_metrics_changed(tiny_idx, tmp_path, capsys):
    out_dir = tmp_path / "run"
    run(["train", "--model", "basic_cnn", "--dataset", f"idx:{tiny_idx}", "--epochs", "1", "--device", "cpu",
         "--out", str(out_dir), "--quiet"], capsys)
    curves, metrics = out_dir / "curves.png", out_dir / "metrics.csv"
    os.utime(metrics, (1_000_000, 1_000_000))
    os.utime(curves, (2_000_000, 2_000_000))
    code, out, _ = run(["evaluate", str(out_dir)], capsys)
    assert code == 0 and f"wrote summary.json in {out_dir} (confusion.png, mistakes.png unchanged)" in out
    assert curves.stat().st_mtime == 2_000_000  # left as it was: it shows the metrics, which did not change
    os.utime(metrics, (3_000_000, 3_000_000))  # newer metrics (a resumed run, say): drawn again
    code, out, _ = run(["evaluate", str(out_dir)], capsys)
    assert code == 0 and "curves.png" in out and curves.stat().st_mtime > 3_000_000
    curves.unlink()
    code, out, _ = run(["evaluate", str(out_dir)], capsys)
    assert code == 0 and curves.is_file()


def test_resume_cli(tiny_idx, tmp_path, capsys):
    out_dir = tmp_path / "run"
    run(["train", "--model", "basic_cnn", "--dataset", f"idx:{tiny_idx}", "--epochs", "1", "--device", "cpu",
         "--out", str(out_dir), "--quiet"], capsys)
    code, out, _ = run(["train", "--resume", str(out_dir), "--quiet"], capsys)
    assert code == 0 and "final test accuracy" in out


def test_dry_run_writes_nothing(tiny_idx, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, _ = run(["train", "--dataset", f"idx:{tiny_idx}", "--dry-run", "--device", "cpu"], capsys)
    assert code == 0 and not (tmp_path / "runs").exists()


def test_every_recipe_gives_every_model_and_dataset_a_valid_config_that_dry_run_checks_as_it_is():
    """A dry run checks the run's own settings, cut to a few steps: the residual net's Fashion-MNIST recipe
    (--clean-epochs 10) once failed its dry run because the dry run set --epochs 1."""
    from cnnlab.cli.train import config_from_args
    from cnnlab.config import RECIPES
    from cnnlab.models import list_models

    for recipe in RECIPES:
        for model in list_models():
            for dataset in ("mnist", "fashion-mnist"):
                argv = ["train", "--model", model, "--recipe", recipe, "--dataset", dataset]
                full = config_from_args(build_parser().parse_args(argv))
                dry = config_from_args(build_parser().parse_args([*argv, "--dry-run"]))
                assert (dry.epochs, dry.clean_epochs, dry.max_steps) == (full.epochs, full.clean_epochs, 2)


def test_bad_input_is_one_line_error(tmp_path, capsys):
    code, _, err = run(["train", "--model", "vgg", "--dataset", f"idx:{tmp_path}/nope"], capsys)
    assert code == 2 and err.count("\n") == 1 and "cnnlab: error:" in err
    code, _, err = run(["evaluate", str(tmp_path / "missing.pt")], capsys)
    assert code == 2 and "no such checkpoint" in err
    code, _, err = run(["train", "--model", "vgg", "--dataset", "mnist", "--dry-run"], capsys)
    assert code == 2 and "unknown model 'vgg'" in err
    code, _, err = run(["train", "--model", "ResNet", "--dataset", "mnist", "--dry-run"], capsys)
    assert code == 2 and "unknown model 'ResNet' (did you mean 'resnet'?); choose one of:" in err
    code, _, err = run(["train", "--dataset", "Fashion", "--dry-run"], capsys)
    assert code == 2 and "unknown dataset 'Fashion' (did you mean 'fashion-mnist'?)" in err
    # an evaluation batch of 0 was a ValueError traceback; two sources of weights, one silently ignored
    with pytest.raises(SystemExit) as done:  # argparse's refusal: its exit, one line
        main(["evaluate", str(tmp_path), "--batch-size", "0"])
    err = capsys.readouterr().err
    assert done.value.code == 2 and "argument --batch-size: must be at least 1, got 0" in err and err.count("\n") == 1
    code, _, err = run(["evaluate", "--pretrained", "resnet", "--weights", str(tmp_path / "w.pt")], capsys)
    assert code == 2 and "not --pretrained and --weights" in err and err.count("\n") == 1


def test_help_as_a_command_is_the_commands_help(capsys):
    for argv, start in ((["help"], "usage: cnnlab [-h]"), (["help", "train"], "usage: cnnlab train"),
                        (["help", "data", "fetch"], "usage: cnnlab data fetch")):
        with pytest.raises(SystemExit) as done:
            main(argv)
        assert done.value.code == 0 and capsys.readouterr().out.startswith(start)


def test_did_you_mean_only_where_one_name_is_meant():
    from cnnlab.errors import did_you_mean

    names = ["inception", "inception_relu", "resnet", "basic_cnn"]
    assert did_you_mean("RESNET", names) == " (did you mean 'resnet'?)"  # case
    assert did_you_mean("basic", names) == " (did you mean 'basic_cnn'?)"  # the start of one name
    assert did_you_mean("inceptoin", names) == " (did you mean 'inception'?)"  # a typo of the same length
    # the start of two names, another name altogether (KMNIST is not MNIST), nothing typed: no guess
    assert did_you_mean("incep", names) == did_you_mean("kmnist", ["mnist", "fashion-mnist"]) == did_you_mean("", names) == ""


def test_data_fetch_with_wrong_files_and_info(tmp_path, capsys):
    directory = write_idx_dataset(tmp_path / "fake-mnist")
    code, _, err = run(["data", "fetch", "mnist", "--data-dir", str(directory)], capsys)
    assert code == 2 and "checksum mismatch" in err and err.count("\n") == 1
    code, out, _ = run(["data", "info"], capsys)
    assert code == 0 and "mnist: not cached" in out
    code, out, _ = run(["data", "info", "--json"], capsys)
    assert json.loads(out)[0]["name"] == "mnist"


@pytest.mark.parametrize("entry", [["-m", "cnnlab"], None])
def test_entry_points(entry):
    if entry is None:
        exe = os.path.join(os.path.dirname(sys.executable), "cnnlab")
        if not os.path.exists(exe):
            pytest.skip("console script not installed in this environment (run via make test)")
        cmd = [exe, "--version"]
    else:
        cmd = [sys.executable, *entry, "--version"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "cnnlab" in out.stdout


def test_the_program_exits_without_the_interpreters_teardown_and_keeps_the_exit_code(tmp_path):
    """``cnnlab`` and ``python -m cnnlab`` run :func:`console` (through ``cnnlab.__main__``): main's exit code, then
    ``os._exit`` after what the interpreter's exit does that matters: threads joined, ``atexit`` handlers run,
    stdout flushed."""
    import tomllib

    scripts = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"cnnlab": "cnnlab.__main__:main"}  # main() runs console(), under the import guard
    probe = ("import atexit, sys, threading, time; from cnnlab.cli import console; sys.argv = ['cnnlab', *sys.argv[1:]]; "
             "atexit.register(lambda: print('handler ran', flush=True)); "
             "threading.Thread(target=lambda: (time.sleep(0.3), print('thread done'))).start(); "
             "sys.stdout.write('unflushed '); console(); print('not reached')")
    ok = subprocess.run([sys.executable, "-c", probe, "models"], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and "resnet" in ok.stdout and ok.stdout.startswith("unflushed ")
    assert "thread done" in ok.stdout and ok.stdout.rstrip().endswith("handler ran") and "not reached" not in ok.stdout
    bad = subprocess.run([sys.executable, "-c", probe, "evaluate", str(tmp_path / "nope")], capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "error" in bad.stderr
    assert "handler ran" in bad.stdout
    proc = subprocess.run([sys.executable, "-m", "cnnlab", "evaluate", str(tmp_path / "nope")], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr == bad.stderr


def test_a_closed_output_ends_quietly_with_sigpipes_code():
    """``cnnlab data info | true``: the reader has gone before cnnlab writes. No traceback; exit 141 as for SIGPIPE."""
    script = f'{shlex.quote(sys.executable)} -m cnnlab data info; echo "rc $?" >&2'
    proc = subprocess.run(["bash", "-c", f"({script}) | true"], capture_output=True, text=True, timeout=120)
    assert proc.stderr.strip() == "rc 141", proc.stderr


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (a device whose every write is ENOSPC)")
def test_a_full_disk_under_stdout_is_one_line_and_a_run_goes_on(tiny_idx, tmp_path):
    """``cnnlab models > /dev/full`` was an OSError traceback: now one line and exit 2. A training keeps going
    with one warning (its output is a log; its files are written, or refused, on their own)."""
    with open("/dev/full", "w") as full:
        proc = subprocess.run([sys.executable, "-m", "cnnlab", "models"], stdout=full, stderr=subprocess.PIPE,
                              text=True, timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr == ("cnnlab: error: cannot write the output (No space left on device); free some space "
                               "where it goes, or send it elsewhere\n")
        run = tmp_path / "run"
        proc = subprocess.run([sys.executable, "-m", "cnnlab", "train", "--model", "basic_cnn", "--dataset",
                               f"idx:{tiny_idx}", "--epochs", "1", "--device", "cpu", "--out", str(run)],
                              stdout=full, stderr=subprocess.PIPE, text=True, timeout=120)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr
    assert proc.stderr.count("cannot write the output (No space left on device); going on without it") == 1
    assert json.loads((run / "summary.json").read_text())["n"] > 0


def test_compare_and_export_weights_cli(tiny_idx, tmp_path, capsys):
    out_dir = tmp_path / "cmp"
    code, out, _ = run(["compare", "--models", "basic_cnn", "--seeds", "2", "--dataset", f"idx:{tiny_idx}",
                        "--epochs", "1", "--device", "cpu", "--out", str(out_dir)], capsys)
    assert code == 0 and "| basic_cnn | 8,490 |" in out and (out_dir / "comparison.png").is_file()
    run_dir = next(p for p in out_dir.iterdir() if p.is_dir())
    code, out, _ = run(["export-weights", str(run_dir), "--format", "safetensors"], capsys)
    assert code == 0 and (run_dir / "model.safetensors").is_file()
    code, _, err = run(["compare", "--models", "nope", "--dataset", f"idx:{tiny_idx}"], capsys)
    assert code == 2 and "unknown model(s) 'nope'" in err


# ----------------------------------------------------------------------------- the parser itself

EXPECTED_COMMANDS = {"train", "evaluate", "runs", "compare", "export-weights", "data", "models", "analyze", "predict",
                     "export", "serve"}


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found.update(action.choices)
    return found


def _walk(parser: argparse.ArgumentParser, path: str = "cnnlab"):
    """Every (command path, parser) of the tree: cnnlab, cnnlab train, cnnlab data fetch, ..."""
    yield path, parser
    for name, sub in _subparsers(parser).items():
        yield from _walk(sub, f"{path} {name}")


def test_the_parser_registers_exactly_the_expected_commands():
    found = set(_subparsers(build_parser()))
    assert found == EXPECTED_COMMANDS, (
        f"commands registered but not expected: {sorted(found - EXPECTED_COMMANDS)}, expected but not registered: "
        f"{sorted(EXPECTED_COMMANDS - found)}: a new command goes in EXPECTED_COMMANDS of tests/test_cli.py "
        "(docs/architecture.md, 'A new command')")


def test_bare_cnnlab_and_bare_groups_print_their_help(capsys):
    code, out, err = run([], capsys)
    assert code == 0 and err == "" and out.startswith("usage: cnnlab") and all(c in out for c in EXPECTED_COMMANDS)
    code, out, _ = run(["data"], capsys)
    assert code == 0 and out.startswith("usage: cnnlab data") and "fetch" in out and "info" in out
    proc = subprocess.run([sys.executable, "-m", "cnnlab"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.startswith("usage: cnnlab") and proc.stderr == ""


def test_every_option_has_help_with_its_default():
    missing, no_default = [], []
    for path, parser in _walk(build_parser()):
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)):
                continue
            name = action.option_strings[-1] if action.option_strings else action.dest
            if not (action.help or "").strip():
                missing.append(f"{path} {name}")
            elif action.option_strings and "(default: " not in action.help and "; default: " not in action.help:
                no_default.append(f"{path} {name}")
        parser.format_help()  # every help string formats (no stray %)
    assert not missing, f"options without help: {missing}"
    assert not no_default, f"options whose help does not state the default: {no_default}"


def test_one_checkpoint_default_for_every_command():
    from cnnlab.runs import CHECKPOINTS, DEFAULT_CHECKPOINT

    found = {}
    for path, parser in _walk(build_parser()):
        for action in parser._actions:
            if "--checkpoint" in action.option_strings:
                found[path] = (action.default, tuple(action.choices))
                assert "(default: %(default)s)" in action.help and "--val-split" in action.help
    expected = {"cnnlab evaluate", "cnnlab export-weights", "cnnlab analyze branches", "cnnlab predict",
                "cnnlab export", "cnnlab serve"}
    assert set(found) == expected, (
        f"commands with --checkpoint: {sorted(set(found) - expected)} not expected, {sorted(expected - set(found))} "
        "missing: a new command that reads a run's checkpoint takes cli.common's --checkpoint and goes in this test's "
        "set (tests/test_cli.py::test_one_checkpoint_default_for_every_command)")
    assert set(found.values()) == {(DEFAULT_CHECKPOINT, CHECKPOINTS)} and DEFAULT_CHECKPOINT == "last"


#: The flags of train and compare that are the command's own, not a setting of the run (a TrainConfig field).
COMMAND_OWN_FLAGS = {"cnnlab train": {"help", "config", "out", "resume", "verbose", "quiet", "dry_run"},
                     "cnnlab compare": {"help", "models", "seeds", "out", "tta", "teachers", "teacher_model"}}


@pytest.mark.parametrize("command", sorted(COMMAND_OWN_FLAGS))
def test_every_train_and_compare_flag_reaches_the_config_the_run_gets(command):
    """(nwcE.) A flag added for a new TrainConfig field (`--grad-clip`) was parsed and dropped: cli/train.py listed
    the fields it passed on by hand (config.json: `"grad_clip": 0.0` after `--grad-clip 0.01`)."""
    from dataclasses import fields

    from cnnlab.cli.train import settings_from_args
    from cnnlab.config import TrainConfig

    parser = dict(_walk(build_parser()))[command]
    settings = {f.name for f in fields(TrainConfig)}
    flags = {a.dest: a.option_strings[-1] for a in parser._actions if a.option_strings}
    stray = [f"{flag} (dest {dest!r})" for dest, flag in flags.items() if dest not in settings | COMMAND_OWN_FLAGS[command]]
    assert not stray, (f"{command}: {', '.join(stray)} sets no TrainConfig field: a training option is a field of "
                       "TrainConfig named as its flag's dest (docs/architecture.md, 'A new training option'); a flag "
                       "of the command itself goes in COMMAND_OWN_FLAGS of tests/test_cli.py")
    args = parser.parse_args([])
    marks = {dest: object() for dest in flags if dest in settings}
    for dest, mark in marks.items():
        setattr(args, dest, mark)
    cfg = settings_from_args(args)
    dropped = [flags[dest] for dest, mark in marks.items() if getattr(cfg, dest) is not mark]
    assert not dropped, f"{command}: {dropped} parsed but not passed on (cli/train.py settings_from_args)"


def test_train_help_shows_what_each_recipe_sets(capsys):
    from cnnlab.config import RECIPES

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = " ".join(capsys.readouterr()[0].split())  # unwrapped
    for name, values in RECIPES.items():
        assert f"{name}: --epochs {values['epochs']} --batch-size {values['batch_size']}" in out
    assert f"--lr LR learning rate; the peak rate with --schedule onecycle (default: from --recipe: lecture " \
           f"{RECIPES['lecture']['lr']:g}, fast {RECIPES['fast']['lr']:g}, best {RECIPES['best']['lr']:g} " \
           f"(per model and dataset: see above))" in out
    # the variants of the best recipe are listed under it
    assert "best: --epochs 15" in out and "for inception: --lr 0.004 --epochs 10" in out
    assert "for fashion-mnist: --augment shift+flip+erase:p=0.5" in out


@pytest.mark.parametrize("columns", ["1", "2"])
def test_a_terminal_of_one_or_two_columns_still_gets_help(capsys, monkeypatch, columns):
    # the recipes' text was wrapped at COLUMNS - 2: at width 0 or -1 textwrap raised, and every command, even
    # `cnnlab models`, built the parser and died with a traceback
    monkeypatch.setenv("COLUMNS", columns)
    with pytest.raises(SystemExit) as stop:
        main(["train", "--help"])
    assert stop.value.code == 0 and "recipes (a flag you give" in capsys.readouterr()[0]


def test_recipe_variants_resolve_by_model_and_dataset_and_never_flip_digits():
    from cnnlab.config import RECIPE_VARIANTS, RECIPES, TrainConfig, recipe_values
    from cnnlab.models import list_models

    assert recipe_values("best", "resnet", "mnist") == RECIPES["best"]
    # the fast recipe: the residual net on MNIST in one epoch at batch 64; the Inception net and other data as it is
    fast = recipe_values("fast", "resnet", "mnist")
    assert (fast["epochs"], fast["batch_size"], fast["lr"]) == (1, 64, RECIPES["fast"]["lr"])
    # bf16 autocast for the fast recipe's steps only; a typed --precision fp32 is its path before
    assert [RECIPES[r]["precision"] for r in ("lecture", "fast", "best")] == ["fp32", "bf16", "fp32"]
    assert TrainConfig(model="resnet", recipe="fast").validate().precision == "bf16"
    assert TrainConfig(model="resnet", recipe="fast", precision="fp32").validate().precision == "fp32"
    assert TrainConfig(model="resnet").validate().precision == "fp32"
    for model, dataset in (("inception", "mnist"), ("resnet", "fashion-mnist"), ("resnet", "idx:/some/digits")):
        assert recipe_values("fast", model, dataset) == RECIPES["fast"]
    inc = recipe_values("best", "inception", "mnist")
    assert (inc["lr"], inc["epochs"]) == (0.004, 10)
    fash = recipe_values("best", "resnet", "fashion-mnist")
    assert "flip" in fash["augment"] and fash["epochs"] == 45 and fash["clean_epochs"] == 10
    assert recipe_values("best", "basic_cnn", "fashion-mnist")["epochs"] == 30  # 45 is the residual net's alone
    assert recipe_values("best", "inception", "fashion-mnist")["epochs"] == 10  # the more specific entry wins
    for dataset in ("mnist", "fashion-mnist"):  # GoogLeNet's ReLUs cost nothing per step: the same time budget
        assert recipe_values("best", "inception_relu", dataset) == recipe_values("best", "inception", dataset)
    # a config resolves the same way, and a flag given explicitly wins over every variant
    cfg = TrainConfig(model="inception", dataset="fashion-mnist", recipe="best", epochs=3).resolve()
    assert (cfg.epochs, cfg.lr, cfg.augment) == (3, 0.004, "none")  # the Inception net on clothes: no augmentation
    cfg = TrainConfig(model="resnet", dataset="fashion-mnist", recipe="best", epochs=3).resolve()
    assert (cfg.epochs, cfg.lr, cfg.augment) == (3, 0.004, "shift+flip+erase:p=0.5")
    # digits change class when mirrored: no recipe may flip them, on any model or digit dataset
    for recipe in RECIPES:
        for model in list_models():
            for dataset in ("mnist", "idx:/some/kmnist", "folder:digits"):
                assert "flip" not in recipe_values(recipe, model, dataset)["augment"], (recipe, model, dataset)
    assert set(RECIPE_VARIANTS) <= set(RECIPES)


def test_argument_errors_are_one_line_naming_the_fix(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["export", "runs/x", "--format", "tflite"])
    _, err = capsys.readouterr()
    assert exc.value.code == 2 and err.count("\n") == 1
    assert err.startswith("cnnlab: error: argument --format: invalid choice") and "see 'cnnlab export --help'" in err
    # a flag the command does not take is named with that command's help, not the top level's
    for argv, command in ((["compare", "--max-steps", "1"], "compare"), (["data", "fetch", "mnist", "--x"], "data fetch"),
                          (["models", "extra"], "models"), (["--bogus"], "")):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        err = capsys.readouterr().err
        assert exc.value.code == 2 and err.count("\n") == 1 and "unrecognized arguments:" in err
        assert f"see '{' '.join(['cnnlab', command]).strip()} --help'" in err


def test_parsing_and_help_do_not_import_torch():
    probe = ("import sys; from cnnlab.cli import build_parser; p = build_parser(); p.parse_args(['train']); "
             "p.format_help(); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "False"


def test_data_info_does_not_import_torch(tmp_path):
    """`cnnlab data info` reads files and checksums: it answers without paying for torch (1-4 s)."""
    probe = ("import sys; from cnnlab.cli import main; code = main(['data', 'info', '--json']); "
             "print('torch' in sys.modules, code, file=sys.stderr)")
    env = {**os.environ, "CNNLAB_HOME": str(tmp_path / "home")}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, env=env)
    assert out.stderr.strip().splitlines()[-1] == "False 0", out.stderr
    assert json.loads(out.stdout)[0]["name"] == "mnist"


# ----------------------------------------------------------------------------- predict --show-input


def test_predict_show_input_without_dir_writes_beside_the_input(tmp_path, capsys, monkeypatch):
    ckpt = tiny_checkpoint(tmp_path / "run" / "last.pt")
    digit = tmp_path / "mine" / "my_digit.jpg"
    digit.parent.mkdir()
    draw_digit().convert("RGB").save(digit)
    code, out, err = run(["predict", str(ckpt.parent), str(digit), "--show-input"], capsys)
    beside = digit.parent / "my_digit.input.png"
    assert code == 0 and err == "" and beside.is_file() and f"wrote {beside}" in out

    # a folder that cannot be written: into ./cnnlab-inputs instead, and said so
    import cnnlab.predict

    real = cnnlab.predict.save_input_image

    def read_only_beside(pred, directory, taken=None):
        if Path(directory) == digit.parent:
            raise PermissionError(13, "Permission denied")
        return real(pred, directory, taken)

    monkeypatch.setattr(cnnlab.predict, "save_input_image", read_only_beside)
    monkeypatch.chdir(tmp_path)
    code, out, _ = run(["predict", str(ckpt.parent), str(digit), "--show-input", "--json"], capsys)
    fallback = Path("cnnlab-inputs") / "my_digit.input.png"
    assert code == 0 and json.loads(out)[0]["input_image"] == str(fallback) and (tmp_path / fallback).is_file()


@pytest.mark.parametrize("err, shown", [
    (RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you "
                  "tried to allocate 360000000000 bytes. Error code 12 (Cannot allocate memory)"),
     "out of memory (an allocation of 360.0 GB failed)"),
    (RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you "
                  "tried to allocate 19267584 bytes. Error code 12 (Cannot allocate memory)"),
     "out of memory (an allocation of 19.3 MB failed)"),  # was "0.0 GB"
    (RuntimeError("std::bad_alloc"), "out of memory (an allocation failed: std::bad_alloc)"),  # was a traceback
    (MemoryError(), "out of memory (Python could not allocate)"),
    (type("OutOfMemoryError", (RuntimeError,), {})("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has ..."),
     "out of memory (CUDA out of memory)"),
])
def test_running_out_of_memory_is_one_line_that_says_to_ask_for_less(monkeypatch, capsys, err, shown):
    """`cnnlab analyze gradients --width 100000` asked torch for 360 GB and ended in a RuntimeError traceback.
    The flags named are the command's own: `predict` of one image was told of a --batch-size it has not."""
    import cnnlab.cli.evaluate
    import cnnlab.cli.models

    def fail(args):
        raise err

    monkeypatch.setattr(cnnlab.cli.evaluate, "cmd_evaluate", fail)
    code, _, stderr = run(["evaluate", "--pretrained", "resnet"], capsys)
    assert code == 2 and stderr.count("\n") == 1 and stderr.startswith(f"cnnlab: error: {shown}"), stderr
    assert stderr.endswith("; ask for less (a smaller --batch-size), or free some memory\n"), stderr
    monkeypatch.setattr(cnnlab.cli.models, "cmd_models", fail)
    code, _, stderr = run(["models"], capsys)
    assert code == 2 and stderr == f"cnnlab: error: {shown}; free some memory\n"
    monkeypatch.setattr(cnnlab.cli.models, "cmd_models", lambda args: (_ for _ in ()).throw(RuntimeError("a bug")))
    with pytest.raises(RuntimeError, match="a bug"):  # any other RuntimeError is still a bug's traceback
        main(["models"])


def test_out_of_memory_under_a_memory_limit_names_it_and_a_library_that_could_not_load(tmp_path, monkeypatch,
                                                                                      capsys):
    """Found by a tester: under `ulimit -v`, torch's import failed with `RuntimeError: std::bad_alloc` or
    `ImportError: libtorch_cpu.so: failed to map segment from shared object` tracebacks. One line each, naming
    what could not load and the fix that works: a smaller batch does not help a library load."""
    import resource

    import cnnlab.cli.models

    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "biglib.py").write_text('raise ImportError("libbig.so: failed to map segment from shared object")\n')
    (tmp_path / "greedylib.py").write_text('raise RuntimeError("std::bad_alloc")\n')
    monkeypatch.setattr(resource, "getrlimit", lambda which: (450_000 * 1024, resource.RLIM_INFINITY))
    for module, what in (("biglib", "not enough memory to load biglib's libraries (libbig.so: failed to map "
                                    "segment from shared object)"),
                         ("greedylib", "out of memory (an allocation failed: std::bad_alloc, while loading "
                                       "greedylib)")):
        monkeypatch.setattr(cnnlab.cli.models, "cmd_models", lambda args, m=module: __import__(m))
        code, _, err = run(["models"], capsys)
        assert code == 2 and err == (f"cnnlab: error: {what}; raise the memory limit (now ulimit -v 450000), or free "
                                     "some memory\n"), err
    monkeypatch.setattr(cnnlab.cli.models, "cmd_models", lambda args: __import__("no_such_module_here"))
    with pytest.raises(ImportError):  # any other ImportError is still a bug's traceback
        main(["models"])


def test_the_out_of_memory_line_itself_allocates_nothing_that_can_fail(monkeypatch, capfd):
    """Found by a tester: the handler of torch's `std::bad_alloc` compiled a regular expression, which raised a
    MemoryError in its turn: two tracebacks. And should printing the line fail too, a line made in advance."""
    import re

    import cnnlab.cli.models
    from cnnlab import output

    def no_memory(*args, **kwargs):
        raise MemoryError

    with monkeypatch.context() as m:
        def fail(args):  # from now on, no regular expression can be compiled
            m.setattr(re, "_compile", no_memory)
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 8 bytes")

        m.setattr(cnnlab.cli.models, "cmd_models", fail)
        assert main(["models"]) == 2
    assert capfd.readouterr().err == ("cnnlab: error: out of memory (an allocation of 8 bytes failed); free some "
                                      "memory\n")
    monkeypatch.setattr(cnnlab.cli.models, "cmd_models", lambda args: (_ for _ in ()).throw(MemoryError()))
    monkeypatch.setattr(output, "complain", no_memory)
    assert main(["models"]) == 2
    assert capfd.readouterr().err == "cnnlab: error: out of memory; ask for less, or free some memory\n"


def test_a_memory_limit_too_small_for_torch_is_one_line(tmp_path):
    """The tester's `(ulimit -v 300000; cnnlab models)`: the limit set just above what Python and numpy take here,
    below what torch's largest library needs to be mapped."""
    import resource

    import torch

    probe = subprocess.run([sys.executable, "-c", "import numpy, cnnlab.cli, re; print(re.search(r'VmPeak:\\s+(\\d+)', "
                            "open('/proc/self/status').read()).group(1))"], capture_output=True, text=True, timeout=120)
    if probe.returncode != 0:
        pytest.skip("no /proc/self/status here")
    limit_kb = int(probe.stdout) + 150_000
    library = Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"
    if not library.is_file() or limit_kb * 1024 > int(probe.stdout) * 1024 + library.stat().st_size:
        pytest.skip("torch's main library is too small here for the limit to stop its loading")

    def limited():
        resource.setrlimit(resource.RLIMIT_AS, (limit_kb * 1024, resource.getrlimit(resource.RLIMIT_AS)[1]))

    proc = subprocess.run([sys.executable, "-m", "cnnlab", "models"], capture_output=True, text=True, timeout=120,
                          preexec_fn=limited, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr[-3000:]
    assert proc.stderr.startswith("cnnlab: error: not enough memory to load torch's libraries (")
    # said before numpy and torch load, under the floor of what they need (cnnlab.cli.check_torch_can_load, s43); a
    # build without a floor: by torch's import that fails
    assert proc.stderr.endswith((f"); raise the memory limit (now ulimit -v {limit_kb})\n",
                                 f"); raise the memory limit (now ulimit -v {limit_kb}), or free some memory\n"))


def test_a_closed_stdout_is_an_error_and_a_training_goes_on(tiny_idx, tmp_path):
    """Found by a tester: `cnnlab runs >&-` (or predict, compare) printed its results nowhere and exited 0. As on a
    full disk under stdout: one line, exit 2; a training, whose output is a log, goes on after one warning."""
    line = ("cnnlab: error: cannot write the output (standard output is closed); give the command an output (> FILE, "
            "or > /dev/null to drop it)\n")
    for command in (["runs"], ["models"]):
        proc = subprocess.run(["bash", "-c", f"{shlex.join([sys.executable, '-m', 'cnnlab', *command])} >&-"],
                              capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert (proc.returncode, proc.stderr) == (2, line), proc.stderr[-2000:]
    train = [sys.executable, "-m", "cnnlab", "train", "--model", "basic_cnn", "--dataset", f"idx:{tiny_idx}",
             "--epochs", "1", "--device", "cpu", "--out", str(tmp_path / "run")]
    proc = subprocess.run(["bash", "-c", f"{shlex.join(train)} >&-"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.count("cannot write the output (standard output is closed); going on without it") == 1
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["n"] > 0


def test_a_removed_current_folder_is_one_line_before_torch_is_loaded(tmp_path):
    """Found by a tester: in a folder removed from under the shell, every torch command died in torch's import
    (`Intel oneMKL FATAL ERROR: Cannot load .../libtorch_cpu.so`), and `runs` said there were no runs."""
    for command in ("runs", "models"):
        gone = tmp_path / "gone"
        script = f"mkdir {shlex.quote(str(gone))} && cd {shlex.quote(str(gone))} && rmdir ../gone && " \
                 f"{shlex.quote(sys.executable)} -m cnnlab {command}"
        proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert (proc.returncode, proc.stdout) == (2, ""), proc.stderr[-2000:]
        assert proc.stderr == "cnnlab: error: the current folder no longer exists; cd to another one\n"


def test_runs_refuses_a_negative_limit(tmp_path, capsys, monkeypatch):
    """--limit -1 listed every run and then said '... and 2 older' of a folder with one run."""
    monkeypatch.chdir(tmp_path)
    code, out, err = run(["runs", "--limit", "-1"], capsys)
    assert code == 2 and err == "cnnlab: error: --limit must be >= 0 (0 shows every run), got -1\n" and not out


def test_runs_names_a_root_that_is_not_there(tmp_path, capsys, monkeypatch):
    """Found by probing: ``cnnlab runs --root ruins`` (a typo) said "no runs under ruins/ yet; train one"."""
    monkeypatch.chdir(tmp_path)
    code, out, err = run(["runs", "--root", "ruins"], capsys)
    assert code == 2 and not out and err == ("cnnlab: error: --root ruins: no such folder; check the path (runs are "
                                             "written under runs/ unless a run was given --out)\n")
    code, out, _ = run(["runs"], capsys)  # the default folder, before the first run: nothing wrong
    assert code == 0 and out == "no runs under runs/ yet; train one with 'cnnlab train'\n"


def test_a_path_too_long_for_the_file_system_is_one_line(tmp_path, capsys):
    """``--out`` with a 300-character name: pathlib's exists() raised ENAMETOOLONG, a traceback."""
    long = tmp_path / ("a" * 300)
    for argv in (["train", "--model", "basic_cnn", "--max-steps", "1", "--out", str(long)],
                 ["evaluate", str(long)], ["runs", "--root", str(long)]):
        code, _, err = run(argv, capsys)
        assert code == 2 and err.count("\n") == 1 and "a path is too long for the file system" in err, argv
        assert "the longest name in it 300 bytes; names take at most 255 bytes" in err


def test_a_path_behind_a_folder_one_may_not_enter_is_one_line(tmp_path, capsys, monkeypatch):
    """As a user (not root), ``--root /root/runs`` made pathlib's is_dir() raise PermissionError: a traceback.
    (Root enters every folder, so the error is raised here by hand, where cmd_runs looks at the folder.)"""
    import cnnlab.cli.runs

    def denied(root):
        raise PermissionError(13, "Permission denied", str(root))

    monkeypatch.setattr(cnnlab.cli.runs, "find_runs", denied)
    code, _, err = run(["runs", "--root", "/root/runs"], capsys)
    assert code == 2 and err == ("cnnlab: error: cannot reach /root/runs (permission denied); check the permissions "
                                 "of the folders on its way, or use another path\n")


def test_an_error_that_quotes_a_name_with_a_newline_stays_one_line(tmp_path, capsys):
    """Found by probing: ``cnnlab predict 'new<newline>line.png' x.png`` said "cnnlab: error: .../new", then "line.png:
    not a checkpoint" on a line of its own. Every one-line error escapes control characters, as predict's table does."""
    assert main(["evaluate", str(tmp_path / "a\nb")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "a\\nb: no such checkpoint" in err


@pytest.mark.parametrize("argv", [
    ["evaluate", ""], ["predict", "--model", "resnet", ""], ["train", "--teacher", ""], ["train", "--config", " "],
    ["train", "--out", ""], ["train", "--resume", ""], ["export", ""], ["export-weights", ""], ["runs", "--root", ""],
    ["compare", "--out", ""], ["analyze", "branches", ""], ["data", "fetch", "mnist", "--data-dir", ""],
])
def test_an_empty_path_is_refused_by_the_parser(argv, capsys):
    """Found by probing: "$TEACHER" or "$CONFIG" with the variable unset trained a plain run of the defaults as if
    the flag had not been given, and an empty RUN or IMAGE was read as '.' (predict classified every image in
    the folder)."""
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "an empty path (an unset shell variable?)" in err and err.count("\n") == 1


@pytest.mark.parametrize("argv, what", [
    (["evaluate", "--pretrained", "resnet", "--dataset", ""], "dataset"), (["export", "--pretrained", "resnet",
     "--dataset", " "], "dataset"), (["analyze", "branches", "--pretrained", "inception", "--dataset", ""], "dataset"),
    (["predict", "--model", "resnet", "--dataset", "", "x.png"], "dataset"), (["serve", "--dataset", ""], "dataset"),
    (["train", "--dataset", ""], "dataset"), (["predict", "--model", "", "x.png"], "model"),
    (["evaluate", "--pretrained", ""], "model"), (["compare", "--models", "resnet", ""], "model"),
    (["serve", "--model", ""], "model"), (["train", "--model", " "], "model"),
])
def test_an_empty_model_or_dataset_name_is_refused_by_the_parser(argv, what, capsys):
    """Found by fuzzing: with shipped weights, ``--dataset ''`` evaluated (and exported, analysed) MNIST without a
    word; ``predict --model ''`` took the first image for a run, ``evaluate --pretrained ''`` looked for weights of
    ''."""
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and f"an empty {what} name (an unset shell variable?)" in err and err.count("\n") == 1


def test_compare_names_each_model_once(capsys):
    assert main(["compare", "--models", "resnet", "resnet", "--seeds", "1"]) == 2
    assert "--models names resnet twice" in capsys.readouterr().err


@pytest.mark.parametrize("flags, message", [
    (["--warmup-epochs", "2"], f"--warmup-epochs 2 has no effect here: it is the warm-up of --schedule "
                               f"{either(WARMUP_SCHEDULES)}, not of constant"),
    (["--schedule", "onecycle", "--warmup-epochs", "0.5"], "not of onecycle (which warms up over its first 30% itself)"),
    (["--optimizer", "adam", "--momentum", "0.9"], "--momentum 0.9 has no effect here: --optimizer adam has no momentum"),
    (["--recipe", "fast", "--optimizer", "sgd", "--momentum", "0.9"], "--schedule onecycle cycles the momentum itself"),
    (["--distill", "0.7"], "--distill 0.7 has no effect here: it weighs a teacher's term, and there is no --teacher"),
    (["--distill-temperature", "4"], "--distill-temperature 4 has no effect here"),
    (["--evals-per-epoch", "8"], "--evals-per-epoch 8 has no effect here: checks inside an epoch are made only for "
                                 "--target-accuracy"),
    (["--clean-epochs", "1"], "--clean-epochs 1 has no effect here: it turns --augment off for the last epochs, and "
                              "there is no augmentation"),
    (["--no-bias-decay"], "--no-bias-decay has no effect here: there is no weight decay"),
])
def test_a_typed_flag_that_would_change_nothing_is_refused(tiny_idx, capsys, flags, message):
    """Each of these trained as if the flag were not there (found by probing): now one line, before any work."""
    code, out, err = run(["train", "--model", "resnet", "--dataset", f"idx:{tiny_idx}", "--epochs", "3", "--dry-run",
                          *flags], capsys)
    assert code == 2 and message in err and "drop it, or give what it acts with" in err and len(err.splitlines()) == 1


def test_a_fraction_for_a_target_percentage_is_refused(tiny_idx, capsys):
    """--target-accuracy 0.99 (meant: 99%) stopped the run at its first check, 'reached 33.33% >= 0.99%'."""
    code, _, err = run(["train", "--dataset", f"idx:{tiny_idx}", "--target-accuracy", "0.99", "--dry-run"], capsys)
    assert code == 2 and "--target-accuracy is a percentage, and 0.99% is no target; for 99% give " \
                         "--target-accuracy 99" in err


def test_settings_that_act_or_come_from_a_recipe_or_file_are_not_refused(tiny_idx, tmp_path, capsys):
    base = ["train", "--model", "resnet", "--dataset", f"idx:{tiny_idx}", "--epochs", "3", "--dry-run"]
    for flags in (["--momentum", "0"], ["--schedule", "step", "--warmup-epochs", "1"], ["--recipe", "best",
                  "--no-bias-decay"], ["--target-accuracy", "99", "--evals-per-epoch", "8"],
                  ["--augment", "shift", "--clean-epochs", "1"], ["--optimizer", "nesterov", "--momentum", "0.9",
                                                                   "--schedule", "constant"]):
        code, out, err = run([*base, *flags], capsys)
        assert code == 0 and "dry run ok" in out, (flags, err)
    # a recipe's own values (the Inception net's Fashion-MNIST recipe: 10 clean epochs, no augmentation) and a
    # config file's (a run's config.json holds every field) are not what the user typed
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"model": "resnet", "momentum": 0.9, "optimizer": "adam", "distill": 0.7}))
    code, out, err = run(["train", "--config", str(config), "--dataset", f"idx:{tiny_idx}", "--epochs", "3",
                          "--dry-run"], capsys)
    assert code == 0 and "dry run ok" in out, err


def test_the_api_refuses_a_setting_that_would_change_nothing(tiny_idx, tmp_path):
    import cnnlab

    with pytest.raises(cnnlab.CnnlabError, match=r"^cnnlab.train\(momentum=0.9\) has no effect here: optimizer='adam' "
                                                 r"has no momentum"):
        cnnlab.train("resnet", dataset=f"idx:{tiny_idx}", optimizer="adam", momentum=0.9, out=tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_a_typed_choice_of_weights_that_would_be_ignored_is_refused(tmp_path, capsys):
    """--checkpoint best with the shipped weights or a .pt file, --dataset for a run's predict, --model for serve's
    RUN: each was ignored without a word (found by probing). Now one line; and predict's images may follow an
    option (``predict RUN --checkpoint best a.png`` said 'unrecognized arguments: a.png')."""
    ckpt = tiny_checkpoint(tmp_path / "run" / "last.pt")
    tiny_checkpoint(tmp_path / "run" / "best.pt", seed=1)
    digit = tmp_path / "d.png"
    draw_digit().save(digit)
    refusals = [
        (["predict", "--model", "resnet", "--checkpoint", "best", str(digit)], "--checkpoint has no effect with the "
         "shipped weights"),
        (["predict", str(ckpt.parent), "--dataset", "fashion-mnist", str(digit)], "--dataset has no effect without "
         "--model"),
        (["predict", str(ckpt), "--checkpoint", "best", str(digit)], f"{ckpt} is a checkpoint file, and choosing "
         f"'best' (--checkpoint best) picks a file of a run folder: give the folder ({ckpt.parent})"),
        (["evaluate", "--pretrained", "resnet", "--checkpoint", "best"], "--checkpoint has no effect with --pretrained"),
        (["export", "--pretrained", "resnet", "--checkpoint", "last"], "--checkpoint has no effect with --pretrained"),
        (["analyze", "branches", "--pretrained", "inception", "--checkpoint", "best"], "--checkpoint has no effect"),
        (["serve", str(ckpt.parent), "--pretrained", "inception"], "--pretrained has no effect with RUN"),
        (["serve", "--checkpoint", "best"], "--checkpoint has no effect without RUN"),
    ]
    for argv, message in refusals:
        code, out, err = run(argv, capsys)
        assert code == 2 and message in err and len(err.splitlines()) == 1, (argv, err)
    # the images after an option are taken; best.pt is chosen from the folder, and by its own name
    for argv in (["predict", str(ckpt.parent), "--checkpoint", "best", str(digit), "--json"],
                 ["predict", str(ckpt.parent / "best.pt"), "--checkpoint", "best", "--json", str(digit)]):
        code, out, err = run(argv, capsys)
        assert code == 0 and [row["file"] for row in json.loads(out)] == [str(digit)], (argv, err)
    with pytest.raises(SystemExit) as exit_:  # an unknown option is still the parser's error
        main(["predict", str(ckpt.parent), str(digit), "--json", "--bogus"])
    assert exit_.value.code == 2 and "unrecognized arguments: --bogus;" in capsys.readouterr().err


def test_flags_of_a_mode_not_taken_are_refused(tiny_idx, tmp_path, capsys):
    """evaluate --out with --no-report, evaluate --pretrained with --model, analyze gradients --epochs 0 with the
    training budget's flags, train --dry-run with --out, --tensorboard or --save-every: each was ignored."""
    ckpt = tiny_checkpoint(tmp_path / "run" / "last.pt")
    for argv, message in (
        (["evaluate", str(ckpt.parent), "--out", str(tmp_path / "ev"), "--no-report"],
         "--out has no effect with --no-report, which writes nothing"),
        (["evaluate", "--pretrained", "resnet", "--model", "inception"], "--model has no effect with --pretrained"),
        (["analyze", "gradients", "--epochs", "0", "--lr", "0.5"], "--lr has no effect with --epochs 0"),
        (["analyze", "gradients", "--epochs", "0", "--train-images", "64"], "--train-images has no effect with "
                                                                            "--epochs 0"),
        (["train", "--dataset", f"idx:{tiny_idx}", "--dry-run", "--out", str(tmp_path / "r")],
         "--out has no effect with --dry-run, which writes nothing"),
        (["train", "--dataset", f"idx:{tiny_idx}", "--dry-run", "--tensorboard"], "--tensorboard has no effect"),
    ):
        code, out, err = run(argv, capsys)
        assert code == 2 and message in err and len(err.splitlines()) == 1, (argv, err)
    assert not (tmp_path / "ev").exists() and not (tmp_path / "r").exists()
