"""The drawing page and its HTTP API, a browser tester's defects of session 45 (each reproduced in headless Chromium,
or with a raw request):

- a palm resting on the canvas before the stylus landed swallowed the pen's whole stroke (taken for a pinch);
- an opened image whose file changed on disk afterwards: "cannot reach the cnnlab server", sent again for ever
  (the page sent the disk-backed File each time, and Chromium refuses a changed file's upload);
- with ``serve --max-pixels`` under 1024x1024 the page's "scaled copy" of a large image was over the cap, or the
  image not scaled at all;
- a drawing answered before the page's first /info came: "the server now serves another net" for the same net;
- a withdrawn net (its run diverged) was shown as a gateway's outage "Waiting for it";
- a body sent with ``Content-Encoding: gzip`` was refused as "not an image".
"""

from __future__ import annotations

import gzip
import json
import time
import urllib.error
import urllib.request

import pytest
from apps_helpers import draw_digit, tiny_checkpoint
from test_serve import Server, png, post
from test_serve_page_s41 import (PCTS, SEVEN, _answered, _app, _draw, _ink, _open, _pixel, _status, _updates,
                                 browser)

from cnnlab.predict import Predictor

pytest.importorskip("uvicorn")
pytest.importorskip("fastapi")

__all__ = ["browser"]  # test_serve_page_s41's fixture: Debian's Chromium under Playwright


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A digits' net (basic_cnn, mnist) served on a free port."""
    with Server(_app(tiny_checkpoint(tmp_path_factory.mktemp("nets") / "digits.pt"))) as srv:
        yield srv


@pytest.fixture
def page(browser, server):
    tab = _open(browser, server.url)
    yield tab
    tab.context.close()


def _settled(page, before: int, timeout: float = 10_000) -> None:
    """Wait for an answer after the ``before``-th, or a line in the status (a refusal, an outage): whichever comes."""
    page.wait_for_function(f"Number(document.body.dataset.updates || 0) > {before} "
                           "|| document.getElementById('status').textContent !== ''", timeout=timeout)
    page.wait_for_function("document.body.dataset.inflight === '0'", timeout=timeout)


# ----------------------------------------------------------------------------- the palm that lands first


def test_a_palm_landing_before_the_stylus_does_not_swallow_the_pens_stroke(page):
    """A hand resting on the canvas, then a pen writing a 7: Chromium's events `pointerdown:touch`, `pointerdown:pen`,
    `pointerup:pen`, `pointerup:touch`. The pen's pointerdown was taken for a pinch: the palm's dot taken back and the
    pen's stroke never drawn (0 ink pixels, no answer). The pen supersedes the touch: its dot is taken back, the pen
    draws, and the 7 is answered as the same 7 drawn alone."""
    box = page.locator("#pad").bounding_box()
    cdp = page.context.new_cdp_session(page)

    def palm(kind):
        points = [{"x": box["x"] + 250, "y": box["y"] + 260, "id": 5}] if kind == "touchStart" else []
        cdp.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": points})

    def pen_seven():
        at = [(box["x"] + x, box["y"] + y) for x, y in SEVEN]
        for k, (x, y) in enumerate(at):
            kind = "mousePressed" if k == 0 else "mouseMoved"
            cdp.send("Input.dispatchMouseEvent", {"type": kind, "x": x, "y": y, "button": "left", "buttons": 1,
                                                  "clickCount": 1, "pointerType": "pen"})
        cdp.send("Input.dispatchMouseEvent", {"type": "mouseReleased", "x": at[-1][0], "y": at[-1][1],
                                              "button": "left", "buttons": 0, "clickCount": 1, "pointerType": "pen"})

    pen_seven()  # the pen alone: what the 7 is
    _answered(page, 0)
    alone, pcts = _ink(page), page.eval_on_selector_all("#bars .pct", PCTS)
    page.click("#clear")
    before = _updates(page)
    palm("touchStart")  # the palm lands first
    page.wait_for_timeout(100)
    pen_seven()
    palm("touchEnd")
    _settled(page, before)
    assert _ink(page) == alone > 3000  # the pen's 7, whole
    assert _pixel(page, 250, 260) == [255, 255, 255]  # the palm's dot taken back
    assert page.eval_on_selector_all("#bars .pct", PCTS) == pcts and _status(page) == ""
    page.wait_for_timeout(300)
    assert page.eval_on_selector_all("#bars .pct", PCTS) == pcts
    assert page.errors == []


# ----------------------------------------------------------------------------- the opened file changed on disk


def test_an_opened_image_is_sent_from_memory_after_its_file_changed_on_disk(page, tmp_path):
    """Open digit.png (answered), a stroke over it (answered), the file saved again on disk (a byte appended), Undo
    back to the image: `cannot reach the cnnlab server ... (Failed to fetch)`, sent again every 10 s for ever
    (Chromium's ERR_UPLOAD_FILE_CHANGED: the page sent the disk-backed File). The image opened is copied into memory
    once: Undo sends what was opened, and is answered as it was."""
    image = tmp_path / "digit.png"
    image.write_bytes(png(draw_digit()))
    page.set_input_files("#file", str(image))
    _answered(page, 0)
    pcts = page.eval_on_selector_all("#bars .pct", PCTS)
    before = _updates(page)
    _draw(page, [(30, 30), (60, 60)])
    _answered(page, before)
    with open(image, "ab") as f:  # saved again by an image editor
        f.write(b"\0")
    before = _updates(page)
    page.click("#undo")
    _settled(page, before)
    assert _status(page) == "" and page.eval_on_selector_all("#bars .pct", PCTS) == pcts
    image.rename(tmp_path / "moved.png")  # moved away: a re-send (a server restarted, a retry) still has it
    before = _updates(page)
    _draw(page, [(30, 30), (60, 60)])
    _answered(page, before)
    before = _updates(page)
    page.click("#undo")
    _settled(page, before)
    assert _status(page) == "" and page.eval_on_selector_all("#bars .pct", PCTS) == pcts
    assert page.errors == []


# ----------------------------------------------------------------------------- the scaled copy within --max-pixels


@pytest.mark.parametrize("side, scaled", [(600, "512x512"), (2000, "512x512")])
def test_a_large_image_is_scaled_within_the_servers_pixel_limit(browser, tmp_path, side, scaled):
    """`serve --max-pixels 262144` (512x512): a 600x600 PNG was "scaled" by min(1, 1024/600) = 1 and refused (360,000
    pixels, over the limit), a 2000x2000 one scaled to 1024x1024 and refused under the file's name. The copy's sides
    are capped by the server's pixel limit too: both are read from a 512x512 copy, as `cnnlab predict` reads one."""
    ckpt = tiny_checkpoint(tmp_path / "digits.pt")
    with Server(_app_capped(ckpt, 512 * 512)) as srv:
        page = _open(browser, srv.url)
        try:
            data = png(draw_digit(canvas=(side, side), box=(side // 6, side // 6, 5 * side // 6, 5 * side // 6)))
            page.set_input_files("#file", files=[{"name": "seven.png", "mimeType": "image/png", "buffer": data}])
            _settled(page, 0)
            assert _status(page) == "", _status(page)
            assert f"read from a copy scaled to {scaled}" in page.inner_text("#confidence")
            assert "262,144 pixels" in page.inner_text("#confidence")
            assert page.errors == []
        finally:
            page.context.close()


def _app_capped(ckpt, max_pixels: int):
    from cnnlab.serve.app import create_app

    return create_app(Predictor.from_run(ckpt, device="cpu", max_pixels=max_pixels))


# ----------------------------------------------------------------------------- no news before the first /info


def test_a_drawing_answered_before_the_first_info_is_no_news(browser, server):
    """/info slow (a slow link, or a server loading a changed checkpoint), a 7 drawn at once: the answer came first,
    the page read /info again for it, meanwhile its first /info showed the net, and the red line said "the server now
    serves another net: model ..." for 8 s, about the net served from the start. Nothing changed that the page knew
    of: no news, and the answer is shown under the net's bars."""
    context = browser.new_context(viewport={"width": 1000, "height": 720})
    page = context.new_page()
    page.set_default_timeout(10_000)
    page.errors = []
    page.on("pageerror", lambda err: page.errors.append(str(err)))
    held = []
    page.route("**/info", lambda route: held.append(route))  # each /info held until let go
    try:
        page.goto(server.url + "/")
        page.wait_for_function("document.readyState === 'complete'")
        _draw(page, SEVEN)  # before the page's /info answered
        deadline = time.monotonic() + 10
        while len(held) < 2 and time.monotonic() < deadline:  # init's /info, then the answer's
            page.wait_for_timeout(50)
        assert len(held) == 2, held
        held[0].continue_()  # the page's first /info: the net shown
        page.wait_for_selector("body[data-ready='1']")
        held[1].continue_()  # the answer's: the same net
        _answered(page, 0)
        assert _status(page) == "" and "trained on mnist" in page.inner_text("#model")
        assert page.locator("#bars .fill").count() == 10 and page.inner_text("#prediction") != ""
        assert page.errors == []
    finally:
        context.close()


# ----------------------------------------------------------------------------- a withdrawn net is no outage


def test_a_withdrawn_net_is_the_servers_refusal_not_an_outage(browser, tmp_path):
    """A served run diverged (its status.json written as a diverged run's), then a stroke: `error 503 from the server
    on this port (... train it again with a lower --lr). Waiting for it: trying again in 2 s`, a gateway's wording
    and a wait that mends nothing. The withdrawn 503 names itself (`"withdrawn"`, as /info does): the page shows the
    server's line, says the drawing is sent again when the server answers with a net again (backing off as for an
    outage), and answers once the run reads as not diverged any more."""
    from test_atkU_s43 import _diverged, _trained_checkpoint

    from cnnlab.runs import write_status

    run = tmp_path / "run"
    ckpt = _trained_checkpoint(run / "last.pt")
    (run / "config.json").write_text(json.dumps({"config": {"model": "basic_cnn", "dataset": "mnist", "epochs": 1}}))
    write_status(run, "running", "")
    from cnnlab.serve.app import create_app

    app = create_app(Predictor.from_run(ckpt, device="cpu"), say=lambda m: None, warn=lambda m: None)
    with Server(app) as srv:
        page = _open(browser, srv.url)
        try:
            _draw(page, SEVEN)
            _answered(page, 0)
            _diverged(run)
            status, body = post(srv.url, png(draw_digit()))
            assert status == 503 and body["withdrawn"] == body["error"], body
            before = _updates(page)
            _draw(page, [(30, 250), (250, 250)])
            page.wait_for_function("document.getElementById('status').textContent.includes('diverged')")
            line = _status(page)
            assert line.startswith(f"{run} failed, training diverged: "), line
            assert "sent again when the server answers with a net again" in line
            assert "error 503" not in line and "Waiting for it" not in line
            assert page.inner_text("#prediction") == ""
            write_status(run, "running", "")  # trained again: the net answers again, the drawing with it
            _answered(page, before, timeout=20_000)
            assert _status(page) == "" and page.inner_text("#prediction") != ""
            assert page.errors == []
        finally:
            page.context.close()


# ----------------------------------------------------------------------------- Content-Encoding


def _raw_post(url: str, data: bytes, headers: dict) -> tuple[int, dict, dict]:
    req = urllib.request.Request(url + "/predict", data=data, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as res:
            return res.status, dict(res.headers), json.loads(res.read())
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), json.loads(err.read())


@pytest.mark.parametrize("coding", ["gzip", "GZIP", "identity, gzip", "br"])
def test_a_content_encoding_the_server_does_not_take_is_415_naming_it(server, coding):
    """`curl -H 'Content-Type: image/png' -H 'Content-Encoding: gzip' --data-binary @digit.png.gz`: `400 upload: not
    an image (no PNG, JPEG, BMP, GIF or WebP data found); give an image file`, the wrong cause. RFC 9110 15.5.16: a
    content coding not taken is 415, with Accept-Encoding naming what is."""
    data = png(draw_digit())
    status, headers, body = _raw_post(server.url, gzip.compress(data),
                                      {"Content-Type": "image/png", "Content-Encoding": coding})
    assert status == 415, body
    assert body == {"error": f"Content-Encoding {coding} is not accepted; send the image uncompressed"}
    assert {k.lower(): v for k, v in headers.items()}["accept-encoding"] == "identity"
    status, _, body = _raw_post(server.url, data, {"Content-Type": "image/png", "Content-Encoding": "identity"})
    assert status == 200 and body["prediction"] in [str(i) for i in range(10)]
