"""``cnnlab analyze``: branch ablation by hooks, gradient measurement, the stacks, and the two commands."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from cnnlab.analysis import branches as br
from cnnlab.analysis import gradients as gr
from cnnlab.cli import main
from cnnlab.data import load_dataset
from cnnlab.errors import CnnlabError
from cnnlab.models import InceptionModule, ResidualBlock, create_model


def _inception(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return create_model("inception").eval()


def _no_hooks(model: nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


# ----------------------------------------------------------------------------- branch ablation


def test_branch_slices_follow_concatenation_order():
    s = br.branch_slices()
    assert [(k, v.start, v.stop) for k, v in s.items()] == [("pool", 0, 24), ("1x1", 24, 40), ("5x5", 40, 64), ("3x3", 64, 88)]
    m = InceptionModule(3)
    x = torch.randn(2, 3, 6, 6)
    parts, out = m.branches(x), m(x)
    for name, sl in s.items():
        torch.testing.assert_close(out[:, sl], parts[name], rtol=0, atol=0)


def test_ablating_a_branch_with_zero_weights_changes_nothing():
    model = _inception()
    with torch.no_grad():
        model.incept1.branch1x1.weight.zero_()
        model.incept1.branch1x1.bias.zero_()
    x = torch.randn(4, 1, 28, 28)
    before = model(x)
    with br.ablate_branch(model, "incept1", "1x1"):
        zeroed = model(x)
    with br.ablate_branch(model, "incept1", "1x1", fill=torch.zeros(16)):
        mean_zero = model(x)
    torch.testing.assert_close(zeroed, before, rtol=0, atol=0)
    torch.testing.assert_close(mean_zero, before, rtol=0, atol=0)


def test_zeroing_the_branch_that_carries_the_signal_changes_the_output_and_hooks_go_away():
    model = _inception()
    with torch.no_grad():  # incept1 passes the signal only through its 3x3 branch
        for conv in (model.incept1.branch_pool, model.incept1.branch1x1, model.incept1.branch5x5_2):
            conv.weight.zero_()
            conv.bias.zero_()
    x = torch.randn(4, 1, 28, 28)
    before = model(x)
    with br.ablate_branch(model, "incept1", "3x3"):
        ablated = model(x)
        assert not _no_hooks(model)
    assert not torch.allclose(ablated, before)
    # with the signal branch gone, the net's output no longer depends on the input
    with br.ablate_branch(model, "incept1", "3x3"):
        other = model(torch.randn(4, 1, 28, 28))
    torch.testing.assert_close(other, ablated)
    for silent in ("pool", "1x1", "5x5"):
        with br.ablate_branch(model, "incept1", silent):
            torch.testing.assert_close(model(x), before, rtol=0, atol=0)
    assert _no_hooks(model)
    torch.testing.assert_close(model(x), before, rtol=0, atol=0)


def test_hooks_are_removed_even_after_an_error():
    model = _inception()
    x = torch.randn(2, 1, 28, 28)
    before = model(x)
    with pytest.raises(RuntimeError, match="boom"):
        with br.ablate_branch(model, "incept2", "pool"), br.watch_outputs(model, ["incept1"], lambda n, o: None):
            raise RuntimeError("boom")
    assert _no_hooks(model)
    torch.testing.assert_close(model(x), before, rtol=0, atol=0)


def test_mean_ablation_writes_the_constant_and_watch_sees_it():
    model = _inception()
    fill = torch.arange(24, dtype=torch.float32)
    seen = {}
    with br.ablate_branch(model, "incept2", "5x5", fill=fill), br.watch_outputs(model, ["incept2"], seen.__setitem__):
        model(torch.randn(3, 1, 28, 28))
    out = seen["incept2"]  # (3, 88, 4, 4)
    torch.testing.assert_close(out[:, 40:64], fill.view(1, 24, 1, 1).expand(3, 24, 4, 4))


def test_bad_names_are_user_errors():
    model = _inception()
    with pytest.raises(CnnlabError, match="not an InceptionModule"):
        with br.ablate_branch(model, "conv2", "pool"):
            pass
    with pytest.raises(CnnlabError, match="unknown branch"):
        with br.ablate_branch(model, "incept1", "7x7"):
            pass
    assert _no_hooks(model)


def test_inception_modules_is_one_function_for_analysis_and_serve():
    from cnnlab.serve import branches as serve_branches

    model = _inception()
    found = br.inception_modules(model)
    assert list(found) == ["incept1", "incept2"] and found["incept1"] is model.incept1
    assert br.inception_modules(create_model("resnet")) == {}
    assert serve_branches.inception_modules is br.inception_modules
    with pytest.raises(CnnlabError, match="its Inception modules are: incept1, incept2"), \
            br.ablate_branch(model, "conv2", "pool"):
        pass


def test_channel_means_and_energy_match_a_direct_computation():
    model = _inception()
    x = torch.randn(6, 1, 28, 28)
    y = torch.tensor([0, 1, 1, 2, 2, 2])
    with torch.no_grad():
        h1 = model.incept1(F.relu(model.mp(model.conv1(x))))  # (6, 88, 12, 12)
        h2 = model.incept2(F.relu(model.mp(model.conv2(h1))))  # (6, 88, 4, 4)
    batches = [(x[:4], y[:4]), (x[4:], y[4:])]
    means = br.channel_means(model, batches, ["incept1", "incept2"])
    torch.testing.assert_close(means["incept1"], h1.mean(dim=(0, 2, 3)))
    torch.testing.assert_close(means["incept2"], h2.mean(dim=(0, 2, 3)))
    energy, base = br.class_energy(model, batches, ["incept1"], num_classes=3)
    per_image = h1[:, 64:88].pow(2).mean(dim=(1, 2, 3))
    want = torch.stack([per_image[y == k].mean() for k in range(3)])
    torch.testing.assert_close(energy["incept1"]["3x3"], want)
    with torch.no_grad():
        logits = model(x)
    assert base["n"] == 6
    assert base["loss"] == pytest.approx(float(F.cross_entropy(logits, y)), rel=1e-5)


def test_next_layer_readers_and_weight_shares():
    model = _inception()
    readers = br.next_layer_readers(model, torch.randn(2, 1, 28, 28), ["incept1", "incept2"])
    assert readers["incept1"][0] == "conv2" and readers["incept2"][0] == "fc"
    assert _no_hooks(model)
    w = model.conv2.weight.detach()  # (20, 88, 5, 5)
    share = br.weight_share(model.conv2, (2, 88, 12, 12))
    assert share["pool"] == pytest.approx(float(w[:, :24].pow(2).sum() / w.pow(2).sum()), rel=1e-6)
    assert sum(share.values()) == pytest.approx(1.0)
    fc = model.fc.weight.detach()  # (10, 1408): feature f reads channel f // 16 of the (88, 4, 4) output
    share = br.weight_share(model.fc, (2, 88, 4, 4))
    cols = [f for f in range(1408) if 64 <= f // 16 < 88]
    assert share["3x3"] == pytest.approx(float(fc[:, cols].pow(2).sum() / fc.pow(2).sum()), rel=1e-6)


def _train_run(tmp_path, data_dir, model: str):
    out = tmp_path / model
    code = main(["train", "--model", model, "--dataset", f"idx:{data_dir}", "--epochs", "1", "--batch-size", "64",
                 "--device", "cpu", "--out", str(out), "--quiet"])
    assert code == 0
    return out


def test_analyze_branches_command(tiny_idx, tmp_path, capsys):
    run = _train_run(tmp_path, tiny_idx, "inception")
    capsys.readouterr()
    assert main(["analyze", "branches", str(run), "--train-images", "100", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "incept1" in out and "incept2" in out and "zeroed acc" in out and "conv2" in out
    result = json.loads((run / "branches.json").read_text())
    assert (run / "branches.png").stat().st_size > 10_000
    assert result["mean_from_train_images"] == 100 and result["test_images"] == 64
    assert [m["name"] for m in result["modules"]] == ["incept1", "incept2"]
    assert [m["next_layer"] for m in result["modules"]] == ["conv2", "fc"]
    for mod in result["modules"]:
        assert [r["branch"] for r in mod["branches"]] == ["pool", "1x1", "5x5", "3x3"]
        assert sum(r["next_layer_share"] for r in mod["branches"]) == pytest.approx(1.0)
        assert all(len(r["energy_per_class"]) == 10 for r in mod["branches"])
    # a class with no test images in the sample is None ('-' in the table, a grey cell), not an energy of 0
    assert main(["analyze", "branches", str(run), "--train-images", "100", "--test-images", "3", "--device", "cpu",
                 "--out", str(tmp_path / "few")]) == 0
    few = json.loads((tmp_path / "few" / "branches.json").read_text())
    energies = few["modules"][0]["branches"][0]["energy_per_class"]  # 3 images: at most 3 classes seen
    assert sum(v is None for v in energies) >= 10 - 3 and all(v is None or v > 0 for v in energies), energies
    assert " -" in capsys.readouterr().out


def test_analyze_branches_user_errors(tiny_idx, tmp_path, capsys):
    code = main(["analyze", "branches", str(tmp_path / "nope")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "no such run directory" in err
    run = _train_run(tmp_path, tiny_idx, "basic_cnn")
    capsys.readouterr()
    code = main(["analyze", "branches", str(run), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "has no InceptionModule" in err and "--model inception" in err


def test_analyze_branches_of_the_shipped_weights(tiny_idx, tmp_path, capsys, monkeypatch):
    """``cnnlab analyze branches --pretrained inception``: the lecture's claim on the shipped net, no training
    first. (The shipped weights' own dataset is MNIST; here the subject the command opens is swapped for one
    on the tiny dataset, so that the test does not read 10,000 real test images 18 times.)"""
    from cnnlab.checkpoint import model_from_checkpoint
    from cnnlab.evaluation import Subject
    from cnnlab.pretrained import load_pretrained

    asked = {}

    def tiny_subject(path, **kwargs):
        asked.update(path=path, **kwargs)
        shipped = model_from_checkpoint(load_pretrained("inception"))  # the real shipped weights, on tiny data
        return Subject(shipped, "inception", load_dataset(f"idx:{tiny_idx}"), "pretrained inception-mnist")

    monkeypatch.setattr(br, "open_subject", tiny_subject)
    monkeypatch.chdir(tmp_path)
    assert main(["analyze", "branches", "--pretrained", "inception", "--train-images", "100", "--test-images", "32",
                 "--device", "cpu"]) == 0
    assert asked["path"] is None and asked["pretrained"] == "inception"
    written = list((tmp_path / "runs").glob("branches-*/branches.json"))
    assert len(written) == 1 and (written[0].parent / "branches.png").is_file()
    result = json.loads(written[0].read_text())
    assert result["run"] == result["checkpoint"] == "pretrained inception-mnist" and result["model"] == "inception"
    assert result["test_images"] == 32 and result["mean_from_train_images"] == 100
    for args, says in ((["--pretrained", "inception", str(tmp_path)], "not both"), ([], "give one of a run")):
        capsys.readouterr()
        assert main(["analyze", "branches", *args]) == 2 and says in capsys.readouterr().err


# ----------------------------------------------------------------------------- stacks and gradients


@pytest.mark.parametrize("norm", ["none", "batch"])
def test_stacks_have_the_asked_depth(norm):
    plain = create_model("plain_stack", depth=6, width=4, norm=norm)
    res = create_model("residual_stack", depth=6, width=4, norm=norm)
    assert len(gr.weight_layers(plain)) == len(gr.weight_layers(res)) == 6 + 2  # stem + body + head
    blocks = [m for m in res.modules() if isinstance(m, ResidualBlock)]
    assert len(blocks) == 3
    assert any(isinstance(m, nn.BatchNorm2d) for m in plain.modules()) == (norm == "batch")
    assert sum(p.numel() for p in plain.parameters()) == sum(p.numel() for p in res.parameters())
    assert plain(torch.randn(2, 1, 28, 28)).shape == res(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_residual_stack_with_zero_body_passes_the_stem_through():
    torch.manual_seed(0)
    model = create_model("residual_stack", depth=4, width=3)
    with torch.no_grad():
        for block in model.body:
            block.conv2.weight.zero_()
            block.conv2.bias.zero_()
    x = torch.randn(2, 1, 28, 28)
    stem = F.relu(model.pool(model.stem(x)))
    torch.testing.assert_close(model(x), model.fc(stem.flatten(1)))


def test_bad_stack_arguments():
    with pytest.raises(CnnlabError, match="even"):
        create_model("residual_stack", depth=3)
    with pytest.raises(CnnlabError, match="norm"):
        create_model("plain_stack", norm="layer")
    for bad in ("", "4,x", "3,8", "0", "-4"):
        with pytest.raises(CnnlabError, match="--depths"):
            gr.parse_depths(bad)
    assert gr.parse_depths("8, 4,8") == [4, 8]
    with pytest.raises(CnnlabError, match="--depths at most 256 .* got 1000000"):  # it built them, until memory ran out
        gr.parse_depths("4,1000000")
    assert gr.parse_depths("256") == [256]
    # a negative rate was torch's ValueError traceback; nan and a momentum of 2 trained and wrote garbage
    for bad, message in (({"lr": -1.0}, "--lr must be a positive finite number, got -1.0"),
                         ({"lr": float("nan")}, "--lr must be a positive finite number, got nan"),
                         ({"momentum": 2.0}, r"--momentum must be in \[0, 1\), got 2.0"),
                         # 10**8 seeds ran silently for ever (no line until the first stack's seeds were done)
                         ({"seeds": 10**8}, r"--seeds must be in 1\.\.100 .* got 100000000"),
                         ({"seeds": 0}, r"--seeds must be in 1\.\.100 ")):
        with pytest.raises(CnnlabError, match=message):
            gr.analyze_gradients([2], **bad)


@pytest.mark.parametrize("kind", ["plain", "residual"])
def test_gradient_norms_match_a_direct_backward(kind):
    torch.manual_seed(3)
    model = create_model(f"{kind}_stack", depth=4, width=3)
    x, y = torch.randn(5, 1, 28, 28), torch.tensor([0, 1, 2, 3, 4])
    norms = gr.gradient_norms(model, x, y)
    assert all(p.grad is None for p in model.parameters())  # leaves no gradients behind
    F.cross_entropy(model(x), y).backward()
    body = [m for m in model.body.modules() if isinstance(m, nn.Conv2d)]
    direct = [model.stem.weight.grad.norm()] + [c.weight.grad.norm() for c in body] + [model.fc.weight.grad.norm()]
    assert norms == pytest.approx([float(d) for d in direct], rel=1e-6)


def test_analyze_gradients_matches_direct_measurement(tiny_idx):
    data = load_dataset(f"idx:{tiny_idx}")
    result = gr.analyze_gradients([2, 4], width=3, seeds=2, epochs=0, device="cpu", data=data)
    assert result["depths"] == [2, 4] and len(result["stacks"]) == 4
    s = next(s for s in result["stacks"] if s["kind"] == "residual" and s["depth"] == 4)
    assert len(s["grad_norms"]) == 2 and len(s["layers"]) == 6 and s["training"] is None
    # seed 1 by hand: same weights, same batch, plain backward()
    torch.manual_seed(1)
    model = create_model("residual_stack", depth=4, width=3)
    idx = torch.randperm(len(data.train_labels), generator=torch.Generator().manual_seed(10_001))[:64]
    x = (data.train_images[idx].float() / 255 - data.mean) / data.std
    F.cross_entropy(model(x), data.train_labels[idx]).backward()
    direct = [float(p.grad.norm()) for _, p in gr.weight_layers(model)]
    assert s["grad_norms"][1] == pytest.approx(direct, rel=1e-4)
    assert s["first_layer_grad_norm"] == pytest.approx((s["grad_norms"][0][0] + s["grad_norms"][1][0]) / 2)


def test_analyze_gradients_records_the_batches_it_used(tiny_idx):
    """``--batch-size 100000`` on a split of a few hundred images: gradients.json said 100000, where the batches
    held the whole split (and the budget's its train subset). A batch above the whole split is refused since (fixN
    s44 D4: ``data.loader.batch_beyond``); the whole split's batch above the budget's subset records the subset."""
    data = load_dataset(f"idx:{tiny_idx}")
    result = gr.analyze_gradients([2], width=2, seeds=1, epochs=1, train_images=100, test_images=0,
                                  batch_size=len(data.train_labels), device="cpu", data=data)
    assert result["batch_size"] == len(data.train_labels) and result["budget"]["batch_size"] == 100
    assert all(s["training"]["steps"] == 1 for s in result["stacks"])
    with pytest.raises(CnnlabError, match=f"^--batch-size 100,000 is more than the {len(data.train_labels)} images"):
        gr.analyze_gradients([2], width=2, seeds=1, epochs=1, train_images=100, test_images=0, batch_size=100_000,
                             device="cpu", data=data)


def test_analyze_gradients_command(tiny_idx, tmp_path, capsys):
    out = tmp_path / "grad"
    code = main(["analyze", "gradients", "--dataset", f"idx:{tiny_idx}", "--depths", "2,4", "--width", "4",
                 "--seeds", "2", "--train-images", "128", "--test-images", "0", "--device", "cpu", "--out", str(out)])
    text = capsys.readouterr().out
    assert code == 0 and "first-layer grad norm" in text and "test acc after budget" in text
    result = json.loads((out / "gradients.json").read_text())
    assert result["budget"]["train_images"] == 128 and result["budget"]["test_images"] == 64
    assert all(s["training"]["steps"] == 2 for s in result["stacks"])
    for png in ("gradients.png", "depth.png"):
        assert (out / png).stat().st_size > 10_000
    code = main(["analyze", "gradients", "--depths", "4,5", "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--depths" in err


def test_a_budget_that_diverges_between_loss_reads_is_marked(tiny_idx):
    """The loss was read at step 1 and every 20th: a 10-step budget that blew up at step 5 reported a test loss of
    None beside ``"diverged": false``, and the table had no '!'."""
    from cnnlab.data import BatchLoader

    data = load_dataset(f"idx:{tiny_idx}")
    torch.manual_seed(0)
    model = create_model("plain_stack", depth=4, width=4)
    train = BatchLoader(data.train_images, data.train_labels, 32, mean=data.mean, std=data.std, shuffle=True)
    test = BatchLoader(data.test_images, data.test_labels, 64, mean=data.mean, std=data.std, shuffle=False)
    out = gr.train_budget(model, train, test, epochs=1, lr=1e5, momentum=0.0)
    assert out["steps"] == 8 and out["test_loss"] is None and out["diverged"] is True
