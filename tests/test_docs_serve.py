"""docs/serve.md's client, run as it stands against a server of the shipped net: its answers are the predictor's, and
a refusal is its one line."""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path

import pytest

import cnnlab
from apps_helpers import draw_digit
from cnnlab.predict import Predictor
from cnnlab.serve.app import create_app
from test_serve import Server

DOC = Path(__file__).resolve().parents[1] / "docs" / "serve.md"


def _client() -> dict:
    section = DOC.read_text().split("## A client in plain Python\n", 1)[1]
    namespace: dict = {}
    exec(compile(re.search(r"```python\n(.*?)```", section, re.S).group(1), "docs/serve.md", "exec"), namespace)
    return namespace


def test_the_docs_client_gets_the_predictors_answer_and_the_info_shown(tmp_path):
    pictures = []
    for i, (box, width, suffix) in enumerate((((50, 50, 250, 250), 0.12, "png"), ((80, 40, 200, 260), 0.08, "jpg"),
                                              ((30, 90, 270, 210), 0.2, "bmp"))):
        path = tmp_path / f"d{i}.{suffix}"
        draw_digit(box=box, width_frac=width).save(path)
        pictures.append(path)
    (tmp_path / "notes.png").write_text("not an image")
    predict_file = _client()["predict_file"]
    app = create_app(Predictor.pretrained("resnet", device="cpu"), say=lambda m: None, warn=lambda m: None)
    ours = cnnlab.predictor(model="resnet")
    with Server(app) as server:
        info = json.loads(urllib.request.urlopen(server.url + "/info", timeout=30).read())
        for path in pictures:
            answer = predict_file(path, url=server.url)
            mine = ours(path)
            assert answer["prediction"] == mine.label and answer["classes"] == info["classes"]
            assert answer["probabilities"] == pytest.approx(list(mine.probabilities), abs=1e-6)
            assert answer["checkpoint"] == info["checkpoint"] and answer["number"] is None
        with pytest.raises(RuntimeError, match=r"^400: .*not an image"):
            predict_file(tmp_path / "notes.png", url=server.url)
    assert _keys("## `GET /info`") == set(info) | set(info["checkpoint"])
    optional = {"thick_strokes", "image_paper"}  # only where they apply (the last drawing's strokes are thick)
    assert "thick_strokes" in answer and all(f"`{key}`" in DOC.read_text() for key in optional)
    assert _keys("## `POST /predict`") == (set(answer) - optional) | set(answer["top"][0]) | set(answer["checkpoint"])


def _keys(heading: str) -> set[str]:
    """The JSON keys of the example under ``heading`` of docs/serve.md."""
    return set(re.findall(r'"(\w+)":', DOC.read_text().split(heading, 1)[1].split("```", 2)[1]))
