"""Every test the docs cite exists. docs/reliability.md names, for each fault, the tests that hold it; a test
renamed or replaced left its citation pointing at nothing (`tests/test_serve.py::test_busy_server_answers_503`,
replaced by a test of test_serve_load.py, was still cited: a tester's script found it among the doc's citations)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]
#: A citation, in the order a cell writes them: ``tests/test_x.py`` or ``tests/test_x.py::test_name`` (its
#: parameters after it, ``[...]``, are not part of the name); ``::test_name``, a test of the file named last in the
#: cell; a bare ``test_name`` in backquotes (a test column's, whose file the section's text names).
CITATION = re.compile(r"(tests/[\w/]+\.py)(?:::(\w+))?|`::(\w+)|`(test_\w+)[`\[]")


def defined_tests() -> dict[str, set[str]]:
    """``tests/FILE.py`` -> the functions and classes defined in it."""
    found = {}
    for path in (ROOT / "tests").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        found[path.relative_to(ROOT).as_posix()] = {
            node.name for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
    return found


def dangling(text: str, tests: dict[str, set[str]]) -> list[str]:
    """The citations in ``text`` (a doc) that name a file or a test that does not exist, as ``line N: citation``.
    A bare test name counts only in the last cell of a table row (the column of tests: elsewhere ``test_acc`` is a
    field), where it may be in any test file."""
    anywhere = set().union(*tests.values())
    wrong = []
    for number, line in enumerate(text.splitlines(), 1):
        cells = line.strip().strip("|").split(" | ") if line.startswith("|") else [line]
        for index, cell in enumerate(cells):
            current = None
            for match in CITATION.finditer(cell):
                path, name, of_current, bare = match.groups()
                if path is not None:
                    current = path
                    ok = path in tests and (name is None or name in tests[path])
                    cited = path + (f"::{name}" if name else "")
                elif of_current is not None:
                    ok, cited = current in tests and of_current in tests[current], f"{current}::{of_current}"
                elif line.startswith("|") and index == len(cells) - 1:
                    ok, cited = bare in anywhere, bare
                else:
                    continue
                if not ok:
                    wrong.append(f"line {number}: {cited}")
    return wrong


def test_a_cited_test_that_does_not_exist_is_found():
    tests = {"tests/test_a.py": {"test_one", "test_two"}}
    assert dangling("| x | y | `tests/test_a.py::test_one`, `::test_two`, `test_two[3]` |", tests) == []
    row = "| x | `test_acc` | `tests/test_a.py::test_one`, `::test_gone`, `tests/test_b.py`, `test_old` |"
    assert dangling(row, tests) == ["line 1: tests/test_a.py::test_gone", "line 1: tests/test_b.py",
                                    "line 1: test_old"]
    assert dangling("since then (tests/test_a.py::test_three)", tests) == ["line 1: tests/test_a.py::test_three"]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_test_the_docs_cite_exists(doc):
    assert dangling(doc.read_text(encoding="utf-8"), defined_tests()) == []
