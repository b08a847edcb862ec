"""cnnlab.optim: torch's optimisers without importing torch._dynamo, step for step the same."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import pytest
import torch

from cnnlab.optim import eager

KINDS = [(torch.optim.SGD, {"momentum": 0.9}), (torch.optim.Adam, {}), (torch.optim.AdamW, {})]


def _net(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 3))


def _steps(net, opt, sched, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        g = torch.Generator().manual_seed(i)
        x, y = torch.randn(8, 1, 8, 8, generator=g), torch.randint(0, 3, (8,), generator=g)
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
        sched.step()


def _groups(net):
    params = list(net.parameters())
    return [{"params": [p for p in params if p.ndim > 1]}, {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]


@pytest.mark.parametrize(("kind", "extra"), KINDS, ids=lambda k: getattr(k, "__name__", ""))
def test_the_eager_optimiser_updates_bit_for_bit_like_torchs_and_resumes_the_same(kind, extra):
    results = []
    for cls in (kind, eager(kind)):
        net = _net()
        opt = cls(_groups(net), lr=0.01, weight_decay=0.05, foreach=True, **extra)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.01, total_steps=20)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # e.g. the scheduler's "lr_scheduler.step() before optimizer.step()"
            _steps(net, opt, sched, 6)
        state, sched_state = opt.state_dict(), sched.state_dict()
        net2 = _net(1)
        net2.load_state_dict(net.state_dict())
        opt2 = cls(_groups(net2), lr=0.01, weight_decay=0.05, foreach=True, **extra)
        sched2 = torch.optim.lr_scheduler.OneCycleLR(opt2, max_lr=0.01, total_steps=20)
        opt2.load_state_dict(state)
        sched2.load_state_dict(sched_state)
        _steps(net2, opt2, sched2, 6, start=6)
        results.append((net2.state_dict(), opt2.state_dict()))
    (w_torch, s_torch), (w_eager, s_eager) = results
    assert isinstance(opt2, kind) and type(opt2).__name__ == kind.__name__
    assert all(torch.equal(w_torch[k], w_eager[k]) for k in w_torch)
    for i, st in s_torch["state"].items():
        assert all(torch.equal(v, s_eager["state"][i][k]) for k, v in st.items())


def test_step_hooks_and_grad_mode_are_torchs():
    net = _net()
    opt = eager(torch.optim.SGD)(net.parameters(), lr=0.1)
    seen = []
    opt.register_step_pre_hook(lambda o, a, k: seen.append(("pre", torch.is_grad_enabled())))
    opt.register_step_post_hook(lambda o, a, k: seen.append(("post", torch.is_grad_enabled())))
    net(torch.randn(2, 1, 8, 8)).sum().backward()
    opt.step()
    assert seen == [("pre", True), ("post", True)] and torch.is_grad_enabled()
    assert all(not p.requires_grad or p.grad is not None for p in net.parameters())
    opt.zero_grad()
    assert all(p.grad is None for p in net.parameters())


def test_a_training_process_never_imports_torch_compiles_machinery(tiny_idx, tmp_path):
    """The whole point: a run (optimiser, scheduler, EMA, checkpoints, resume) leaves torch._dynamo unloaded;
    if a torch release changes its wrappers, this says that every run again pays for importing it."""
    run = tmp_path / "run"
    args = ["train", "--dataset", f"idx:{tiny_idx}", "--model", "basic_cnn", "--recipe", "best", "--epochs", "1",
            "--batch-size", "32", "--max-steps", "4", "--device", "cpu", "--threads", "1", "--quiet", "--out", str(run)]
    code = (f"import sys\nfrom cnnlab.cli import main\nassert main({args!r}) == 0\n"
            f"assert main(['train', '--resume', {str(run)!r}, '--max-steps', '0', '--quiet']) == 0\n"
            "print('dynamo' if 'torch._dynamo' in sys.modules else 'clean')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "clean"
