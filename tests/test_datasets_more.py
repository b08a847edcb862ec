"""Fashion-MNIST through the verified sources, ``idx:`` with KMNIST/EMNIST names, and ``folder:``
image folders (conversion, corrupt files, splits, caching) on generated files."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnlab.data import catalog, folder, load_dataset, sources, train_statistics
from cnnlab.data.catalog import FASHION_MNIST, ROLES
from cnnlab.data.files import find_in_dir
from cnnlab.data.idx import encode_idx, read_maybe_gzip
from cnnlab.data.tensors import decode_splits
from cnnlab.data.status import dataset_status
from cnnlab.errors import DataError
from cnnlab.imageio import ALLOWED_FORMATS, FORMAT_SUFFIXES, IMAGE_SUFFIXES, suffixes_for
from apps_helpers import quiet
from conftest import write_idx_dataset

FASHION_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")


# --- Fashion-MNIST -------------------------------------------------------------------------------


@pytest.mark.real_data
@pytest.mark.parametrize("spec", list(catalog.CATALOG.values()), ids=lambda spec: spec.name)
def test_catalog_agrees_with_the_real_files(spec):
    """Each catalog entry's MD5s, sizes, class count and statistics (to the 4 digits it keeps) against a
    real copy on this machine: the system package's, else the verified cache's; skipped when neither."""
    where = [Path(d) for d in spec.system_dirs] + [sources.cache_dir(spec)]
    where = [d for d in where if d.is_dir() and all(find_in_dir(d, role) for role in ROLES)]
    if not where:
        pytest.skip(f"no copy of {spec.name} on this machine (tried {', '.join(spec.system_dirs) or 'no system dir'} "
                    f"and {sources.cache_dir(spec)})")
    files = {role: read_maybe_gzip(find_in_dir(where[0], role)) for role in ROLES}
    assert {role: hashlib.md5(data).hexdigest() for role, data in files.items()} == spec.md5
    assert {role: len(data) for role, data in files.items()} == spec.unpacked_bytes  # what downloads are capped by
    x, y, tx, ty = decode_splits(files, str(where[0]))
    assert {"train": len(y), "test": len(ty)} == spec.sizes
    assert sorted(set(y.tolist())) == sorted(set(ty.tolist())) == list(range(len(spec.classes)))
    mean, std = train_statistics(x)
    assert (round(mean, 4), round(std, 4)) == (spec.mean, spec.std)


def generated_fashion(directory: Path, gz: bool) -> catalog.DatasetSpec:
    """Write a tiny MNIST-shaped dataset to ``directory`` and return FASHION_MNIST with its checksums."""
    write_idx_dataset(directory, n_train=120, n_test=30, seed=3, gz=gz)
    md5 = {}
    for role, (base, _) in ROLES.items():
        data = (directory / (base + ".gz")).read_bytes() if gz else (directory / base).read_bytes()
        md5[role] = hashlib.md5(gzip.decompress(data) if gz else data).hexdigest()
    return dataclasses.replace(FASHION_MNIST, md5=md5, sizes={"train": 120, "test": 30},
                               system_dirs=(str(directory),), mirrors=())


def test_fashion_from_system_dir_like_debian_then_cache(tmp_path, monkeypatch):
    system = tmp_path / "usr-share-datasets-fashion-mnist"
    spec = generated_fashion(system, gz=True)  # Debian ships the official names, gzip-compressed
    monkeypatch.setitem(catalog.CATALOG, "fashion-mnist", spec)
    home = tmp_path / "home"
    messages = []
    d = load_dataset("fashion-mnist", home=home, download=False, log=messages.append)
    assert d.source == f"system package {system}"
    assert d.classes[0] == "T-shirt/top" and d.classes[-1] == "Ankle boot" and d.num_classes == 10
    assert (d.mean, d.std) == (0.2860, 0.3530)
    assert d.train_images.shape == (120, 1, 28, 28) and d.test_labels.shape == (30,)
    cached = sorted(p.name for p in (home / "datasets" / "fashion-mnist").iterdir())
    # the verified copy, its fast copy and manifest; no temp files
    assert cached == sorted([b + ".gz" for b, _ in ROLES.values()] + [b + ".npy" for b, _ in ROLES.values()]
                            + ["fast-copy.json"])
    for f in system.iterdir():
        f.unlink()
    again = load_dataset("fashion-mnist", home=home, download=False, log=quiet)
    assert again.source.startswith("cache") and torch.equal(again.train_images, d.train_images)
    rows = {r["name"]: r for r in dataset_status(home)}
    assert rows["fashion-mnist"]["status"] == "cached and verified"


def test_fashion_system_dir_with_wrong_files_is_an_error(tmp_path, monkeypatch):
    system = tmp_path / "system"
    spec = generated_fashion(system, gz=False)
    (system / "train-labels-idx1-ubyte").write_bytes(encode_idx(np.zeros(120, dtype=np.uint8)))
    monkeypatch.setitem(catalog.CATALOG, "fashion-mnist", spec)
    with pytest.raises(DataError, match=r"checksum mismatch for fashion-mnist train-labels") as err:
        load_dataset("fashion-mnist", home=tmp_path / "home", download=False, log=quiet)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "home" / "datasets" / "fashion-mnist").exists()


def test_fashion_user_dir_torchvision_layout(tmp_path, monkeypatch):
    raw = tmp_path / "data" / "FashionMNIST" / "raw"
    spec = dataclasses.replace(generated_fashion(raw, gz=True), system_dirs=())
    monkeypatch.setitem(catalog.CATALOG, "fashion-mnist", spec)
    d = load_dataset("fashion-mnist", data_dir=tmp_path / "data", home=tmp_path / "home", download=False, log=quiet)
    assert d.source == f"data dir {tmp_path / 'data'}"


def test_fashion_from_a_mirror_is_verified_and_cached(tmp_path, monkeypatch):
    src = tmp_path / "src"
    spec = dataclasses.replace(generated_fashion(src, gz=False), system_dirs=(str(tmp_path / "absent"),),
                               mirrors=("http://mirror.invalid/fashion/",))
    monkeypatch.setitem(catalog.CATALOG, "fashion-mnist", spec)
    monkeypatch.delenv("CNNLAB_MIRRORS")
    served = {"http://mirror.invalid/fashion/" + base + ".gz": gzip.compress((src / base).read_bytes())
              for base, _ in ROLES.values()}
    monkeypatch.setattr(sources, "_open", lambda url, timeout: io.BytesIO(served[url]))
    home = tmp_path / "home"
    d = load_dataset("fashion-mnist", home=home, log=quiet)
    assert d.source == "mirror http://mirror.invalid/fashion/"
    assert sorted(p.suffix for p in (home / "datasets" / "fashion-mnist").iterdir()) == [".gz"] * 4 + [".json"] + [".npy"] * 4


def test_data_info_lists_fashion_mnist(tmp_path):
    rows = {r["name"]: r for r in dataset_status(tmp_path / "home")}
    assert rows["fashion-mnist"]["status"].startswith("not cached (run: cnnlab data fetch fashion-mnist")
    assert len(rows["fashion-mnist"]["files"]) == 4


@pytest.mark.skipif(not FASHION_SYSTEM_DIR.is_dir(), reason="Debian package dataset-fashion-mnist not installed")
def test_real_fashion_mnist_from_the_debian_package(tmp_path):
    d = load_dataset("fashion-mnist", home=tmp_path / "home", download=False, log=quiet)
    assert d.source == f"system package {FASHION_SYSTEM_DIR}"
    assert d.train_images.shape == (60000, 1, 28, 28) and d.test_images.shape == (10000, 1, 28, 28)
    assert d.train_labels.bincount().tolist() == [6000] * 10 and d.test_labels.bincount().tolist() == [1000] * 10
    row = {r["name"]: r for r in dataset_status(tmp_path / "home")}["fashion-mnist"]
    assert row["status"] == "cached and verified" and row["system_copy"] == str(FASHION_SYSTEM_DIR)


# --- idx:DIR with other datasets' file names ------------------------------------------------------


def test_idx_kmnist_names(tmp_path):
    # KMNIST ships the official MNIST names, gzip-compressed
    d = load_dataset(f"idx:{write_idx_dataset(tmp_path / 'kmnist', gz=True)}")
    assert d.train_images.shape == (256, 1, 28, 28) and d.num_classes == 10
    assert (d.mean, d.std) == train_statistics(d.train_images)  # statistics of the train split


def emnist_like(directory: Path, subset: str, gz: bool = True) -> Path:
    tmp = write_idx_dataset(directory / f".gen-{subset}", n_train=50, n_test=20, seed=1)
    names = {"train-images-idx3-ubyte": "train-images-idx3-ubyte", "train-labels-idx1-ubyte": "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte": "test-images-idx3-ubyte", "t10k-labels-idx1-ubyte": "test-labels-idx1-ubyte"}
    for official, emnist in names.items():
        data = (tmp / official).read_bytes()
        target = directory / f"emnist-{subset}-{emnist}" if not gz else directory / f"emnist-{subset}-{emnist}.gz"
        target.write_bytes(gzip.compress(data) if gz else data)
        (tmp / official).unlink()
    tmp.rmdir()
    return directory


def test_idx_emnist_names_and_images_turned_upright(tmp_path):
    directory = emnist_like(tmp_path / "emnist", "digits")
    d = load_dataset(f"idx:{directory}")
    assert d.train_images.shape == (50, 1, 28, 28) and d.test_images.shape == (20, 1, 28, 28)
    assert "EMNIST" in d.source
    # the same files under the official names are used as stored: EMNIST's are their transpose
    official = tmp_path / "official"
    official.mkdir()
    for path in directory.iterdir():
        name = path.name.removeprefix("emnist-digits-").replace("test-", "t10k-")
        (official / name).write_bytes(path.read_bytes())
    as_stored = load_dataset(f"idx:{official}")
    assert "EMNIST" not in as_stored.source
    assert torch.equal(d.train_images, as_stored.train_images.transpose(2, 3))
    assert torch.equal(d.test_images, as_stored.test_images.transpose(2, 3))
    assert not torch.equal(d.train_images, as_stored.train_images)


def test_idx_several_emnist_subsets_in_one_dir_is_a_clear_error(tmp_path):
    directory = emnist_like(tmp_path / "emnist", "digits")
    emnist_like(directory, "letters")
    with pytest.raises(DataError, match="several candidates for the train images.*emnist-digits.*emnist-letters"):
        load_dataset(f"idx:{directory}")


# --- folder:DIR -----------------------------------------------------------------------------------


def _img(kind: str, value: int, size=(28, 28)):
    from PIL import Image

    arr = np.full((size[1], size[0]), value, dtype=np.uint8)
    arr[size[1] // 4: size[1] // 2, :] = 255 - value  # a band, so that the images are not flat
    if kind == "RGB":
        return Image.fromarray(np.stack([arr, arr, arr], axis=-1), mode="RGB")
    if kind == "RGBA":
        return Image.fromarray(np.stack([arr, arr, arr, np.full_like(arr, 255)], axis=-1), mode="RGBA")
    return Image.fromarray(arr, mode="L")


def make_folder(root: Path, per_class=None, split_dirs: bool = False) -> Path:
    """Three classes of small PNG/JPEG/BMP images in assorted modes and sizes."""
    per_class = per_class or {"cat": 7, "dog": 6, "eel": 12}
    splits = ("train", "test") if split_dirs else ("",)
    for split in splits:
        for c, (name, n) in enumerate(per_class.items()):
            d = root / split / name if split else root / name
            d.mkdir(parents=True, exist_ok=True)
            count = n if split != "test" else max(1, n // 3)
            for i in range(count):
                value = 20 * c + i
                j = i % 4
                if j == 0:
                    _img("L", value).save(d / f"{i:03d}.png")
                elif j == 1:
                    _img("RGB", value, (40, 30)).save(d / f"{i:03d}.jpg", quality=95)
                elif j == 2:
                    _img("RGB", value, (56, 56)).save(d / f"{i:03d}.bmp")
                else:
                    _img("RGBA", value, (30, 30)).save(d / f"{i:03d}.PNG")
    return root


def add_bad_files(class_dir: Path) -> list[str]:
    """A truncated PNG, a JPEG that is text, and a zero-byte BMP: names relative to the folder root."""
    import io

    buf = io.BytesIO()
    _img("L", 9, (64, 64)).save(buf, format="PNG")
    (class_dir / "truncated.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (class_dir / "notes.jpg").write_text("this is not a JPEG")
    (class_dir / "empty.bmp").write_bytes(b"")
    return [f"{class_dir.name}/{n}" for n in ("empty.bmp", "notes.jpg", "truncated.png")]


def test_folder_converts_splits_and_normalises_from_train(tmp_path):
    root = make_folder(tmp_path / "pics")
    (root / "README.txt").write_text("not an image")
    messages = []
    d = load_dataset(f"folder:{root}", log=messages.append)
    assert d.name == f"folder:{root.resolve()}" and d.classes == ("cat", "dog", "eel")
    assert d.train_images.dtype == torch.uint8 and d.train_images.shape[1:] == (1, 28, 28)
    assert d.train_labels.dtype == torch.int64
    # 1/6 held out per class, at least one: cat 7 -> 1, dog 6 -> 1, eel 12 -> 2
    assert d.test_labels.bincount().tolist() == [1, 1, 2] and d.train_labels.bincount().tolist() == [6, 5, 10]
    assert (d.mean, d.std) == train_statistics(d.train_images)
    assert any("ignored 1 file" in m for m in messages) and not any("warning" in m for m in messages)
    # a 28x28 grayscale PNG is taken pixel for pixel
    from PIL import Image

    first = np.asarray(Image.open(root / "cat" / "000.png"))
    all_images = torch.cat([d.train_images, d.test_images])[:, 0].numpy()
    assert any(np.array_equal(first, im) for im in all_images)


def test_folder_takes_only_the_suffixes_of_the_formats_it_decodes(tmp_path):
    root = make_folder(tmp_path / "pics", per_class={"a": 6, "b": 6})
    _img("RGB", 50).save(root / "a" / "upper.JPEG")  # a decoded format, suffix in any case: taken
    _img("L", 60).save(root / "a" / "anim.gif")  # predict accepts GIF, folder datasets do not: ignored, not "unreadable"
    messages = []
    d = load_dataset(f"folder:{root}", log=messages.append)
    assert len(d.train_labels) + len(d.test_labels) == 6 + 6 + 1
    assert any("ignored 1 file" in m for m in messages) and not any(m.startswith("warning") for m in messages)


def test_image_suffixes_come_from_one_table_that_agrees_with_pillow():
    from PIL import Image

    Image.init()
    registered = Image.registered_extensions()  # suffix -> Pillow format, all plugins loaded
    for fmt, suffixes in FORMAT_SUFFIXES.items():
        assert {s: registered.get(s) for s in suffixes} == {s: fmt for s in suffixes}
    assert IMAGE_SUFFIXES == suffixes_for(ALLOWED_FORMATS) == (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
    assert folder.FOLDER_SUFFIXES == suffixes_for(folder.PIL_FORMATS) == (".png", ".jpg", ".jpeg", ".bmp")


def test_folder_split_is_deterministic(tmp_path):
    root = make_folder(tmp_path / "pics")
    a = load_dataset(f"folder:{root}", home=tmp_path / "h1", log=quiet)
    b = load_dataset(f"folder:{root}", home=tmp_path / "h2", log=quiet)
    assert torch.equal(a.test_images, b.test_images) and torch.equal(a.train_labels, b.train_labels)


def test_folder_with_train_and_test_subfolders(tmp_path):
    root = make_folder(tmp_path / "pics", split_dirs=True)
    d = load_dataset(f"folder:{root}", log=quiet)
    assert d.classes == ("cat", "dog", "eel")
    assert d.train_labels.bincount().tolist() == [7, 6, 12] and d.test_labels.bincount().tolist() == [2, 2, 4]


def test_folder_test_class_missing_from_train_is_an_error(tmp_path):
    root = make_folder(tmp_path / "pics", split_dirs=True)
    (root / "test" / "fox").mkdir()
    _img("L", 1).save(root / "test" / "fox" / "a.png")
    with pytest.raises(DataError, match="test/ has class folders that train/ lacks \\(fox\\)"):
        load_dataset(f"folder:{root}", log=quiet)


def test_folder_corrupt_and_empty_files_are_listed_once_and_skipped(tmp_path):
    root = make_folder(tmp_path / "pics")
    bad = add_bad_files(root / "dog")
    messages = []
    d = load_dataset(f"folder:{root}", log=messages.append)
    warnings = [m for m in messages if m.startswith("warning")]
    assert len(warnings) == 1
    assert "skipped 3 unreadable image file(s)" in warnings[0]
    for rel in bad:
        assert rel in warnings[0]
    assert len(d.train_labels) + len(d.test_labels) == 7 + 6 + 12  # only the good images
    # the cached conversion repeats the warning: skipped files are never silent
    messages.clear()
    load_dataset(f"folder:{root}", log=messages.append)
    assert sum("skipped 3 unreadable" in m for m in messages) == 1


def test_folder_never_loads_truncated_images(tmp_path, monkeypatch):
    from PIL import ImageFile

    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)  # as some other library might leave it
    root = make_folder(tmp_path / "pics", per_class={"a": 3, "b": 3})
    add_bad_files(root / "a")
    messages = []
    load_dataset(f"folder:{root}", log=messages.append)
    assert any("a/truncated.png" in m for m in messages if m.startswith("warning"))
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # the caller's setting is restored


def test_folder_second_load_uses_the_cache(tmp_path, monkeypatch):
    root = make_folder(tmp_path / "pics")
    home = tmp_path / "home"
    first = load_dataset(f"folder:{root}", home=home, log=quiet)
    assert "converted now" in first.source
    caches = list((home / "datasets").glob("folder-*"))
    assert len(caches) == 1 and [p.name for p in caches[0].iterdir()] == ["images.npz"]  # no temp files

    calls = []
    real_convert = folder.convert_image
    monkeypatch.setattr(folder, "convert_image", lambda path: calls.append(path) or real_convert(path))
    second = load_dataset(f"folder:{root}", home=home, log=quiet)
    assert calls == [] and "converted earlier" in second.source  # nothing reconverted
    for name in ("train_images", "train_labels", "test_images", "test_labels"):
        assert torch.equal(getattr(first, name), getattr(second, name))
    assert second.classes == first.classes and (second.mean, second.std) == (first.mean, first.std)
    row = [r for r in dataset_status(home) if r["name"].startswith("folder:")]
    assert row and row[0]["name"] == f"folder:{root.resolve()}" and row[0]["status"] == "converted and cached"
    # a changed folder is converted again, and the stale conversion is deleted; another folder's stays
    (stale,) = caches
    other = make_folder(tmp_path / "other", per_class={"a": 3, "b": 3})
    load_dataset(f"folder:{other}", home=home, log=quiet)
    calls.clear()
    _img("L", 3).save(root / "cat" / "new.png")
    messages = []
    third = load_dataset(f"folder:{root}", home=home, log=messages.append)
    assert len(calls) == 7 + 6 + 12 + 1 and "converted now" in third.source
    assert not stale.exists() and len(list((home / "datasets").glob("folder-*"))) == 2
    assert any("removed the cache of its earlier contents" in m for m in messages)
    assert "converted earlier" in load_dataset(f"folder:{other}", home=home, log=quiet).source


def test_folder_damaged_cache_is_converted_again(tmp_path):
    root = make_folder(tmp_path / "pics", per_class={"a": 3, "b": 3})
    home = tmp_path / "home"
    first = load_dataset(f"folder:{root}", home=home, log=quiet)
    (cache,) = (home / "datasets").glob("folder-*/images.npz")
    cache.write_bytes(cache.read_bytes()[:100])
    messages = []
    again = load_dataset(f"folder:{root}", home=home, log=messages.append)
    assert any("is damaged" in m for m in messages) and "converted now" in again.source
    assert torch.equal(first.train_images, again.train_images)


@pytest.mark.parametrize("setup,fragment", [
    (lambda r: None, "no class subfolders"),
    (lambda r: (r / "only.txt").write_text("x"), "no class subfolders"),
    (lambda r: (make_folder(r, per_class={"a": 3}), (r / "zebra").mkdir()), "class folder zebra has no PNG, JPEG or BMP"),
    (lambda r: ((r / "a").mkdir(), (r / "a" / "x.txt").write_text("x")), "class folder a has no PNG, JPEG or BMP"),
    (lambda r: (make_folder(r, per_class={"a": 3}), (r / "b").mkdir(), (r / "b" / "z.png").write_bytes(b"")),
     "no readable image in class folder\\(s\\) b"),
    (lambda r: make_folder(r, per_class={"a": 1, "b": 1}), "the test split has no readable images"),
    (lambda r: make_folder(r, per_class={"cat": 6}), "one class folder \\(cat\\); a classifier needs at least two"),
    (lambda r: make_folder(r, per_class={"cat": 6}, split_dirs=True), "one class folder \\(cat\\)"),
])
def test_folder_errors_are_one_line(tmp_path, setup, fragment):
    root = tmp_path / "pics"
    root.mkdir()
    setup(root)
    with pytest.raises(DataError, match=fragment) as err:
        load_dataset(f"folder:{root}", log=quiet)
    assert "\n" not in str(err.value) and str(root) in str(err.value)


def test_folder_missing_directory(tmp_path):
    with pytest.raises(DataError, match="no such directory; pass folder:DIR"):
        load_dataset(f"folder:{tmp_path / 'nope'}", log=quiet)


def test_unknown_dataset_names_the_prefixes():
    with pytest.raises(DataError, match="fashion-mnist, mnist, idx:DIR or folder:DIR"):
        load_dataset("cifar")


def test_cli_fetch_folder_and_info(tmp_path, capsys):
    from cnnlab.cli import main

    root = make_folder(tmp_path / "pics", per_class={"a": 6, "b": 6})
    assert main(["data", "fetch", f"folder:{root}"]) == 0
    out = capsys.readouterr().out
    assert f"folder:{root.resolve()}: 10 train and 2 test images" in out
    assert main(["data", "info"]) == 0
    out = capsys.readouterr().out
    assert "fashion-mnist: " in out and f"folder:{root.resolve()}: converted and cached" in out
    assert os.environ["CNNLAB_HOME"] in out
