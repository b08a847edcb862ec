"""``make weights``: train the shipped pretrained weights and write their manifest.

    python -m cnnlab.pretrained_build                 # all four: resnet and inception, MNIST and Fashion-MNIST
    python -m cnnlab.pretrained_build --check         # retrain and compare with the committed files, bit for bit
    python -m cnnlab.pretrained_build --only resnet-mnist
    python -m cnnlab.pretrained_build --keep-runs     # keep the training runs where compare reuses them

With ``--keep-runs`` each training run is kept as ``runs/compare-<dataset>-best/<model>-seed0-<config hash>``,
the folder that ``cnnlab compare --recipe best --dataset <dataset>`` trains seed 0 into: such a compare
reuses it (and a build after a compare reuses compare's finished seed-0 run instead of training it again).

Each set is ``cnnlab train --model M --dataset D --recipe best --seed 0 --threads 2`` (fp32, CPU): the same
command on the same kind of CPU reproduces the same tensors, bit for bit. The accuracy in the manifest is measured on the
exported file itself, the way ``cnnlab evaluate --pretrained`` measures it.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

import torch

from cnnlab import __version__
from cnnlab.checkpoint import load_weights_file, model_from_checkpoint
from cnnlab.compare import default_out, finished_run, run_folder
from cnnlab.config import TrainConfig
from cnnlab.data import load_dataset
from cnnlab.engine import train
from cnnlab.evaluation import Subject, evaluate_subject, open_subject
from cnnlab.export import export_safetensors
from cnnlab.fileio import atomic_write_bytes, atomic_write_json, sha256_file
from cnnlab.models import count_parameters
from cnnlab.pretrained import MANIFEST, Pretrained, weights_dir

SETS = (("resnet", "mnist"), ("inception", "mnist"), ("resnet", "fashion-mnist"), ("inception", "fashion-mnist"))
RECIPE, SEED, THREADS = "best", 0, 2


def command(model: str, dataset: str) -> str:
    return f"cnnlab train --model {model} --dataset {dataset} --recipe {RECIPE} --seed {SEED} --threads {THREADS}"


def build_one(model: str, dataset: str, work: Path, keep_run: bool = False, log=print) -> tuple[bytes, Pretrained]:
    """Train one set (with ``keep_run``, in compare's folder, reusing a finished run there), export it, and
    measure the exported file on the test set."""
    cfg = TrainConfig(model=model, dataset=dataset, recipe=RECIPE, seed=SEED, threads=THREADS, device="cpu")
    log(f"{model} on {dataset}: {command(model, dataset)}")
    run_dir = run_folder(default_out(dataset, RECIPE), cfg.validate()) if keep_run else work / f"{model}-{dataset}"
    if keep_run and finished_run(run_dir, cfg):
        log(f"  reusing the finished run {run_dir}")
        summary = json.loads((run_dir / "summary.json").read_text())
        train_seconds = summary.get("train_seconds", 0.0)
    else:
        result = train(cfg, out=run_dir, quiet=True, log=lambda m: None)
        run_dir, train_seconds = result.run_dir, result.train_seconds
    exported = export_safetensors(run_dir, "last", work / f"{model}-{dataset}.safetensors")
    net = model_from_checkpoint(load_weights_file(exported))
    config = result_config(run_dir)
    # measured as `cnnlab evaluate --pretrained` measures it: the same function, the same memory format
    subject = Subject(net, model, load_dataset(dataset), str(exported), channels_last=config["channels_last"])
    measured = evaluate_subject(subject, device="cpu")
    log(f"  test accuracy {measured.accuracy:.2f}%, {train_seconds:.0f} s of training")
    entry = Pretrained(model=model, dataset=dataset, file=exported.name, sha256=sha256_file(exported),
                       test_accuracy=measured.accuracy, test_loss=measured.loss, recipe=RECIPE, seed=SEED,
                       command=command(model, dataset), cnnlab_version=__version__, torch_version=torch.__version__,
                       parameters=count_parameters(net), train_seconds=train_seconds,
                       config=config, machine=f"{platform.processor() or platform.machine()}",
                       cpu_kernels=torch.backends.cpu.get_cpu_capability())
    return exported.read_bytes(), entry


def check_line(key: str, same: bool, committed: dict) -> str:
    """What ``--check`` says of one set; a difference names the kernel families when they differ."""
    if same:
        return f"  {key}: the same weights, bit for bit, as the committed file"
    here, there = torch.backends.cpu.get_cpu_capability(), committed.get("cpu_kernels", "")
    why = (f" (expected: it was trained with torch's {there} CPU kernels and this machine runs its {here} ones, which "
           f"sum fp32 in another order; check it on the kind of CPU that trained it)" if there and there != here else "")
    return f"  {key}: DIFFERENT weights from the committed file{why}"


def result_config(run_dir: Path) -> dict:
    return json.loads((run_dir / "config.json").read_text())["config"]


def same_tensors(a: Path, b: Path) -> bool:
    """Whether two weights files hold the same tensors, bit for bit. Not the files' bytes: safetensors writes
    the metadata in no fixed order, and the metadata names where the data was read on the machine that ran."""
    x, y = load_weights_file(a)["state_dict"], load_weights_file(b)["state_dict"]
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) and x[k].dtype == y[k].dtype for k in x)


def write_manifest(path: Path, entries: dict) -> None:
    """The manifest of ``entries`` (``{"resnet-mnist": {...}}``), in the order of SETS."""
    atomic_write_json(path, {"format": "cnnlab-pretrained", "version": 1,
                             "weights": [entries[k] for k in NAMES if k in entries]})
    print(f"wrote {path}")


def measure_again(sets, old: dict, manifest_path: Path) -> int:
    """Evaluate the committed files as ``cnnlab evaluate --pretrained`` does; rewrite their test figures."""
    missing = [f"{m}-{d}" for m, d in sets if f"{m}-{d}" not in old]
    if missing:
        print(f"error: no committed weights to measure for {', '.join(missing)}; build them first: make weights",
              file=sys.stderr)
        return 2
    for model, dataset in sets:
        entry = old[f"{model}-{dataset}"]
        subject = open_subject(pretrained=model, dataset=dataset)
        measured = evaluate_subject(subject, device="cpu")
        print(f"{model}-{dataset}: {entry['test_accuracy']:.2f}% in the manifest, {measured.accuracy:.2f}% measured now")
        entry.update(test_accuracy=measured.accuracy, test_loss=measured.loss)
    write_manifest(manifest_path, old)
    return 0


#: The names ``--only`` takes: ``MODEL-DATASET`` of each of :data:`SETS`.
NAMES = tuple(f"{m}-{d}" for m, d in SETS)


class _Parser(argparse.ArgumentParser):
    """argparse with cnnlab's error format: one line, exit 2 (its usage first buried the error)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def set_name(text: str) -> str:
    """The type of ``--only``: one of :data:`NAMES`. A name of none (``resnet_mnist``) was dropped without a word:
    ``--check`` then passed having checked nothing, ``--measure`` rewrote the manifest having measured nothing."""
    if text not in NAMES:
        raise argparse.ArgumentTypeError(f"{text!r} names no shipped weights; give one or more of {', '.join(NAMES)}")
    return text


def main(argv: list[str] | None = None) -> int:
    p = _Parser(prog="python -m cnnlab.pretrained_build", description=__doc__.split("\n\n")[0])
    p.add_argument("--only", nargs="+", default=None, type=set_name, metavar="NAME",
                   help=f"only these: {', '.join(NAMES)} (default: all four)")
    p.add_argument("--check", action="store_true", help="retrain and compare with the committed files, writing nothing")
    p.add_argument("--keep-runs", action="store_true",
                   help="keep the training runs in runs/compare-<dataset>-best/, where compare --recipe best reuses them")
    p.add_argument("--measure", action="store_true",
                   help="train nothing: measure the committed files on the test set again and update the manifest's "
                        "test figures (after a change to how evaluation runs)")
    args = p.parse_args(argv)
    sets = [s for s in SETS if args.only is None or f"{s[0]}-{s[1]}" in args.only]
    out = weights_dir()
    manifest_path = out / MANIFEST
    old = {f"{r['model']}-{r['dataset']}": r for r in
           (json.loads(manifest_path.read_text())["weights"] if manifest_path.is_file() else [])}
    if args.measure:
        return measure_again(sets, old, manifest_path)
    entries, differ = dict(old), []
    with tempfile.TemporaryDirectory(prefix="cnnlab-weights-") as tmp:
        for model, dataset in sets:
            data, entry = build_one(model, dataset, Path(tmp), keep_run=args.keep_runs and not args.check)
            key = entry.name
            if args.check:
                same = key in old and same_tensors(out / entry.file, Path(tmp) / entry.file)
                print(check_line(key, same, old.get(key, {})))
                differ += [] if same else [key]
                continue
            atomic_write_bytes(out / entry.file, data)
            entries[key] = asdict(entry)
    if not args.check:
        write_manifest(manifest_path, entries)
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
