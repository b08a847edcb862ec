"""The drawing page (`cnnlab serve`), a tester's defects of session 41, each reproduced in headless Chromium:

- a server restarted on the same port with another net under an open tab: the header still named the old net, a
  Fashion-MNIST answer stood under the digits' bars, and 12 classes against 10 bars threw a TypeError that the page
  reported as "cannot reach the cnnlab server";
- a drawing left unanswered while the server was down was never sent again once it was back;
- on a 320x480 phone the prediction was below the fold, and the canvas takes no scroll gestures;
- the right or middle mouse button drew, and a second finger (a pinch) drew the first finger's line; no Undo;
- a letter or a doodle was read as confidently as a digit, without a word that the net always picks a class;
- a net trained on an MNIST-as-PNG folder (light digits on black, read as they are) was drawn black on white, and read
  a drawn 7 as "0" without a word; a 200-byte class name spilled over the bars and the page scrolled sideways.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import time
import urllib.request

import pytest
from apps_helpers import draw_digit, tiny_checkpoint
from test_serve import CHROMIUM, CHROMIUM_ARGS, Server, png, post

from cnnlab.predict import Predictor

pytest.importorskip("uvicorn")
pytest.importorskip("fastapi")

FASHION = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
LETTERS = list("ABCDEFGHIJKL")
#: A "7" in the canvas's own pixels (280x280), and two other strokes.
SEVEN = [(70, 60), (150, 60), (210, 60), (170, 140), (140, 200), (120, 240)]
BAR = [(60, 150), (220, 150)]
HOOK = [(120, 40), (120, 200), (200, 230)]
PCTS = "els => els.map(e => e.textContent)"


def _app(ckpt):
    from cnnlab.serve.app import create_app

    return create_app(Predictor.from_run(ckpt, device="cpu"))


@pytest.fixture(scope="module")
def apps(tmp_path_factory):
    """The apps of three nets: the digits (basic_cnn, mnist), Fashion-MNIST (an Inception net) and 12 letters."""
    folder = tmp_path_factory.mktemp("nets")
    return {"digits": _app(tiny_checkpoint(folder / "digits.pt")),
            "fashion": _app(tiny_checkpoint(folder / "fashion.pt", model="inception", classes=FASHION,
                                            dataset="fashion-mnist")),
            "letters": _app(tiny_checkpoint(folder / "letters.pt", classes=LETTERS, dataset="idx:/data/letters"))}


@pytest.fixture(scope="module")
def server(apps):
    with Server(apps["digits"]) as srv:
        yield srv


@pytest.fixture(scope="module")
def browser():
    if not (os.path.exists(CHROMIUM) or shutil.which("chromium")):
        pytest.skip("Debian's chromium is not installed (apt-get install chromium; .ci/run installs it)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed")
    with sync_api.sync_playwright() as pw:
        found = pw.chromium.launch(executable_path=CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium"),
                                   args=CHROMIUM_ARGS, headless=True)
        yield found
        found.close()


def _open(browser, url: str, width: int = 1000, height: int = 720, mobile: bool = False):
    """A new tab on the page at ``url``, ready (its /info read); script errors are collected in ``page.errors``."""
    context = browser.new_context(viewport={"width": width, "height": height}, has_touch=True, is_mobile=mobile)
    page = context.new_page()
    page.set_default_timeout(10_000)
    page.errors = []
    page.on("pageerror", lambda err: page.errors.append(str(err)))
    page.goto(url + "/")
    page.wait_for_selector("body[data-ready='1']")
    return page


@pytest.fixture
def page(browser, server):
    tab = _open(browser, server.url)
    yield tab
    tab.context.close()


def _draw(page, points, button: str = "left") -> None:
    """A mouse stroke through ``points``, given in the canvas's 280x280 pixels."""
    box = page.locator("#pad").bounding_box()
    scale = box["width"] / 280
    at = [(box["x"] + x * scale, box["y"] + y * scale) for x, y in points]
    page.mouse.move(*at[0])
    page.mouse.down(button=button)
    for x, y in at[1:]:
        page.mouse.move(x, y, steps=5)
    page.mouse.up(button=button)


def _updates(page) -> int:
    return int(page.evaluate("Number(document.body.dataset.updates || 0)"))


def _answered(page, before: int, timeout: float = 10_000) -> None:
    """Wait for an answer after the ``before``-th, and for none to be on its way."""
    page.wait_for_function(f"Number(document.body.dataset.updates || 0) > {before}", timeout=timeout)
    page.wait_for_function("document.body.dataset.inflight === '0'", timeout=timeout)


def _canvas(page) -> str:
    return page.evaluate("document.getElementById('pad').toDataURL()")


def _ink(page) -> int:
    return page.evaluate("""() => { const d = document.getElementById('pad').getContext('2d')
        .getImageData(0, 0, 280, 280).data;
        let n = 0; for (let i = 0; i < d.length; i += 4) n += d[i] < 128; return n; }""")


def _shows(page, pcts: list[str]) -> None:
    """Wait until the bars show ``pcts`` (an answer for the same drawing: the same probabilities)."""
    page.wait_for_function(f"JSON.stringify([...document.querySelectorAll('#bars .pct')].map(e => e.textContent)) "
                           f"=== {json.dumps(json.dumps(pcts, separators=(',', ':')))}")


def _status(page) -> str:
    return page.inner_text("#status")


def test_the_predict_answer_names_the_net_as_info_does(server):
    """The page tells a restarted server's other net by the answer itself: its model and dataset, beside classes."""
    status, body = post(server.url, png(draw_digit()))
    with urllib.request.urlopen(server.url + "/info") as res:
        info = json.loads(res.read())
    assert status == 200 and (body["model"], body["dataset"], body["classes"]) == (
        info["model"], info["dataset"], info["classes"]) == ("basic_cnn", "mnist", [str(i) for i in range(10)])


def test_a_server_restarted_with_another_net_under_an_open_tab_relabels_the_page(browser, apps):
    """The tester's restart: the same port, another net (Fashion-MNIST, then 12 classes), the tab left open. The
    drawing sent while the server was down is answered once it is back, under the new net's bars and header."""
    first = Server(apps["digits"])
    port = first.port
    with first:
        page = _open(browser, first.url)
        _draw(page, SEVEN)
        _answered(page, 0)
        assert page.locator("#bars .fill").count() == 10 and "trained on mnist" in page.inner_text("#model")
    try:
        before = _updates(page)
        page.click("#clear")
        _draw(page, SEVEN)  # the server is down: the page says so, and waits
        page.wait_for_function("document.getElementById('status').textContent.includes('cannot reach')")
        assert "trying again in" in _status(page)
        with Server(apps["fashion"], port=port):
            _answered(page, before, timeout=20_000)  # no new stroke: the page sent the drawing again
            labels = page.eval_on_selector_all("#bars .label", PCTS)
            assert labels == FASHION and page.inner_text("h1").startswith("Draw an item of clothing")
            assert "model inception (Inception), trained on fashion-mnist" in page.inner_text("#model")
            assert "the server now serves another net" in _status(page)
            prediction = page.inner_text("#prediction")
            assert prediction in FASHION and page.inner_text("#bars .label.top") == prediction
        with Server(apps["letters"], port=port):
            before = _updates(page)
            page.click("#clear")
            _draw(page, SEVEN)
            _answered(page, before, timeout=20_000)
            assert page.eval_on_selector_all("#bars .label", PCTS) == LETTERS
            assert page.inner_text("h1").startswith("Draw one of its classes")
            assert "model basic_cnn, trained on idx:letters" in page.inner_text("#model")
            assert page.inner_text("#prediction") in LETTERS
            assert page.inner_text("#bars .label.top") == page.inner_text("#prediction")
            assert "cannot reach" not in _status(page) and "could not show" not in _status(page)
            assert "one of its 12 classes" in page.inner_text("#always-one")
        assert page.errors == []
    finally:
        page.context.close()


def test_a_drawing_unanswered_is_sent_again_until_the_server_answers(page):
    """The server out of reach: the same drawing is sent again after 1 s, 2 s, ... (no storm: one request at a time,
    one timer), and answered without a new stroke once the server is back; Clear drops the pending re-send."""
    sent, blocked = [], [True]

    def route(r):
        sent.append(time.monotonic())
        return r.abort() if blocked[0] else r.continue_()

    page.route("**/predict", route)
    _draw(page, SEVEN)
    page.wait_for_function("document.getElementById('status').textContent.includes('cannot reach')")
    assert "Waiting for it: trying again in 1 s" in _status(page)
    start = len(sent)
    page.wait_for_function("document.getElementById('status').textContent.includes('trying again in 2 s')")
    page.wait_for_timeout(500)
    assert len(sent) == start + 1  # the same drawing sent again, once, with no stroke drawn
    gaps = [b - a for a, b in itertools.pairwise(sent)]
    assert min(gaps) > 0.9, gaps  # one request at a time, a second apart at least: the stroke's moves waited too
    blocked[0] = False
    _answered(page, 0, timeout=15_000)
    assert page.inner_text("#prediction") != "" and _status(page) == ""

    blocked[0] = True
    page.click("#clear")
    _draw(page, BAR)
    page.wait_for_function("document.getElementById('status').textContent.includes('cannot reach')")
    page.click("#clear")  # supersedes the re-send due
    blocked[0] = False
    count, before = len(sent), _updates(page)
    page.wait_for_timeout(2500)
    assert len(sent) == count and _updates(page) == before and page.inner_text("#prediction") == ""
    assert page.errors == []


def test_an_answer_the_page_cannot_show_is_not_called_a_network_failure(page):
    """A script error while showing an answer was reported as "cannot reach the cnnlab server"."""
    sent = []

    def broken(route):
        sent.append(1)
        route.fulfill(status=200, content_type="application/json", body=json.dumps({
            "prediction": "3", "classes": [str(i) for i in range(10)], "model": "basic_cnn", "dataset": "mnist",
            "probabilities": None, "top": []}))

    page.route("**/predict", broken)
    _draw(page, SEVEN)
    page.wait_for_function("document.getElementById('status').textContent.length > 0")
    page.wait_for_function("document.body.dataset.inflight === '0'")
    count = len(sent)
    page.wait_for_timeout(2500)
    status = _status(page)
    assert "could not show the server's answer" in status and "cannot reach" not in status, status
    assert page.inner_text("#prediction") == "" and len(sent) == count  # not sent again: the server did answer


@pytest.mark.parametrize("width, height", [(320, 480), (390, 844)])
def test_on_a_phone_the_answer_is_in_view_beside_the_whole_canvas(browser, server, width, height):
    """320x480: #prediction was at y=542, below the fold, and the canvas takes no scroll gestures."""
    page = _open(browser, server.url, width, height, mobile=True)
    try:
        _draw(page, SEVEN)
        _answered(page, 0)
        assert page.evaluate("[scrollX, scrollY]") == [0, 0]
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        for selector in ("#pad", "#prediction", "#confidence", "#clear", "#undo"):
            box = page.locator(selector).bounding_box()
            assert box["x"] >= 0 and box["y"] >= 0, selector
            assert box["x"] + box["width"] <= width and box["y"] + box["height"] <= height, (selector, box)
        assert page.locator("#pad").bounding_box()["width"] >= 180  # still a canvas to draw on
    finally:
        page.context.close()
    desktop = _open(browser, server.url)
    try:
        box = desktop.locator("#pad").bounding_box()
        assert (box["width"], box["height"]) == (280, 280)  # the desktop's canvas as it was
    finally:
        desktop.context.close()


def test_only_the_primary_button_draws_and_a_second_finger_takes_the_stroke_back(page):
    """A right-drag spoiled a 7 into a 1 and a context-menu click left a dot; a pinch drew the first finger's line."""
    sent = []
    page.on("request", lambda req: req.url.endswith("/predict") and sent.append(1))
    _draw(page, BAR, button="right")
    _draw(page, HOOK, button="middle")
    box = page.locator("#pad").bounding_box()
    page.mouse.click(box["x"] + 140, box["y"] + 140, button="right")
    page.keyboard.press("Escape")  # the context menu, if any
    page.wait_for_timeout(500)
    assert _ink(page) == 0 and sent == [] and page.is_disabled("#undo")

    _draw(page, SEVEN)
    _answered(page, 0)
    drawn, pcts = _canvas(page), page.eval_on_selector_all("#bars .pct", PCTS)
    cdp = page.context.new_cdp_session(page)

    def touch(kind, *points):
        cdp.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": [
            {"x": box["x"] + x, "y": box["y"] + y, "id": i} for i, (x, y) in enumerate(points)]})

    touch("touchStart", (40, 250))
    for k in range(1, 10):  # the first finger draws, and its line is sent as it goes
        touch("touchMove", (40 + 20 * k, 250))
        page.wait_for_timeout(30)
    touch("touchStart", (220, 250), (140, 40))  # a second finger: a pinch
    for k in range(1, 6):
        touch("touchMove", (220 - 10 * k, 250 - 10 * k), (140 + 10 * k, 40 + 10 * k))
    touch("touchEnd")
    page.wait_for_timeout(300)
    assert _canvas(page) == drawn  # the first finger's stroke taken back
    _shows(page, pcts)  # the drawing as it is again: its answer, not the half stroke's
    page.wait_for_function("document.body.dataset.inflight === '0'")
    assert page.eval_on_selector_all("#bars .pct", PCTS) == pcts
    assert page.errors == []


def test_undo_and_ctrl_z_take_back_strokes_and_drop_a_late_answer(page):
    """Undo (the button, Ctrl+Z, Cmd+Z) removes the last stroke and sends the drawing, as Clear does: an answer for
    the drawing before it, still on its way, is dropped. At most 30 strokes are kept."""
    assert page.is_disabled("#undo")
    _draw(page, SEVEN)
    _answered(page, 0)
    seven, pcts = _canvas(page), page.eval_on_selector_all("#bars .pct", PCTS)
    before = _updates(page)
    _draw(page, BAR)
    _answered(page, before)
    page.click("#undo")
    assert _canvas(page) == seven
    _shows(page, pcts)

    held, holding = [], [True]
    page.route("**/predict", lambda route: held.append(route) if holding[0] else route.continue_())
    _draw(page, HOOK)
    page.wait_for_function("document.body.dataset.inflight === '1'")
    page.wait_for_timeout(200)
    page.keyboard.press("Control+z")
    assert _canvas(page) == seven
    before = _updates(page)
    holding[0] = False
    for route in held:
        route.continue_()  # the hook's answer, late: for a drawing no longer on the canvas
    _answered(page, before)
    page.wait_for_timeout(500)
    assert _updates(page) == before + 1 and page.eval_on_selector_all("#bars .pct", PCTS) == pcts
    page.keyboard.press("Meta+z")  # Cmd+Z: nothing left, the results cleared
    assert _ink(page) == 0 and page.inner_text("#prediction") == "" and page.is_disabled("#undo")

    for k in range(32):
        _draw(page, [(20 + 7 * k, 30), (20 + 7 * k, 60)])
        if k == 1:
            two = _canvas(page)
    for _ in range(30):
        page.click("#undo")
    assert page.is_disabled("#undo") and _canvas(page) == two  # the first two strokes, no further back
    assert page.errors == []


def test_the_page_says_the_net_always_picks_one_of_its_classes(page):
    """A letter A, an H or a heart was read "4 89.6% sure": the softmax always picks a class. A small, muted line by
    the confidence says so (no out-of-distribution score is made up)."""
    line = page.locator("#always-one")
    assert line.is_visible()
    assert "the net always picks one of its 10 classes: a letter or a doodle gets one too" in " ".join(
        line.inner_text().split())
    style = "el => { const s = getComputedStyle(el); return [parseFloat(s.fontSize), s.color]; }"
    size, color = line.evaluate(style)
    confidence_size, confidence_color = page.locator("#confidence").evaluate(style)
    assert size < confidence_size and color == confidence_color


def test_a_small_digit_drawn_with_the_broad_pen_gets_the_servers_doubt_beside_its_answer(page):
    """A 7 28 px high drawn with the page's 20-px pen was read '8' 85% sure without a word: the answer's
    ``thick_strokes`` is shown beside it, and goes with the next drawing or Clear."""
    _draw(page, [(126, 126), (145, 126), (133, 154)])
    _answered(page, 0)
    doubt = page.inner_text("#doubt")
    assert page.is_visible("#doubt") and "wider than almost any MNIST digit's" in doubt and "Draw it larger" in doubt
    page.click("#clear")
    assert page.inner_text("#doubt") == "" and not page.is_visible("#doubt")
    before = _updates(page)
    _draw(page, SEVEN)
    _answered(page, before)
    assert page.inner_text("#doubt") == "" and not page.is_visible("#doubt")
    assert page.errors == []


def test_a_palm_on_the_screen_while_a_stylus_draws_is_ignored(page):
    """A second finger takes a finger's stroke back (a pinch); a hand resting on the screen while a pen draws is a
    palm: the pen's stroke goes on."""
    box = page.locator("#pad").bounding_box()
    cdp = page.context.new_cdp_session(page)

    def pen(kind, x, y):
        cdp.send("Input.dispatchMouseEvent", {"type": kind, "x": box["x"] + x, "y": box["y"] + y, "button": "left",
                                              "buttons": 0 if kind == "mouseReleased" else 1, "clickCount": 1,
                                              "pointerType": "pen"})

    pen("mousePressed", 40, 140)
    for k in range(1, 5):
        pen("mouseMoved", 40 + 20 * k, 140)
    cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [
        {"x": box["x"] + 200, "y": box["y"] + 260, "id": 7}]})  # the palm
    for k in range(5, 10):
        pen("mouseMoved", 40 + 20 * k, 140)
    cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
    pen("mouseReleased", 220, 140)
    page.wait_for_timeout(300)
    assert page.evaluate("""() => { const d = document.getElementById('pad').getContext('2d')
        .getImageData(40, 140, 181, 1).data; let n = 0; for (let i = 0; i < d.length; i += 4) n += d[i] < 128;
        return n; }""") >= 170  # the whole line, from x=40 to x=220
    page.wait_for_function("Number(document.body.dataset.updates || 0) >= 1", timeout=10_000)
    assert page.errors == []


# ----------------------------------------------------------------------------- the paper of a folder net; long names

LONG = ["x" * 200, "é" * 100, "short"]  # 200 bytes each, as the tester's; and a short one


@pytest.fixture(scope="module")
def folder_nets(tmp_path_factory):
    """Checkpoints of image folders' nets: MNIST as PNGs (light on dark, mean 0.13), black letters on white paper
    (mean 0.9), and one of long class names."""
    folder = tmp_path_factory.mktemp("folder-nets")
    return {"dark": tiny_checkpoint(folder / "dark.pt", dataset="folder:/data/mnist_png", mean=0.13),
            "light": tiny_checkpoint(folder / "light.pt", dataset="folder:/data/paper", classes=LETTERS, mean=0.9),
            "long": tiny_checkpoint(folder / "long.pt", dataset="folder:/data/hard", classes=LONG, mean=0.13)}


def _pixel(page, x: int, y: int) -> list[int]:
    return page.evaluate(f"[...document.getElementById('pad').getContext('2d').getImageData({x}, {y}, 1, 1).data]"
                         ".slice(0, 3)")


def _canvas_png(page) -> bytes:
    return base64.b64decode(_canvas(page).split(",", 1)[1])


def test_a_dark_paper_folder_net_is_drawn_white_on_black_as_it_was_trained(browser, folder_nets):
    """The page drew black ink on white for every net: an MNIST-as-PNG folder's net, which reads images as they are,
    read a drawn 7 as "0" (20.3%). /info now says the paper its training images had, and the page draws white ink on
    a black canvas for it (Clear and Undo keep it); the canvas saved reads the same through ``cnnlab predict``. An
    opened image on the other paper is read as it is, with the server's note beside the answer."""
    ckpt = folder_nets["dark"]
    with Server(_app(ckpt)) as srv:
        with urllib.request.urlopen(srv.url + "/info") as res:
            info = json.loads(res.read())
        assert (info["paper"], info["preparation"]) == ("dark", "as is")
        page = _open(browser, srv.url)
        try:
            assert _pixel(page, 5, 5) == [0, 0, 0]
            _draw(page, SEVEN)
            _answered(page, 0)
            assert _pixel(page, 150, 60) == [255, 255, 255] and _pixel(page, 5, 5) == [0, 0, 0]
            assert page.inner_text("#doubt") == ""
            drawn = _canvas_png(page)
            status, body = post(srv.url, drawn)
            read = Predictor.from_run(ckpt, device="cpu")(drawn)
            assert status == 200 and "image_paper" not in body and read.paper == ""
            assert read.probabilities == pytest.approx(body["probabilities"], abs=1e-6)
            assert page.eval_on_selector_all("#bars .pct", PCTS) == [f"{100 * p:.1f}%" for p in read.probabilities]
            before = _updates(page)
            _draw(page, BAR)
            _answered(page, before)
            page.click("#undo")
            assert _canvas_png(page) == drawn  # Undo: back to the 7, white on black
            page.click("#clear")
            assert _pixel(page, 150, 60) == [0, 0, 0] and _pixel(page, 5, 5) == [0, 0, 0]

            before = _updates(page)
            page.set_input_files("#file", files=[{"name": "seven.png", "mimeType": "image/png",
                                                  "buffer": png(draw_digit())}])  # black on white
            _answered(page, before)
            assert "The image is mostly light, where the net's training images were light marks on dark paper" in (
                page.inner_text("#doubt")) and "invert it" in page.inner_text("#doubt")
            assert page.errors == []
        finally:
            page.context.close()


def test_a_net_of_the_other_paper_under_an_open_tab_turns_the_drawings_colours(browser, apps, folder_nets):
    """The server restarted with a dark-paper folder net under a tab drawn on for the digits net: the drawing (and
    Undo's snapshots) turn white on black, its ink kept, and are sent so; the answer for the old colours is dropped,
    and the line that another net is served stands beside the new one."""
    first = Server(apps["digits"])
    port = first.port
    with first:
        page = _open(browser, first.url)
        _draw(page, SEVEN)
        _answered(page, 0)
        assert _pixel(page, 5, 5) == [255, 255, 255] and _pixel(page, 150, 60) == [0, 0, 0]
    try:
        _draw(page, BAR)  # the server is down: sent again once it is back
        page.wait_for_function("document.getElementById('status').textContent.includes('cannot reach')")
        before = _updates(page)
        with Server(_app(folder_nets["dark"]), port=port):
            _answered(page, before, timeout=20_000)
            assert _pixel(page, 5, 5) == [0, 0, 0] and _pixel(page, 150, 60) == [255, 255, 255]
            assert "the server now serves another net" in _status(page) and "folder:mnist_png" in _status(page)
            shown = page.eval_on_selector_all("#bars .pct", PCTS)
            status, body = post(f"http://127.0.0.1:{port}", _canvas_png(page))
            assert status == 200 and shown == [f"{100 * p:.1f}%" for p in body["probabilities"]]
            page.click("#undo")  # the 7 without the bar, in the new colours too
            assert _pixel(page, 5, 5) == [0, 0, 0] and _pixel(page, 150, 60) == [255, 255, 255]
            assert _pixel(page, 60, 150) == [0, 0, 0]
        assert page.errors == []
    finally:
        page.context.close()


@pytest.mark.parametrize("kind", ["light", "digits"])
def test_a_net_that_finds_the_ink_or_was_trained_on_light_paper_keeps_the_white_canvas(browser, folder_nets, kind,
                                                                                      server):
    """Black letters on white paper (a folder's net of light paper) and the digits' nets (whose steps find the ink
    either way) are drawn black on white, as before."""
    url = server.url
    srv = None
    if kind == "light":
        srv = Server(_app(folder_nets["light"])).__enter__()
        url = srv.url
    try:
        with urllib.request.urlopen(url + "/info") as res:
            info = json.loads(res.read())
        assert info["paper"] == ("light" if kind == "light" else "dark")
        assert info["preparation"] == ("as is" if kind == "light" else "digit")
        page = _open(browser, url)
        try:
            assert _pixel(page, 5, 5) == [255, 255, 255]
            _draw(page, SEVEN)
            _answered(page, 0)
            assert _pixel(page, 150, 60) == [0, 0, 0] and page.errors == []
        finally:
            page.context.close()
    finally:
        if srv is not None:
            srv.__exit__(None, None, None)


@pytest.mark.parametrize("width, height", [(1000, 720), (360, 720)])
def test_a_long_class_name_is_cut_short_with_the_whole_name_in_a_tooltip(browser, folder_nets, width, height):
    """A 200-byte class name spilled over the bars and percentages: the page was 1975 px wide at 1000. Now each name
    is cut short with an ellipsis (its whole name in a title tooltip), in the bars and as the answer."""
    with Server(_app(folder_nets["long"])) as srv:
        page = _open(browser, srv.url, width, height, mobile=width < 640)
        try:
            _draw(page, SEVEN)
            _answered(page, 0)
            assert page.evaluate("document.documentElement.scrollWidth") <= width
            labels = page.eval_on_selector_all("#bars .label", """els => els.map(e => [e.title, e.textContent,
                e.scrollWidth > e.clientWidth, getComputedStyle(e).textOverflow, e.getBoundingClientRect().right])""")
            assert [t for t, *_ in labels] == [c for c, *_ in labels] == LONG
            assert [cut for _, _, cut, _, _ in labels] == [True, True, False]
            assert all(style == "ellipsis" and right <= width for _, _, _, style, right in labels)
            answer = page.locator("#prediction")
            assert answer.get_attribute("title") == answer.inner_text() in LONG
            assert answer.bounding_box()["x"] + answer.bounding_box()["width"] <= width
            assert page.errors == []
        finally:
            page.context.close()
