"""cnnlab serve and cnnlab predict against their docs, a docs tester's defects of session 46:

- a file's probabilities moved in their last digits with the files predicted with it (``cnnlab predict a.png`` and
  ``cnnlab predict a.png b.png``, ``predictor([a, b])``), so that serve.md's "the same file gets the same answer from
  both" did not hold: the net ran each chunk as one batch of its size;
- ``POST /predict`` read an ``application/octet-stream`` body as the image, where serve.md and the 415 said only
  ``image/*`` was;
- ``/predict`` said ``"digits_seen": 1`` for a Fashion-MNIST or an image folder's net, which count no digits.
"""

from __future__ import annotations

import http.client
import io
import json
from pathlib import Path

import numpy as np
import pytest
from apps_helpers import draw_digit, mnist_like_fields, tiny_checkpoint
from PIL import Image

from cnnlab.predict import NET_BATCH, Predictor, predict_paths

ROOT = Path(__file__).resolve().parents[1]
FASHION = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def _service(predictor: Predictor):
    pytest.importorskip("fastapi")
    from cnnlab.serve.app import Service

    return Service(predictor, decodes=1)


# ----------------------------------------------------------------------------- one file, one answer


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    """20 MNIST-like fields (read as they are, as the tester's MNIST test images were) and 3 drawn digits (through
    the digit steps)."""
    folder = tmp_path_factory.mktemp("imgs")
    mnist_like_fields(folder, [f"f{i:02d}.png" for i in range(20)])
    for i, box in enumerate([(50, 50, 250, 250), (20, 60, 200, 280), (90, 10, 290, 200)]):
        draw_digit(box=box).save(folder / f"d{i}.png")
    return sorted(folder.glob("*.png"))


def _nets(tmp: Path) -> dict[str, Predictor]:
    """Both lecture nets with their shipped weights (the tester's inception on MNIST; resnet on Fashion-MNIST), and
    an image folder's net (random weights: the numbers' bits are what is compared)."""
    folder_net = tiny_checkpoint(tmp / "folder.pt", model="resnet", classes=["a", "b", "c"],
                                 dataset=f"folder:{tmp / 'data'}")
    return {"inception-mnist": Predictor.pretrained("inception", "mnist", device="cpu"),
            "resnet-fashion": Predictor.pretrained("resnet", "fashion-mnist", device="cpu"),
            "resnet-folder": Predictor.from_run(folder_net, device="cpu")}


def test_a_files_numbers_do_not_depend_on_the_files_predicted_with_it(images, tmp_path):
    """``cnnlab predict t0.png`` and ``cnnlab predict t0.png t1.png`` gave t0 ``0.013658802956342697`` and
    ``0.01365880947560072`` (the shipped inception): each chunk ran as one batch, and the kernels differ by its size.
    Now every pass is a batch of NET_BATCH: a file's numbers are the same bits alone, with one other file, in a folder
    of more than one pass, in any order, through the CLI's paths, the API's list and the server's answer."""
    for net, p in _nets(tmp_path).items():
        for probe in (images[0], images[-1]):  # a drawn digit (the digit steps); a field taken as it is
            alone = predict_paths(p, [str(probe)])[0][0].probabilities
            groups = [[probe, images[1]], images, images[::-1], [images[2]] * (NET_BATCH + 3) + [probe]]
            for group in groups:
                preds, failures = predict_paths(p, [str(q) for q in group])
                got = [q.probabilities for q in preds if q.name == str(probe)]
                assert not failures and got and all(g == alone for g in got), (net, probe.name, len(group))
            assert p([probe, images[3]])[0].probabilities == alone, net  # the API's list
            assert p(probe).probabilities == alone, net
            served = _service(p).predict(probe.read_bytes(), "upload")
            assert served["probabilities"] == alone, net  # serve.md: "the same answer from both"


def test_every_pass_of_the_net_is_one_batch_size():
    """What makes it so: the net never sees another batch size than NET_BATCH (the last pass filled with blank
    fields, their rows dropped)."""
    p = Predictor.pretrained("resnet", "mnist", device="cpu")
    sizes = []
    hook = p.model.register_forward_pre_hook(lambda module, args: sizes.append(args[0].shape[0]))
    try:
        for n in (1, NET_BATCH - 1, NET_BATCH, NET_BATCH + 1, 3 * NET_BATCH + 2):
            sizes.clear()
            out = p.probabilities([np.zeros((28, 28), np.float32)] * n)
            assert out.shape == (n, 10) and set(sizes) == {NET_BATCH}, (n, sizes)
            assert len(sizes) == -(-n // NET_BATCH)
        sizes.clear()
        assert p.probabilities([]).shape == (0, 10) and sizes == []
    finally:
        hook.remove()


# ----------------------------------------------------------------------------- digits_seen only where counted


def _two_digits() -> bytes:
    two = Image.new("L", (600, 300), 255)  # two digits side by side: a digit net counts 2
    for x in (0, 300):
        two.paste(draw_digit(), (x, 0))
    return _png(two)


def test_digits_seen_only_where_the_net_counts_digits(tmp_path):
    """A Fashion-MNIST or an image folder's net takes an image whole and counts no digits: ``/predict`` said
    ``"digits_seen": 1`` for them all the same (for two digits side by side too). Now the key is left out for them,
    as ``cnnlab predict --json`` leaves it out; a digit net says its count, 1 or more."""
    body = _two_digits()
    digits = _service(Predictor.from_run(tiny_checkpoint(tmp_path / "digits.pt"), device="cpu"))
    counted = digits.predict(body, "upload")
    assert counted["preparation"] == "digit" and counted["digits_seen"] == 2 and counted["number"] is not None
    one = digits.predict(_png(draw_digit()), "upload")
    assert one["digits_seen"] == 1 and one["number"] is None
    others = {"clothes": tiny_checkpoint(tmp_path / "fashion.pt", classes=FASHION, dataset="fashion-mnist"),
              "as is": tiny_checkpoint(tmp_path / "folder.pt", classes=["a", "b"], dataset=f"folder:{tmp_path / 'd'}")}
    for preparation, ckpt in others.items():
        answer = _service(Predictor.from_run(ckpt, device="cpu")).predict(body, "upload")
        assert answer["preparation"] == preparation and "digits_seen" not in answer and answer["number"] is None


# ----------------------------------------------------------------------------- raw bodies: image/* or octet-stream


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    pytest.importorskip("uvicorn")
    from test_serve import Server

    from cnnlab.serve.app import create_app

    ckpt = tiny_checkpoint(tmp_path_factory.mktemp("srv") / "digits.pt")
    with Server(create_app(Predictor.from_run(ckpt, device="cpu"))) as srv:
        yield srv


def _raw(server, body: bytes, ctype: str | None) -> tuple[int, dict]:
    """POST ``body`` as it is, with ``ctype`` as its Content-Type (None: no such header at all)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.putrequest("POST", "/predict", skip_accept_encoding=True)
        if ctype is not None:
            conn.putheader("Content-Type", ctype)
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        res = conn.getresponse()
        return res.status, json.loads(res.read())
    finally:
        conn.close()


def test_a_raw_body_is_read_as_image_or_octet_stream_and_the_415_says_so(server):
    """``application/octet-stream`` was read as the image, where serve.md's 415 row and the 415's words named only
    ``image/*``: both now name it, and the 415 names the type that came (curl --data-binary's default
    ``application/x-www-form-urlencoded``, or none)."""
    digit = _png(draw_digit())
    for ctype in ("application/octet-stream", "Application/Octet-Stream; charset=binary", "image/png"):
        status, answer = _raw(server, digit, ctype)
        assert status == 200 and "prediction" in answer, (ctype, answer)
    for ctype, said in (("text/plain", "Content-Type text/plain"), (None, "no Content-Type"),
                        ("application/x-www-form-urlencoded", "Content-Type application/x-www-form-urlencoded"),
                        ("application/octet-streams", "Content-Type application/octet-streams")):
        status, answer = _raw(server, digit, ctype)
        error = answer["error"]
        assert status == 415 and said in error and "\n" not in error, (ctype, answer)
        assert "image/*" in error and "application/octet-stream" in error and "multipart form field 'file'" in error
    serve_md = (ROOT / "docs" / "serve.md").read_text(encoding="utf-8")
    row = next(line for line in serve_md.splitlines() if line.startswith("| `415`"))
    assert "application/octet-stream" in row
    post = serve_md.split("## `POST /predict`", 1)[1].split("```", 1)[0]
    assert "application/octet-stream" in post
