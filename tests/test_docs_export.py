"""docs/export.md's blocks for other programs (onnxruntime, TorchScript), run as they stand on exports of the shipped
nets, against cnnlab's own outputs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import cnnlab
from apps_helpers import draw_digit
from cnnlab import export
from cnnlab.export import export_run
from cnnlab.preprocessing import preprocess

DOC = Path(__file__).resolve().parents[1] / "docs" / "export.md"


def _block(heading: str) -> dict:
    """The python block under ``heading`` of docs/export.md, run: its namespace."""
    section = DOC.read_text().split(f"## {heading}\n", 1)[1]
    namespace: dict = {}
    exec(compile(re.search(r"```python\n(.*?)```", section, re.S).group(1), "docs/export.md", "exec"), namespace)
    return namespace


@pytest.fixture
def fields() -> np.ndarray:
    """Five drawings on white paper (other boxes and pens), prepared as ``cnnlab predict`` prepares them: 28x28 in
    0..1; and random fields."""
    drawn = [preprocess(draw_digit(box=box, width_frac=w)) for box, w in
             (((50, 50, 250, 250), 0.12), ((80, 40, 200, 260), 0.08), ((30, 90, 270, 210), 0.2))]
    return np.stack([*drawn, *np.random.default_rng(0).random((2, 28, 28), dtype=np.float32)]).astype(np.float32)


@pytest.mark.parametrize("model", ["resnet", "inception"])
def test_the_onnx_block_gives_what_the_predictor_gives(model, fields, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    monkeypatch.setattr(export, "sample_inputs", lambda state, n, *a: torch.rand(n, 1, 28, 28))  # no MNIST needed
    path = export_run(None, "onnx", out=tmp_path / "n.onnx", samples=4, pretrained=model).path
    doc = _block("ONNX with onnxruntime")
    session, meta = doc["load_onnx"](str(path))
    labels, probabilities = doc["classify"](session, meta, fields)
    predict = cnnlab.predictor(model=model)
    ours = [predict(f, preprocess=False) for f in fields]
    assert labels == [p.label for p in ours]
    np.testing.assert_allclose(probabilities, np.stack([p.probabilities for p in ours]), atol=1e-5)
    assert meta["model"] == model and meta["dataset"] == "mnist" and meta["output"].startswith("logits")


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_the_torchscript_block_gives_cnnlabs_logits(fields, tmp_path, monkeypatch):
    monkeypatch.setattr(export, "sample_inputs", lambda state, n, *a: torch.rand(n, 1, 28, 28))
    path = export_run(None, "torchscript", out=tmp_path / "n.torchscript.pt", samples=4, pretrained="resnet").path
    net, meta = _block("TorchScript")["load_torchscript"](str(path))
    x = (torch.from_numpy(fields)[:, None] - float(meta["normalization_mean"])) / float(meta["normalization_std"])
    with torch.no_grad():
        torch.testing.assert_close(net(x), cnnlab.create_model("resnet", pretrained=True)(x), rtol=0, atol=1e-5)
    assert json.loads(meta["classes"]) == [str(d) for d in range(10)] and meta["model"] == "resnet"
