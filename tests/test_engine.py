"""Training, evaluation and checkpoints on tiny generated data."""

from __future__ import annotations

import hashlib
import math
import pickle
import warnings
from pathlib import Path

import pytest
import torch

from cnnlab.checkpoint import load_checkpoint
from cnnlab.config import TrainConfig
from cnnlab.engine import train
from cnnlab.evaluation import evaluate_run
from cnnlab.errors import CheckpointError, CnnlabError
from cnnlab.runs import read_metrics

TIMING = ("seconds", "images_per_s")


def tiny_cfg(tiny_idx, **kw) -> TrainConfig:
    base = dict(model="basic_cnn", dataset=f"idx:{tiny_idx}", epochs=2, batch_size=32, device="cpu", lr=0.05)
    return TrainConfig(**{**base, **kw})


def test_train_learns_and_writes_run_folder(tiny_idx, tmp_path):
    res = train(tiny_cfg(tiny_idx, epochs=4), out=tmp_path / "run", quiet=True, log=lambda m: None)
    run = tmp_path / "run"
    for name in ("config.json", "metrics.csv", "last.pt", "last.pt.sha256", "best.pt", "best.pt.sha256"):
        assert (run / name).is_file(), name
    rows = read_metrics(run / "metrics.csv")
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    assert res.final.accuracy > 50  # the synthetic classes are easy
    ck = load_checkpoint(run / "last.pt")
    assert ck["model"]["name"] == "basic_cnn" and ck["train_state"]["epoch"] == 4
    assert ck["config"]["dataset"] == f"idx:{tiny_idx}"


def test_same_seed_same_metrics(tiny_idx, tmp_path):
    for name in ("a", "b"):
        train(tiny_cfg(tiny_idx, model="resnet"), out=tmp_path / name, quiet=True, log=lambda m: None)
    a, b = (read_metrics(tmp_path / n / "metrics.csv") for n in ("a", "b"))
    strip = lambda rows: [{k: v for k, v in r.items() if k not in TIMING} for r in rows]  # noqa: E731
    assert strip(a) == strip(b)


def test_evaluate_run_matches_training_and_accepts_bare_state_dict(tiny_idx, tmp_path):
    res = train(tiny_cfg(tiny_idx), out=tmp_path / "run", quiet=True, log=lambda m: None)
    ev, model, _ = evaluate_run(tmp_path / "run", device="cpu")
    assert ev.accuracy == pytest.approx(res.final.accuracy) and ev.n == 64
    torch.save(model.state_dict(), tmp_path / "w.pt")
    ev2, _, _ = evaluate_run(weights=tmp_path / "w.pt", model_name="basic_cnn", dataset=f"idx:{tiny_idx}", device="cpu")
    assert ev2.accuracy == pytest.approx(ev.accuracy)
    with pytest.raises(CnnlabError, match=r"do not fit model 'resnet': 8 of the net's 14 tensors are not in the file "
                                          r"\(rblock1.conv1.weight, rblock1.conv1.bias, rblock1.conv2.weight and 5 more\); "
                                          r"5 differ in shape, in the file \(conv1.weight 10x1x5x5 instead of 16x1x5x5, "
                                          r"conv1.bias 10 instead of 16, conv2.weight 20x10x5x5 instead of 32x16x5x5 and 2 "
                                          r"more\); pick the --model they were trained as$"):
        evaluate_run(weights=tmp_path / "w.pt", model_name="resnet", dataset=f"idx:{tiny_idx}", device="cpu")
    # found by probing: weights saved from inside DataParallel or torch.compile, or inside a training script's
    # checkpoint dict (the PyTorch tutorials' "model_state_dict"), were refused with torch's empty first line
    sd = model.state_dict()
    for name, saved in (("dp", {f"module.{k}": v for k, v in sd.items()}),
                        ("compiled", {f"_orig_mod.module.{k}": v for k, v in sd.items()}),
                        ("script", {"epoch": 3, "model_state_dict": sd, "optimizer_state_dict": {"state": {}}})):
        torch.save(saved, tmp_path / f"{name}.pt")
        got, _, _ = evaluate_run(weights=tmp_path / f"{name}.pt", model_name="basic_cnn", dataset=f"idx:{tiny_idx}",
                                 device="cpu")
        assert got.accuracy == ev.accuracy and got.loss == ev.loss, name
    bad = {**sd, "extra.w": torch.zeros(1), next(iter(sd)): torch.zeros(1, 2, 3)}
    for name, saved, message in (("two", {"state_dict": sd, "model": sd}, "holds weights under both 'state_dict' and "
                                                                          "'model'; save the net's own"),
                                 ("mixed", {"module.a": sd[next(iter(sd))], **dict(list(sd.items())[1:])},
                                  r"1 of the net's \d+ tensors are not in the file"),
                                 ("bad", bad, r"1 in the file are not the net's \(extra.w\); 1 differ in shape, in "
                                              r"the file \(conv1.weight 1x2x3 instead of 10x1x5x5\)")):
        torch.save(saved, tmp_path / f"{name}.pt")
        with pytest.raises(CnnlabError, match=message):
            evaluate_run(weights=tmp_path / f"{name}.pt", model_name="basic_cnn", dataset=f"idx:{tiny_idx}", device="cpu")


def test_resume_mid_epoch_is_bitwise_identical(tiny_idx, tmp_path):
    cfg = tiny_cfg(tiny_idx, model="resnet", epochs=2, save_every=3)
    straight = train(cfg, out=tmp_path / "straight", quiet=True, log=lambda m: None)
    # 8 steps per epoch; stop after 11 steps (mid-epoch 2, last save at step 9), then resume
    cut = tiny_cfg(tiny_idx, model="resnet", epochs=2, save_every=3, max_steps=11)
    train(cut, out=tmp_path / "cut", quiet=True, log=lambda m: None)
    ck = load_checkpoint(tmp_path / "cut" / "last.pt")
    assert (ck["train_state"]["epoch"], ck["train_state"]["batch"]) == (1, 3)
    # --max-steps belongs to the invocation, not the run: resuming without it runs to the end
    resumed = train(TrainConfig(), resume=tmp_path / "cut", quiet=True, log=lambda m: None)
    for (k, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), k


@pytest.fixture
def a_checkpoint(tiny_idx, tmp_path):
    train(tiny_cfg(tiny_idx, epochs=1), out=tmp_path / "run", quiet=True, log=lambda m: None)
    return tmp_path / "run" / "last.pt"


def test_refuses_other_model(a_checkpoint):
    with pytest.raises(CheckpointError, match="for model 'basic_cnn', not 'resnet'"):
        load_checkpoint(a_checkpoint, expect_model="resnet")


def test_refuses_altered_and_truncated_files(a_checkpoint):
    data = a_checkpoint.read_bytes()
    a_checkpoint.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or altered"):
        load_checkpoint(a_checkpoint)
    a_checkpoint.with_name("last.pt.sha256").unlink()  # without the checksum, torch's reader catches it
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(a_checkpoint)


def test_a_file_that_torch_save_did_not_write_is_named_for_what_it_is(tmp_path):
    """An image or a JSON file passed where a checkpoint goes was refused as "objects other than tensors"
    (what a hostile pickle gets)."""
    from PIL import Image

    Image.new("L", (28, 28)).save(tmp_path / "digit.png")
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "config.pt").write_text('{"model": "resnet"}')
    (tmp_path / "w.safetensors").write_bytes(len(b'{"a":{}}').to_bytes(8, "little") + b'{"a":{}}')
    for name, what in (("digit.png", "a PNG image"), ("empty.pt", "an empty file"), ("config.pt", "a JSON file"),
                       ("w.safetensors", "a safetensors file")):
        with pytest.raises(CheckpointError, match=f"not a checkpoint \\({what}") as info:
            load_checkpoint(tmp_path / name)
        assert "objects other than tensors" not in str(info.value) and "\n" not in str(info.value)


def test_refuses_other_format_version(a_checkpoint):
    ck = load_checkpoint(a_checkpoint)
    ck["version"] = 99
    torch.save(ck, a_checkpoint)
    a_checkpoint.with_name("last.pt.sha256").unlink()
    with pytest.raises(CheckpointError, match="format version 99"):
        load_checkpoint(a_checkpoint)


class Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_malicious_checkpoint_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"format": "cnnlab-checkpoint", "version": 1, "x": Evil(marker)}, path, pickle_protocol=2)
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(path)
    assert not marker.exists()
    with open(tmp_path / "plain.pkl", "wb") as fh:
        pickle.dump(Evil(marker), fh)
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "plain.pkl")
    assert not marker.exists()


def test_bad_config_values_are_clear_errors(tiny_idx, monkeypatch):
    with pytest.raises(CnnlabError, match="--batch-size must be at least 1"):
        train(tiny_cfg(tiny_idx, batch_size=0), write=False, log=lambda m: None)
    # infinite rates trained until the loss was NaN, and the message then blamed the rate (or, for an infinite
    # weight decay, the finite rate)
    for bad, message in (({"lr": float("inf")}, "--lr must be a positive finite number, got inf"),
                         ({"lr": float("nan")}, "--lr must be a positive finite number, got nan"),
                         ({"weight_decay": float("inf")}, "--weight-decay must be a finite number >= 0, got inf"),
                         # 0 was a ZeroDivisionError in the decay check's message; 1e39 torch's RuntimeError (float32)
                         ({"lr": 0.0}, "--lr must be a positive finite number, got 0.0"),
                         ({"lr": 1e39}, r"--lr 1e\+39 is beyond float32's largest number \(3.4e\+38\)"),
                         # torch's "Overflow when unpacking long long"; an evals-per-epoch loop that never ended
                         ({"threads": 10**20}, r"--threads must be in 0\.\.4096 \(0: torch's default\), got 10+$"),
                         ({"evals_per_epoch": 10**10, "target_accuracy": 99.0},
                          r"--evals-per-epoch must be in 1\.\.1,000,000 .*got 10000000000$"),
                         # torch's "Overflow when unpacking long long" traceback, at the first augmented batch for
                         # seeds from about 1.8e8
                         ({"seed": 10**23}, r"--seed must be within \+-90,000,000, got 1000000000000000000000"),
                         # a finite decay that takes all of every weight each step diverged, blaming the rate
                         ({"weight_decay": 1e9, "lr": 0.01}, r"--weight-decay 1e\+09 with --lr 0.01 takes lr x decay = 1e\+07 "
                                                  r"of every weight each step .*1/lr = 100 \(e.g. 0.0005\)$"),
                         ({"weight_decay": 20.0, "optimizer": "adamw", "lr": 0.05}, r"lr x decay = 1 .*e.g. 0.05\)$")):
        with pytest.raises(CnnlabError, match=message):
            train(tiny_cfg(tiny_idx, **bad), write=False, log=lambda m: None)
    # Adam's decay is added to the gradient, which Adam scales to the rate: a large one is no such fault
    tiny_cfg(tiny_idx, optimizer="adam", weight_decay=1e3).validate()
    from cnnlab.augment import batch_seed
    from cnnlab.config import MAX_SEED

    for seed in (MAX_SEED, -MAX_SEED):  # the extreme seeds' batch seeds still fit torch's generator
        torch.Generator().manual_seed(batch_seed(seed, 10_000, 100_000))
    # a machine without a GPU, on every machine (on a CUDA machine this check used to be skipped)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(CnnlabError, match="--device cuda: this torch build or machine has no CUDA GPU"):
        train(tiny_cfg(tiny_idx, device="cuda"), write=False, log=lambda m: None)
    # cuda:x and a GPU the machine does not have were torch's RuntimeError tracebacks on a CUDA machine
    from cnnlab.devices import resolve_device

    for bad in ("cuda:x", "cuda:", "cuda:-1", "cuda:1.5", "cuda:\u0663"):
        with pytest.raises(CnnlabError, match=r"^--device must be auto, cpu, cuda, cuda:N or mps, got "):
            resolve_device(bad)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(CnnlabError, match=r"^--device cuda:2: this machine has 2 CUDA GPUs \(cuda:0 to cuda:1\); pick"):
        resolve_device("cuda:2")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)


def test_more_threads_than_cpus_is_a_warning_line(tiny_idx, monkeypatch):
    import os

    before = torch.get_num_threads()
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    try:
        for threads, warned in ((1, False), (2, True)):
            lines = []
            train(tiny_cfg(tiny_idx, threads=threads, max_steps=1), write=False, log=lines.append)
            hits = [m for m in lines if m.startswith("warning: --threads")]
            assert bool(hits) == warned
        assert hits == ["warning: --threads 2 is more than the 1 CPU this process can use, which makes every step "
                        "many times slower; use --threads 1 or leave it out"]
    finally:
        torch.set_num_threads(before)


def test_bf16_is_autocast_of_the_steps_and_a_gpu_without_it_is_one_line(monkeypatch):
    from cnnlab.devices import training_autocast

    cpu = torch.device("cpu")
    with training_autocast("bf16", cpu):
        assert torch.nn.Linear(4, 2)(torch.ones(1, 4)).dtype == torch.bfloat16
    with training_autocast("fp32", cpu):
        assert torch.nn.Linear(4, 2)(torch.ones(1, 4)).dtype == torch.float32
    # torch's own refusal is a RuntimeError at the first step; the fast recipe's default must not end that way
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "Tesla K80")
    with pytest.raises(CnnlabError, match=r"^--precision bf16: Tesla K80 cannot compute in bfloat16 .*add --precision fp32$"):
        training_autocast("bf16", torch.device("cuda"))
    assert training_autocast("fp32", torch.device("cuda")) is not None


@pytest.mark.parametrize("val_split", [0.0, 0.5])
def test_the_report_reuses_the_last_test_evaluation(tiny_idx, tmp_path, monkeypatch, val_split):
    """The test set is evaluated once per epoch (or once at the end with a validation split), not once more
    for the report; the report's figures are those of that evaluation."""
    import json

    import cnnlab.evaluation
    import cnnlab.trainer

    test_passes = []
    real = cnnlab.evaluation.evaluate

    def counting(model, loader, *args, **kwargs):
        if len(loader.labels) == 64:  # tiny_idx test split (the 0.5 validation split has 128)
            test_passes.append(kwargs.get("keep_outputs", False))
        return real(model, loader, *args, **kwargs)

    for module in (cnnlab.evaluation, cnnlab.trainer):  # training evaluates through both
        monkeypatch.setattr(module, "evaluate", counting)
    res = train(tiny_cfg(tiny_idx, val_split=val_split), out=tmp_path / "run", quiet=True, log=lambda m: None)
    assert test_passes == ([True, True] if val_split == 0 else [True])
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["accuracy"] == pytest.approx(res.final.accuracy)


FIXTURE_V1 = Path(__file__).parent / "fixtures" / "v1-basic-cnn"
#: sha256 over (name, bytes) of every tensor of the final state_dict when the fixture's run is resumed to its
#: end by the code that wrote it (commit 5c3a56f, format version 1, 1 CPU thread), by the CPU capability that
#: torch dispatches to (``torch.backends.cpu.get_cpu_capability()``): the kernels, and so the last bits,
#: differ between them, and between CPUs of one capability (a Zen 4 EPYC against an Xeon). Another kind of CPU:
#: run the fixture's resume at 5c3a56f there and add its hash.
V1_RESUMED_FINAL = {
    "AVX512": (
        "db34a36cb66127b9c9f34794234ce64748f822d52fd5262f57b660599976d516",  # AMD EPYC 2026-11; Intel Xeon with AMX
        "14e2cb3dcbe6262283694e48605c1523d6aa65d50c2d5c9b5f3bcf95c9d60e6e",  # AMD EPYC family 25 model 17 (Zen 4)
    ),
    "AVX2": ("dbfd11d363b326ea8d8074fcafb1f6316c767216dba281ba2005c96880ba8083",),  # AMD EPYC without AVX-512
}


def _state_hash(state_dict) -> str:
    h = hashlib.sha256()
    for k, v in state_dict.items():
        h.update(k.encode())
        h.update(v.numpy().tobytes())
    return h.hexdigest()


def test_a_version_1_checkpoint_loads_and_resumes_bitwise(tmp_path):
    """A checkpoint written by the format-1 code (mid-epoch, partial sums and all) resumes to the same weights
    as that code resumed it to, and the resumed run's checkpoints are written in the current format."""
    import shutil

    from cnnlab.checkpoint import VERSION, TrainState
    from cnnlab.data import load_dataset
    from conftest import write_idx_dataset

    run = tmp_path / "run"
    shutil.copytree(FIXTURE_V1, run)
    ck = load_checkpoint(run / "last.pt")
    assert ck["version"] == 1
    state = TrainState.from_checkpoint(ck)
    assert (state.epoch, state.batch, state.step) == (1, 3, 11) and state.partial.count == 96
    data = load_dataset(f"idx:{write_idx_dataset(tmp_path / 'tiny')}")  # the fixture's data, regenerated
    threads = torch.get_num_threads()
    try:
        res = train(TrainConfig(threads=1), resume=run, dataset=data, quiet=True, log=lambda m: None)
    finally:
        torch.set_num_threads(threads)
    capability = torch.backends.cpu.get_cpu_capability()
    if capability in V1_RESUMED_FINAL:  # the format-1 code's own result on this kind of CPU, to the last bit
        assert _state_hash(res.model.state_dict()) in V1_RESUMED_FINAL[capability]
    else:
        warnings.warn(f"no format-1 reference hash for CPU capability {capability}: weights not compared")
    assert [r["epoch"] for r in res.history] == [1, 2]
    # partial sums carried on (without them the mean would be of the epoch's last 5 steps alone); to 1e-6: the kernels'
    # last bits differ between CPUs (0.01775353602715768 on the first two of V1_RESUMED_FINAL, 0.017753535561 on Zen 4)
    assert res.history[1]["train_loss"] == pytest.approx(0.01775353602715768, rel=1e-6)
    assert load_checkpoint(run / "last.pt")["version"] == VERSION


ACCURACY_SETTINGS = dict(optimizer="adamw", lr=0.004, weight_decay=0.05, bias_decay=False, schedule="cosine",
                         warmup_epochs=0.5, augment="affine:rotate=10,scale=0.1,translate=0.1+erase:p=0.5",
                         label_smoothing=0.1, ema=0.9, channels_last=True)


def _straight_and_resumed(tiny_idx, tmp_path, cfg: dict):
    """A run of ``cfg`` unbroken, and the same run cut at step 11 (saved every 3 steps) and resumed: the two
    results and the two last checkpoints, every weight of which must be equal (asserted here)."""
    straight = train(tiny_cfg(tiny_idx, **cfg), out=tmp_path / "straight", quiet=True, log=lambda m: None)
    train(tiny_cfg(tiny_idx, **cfg, max_steps=11, save_every=3), out=tmp_path / "cut", quiet=True, log=lambda m: None)
    resumed = train(TrainConfig(), resume=tmp_path / "cut", quiet=True, log=lambda m: None)
    a, b = (load_checkpoint(tmp_path / n / "last.pt") for n in ("straight", "cut"))
    for key in ("state_dict", "train_weights"):
        for k in a[key]:
            assert torch.equal(a[key][k], b[key][k]), (key, k)
    strip = lambda rows: [{k: v for k, v in r.items() if k not in TIMING} for r in rows]  # noqa: E731
    assert strip(straight.history) == strip(resumed.history)
    return straight, a


def test_resume_with_augmentation_ema_and_cosine_is_bitwise(tiny_idx, tmp_path):
    """The accuracy ingredients (seeded batch augmentation, the weights' moving average, warm-up + cosine,
    decay without biases) resume mid-epoch to exactly the weights, average and metrics of an unbroken run."""
    _, a = _straight_and_resumed(tiny_idx, tmp_path, dict(model="resnet", epochs=2, **ACCURACY_SETTINGS))
    assert a["ema_updates"] == load_checkpoint(tmp_path / "cut" / "last.pt")["ema_updates"] == 16
    # what is evaluated and saved for inference is the average, not the raw weights
    assert not all(torch.equal(a["state_dict"][k], a["train_weights"][k]) for k in a["state_dict"])


def test_resume_with_cutmix_is_bitwise(tiny_idx, tmp_path):
    """A mixing augmentation (its pairing and box drawn per batch) resumes mid-epoch to an unbroken run's weights."""
    _straight_and_resumed(tiny_idx, tmp_path, dict(model="resnet", epochs=2,
                                                   **{**ACCURACY_SETTINGS, "augment": "shift+cutmix:p=0.5"}))


def test_clean_epochs_end_the_run_without_augmentation_and_resume_bitwise(tiny_idx, tmp_path, monkeypatch):
    """--clean-epochs N: the last N epochs see the images as they are; the epochs before are those of the
    same run without it, and a run cut inside its augmented part resumes into the clean part bitwise."""
    import cnnlab.engine
    from cnnlab.augment import parse_augment

    seen = []  # the epoch of every augmented batch

    class Counting:
        def __init__(self, pipeline):
            self.pipeline, self.flips = pipeline, pipeline.flips

        def apply(self, x, *, seed, epoch, batch, fill, **group):
            seen.append(epoch)
            return self.pipeline.apply(x, seed=seed, epoch=epoch, batch=batch, fill=fill, **group)

    def counting(spec):
        pipeline = parse_augment(spec)
        return None if pipeline is None else Counting(pipeline)

    monkeypatch.setattr(cnnlab.engine, "parse_augment", counting)
    cfg = dict(epochs=3, augment="shift+erase", ema=0.9, channels_last=True)
    clean = train(tiny_cfg(tiny_idx, **cfg, clean_epochs=1), out=tmp_path / "clean", quiet=True, log=lambda m: None)
    assert seen == [0] * 8 + [1] * 8  # 8 batches an epoch; none in the third
    plain = train(tiny_cfg(tiny_idx, **cfg), out=tmp_path / "plain", quiet=True, log=lambda m: None)
    strip = lambda rows: [{k: v for k, v in r.items() if k not in TIMING} for r in rows]  # noqa: E731
    assert strip(clean.history)[:2] == strip(plain.history)[:2] and strip(clean.history)[2] != strip(plain.history)[2]
    train(tiny_cfg(tiny_idx, **cfg, clean_epochs=1, max_steps=11, save_every=3), out=tmp_path / "cut", quiet=True,
          log=lambda m: None)
    resumed = train(TrainConfig(), resume=tmp_path / "cut", quiet=True, log=lambda m: None)
    assert strip(resumed.history) == strip(clean.history)
    a, b = (load_checkpoint(tmp_path / n / "last.pt") for n in ("clean", "cut"))
    for key in ("state_dict", "train_weights"):
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key]), key
    with pytest.raises(CnnlabError, match=r"--clean-epochs must be in \[0, --epochs\)"):
        tiny_cfg(tiny_idx, epochs=3, clean_epochs=3).validate()


def test_runs_made_before_clean_epochs_keep_their_compare_folders():
    """A field added later is left out of compare's hash at its old behaviour, so earlier folders are reused."""
    from cnnlab.compare import config_key

    cfg = TrainConfig(model="resnet", recipe="best").validate()
    assert cfg.clean_epochs == 0 and config_key(cfg) == "171b13f1", (  # runs/compare-mnist-best/resnet-seed0-171b13f1
        "every compare folder made before would be trained again: see "
        "test_a_field_added_since_compare_named_its_folders_keeps_them for the field")
    older = TrainConfig.from_dict({k: v for k, v in cfg.to_dict().items() if k != "clean_epochs"})
    assert config_key(older) == config_key(cfg) != config_key(TrainConfig(model="resnet", recipe="best",
                                                                          clean_epochs=2).validate())


#: What compare's folder names hash (compare.key_fields): the settings of every compare folder made so far.
HASHED_SETTINGS = {"augment", "batch_size", "bias_decay", "channels_last", "compile", "dataset", "ema", "epochs",
                   "eval_limit", "evals_per_epoch", "label_smoothing", "lr", "model", "momentum", "optimizer",
                   "precision", "recipe", "schedule", "seed", "target_accuracy", "val_split", "warmup_epochs",
                   "weight_decay"}


@pytest.mark.parametrize("recipe", ["lecture", "fast", "best"])
def test_a_field_added_since_compare_named_its_folders_keeps_them(recipe):
    """(nwcE.) A new TrainConfig field (grad_clip) entered compare's hash: every compare folder made before it was
    trained again beside the old one, and the failing test printed two hashes, naming neither the field nor the fix."""
    from cnnlab.compare import KEY_NEUTRAL, key_fields
    from cnnlab.config import ADDED_FIELDS

    new = sorted(set(key_fields(TrainConfig(model="resnet", recipe=recipe).validate())) - HASHED_SETTINGS)
    assert not new, (f"{new} would enter compare's folder names (compare.config_key) and every compare folder made "
                     "before would be trained again: add each to config.ADDED_FIELDS with the value that reproduces "
                     "the runs made before it (compare.KEY_NEUTRAL, made from ADDED_FIELDS, leaves a field out of the "
                     "hash at that value)")
    assert set(KEY_NEUTRAL) <= set(ADDED_FIELDS) and {"clean_epochs", "teacher", "distill"} <= set(KEY_NEUTRAL)


def _rates(cfg: TrainConfig, steps_per_epoch: int) -> list[float]:
    """The learning rate of every step of a run of ``cfg``, as its scheduler sets them."""
    from cnnlab.engine import build_scheduler

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    sched = build_scheduler(cfg, opt, steps_per_epoch=steps_per_epoch)
    lrs = []
    for _ in range(cfg.epochs * steps_per_epoch):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def test_cosine_schedule_warms_up_then_decays_to_zero():
    lrs = _rates(TrainConfig(schedule="cosine", warmup_epochs=1, epochs=4, lr=1.0).validate(), steps_per_epoch=10)
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)  # linear warm-up over one epoch
    assert all(x >= y for x, y in zip(lrs[9:], lrs[10:]))  # then only down
    assert lrs[-1] < 0.01 and lrs[24] == pytest.approx(0.5 * (1 + math.cos(math.pi * 14 / 30)))


def test_step_schedule_warms_up_then_divides_by_ten_twice():
    lrs = _rates(TrainConfig(schedule="step", warmup_epochs=0.5, epochs=4, lr=0.2).validate(), steps_per_epoch=10)
    assert lrs[:5] == pytest.approx([0.04, 0.08, 0.12, 0.16, 0.2])  # half an epoch's linear warm-up
    assert lrs[5:20] == pytest.approx([0.2] * 15) and lrs[20:30] == pytest.approx([0.02] * 10)  # /10 at half the run
    assert lrs[30:] == pytest.approx([0.002] * 10)  # and again at three quarters
    # without a warm-up the first step takes the peak rate
    cold = _rates(TrainConfig(schedule="step", epochs=4, lr=0.2).validate(), steps_per_epoch=10)
    assert cold == pytest.approx([0.2] * 20 + [0.02] * 10 + [0.002] * 10)


def _schedule_names():
    from cnnlab.schedules import SCHEDULES

    return list(SCHEDULES)


@pytest.mark.parametrize("name", _schedule_names())
def test_every_schedule_in_the_table_is_built_as_its_entry_says(name):
    """(nwcE.) A schedule added to the list of names trained at a constant rate without a word: the engine builds
    every schedule from its entry in cnnlab.schedules.SCHEDULES, and a new entry is checked here."""
    from cnnlab.config import _no_effect
    from cnnlab.engine import build_scheduler
    from cnnlab.schedules import SCHEDULES

    entry, where = SCHEDULES[name], f"cnnlab/schedules.py SCHEDULES[{name!r}]"
    cfg = TrainConfig(schedule=name, epochs=4, lr=1.0, warmup_epochs=1 if entry.warmup else 0,
                      optimizer="sgd", momentum=0.5).validate()
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr, momentum=cfg.momentum)
    if name == "constant":
        assert build_scheduler(cfg, opt, steps_per_epoch=10) is None  # the lecture's path: no scheduler at all
        return
    built = build_scheduler(cfg, opt, steps_per_epoch=10)
    assert built is not None, (f"--schedule {name} builds no scheduler, a constant rate (only constant's): give {where} "
                               "a factor")
    lrs = _rates(cfg, steps_per_epoch=10)
    assert len(set(lrs)) > 1, f"--schedule {name} leaves the rate at --lr on every step: {where}'s factor is 1"
    if entry.warmup:
        assert lrs[:10] == pytest.approx([(i + 1) / 10 for i in range(10)]), f"{where}: warmup=True, no warm-up"
    why = _no_effect(cfg)["warmup_epochs"]  # --warmup-epochs: taken by the schedules that warm up, refused by others
    assert why is None if entry.warmup else f"not of {name}" in why, why


def test_a_schedule_the_table_does_not_hold_is_one_line_not_a_constant_rate():
    """(nwcE.) `if cfg.schedule not in ("cosine", "step"): return None` trained a new name at a constant rate."""
    from cnnlab.engine import build_scheduler

    from cnnlab.schedules import SCHEDULES

    cfg = TrainConfig(schedule="constant", epochs=2, lr=0.1, momentum=0.5).validate()
    cfg.schedule = "no-such"  # past validate, as a name the table does not hold would be
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(CnnlabError, match=rf"^--schedule must be one of {', '.join(SCHEDULES)}, got 'no-such'$"):
        build_scheduler(cfg, opt, steps_per_epoch=5)


def test_the_schedule_names_flags_and_messages_come_from_the_one_table():
    """config.SCHEDULES, the --schedule and --warmup-epochs help and the warm-up's refusal are the table's."""
    from cnnlab.cli import build_parser
    from cnnlab.config import SCHEDULES as NAMES, _no_effect
    from cnnlab.schedules import SCHEDULES, WARMUP_SCHEDULES
    from cnnlab.text import either

    assert NAMES == tuple(SCHEDULES) and WARMUP_SCHEDULES == tuple(n for n, s in SCHEDULES.items() if s.warmup)
    train = next(a for a in build_parser()._actions if hasattr(a, "choices") and a.choices and "train" in a.choices)
    actions = {a.dest: a for a in train.choices["train"]._actions}
    assert tuple(actions["schedule"].choices) == NAMES
    assert all(f"{name}: {s.what}".replace("%", "%%") in actions["schedule"].help for name, s in SCHEDULES.items())
    assert all(name in actions["warmup_epochs"].help for name in WARMUP_SCHEDULES)
    said = _no_effect(TrainConfig(schedule="constant").resolve())["warmup_epochs"]
    assert said.startswith(f"it is the warm-up of --schedule {either(WARMUP_SCHEDULES)}, not of constant")


def test_nesterov_is_torchs_sgd_with_nesterov_momentum():
    """--optimizer nesterov: the updates of torch.optim.SGD(nesterov=True) with the run's momentum; under one-cycle
    the momentum is cycled like plain SGD's; without one-cycle a momentum is required (one line)."""
    from cnnlab.engine import build_optimizer, build_scheduler

    def steps(opt):
        w = opt.param_groups[0]["params"][0]
        for target in (1.0, -2.0, 3.0):
            opt.zero_grad()
            ((w - target) ** 2).sum().backward()
            opt.step()
        return w.detach().clone()

    cfg = TrainConfig(optimizer="nesterov", lr=0.1, momentum=0.9, weight_decay=1e-3, schedule="constant").validate()
    ours = build_optimizer(cfg, [torch.nn.Parameter(torch.ones(3))])
    torchs = torch.optim.SGD([torch.nn.Parameter(torch.ones(3))], lr=0.1, momentum=0.9, weight_decay=1e-3,
                             nesterov=True)
    plain = torch.optim.SGD([torch.nn.Parameter(torch.ones(3))], lr=0.1, momentum=0.9, weight_decay=1e-3)
    assert ours.param_groups[0]["nesterov"] is True
    assert torch.equal(steps(ours), steps(torchs)) and not torch.equal(steps(torchs), steps(plain))
    cycled = TrainConfig(optimizer="nesterov", schedule="onecycle", momentum=0.0, epochs=2).validate()
    opt = build_optimizer(cycled, [torch.nn.Parameter(torch.ones(3))])
    build_scheduler(cycled, opt, steps_per_epoch=5)
    assert opt.param_groups[0]["momentum"] == pytest.approx(0.95) and opt.param_groups[0]["nesterov"]
    with pytest.raises(CnnlabError, match=r"^--optimizer nesterov needs a momentum: give --momentum"):
        TrainConfig(optimizer="nesterov", schedule="step", momentum=0.0).validate()


def test_resume_with_nesterov_and_step_schedule_is_bitwise(tiny_idx, tmp_path):
    """A run cut mid-epoch, between the step schedule's two drops, resumes to an unbroken run's weights."""
    cfg = dict(model="resnet", epochs=2, **{**ACCURACY_SETTINGS, "optimizer": "nesterov", "lr": 0.05,
                                            "momentum": 0.9, "weight_decay": 5e-4, "schedule": "step"})
    straight, _ = _straight_and_resumed(tiny_idx, tmp_path, cfg)
    # 8 steps an epoch: the rate for the step after each epoch, divided at step 8 (half) and at step 12
    assert [r["lr"] for r in straight.history] == pytest.approx([0.005, 0.0005])


def test_weight_decay_skips_biases_only_when_asked():
    from cnnlab.engine import parameter_groups
    from cnnlab.models import create_model

    model = create_model("resnet")
    one = list(parameter_groups(model, TrainConfig(weight_decay=0.1).validate()))
    assert len(one) == len(list(model.parameters()))  # every earlier run's path: one group, biases decayed
    decay, no_decay = parameter_groups(model, TrainConfig(weight_decay=0.1, bias_decay=False).validate())
    assert all(p.ndim > 1 for p in decay["params"]) and all(p.ndim == 1 for p in no_decay["params"])
    assert no_decay["weight_decay"] == 0.0 and len(decay["params"]) + len(no_decay["params"]) == len(one)


def test_an_average_that_cannot_forget_the_first_weights_is_warned_about(tiny_idx):
    """--ema 0.9999 over a 15-epoch MNIST run (7,035 steps) ends with half the average still the first step's
    weights, and the average is what is evaluated and saved: warned of, with a decay that fits the run."""
    from cnnlab.engine import ema_warning

    warning = ema_warning(0.9999, 15 * 469)
    assert warning.startswith("warning: --ema 0.9999 averages over about 10,000 steps and this run has 7,035: at its "
                              "end 49% of the average is still the first step's weights")
    assert warning.endswith("use a decay of at most 0.9993, or more epochs")
    assert 0.9993 ** (15 * 469 - 1) <= 0.01 < 0.9994 ** (15 * 469 - 1)  # the decay named is the largest that fits
    assert ema_warning(0.999, 15 * 469) is None and ema_warning(0.0, 10) is None  # the recipe's; no average
    said = []
    train(tiny_cfg(tiny_idx, epochs=2, ema=0.9, max_steps=1), write=False, quiet=True, log=said.append)
    assert any(line.startswith("warning: --ema 0.9 averages over about 10 steps and this run has 16") for line in said)


def test_more_checks_per_epoch_than_steps_are_one_per_step():
    """--evals-per-epoch 10**10 looped over every check point before the first step (a run that never began)."""
    from cnnlab.observers import TargetStop

    assert TargetStop(99.0, 10, 10**6).points == TargetStop(99.0, 10, 10).points == set(range(1, 10))
    assert TargetStop(99.0, 10, 4).points == {2, 5, 8}  # round(2.5) is 2: the points as before
