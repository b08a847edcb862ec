"""What a release carries: the sdist is the whole source a build and ``make test`` need (found missing: the test
suite without its conftest, helpers and fixtures, no docs, no Makefile), the licence text travels in both, and
the metadata's floors are ones that build and install."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path]:
    """(sdist, wheel) built from the files git tracks (a copy: the build writes its egg-info beside them)."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs the git checkout")
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    src = tmp_path_factory.mktemp("src")
    for name in filter(None, tracked.decode().split("\0")):
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    out = tmp_path_factory.mktemp("dist")
    built = []
    for kind in ("sdist", "wheel"):  # one process each: a wheel built after an sdist in one process went missing
        code = f"import sys; from setuptools import build_meta as b; print('BUILT', b.build_{kind}(sys.argv[1]))"
        said = subprocess.run([sys.executable, "-c", code, str(out)], cwd=src, capture_output=True, text=True,
                              check=True).stdout  # setuptools logs on stdout too
        built.append(out / said[said.rindex("BUILT"):].split()[1])
    return built[0], built[1]


def test_the_sdist_carries_the_suite_with_its_support_the_docs_and_the_licence(built):
    with tarfile.open(built[0]) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    for needed in ("LICENSE", "Makefile", "README.md", "pyproject.toml", ".ci/run", "tests/conftest.py",
                   "tests/apps_helpers.py", "tests/fault_worker.py", "tests/dist_worker.py", "docs/api.md",
                   "docs/architecture.md", "benchmarks/run.py", "src/cnnlab/weights/manifest.json"):
        assert needed in names, needed
    assert any(n.startswith("tests/fixtures/") for n in names)
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)


def test_the_wheel_carries_the_licence_and_states_floors_that_hold(built):
    with zipfile.ZipFile(built[1]) as whl:
        names = whl.namelist()
        meta = whl.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert "License-Expression: MIT" in meta and "License-File: LICENSE" in meta
    assert not any(n.startswith(("tests/", "benchmarks/", "docs/")) for n in names)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    # the license expression needs setuptools 77; numpy 2.4 and pillow 13 (pinned) need Python 3.11
    assert project["build-system"]["requires"] == ["setuptools>=77"]
    assert project["project"]["requires-python"] == ">=3.11"
    assert sys.version_info >= (3, 11)
