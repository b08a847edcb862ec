"""Fixes of helper dataF (s47), defects D1-D3 of the "fixdata" probe: ``idx:DIR``'s family key of names that
separate their words with ``_``, a ``folder:`` dataset's cache key and files rewritten in place with their old time,
and serve's 415 for a type that merely begins with ``multipart/form-data``. docs/reliability.md lists them."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from apps_helpers import draw_digit, tiny_checkpoint

from cnnlab.data import load_dataset
from conftest import write_idx_dataset

def test_idx_dir_names_with_underscores_are_one_family(tmp_path):
    """(D1) ``train_images_idx3_ubyte.gz`` and its three fellows (words joined by ``_``) were refused as two naming
    families, ``*_*_idx3_ubyte`` and ``*_*_idx1_ubyte`` (``files.family_key`` blanked the IDX dimension only after
    ``.`` or ``-``), with a fix that did nothing. Now the dimension is blanked after any separator: one family, read
    as the official names are; the dotted official names stay in the official family."""
    from cnnlab.data.files import family_key

    alone = load_dataset(f"idx:{write_idx_dataset(tmp_path / 'alone', seed=0)}")
    d = write_idx_dataset(tmp_path / "u", seed=0, gz=True)
    for path in list(d.iterdir()):
        path.rename(d / path.name.replace("t10k", "test").replace("-", "_"))
    got = load_dataset(f"idx:{d}")
    assert torch.equal(got.train_images, alone.train_images) and torch.equal(got.test_labels, alone.test_labels)
    assert family_key("train_images_idx3_ubyte.gz", "train_images") == "*_*_idx*_ubyte"
    assert family_key("test_labels_idx1_ubyte", "test_labels") == "*_*_idx*_ubyte"
    assert family_key("t10k-labels.idx1-ubyte", "test_labels") == family_key("train-images-idx3-ubyte",
                                                                            "train_images") == "*-*-idx*-ubyte"


def _quiet(message: str) -> None:
    pass


def _bmps(folder: Path, value: int, n: int = 6) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("L", (28, 28), value).save(folder / f"{i}.bmp")
    for path in folder.iterdir():
        os.utime(path, ns=(1_704_067_200 * 10**9,) * 2)  # 2024-01-01, as an archive's time


def _mean_of_class(data, label: int) -> float:
    images = np.concatenate([data.train_images[data.train_labels == label],
                             data.test_images[data.test_labels == label]])
    return float(images.mean())


def test_folder_files_rewritten_in_place_with_their_old_time_are_converted_again(tmp_path):
    """(D2) Class a's and b's images overwritten in place with the other class's (``cp -p NEW/a/* DATA/a/``: same
    names, sizes, mtimes and inodes, as ``unzip -o`` leaves them): the load said ``converted earlier`` and class a's
    images stayed black where the files are white (``folder.cache_key`` hashed size, mtime and inode only). Now the
    key holds each file's ctime too (``_image_files``' ``layout.stats``): a new conversion, with the images as they
    are; a plain re-load of the unchanged folder still reads the cache."""
    from cnnlab.data.folder import load_image_folder

    data, new, home = tmp_path / "DATA", tmp_path / "NEW", tmp_path / "home"
    for klass, value in (("a", 0), ("b", 255)):
        _bmps(data / klass, value)
        _bmps(new / klass, 255 - value)
    first = load_image_folder(data, home, _quiet)
    assert first.converted and _mean_of_class(first, 0) == 0.0
    again = load_image_folder(data, home, _quiet)  # nothing changed: the cache, not a conversion
    assert not again.converted and again.cache_dir == first.cache_dir and _mean_of_class(again, 0) == 0.0
    assert "converted earlier" in load_dataset(f"folder:{data}", home=home, log=_quiet).source
    inodes = {p.name: p.stat().st_ino for p in (data / "a").iterdir()}
    for klass in ("a", "b"):
        for path in (new / klass).iterdir():
            shutil.copy2(path, data / klass / path.name)  # cp -p: into the same inode, the old mtime restored
    assert inodes == {p.name: p.stat().st_ino for p in (data / "a").iterdir()}
    swapped = load_image_folder(data, home, _quiet)
    assert swapped.converted and swapped.cache_dir != first.cache_dir
    assert _mean_of_class(swapped, 0) == 255.0 and _mean_of_class(swapped, 1) == 0.0
    assert not load_image_folder(data, home, _quiet).converted  # and read from the cache from now on
    assert [p.name for p in (home / "datasets").iterdir()] == [swapped.cache_dir.name]  # the stale one removed


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    pytest.importorskip("uvicorn")
    from test_serve import Server

    from cnnlab.predict import Predictor
    from cnnlab.serve.app import create_app

    ckpt = tiny_checkpoint(tmp_path_factory.mktemp("srv") / "digits.pt")
    with Server(create_app(Predictor.from_run(ckpt, device="cpu"))) as srv:
        yield srv


def _form(server, media: str) -> tuple[int, dict]:
    """POST a multipart form with a part ``file`` holding a drawn digit, its Content-Type ``media; boundary=...``."""
    import io

    buf = io.BytesIO()
    draw_digit().save(buf, "PNG")
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"t00.png\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode() + buf.getvalue() + f"\r\n--{boundary}--\r\n".encode()
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request("POST", "/predict", body, {"Content-Type": f"{media}; boundary={boundary}"})
        res = conn.getresponse()
        return res.status, json.loads(res.read())
    finally:
        conn.close()


def test_a_type_that_merely_begins_with_multipart_form_data_is_415_naming_it(server):
    """(D3) ``curl -F file=@t00.png -H "Content-Type: multipart/form-datax"``: ``400 {"error":"no file in the form;
    send the image as multipart field 'file'"}`` (``serve.app._upload`` tested the header by its prefix; Starlette
    parses no form for an unknown type). Now the media type itself must be ``multipart/form-data``: anything else is
    415 naming the type, as ``application/octet-streamx`` is; the form itself is read as before, in any case."""
    for media in ("multipart/form-datax", "multipart/form-data-x", "Multipart/Form-Datax"):
        status, answer = _form(server, media)
        error = answer["error"]
        assert status == 415 and f"Content-Type {media.lower()} is not read as an image" in error, (media, answer)
        assert "\n" not in error and "multipart form field 'file'" in error
    for media in ("multipart/form-data", "Multipart/Form-Data", "multipart/form-data "):
        status, answer = _form(server, media)
        assert status == 200 and np.isfinite(answer["probabilities"][0]), (media, answer)
