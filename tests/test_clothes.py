"""A Fashion-MNIST net's images are clothes, prepared as that dataset's were (``preprocessing.clothes_field``), not
as digits: the shipped Fashion-MNIST nets refused 6% of the test set's images saved as 28x28 PNG files ("the ink is
one dot or blob") and read 61% of them right (93% as arrays); as product photos (the item dark on white), 67%.
``python -m benchmarks.clothes_photos`` measures it on the real test images; these tests hold the mechanism."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

import cnnlab
from cnnlab.cli import main
from cnnlab.errors import CnnlabError
from cnnlab.predict import BadImageError
from cnnlab.preprocessing import clothes_field


def trousers(side: int = 28) -> np.ndarray:
    """A light pair of trousers on black, as a Fashion-MNIST field holds one: two legs filling the frame's height."""
    img = Image.new("L", (side, side), 0)
    d = ImageDraw.Draw(img)
    s = side / 28
    d.rectangle([9 * s, 0, 18 * s, 4 * s], fill=200)
    d.polygon([(9 * s, 4 * s), (13 * s, 4 * s), (12 * s, 27 * s), (8 * s, 27 * s)], fill=200)
    d.polygon([(14 * s, 4 * s), (18 * s, 4 * s), (19 * s, 27 * s), (15 * s, 27 * s)], fill=200)
    return np.asarray(img)


def as_photo(field: np.ndarray, grey: float = 1.0, noise: float = 0.0) -> bytes:
    """The item dark on a lighter page with a margin, enlarged 8x, as a product photo; PNG bytes."""
    big = Image.fromarray(255 - field).resize((224, 224), Image.Resampling.BICUBIC)
    page = Image.new("L", (304, 344), 255)
    page.paste(big, (40, 60))
    g = np.asarray(page, np.float32) / 255 * grey + np.random.default_rng(0).normal(0, noise, page.size[::-1])
    buf = io.BytesIO()
    Image.fromarray(np.clip(g * 255, 0, 255).astype(np.uint8)).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def fashion():
    return cnnlab.predictor(model="resnet", dataset="fashion-mnist")


def test_a_photo_of_an_item_becomes_the_field_it_came_from():
    field = trousers()
    for photo in (as_photo(field), as_photo(field, grey=0.85, noise=0.03)):
        got = clothes_field(Image.open(io.BytesIO(photo)))
        assert got.shape == (28, 28) and got[:, :5].max() < 0.1 and got[:, -5:].max() < 0.1  # light on black
        assert got[0].max() > 0.5 and got[-1].max() > 0.5  # trimmed: the item's longer side fills the field
        assert np.corrcoef(got.ravel(), field.ravel() / 255)[0, 1] > 0.95
    with pytest.raises(BadImageError, match="no item found"):
        clothes_field(Image.new("L", (100, 100), 255))


def test_a_fashion_net_reads_a_file_as_it_reads_the_array(fashion, tmp_path, capsys):
    field = trousers()
    Image.fromarray(field).save(tmp_path / "trousers.png")
    (tmp_path / "photo.png").write_bytes(as_photo(field))
    array = fashion(field)
    for source in (tmp_path / "trousers.png", (tmp_path / "trousers.png").read_bytes()):
        assert fashion(source).probabilities == pytest.approx(array.probabilities, abs=1e-6)
    assert fashion(tmp_path / "photo.png").label == array.label == "Trouser"
    assert main(["predict", "--model", "resnet", "--dataset", "fashion-mnist", str(tmp_path / "photo.png")]) == 0
    assert capsys.readouterr().out.split()[1] == "Trouser"
    with pytest.raises(CnnlabError, match="Fashion-MNIST reads one piece of clothing"):
        fashion.read_number(field)


def test_a_digit_net_takes_a_28x28_field_file_as_its_array():
    """A white-on-black 28x28 PNG (an MNIST field saved as a file) was preprocessed as a photo of a digit (found,
    boxed, moved by its mass); as an array it was taken as it is. Now both are taken as they are."""
    digits = cnnlab.predictor(model="resnet")
    field = np.zeros((28, 28), np.uint8)
    field[5:23, 12:16] = 255
    field[5:9, 9:13] = 200  # a one's flag: off-centre mass
    buf = io.BytesIO()
    Image.fromarray(field).save(buf, "PNG")
    assert digits(buf.getvalue()).probabilities == pytest.approx(digits(field).probabilities, abs=1e-6)
    assert digits(buf.getvalue()).input_image == pytest.approx(field / 255, abs=1e-6)
