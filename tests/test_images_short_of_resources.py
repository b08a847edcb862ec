"""A process that runs out of file descriptors or memory while it reads or decodes an image: the machine's problem,
named with its fix (``ulimit -n``), never "damaged or truncated image" (cnnlab.imageio.ResourceError)."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

import cnnlab
from apps_helpers import draw_digit, tiny_checkpoint
from cnnlab.cli import main
from cnnlab.imageio import BadImageError, open_image

# A white 50x50 PNG written by hand: the script below must not let Pillow load its format modules before the
# descriptors run out (Pillow imports them on the first open, which is what failed in the tester's server).
EMFILE_SCRIPT = """
import os, resource, struct, zlib
def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
rows = b"".join(b"\\x00" + b"\\xff" * 50 for _ in range(50))
png = (b"\\x89PNG\\r\\n\\x1a\\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 50, 50, 8, 0, 0, 0, 0))
       + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
from cnnlab.errors import CnnlabError
from cnnlab.imageio import open_image
resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
held = []
try:
    while True:
        held.append(os.open(os.devnull, os.O_RDONLY))
except OSError:
    pass
try:
    open_image(png, "d.png")
    print("decoded")
except CnnlabError as err:
    print(type(err).__name__, err)
"""


def test_running_out_of_descriptors_while_decoding_is_named_not_called_a_damaged_image():
    """The tester's case for real: every descriptor taken, then a valid PNG opened (Pillow then opens its modules)."""
    src = str(Path(cnnlab.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", EMFILE_SCRIPT], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert done.stdout == ("ResourceError d.png: cannot be read now: too many open files (this process may have 64 open "
                           "at once: ulimit -n); raise the limit (ulimit -n 4096) or open fewer files at once, and try "
                           "again\n")


def _raising(err: BaseException):
    def fail(*args, **kwargs):
        raise err
    return fail


@pytest.mark.parametrize("raised, said", [
    (OSError(errno.EMFILE, "Too many open files"), "cannot be read now: too many open files (this process may have "),
    (OSError(errno.ENFILE, "Too many open files in system"), "cannot be read now: too many open files on this machine "
                                                             "(the system's limit); close some programs or raise "
                                                             "fs.file-max, and try again"),
    (OSError(errno.ENOMEM, "Cannot allocate memory"), "not enough memory to read or decode it now; free some memory "
                                                      "(or lower --max-pixels) and try again"),
    (MemoryError(), "not enough memory to read or decode it now"),
])
def test_a_resource_error_while_decoding_is_a_resource_error(monkeypatch, raised, said):
    from cnnlab.imageio import ResourceError

    monkeypatch.setattr(Image, "open", _raising(raised))
    with pytest.raises(ResourceError) as caught:
        open_image(b"\x89PNG\r\n\x1a\n" + b"\0" * 100, "d.png")
    assert not isinstance(caught.value, BadImageError)
    assert str(caught.value).startswith(f"d.png: {said}") and "damaged" not in str(caught.value)
    assert "\n" not in str(caught.value)


def test_other_decoder_errors_still_name_a_damaged_file_and_opening_a_path_short_of_descriptors_is_named(
        monkeypatch, tmp_path):
    from cnnlab.imageio import ResourceError

    monkeypatch.setattr(Image, "open", _raising(OSError(errno.EIO, "broken data stream")))
    with pytest.raises(BadImageError, match="damaged or truncated image"):
        open_image(b"\x89PNG\r\n\x1a\n" + b"\0" * 100, "d.png")
    monkeypatch.undo()
    path = tmp_path / "d.png"
    draw_digit().save(path)
    monkeypatch.setattr(os, "open", _raising(OSError(errno.EMFILE, "Too many open files")))
    with pytest.raises(ResourceError, match=r"d\.png: cannot be read now: too many open files"):
        open_image(path)


def test_predict_says_the_resource_in_one_line_not_that_the_image_is_damaged(monkeypatch, tmp_path, capsys):
    """``cnnlab predict`` out of descriptors: one line naming the limit and the fix, exit 2 (it said the image was
    damaged and skipped it)."""
    ckpt = tiny_checkpoint(tmp_path / "last.pt")
    path = tmp_path / "d.png"
    draw_digit().save(path)
    monkeypatch.setattr(Image, "open", _raising(OSError(errno.EMFILE, "Too many open files")))
    assert main(["predict", str(ckpt), str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"cnnlab: error: {path}: cannot be read now: too many open files (this process may have ")
    assert "ulimit -n" in err and err.count("\n") == 1 and "damaged" not in err


def test_a_folder_dataset_stops_when_the_machine_runs_short_instead_of_dropping_images(tmp_path, monkeypatch):
    # a folder: dataset skips (and names) images it cannot read; out of descriptors or memory, every image after
    # would have been "unreadable" too, and the dataset built without them
    from test_data_hostile import make_pics

    import cnnlab.data.folder as folder
    from cnnlab.data import load_dataset
    from cnnlab.imageio import ResourceError

    root = make_pics(tmp_path / "pics")
    monkeypatch.setattr(folder, "open_regular", _raising(OSError(errno.EMFILE, "Too many open files")))
    with pytest.raises(ResourceError) as err:
        load_dataset(f"folder:{root}", home=tmp_path / "home", log=lambda m: None)
    assert "too many open files" in str(err.value) and "ulimit -n" in str(err.value) and "\n" not in str(err.value)
