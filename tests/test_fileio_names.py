"""File writes at the edges a tester found: names near the file system's 255-byte limit (the temp file beside the
target outgrew it), a file-size limit (ulimit -f), an empty HOME (the cache at /.cache/cnnlab)."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from apps_helpers import tiny_checkpoint
from cnnlab import fileio
from cnnlab.cli import main
from cnnlab.data import sources
from cnnlab.errors import CnnlabError, DataError, WriteError
from cnnlab.fileio import atomic_write_bytes, write_error

NAME_MAX = 255


def _python(code: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run([sys.executable, "-c", code, *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def _name_max(folder: Path) -> int:
    return os.pathconf(folder, "PC_NAME_MAX")


@pytest.mark.parametrize("size", [230, 233, 240, 250, 255])
def test_every_legal_name_is_written_and_no_temp_file_is_left(tmp_path, size):
    """Found by a tester: names of 233-255 bytes were refused, their temp file `.<name>.<pid>-<random>.tmp` over the
    255-byte limit."""
    if _name_max(tmp_path) != NAME_MAX:
        pytest.skip("a file system whose names are not limited to 255 bytes")
    target = tmp_path / ("a" * (size - len(".bin")) + ".bin")
    atomic_write_bytes(target, b"new")
    atomic_write_bytes(target, b"newer")  # over an existing file too
    assert target.read_bytes() == b"newer" and sorted(p.name for p in tmp_path.iterdir()) == [target.name]


def test_a_long_names_stale_temp_file_is_still_found_and_removed(tmp_path):
    """The shortened temp name is the same for every writer of the file: a killed writer's is removed by the next."""
    if _name_max(tmp_path) != NAME_MAX:
        pytest.skip("a file system whose names are not limited to 255 bytes")
    target = tmp_path / ("é" * 120 + ".bin")  # 244 bytes: 'é' is two, and the cut must not split one
    part = fileio.temp_part(target)
    assert part != target.name and len(os.fsencode(part)) + fileio._TEMP_EXTRA <= NAME_MAX
    assert fileio.temp_part(target) == part and fileio._TEMP_NAME.fullmatch(f".{part}.4194304-abcdefgh.tmp")
    stale = tmp_path / f".{part}.{2 ** 31 - 2}-abcd_123.tmp"  # a pid that runs no process: its writer is gone
    stale.write_bytes(b"half")
    other = tmp_path / ("é" * 120 + ".bim")  # another long name: its own temp part, its temp file kept
    kept = tmp_path / f".{fileio.temp_part(other)}.{2 ** 31 - 2}-abcd_123.tmp"
    kept.write_bytes(b"half")
    atomic_write_bytes(target, b"whole")
    assert target.read_bytes() == b"whole" and not stale.exists() and kept.exists()
    fileio.remove_stale_temp_files_in(tmp_path)  # a locked run folder's sweep finds it by the same pattern
    assert not kept.exists()


def test_a_name_too_long_is_quoted_with_the_users_own_lengths(tmp_path):
    name = "a" * (NAME_MAX - 4) + ".safetensors"  # 263 bytes
    target = tmp_path / "ex" / name
    with pytest.raises(WriteError) as caught:
        atomic_write_bytes(target, b"x")
    text = str(caught.value)
    assert f"{len(str(target)):,} bytes, the longest name in it {len(name)} bytes; names take at most 255 bytes" in text
    multibyte = tmp_path / ("日" * 86 + ".onnx")  # 91 characters, 263 bytes
    with pytest.raises(WriteError, match="263 bytes; names take at most 255 bytes"):
        atomic_write_bytes(multibyte, b"x")
    assert not (tmp_path / "ex").exists()  # nothing made for a file that cannot be


def test_export_writes_a_long_legal_name(tiny_idx, tmp_path, monkeypatch, capsys):
    """The tester's `cnnlab export R --out ex/<240 a's>.onnx`: 'File name too long; check the path and the disk'."""
    ckpt = tiny_checkpoint(tmp_path / "run" / "last.pt", dataset_dir=tiny_idx)
    monkeypatch.chdir(tmp_path)
    out = Path("ex") / ("a" * 240 + ".pt")
    assert main(["export", str(ckpt), "--samples", "4", "--format", "torchscript", "--out", str(out)]) == 0, \
        capsys.readouterr().err
    assert out.is_file() and os.listdir("ex") == [out.name]


def _dark_digit(path: Path) -> Path:
    img = Image.new("L", (28, 28), 0)
    img.paste(255, (12, 5, 16, 23))
    img.save(path)
    return path


def test_predict_show_input_beside_an_image_with_a_long_name(tmp_path, monkeypatch, capsys):
    """The tester's `cnnlab predict --model resnet p/<236 b's>.png --show-input`: exit 2, no prediction, and an empty
    cnnlab-inputs/ left; <stem>.input.x10.png is 250 bytes, a legal name."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p").mkdir()
    image = _dark_digit(Path("p") / ("b" * 236 + ".png"))
    assert main(["predict", "--model", "resnet", str(image), "--show-input", "--json"]) == 0, capsys.readouterr().err
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["input_image"] == str(Path("p") / ("b" * 236 + ".input.png"))
    assert (Path("p") / ("b" * 236 + ".input.x10.png")).is_file() and not Path("cnnlab-inputs").exists()


def test_predict_prints_its_results_when_an_input_image_cannot_be_saved(tmp_path, monkeypatch, capsys):
    """An image whose input image's name is over the limit (250 + '.input.x10.png'): the predictions are printed,
    one warning names the fix that works (a shorter image name, not --show-input DIR), exit 1, no folder left."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p").mkdir()
    long = _dark_digit(Path("p") / ("c" * 250 + ".png"))
    short = _dark_digit(Path("p") / "ok.png")
    assert main(["predict", "--model", "resnet", str(long), str(short), "--show-input"]) == 1
    out, err = capsys.readouterr()
    assert out.splitlines()[0].startswith(str(long)) and out.splitlines()[1].startswith(str(short) + " ")
    assert f"wrote {Path('p') / 'ok.input.png'}" in out and "c" * 250 + ".input.png" not in out
    assert err.count("\n") == 1 and err.startswith(f"warning: --show-input: the input image of {long} was not written")
    assert err.rstrip().endswith("rename the image to a shorter name")
    assert not Path("cnnlab-inputs").exists() and sorted(os.listdir("p")) == sorted(
        [long.name, "ok.png", "ok.input.png", "ok.input.x10.png"])
    assert main(["predict", "--model", "resnet", str(long), "--show-input", "--json"]) == 1
    assert json.loads(capsys.readouterr().out)[0]["input_image"] is None


#: A write of 100 KB under a 10 KB file-size limit (SIGXFSZ is ignored by Python: the write fails with EFBIG).
OVER_THE_LIMIT = ("import resource, signal, sys\n"
                  "from cnnlab.fileio import atomic_write_bytes\n"
                  "assert signal.getsignal(signal.SIGXFSZ) == signal.SIG_IGN\n"
                  "resource.setrlimit(resource.RLIMIT_FSIZE, (10_000, resource.RLIM_INFINITY))\n"
                  "try:\n"
                  "    atomic_write_bytes(sys.argv[1], b'x' * 100_000)\n"
                  "except Exception as err:\n"
                  "    print(type(err).__name__, err.errno, err)\n")


def test_a_file_size_limit_is_named_not_the_path_or_the_disk(tmp_path):
    """Found by a tester: under `ulimit -f`, 'cannot write uf/last.pt: File too large; check the path and the disk'."""
    target = tmp_path / "uf" / "last.pt"
    target.parent.mkdir()
    target.write_bytes(b"old")
    proc = _python(OVER_THE_LIMIT, str(target))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith(f"WriteError {errno.EFBIG} cannot write {target}: "), proc.stdout
    assert "at most 10,000 bytes: ulimit -f" in proc.stdout and "raise the limit (ulimit -f unlimited)" in proc.stdout
    assert "check the path and the disk" not in proc.stdout
    assert target.read_bytes() == b"old" and os.listdir(target.parent) == ["last.pt"]


def test_export_weights_under_a_file_size_limit(tiny_idx, tmp_path):
    """The command line's line (as train's status.json and export's): the limit, in one line, exit 2."""
    ckpt = tiny_checkpoint(tmp_path / "run" / "last.pt", dataset_dir=tiny_idx)
    code = ("import resource, sys\nfrom cnnlab.cli import main\n"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (1_000, resource.RLIM_INFINITY))\n"
            "sys.exit(main(['export-weights', sys.argv[1], '--out', sys.argv[2]]))\n")
    proc = _python(code, str(ckpt.parent), str(tmp_path / "uf" / "w.safetensors"))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr[-3000:]
    assert "file too large (this process may write files of at most 1,000 bytes: ulimit -f); raise the limit" \
           in proc.stderr


def test_the_caches_warning_names_the_file_size_limit(tmp_path):
    """`data fetch` under ulimit -f said 'a writable folder with room for it': the warning names the limit."""
    err = write_error(tmp_path / "x.gz", OSError(errno.EFBIG, os.strerror(errno.EFBIG)))
    why, fix = sources.write_failure(err, tmp_path / "home" / "datasets" / "mnist", ["x.gz"])
    assert "ulimit -f" in why and fix.startswith("raise the limit (ulimit -f unlimited)")


def test_an_empty_home_is_not_the_root(monkeypatch):
    """Found by a tester: HOME= (set, empty) put the cache at /.cache/cnnlab (Path.home() makes '' '/')."""
    pwd = pytest.importorskip("pwd")
    monkeypatch.delenv("CNNLAB_HOME")
    monkeypatch.setenv("HOME", "")
    own = Path(pwd.getpwuid(os.getuid()).pw_dir)
    assert sources.cnnlab_home() == own / ".cache" / "cnnlab" != Path("/.cache/cnnlab")
    assert sources.expand_home("~/data") == own / "data"
    monkeypatch.setenv("CNNLAB_HOME", "~/data")
    assert sources.cnnlab_home() == own / "data"


def test_no_home_at_all_is_one_line_asking_for_home_or_cnnlab_home(monkeypatch):
    monkeypatch.delenv("CNNLAB_HOME")
    monkeypatch.setenv("HOME", "")
    from cnnlab import fileio

    if fileio.pwd is not None:
        def no_entry(uid):
            raise KeyError(uid)
        monkeypatch.setattr(fileio.pwd, "getpwuid", no_entry)
    with pytest.raises(DataError) as caught:
        sources.cnnlab_home()
    assert "set HOME, or CNNLAB_HOME" in str(caught.value) and isinstance(caught.value, CnnlabError)


def test_a_stem_that_fits_one_input_name_only_writes_neither(tmp_path, monkeypatch, capsys):
    """A 243-byte stem: <stem>.input.png (253 bytes) fits, <stem>.input.x10.png (257) does not: the first was written
    and left alone beside the image, which was reported as not saved."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p").mkdir()
    image = _dark_digit(Path("p") / ("d" * 243 + ".png"))
    assert main(["predict", "--model", "resnet", str(image), "--show-input"]) == 1
    assert "was not written" in capsys.readouterr().err
    assert sorted(os.listdir("p")) == [image.name] and not Path("cnnlab-inputs").exists()


def test_a_tilde_in_a_dataset_path_under_an_empty_home_is_the_users_home(monkeypatch, tmp_path):
    """`idx:~/small` and `--data-dir ~/dd` under HOME= were read at /small and /dd (Path.expanduser: '' is '/')."""
    pwd = pytest.importorskip("pwd")
    from cnnlab.dataset_names import canonical_dataset_name

    monkeypatch.setenv("HOME", "")
    own = Path(pwd.getpwuid(os.getuid()).pw_dir)
    assert canonical_dataset_name("idx:~/small") == f"idx:{(own / 'small').resolve()}"
    assert canonical_dataset_name("folder:~") == f"folder:{own.resolve()}"
