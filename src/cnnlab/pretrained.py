"""Pretrained weights shipped in the package: both lecture nets on MNIST and on Fashion-MNIST.

Each entry of ``weights/manifest.json`` describes one safetensors file like torchvision's weights ``meta``:
the model and dataset, the recipe, seed and command that trained it (``make weights`` reproduces them
bitwise on the same kind of CPU), its test accuracy as ``cnnlab evaluate --pretrained`` measures it, its
SHA-256, the cnnlab and torch versions. Files are verified against the manifest before they are used.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path

from cnnlab.checkpoint import load_weights_file
from cnnlab.errors import CheckpointError, CnnlabError, did_you_mean, short_repr
from cnnlab.fileio import lies_in, sha256_file

WEIGHTS_DIR = Path(__file__).with_name("weights")
MANIFEST = "manifest.json"
#: What a manifest row's value may be, by the type :class:`Pretrained` declares for it (its annotations are strings).
_FIELD_TYPES = {"str": (str,), "int": (int,), "float": (int, float), "dict": (dict,)}


@dataclass
class Pretrained:
    """One shipped set of weights and how it was made."""

    model: str
    dataset: str
    file: str
    sha256: str
    test_accuracy: float
    test_loss: float
    recipe: str
    seed: int
    command: str
    cnnlab_version: str
    torch_version: str
    parameters: int
    train_seconds: float = 0.0
    config: dict = field(default_factory=dict, repr=False)
    machine: str = ""
    #: torch's CPU kernel family on the machine that trained it (``torch.backends.cpu.get_cpu_capability()``:
    #: ``AVX2``, ``AVX512``, ...): fp32 training reproduces the same tensors only on the same kind of CPU, and
    #: another family is the commonest reason it does not (docs/accuracy.md, "The shipped weights")
    cpu_kernels: str = ""

    def __post_init__(self) -> None:
        """Each field of the type declared above (an int where a float is, not a bool): a manifest row of another
        type (``"test_accuracy": "99.64"``, ``"config": null``) is a ``TypeError``, said as a damaged manifest."""
        for f in fields(self):
            value, kinds = getattr(self, f.name), _FIELD_TYPES[f.type]
            if isinstance(value, bool) or not isinstance(value, kinds):
                raise TypeError(f"{f.name} is {type(value).__name__}, not {f.type}")

    @property
    def name(self) -> str:
        return f"{self.model}-{self.dataset}"

    @property
    def path(self) -> Path:
        return weights_dir() / self.file


def weights_dir() -> Path:
    return WEIGHTS_DIR


def refuse_shipped(target: str | Path, flag: str = "--out") -> None:
    """A file to be written (an export's; ``flag``: what named it) in the shipped weights' folder, or below it, resolved
    as the file system will (links, ``..``): refused in one line. Its files are the weights every ``--pretrained``
    loads and the manifest they are checked against: one written over (``export-weights --pretrained resnet --dataset
    fashion-mnist --out .../weights/resnet-mnist.safetensors``, ``export --out .../weights/manifest.json``) broke every
    --pretrained, and ``cnnlab models``, until cnnlab was reinstalled."""
    top = Path(os.path.realpath(weights_dir()))
    if lies_in(Path(target).parent, top):  # the folder the file goes in: a link named there is written there
        raise CheckpointError(f"{flag} {target} is in cnnlab's shipped weights folder ({top}), whose files every "
                              "--pretrained reads: writing there would damage the install; give an --out elsewhere")


def pretrained_entries() -> list[Pretrained]:
    """Every shipped set of weights (empty when the install has none)."""
    path = weights_dir() / MANIFEST
    if not path.is_file():
        return []
    try:
        rows = json.loads(path.read_text())["weights"]
        return [Pretrained(**row) for row in rows]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{path}: the pretrained-weights manifest is damaged ({type(err).__name__}); "
                              "reinstall cnnlab") from None


def find_pretrained(model: str, dataset: str = "mnist") -> Pretrained:
    """The manifest's entry of ``model`` on ``dataset``; one line naming those there are otherwise. A name that is no
    str (the API's ``model=Path("resnet")``) is said as such: its text matched, and the refusal offered the weights
    asked for ("no pretrained weights for resnet on mnist (did you mean 'resnet on mnist'?)")."""
    entries = pretrained_entries()
    for key, value in (("model", model), ("dataset", dataset)):
        if not isinstance(value, str):
            names = ", ".join(dict.fromkeys(getattr(e, key) for e in entries))
            raise CnnlabError(f"{key} must be a str (a {key} name{': ' + names if names else ''}), got "
                              f"{short_repr(value)}")
    for entry in entries:
        if entry.model == model and entry.dataset == dataset:
            return entry
    have = ", ".join(f"{e.model} on {e.dataset}" for e in entries) or "none in this install"
    hint = did_you_mean(f"{model} on {dataset}", [f"{e.model} on {e.dataset}" for e in entries])
    raise CheckpointError(f"no pretrained weights for {model} on {dataset}{hint}; there are: {have} "
                          "(or train your own: cnnlab train --model NAME --dataset DATA)")


def load_pretrained(model: str, dataset: str = "mnist") -> dict:
    """The shipped weights as a checkpoint-like dict (model, data, state_dict, config, pretrained),
    verified against the manifest's SHA-256."""
    entry = find_pretrained(model, dataset)
    if not entry.path.is_file():
        raise CheckpointError(f"{entry.path}: listed in the manifest but missing; reinstall cnnlab")
    got = sha256_file(entry.path)
    if got != entry.sha256:
        raise CheckpointError(f"{entry.path}: SHA-256 {got[:12]}... does not match the manifest "
                              f"({entry.sha256[:12]}...); the install is damaged: reinstall cnnlab")
    state = load_weights_file(entry.path)
    state["config"] = {**entry.config, "dataset": entry.dataset}
    state["pretrained"] = entry
    return state
