"""cnnlab export where the process's surroundings fail it: ONNX's packages missing, a folder it may not write."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import tempfile

from apps_helpers import tiny_checkpoint
from cnnlab.cli import main


def test_onnx_or_onnxruntime_missing_is_one_line_naming_what_to_install(tiny_idx, tmp_path, monkeypatch, capsys):
    """Found by a tester: with onnxruntime missing, `cnnlab export` was a 25-line ImportError traceback (after the
    export itself was made). One line, before anything is loaded; TorchScript still exports."""
    ckpt = tiny_checkpoint(tmp_path / "run" / "last.pt", dataset_dir=tiny_idx)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime: ModuleNotFoundError
    assert main(["export", str(ckpt), "--samples", "4"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("cnnlab: error: ONNX needs the packages onnx and onnxruntime, "
                                                   "and onnxruntime is not installed (")
    assert "; install them: pip install onnx" in err and " onnxruntime" in err and "(or --format torchscript)" in err
    assert not (ckpt.parent / "last.onnx").exists()
    assert main(["export", str(ckpt), "--samples", "4", "--format", "torchscript"]) == 0


def test_the_tester_s_fake_onnxruntime_first_on_pythonpath(tiny_idx, tmp_path):
    """The tester's repro, in a process of its own: a module that raises ModuleNotFoundError as onnxruntime."""
    ckpt = tiny_checkpoint(tmp_path / "run" / "last.pt", dataset_dir=tiny_idx)
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "onnxruntime.py").write_text('raise ModuleNotFoundError("No module named onnxruntime", '
                                         'name="onnxruntime")\n')
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(fake), *sys.path])}
    proc = subprocess.run([sys.executable, "-m", "cnnlab", "export", str(ckpt), "--samples", "4"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr[-3000:]
    assert "onnxruntime is not installed (No module named onnxruntime); install them: pip install" in proc.stderr


def test_a_read_only_folder_suggests_only_another_out(tiny_idx, tmp_path, monkeypatch, capsys):
    """Found by a tester: `cd ro && cnnlab export --pretrained resnet` suggested CNNLAB_HOME, which does not move
    what export writes."""
    ckpt = tiny_checkpoint(tmp_path / "run" / "last.pt", dataset_dir=tiny_idx)
    out = tmp_path / "ro" / "net.onnx"
    out.parent.mkdir()
    real = tempfile.mkstemp

    def mkstemp(*args, dir=None, **kwargs):
        if dir is not None and os.path.samefile(dir, out.parent):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    for command in (["export", str(ckpt), "--samples", "4"], ["export-weights", str(ckpt.parent)]):
        assert main([*command, "--out", str(out.parent) + "/"]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"cnnlab: error: cannot write {out.parent}/") and "CNNLAB_HOME" not in err
        assert err.endswith(f": Read-only file system; make {out.parent} writable, or write somewhere else (e.g. "
                            "another --out)\n"), err
