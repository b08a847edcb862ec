"""docs/api.md's plain-PyTorch nets for other tools, run as they stand."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import cnnlab


def test_the_nets_written_out_in_the_docs_load_exported_weights():
    """docs/api.md writes both lecture nets out in plain PyTorch for other tools (a tester could rebuild them from no
    doc): its block, run as it stands, loads the shipped safetensors files strictly and gives cnnlab's outputs."""
    doc = (Path(__file__).resolve().parents[1] / "docs" / "api.md").read_text()
    section = doc.split("## The nets without cnnlab", 1)[1]
    block = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace: dict = {}
    exec(compile(block, "docs/api.md", "exec"), namespace)
    weights = Path(cnnlab.__file__).parent / "weights"
    x = torch.randn(5, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    for model in ("resnet", "inception"):
        net, meta = namespace["load_exported"](str(weights / f"{model}-mnist.safetensors"))
        assert meta["model"] == model and float(meta["normalization_mean"]) == pytest.approx(0.1307)
        ours = cnnlab.create_model(model, pretrained=True)
        with torch.no_grad():
            torch.testing.assert_close(net(x), ours(x), rtol=0, atol=1e-5)
