"""Every command of the README runs (with short settings), and its Python section runs as written: the README
cannot drift from the tool. A command added to the README without short settings here fails this test."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from apps_helpers import draw_digit
from cnnlab.cli import main
from conftest import write_idx_dataset

pytestmark = [pytest.mark.real_data, pytest.mark.slow]  # the README's evaluate --pretrained and data fetch use MNIST

README = Path(__file__).resolve().parents[1] / "README.md"
TINY = "TINY"  # replaced by a tiny generated IDX dataset
QUICK = ["--dataset", f"idx:{TINY}", "--epochs", "1", "--device", "cpu"]
#: The extra arguments that make each README command quick (appended: argparse lets the last value win).
SHORT: dict[str, list[str]] = {
    "cnnlab predict --model resnet my_digit.png --show-input": [],
    "cnnlab predict --model resnet --number year.png": [],
    "cnnlab predict --model resnet --lines list.png": [],
    "cnnlab evaluate --pretrained resnet": [],
    "cnnlab export --pretrained resnet": ["--samples", "8"],
    "cnnlab serve": [],  # serve_forever is replaced: the test checks that the app is built and would be served
    "cnnlab models": [],
    "cnnlab train --model resnet": QUICK,
    "cnnlab train --model resnet --recipe fast --target-accuracy 99": QUICK,
    "cnnlab train --model resnet --recipe best": QUICK,
    "cnnlab train --model resnet --recipe best --teacher latest": QUICK,
    "cnnlab runs": [],
    "cnnlab runs --model resnet --status stopped": [],
    "cnnlab evaluate latest": [],
    "cnnlab evaluate latest --tta shift": [],
    "cnnlab train --resume latest": [],
    "cnnlab train --config latest --seed 1": ["--max-steps", "2"],
    "cnnlab compare --models inception resnet --seeds 3": ["--dataset", f"idx:{TINY}", "--epochs", "1", "--seeds", "1",
                                                           "--device", "cpu"],
    "cnnlab compare --models resnet --seeds 3 --recipe best --dataset fashion-mnist --teachers auto":
        ["--dataset", f"idx:{TINY}", "--epochs", "1", "--seeds", "1", "--device", "cpu"],
    "cnnlab predict latest my_digit.png": [],
    "cnnlab export latest --format onnx": ["--samples", "8"],
    "cnnlab export-weights latest": [],
    "cnnlab data fetch mnist": [],
    "cnnlab data info": [],
    "cnnlab analyze gradients": ["--depths", "2", "--seeds", "1", "--epochs", "0", "--dataset", f"idx:{TINY}",
                                 "--device", "cpu"],
    "cnnlab train --model inception --out runs/inc": QUICK,
    "cnnlab analyze branches --pretrained inception": ["--train-images", "64", "--test-images", "300", "--out",
                                                       "branches-shipped", "--device", "cpu"],
    "cnnlab analyze branches runs/inc": ["--train-images", "64", "--device", "cpu"],
    "python -m cnnlab --help": [],
}


def readme_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.S)


def readme_commands() -> list[str]:
    """The cnnlab commands of the README's shell blocks, in order (comments dropped, ``a && b`` split)."""
    commands = []
    for block in readme_blocks("sh"):
        for line in block.splitlines():
            line = line.split(" #", 1)[0].strip()
            for part in (p.strip() for p in line.split("&&")):
                if part.startswith(("cnnlab ", "python -m cnnlab")):
                    commands.append(" ".join(part.split()))
    return commands


def test_every_readme_command_has_short_settings_here():
    missing = [c for c in readme_commands() if c not in SHORT]
    assert not missing, f"README commands without short settings in tests/test_readme.py: {missing}"
    assert len(readme_commands()) >= 20


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    draw_digit().save(tmp_path / "my_digit.png")
    year = Image.new("L", (600, 300), 255)  # a number: two digits side by side
    for x in (0, 300):
        year.paste(draw_digit(), (x, 0))
    year.save(tmp_path / "year.png")
    lines = Image.new("L", (600, 600), 255)  # a list: a number on each of two lines
    lines.paste(year, (0, 0))
    lines.paste(year, (0, 300))
    lines.save(tmp_path / "list.png")
    write_idx_dataset(tmp_path / "tiny")
    served = []
    monkeypatch.setattr("cnnlab.serve.server.serve_forever", lambda app, sock: served.append(app))
    return tmp_path, served


def test_every_readme_command_runs(workdir, capsys):
    tmp_path, served = workdir
    for command in readme_commands():
        argv = [a.replace(TINY, str(tmp_path / "tiny")) for a in shlex.split(command) + SHORT[command]]
        argv = argv[3:] if argv[:3] == ["python", "-m", "cnnlab"] else argv[1:]
        if argv == ["--help"]:
            with pytest.raises(SystemExit) as exit_:
                main(argv)
            code = exit_.value.code
        else:
            code = main(argv)
        out, err = capsys.readouterr()
        assert code == 0, f"{command}: exit {code}\n{out[-2000:]}\n{err[-2000:]}"
    assert served  # `cnnlab serve` built the app for the shipped weights
    assert (tmp_path / "my_digit.input.png").is_file() and (tmp_path / "runs" / "inc" / "branches.png").is_file()
    assert (tmp_path / "branches-shipped" / "branches.png").is_file()


def test_the_readme_python_section_runs_as_written(tmp_path):
    """In a fresh interpreter: trains (one epoch of the fast recipe on MNIST), evaluates and predicts."""
    (code,) = [b for b in readme_blocks("python")]
    draw_digit().save(tmp_path / "my_digit.png")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "finished" in proc.stdout and proc.stdout.strip().splitlines()[-1].startswith("[(")
