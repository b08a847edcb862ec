"""The ``cnnlab`` console script goes through the same guarded entry as ``python -m cnnlab``."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_console_script_is_the_guarded_entry_of_python_m_cnnlab():
    """The script pip writes does ``from cnnlab.__main__ import main``: before, it imported ``cnnlab.cli`` itself, and
    a Ctrl-C in the 0.1 s that takes was Python's traceback through every module being loaded."""
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"cnnlab": "cnnlab.__main__:main"}
    installed = {e.name: e.value for e in metadata.entry_points(group="console_scripts") if e.name == "cnnlab"}
    assert installed in ({}, {"cnnlab": "cnnlab.__main__:main"}), installed  # the venv's install, if any, agrees


def test_a_ctrl_c_while_the_console_scripts_modules_load_is_one_line():
    """What the console script runs, with a KeyboardInterrupt raised as ``cnnlab.cli`` starts to load (the moment a
    Ctrl-C lands there): one line and exit 130, no traceback."""
    script = ("import builtins\n"
              "real = builtins.__import__\n"
              "def interrupting(name, *args, **kwargs):\n"
              "    if name.startswith('cnnlab.cli'):\n"
              "        raise KeyboardInterrupt\n"
              "    return real(name, *args, **kwargs)\n"
              "builtins.__import__ = interrupting\n"
              "import sys\n"
              "from cnnlab.__main__ import main\n"
              "sys.exit(main())\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 130 and proc.stderr == "cnnlab: interrupted\n", (proc.returncode, proc.stderr)


def test_the_entry_point_runs_the_command_line():
    proc = subprocess.run([sys.executable, "-c", "import sys; from cnnlab.__main__ import main; sys.exit(main())",
                           "--version"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.startswith("cnnlab "), (proc.returncode, proc.stdout, proc.stderr)
