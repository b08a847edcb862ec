"""Issue 'runs': checkpoints survive kills, plots and summaries, compare, exports, validation split."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from PIL import Image

from cnnlab import fileio
from cnnlab.checkpoint import load_checkpoint, save_checkpoint
from cnnlab.cli import main
from cnnlab.compare import compare, forward_flops
from cnnlab.export import export_safetensors
from cnnlab.config import TrainConfig
from cnnlab.augment import parse_augment
from cnnlab.engine import train
from cnnlab.models import create_model
from cnnlab.runs import read_metrics

QUIET = dict(quiet=True, log=lambda m: None)


def cfg_for(tiny_idx, **kw):
    base = dict(model="basic_cnn", dataset=f"idx:{tiny_idx}", epochs=2, batch_size=32, device="cpu", lr=0.05)
    return TrainConfig(**{**base, **kw})


def test_run_writes_plots_and_summary(tiny_idx, tmp_path):
    train(cfg_for(tiny_idx, epochs=3), out=tmp_path / "run", **QUIET)
    run = tmp_path / "run"
    for name, min_size in (("curves.png", (800, 300)), ("confusion.png", (400, 400)), ("mistakes.png", (300, 100))):
        with Image.open(run / name) as im:
            assert im.size[0] >= min_size[0] and im.size[1] >= min_size[1], (name, im.size)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["n"] == 64 and len(summary["per_class"]) == 10
    assert sum(map(sum, summary["confusion"])) == 64
    for row in summary["per_class"]:
        assert set(row) == {"class", "precision", "recall", "f1", "support"}  # no one-vs-rest "accuracy"
    assert sum(r["support"] for r in summary["per_class"]) == 64


def test_evaluate_cli_writes_report_into_run(tiny_idx, tmp_path, capsys, monkeypatch):
    import cnnlab.evaluation as engine

    train(cfg_for(tiny_idx), out=tmp_path / "run", **QUIET)
    for name in ("summary.json", "confusion.png"):
        (tmp_path / "run" / name).unlink()
    passes, real = [], engine.evaluate
    monkeypatch.setattr(engine, "evaluate", lambda *a, **k: passes.append(1) or real(*a, **k))
    assert main(["evaluate", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "precision" in out and (tmp_path / "run" / "confusion.png").is_file()
    assert len(passes) == 1  # the report is drawn from the one evaluation


def test_only_the_runs_final_evaluation_becomes_its_summary(tiny_idx, tmp_path, capsys):
    run = tmp_path / "run"
    train(cfg_for(tiny_idx, epochs=2), out=run, **QUIET)
    before = json.loads((run / "summary.json").read_text())
    assert {"train_seconds", "parameters", "target", "ema"} <= set(before)
    assert main(["evaluate", str(run)]) == 0  # the run's own report again: its training figures are kept
    after = json.loads((run / "summary.json").read_text())
    assert after["checkpoint"].endswith("last.pt") and after["accuracy"] == before["accuracy"]
    assert all(after[k] == before[k] for k in ("train_seconds", "parameters", "target", "ema"))
    capsys.readouterr()
    assert main(["evaluate", str(run), "--checkpoint", "best"]) == 0  # best.pt: printed, not the run's result
    out = capsys.readouterr().out
    assert "no report written: best.pt is not the run's final weights (last.pt)" in out
    assert json.loads((run / "summary.json").read_text()) == after
    elsewhere = tmp_path / "best-report"
    assert main(["evaluate", str(run / "best.pt"), "--out", str(elsewhere)]) == 0
    report = json.loads((elsewhere / "summary.json").read_text())
    assert report["checkpoint"].endswith("best.pt") and "train_seconds" not in report
    assert (elsewhere / "confusion.png").is_file() and json.loads((run / "summary.json").read_text()) == after


def test_evaluating_a_run_that_is_still_training_leaves_its_folder_alone(tiny_idx, tmp_path, capsys):
    """``cnnlab evaluate RUN`` while another process trains RUN wrote summary.json and the figures of a
    mid-training last.pt into it: a stopped run then showed that as its final accuracy."""
    from cnnlab.runs import RunLock

    run = tmp_path / "run"
    train(cfg_for(tiny_idx, epochs=2), out=run, **QUIET)
    (run / "summary.json").unlink()  # as a run still in its first epochs has none yet
    capsys.readouterr()
    with RunLock(run):  # as the training process holds it
        assert main(["evaluate", str(run)]) == 0
    out = capsys.readouterr().out
    assert "no report written: the run is still training" in out and "summary.json holds" not in out
    assert not (run / "summary.json").exists()
    assert main(["evaluate", str(run)]) == 0 and (run / "summary.json").is_file()  # not training: as before


def test_checkpoint_write_killed_midway_keeps_previous(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"model": {"name": "m", "args": {}}, "state_dict": {"w": torch.ones(3)}})

    def crash(src, dst):
        raise KeyboardInterrupt("killed while renaming")

    monkeypatch.setattr(fileio.os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"model": {"name": "m", "args": {}}, "state_dict": {"w": torch.zeros(3)}})
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)["state_dict"]["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_killed_process_resumes_bitwise(tiny_idx, tmp_path):
    """N steps straight == k steps, SIGKILL, resume, N - k steps (on CPU, bitwise)."""
    args = ["train", "--model", "resnet", "--dataset", f"idx:{tiny_idx}", "--epochs", "12", "--batch-size", "32",
            "--device", "cpu", "--threads", "1", "--quiet"]
    straight = tmp_path / "straight"
    assert main([*args, "--out", str(straight)]) == 0
    victim = tmp_path / "victim"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-m", "cnnlab", *args, "--save-every", "5", "--out", str(victim)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    try:
        while time.time() < deadline and proc.poll() is None:
            if (victim / "last.pt").is_file():
                try:
                    if load_checkpoint(victim / "last.pt")["train_state"]["step"] >= 20:
                        break
                except Exception:
                    pass
            time.sleep(0.05)
        assert proc.poll() is None, "the run finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    killed_at = load_checkpoint(victim / "last.pt")["train_state"]["step"]
    assert 20 <= killed_at < 96
    assert main(["train", "--resume", str(victim), "--threads", "1", "--quiet"]) == 0
    a = load_checkpoint(straight / "last.pt")["state_dict"]
    b = load_checkpoint(victim / "last.pt")["state_dict"]
    for k in a:
        assert torch.equal(a[k], b[k]), k
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("seconds", "images_per_s")} for r in rows]  # noqa: E731
    assert strip(read_metrics(straight / "metrics.csv")) == strip(read_metrics(victim / "metrics.csv"))


def test_val_split_chooses_best_on_validation_and_tests_once(tiny_idx, tmp_path):
    res = train(cfg_for(tiny_idx, val_split=0.25, epochs=2), out=tmp_path / "run", **QUIET)
    rows = read_metrics(tmp_path / "run" / "metrics.csv")
    assert all(r["val_acc"] is not None and r["test_acc"] is None for r in rows)
    assert res.final.n == 64  # the whole test set, once at the end
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["split"] == "test" and summary["n"] == 64


def test_compare_of_one_seed_shows_no_spread(tiny_idx, tmp_path):
    """One seed has no sample std: the table gave "96.84 ± 0.00", a spread of zero it never measured."""
    compare(["basic_cnn"], 1, cfg_for(tiny_idx, epochs=1), tmp_path / "cmp", log=lambda m: None)
    table = (tmp_path / "cmp" / "comparison.md").read_text()
    assert "±" not in table and "(one seed: no spread to show)" in table


def test_an_interrupted_compare_says_that_running_it_again_resumes(tiny_idx, tmp_path, monkeypatch):
    import cnnlab.compare
    from cnnlab.errors import Interrupted

    def interrupted(*args, **kwargs):
        raise Interrupted("interrupted at step 5 (...); continue with: cnnlab train --resume R", 130)

    monkeypatch.setattr(cnnlab.compare, "train", interrupted)
    with pytest.raises(Interrupted, match="--resume R; or run the same compare again: it keeps the finished runs") \
            as caught:
        compare(["basic_cnn"], 1, cfg_for(tiny_idx, epochs=1), tmp_path / "cmp", log=lambda m: None)
    assert caught.value.exit_code == 130


def test_compare_on_tiny_data_writes_table_and_reuses_runs(tiny_idx, tmp_path, monkeypatch):
    from cnnlab import drawing, plots

    shown = []  # the comparison figure's context line: the folder of the runs (it said "run cmp")
    monkeypatch.setattr(plots, "context_text", lambda context: shown.append(drawing.context_text(context)) or shown[-1])
    base = cfg_for(tiny_idx, epochs=1)
    logs = []
    res = compare(["basic_cnn", "resnet"], 2, base, tmp_path / "cmp", log=logs.append)
    assert f"dataset idx:{tiny_idx} · folder cmp" in shown
    trained = [m for m in logs if ": trained, final " in m]
    assert len(trained) == 4 and len(logs) == 4  # one line per run, nothing else (the data loaded silently)
    table = (tmp_path / "cmp" / "comparison.md").read_text()
    assert "| basic_cnn | 8,490 |" in table and "| resnet | 41,514 |" in table and "±" in table
    assert (tmp_path / "cmp" / "comparison.png").is_file()
    assert res["results"]["resnet"]["flops"] > res["results"]["basic_cnn"]["flops"] > 0
    logs.clear()
    summaries = [(p / "summary.json").read_text() for p in sorted((tmp_path / "cmp").glob("basic_cnn-*"))]
    import cnnlab.evaluation

    def loaded_twice(*a, **k):
        raise AssertionError("compare's TTA evaluations must reuse the dataset it loaded")

    monkeypatch.setattr(cnnlab.evaluation, "load_dataset", loaded_twice)
    res = compare(["basic_cnn"], 2, base, tmp_path / "cmp", log=logs.append, tta="flip")
    assert sum(": reused, final " in m for m in logs) == 2 and not any(": trained" in m for m in logs)
    assert sum("test accuracy with --tta flip " in m for m in logs) == 2
    table = (tmp_path / "cmp" / "comparison.md").read_text()
    assert "| final acc | best acc | TTA | train s |" in table and "`--tta flip`" in table
    assert res["results"]["basic_cnn"]["tta"][0] == pytest.approx(
        sum(float(m.rsplit(" ", 1)[1].rstrip("%")) for m in logs if "--tta" in m) / 2, abs=0.01)
    # the runs' own results are untouched: TTA is a column beside them
    assert [(p / "summary.json").read_text() for p in sorted((tmp_path / "cmp").glob("basic_cnn-*"))] == summaries
    # a damaged summary.json (not UTF-8, then not JSON) is not a finished run: the run is resumed, which
    # evaluates it again and writes the same summary, instead of a traceback
    damaged = sorted((tmp_path / "cmp").glob("basic_cnn-*"))[0] / "summary.json"
    for junk in (b"\xc3\x28 not text", b'{"accuracy": 9'):
        damaged.write_bytes(junk)
        logs.clear()
        compare(["basic_cnn"], 2, base, tmp_path / "cmp", log=logs.append)
        assert sum(": resumed, final " in m for m in logs) == 1 and sum(": reused, final " in m for m in logs) == 1
        assert json.loads(damaged.read_text())["accuracy"] == json.loads(summaries[0])["accuracy"]


def test_forward_flops_counts_the_lecture_nets():
    # conv1 of basic_cnn alone: 10 filters * 25 MACs * 24*24 positions * 2 FLOPs per MAC
    assert forward_flops(create_model("basic_cnn"), 1, 28) > 2 * 10 * 25 * 24 * 24


def test_export_safetensors_is_readable(tiny_idx, tmp_path):
    from safetensors import safe_open

    train(cfg_for(tiny_idx, epochs=1), out=tmp_path / "run", **QUIET)
    path = export_safetensors(tmp_path / "run")
    with safe_open(str(path), framework="pt") as fh:
        assert fh.metadata()["model"] == "basic_cnn"
        assert {"classes", "normalization_mean", "normalization_std", "model_args"} <= set(fh.metadata())
        weights = {k: fh.get_tensor(k) for k in fh.keys()}
    model = create_model("basic_cnn")
    model.load_state_dict(weights, strict=True)


def test_tensorboard_scalars(tiny_idx, tmp_path):
    pytest.importorskip("tensorboard")
    train(cfg_for(tiny_idx, epochs=1, tensorboard=True), out=tmp_path / "run", **QUIET)
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))


def shift_augment(x, seed, epoch, batch, fill=0.0):
    return parse_augment("shift")(x, seed=seed, epoch=epoch, batch=batch, fill=fill)


def test_shift_augment_moves_content_deterministically():
    x = torch.zeros(4, 1, 8, 8)
    x[:, :, 3:5, 3:5] = 1.0
    a, b = shift_augment(x, 0, 1, 2), shift_augment(x, 0, 1, 2)
    assert torch.equal(a, b) and a.shape == x.shape
    assert torch.equal(a.sum((1, 2, 3)), x.sum((1, 2, 3)))  # a 2 px shift never pushes the block out
    assert not torch.equal(shift_augment(x, 0, 1, 3), a)
    # the uncovered border gets the given fill (the loader's normalised black), not zeros
    filled = shift_augment(torch.full((64, 1, 8, 8), 5.0), 0, 0, 0, fill=-0.5)
    assert set(filled.unique().tolist()) == {-0.5, 5.0}


def test_target_accuracy_stops_early(tiny_idx, tmp_path, monkeypatch):
    import cnnlab.evaluation
    import cnnlab.trainer

    passes, real = [], cnnlab.evaluation.evaluate
    for module in (cnnlab.evaluation, cnnlab.trainer):  # training evaluates through both
        monkeypatch.setattr(module, "evaluate", lambda *a, **k: passes.append(1) or real(*a, **k))
    res = train(cfg_for(tiny_idx, epochs=30, target_accuracy=60.0, evals_per_epoch=2), out=tmp_path / "r", **QUIET)
    assert res.target is not None and res.target["accuracy"] >= 60.0 and res.target["epoch"] < 30
    if res.target["epoch"] % 1:  # stopped mid-epoch: that evaluation is the final one, not repeated
        assert res.final.accuracy == res.target["accuracy"]
    # two evaluations per full epoch (mid, end), one for the stopping mid-epoch check; none repeated for
    # the stop or the report
    epoch = res.target["epoch"]
    assert len(passes) == 2 * int(epoch) + (1 if epoch % 1 else 0)


def test_target_checks_skip_the_full_split_only_when_a_sample_is_far_below(tiny_idx, tmp_path, monkeypatch):
    import cnnlab.trainer
    from cnnlab.data.loader import BatchLoader
    from cnnlab.observers import TargetStop

    sizes, real = [], cnnlab.trainer.evaluate
    monkeypatch.setattr(cnnlab.trainer, "evaluate", lambda m, loader, **k: sizes.append(len(loader.labels))
                        or real(m, loader, **k))
    # a target a net that barely learns never reaches: with screening every check inside an epoch reads a sample
    cfg = cfg_for(tiny_idx, epochs=2, lr=1e-6, target_accuracy=100.0, evals_per_epoch=4)
    plain = train(cfg, out=tmp_path / "plain", **QUIET)  # 64 test images: too few to screen, checked whole
    assert plain.target is None and set(sizes) == {64} and len(sizes) == 2 * (3 + 1)
    sizes.clear()
    monkeypatch.setattr(TargetStop, "SCREEN_SIZE", 8)
    screened = train(cfg, out=tmp_path / "screened", **QUIET)
    assert sizes == [8, 8, 8, 64] * 2  # three samples of every 8th image, then the epoch's full evaluation
    # the checks change nothing but when a run stops: the same weights and the same figures, bit for bit
    a, b = (load_checkpoint(r.run_dir / "last.pt")["state_dict"] for r in (plain, screened))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (plain.final.accuracy, plain.final.loss) == (screened.final.accuracy, screened.final.loss)
    # a reachable target is still found mid-epoch by the full split, as without screening
    sizes.clear()
    res = train(cfg_for(tiny_idx, epochs=30, target_accuracy=60.0, evals_per_epoch=2), out=tmp_path / "r", **QUIET)
    assert res.target is not None and res.target["accuracy"] >= 60.0 and 64 in sizes
    # the sample follows any order of the items: every k-th one, the same shard and normalisation
    loader = BatchLoader(torch.arange(20, dtype=torch.uint8).view(20, 1, 1, 1), torch.arange(20), 4, mean=0.0,
                         std=1 / 255, shuffle=False)
    sub = loader.every(5)
    assert sub.labels.tolist() == [0, 5, 10, 15] and (sub.scale, sub.shift) == (loader.scale, loader.shift)
    assert [y.tolist() for _, y in sub] == [[0, 5, 10, 15]] and loader.labels.tolist() == list(range(20))


def test_bf16_and_channels_last_train(tiny_idx, tmp_path):
    res = train(cfg_for(tiny_idx, epochs=1, precision="bf16", channels_last=True, model="inception"), write=False, **QUIET)
    assert res.history and res.final.n == 64


@pytest.mark.parametrize("crash_at", [1, 2, 3])
def test_checkpoint_and_checksum_stay_consistent_whenever_the_writer_dies(tmp_path, monkeypatch, crash_at):
    """Killed before/between/after the renames of a save, last.pt always loads (old or new)."""
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"model": {"name": "m", "args": {}}, "state_dict": {"w": torch.ones(3)}})
    real_replace, calls = os.replace, []

    def replace(src, dst):
        calls.append(dst)
        if len(calls) == crash_at:
            raise KeyboardInterrupt("killed")
        real_replace(src, dst)

    monkeypatch.setattr(fileio.os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"model": {"name": "m", "args": {}}, "state_dict": {"w": torch.zeros(3)}})
    monkeypatch.undo()
    w = load_checkpoint(path)["state_dict"]["w"]
    assert torch.equal(w, torch.ones(3) if crash_at <= 2 else torch.zeros(3))


# ----------------------------------------------------------------------------- report and plots


def _captured_figures(monkeypatch) -> list:
    """Figures handed to cnnlab.plots.save_figure, kept for inspection (the PNGs are still written)."""
    from cnnlab import plots

    figs, real = [], plots.save_figure
    monkeypatch.setattr(plots, "save_figure", lambda fig, path, **kw: figs.append(fig) or real(fig, path, **kw))
    return figs


def test_neither_a_training_nor_an_evaluation_imports_matplotlib(tiny_idx, tmp_path):
    """matplotlib costs 1-2 s to import: a run's figures (curves, confusion matrix, mistakes) are drawn with
    Pillow, so neither `train` nor `evaluate` (which redraws the confusion matrix and mistakes) imports it."""
    run = tmp_path / "run"
    args = ["train", "--dataset", f"idx:{tiny_idx}", "--model", "basic_cnn", "--epochs", "1", "--batch-size", "32",
            "--device", "cpu", "--quiet", "--out", str(run)]
    code = ("import sys, pathlib, cnnlab.report, cnnlab.evaluation, cnnlab.plots\n"
            "loaded = lambda: print('matplotlib' in sys.modules)\nloaded()\n"
            f"from cnnlab.cli import main\nassert main({args!r}) == 0\nloaded()\n"
            f"for name in ('confusion.png', 'mistakes.png'): (pathlib.Path({str(run)!r}) / name).unlink()\n"
            f"assert main(['evaluate', {str(run)!r}]) == 0\nloaded()\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert [line for line in out.splitlines() if line in ("True", "False")] == ["False"] * 3, out
    assert "wrote summary.json, confusion.png, mistakes.png" in out, out
    assert all((run / name).stat().st_size > 10_000 for name in ("curves.png", "confusion.png", "mistakes.png"))


def test_per_class_f1_and_undefined_ratios():
    from cnnlab.report import format_table, per_class_metrics

    # class a: 8 right, 2 taken for b; class b: 5 right, 0 wrong; class c: never seen, never predicted
    rows = per_class_metrics(torch.tensor([[8, 2, 0], [0, 5, 0], [0, 0, 0]]), ["a", "b", "c"])
    a, b, c = rows
    assert a["precision"] == pytest.approx(100.0) and a["recall"] == pytest.approx(80.0)
    assert a["f1"] == pytest.approx(100 * 2 * 8 / (2 * 8 + 2)) == pytest.approx(2 * 100 * 80 / (100 + 80))
    assert b["precision"] == pytest.approx(100 * 5 / 7) and b["recall"] == pytest.approx(100.0)
    assert c == {"class": "c", "support": 0, "precision": None, "recall": None, "f1": None}
    table = format_table(rows).splitlines()
    assert table[0].split() == ["class", "precision", "recall", "F1", "support"]
    assert table[3].split() == ["c", "n/a", "n/a", "n/a", "0"]
    # class names are written whole (two folder classes of 200 characters that differ at the end were both
    # 'xxxxxxxxxxxxxx'); the column fits names of up to 40 characters, a longer one pushes its own row right
    names = ["a" * 30, "x" * 199 + "1", "x" * 199 + "2"]
    long = format_table(per_class_metrics(torch.eye(3, dtype=torch.long), names)).splitlines()
    assert [line.split()[0] for line in long[1:]] == names
    end = long[0].index("precision") + len("precision")  # the column's right edge
    assert end == 40 + 1 + len("precision") and long[1].index("100.00%") + len("100.00%") == end


def test_the_per_class_table_of_many_classes_shows_the_worst_and_says_so():
    """A folder of 10,000 classes printed a table of 10,000 lines at the end of every run and evaluate."""
    from cnnlab.report import format_table

    rows = [{"class": f"c{i}", "support": 1, "precision": 100.0, "recall": 100.0, "f1": 100.0 - (i % 7)}
            for i in range(250)]
    rows[40] = {"class": "c40", "support": 0, "precision": None, "recall": None, "f1": None}
    table = format_table(rows, most=20).splitlines()
    shown = [line.split()[0] for line in table[1:-1]]
    assert len(shown) == 20 and "c40" in shown and table[-1].startswith("(the 20 classes of the lowest F1 shown; 230 more")
    assert all(rows[int(name[1:])]["f1"] in (None, 94.0) for name in shown)  # undefined first, then the lowest
    assert shown == sorted(shown, key=lambda name: int(name[1:]))  # in the classes' order
    assert len(format_table(rows[:20], most=20).splitlines()) == 21  # no line when every class is shown


def _report_inputs(n: int = 40, epochs: int = 1) -> dict:
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % 10
    probs = torch.rand(n, 10, generator=g).softmax(1)
    history = [{"epoch": e, "train_loss": 1.0 / e, "test_loss": 1.1 / e, "train_acc": 50.0 + e, "test_acc": 55.0 + e,
                "val_acc": None} for e in range(1, epochs + 1)]
    return {"history": history, "labels": labels, "predictions": probs.argmax(1), "probabilities": probs,
            "images": torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=g),
            "classes": [str(i) for i in range(10)], "loss": float("nan"), "accuracy": 10.0}


def test_summary_json_is_strict_json_and_figures_carry_the_context(tmp_path, monkeypatch):
    from cnnlab.report import summarize, write_report

    from cnnlab import drawing

    shown, real = [], drawing.context_text  # the context line under each figure's title, as drawn
    monkeypatch.setattr(drawing, "context_text", lambda context: shown.append(real(context)) or shown[-1])
    given = _report_inputs()
    summary = summarize(**{k: given[k] for k in ("labels", "predictions", "probabilities", "classes", "loss",
                                                 "accuracy")}, extra={"train_seconds": float("inf")})
    write_report(tmp_path / "my-run", summary, history=given["history"], images=given["images"],
                 classes=given["classes"], context={"model": "inception", "dataset": "mnist"}).wait()
    text = (tmp_path / "my-run" / "summary.json").read_text()
    data = json.loads(text, parse_constant=lambda c: pytest.fail(f"summary.json holds a bare {c}"))
    assert data["loss"] is None and data["train_seconds"] is None and data["accuracy"] == 10.0
    assert summary["accuracy"] == 10.0
    assert len(shown) == 3  # curves, confusion matrix, mistakes: all drawn with Pillow
    assert all(line == "model inception · dataset mnist · run my-run" for line in shown)
    for name in ("curves.png", "confusion.png", "mistakes.png"):
        with Image.open(tmp_path / "my-run" / name) as im:
            assert im.format == "PNG" and min(im.size) > 200


def test_a_report_of_the_same_evaluation_keeps_its_figures_and_redraws_what_changed(tmp_path):
    from cnnlab.report import summarize, write_report

    given = _report_inputs()
    keys = ("labels", "predictions", "probabilities", "classes", "loss", "accuracy")
    run_dir = tmp_path / "run"

    def report(extra=None, **changed):
        summary = summarize(**{k: changed.get(k, given[k]) for k in keys}, extra=extra)
        figures = write_report(run_dir, summary, history=[], images=given["images"], classes=given["classes"])
        figures.wait()
        return figures

    assert report().names == ["confusion.png", "mistakes.png"]
    first = {n: (run_dir / n).read_bytes() for n in ("confusion.png", "mistakes.png")}
    again = report(extra={"checkpoint": "best.pt"})  # another extra: the figures show the same evaluation
    assert again.names == [] and again.kept == ["confusion.png", "mistakes.png"]
    assert all((run_dir / n).read_bytes() == b for n, b in first.items())
    assert report().names == []  # kept figures stay current for the next report too

    probs = given["probabilities"].clone()
    probs[0, (given["labels"][0] + 1) % 10] += 5.0  # one more confident mistake: both figures change
    assert report(probabilities=probs, predictions=probs.argmax(1)).names == ["confusion.png", "mistakes.png"]
    (run_dir / "mistakes.png").unlink()
    assert report(probabilities=probs, predictions=probs.argmax(1)).names == ["mistakes.png"]
    stale = run_dir / "confusion.png"  # older than the summary beside it (a report stopped before drawing it)
    os.utime(stale, (1_000_000, 1_000_000))
    assert report(probabilities=probs, predictions=probs.argmax(1)).names == ["confusion.png"]
    (run_dir / "summary.json").write_text("{not json")
    assert report(probabilities=probs, predictions=probs.argmax(1)).names == ["confusion.png", "mistakes.png"]
    report(probabilities=probs, predictions=probs.argmax(1), classes=[f"c{i}" for i in range(10)])
    assert report(probabilities=probs, predictions=probs.argmax(1)).names == ["confusion.png", "mistakes.png"]


def test_one_epoch_curves_show_each_point_as_a_marker(tmp_path):
    """With one epoch there is no line to draw: every series must still show, as a marker."""
    import numpy as np

    from cnnlab.drawing import COLOURS
    from cnnlab.plots import plot_curves

    history = _report_inputs(epochs=1)["history"]
    empty = [{k: (v if k == "epoch" else None) for k, v in r.items()} for r in history]  # the legend alone
    near = lambda path, c: int((np.abs(np.asarray(Image.open(path).convert("RGB")).astype(int) - c).sum(2) < 40).sum())  # noqa: E731
    for colour in ("blue", "orange", "green", "gray"):
        drawn = near(plot_curves(history, tmp_path / "one.png"), COLOURS[colour])
        legend_only = near(plot_curves(empty, tmp_path / "none.png"), COLOURS[colour])
        assert drawn - legend_only > 20, colour  # a marker's worth of pixels more than the legend's sample


def test_comparison_draws_error_bars_for_few_epochs_and_a_band_for_many(tmp_path, monkeypatch):
    from matplotlib.collections import PolyCollection
    from matplotlib.container import ErrorbarContainer

    from cnnlab.plots import plot_comparison

    figs = _captured_figures(monkeypatch)
    one = {"a": {"epochs": [1], "mean": [97.0], "std": [0.4], "n": 3}, "b": {"epochs": [1], "mean": [98.0], "std": [0.2], "n": 3}}
    plot_comparison(one, tmp_path / "one.png", title="t", context={"dataset": "mnist", "run": "cmp"})
    many = {"a": {"epochs": list(range(1, 11)), "mean": [90.0 + e for e in range(10)], "std": [0.5] * 10, "n": 2}}
    plot_comparison(many, tmp_path / "many.png")
    ax_one, ax_many = figs[0].axes[0], figs[1].axes[0]
    bars = [c for c in ax_one.containers if isinstance(c, ErrorbarContainer)]
    assert len(bars) == 2 and not any(isinstance(c, PolyCollection) for c in ax_one.collections)
    caps = sorted(float(cap.get_ydata()[0]) for cap in bars[0].lines[1])  # the first model's caps: mean -+ std
    assert caps == pytest.approx([96.6, 97.4])
    assert "dataset mnist" in figs[0].get_suptitle() and "error bars = ±1 std" in figs[0].get_suptitle()
    assert any(isinstance(c, PolyCollection) for c in ax_many.collections) and "band" in figs[1].get_suptitle()
    assert len(figs[0].axes) == 1
    # with many epochs a second panel zooms into the second half of the shortest training, every model in it
    many["b"] = {"epochs": list(range(1, 5)), "mean": [50.0, 97.0, 98.0, 98.5], "std": [9.0, 1.0, 0.5, 0.3], "n": 2}
    plot_comparison(many, tmp_path / "two.png")
    whole, zoom = figs[2].axes
    assert zoom.get_title() == "epochs 2-10, zoomed" and len(zoom.lines) == 2
    assert [list(line.get_xdata()) for line in zoom.lines] == [list(range(2, 11)), [2, 3, 4]]
    assert zoom.get_ylim()[0] > 85 and whole.get_ylim()[0] < 50  # the zoom leaves the first epoch's 50% out


def test_mistakes_mosaic_is_one_picture_with_labelled_tiles(tmp_path):
    import numpy as np

    from cnnlab.plots import TILE, mistakes_mosaic, plot_mistakes

    images = [torch.zeros(28, 28, dtype=torch.uint8) for _ in range(7)]
    images[0][10:18, 10:18] = 255  # ink: drawn dark on the white tile
    mistakes = [{"index": i, "true": i, "pred": (i + 1) % 10, "confidence": 0.9} for i in range(7)]
    pic = mistakes_mosaic(images, mistakes, [str(i) for i in range(10)], cols=6, title="t", context={"run": "r"})
    a = np.asarray(pic.convert("L"))
    assert pic.width >= 6 * TILE and a.shape[0] < 2 * (TILE + 60) + 80  # two rows of tiles, no gap above them
    assert (a < 30).sum() >= (8 * 4) ** 2  # the ink of the first digit, enlarged 4x
    path = plot_mistakes(images, mistakes, [str(i) for i in range(10)], tmp_path / "m.png", context={"run": "r"})
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size == pic.size
    none = plot_mistakes([], [], ["0", "1"], tmp_path / "none.png")
    assert none.is_file()


def test_confusion_matrix_is_one_picture_coloured_by_share_of_the_true_class(tmp_path):
    import numpy as np

    from cnnlab.plots import blues, confusion_image, plot_confusion

    assert blues(0.0) == (247, 251, 255) and blues(1.0) == (8, 48, 107) and blues(7.0) == blues(1.0)
    pic = confusion_image([[9, 1], [0, 10]], ["cat", "dog"], title="t", context={"run": "r"})
    a = np.asarray(pic)
    count = lambda colour: int((a == np.array(colour, dtype=np.uint8)).all(axis=2).sum())  # noqa: E731
    cell = 56 * 56  # px: a cell of a small matrix, less its count's text and its share of the colour bar
    for share in (0.9, 0.1, 1.0):
        assert count(blues(share)) > cell // 2, share
    assert count(blues(0.5)) < 40  # no cell holds half its row: only the colour bar's line of that shade
    wide = confusion_image([[1] * 47 for _ in range(47)], [f"class_{i}" for i in range(47)], context={"run": "r"})
    assert wide.width >= 47 * 18 and wide.height >= 47 * 18  # every column wide enough for its slanted name
    huge = confusion_image([[int(i == j) for j in range(300)] for i in range(300)], [f"c{i}" for i in range(300)])
    assert max(huge.size) < 1600  # past 80 classes: small cells, no names, a picture that still fits a screen
    long = confusion_image([[9, 1], [0, 10]], ["cat", "dog"], title="t", context={"run": "r" * 30, "model": "m" * 30})
    assert long.width == pic.width and long.height > pic.height  # a long context wraps instead of being cut
    path = plot_confusion([[9, 1], [0, 10]], ["cat", "dog"], tmp_path / "c.png", context={"run": "r"})
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size == confusion_image([[9, 1], [0, 10]], ["cat", "dog"], "confusion matrix (colour: share of true class)", {"run": "r"}).size


def test_compare_names_the_epochs_trained_without_augmentation():
    from cnnlab.compare import describe_settings

    fashion = describe_settings(TrainConfig(model="resnet", dataset="fashion-mnist", recipe="best",
                                            clean_epochs=7).validate())
    assert "augment shift+flip+erase:p=0.5 (not in the last 7 epochs)" in fashion
    digits = describe_settings(TrainConfig(model="resnet", recipe="best").validate())
    assert "augment affine:rotate=10,scale=0.1,translate=0.1," in digits and "not in the last" not in digits


def test_runs_of_a_run_folder_or_a_file(tiny_idx, tmp_path):
    """``cnnlab runs --root RUN`` said "no runs under RUN/ yet"; ``--root`` a file said the same."""
    from cnnlab.errors import RunError
    from cnnlab.runs import find_runs

    run = tmp_path / "runs" / "one"
    train(cfg_for(tiny_idx, epochs=1), out=run, quiet=True, log=lambda m: None)
    assert find_runs(run) == [run] and find_runs(tmp_path / "runs") == [run] and find_runs(tmp_path / "none") == []
    (tmp_path / "f").write_text("x")
    with pytest.raises(RunError, match="f is a file, not a folder of runs"):
        find_runs(tmp_path / "f")
    # a link back to the folder of runs listed every run twice (once more one level below, as a compare's);
    # a link loop is no folder; a link to a run elsewhere is that run, once
    (tmp_path / "runs" / "back").symlink_to(tmp_path / "runs")
    (tmp_path / "runs" / "loop").symlink_to(tmp_path / "runs" / "loop")
    assert find_runs(tmp_path / "runs") == [run]
    elsewhere = tmp_path / "other" / "two"
    train(cfg_for(tiny_idx, epochs=1), out=elsewhere, quiet=True, log=lambda m: None)
    (tmp_path / "runs" / "linked").symlink_to(elsewhere)
    assert sorted(find_runs(tmp_path / "runs")) == [tmp_path / "runs" / "linked", run]


def test_a_damaged_metrics_csv_is_one_line_and_evaluate_still_answers(tiny_idx, tmp_path, capsys):
    """A metrics.csv that is not UTF-8 (or holds a word where a number goes): ``cnnlab evaluate RUN`` was a
    UnicodeDecodeError traceback, ``cnnlab.load_run`` the same."""
    import cnnlab
    from cnnlab.errors import RunError
    from cnnlab.runs import read_metrics

    run = tmp_path / "run"
    train(cfg_for(tiny_idx, epochs=1), out=run, **QUIET)
    for damage in (b"epoch,step\nx,y\n\xff\xfe", b"epoch,step\n1,2,3,4\n", b"epoch,test_acc\n1,high\n"):
        (run / "metrics.csv").write_bytes(damage)
        with pytest.raises(RunError, match=r"metrics.csv: damaged \(.*\); delete it: the run's checkpoints do not need it"):
            read_metrics(run / "metrics.csv")
        with pytest.raises(cnnlab.CnnlabError, match="metrics.csv: damaged"):
            cnnlab.load_run(run)
        capsys.readouterr()
        assert main(["evaluate", str(run)]) == 0
        out, err = capsys.readouterr()
        assert "accuracy" in out and err.startswith("cnnlab: warning: curves.png not redrawn: ") and err.count("\n") == 1


def test_evaluating_a_net_on_data_of_another_shape_is_one_line(tiny_idx, tmp_path, capsys):
    """A 3-class folder net evaluated on a 10-class dataset: an IndexError traceback from the loss."""
    from test_datasets_more import make_folder

    root = make_folder(tmp_path / "pics")
    run = tmp_path / "run"
    assert main(["train", "--model", "basic_cnn", "--dataset", f"folder:{root}", "--epochs", "1", "--device", "cpu",
                 "--out", str(run), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(run), "--dataset", f"idx:{tiny_idx}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the net does not fit idx:" in err and "3 classes (the data: 10)" in err


def test_compare_refuses_to_reuse_runs_of_a_dataset_that_changed(tmp_path):
    """``cnnlab compare --dataset folder:pics``, images added to pics, the same compare again: every run was
    "reused", its figures from the old images presented as today's."""
    import cnnlab
    from test_datasets_more import make_folder

    root = make_folder(tmp_path / "pics", per_class={"cat": 6, "dog": 6})
    base = TrainConfig(dataset=f"folder:{root}", epochs=1, batch_size=8, device="cpu")
    compare(["basic_cnn"], 1, base, tmp_path / "cmp", log=lambda m: None)
    compare(["basic_cnn"], 1, base, tmp_path / "cmp", log=lambda m: None)  # unchanged: reused
    make_folder(root, per_class={"cat": 12, "dog": 6})
    with pytest.raises(cnnlab.CnnlabError, match=r"trained on another version of folder:.* than it holds now \(the number of train images, the "
                                          r"number of test images, the train images' mean and their spread differ "
                                          r"\(10 train / 2 test images then, 15 / 3 now\)\)"):
        compare(["basic_cnn"], 1, base, tmp_path / "cmp", log=lambda m: None)


def _digests(*folders):
    return {p: fileio.sha256_file(p) for f in folders for p in sorted(f.iterdir()) if p.is_file()}


def test_no_export_report_or_analysis_writes_over_a_runs_files(tiny_idx, tmp_path, capsys):
    """Found by probing: ``cnnlab export r1 --out r1/last.pt`` replaced the run's checkpoint with an ONNX file, and
    ``cnnlab evaluate r2 --out r1`` replaced r1's summary.json and figures with r2's (``cnnlab runs`` then listed r1
    at r2's accuracy). Each is refused before anything is loaded or written; a run's own exports still go beside it."""
    r1, r2 = tmp_path / "r1", tmp_path / "r2"
    train(cfg_for(tiny_idx), out=r1, **QUIET)
    train(cfg_for(tiny_idx, seed=1), out=r2, **QUIET)
    (tmp_path / "copy.pt").write_bytes((r2 / "last.pt").read_bytes())
    (tmp_path / "copy.pt.sha256").write_bytes((r2 / "last.pt.sha256").read_bytes())
    before = _digests(r1, r2, tmp_path)
    refused = {
        ("export", r1, "--out", r1 / "last.pt"): "is the checkpoint being exported",
        ("export", r1, "--format", "torchscript", "--out", r1 / "best.pt"): "is a cnnlab checkpoint",
        ("export", r1, "--format", "torchscript", "--out", r1 / "teacher.pt"): "is this run's own file",
        ("export", r1, "--out", r1 / "config.json"): "is this run's own file",
        ("export", r1, "--out", r1 / ".lock"): "is this run's own file",
        ("export", r1, "--out", r2 / "last.onnx"): "is another run's own file",
        ("export", r1, "--out", tmp_path / "copy.pt"): "is a cnnlab checkpoint",
        ("export-weights", r1, "--out", r1 / "metrics.csv"): "is this run's own file",
        ("export-weights", r1, "--out", r2 / "model.safetensors"): "is another run's own file",
        ("export-weights", r1, "--out", r2 / "last.pt.sha256"): "is another run's own file",
        ("evaluate", r2, "--out", r1): "holds another run",
        ("evaluate", r1, "--checkpoint", "best", "--out", r1): "the run's own folder, and this evaluation is not",
        ("analyze", "branches", r2, "--out", r1): "holds another run",
        ("analyze", "gradients", "--depths", "2", "--out", r1): "holds another run",
        ("compare", "--models", "basic_cnn", "--seeds", "1", "--dataset", f"idx:{tiny_idx}", "--out", r1): "holds another run",
    }
    for args, message in refused.items():
        assert main([str(a) for a in args]) == 2, args
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, (args, err)
    assert _digests(r1, r2, tmp_path) == before
    assert main(["export-weights", str(r1)]) == 0 and main(["export-weights", str(r1)]) == 0  # its own, again
    assert main(["export", str(r1), "--format", "torchscript", "--samples", "8"]) == 0
    assert main(["export", str(r1), "--samples", "8", "--out", str(r1 / "mine.onnx")]) == 0
    assert main(["evaluate", str(r1), "--out", str(r1)]) == 0
    assert {"model.safetensors", "last.torchscript.pt", "mine.onnx"} <= {p.name for p in r1.iterdir()}
    assert load_checkpoint(r1 / "last.pt") and load_checkpoint(r2 / "last.pt")


def test_runs_shows_every_name_whole_and_on_its_own_row():
    """Found by probing: a run folder named with a newline split its row in two, and a name over 44 characters
    was cut from the left without a mark (copied into --resume, it named another folder)."""
    from cnnlab.cli.runs import format_runs

    base = {"model": "resnet", "dataset": "mnist", "recipe": "lecture", "teacher": None, "epochs": 10,
            "epochs_done": 1, "final_acc": 90.0, "best_acc": None, "train_seconds": 3.0, "status": "stopped",
            "detail": "interrupted"}
    compared = "runs/compare-fashion-mnist-best-taught-by-resnet/inception-seed1-edd1601c"  # 72 characters
    longer = "runs/" + "x" * 100  # over 64: whole, and the rest of its own row pushed right
    rows = [{**base, "run": r} for r in ("runs/new\nline", compared, "tab\there", longer)]
    lines = format_runs(rows).splitlines()
    assert len(lines) == 5 and lines[1].startswith("$'runs/new\\nline' ") and lines[2].startswith(compared + " ")
    assert lines[3].startswith("$'tab\\there' ") and lines[1].index(" resnet ") == lines[3].index(" resnet ") == 64
    assert lines[4].startswith(longer + " resnet ")


def test_a_net_scored_on_another_datasets_classes_is_warned_about(tiny_idx, tmp_path, capsys):
    """An MNIST net evaluated on Fashion-MNIST printed 8% and a per-class table of clothes without a word: the
    classes it learned are not the data's. Now a warning line first; the same classes (an idx: copy) say nothing."""
    from types import SimpleNamespace

    from cnnlab.cli import main
    from cnnlab.evaluation import other_classes

    fashion = SimpleNamespace(name="fashion-mnist", classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat"))
    warning = other_classes([str(d) for d in range(10)], "mnist", fashion)
    assert warning == ("warning: the net learned the classes of mnist (0, 1, 2, 3, ...), and fashion-mnist's are "
                       "others (T-shirt/top, Trouser, Pullover, Dress, ...): its output i is scored as fashion-mnist's "
                       "class i")
    assert other_classes(None, "mnist", fashion) == "" and other_classes(list(fashion.classes), "x", fashion) == ""
    run = tmp_path / "run"
    assert main(["train", "--model", "basic_cnn", "--dataset", f"idx:{tiny_idx}", "--epochs", "1", "--quiet",
                 "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(run), "--no-report"]) == 0 and "warning" not in capsys.readouterr().err
    from PIL import Image

    for i, name in enumerate(["ant", "bee", "cat", "dog", "eel", "fox", "gnu", "hen", "ibis", "jay"]):
        (tmp_path / "animals" / name).mkdir(parents=True)
        for j in range(2):
            Image.new("L", (28, 28), 40 * j + i).save(tmp_path / "animals" / name / f"{j}.png")
    code = main(["evaluate", str(run), "--dataset", f"folder:{tmp_path / 'animals'}", "--no-report"])
    assert code == 0 and "cnnlab: warning: the net learned the classes of idx" in capsys.readouterr().err


def test_a_report_never_replaces_a_users_file_in_a_folder_that_is_not_a_reports(tiny_idx, tmp_path, capsys):
    """``cnnlab evaluate RUN --out .`` in a project whose own summary.json sits beside its README replaced it (and
    analyze or compare likewise their files): refused now; a report's own folder is rewritten as before."""
    from cnnlab.cli import main

    run = tmp_path / "run"
    train(cfg_for(tiny_idx, epochs=1), out=run, quiet=True, log=lambda m: None)
    project = tmp_path / "project"
    project.mkdir()
    (project / "summary.json").write_text('{"mine": true}')
    (project / "README.md").write_text("my project")
    for argv in (["evaluate", str(run), "--out", str(project)],
                 ["analyze", "gradients", "--depths", "2", "--width", "2", "--epochs", "0",
                  "--dataset", f"idx:{tiny_idx}", "--out", str(project)]):
        (project / "gradients.json").write_text('{"mine": true}')
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert f"--out {project} is not a cnnlab report's folder (it holds 'README.md')" in err and "replace" in err
    assert (project / "summary.json").read_text() == '{"mine": true}' == (project / "gradients.json").read_text()
    # nothing to replace: written beside the user's files; a report's folder: rewritten
    (project / "gradients.json").unlink()
    assert main(["analyze", "gradients", "--depths", "2", "--width", "2", "--epochs", "0", "--dataset",
                 f"idx:{tiny_idx}", "--out", str(project)]) == 0
    report = tmp_path / "report"
    for _ in range(2):
        assert main(["evaluate", str(run), "--out", str(report)]) == 0
    assert (report / "summary.json").is_file() and (project / "README.md").read_text() == "my project"


def test_a_fifo_in_a_run_folder_never_blocks_runs_evaluate_or_load_run(tiny_idx, tmp_path, capsys):
    """Found by probing: a FIFO in the place of a run's status.json, metrics.csv or summary.json (or its .lock)
    hung ``cnnlab runs``, ``cnnlab evaluate RUN`` and ``cnnlab.load_run`` (opening it waits for a writer). Now it
    is opened without blocking, checked to be a file, and the run is listed as damaged, in one line."""
    import cnnlab
    from cnnlab.runs import describe_run, is_running
    from apps_helpers import deadline

    run = tmp_path / "runs" / "r1"
    train(cfg_for(tiny_idx, epochs=1), out=run, **QUIET)
    saved = {name: (run / name).read_bytes() for name in ("status.json", "metrics.csv", "summary.json")}
    for name in (*saved, ".lock"):
        (run / name).unlink()
        os.mkfifo(run / name)
        with deadline(60):
            assert not is_running(run)
            if name == ".lock":
                continue
            row = describe_run(run)
            assert row["status"] == "damaged" and row["detail"] == (
                f"{name}: is a FIFO (named pipe), not a file cnnlab writes; replace it with the file or remove it"), row
            assert cnnlab.load_run(run).status == "damaged"
            capsys.readouterr()
            assert main(["runs", "--root", str(tmp_path / "runs")]) == 0
            out = capsys.readouterr().out
            assert out.count("\n") == 2 and f"damaged ({name}: is a FIFO (named pipe)" in out
            assert main(["evaluate", str(run)]) in (0, 1)  # its accuracy, the report written where it can be
            assert "accuracy" in capsys.readouterr().out
        (run / name).unlink()
        (run / name).write_bytes(saved.get(name, b""))


def test_a_config_json_edited_to_a_value_of_another_type_lists_the_run_as_damaged(tiny_idx, tmp_path, capsys,
                                                                                    monkeypatch):
    """Found by probing: ``"epochs": "2"`` typed into one run's config.json made ``cnnlab runs`` (and --json,
    --status, ``cnnlab.list_runs``, ``load_run``) a TypeError traceback for every run under the root."""
    import cnnlab
    from cnnlab.errors import CnnlabError

    monkeypatch.chdir(tmp_path)
    for name in ("r1", "r2"):
        train(cfg_for(tiny_idx, epochs=1), out=tmp_path / "runs" / name, **QUIET)
    path = tmp_path / "runs" / "r1" / "config.json"
    path.write_text(path.read_text().replace('"epochs": 1,', '"epochs": "1",'))
    said = "config.json: epochs must be int (or null), got '1'"
    assert main(["runs"]) == 0
    table = capsys.readouterr().out
    assert f"damaged ({said}" in table and "runs/r2 " in table and table.count("\n") == 3
    assert main(["runs", "--status", "damaged", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["run"], r["model"], r["epochs"], r["epochs_done"]) for r in rows] == [("runs/r1", "basic_cnn", None, 1)]
    assert rows[0]["detail"].startswith(said)
    assert {r["status"] for r in cnnlab.list_runs()} == {"finished", "damaged"}
    with pytest.raises(CnnlabError, match=r"config\.json: epochs must be int \(or null\), got '1'"):
        cnnlab.load_run("runs/r1")  # one line naming the file and the field, not a TypeError from inside
    from cnnlab.runs import run_config

    with pytest.raises(CnnlabError) as err:  # the one line that load_run can raise (cnnlab.api's to call)
        run_config(tmp_path / "runs" / "r1")
    assert str(err.value).startswith(f"{path}: epochs must be int (or null), got '1'") and "\n" not in str(err.value)
    path.write_text('{"config": [1]}')
    assert cnnlab.list_runs(status="damaged")[0]["detail"].startswith("config.json: not the file cnnlab writes there")


def test_a_status_json_is_shown_escaped_and_bounded(tiny_idx, tmp_path, capsys):
    """Found by probing: ``cnnlab runs`` printed a status.json's status with its newline raw (a forged row), and a
    1 MB detail whole (a line of 1,000,244 bytes)."""
    from cnnlab.runs import describe_run

    run = tmp_path / "runs" / "r1"
    train(cfg_for(tiny_idx, epochs=1), out=run, **QUIET)
    (run / "status.json").write_text(json.dumps({"status": "finished\nFAKE ROW", "detail": ""}))
    capsys.readouterr()
    assert main(["runs", "--root", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 2 and "FAKE ROW" in out and "\nFAKE ROW" not in out
    assert "damaged (status.json: not what cnnlab writes there (status 'finished\\nFAKE ROW'" in out
    (run / "status.json").write_text(json.dumps({"status": "failed", "detail": "x\n" * 500_000}))
    assert len(describe_run(run)["detail"]) <= 500
    assert main(["runs", "--root", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 2 and len(out) < 2000 and "failed (x\\nx\\n" in out and out.endswith("...)\n")


def test_a_run_that_lost_last_pt_but_has_best_pt_says_so(tiny_idx, tmp_path, capsys):
    """``cnnlab runs`` said "failed (no checkpoint was saved)" of a run that holds best.pt."""
    from cnnlab.runs import describe_run

    run = tmp_path / "run"
    train(cfg_for(tiny_idx, epochs=1), out=run, **QUIET)
    for name in ("last.pt", "last.pt.sha256", "status.json", "summary.json"):
        (run / name).unlink()
    row = describe_run(run)
    command = f"cnnlab evaluate {run} --checkpoint best"
    assert (row["status"], row["detail"]) == ("failed", "no last.pt to resume from; best.pt holds the weights of its "
                                                        f"best epoch: {command}")
    capsys.readouterr()
    assert main(command.split()[1:]) == 0 and "accuracy" in capsys.readouterr().out  # the advice works
