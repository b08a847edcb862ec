"""Three defects a tester found (s39, misc2): ``analyze --json`` into a full disk or a closed pipe lost the files it
was asked to write (and its lines printed run folder names raw); ``export-weights``/``export`` of the file it had
written itself blamed an --out nobody typed; a ``CNNLAB_MIRRORS`` URL with a query string or a fragment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import pytest

from cnnlab.cli import main

GRAD = ["analyze", "gradients", "--depths", "2", "--width", "2", "--seeds", "1", "--epochs", "0", "--device", "cpu"]
ODD = "inc\ny\x1b]0;TITLE\x07"  # a run folder whose name holds a newline and a terminal's title sequence


def _cnnlab(args: list[str], stdout) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cnnlab", *args], stdout=stdout, stderr=subprocess.PIPE, text=True,
                          timeout=300)


def _into_a_closed_pipe(args: list[str]) -> subprocess.CompletedProcess:
    read, write = os.pipe()
    os.close(read)  # `| true`: the reader has gone before the table is printed
    try:
        return _cnnlab(args, write)
    finally:
        os.close(write)


def _files(folder) -> list[str]:
    """The files in ``folder`` besides its hidden ``.analysis.lock``."""
    return sorted(p.name for p in folder.iterdir() if p.name != ".analysis.lock")


def _train_inception(tmp_path, tiny_idx, name="inc"):
    run = tmp_path / name
    assert main(["train", "--model", "inception", "--dataset", f"idx:{tiny_idx}", "--epochs", "1", "--batch-size",
                 "64", "--device", "cpu", "--out", str(run), "--quiet"]) == 0
    return run


# --- 1. a lost stdout loses the table, never the analysis's files; names escaped ---------------------------------


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (a device whose every write is ENOSPC)")
def test_analyze_gradients_json_into_a_full_disk_still_writes_its_files(tiny_idx, tmp_path):
    out = tmp_path / "a" / "gp3"
    with open("/dev/full", "w") as full:
        proc = _cnnlab([*GRAD, "--dataset", f"idx:{tiny_idx}", "--json", "--out", str(out)], full)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "cannot write the output (No space left on device)" in proc.stderr
    assert _files(out) == ["depth.png", "gradients.json", "gradients.png"]
    assert json.loads((out / "gradients.json").read_text())["depths"] == [2]


def test_analyze_into_a_closed_pipe_still_writes_its_files(tiny_idx, tmp_path):
    out = tmp_path / "g"
    proc = _into_a_closed_pipe([*GRAD, "--dataset", f"idx:{tiny_idx}", "--json", "--out", str(out)])
    assert proc.returncode == 141 and proc.stderr == "", proc.stderr
    assert _files(out) == ["depth.png", "gradients.json", "gradients.png"]
    run = _train_inception(tmp_path, tiny_idx)
    out = tmp_path / "b"
    proc = _into_a_closed_pipe(["analyze", "branches", str(run), "--train-images", "64", "--device", "cpu",
                                "--json", "--out", str(out)])
    assert proc.returncode == 141 and proc.stderr == "", proc.stderr
    assert _files(out) == ["branches.json", "branches.png"]


def test_analyze_lines_escape_run_folder_names(tiny_idx, tmp_path, capsys):
    run = _train_inception(tmp_path, tiny_idx, ODD)
    capsys.readouterr()
    assert main(["analyze", "branches", str(run), "--train-images", "64", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    escaped = "inc\\ny\\x1b]0;TITLE\\x07"
    assert "\x1b" not in out and "\x07" not in out and "\ny" not in out, out
    named = [line for line in out.splitlines() if escaped in line]
    assert any(line.startswith("inception from ") for line in named), out  # the log line
    assert any("baseline test accuracy" in line for line in named), out  # the table's first line
    assert any(line.startswith("wrote ") for line in named), out
    assert (run / "branches.json").is_file()
    # gradients: its dataset's folder name in the table's first line, its --out in the 'wrote' line
    odd_data = tiny_idx.rename(tmp_path / f"d-{ODD}")
    with warnings.catch_warnings(record=True) as caught:  # the figures' titles escape it too: no "Glyph 27 (^[)"
        warnings.simplefilter("always")
        assert main([*GRAD, "--dataset", f"idx:{odd_data}", "--out", str(tmp_path / f"g-{ODD}")]) == 0
    assert not [w for w in caught if "Glyph" in str(w.message)], [str(w.message) for w in caught]
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out and "\ny" not in out, out
    assert sum(escaped in line for line in out.splitlines()) == 2, out


# --- 2. an export of the file the export wrote: what the input is, not an --out nobody typed ----------------------


def _basic_run(tmp_path, tiny_idx):
    run = tmp_path / "run"
    assert main(["train", "--model", "basic_cnn", "--dataset", f"idx:{tiny_idx}", "--epochs", "1", "--batch-size",
                 "64", "--device", "cpu", "--out", str(run), "--quiet"]) == 0
    return run


def test_exporting_an_export_says_it_is_no_checkpoint_not_an_untyped_out(tiny_idx, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    run = _basic_run(tmp_path, tiny_idx)
    assert main(["export-weights", str(run)]) == 0
    assert main(["export", str(run), "--samples", "8"]) == 0
    capsys.readouterr()
    for argv, what in ((["export-weights", str(run / "model.safetensors")], "(a safetensors file"),
                       (["export", str(run / "last.onnx"), "--samples", "8"], "(an ONNX model")):
        before = (run / argv[1]).read_bytes()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"not a checkpoint {what}" in err, err
        assert "--out" not in err and "being exported" not in err, err
        assert (run / argv[1]).read_bytes() == before
    # a typed --out naming the checkpoint itself is still named as typed
    assert main(["export-weights", str(run / "last.pt"), "--out", str(run / "last.pt")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--out {run / 'last.pt'} is the checkpoint being exported" in err, err
    # a real checkpoint under the name its default output would get: no --out blamed, --out FILE the fix
    odd = tmp_path / "odd.onnx"
    odd.write_bytes((run / "last.pt").read_bytes())
    assert main(["export", str(odd), "--samples", "8"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--out FILE" in err and f"--out {odd}" not in err, err
    assert main(["export", str(odd), "--samples", "8", "--out", str(tmp_path / "fine.onnx")]) == 0


# --- 3. a mirror URL with a query string or a fragment ------------------------------------------------------------


def _html_page(h, _stop):
    """What a web server answers for the folder's own page: HTML (bad IDX magic, when taken for a file)."""
    page = b"<!doctype html><title>mnist</title>"
    h.send_response(200)
    h.send_header("Content-Length", str(len(page)))
    h.end_headers()
    h.wfile.write(page)


def _routes(tmp_path, monkeypatch, where: str) -> dict:
    """A tiny dataset's four files served at ``where`` (``{path}``: each file's), and the folder ``/mnist`` as an
    HTML page (what a server answers for a folder URL)."""
    from test_data_faults import body, gz_files, tiny

    src = tmp_path / "src"
    tiny(monkeypatch, src)
    routes = {where.format(path=path): body(data) for path, data in gz_files(src).items()}
    return {**routes, "/mnist": _html_page, "/mnist/": _html_page}


@pytest.mark.parametrize("slash", ["", "/"], ids=["no-slash", "slash"])
def test_a_mirror_url_with_a_query_string_keeps_it_after_the_file_name(tmp_path, monkeypatch, slash):
    """``CNNLAB_MIRRORS=http://127.0.0.1:PORT/mnist?x=1`` asked for ``/mnist?x=1/train-images-idx3-ubyte.gz``: the
    folder's page, "bad IDX magic"; the file name now goes onto the URL's path, the query kept after it."""
    from cnnlab.data import load_dataset
    from test_data_faults import mirror

    routes = _routes(tmp_path, monkeypatch, "/mnist{path}?x=1&y=a%2Fb")
    messages: list[str] = []
    with mirror(routes) as url:
        base = f"{url}mnist{slash}?x=1&y=a%2Fb"
        monkeypatch.setenv("CNNLAB_MIRRORS", base)
        d = load_dataset("tiny", log=messages.append)
    assert d.source == f"mirror {base}" and len(d.train_labels) == 256, messages
    assert not any(m.startswith("mirror ") for m in messages), messages  # no mirror failed


def test_a_mirror_url_with_a_fragment_is_refused_naming_the_mirror(tmp_path, monkeypatch):
    """``...#frag``: the fragment (and the file name glued after it) never reached the server, which answered the
    folder's page; now that mirror is refused in one line naming it and the fragment, and the next one is tried."""
    from cnnlab.data import load_dataset, sources
    from test_data_faults import mirror

    routes = _routes(tmp_path, monkeypatch, "/good{path}")
    messages: list[str] = []
    with mirror(routes) as url:
        bad = f"{url}mnist#frag"
        monkeypatch.setenv("CNNLAB_MIRRORS", f"{bad},{url}good")
        d = load_dataset("tiny", log=messages.append)
    assert d.source == f"mirror {url}good", messages
    refused = [m for m in messages if m.startswith(f"mirror {bad}:")]
    assert len(refused) == 1 and "\n" not in refused[0] and "#frag" in refused[0].split(": ", 1)[1], messages
    assert "CNNLAB_MIRRORS" in refused[0] and "IDX magic" not in refused[0], refused
    assert sources.mirror_url("http://h/mnist?x=1", "a.gz") == "http://h/mnist/a.gz?x=1"
    assert sources.mirror_url("http://h/?x=1", "a.gz") == "http://h/a.gz?x=1"
    assert sources.mirror_url("http://127.0.0.1:9?x=1", "a.gz") == "http://127.0.0.1:9/a.gz?x=1"
