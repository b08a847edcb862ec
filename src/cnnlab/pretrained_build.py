"""``make weights``: train the shipped pretrained weights and write their manifest.

    python -m cnnlab.pretrained_build                 # all four: resnet and inception, MNIST and Fashion-MNIST
    python -m cnnlab.pretrained_build --check         # retrain and compare with the committed files, bit for bit
    python -m cnnlab.pretrained_build --only resnet-mnist
    python -m cnnlab.pretrained_build --keep-runs     # keep the training runs where compare reuses them

With ``--keep-runs`` each training run is kept as ``runs/compare-<dataset>-best/<model>-seed0-<config hash>``,
the folder that ``cnnlab compare --recipe best --dataset <dataset>`` trains seed 0 into: such a compare
reuses it (and a build after a compare reuses compare's finished seed-0 run instead of training it again).

Each set is ``cnnlab train --model M --dataset D --recipe best --seed 0 --threads 2`` (fp32, CPU): the same
command on the same kind of CPU reproduces the same bytes. The accuracy in the manifest is measured on the
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
from cnnlab.compare import config_key, finished_run
from cnnlab.config import TrainConfig
from cnnlab.data import load_dataset
from cnnlab.dataset_names import dataset_kind
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


def build_one(model: str, dataset: str, work: Path, runs: Path | None = None, log=print) -> tuple[bytes, Pretrained]:
    """Train one set (or reuse its finished run under ``runs``), export it, and measure the exported file on
    the test set."""
    cfg = TrainConfig(model=model, dataset=dataset, recipe=RECIPE, seed=SEED, threads=THREADS, device="cpu")
    log(f"{model} on {dataset}: {command(model, dataset)}")
    run_dir = work / f"{model}-{dataset}"
    if runs is not None:
        run_dir = runs / f"compare-{dataset_kind(dataset)}-{RECIPE}" / f"{model}-seed{SEED}-{config_key(cfg.validate())}"
    if runs is not None and finished_run(run_dir, cfg):
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
                       config=config, machine=f"{platform.processor() or platform.machine()}")
    return exported.read_bytes(), entry


def result_config(run_dir: Path) -> dict:
    return json.loads((run_dir / "config.json").read_text())["config"]


def measure_again(sets, old: dict, manifest_path: Path) -> int:
    """Evaluate the committed files as ``cnnlab evaluate --pretrained`` does; rewrite their test figures."""
    for model, dataset in sets:
        entry = old[f"{model}-{dataset}"]
        subject = open_subject(pretrained=model, dataset=dataset)
        measured = evaluate_subject(subject, device="cpu")
        print(f"{model}-{dataset}: {entry['test_accuracy']:.2f}% in the manifest, {measured.accuracy:.2f}% measured now")
        entry.update(test_accuracy=measured.accuracy, test_loss=measured.loss)
    atomic_write_json(manifest_path, {"format": "cnnlab-pretrained", "version": 1,
                                      "weights": [old[f"{m}-{d}"] for m, d in SETS if f"{m}-{d}" in old]})
    print(f"wrote {manifest_path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cnnlab.pretrained_build", description=__doc__.split("\n\n")[0])
    p.add_argument("--only", nargs="*", default=None, help="e.g. resnet-mnist (default: all four)")
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
            data, entry = build_one(model, dataset, Path(tmp), None if args.check or not args.keep_runs else Path("runs"))
            key = entry.name
            if args.check:
                same = key in old and old[key]["sha256"] == entry.sha256
                print(f"  {key}: {'the same bytes as the committed file' if same else 'DIFFERENT from the committed file'}")
                differ += [] if same else [key]
                continue
            atomic_write_bytes(out / entry.file, data)
            entries[key] = asdict(entry)
    if not args.check:
        order = [f"{m}-{d}" for m, d in SETS]
        atomic_write_json(manifest_path, {"format": "cnnlab-pretrained", "version": 1,
                                          "weights": [entries[k] for k in order if k in entries]})
        print(f"wrote {manifest_path}")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
