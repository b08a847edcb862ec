"""The Python API (``import cnnlab``), runs you can find, configs you can re-run, and pretrained weights."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import cnnlab
from cnnlab.checkpoint import load_checkpoint
from cnnlab.cli import main
from cnnlab.errors import CheckpointError, CnnlabError, Diverged, RunError
from cnnlab.runs import RunLock, describe_run, find_runs, resolve_run

TINY = dict(epochs=1, batch_size=32, device="cpu", lr=0.05)


def weights_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_import_cnnlab_is_cheap_and_the_api_loads_on_first_use():
    code = ("import sys, cnnlab; print('torch' in sys.modules); cnnlab.list_runs; print('torch' in sys.modules); "
            "cnnlab.create_model('basic_cnn'); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False", "True"]  # the API reads runs without torch; a net needs it
    assert set(cnnlab.__all__) <= set(dir(cnnlab))
    with pytest.raises(AttributeError):
        cnnlab.no_such_thing  # noqa: B018


def test_train_applies_the_recipe_exactly_as_the_cli_does(tiny_idx, tmp_path):
    api = cnnlab.train("basic_cnn", dataset=f"idx:{tiny_idx}", recipe="fast", out=tmp_path / "api", quiet=True,
                       device="cpu", epochs=1)
    assert main(["train", "--model", "basic_cnn", "--dataset", f"idx:{tiny_idx}", "--recipe", "fast", "--epochs", "1",
                 "--device", "cpu", "--out", str(tmp_path / "cli"), "--quiet"]) == 0
    a, b = (json.loads((tmp_path / n / "config.json").read_text())["config"] for n in ("api", "cli"))
    assert a == b and a["optimizer"] == "adam" and a["batch_size"] == 128  # the fast recipe ran, not the lecture's
    assert weights_equal(api.model.state_dict(), load_checkpoint(tmp_path / "cli" / "last.pt")["state_dict"])


def test_quiet_means_quiet(tiny_idx, tmp_path, capsys):
    cnnlab.train("basic_cnn", dataset=f"idx:{tiny_idx}", out=tmp_path / "run", quiet=True, **TINY)
    out, err = capsys.readouterr()
    assert out == "" and err == ""


def test_a_run_stopped_mid_epoch_gives_sane_results(tiny_idx, tmp_path):
    res = cnnlab.train("basic_cnn", dataset=f"idx:{tiny_idx}", out=tmp_path / "run", quiet=True, max_steps=3, **TINY)
    assert res.best_accuracy is None and res.stopped == "step limit" and res.history == []
    assert 0 <= res.final.accuracy <= 100
    # the stopped epoch's seconds count as training time (they were lost: 0.0 in summary.json)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert res.train_seconds > 0 and summary["train_seconds"] == res.train_seconds
    run = cnnlab.load_run(tmp_path / "run")
    assert run.status == "stopped" and run.final_accuracy == res.final.accuracy


def test_load_run_latest_and_its_predictor(tiny_idx, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = cnnlab.train("basic_cnn", dataset=f"idx:{tiny_idx}", quiet=True, **TINY)
    second = cnnlab.train("resnet", dataset=f"idx:{tiny_idx}", quiet=True, **TINY)
    run = cnnlab.load_run("latest")
    assert run.path == second.run_dir != first.run_dir and run.config["model"] == "resnet"
    assert run.status == "finished" and len(run.metrics) == 1 and run.summary["n"] == 64
    predict = run.predictor()
    image = torch.zeros(28, 28)
    image[8:20, 13:16] = 1.0  # a "1"
    assert predict(image).label in predict.classes
    assert len(predict([image, image])) == 2
    assert weights_equal(run.model().state_dict(), second.model.state_dict())
    # an argument of the other kind was ignored (a run's predictor with model="inception" was the run's resnet)
    with pytest.raises(cnnlab.CnnlabError, match=r"^cnnlab.predictor\(run, model='inception'\): model picks the "
                                                 r"shipped weights"):
        cnnlab.predictor("latest", model="inception")
    with pytest.raises(cnnlab.CnnlabError, match=r"^cnnlab.predictor\(which='best'\) picks a run folder's"):
        cnnlab.predictor(model="resnet", which="best")
    with pytest.raises(cnnlab.CnnlabError, match=r"^create_model\('resnet', dataset='fashion-mnist'\): dataset "
                                                 r"picks shipped weights; add pretrained=True"):
        cnnlab.create_model("resnet", dataset="fashion-mnist")  # was a new MNIST-shaped net, the dataset ignored
    # a yes/no argument given a string: pretrained="no" loaded the shipped weights, quiet="no" was quiet
    with pytest.raises(cnnlab.CnnlabError, match=r"^pretrained must be True or False, got 'no'$"):
        cnnlab.create_model("resnet", pretrained="no")
    assert cnnlab.create_model("resnet", pretrained=None).training  # None is False: new weights, in train mode
    with pytest.raises(cnnlab.CnnlabError, match=r"^quiet must be True or False, got 'no'$"):
        cnnlab.train("basic_cnn", quiet="no")
    assert cnnlab.predictor("latest", which="best").model_name == "resnet"


def test_latest_wherever_a_run_is_taken(tiny_idx, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["evaluate", "latest"]) == 2
    assert "no runs under runs/ yet" in capsys.readouterr().err
    cnnlab.train("basic_cnn", dataset=f"idx:{tiny_idx}", quiet=True, **TINY)
    assert main(["evaluate", "latest", "--no-report"]) == 0
    assert "accuracy" in capsys.readouterr().out.splitlines()[-1]  # the headline comes last
    assert main(["train", "--resume", "latest", "--quiet"]) == 0
    assert "already finished its 1 epoch;" in capsys.readouterr().out
    first = cnnlab.load_run("latest").path.resolve()
    # the API's teacher='latest' is the CLI's --teacher latest (it looked for a file named 'latest')
    res = cnnlab.train("basic_cnn", dataset=f"idx:{tiny_idx}", teacher="latest", quiet=True, **TINY)
    assert Path(cnnlab.load_run(res.run_dir).config["teacher"]).parent == first


def test_runs_lists_each_status(tiny_idx, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    data = dict(dataset=f"idx:{tiny_idx}", quiet=True)
    done = cnnlab.train("basic_cnn", **data, **TINY).run_dir
    stopped = cnnlab.train("basic_cnn", **data, max_steps=2, **TINY).run_dir
    with pytest.raises(Diverged):
        cnnlab.train("resnet", **{**data, **TINY, "lr": 1e6, "epochs": 3})
    failed = find_runs("runs")[0]
    running = find_runs("runs")[0].parent / "busy"
    running.mkdir()
    (running / "config.json").write_text(json.dumps({"config": {"model": "resnet"}}))
    with RunLock(running):
        status = {describe_run(r)["run"]: describe_run(r)["status"] for r in find_runs("runs")}
        assert main(["runs"]) == 0
    assert status == {str(done): "finished", str(stopped): "stopped", str(failed): "failed", str(running): "running"}
    table = capsys.readouterr().out
    assert "finished" in table and "diverged" in table and "basic_cnn" in table
    rows = cnnlab.list_runs("runs")
    # 'busy', once no process holds it: its config.json names no dataset or epochs (half-written), so damaged
    assert {r["status"] for r in rows} == {"finished", "stopped", "failed", "damaged"}
    # narrowed by a column: the one stopped run; the residual net (the diverged run); nothing, said in words
    assert [r["run"] for r in cnnlab.list_runs("runs", status="Stopped", model="basic_cnn")] == [str(stopped)]
    assert main(["runs", "--status", "stopped", "--json"]) == 0
    assert [r["run"] for r in json.loads(capsys.readouterr().out)] == [str(stopped)]
    assert main(["runs", "--model", "ResNet", "--limit", "1"]) == 0  # the diverged run and 'busy' are resnet's
    table = capsys.readouterr().out
    assert table.count("\nruns/") == 1 and str(done) not in table and "... and 1 older" in table
    assert main(["runs", "--model", "resnet", "--limit", "0"]) == 0
    table = capsys.readouterr().out
    assert str(failed) in table and str(running) in table and str(done) not in table
    assert main(["runs", "--recipe", "best", "--model", "resnet"]) == 0
    # ...and what the runs there have in those columns (a misspelt value matched nothing without a hint)
    assert capsys.readouterr().out == ("no runs under runs/ match --model resnet --recipe best; the runs there have "
                                       "model basic_cnn, resnet; recipe ?, lecture\n")  # 'busy' names no recipe
    assert next(r for r in rows if r["status"] == "finished")["final_acc"] is not None


def test_a_run_stopped_at_its_target_lists_how_far_it_got_and_load_run_names_what_is_not_a_run(tiny_idx, tmp_path,
                                                                                                 capsys):
    # 8 steps an epoch, checked every 2: a 2% target is reached at a quarter of the epoch, where metrics.csv
    # (a row per finished epoch) is empty; 'runs' said 0/1 epochs and no training time
    run = cnnlab.train("basic_cnn", dataset=f"idx:{tiny_idx}", out=tmp_path / "r", quiet=True, target_accuracy=2.0, evals_per_epoch=4,
                       **TINY).run_dir
    row = describe_run(run)
    assert row["epochs_done"] == 0.25 and row["train_seconds"] > 0 and row["status"] == "finished"
    assert main(["runs", "--root", str(tmp_path)]) == 0
    assert " 0.25/1 " in capsys.readouterr().out
    assert cnnlab.load_run(run / "last.pt").path == run  # a checkpoint names its run folder
    for path, message in ((tmp_path / "nope", "no such folder"), (tmp_path, "not a run folder (no config.json)")):
        with pytest.raises(RunError) as err:
            cnnlab.load_run(path)
        assert str(err.value).startswith(f"{path}: {message}; give a folder written by 'cnnlab train'")


def test_train_config_file_reruns_a_run_bitwise(tiny_idx, tmp_path):
    assert main(["train", "--model", "resnet", "--dataset", f"idx:{tiny_idx}", "--recipe", "fast", "--epochs", "1",
                 "--device", "cpu", "--out", str(tmp_path / "a"), "--quiet"]) == 0
    assert main(["train", "--config", str(tmp_path / "a" / "config.json"), "--out", str(tmp_path / "b"),
                 "--quiet"]) == 0
    a, b = (load_checkpoint(tmp_path / n / "last.pt")["state_dict"] for n in ("a", "b"))
    assert weights_equal(a, b)
    # flags typed on top of the file win; a typed recipe replaces the file's recipe values
    assert main(["train", "--config", str(tmp_path / "a" / "config.json"), "--recipe", "lecture", "--max-steps", "1",
                 "--out", str(tmp_path / "c"), "--quiet"]) == 0
    c = json.loads((tmp_path / "c" / "config.json").read_text())["config"]
    assert c["recipe"] == "lecture" and c["optimizer"] == "sgd" and c["model"] == "resnet"


def test_a_damaged_run_file_is_one_line_naming_it(tiny_idx, tmp_path):
    run = cnnlab.train("basic_cnn", dataset=f"idx:{tiny_idx}", out=tmp_path / "r", quiet=True, **TINY).run_dir
    for name in ("summary.json", "config.json"):
        good = (run / name).read_bytes()
        for junk, message in ((b"\x89PNG\r\n", "not text (byte 0 is not UTF-8)"),
                              (good[:40], "not valid JSON"), (b"[1, 2]", "not the file cnnlab writes there")):
            (run / name).write_bytes(junk)
            with pytest.raises(cnnlab.CnnlabError, match="damaged") as err:
                cnnlab.load_run(run)
            assert str(err.value).startswith(f"{run / name}: {message}") and "\n" not in str(err.value)
        (run / name).write_bytes(good)
    assert cnnlab.load_run(run).summary["n"] == 64


def test_yaml_config_files_and_their_errors(tiny_idx, tmp_path, capsys):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"# my experiment\nmodel: basic_cnn\ndataset: idx:{tiny_idx}\nrecipe: fast\nepochs: 1\n"
                   "device: cpu\n")
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "r"), "--quiet"]) == 0
    saved = json.loads((tmp_path / "r" / "config.json").read_text())["config"]
    assert saved["model"] == "basic_cnn" and saved["optimizer"] == "adam" and saved["epochs"] == 1
    for text, message in (("model: [", "not valid YAML"), ("- a\n- b\n", "expected a mapping"),
                          ("learning_rate: 3\n", "unknown settings ['learning_rate']"),
                          ("epochs: ten\n", "epochs must be int (or null), got 'ten'"),
                          ("epochs: 2.5\n", "epochs must be int (or null), got 2.5"),
                          ("channels_last: 1\n", "channels_last must be bool (or null), got 1"),
                          ("lr: fast\n", "lr must be float (or null), got 'fast'"),
                          ("model: [resnet]\n", "model must be str, got ['resnet']"),
                          ("seed: true\n", "seed must be int, got True")):
        cfg.write_text(text)
        assert main(["train", "--config", str(cfg)]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1
    assert main(["train", "--config", str(tmp_path / "nope.yaml")]) == 2
    assert "cannot be read" in capsys.readouterr().err
    # found by probing: a value nested 50,000 deep was a RecursionError traceback (JSON and YAML); a 600-byte
    # alias bomb (9^9 shared strings) hung while its refusal spelt the value out whole
    bomb = ", ".join(f"&{a} [{', '.join([f'*{b}' if b else '1'] * 9)}]" for a, b in zip("abcdefghi", ["", *"abcdefgh"]))
    for name, text, message in (("deep.yaml", "model: " + "[" * 50_000 + "]" * 50_000, "not valid YAML (nested too deeply)"),
                                ("deep.json", '{"model": ' + "[" * 50_000 + "]" * 50_000 + "}",
                                 "not valid JSON (nested too deeply)"),
                                ("bomb.yaml", f"model: [{bomb}]", "model must be str, got [[1, 1, 1, 1, ...], [[...]")):
        (tmp_path / name).write_text(text)
        assert main(["train", "--config", str(tmp_path / name)]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1 and len(err) < 400
    # found by fuzzing: a key set twice was taken silently, the last one winning (both parsers do that)
    for name, text, message in (("twice.yaml", "lr: 0.1\nepochs: 2\nlr: 0.01\n", "'lr' is set twice (lines 1 and 3); keep"),
                                ("twice.json", '{"recipe": "best", "recipe": "fast"}', "'recipe' is set twice; keep"),
                                ("key.yaml", "[a]: 1\n", "not valid YAML")):
        (tmp_path / name).write_text(text)
        assert main(["train", "--config", str(tmp_path / name)]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1
    # the check is linear: a file of 90,000 keys (one repeated at the end; under the 1 MB cap) answers at once
    many = "{" + ",".join(f'"k{i}":1' for i in range(90_000)) + ',"k5":2}'
    (tmp_path / "many.json").write_text(many)
    assert main(["train", "--config", str(tmp_path / "many.json")]) == 2
    assert "'k5' is set twice" in capsys.readouterr().err
    # not text, or too large to be a settings file (a device such as /dev/zero is never read to its end)
    for data, message in ((b"\xcd\x00\xff" * 50, "not text (byte 0 is not UTF-8)"),
                          (b"#" * (1 << 20) + b"\n", "larger than 1 MB, not a settings file")):
        cfg.write_bytes(data)
        assert main(["train", "--config", str(cfg)]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1
    # Notepad's UTF-8 starts with a byte-order mark: read as the text it is; PowerShell's UTF-16 is one line
    cfg.write_bytes(f"\ufeffmodel: basic_cnn\ndataset: idx:{tiny_idx}\nepochs: 1\ndevice: cpu\n".encode())
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "bom"), "--quiet", "--max-steps", "1"]) == 0
    cfg.write_bytes("model: basic_cnn\n".encode("utf-16"))
    assert main(["train", "--config", str(cfg)]) == 2
    assert "UTF-16 text, not UTF-8; save the file as UTF-8" in capsys.readouterr().err
    # PyYAML reads 1e-3 as a string (YAML 1.1 wants 1.0e-3): a float field takes it as the number it is
    cfg.write_text(f"model: basic_cnn\ndataset: idx:{tiny_idx}\nlr: 1e-3\nepochs: 1\ndevice: cpu\n")
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "e"), "--quiet", "--max-steps", "1"]) == 0
    assert json.loads((tmp_path / "e" / "config.json").read_text())["config"]["lr"] == 0.001


def test_resolve_run_is_the_one_place_latest_is_read(tmp_path):
    with pytest.raises(RunError, match="no runs under"):
        resolve_run("latest", tmp_path / "runs")
    assert resolve_run(tmp_path / "x") == tmp_path / "x"


# ----------------------------------------------------------------------------- pretrained weights


@pytest.fixture
def shipped(tiny_idx, tmp_path, monkeypatch):
    """A weights folder like the package's, made from a tiny run (the real one holds the best recipe's nets)."""
    import cnnlab.pretrained
    from cnnlab.export import export_safetensors
    from cnnlab.fileio import atomic_write_json, sha256_file

    res = cnnlab.train("basic_cnn", dataset=f"idx:{tiny_idx}", out=tmp_path / "run", quiet=True, **TINY)
    folder = tmp_path / "weights"
    path = export_safetensors(res.run_dir, "last", folder / "basic_cnn-tiny.safetensors")
    entry = {"model": "basic_cnn", "dataset": f"idx:{tiny_idx}", "file": path.name, "sha256": sha256_file(path),
             "test_accuracy": res.final.accuracy, "test_loss": res.final.loss, "recipe": "lecture", "seed": 0,
             "command": "cnnlab train ...", "cnnlab_version": cnnlab.__version__, "torch_version": torch.__version__,
             "parameters": 8490}
    atomic_write_json(folder / "manifest.json", {"format": "cnnlab-pretrained", "version": 1, "weights": [entry]})
    monkeypatch.setattr(cnnlab.pretrained, "WEIGHTS_DIR", folder)
    return entry


def test_pretrained_weights_load_verified_and_match_their_manifest(shipped, capsys):
    net = cnnlab.create_model("basic_cnn", pretrained=True, dataset=shipped["dataset"])
    assert not net.training
    assert main(["evaluate", "--pretrained", "basic_cnn", "--dataset", shipped["dataset"], "--json"]) == 0
    got = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert got["test_acc"] == shipped["test_accuracy"]  # what `cnnlab models` shows is what evaluate measures
    assert main(["models"]) == 0
    assert f"test accuracy {shipped['test_accuracy']:.2f}%" in capsys.readouterr().out
    with pytest.raises(CheckpointError, match="no pretrained weights for resnet"):
        cnnlab.create_model("resnet", pretrained=True)


def test_the_shipped_weights_export_without_a_run(shipped, tmp_path, monkeypatch, capsys):
    pytest.importorskip("onnxruntime")
    from cnnlab.export import read_onnx_metadata

    monkeypatch.chdir(tmp_path)
    data = ["--dataset", shipped["dataset"], "--samples", "8"]
    assert main(["export", "--pretrained", "basic_cnn", *data]) == 0
    written = sorted(tmp_path.glob("basic_cnn-*.onnx"))  # here, named after the weights (the idx: path made safe)
    assert len(written) == 1 and "/" not in written[0].name[len("basic_cnn-"):]
    assert read_onnx_metadata(written[0])["model"] == "basic_cnn" and "max abs logit difference" in capsys.readouterr().out
    assert main(["export", "--pretrained", "basic_cnn", *data, "--format", "torchscript", "--out", "n.pt"]) == 0
    assert (tmp_path / "n.pt").is_file()
    for argv in (["export"], ["export", str(tmp_path), "--pretrained", "basic_cnn"]):  # neither, or both
        assert main(argv) == 2
        assert "give a run folder or checkpoint to export, or --pretrained MODEL" in capsys.readouterr().err


def test_damaged_pretrained_weights_are_refused(shipped):
    import cnnlab.pretrained

    path = cnnlab.pretrained.WEIGHTS_DIR / shipped["file"]
    path.write_bytes(path.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(CheckpointError, match="does not match the manifest"):
        cnnlab.create_model("basic_cnn", pretrained=True, dataset=shipped["dataset"])


def test_the_shipped_manifest_lists_files_that_are_there():
    """The weights in the package itself: every manifest entry's file exists and has its SHA-256."""
    from cnnlab.fileio import sha256_file
    from cnnlab.pretrained import pretrained_entries

    entries = pretrained_entries()
    for entry in entries:
        assert entry.path.is_file() and sha256_file(entry.path) == entry.sha256, entry.name
    assert {(e.model, e.dataset) for e in entries} == {(m, d) for m in ("resnet", "inception")
                                                        for d in ("mnist", "fashion-mnist")}
    for entry in entries:  # made by the best recipe, and saying how (the manifest is the weights' provenance)
        assert entry.recipe == "best" and entry.command.startswith(f"cnnlab train --model {entry.model} ")
        assert entry.config["model"] == entry.model and entry.config["recipe"] == "best" and entry.sha256
        assert entry.cpu_kernels, entry.name  # torch.backends.cpu.get_cpu_capability() of the trainer


def test_a_weights_check_names_the_kernel_families_when_they_differ(monkeypatch):
    """make weights-check on a machine whose torch runs other CPU kernels than the trainer's says why the bits
    differ, instead of a bare DIFFERENT; with the same family a difference stays unexplained (a real one)."""
    import torch

    from cnnlab import pretrained_build

    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    check = pretrained_build.check_line
    assert check("resnet-mnist", True, {"cpu_kernels": "AVX2"}).endswith("bit for bit, as the committed file")
    line = check("resnet-mnist", False, {"cpu_kernels": "AVX2"})
    assert "DIFFERENT" in line and "AVX2 CPU kernels" in line and "AVX512 ones" in line
    for committed in ({"cpu_kernels": "AVX512"}, {}):
        assert check("resnet-mnist", False, committed).endswith("DIFFERENT weights from the committed file")


def test_the_shipped_weights_were_trained_by_the_best_recipe_as_it_is_now():
    """A change to the best recipe must come with weights retrained by it (make weights): what the manifest
    says trained each file is what 'cnnlab train --recipe best --seed 0' runs today, process flags aside."""
    from cnnlab.compare import config_key
    from cnnlab.config import TrainConfig
    from cnnlab.pretrained import pretrained_entries

    for entry in pretrained_entries():
        now = TrainConfig(model=entry.model, dataset=entry.dataset, recipe="best", seed=0).validate()
        assert config_key(TrainConfig.from_dict(entry.config)) == config_key(now), \
            f"{entry.name}: the best recipe changed since these weights were trained; retrain them (make weights)"


def test_predict_and_serve_use_the_shipped_weights_without_a_run(shipped, tmp_path, capsys, monkeypatch):
    from PIL import Image

    import cnnlab.serve.server as server
    from apps_helpers import draw_digit

    digit = tmp_path / "digit.png"
    draw_digit().save(digit)
    assert main(["predict", "--model", "basic_cnn", "--dataset", shipped["dataset"], str(digit), "--json"]) == 0
    by_model = json.loads(capsys.readouterr().out)
    assert by_model[0]["file"] == str(digit)
    # --pretrained, as 'cnnlab evaluate --pretrained MODEL' spells it, is the same option
    assert main(["predict", "--pretrained", "basic_cnn", "--dataset", shipped["dataset"], str(digit), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == by_model
    assert main(["predict", str(digit)]) == 2  # an image where the run goes, and no --model
    assert "--model resnet" in capsys.readouterr().err
    predict = cnnlab.predictor(model="basic_cnn", dataset=shipped["dataset"])
    assert predict.source == f"pretrained basic_cnn-{shipped['dataset']}"
    assert predict(Image.open(digit)).label in predict.classes
    served = {}
    monkeypatch.setattr(server, "serve_forever", lambda app, sock: served.update(app=app, port=sock.getsockname()[1]))
    server.run_server(model="basic_cnn", dataset=shipped["dataset"], port=0, log=lambda m: served.update(line=m))
    assert "pretrained basic_cnn" in served["line"] and served["app"] is not None
    # --port 0 binds a free port, and the line names it (it said http://127.0.0.1:0/)
    assert served["port"] > 0 and f"http://127.0.0.1:{served['port']}/" in served["line"]
    served.clear()
    assert main(["serve", "--pretrained", "basic_cnn", "--dataset", shipped["dataset"], "--port", "0"]) == 0
    assert served["app"] is not None and "pretrained basic_cnn" in capsys.readouterr().out


def test_a_model_name_given_as_the_run_points_to_the_shipped_weights(tmp_path, monkeypatch):
    """``cnnlab.predictor("resnet")`` said "resnet: no such checkpoint": the name of a model is not a run."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(cnnlab.CnnlabError, match=r"for the shipped weights of resnet: cnnlab.predictor\(model='resnet'\)"):
        cnnlab.predictor("resnet")
    one = torch.zeros(1, 28, 28)
    one[0, 6:22, 13:16] = 1.0
    predict = cnnlab.predictor(model="resnet")
    assert predict(one).label == "1"
    # a blank field was classified ('1', about 40%) as if it held a digit: no ink, unless asked for as it is
    with pytest.raises(cnnlab.CnnlabError, match=r"^tensor: no ink found \(a blank 28x28 field\); .* pass "
                                                 r"preprocess=False to classify it as it is$"):
        predict(torch.zeros(1, 28, 28))
    assert predict(torch.zeros(1, 28, 28), preprocess=False).label in list("0123456789")
    # a float64 array of 1e300 was "holds NaN or infinite values" and a numpy overflow warning (cast before checks)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(cnnlab.CnnlabError, match=r"float pixels must lie in 0\.\.1, got 1e\+300\.\.1e\+300"):
            predict(np.full((28, 28), 1e300))


def test_the_api_names_a_bad_argument_in_one_line(tmp_path, monkeypatch):
    """Found by probing the API: each of these was a TypeError, AttributeError or RuntimeError from inside (or,
    for ``epochs=1.5``, a run trained for one epoch, and for an unknown filter an empty list)."""
    monkeypatch.chdir(tmp_path)
    cases = [
        (lambda: cnnlab.train("resnet", epochz=2), r"unknown setting 'epochz' \(did you mean 'epochs'\?\)"),
        (lambda: cnnlab.train("resnet", epochs="three"), r"epochs must be int \(or None\), got 'three'; .*epochs=10"),
        (lambda: cnnlab.train("resnet", epochs=1.5), "epochs must be int"),
        (lambda: cnnlab.train("resnet", dataset=3), r"dataset must be str, got 3; .*dataset='mnist'"),
        (lambda: cnnlab.train("resnet", compile="yes"), r"compile must be bool, got 'yes'; .*compile=True"),
        (lambda: cnnlab.train("resnet", out=123), r"^cnnlab.train\(out=...\), the run.s folder, must be a path .*got 123"),
        (lambda: cnnlab.load_run(None), "must be a path"),
        (lambda: cnnlab.load_run(""), "is an empty path"),
        (lambda: cnnlab.train("x" * 3000), r"unknown model 'x+[.][.][.]x+'; choose one of"),  # was "cannot write runs/xxx..."
        (lambda: cnnlab.train("resnet", teacher=""), "^teacher is an empty path"),
        (lambda: cnnlab.list_runs(root=None), "must be a path"),
        (lambda: cnnlab.list_runs(colour="red"), "runs have no column 'colour'; filter on one of: run, model"),
        (lambda: cnnlab.TrainConfig.from_file(None), r"TrainConfig\.from_file\(path\) must be a path"),
        (lambda: cnnlab.Predictor.from_run(None), "must be a path"),
        (lambda: cnnlab.create_model("resnet", num_classes=-1), "num_classes must be a whole number >= 1, got -1"),
        (lambda: cnnlab.create_model("resnet", in_channels=0), "in_channels must be a whole number >= 1, got 0"),
        (lambda: cnnlab.create_model("resnet", image_size=3.0), "image_size must be a whole number"),
        # the size inside the net was named ("image size 1 is too small" for image_size=7)
        (lambda: cnnlab.create_model("resnet", image_size=7),
         r"image_size 7 is too small: the smallest that works is 16 \(2 stages of a 5x5 conv and a 2x2 pool\)"),
        (lambda: cnnlab.create_model("resnet", image_size=3), "image_size 3 is too small: the smallest that works is 16"),
        (lambda: cnnlab.create_model("plain_stack", image_size=5),
         r"image_size 5 is too small: the smallest that works is 6 \(1 stage"),
        # torch's allocation error of terabytes of weights, as a traceback
        (lambda: cnnlab.create_model("plain_stack", width=10**9), r"width must be at most 4,096 \(each 3x3 conv"),
        (lambda: cnnlab.create_model("residual_stack", depth=10**9), r"depth must be at most 256"),
        (lambda: cnnlab.create_model("resnet", num_classes=10**9),
         r"num_classes must be at most 100,000 \(the last layer holds a row of weights for every class\), got 1000000000"),
        (lambda: cnnlab.create_model("resnet", image_size=10**6), r"image_size must be at most 1,024 .*got 1000000"),
        (lambda: cnnlab.create_model("resnet", in_channels=10**9), "in_channels must be at most 1,024"),
        # trained the whole run, then failed it: "evaluation saw no images; the test split is empty"
        (lambda: cnnlab.train("resnet", eval_limit=-1), r"eval_limit must be >= 0 \(0: the whole test set\), got -1"),
        # 'int' object has no attribute 'strip'
        (lambda: cnnlab.api.Run(Path("r"), {}, [], None, "finished").evaluate(tta=1),
         r"tta must be a string such as 'shift\+rotate' \(or None for none\), got 1"),
        (lambda: cnnlab.api.Run(Path("r"), {}, [], None, "finished").evaluate(tta=True), "^tta must be a string"),
        (lambda: cnnlab.create_model("residual_stack", depth=3), "even"),
        (lambda: cnnlab.create_model("resnet", pretrained=True, num_classes=3), "pretrained weights fix"),
    ]
    # OSError [Errno 36] File name too long: a traceback where the CLI says one line (cli._path_error)
    too_long = r"^a path is too long for the file system \(x+[.][.][.]: [\d,]+ bytes, the longest name in it \d+ bytes; "
    cases += [(call, too_long) for call in (
        lambda: cnnlab.load_run("x" * 300), lambda: cnnlab.list_runs("x" * 5000),
        lambda: cnnlab.load_run("latest", root="x" * 5000), lambda: cnnlab.predictor("x" * 5000),
        lambda: cnnlab.train("resnet", out="x" * 5000), lambda: cnnlab.train(resume="x" * 5000))]
    for call, message in cases:
        with pytest.raises(cnnlab.CnnlabError, match=message) as info:
            call()
        assert "\n" not in str(info.value)
    assert not (tmp_path / "runs").exists()  # nothing was trained or written
    assert cnnlab.list_runs(status="finished") == []


def test_resume_through_the_api_refuses_another_model_dataset_or_recipe(tiny_idx, tmp_path):
    """Found by probing: ``cnnlab.train(resume=run, model="inception")`` resumed a resnet run as if nothing had been
    said (the argument's default was "inception", so the API could not tell it was given)."""
    run = tmp_path / "run"
    cnnlab.train("basic_cnn", dataset=f"idx:{tiny_idx}", recipe="fast", out=run, quiet=True, max_steps=2, device="cpu")
    for given in (dict(model="resnet"), dict(recipe="best"), dict(dataset="mnist")):
        # named as the arguments given, not as CLI flags the user never typed (a tester's report)
        key, value = next(iter(given.items()))
        with pytest.raises(RunError) as refused:
            cnnlab.train(resume=run, quiet=True, **given)
        said = str(refused.value)
        assert said.startswith("cnnlab.train(resume=...) continues a run with its own settings") and "--" not in said
        assert f"{key}={value!r} (the run's: " in said and "would change it; drop them" in said
    with pytest.raises(cnnlab.CnnlabError, match=r"a resume continues the run in its own folder; drop out"):
        cnnlab.train(resume=run, out=tmp_path / "elsewhere", quiet=True)  # out was ignored without a word
    assert not (tmp_path / "elsewhere").exists()
    same = cnnlab.train("basic_cnn", dataset=f"idx:{tiny_idx}", recipe="fast", resume=run, quiet=True, max_steps=3)
    assert same.run_dir == run and cnnlab.load_run(run).config["model"] == "basic_cnn"


def test_load_run_and_config_never_block_on_a_fifo_and_name_a_mistyped_setting(tiny_idx, tmp_path):
    """config.json as a FIFO hung load_run (and --config FIFO hung train) on open(); "epochs": "2" typed into a run's
    config.json was a TypeError from inside cnnlab.load_run."""
    import os

    res = cnnlab.train("basic_cnn", dataset=f"idx:{tiny_idx}", out=tmp_path / "r", quiet=True, **TINY)
    cfg = res.run_dir / "config.json"
    text = cfg.read_text()
    cfg.write_text(text.replace('"epochs": 1,', '"epochs": "1",'))
    with pytest.raises(CnnlabError, match=r"config\.json: epochs must be int .*got '1'"):
        cnnlab.load_run(res.run_dir)
    cfg.unlink()
    os.mkfifo(cfg)
    out = subprocess.run([sys.executable, "-c", f"import cnnlab; cnnlab.load_run({str(res.run_dir)!r})"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "is a FIFO (named pipe)" in out.stderr
    out = subprocess.run([sys.executable, "-m", "cnnlab", "train", "--config", str(cfg)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "is a FIFO (named pipe), not a settings file" in out.stderr


def test_a_run_config_json_whose_settings_are_damaged_is_named_so(tmp_path):
    """``--config RUN`` whose config.json held a list under "config" was refused as ``unknown settings ['config',
    'data', 'model_args', 'world_size']; they are the flags' names``: true of a settings file, not of a run's."""
    from cnnlab.config import TrainConfig

    path = tmp_path / "config.json"
    path.write_text(json.dumps({"config": [1], "data": {}, "model_args": {}, "world_size": 1}))
    with pytest.raises(CnnlabError, match=r"a run's config\.json whose 'config' is not its settings \(got list\): "
                                          r"the run folder is damaged"):
        TrainConfig.from_file(path)
    path.write_text(json.dumps({"config": 3}))  # no run's other keys: a settings file with an unknown one
    with pytest.raises(CnnlabError, match=r"unknown settings \['config'\]"):
        TrainConfig.from_file(path)
    # a Python caller typed no --config: the refusal names the call as written
    with pytest.raises(CnnlabError, match=r"^TrainConfig\.from_file\('.*nope\.yaml'\): cannot be read"):
        TrainConfig.from_file(tmp_path / "nope.yaml")


# ----------------------------------------------------------------------------- what a run leaves to its caller


def test_a_loaded_run_reads_its_own_folder_after_a_chdir(tiny_idx, tmp_path, monkeypatch):
    """``cnnlab.load_run("runs/a")`` kept the relative path: after an ``os.chdir`` its checkpoint, model, predictor and
    evaluate read the run in the new folder's ``runs/a``, beside the config and metrics of the one loaded."""
    data = dict(dataset=f"idx:{tiny_idx}", quiet=True, **TINY)
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
    monkeypatch.chdir(tmp_path / "two")
    cnnlab.train("basic_cnn", out="runs/a", **data)
    monkeypatch.chdir(tmp_path / "one")
    mine = cnnlab.train("resnet", out="runs/a", **data)
    run = cnnlab.load_run("runs/a")
    monkeypatch.chdir(tmp_path / "two")
    assert run.path == Path("runs/a") and run.config["model"] == "resnet"  # the path as given
    assert run.checkpoint()["model"]["name"] == "resnet" and run.checkpoint("best")["model"]["name"] == "resnet"
    assert weights_equal(run.model().state_dict(), mine.model.state_dict())
    assert run.predictor().model_name == "resnet"
    assert run.evaluate(device="cpu").accuracy == run.final_accuracy == mine.final.accuracy


def test_train_turns_grad_on_for_itself(tiny_idx, tmp_path):
    """Found by probing the API: ``cnnlab.train`` under ``torch.no_grad()`` or ``torch.inference_mode()`` was torch's
    "element 0 of tensors does not require grad" and a run folder left failed. The caller's mode is its own again
    after, and the runs compute what they compute without it, bit for bit."""
    data = dict(dataset=f"idx:{tiny_idx}", quiet=True, **TINY)
    reference = cnnlab.train("basic_cnn", out=tmp_path / "reference", **data)
    with torch.no_grad():
        no_grad = cnnlab.train("basic_cnn", out=tmp_path / "no_grad", **data)
        assert not torch.is_grad_enabled()
    with torch.inference_mode():
        inference = cnnlab.train("basic_cnn", out=tmp_path / "inference", **data)
        assert torch.is_inference_mode_enabled()
    for res in (no_grad, inference):
        assert weights_equal(res.model.state_dict(), reference.model.state_dict())
        assert cnnlab.load_run(res.run_dir).status == "finished"


def test_train_gives_the_caller_back_its_threads_and_rng(tiny_idx, tmp_path):
    """``cnnlab.train(threads=1)`` left the caller's torch at one thread, and the run's seeding moved the caller's
    global RNG (a notebook's own draws after a run were no longer its own); also when the run raises. The run's
    own numbers are what they were."""
    data = dict(dataset=f"idx:{tiny_idx}", quiet=True, threads=1, **TINY)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        torch.manual_seed(1234)
        state = torch.get_rng_state()
        res = cnnlab.train("basic_cnn", out=tmp_path / "run", **data)
        assert torch.get_num_threads() == 2 and torch.equal(torch.get_rng_state(), state)
        with pytest.raises(Diverged):
            cnnlab.train("basic_cnn", out=tmp_path / "diverged", **{**data, "lr": 1e6, "epochs": 3})
        assert torch.get_num_threads() == 2 and torch.equal(torch.get_rng_state(), state)
        torch.manual_seed(99)  # whatever the caller's RNG holds, the run draws from its own seed
        again = cnnlab.train("basic_cnn", out=tmp_path / "again", **data)
    finally:
        torch.set_num_threads(before)
    assert weights_equal(res.model.state_dict(), again.model.state_dict())


def test_a_float64_default_dtype_still_builds_and_trains_float32_nets(tiny_idx, tmp_path):
    """``torch.set_default_dtype(torch.float64)`` before ``create_model`` (a float64 net, without a word, with
    ``pretrained=True`` too), ``cnnlab.train`` (a failed run), ``Run.evaluate()``, ``Run.predictor()`` or the shipped
    weights' predictor and ``read_number``: torch's "Input type (float) and bias type (double) should be the same".
    The nets are built float32, with bitwise the weights of torch's own default, and runs compute what they do."""
    data = dict(dataset=f"idx:{tiny_idx}", quiet=True, **TINY)
    torch.manual_seed(3)
    built = cnnlab.create_model("inception").state_dict()
    reference = cnnlab.train("basic_cnn", out=tmp_path / "reference", **data)
    field = np.zeros((28, 28), dtype=np.uint8)
    field[6:22, 12:16] = 255  # a "1"
    torch.set_default_dtype(torch.float64)
    try:
        torch.manual_seed(3)
        net = cnnlab.create_model("inception")
        shipped = cnnlab.create_model("resnet", pretrained=True)
        res = cnnlab.train("basic_cnn", out=tmp_path / "run", **data)
        run = cnnlab.load_run(res.run_dir)
        evaluated = run.evaluate(device="cpu")
        labels = [run.predictor()(field).label, cnnlab.predictor(model="resnet")(field).label,
                  cnnlab.predictor(model="resnet").read_number(field).label]
        assert torch.get_default_dtype() == torch.float64  # the caller's, kept
    finally:
        torch.set_default_dtype(torch.float32)
    assert {p.dtype for p in [*net.parameters(), *shipped.parameters()]} == {torch.float32}
    assert weights_equal(net.state_dict(), built)
    assert weights_equal(res.model.state_dict(), reference.model.state_dict())
    assert evaluated.accuracy == res.final.accuracy == reference.final.accuracy
    assert labels[1:] == ["1", "1"] and labels[0] in run.predictor().classes


def test_eval_limit_cuts_the_evaluations_in_training_short_and_the_result_is_the_whole_test_set(tiny_idx, tmp_path,
                                                                                                 capsys):
    """With ``eval_limit=20`` a run printed ``final test accuracy`` of the first 20 test images and returned it as
    ``TrainResult.final`` (n 20), while summary.json, ``Run.final_accuracy`` and ``list_runs``' final_acc held the
    whole test set's: two results of one run."""
    res = cnnlab.train("basic_cnn", dataset=f"idx:{tiny_idx}", out=tmp_path / "runs" / "r", eval_limit=20, **TINY)
    out = capsys.readouterr().out
    run = cnnlab.load_run(res.run_dir)
    assert res.final.n == run.summary["n"] == 64
    assert res.final.accuracy == run.final_accuracy == cnnlab.list_runs(tmp_path / "runs")[0]["final_acc"]
    assert f"final test accuracy {run.final_accuracy:.2f}%" in out
    assert "(the whole test set; the evaluations in training took its first 20)" in out


def test_quiet_says_nothing_of_a_signal_either(tiny_idx, tmp_path, monkeypatch, capsys):
    """``cnnlab.train(quiet=True)`` printed ``SIGINT: stopping after this step and saving the position ...`` on stderr
    when interrupted (quiet prints nothing at all); the Interrupted error it raises says where the position is."""
    import os
    import signal

    from cnnlab import observers
    from cnnlab.errors import Interrupted

    after_step = observers.SignalStop.after_step

    def interrupted_at_step_2(self, t):
        if t.state.step == 2 and self.signum is None:
            os.kill(os.getpid(), signal.SIGINT)
        after_step(self, t)

    monkeypatch.setattr(observers.SignalStop, "after_step", interrupted_at_step_2)
    with pytest.raises(Interrupted, match=r"^interrupted at step \d .*continue with: cnnlab.train\(resume=") as err:
        cnnlab.train("basic_cnn", dataset=f"idx:{tiny_idx}", out=tmp_path / "run", quiet=True, **TINY)
    assert err.value.exit_code == 130 and "--" not in str(err.value)  # the API's words, the signal's exit code kept
    assert capsys.readouterr() == ("", "")
    assert cnnlab.load_run(tmp_path / "run").status == "stopped"


def test_a_run_without_a_stderr_trains_and_writes_nothing_there(tiny_idx, tmp_path, monkeypatch, capsys):
    """``sys.stderr = None`` (pythonw, some embedders), then ``cnnlab.train(quiet=False)``: ``AttributeError:
    'NoneType' object has no attribute 'isatty'`` and a run left failed; ``output.complain`` printed to stdout."""
    from cnnlab import output

    monkeypatch.setattr(sys, "stderr", None)
    res = cnnlab.train("basic_cnn", dataset=f"idx:{tiny_idx}", out=tmp_path / "run", **TINY)
    output.complain("cnnlab: warning: a line for a stderr that is not there")
    out = capsys.readouterr().out
    assert "final test accuracy" in out and "not there" not in out
    assert cnnlab.load_run(res.run_dir).status == "finished"
