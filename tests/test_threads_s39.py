"""Predictions from several threads at once leave the process's warning filters and Pillow's settings as they were:
``warnings.catch_warnings`` per image restored the threads' lists over each other, and after concurrent predictions
every later warning of the process was dropped (4 runs in 5 of a tester's)."""

from __future__ import annotations

import io
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image, ImageFile

import cnnlab


def test_concurrent_predictions_leave_the_warning_filters_as_they_were():
    digit = np.zeros((28, 28), np.uint8)
    digit[6:22, 12:16] = 255
    buf = io.BytesIO()
    Image.fromarray(255 - digit).resize((112, 112)).save(buf, format="PNG")
    data = buf.getvalue()
    predict = cnnlab.predictor(model="resnet")
    before, truncated = list(warnings.filters), ImageFile.LOAD_TRUNCATED_IMAGES
    for _ in range(3):
        with ThreadPoolExecutor(8) as pool:
            labels = set(pool.map(lambda _: predict(data).label, range(200)))
        assert len(labels) == 1
        assert warnings.filters == before and ImageFile.LOAD_TRUNCATED_IMAGES == truncated
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        warnings.warn("the caller's own warning")
    assert [str(w.message) for w in seen] == ["the caller's own warning"]
