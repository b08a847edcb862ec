"""The docs say what the code does: docs/api.md's signatures are the real ones (keyword-only arguments included),
every name ``import cnnlab`` offers has a docstring of its own, each command's help names only the modes it has,
and the lists of models and of a run folder's files leave none out."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import re
from pathlib import Path

import pytest

import cnnlab
from cnnlab.cli import build_parser
from cnnlab.models import list_models
from cnnlab.runs import LOCK_FILE, RUN_FILES

ROOT = Path(__file__).resolve().parents[1]
API_DOC = ROOT / "docs" / "api.md"
SPAN = re.compile(r"`([^`]+)`")
#: In a reference row, a method named without its class belongs to what that row's name returns or is.
ROW_OWNERS = {"cnnlab.load_run": "Run", "cnnlab.Predictor": "Predictor", "cnnlab.TrainConfig": "TrainConfig"}


def _reference_rows() -> list[tuple[str, str]]:
    """(first cell, whole row) of each row of api.md's Reference table."""
    text = API_DOC.read_text()
    section = text.split("## Reference", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    assert rows, "docs/api.md has no Reference table"
    return [(SPAN.search(row.split("|")[1]).group(1).split("(")[0], row) for row in rows]


def _shown(value) -> str:
    return f'"{value}"' if isinstance(value, str) else repr(value)


def _real_signature(obj) -> str:
    """``obj``'s parameters written as the docs write them: no annotations, ``*`` before the keyword-only ones,
    string defaults in double quotes; ``self``/``cls`` left out."""
    parts, star = [], False
    for prm in inspect.signature(obj).parameters.values():
        if prm.name in ("self", "cls"):
            continue
        if prm.kind is prm.VAR_POSITIONAL:
            parts.append(f"*{prm.name}")
            star = True
        elif prm.kind is prm.VAR_KEYWORD:
            parts.append(f"**{prm.name}")
        else:
            if prm.kind is prm.KEYWORD_ONLY and not star:
                parts.append("*")
                star = True
            parts.append(prm.name if prm.default is prm.empty else f"{prm.name}={_shown(prm.default)}")
    return ", ".join(parts)


def _is_signature(params: str) -> bool:
    """``name, *, a=1, **kw`` is a signature; ``"resnet", True`` (values, not names) is a call."""
    items = [p.strip() for p in params.split(",")] if params.strip() else []
    return all(re.fullmatch(r"\*|\*{1,2}[A-Za-z_]\w*|[A-Za-z_]\w*(=.+)?", item) for item in items)


def _resolve(name: str, owner: str | None):
    """The object a span's name means, or None where it names nothing of cnnlab's API."""
    head, _, rest = name.partition(".")
    if head == "cnnlab":
        return getattr(cnnlab, rest, None) if rest in cnnlab.__all__ else None
    if head in ("Run", "Predictor", "TrainConfig") and rest:
        return getattr(getattr(cnnlab, head), rest, None)
    if not rest and owner is not None:
        return getattr(getattr(cnnlab, owner), name, None)
    return None


def _shown_signatures() -> list[tuple[str, str, object]]:
    found = []
    for first, row in _reference_rows():
        for span in SPAN.findall(row):
            match = re.fullmatch(r"([A-Za-z_][\w.]*)\((.*)\)", span.strip())
            if not match or not _is_signature(match.group(2)):
                continue
            obj = _resolve(match.group(1), ROW_OWNERS.get(first))
            if obj is not None and callable(obj):
                found.append((span, match.group(2), obj))
    return found


def test_every_signature_in_the_api_reference_is_the_real_one():
    shown = _shown_signatures()
    names = {span.split("(")[0] for span, _, _ in shown}
    # the parser found what the table shows (not silently nothing)
    assert {"cnnlab.create_model", "cnnlab.train", "cnnlab.load_run", "cnnlab.list_runs", "cnnlab.predictor",
            "cnnlab.pretrained_weights", "model", "predictor", "evaluate", "checkpoint"} <= names, names
    wrong = [f"{span}: the code's is ({_real_signature(obj)})" for span, params, obj in shown
             if re.sub(r"\s+", " ", params.strip()) != _real_signature(obj)]
    assert not wrong, "docs/api.md shows signatures that are not the code's:\n" + "\n".join(wrong)


def _calls_in_doc() -> list[str]:
    text = API_DOC.read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    return blocks + [span for span in SPAN.findall(prose) if span.startswith("cnnlab.") and "(" in span]


def test_every_cnnlab_call_written_in_the_api_doc_binds_to_the_real_signature():
    """``cnnlab.create_model("resnet", True)`` written in the docs would be a TypeError for whoever copies it."""
    checked, wrong = 0, []
    for code in _calls_in_doc():
        try:
            tree = ast.parse(code)
        except SyntaxError:  # a signature (``name, *, pretrained=False``), not a call
            continue
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "cnnlab"
                    and node.func.attr in cnnlab.__all__):
                continue
            if any(isinstance(a, ast.Starred) for a in node.args) or any(k.arg is None for k in node.keywords):
                continue  # *args / **mapping: what they hold is not written
            target = getattr(cnnlab, node.func.attr)
            try:
                inspect.signature(target).bind(*node.args, **{k.arg: k.value for k in node.keywords})
            except TypeError as err:
                wrong.append(f"{ast.unparse(node)}: {err}")
            checked += 1
    assert checked >= 5
    assert not wrong, "\n".join(wrong)


def _own_doc(obj) -> str | None:
    if inspect.isclass(obj):
        doc = vars(obj).get("__doc__")
        if dataclasses.is_dataclass(obj) and doc and doc.startswith(f"{obj.__name__}("):
            return None  # the signature dataclass writes where the class has no docstring
        return doc
    return getattr(obj, "__doc__", None)


def _public_methods(cls) -> list[tuple[str, object]]:
    out = []
    for name, value in vars(cls).items():
        if name.startswith("_"):
            continue
        if isinstance(value, (classmethod, staticmethod)):
            out.append((name, value.__func__))
        elif isinstance(value, property):
            out.append((name, value.fget))
        elif inspect.isfunction(value):
            out.append((name, value))
    return out


def _returned_classes() -> dict[str, type]:
    """What the API's functions return, and what the public methods and properties of those return in turn (by the
    names in their return annotations), torch's own types left out: ``Run``, ``TrainResult``, ``Prediction``..."""
    from cnnlab.api import Run
    from cnnlab.engine import TrainResult
    from cnnlab.evaluation import EvalResult
    from cnnlab.predict import Failure, NumberPrediction, Prediction, Predictor
    from cnnlab.preprocessing import NumberFields

    known = {cls.__name__: cls for cls in (Run, TrainResult, EvalResult, Predictor, Prediction, NumberPrediction,
                                           NumberFields, Failure, cnnlab.TrainConfig)}
    functions = [getattr(cnnlab, name) for name in cnnlab.__all__ if inspect.isfunction(getattr(cnnlab, name))]
    functions += [fn for cls in known.values() for _, fn in _public_methods(cls)]
    named = set()
    for fn in functions:
        returned = inspect.signature(fn).return_annotation
        named |= set(re.findall(r"\b[A-Z]\w+", returned if isinstance(returned, str) else ""))
    unknown = named - set(known) - {"None", "Module", "Tensor"}  # torch's nn.Module and Tensor
    assert not unknown, f"returned by the API, not checked here: {sorted(unknown)}"
    return known


def test_every_public_name_and_method_has_a_docstring_of_its_own():
    """Also what the API returns (a tester, apiA: ``Prediction.label``, ``Prediction.to_dict`` and
    ``NumberPrediction.to_dict`` had none, nor ``TrainResult`` and ``EvalResult``), and its properties."""
    missing = []
    objects = {f"cnnlab.{name}": getattr(cnnlab, name) for name in cnnlab.__all__}
    objects.update({f"{cls.__module__}.{name}": cls for name, cls in _returned_classes().items()})
    for name, obj in objects.items():
        if not (_own_doc(obj) or "").strip():
            missing.append(name)
        if inspect.isclass(obj):
            missing += [f"{name}.{method}" for method, fn in _public_methods(obj) if not (fn.__doc__ or "").strip()]
    assert not missing, f"no docstring: {missing}"


def test_trainconfig_help_explains_from_file_and_the_recipe_fields():
    doc = _own_doc(cnnlab.TrainConfig)
    assert doc and "from_file" in doc and "None" in doc and "recipe" in doc


def _commands(parser: argparse.ArgumentParser, path: str = "cnnlab"):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield f"{path} {name}", sub
                yield from _commands(sub, f"{path} {name}")


def test_each_commands_help_names_only_modes_it_has():
    """``export-weights --help`` said --checkpoint is refused with "the shipped weights": it has no --pretrained."""
    wrong = []
    for path, parser in _commands(build_parser()):
        options = {s for action in parser._actions for s in action.option_strings}
        for action in parser._actions:
            text = action.help or ""
            if ("shipped weights" in text or "--pretrained" in text) and "--pretrained" not in options:
                wrong.append(f"{path} {'/'.join(action.option_strings) or action.dest}: {text[:120]}")
    assert not wrong, "help naming a --pretrained mode the command lacks:\n" + "\n".join(wrong)


def test_export_weights_help_for_checkpoint():
    parser = dict(_commands(build_parser()))["cnnlab export-weights"]
    text = " ".join(parser.format_help().split())
    # export-weights has --pretrained since expX (s43): its --checkpoint is refused with the shipped weights, as export's
    assert "with a .pt file (other than last.pt for last, best.pt for best) or the shipped weights it is refused" in text


def test_api_doc_names_every_other_registered_model():
    text = API_DOC.read_text()
    line = " ".join(text.split("Other registered models", 1)[1].split("are cnnlab's own", 1)[0].split())
    missing = [m for m in list_models() if m not in ("resnet", "inception") and f"`{m}`" not in line]
    assert not missing, (f"docs/api.md's 'Other registered models' leaves out {missing}: name a new model there "
                         "(docs/architecture.md, 'A new model')")


def test_architecture_models_row_names_every_file_of_models():
    text = (ROOT / "docs" / "architecture.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| `models/` |"))
    files = sorted(p.name for p in (ROOT / "src" / "cnnlab" / "models").glob("*.py") if p.name != "__init__.py")
    missing = [name for name in files if f"`{name}`" not in row]
    assert not missing, (f"docs/architecture.md's models/ row does not name {missing}: name a new model's file there, "
                         "with the net it holds")


@pytest.mark.parametrize("name", sorted(RUN_FILES | {LOCK_FILE}))
def test_readme_where_results_go_lists_every_file_a_run_folder_holds(name):
    """runs.RUN_FILES: what train, evaluate, export, export-weights and analyze branches write into a run folder."""
    text = (ROOT / "README.md").read_text()
    section = text.split("### Where results go", 1)[1].split("\n### ", 1)[0]
    spans = {span.rstrip("/") for span in SPAN.findall(section)}
    assert name in spans, f"README's 'Where results go' does not list {name}"
