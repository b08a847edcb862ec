"""Four small defects a tester found (s39): a ``CNNLAB_MIRRORS`` URL without its closing ``/``, a safetensors file
given where a checkpoint goes told to use a flag most commands lack, a refused ``analyze branches`` leaving its lock
file in the user's folder, and ``~user`` of no such user in ``CNNLAB_HOME`` blamed on HOME."""

from __future__ import annotations

import pytest

from cnnlab.checkpoint import load_checkpoint
from cnnlab.cli import main
from cnnlab.data import load_dataset, sources
from cnnlab.errors import CheckpointError, DataError
from apps_helpers import deadline, one_line
from test_data_faults import body, gz_files, mirror, tiny

NO_USER = "nosuchuser-cnnlab-s39"


# --- 1. a mirror is a folder URL, with or without its closing / -------------------------------------------------


@pytest.mark.parametrize("folder", ["", "mnist"], ids=["host-only", "a-folder"])
def test_a_mirror_url_without_its_closing_slash_is_a_folder(tmp_path, monkeypatch, folder):
    """``CNNLAB_MIRRORS=http://127.0.0.1:PORT/mnist`` asked for ``.../mnisttrain-images-idx3-ubyte.gz`` (404), and
    ``http://127.0.0.1:9`` for port ``9train-images-idx3-ubyte.gz`` (InvalidURL); with a closing ``/`` it worked."""
    src = tmp_path / "src"
    tiny(monkeypatch, src)
    prefix = f"/{folder}" if folder else ""
    routes = {prefix + path: body(data) for path, data in gz_files(src).items()}
    for slash in ("", "/"):
        messages = []
        with mirror(routes) as url, deadline(30):
            base = url + folder if folder else url.rstrip("/")
            monkeypatch.setenv("CNNLAB_MIRRORS", base + slash)
            monkeypatch.setenv("CNNLAB_HOME", str(tmp_path / f"home-{slash == '/'}"))
            d = load_dataset("tiny", log=messages.append)
        assert d.source == f"mirror {base + slash}" and len(d.train_labels) == 256, messages
        assert not any(m.startswith("mirror ") for m in messages), messages  # no mirror failed


def test_mirror_url_joins_a_folder_and_a_name():
    assert sources.mirror_url("http://h/mnist", "a.gz") == "http://h/mnist/a.gz"
    assert sources.mirror_url("http://h/mnist/", "a.gz") == "http://h/mnist/a.gz"
    assert sources.mirror_url("http://127.0.0.1:9", "a.gz") == "http://127.0.0.1:9/a.gz"


# --- 2. a safetensors file where a checkpoint goes: advice that works in every command -----------------------------


def _exported(tmp_path, tiny_idx, capsys):
    run = tmp_path / "run"
    assert main(["train", "--model", "basic_cnn", "--dataset", f"idx:{tiny_idx}", "--epochs", "1", "--batch-size",
                 "64", "--device", "cpu", "--out", str(run), "--quiet"]) == 0
    weights = tmp_path / "w.safetensors"
    assert main(["export-weights", str(run), "--format", "safetensors", "--out", str(weights)]) == 0
    capsys.readouterr()
    return weights


def test_a_safetensors_file_given_as_a_checkpoint_gets_advice_that_works(tiny_idx, tmp_path, capsys):
    """``predict``, ``export`` and ``analyze branches`` said "give the file as --weights FILE", a flag only
    ``evaluate`` has; now: evaluate it with ``cnnlab evaluate --weights FILE`` (which works, no --model needed), or
    load it in plain PyTorch (docs/api.md), as predict of such a file must."""
    from PIL import Image

    weights = _exported(tmp_path, tiny_idx, capsys)
    Image.new("L", (28, 28)).save(tmp_path / "d0.png")
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(weights)
    one_line(err, "a safetensors file", "cnnlab evaluate --weights FILE", "docs/api.md")
    assert "--weights FILE (" not in str(err.value) and "the file as --weights" not in str(err.value)
    for argv in (["predict", str(weights), str(tmp_path / "d0.png")], ["export", str(weights)],
                 ["analyze", "branches", str(weights), "--device", "cpu"]):
        assert main(argv) == 2, argv
        said = capsys.readouterr().err
        assert said.count("\n") == 1 and "cnnlab evaluate --weights FILE" in said and "as --weights" not in said
    # the advice works: evaluate --weights takes the file (its metadata names the model)
    assert main(["evaluate", "--weights", str(weights), "--dataset", f"idx:{tiny_idx}", "--device", "cpu",
                 "--no-report"]) == 0


# --- 3. a refused analyze branches leaves no file ----------------------------------------------------------------


def test_a_refused_analyze_branches_leaves_no_lock_file(tiny_idx, tmp_path, capsys, monkeypatch):
    """``analyze branches sub/d0.png`` (and a text file, a missing .pt, a resnet run) left ``.analysis.lock`` in
    the user's folder; a refusal now leaves nothing, and an Inception run is still locked while analysed."""
    from PIL import Image

    sub = tmp_path / "sub"
    sub.mkdir()
    Image.new("L", (28, 28)).save(sub / "d0.png")
    (sub / "notes.txt").write_text("notes\n")
    monkeypatch.chdir(sub)
    resnet = tmp_path / "resnet"
    assert main(["train", "--model", "resnet", "--dataset", f"idx:{tiny_idx}", "--epochs", "1", "--batch-size",
                 "64", "--device", "cpu", "--out", str(resnet), "--quiet"]) == 0
    capsys.readouterr()
    before = {p: sorted(q.name for q in p.iterdir()) for p in (sub, resnet)}
    out = tmp_path / "out"
    for what in (sub / "d0.png", "d0.png", "notes.txt", "nonexist.pt", resnet):
        for extra in ([], ["--out", str(out)]):
            assert main(["analyze", "branches", str(what), "--device", "cpu", *extra]) == 2, (what, extra)
            assert capsys.readouterr().err.count("\n") == 1
            assert {p: sorted(q.name for q in p.iterdir()) for p in (sub, resnet)} == before, (what, extra)
            assert not out.exists(), (what, extra)


def test_an_inception_run_is_locked_while_its_branches_are_measured(tiny_idx, tmp_path, capsys, monkeypatch):
    from cnnlab.analysis import branches

    run = tmp_path / "inc"
    assert main(["train", "--model", "inception", "--dataset", f"idx:{tiny_idx}", "--epochs", "1", "--batch-size",
                 "64", "--device", "cpu", "--out", str(run), "--quiet"]) == 0
    seen = []
    measure = branches.channel_means

    def watched(*args, **kwargs):
        seen.append((run / ".analysis.lock").is_file())
        return measure(*args, **kwargs)

    monkeypatch.setattr(branches, "channel_means", watched)
    assert main(["analyze", "branches", str(run), "--train-images", "64", "--device", "cpu"]) == 0
    assert seen == [True] and (run / "branches.json").is_file()


# --- 4. ~user of no such user in CNNLAB_HOME ---------------------------------------------------------------------


def test_a_tilde_user_of_no_such_user_is_named_not_blamed_on_home(tmp_path, monkeypatch, capsys):
    """``CNNLAB_HOME='~nosuchuser/cache' HOME=/some/dir`` said "no home folder is known, HOME is empty or unset"."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("CNNLAB_HOME", f"~{NO_USER}/cache")
    with pytest.raises(DataError) as err:
        sources.cnnlab_home()
    msg = one_line(err, f"no user named '{NO_USER}'", "absolute path", "existing user")
    assert "HOME is empty" not in msg and "set HOME" not in msg
    assert main(["data", "info"]) == 2
    said = capsys.readouterr().err
    assert said.count("\n") == 1 and f"no user named '{NO_USER}'" in said
    # ~ alone with no home still says so
    monkeypatch.setenv("HOME", "")
    monkeypatch.setattr(sources, "user_home", lambda: None)
    monkeypatch.setenv("CNNLAB_HOME", "~/cache")
    with pytest.raises(DataError) as err:
        sources.cnnlab_home()
    one_line(err, "cannot expand ~ (no home folder is known", "set HOME")


def test_a_refused_analyze_gradients_leaves_no_lock_file(tiny_idx, tmp_path, capsys):
    """``analyze gradients --norm bogus --out newout`` left ``newout/.analysis.lock`` (locked before the arguments
    were checked); a refusal now leaves no folder and no file."""
    out = tmp_path / "newout"
    for extra in (["--norm", "bogus"], ["--width", "0"], ["--dataset", f"idx:{tmp_path / 'none'}"]):
        assert main(["analyze", "gradients", "--out", str(out), "--device", "cpu", *extra]) == 2, extra
        assert capsys.readouterr().err.count("\n") == 1, extra
        assert not out.exists(), extra
