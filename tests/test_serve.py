"""cnnlab serve: the JSON endpoint, its limits, branch energies, and the page end to end in Chromium."""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from apps_helpers import draw_digit, png_header_only, tiny_checkpoint
from cnnlab.imageio import BadImageError
from cnnlab.models import create_model
from cnnlab.predict import Predictor
from cnnlab.serve.branches import record_branch_energy, shares
from cnnlab.serve.server import bind_socket, make_server

uvicorn = pytest.importorskip("uvicorn")
pytest.importorskip("fastapi")

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
MAX_BYTES = 64 * 1024


class Server:
    """The app under uvicorn in a thread, on a socket bound to a free port of 127.0.0.1 (or to ``port``: a server
    started again where another ran), configured as the command runs it (``make_server(app, **options)``)."""

    def __init__(self, app, port: int = 0, **options):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = make_server(app, **options)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from cnnlab.serve.app import create_app

    ckpt = tiny_checkpoint(tmp_path_factory.mktemp("serve") / "last.pt", model="inception")
    with Server(create_app(Predictor.from_run(ckpt, device="cpu"), max_bytes=MAX_BYTES)) as srv:
        yield srv


def post(url: str, data: bytes, filename: str = "digit.png", field: str = "file") -> tuple[int, dict]:
    """POST ``data`` as a multipart form file; returns (status, JSON body)."""
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    req = urllib.request.Request(url + "/predict", data=body, method="POST",
                                 headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    try:
        with urllib.request.urlopen(req, timeout=30) as res:
            return res.status, json.loads(res.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def png(img) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def test_predict_endpoint(server):
    status, body = post(server.url, png(draw_digit()))
    assert status == 200
    assert len(body["probabilities"]) == 10 and abs(sum(body["probabilities"]) - 1) < 1e-5
    assert body["prediction"] == body["top"][0]["class"] and body["input_png"].startswith("data:image/png;base64,")
    assert set(body["branches"]["share"]) == {"incept1", "incept2"} and body["digits_seen"] == 1
    two = Image.new("L", (600, 300), 255)  # two digits drawn side by side: the page says the net read one
    for x in (0, 300):
        two.paste(draw_digit(), (x, 0))
    both = post(server.url, png(two))[1]
    assert both["digits_seen"] == 2 and len(both["number"]["number"]) == 2 and body["number"] is None
    assert [d["prediction"] for d in both["number"]["digits"]] == list(both["number"]["number"])
    for share in body["branches"]["share"].values():
        assert list(share) == ["pool", "1x1", "5x5", "3x3"] and abs(sum(share.values()) - 1) < 1e-6
    with urllib.request.urlopen(server.url + "/info") as res:
        info = json.loads(res.read())
    assert info["inception"] is True and info["max_upload_bytes"] == MAX_BYTES and info["max_pixels"] == 4096 * 4096
    assert info["dataset"] == "mnist"  # the page names it, and says "Draw an item of clothing" for fashion-mnist
    with urllib.request.urlopen(server.url + "/") as res:
        page = res.read().decode()
    assert "<canvas" in page and "app.js" in page


def test_the_page_is_told_the_dataset_by_its_name_never_its_folders():
    from cnnlab.predict import _dataset_shown

    assert _dataset_shown("fashion-mnist") == "fashion-mnist"
    assert _dataset_shown("folder:/home/me/pics/") == "folder:pics" and _dataset_shown("idx:data/tiny") == "idx:tiny"
    assert Predictor.pretrained("resnet", "fashion-mnist").dataset == "fashion-mnist"


@pytest.mark.parametrize("data, status, fragment", [
    (b"", 400, "empty file"),
    (b"GIF89a but not really", 400, "a damaged GIF header"),
    (b"this is no image at all", 400, "not an image"),
    (png_header_only(5000, 5000), 400, "over the limit of 16,777,216 (--max-pixels)"),
    (png_header_only(12_000, 12_000), 400, "over the limit of 16,777,216 (--max-pixels)"),  # not Pillow's bomb words
    (png(draw_digit())[:300], 400, "truncated"),
    (png(draw_digit().resize((300, 300)).convert("L").point(lambda v: 255)), 400, "no ink found"),
    (os.urandom(MAX_BYTES + 10), 413, "over the limit"),
])
def test_predict_endpoint_refuses_bad_input(server, data, status, fragment):
    got, body = post(server.url, data, filename="../../etc/x.png")
    assert got == status and fragment in body["error"] and "\n" not in body["error"]
    if status == 400:
        assert body["error"].startswith("upload 'x.png': ")


def test_predict_endpoint_needs_a_file(server):
    status, body = post(server.url, png(draw_digit()), field="image")
    assert status == 400 and "field 'file'" in body["error"]
    req = urllib.request.Request(server.url + "/predict", data=b"{}", method="POST",
                                 headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req)
    assert info.value.code == 415


def test_unknown_routes_and_methods_answer_in_the_apps_shape(server):
    """404 and 405 were FastAPI's {"detail": ...}, not the {"error": ...} every other refusal is; HEAD / was 405;
    a Content-Type in capitals (IMAGE/PNG) was refused 415."""
    for method, path, status in (("GET", "/predict", 405), ("PUT", "/predict", 405), ("GET", "/nope", 404),
                                 ("POST", "/info", 405), ("GET", "/static/nope.js", 404), ("GET", "/" + "x" * 5000, 404)):
        req = urllib.request.Request(server.url + path, method=method, data=b"x" if method != "GET" else None)
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(req, timeout=30)
        body = json.loads(info.value.read())
        assert info.value.code == status and list(body) == ["error"], (method, path, body)
        assert "is not served here; GET / (the page), GET /info, POST /predict" in body["error"]
        assert len(body["error"]) < 200
    with urllib.request.urlopen(urllib.request.Request(server.url + "/", method="HEAD"), timeout=30) as res:
        assert res.status == 200 and res.headers["content-type"].startswith("text/html")
    for ctype in ("IMAGE/PNG", "Image/Png", "APPLICATION/OCTET-STREAM"):
        req = urllib.request.Request(server.url + "/predict", data=png(draw_digit()), method="POST",
                                     headers={"Content-Type": ctype})
        with urllib.request.urlopen(req, timeout=30) as res:
            assert res.status == 200 and "prediction" in json.loads(res.read())


def test_favicon_and_no_broken_image_before_the_first_answer(server):
    with urllib.request.urlopen(server.url + "/favicon.ico") as res:
        assert res.status == 204 and res.read() == b""
    with urllib.request.urlopen(server.url + "/static/favicon.svg") as res:
        assert res.headers["content-type"].startswith("image/svg+xml") and b"<svg" in res.read()
    with urllib.request.urlopen(server.url + "/") as res:
        page = res.read().decode()
    assert 'rel="icon" href="/static/favicon.svg"' in page
    assert "#seen:not([src]) { display: none; }" in page and 'class="placeholder"' in page


def test_service_answers_what_the_predictor_says(tmp_path):
    from cnnlab.serve.app import Service

    predictor = Predictor.from_run(tiny_checkpoint(tmp_path / "last.pt", model="inception"), device="cpu")
    data = png(draw_digit())
    got = Service(predictor).predict(data, "upload")
    want = predictor(data, name="upload")
    assert got["probabilities"] == pytest.approx(want.probabilities, abs=1e-6)
    assert got["prediction"] == want.label and got["classes"] == predictor.classes
    assert set(got["branches"]["energy"]) == {"incept1", "incept2"}


def test_branch_energy_hooks_match_the_branches():
    torch.manual_seed(0)
    net = create_model("inception").eval()
    x = torch.randn(1, 1, 28, 28)
    with torch.inference_mode(), record_branch_energy(net) as energies:
        net(x)
        h = torch.nn.functional.relu(net.mp(net.conv1(x)))  # the input of incept1
        direct = {k: float(v.pow(2).mean()) for k, v in net.incept1.branches(h).items()}
    assert energies["incept1"] == pytest.approx(direct, rel=1e-5)
    assert all(not m._forward_hooks for m in net.modules())  # hooks removed afterwards
    assert sum(shares(energies)["incept2"].values()) == pytest.approx(1.0)
    with record_branch_energy(create_model("resnet")) as none:
        pass
    assert none == {}


def test_serve_command_binds_loopback_by_default(tmp_path):
    ckpt = tiny_checkpoint(tmp_path / "last.pt")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        from cnnlab.errors import CnnlabError

        with pytest.raises(CnnlabError, match="pick another --port"):
            bind_socket("127.0.0.1", port)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1] / "src"),
                                                        os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "cnnlab", "serve", str(ckpt), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/info", timeout=2) as res:
                    assert json.loads(res.read())["model"] == "basic_cnn"
                break
            except (urllib.error.URLError, ConnectionError):
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"cnnlab serve did not come up: {proc.communicate()[0]}")
                time.sleep(0.2)
    finally:
        proc.terminate()
        out = proc.communicate(timeout=10)[0]
    assert f"on http://127.0.0.1:{port}/" in out


def test_page_in_headless_chromium(server):
    if not (os.path.exists(CHROMIUM) or shutil.which("chromium")):
        pytest.skip("Debian's chromium is not installed (apt-get install chromium; .ci/run installs it)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed")
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium"),
                                     args=CHROMIUM_ARGS, headless=True)
        try:
            context = browser.new_context(viewport={"width": 1000, "height": 720}, has_touch=True)
            page = context.new_page()
            failed = []  # any request answered >= 400 (e.g. a 404 for /favicon.ico) or not at all
            page.on("response", lambda res: res.status >= 400 and failed.append(f"{res.status} {res.url}"))
            page.on("requestfailed", lambda req: failed.append(f"failed {req.url}"))
            page.goto(server.url + "/")
            page.wait_for_selector("body[data-ready='1']", timeout=10_000)
            assert page.locator(".fill[data-cls]").count() == 10
            assert page.inner_text("#prediction") == ""
            # before any answer: a placeholder, not the browser's broken-image icon
            assert not page.is_visible("#seen") and page.is_visible("#seen-box .placeholder")
            page.wait_for_timeout(300)  # a favicon request, if any, has been answered
            page.screenshot(path=str(ARTIFACTS / "serve-page-empty.png"), full_page=True)

            # draw a "7" with the mouse
            box = page.locator("#pad").bounding_box()
            x0, y0 = box["x"], box["y"]
            page.mouse.move(x0 + 70, y0 + 60)
            page.mouse.down()
            for x, y in [(150, 60), (210, 60), (170, 140), (140, 200), (120, 240)]:
                page.mouse.move(x0 + x, y0 + y, steps=6)
            page.mouse.up()
            page.wait_for_function("Number(document.body.dataset.updates || 0) >= 1", timeout=10_000)
            page.wait_for_function("document.getElementById('prediction').textContent.length > 0", timeout=10_000)

            widths = page.eval_on_selector_all(".fill[data-cls]", "els => els.map(e => parseFloat(e.style.width))")
            assert len(widths) == 10 and abs(sum(widths) - 100) < 1.0 and max(widths) >= 9.99
            assert page.inner_text("#prediction") in [str(i) for i in range(10)]
            assert page.get_attribute("#seen", "src").startswith("data:image/png;base64,")
            assert page.is_visible("#seen") and not page.is_visible("#seen-box .placeholder")
            assert page.is_visible("#branches") and page.locator(".fill[data-branch]").count() == 8
            page.wait_for_timeout(300)  # let the bars' CSS transition finish for the picture
            page.screenshot(path=str(ARTIFACTS / "serve-page.png"), full_page=True)

            # Clear empties the canvas and the results; a tap (touch) draws a dot, which is sent and refused as no
            # digit (it was read '0' at 92%); a stroke after it is predicted again
            page.click("#clear")
            assert page.inner_text("#prediction") == ""
            assert not page.is_visible("#seen") and page.is_visible("#seen-box .placeholder")
            page.touchscreen.tap(x0 + 140, y0 + 140)
            page.wait_for_function("document.getElementById('status').textContent.includes('one dot or blob')",
                                   timeout=10_000)
            assert page.inner_text("#prediction") == ""
            assert [f.split()[0] for f in failed] == ["400"] and failed[0].endswith("/predict")  # the dot's answer
            failed.clear()
            before = int(page.evaluate("document.body.dataset.updates"))
            page.mouse.move(x0 + 140, y0 + 60)
            page.mouse.down()
            page.mouse.move(x0 + 140, y0 + 220, steps=8)
            page.mouse.up()
            page.wait_for_function(f"Number(document.body.dataset.updates) > {before}", timeout=10_000)
            page.wait_for_function("document.body.dataset.inflight === '0'", timeout=10_000)  # its last answer in
            assert page.inner_text("#prediction") != "" and page.inner_text("#status") == ""
            assert failed == []

            # a busy server (503): the page shows its message, then sends the drawing again by itself
            busy = []

            def once_busy(route):
                if busy:
                    return route.continue_()
                busy.append(1)
                route.fulfill(status=503, content_type="application/json", headers={"Retry-After": "1"},
                              body=json.dumps({"error": "the server is busy (32 uploads in progress); retry in 1 s"}))

            page.route("**/predict", once_busy)
            before = int(page.evaluate("document.body.dataset.updates"))
            page.touchscreen.tap(x0 + 100, y0 + 100)
            page.wait_for_function("document.getElementById('status').textContent.includes('busy')", timeout=10_000)
            page.wait_for_function(f"Number(document.body.dataset.updates) > {before}", timeout=10_000)
            assert busy == [1] and page.inner_text("#status") == ""
            page.unroute("**/predict")
            _page_faults(page, x0, y0)
            _page_opens_an_image(page, server)
        finally:
            browser.close()
    assert (ARTIFACTS / "serve-page.png").stat().st_size > 5_000


def _page_faults(page, x0: float, y0: float) -> None:
    """Found by a tester of the page: an answer refused (400) or never given (the server stopped) left the last
    drawing's prediction beside the error, as if it were this drawing's ("9, 71.6% sure" beside "no ink found"); the
    server gone said "request failed: TypeError: Failed to fetch"; a second finger on a touch screen joined the pen's
    line (a '1' and a resting finger read '0'). A second pointer now takes the stroke back instead of being ignored
    (a pinch drew the first finger's line): tests/test_serve_page_s41.py."""
    assert page.inner_text("h1").startswith("Draw a digit") and "trained on" in page.inner_text("#model")
    assert page.inner_text("#prediction") != ""  # the last drawing's answer, from above
    page.route("**/predict", lambda route: route.fulfill(
        status=400, content_type="application/json", body=json.dumps({"error": "upload 'canvas.png': no ink found"})))
    page.touchscreen.tap(x0 + 60, y0 + 240)
    page.wait_for_function("document.getElementById('status').textContent.includes('no ink found')", timeout=10_000)
    assert page.inner_text("#prediction") == "" and page.inner_text("#confidence") == ""
    assert not page.is_visible("#seen")
    page.unroute("**/predict")
    page.route("**/predict", lambda route: route.abort())  # the server gone
    page.touchscreen.tap(x0 + 200, y0 + 240)
    page.wait_for_function("document.getElementById('status').textContent.includes('cannot reach the cnnlab server')",
                           timeout=10_000)
    assert page.inner_text("#prediction") == ""
    page.unroute("**/predict")
    page.click("#clear")
    # the mouse draws; a second pointer (a finger, a palm) goes down and moves elsewhere meanwhile: no ink there,
    # and the mouse's stroke is taken back (the canvas as before it), its moves after that drawing nothing
    page.mouse.move(x0 + 60, y0 + 40)
    page.mouse.down()
    page.evaluate("""([x, y]) => {
        const pad = document.getElementById('pad');
        for (const type of ['pointerdown', 'pointermove', 'pointerup'])
          pad.dispatchEvent(new PointerEvent(type, {pointerId: 7, pointerType: 'touch', isPrimary: false,
                                                   clientX: x, clientY: y, bubbles: true, cancelable: true}));
    }""", [x0 + 220, y0 + 200])
    page.mouse.move(x0 + 60, y0 + 240, steps=8)  # the pen's stroke goes on after the other pointer's up
    page.mouse.up()
    ink = page.evaluate("""() => {
        const c = document.getElementById('pad').getContext('2d');
        const at = (x, y) => c.getImageData(x, y, 1, 1).data[0];
        return [at(60, 140), at(220, 200), at(140, 120)];
    }""")
    assert ink[0] > 200, ink  # the pen's line, taken back
    assert ink[1] > 200 and ink[2] > 200, ink  # nothing where the other pointer was, nor on a line towards it
    page.set_viewport_size({"width": 320, "height": 640})  # a small phone: no sideways scroll (it was 367 px wide)
    assert page.evaluate("document.documentElement.scrollWidth") <= 320


def _page_opens_an_image(page, server) -> None:
    """The page had no way in but a pointer (the keyboard reached Clear only): an image file is opened from the
    keyboard (Tab to "Open an image", a file chosen), sent as it is (the answer is the server's for the same bytes,
    as `cnnlab predict FILE` reads it) and shown on the canvas; a file that is no image gets the server's message."""
    page.set_viewport_size({"width": 1000, "height": 720})
    page.click("#clear")
    page.focus("#clear")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "file"
    data = png(draw_digit(canvas=(200, 300), box=(30, 40, 170, 260)))
    status, want = post(server.url, data)
    assert status == 200
    before = int(page.evaluate("document.body.dataset.updates"))
    page.set_input_files("#file", files=[{"name": "seven.png", "mimeType": "image/png", "buffer": data}])
    page.wait_for_function(f"Number(document.body.dataset.updates) > {before}", timeout=10_000)
    assert page.inner_text("#prediction") == want["prediction"] and page.inner_text("#status") == ""
    shown = page.eval_on_selector_all(".pct", "els => els.slice(0, 10).map(e => e.textContent)")
    assert shown == [f"{100 * p:.1f}%" for p in want["probabilities"]]
    dark = page.evaluate("""() => {
        const d = document.getElementById('pad').getContext('2d').getImageData(0, 0, 280, 280).data;
        let n = 0; for (let i = 0; i < d.length; i += 4) n += d[i] < 128; return n; }""")
    assert dark > 500  # the image is on the canvas, where strokes may be added to it
    page.wait_for_timeout(300)
    page.screenshot(path=str(ARTIFACTS / "serve-page-image.png"), full_page=True)
    # a photo over the server's upload limit (64 KiB here; a phone's 5 MB JPEG against the default 4 MiB) is
    # scaled to 1024 px a side (JPEG, 512 px, where still too large) in the page and read, not refused with 413
    noise = np.random.default_rng(0).integers(235, 256, (1200, 1600, 3), dtype=np.uint8)
    photo = Image.fromarray(noise)
    photo.paste(draw_digit(canvas=(600, 900), box=(100, 150, 500, 750)).convert("RGB"), (500, 150))
    big = png(photo)
    assert len(big) > 4 * MAX_BYTES
    bodies = []
    page.on("request", lambda req: req.url.endswith("/predict") and bodies.append(len(req.post_data_buffer or b"")))
    before = int(page.evaluate("document.body.dataset.updates"))
    page.set_input_files("#file", files=[{"name": "photo.png", "mimeType": "image/png", "buffer": big}])
    page.wait_for_function(f"Number(document.body.dataset.updates) > {before}", timeout=20_000)
    assert page.inner_text("#status") == "" and page.inner_text("#prediction") != ""
    assert bodies and max(bodies) <= MAX_BYTES
    assert "read from a copy scaled to" in page.inner_text("#confidence")
    _page_image_races(page, data)
    page.set_input_files("#file", files=[{"name": "notes.txt", "mimeType": "image/png", "buffer": b"not an image"}])
    page.wait_for_function("document.getElementById('status').textContent.length > 0", timeout=10_000)
    assert "notes.txt" in page.inner_text("#status") and page.inner_text("#prediction") == ""


def _page_image_races(page, data: bytes) -> None:
    """A second tester's races on "Open an image": Clear right after opening left the image on the cleared canvas
    (drawn when it had decoded); strokes drawn on an opened image while its answer was on its way got the image's
    late answer shown as theirs (a '0' drawn over a '7' read '7'); a large transparent image (its opacity the ink)
    was flattened onto white before it was sent: "no ink found"."""
    ink = """() => { const d = document.getElementById('pad').getContext('2d').getImageData(0, 0, 280, 280).data;
        let n = 0; for (let i = 0; i < d.length; i += 4) n += d[i] < 128; return n; }"""
    page.click("#clear")
    page.set_input_files("#file", files=[{"name": "seven.png", "mimeType": "image/png", "buffer": data}])
    page.click("#clear")
    page.wait_for_timeout(800)
    assert page.evaluate(ink) == 0 and page.inner_text("#prediction") == ""
    # the image's answer held back 2 s; a stroke drawn over the image meanwhile is answered, and stays
    held = []

    def slow_image(route):
        if b'filename="seven.png"' in (route.request.post_data_buffer or b""):
            held.append(route)
        else:
            route.continue_()

    page.route("**/predict", slow_image)
    page.set_input_files("#file", files=[{"name": "seven.png", "mimeType": "image/png", "buffer": data}])
    page.wait_for_function("document.body.dataset.inflight === '1'", timeout=10_000)
    page.wait_for_timeout(300)
    before = int(page.evaluate("document.body.dataset.updates"))
    box = page.locator("#pad").bounding_box()
    page.mouse.move(box["x"] + 40, box["y"] + 140)
    page.mouse.down()
    page.mouse.move(box["x"] + 240, box["y"] + 140, steps=8)
    page.mouse.up()
    page.wait_for_function(f"Number(document.body.dataset.updates) > {before}", timeout=10_000)
    page.wait_for_function("document.body.dataset.inflight === '0'", timeout=10_000)
    drawn = (page.inner_text("#prediction"), page.inner_text("#confidence"))
    assert len(held) == 1
    held[0].continue_()  # the image's answer, late
    page.wait_for_timeout(1000)
    assert (page.inner_text("#prediction"), page.inner_text("#confidence")) == drawn
    page.unroute("**/predict")
    # a transparent image over the limit: scaled as a PNG, its opacity kept as the ink
    rgba = np.zeros((1600, 1600, 4), dtype=np.uint8)
    rgba[..., :3] = np.random.default_rng(1).integers(0, 256, (1600, 1600, 3), dtype=np.uint8)  # colour under alpha 0
    stroke = np.asarray(draw_digit(canvas=(1600, 1600), box=(400, 200, 1200, 1400)))
    rgba[..., 3] = np.where(stroke < 128, 255, 0)
    big = png(Image.fromarray(rgba, "RGBA"))
    assert len(big) > 4 * MAX_BYTES
    page.click("#clear")
    before = int(page.evaluate("document.body.dataset.updates"))
    page.set_input_files("#file", files=[{"name": "clear.png", "mimeType": "image/png", "buffer": big}])
    page.wait_for_function(f"Number(document.body.dataset.updates) > {before}", timeout=20_000)
    assert page.inner_text("#status") == "" and "read from a copy scaled to" in page.inner_text("#confidence")


# ----------------------------------------------------------------------------- the protocol, with raw sockets


def _port(server) -> int:
    return int(server.url.rsplit(":", 1)[1])


def _read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP response from ``sock`` (skipping a ``100 Continue``): status, headers (lower case), body."""
    buf = b""
    while True:
        while b"\r\n\r\n" not in buf:
            more = sock.recv(65536)
            if not more:
                raise ConnectionError(f"connection closed after {buf[:200]!r}")
            buf += more
        head, buf = buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        if status != 100:
            break
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    while len(buf) < int(headers.get("content-length", 0)):
        more = sock.recv(65536)
        if not more:
            break
        buf += more
    return status, headers, buf


def _head(ctype: bytes, length: int | None = None, expect: bool = False) -> bytes:
    size = b"Transfer-Encoding: chunked\r\n" if length is None else b"Content-Length: %d\r\n" % length
    return (b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: " + ctype + b"\r\n" + size
            + (b"Expect: 100-continue\r\n" if expect else b"") + b"\r\n")


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n" % len(data) + data + b"\r\n"


MULTIPART = b"multipart/form-data; boundary=xyz"


def _form(data: bytes) -> bytes:
    return (b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="d.png"\r\n\r\n' + data
            + b"\r\n--xyz--\r\n")


@pytest.mark.parametrize("ctype", [b"image/png", MULTIPART])
def test_chunked_body_over_the_limit_is_413(server, ctype):
    """No Content-Length, so the limit can only be counted as the chunks arrive: 413, not 500 or 400."""
    with socket.create_connection(("127.0.0.1", _port(server)), timeout=30) as sock:
        sock.sendall(_head(ctype) + b"".join(_chunk(b"a" * 40_000) for _ in range(2)) + b"0\r\n\r\n")
        status, _, body = _read_response(sock)
    assert status == 413 and "over the limit of 65,536 bytes" in json.loads(body)["error"]


@pytest.mark.parametrize("ctype", [b"image/png", MULTIPART])
def test_chunked_body_within_the_limit_is_predicted(server, ctype):
    data = png(draw_digit())
    body = data if ctype == b"image/png" else _form(data)
    with socket.create_connection(("127.0.0.1", _port(server)), timeout=30) as sock:
        sock.sendall(_head(ctype) + _chunk(body[:1000]) + _chunk(body[1000:]) + b"0\r\n\r\n")
        status, _, answer = _read_response(sock)
    assert status == 200 and len(json.loads(answer)["probabilities"]) == 10


def test_declared_body_far_over_the_limit_is_413_before_it_is_sent(server):
    with socket.create_connection(("127.0.0.1", _port(server)), timeout=30) as sock:
        sock.sendall(_head(b"image/png", length=10**12))  # and no body: the answer must not wait for one
        status, headers, _ = _read_response(sock)
    assert status == 413 and headers["connection"] == "close"


class _Records(logging.Handler):
    """Collects records; ``seen`` is set by the first one that matches ``until``."""

    def __init__(self, until=lambda record: False):
        super().__init__(logging.DEBUG)
        self.records, self.until, self.seen = [], until, threading.Event()

    def emit(self, record):
        self.records.append(record)
        if self.until(record):
            self.seen.set()


@pytest.mark.parametrize("ctype", [b"image/png", MULTIPART])
def test_client_gone_mid_upload_is_one_quiet_line(server, ctype):
    """A client that disconnects mid-upload: one INFO line on cnnlab.serve, no ERROR, no traceback."""
    ours = _Records(until=lambda r: "went away" in r.getMessage())
    theirs = _Records()
    logger, uvicorn_log = logging.getLogger("cnnlab.serve"), logging.getLogger("uvicorn.error")
    saved = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(ours)
    uvicorn_log.addHandler(theirs)
    try:
        with socket.create_connection(("127.0.0.1", _port(server)), timeout=30) as sock:
            sock.sendall(_head(ctype, length=50_000) + b"a" * 1000)
        assert ours.seen.wait(30), "the server did not notice the client leaving"
        # the same server still answers
        assert post(server.url, png(draw_digit()))[0] == 200
    finally:
        logger.removeHandler(ours)
        uvicorn_log.removeHandler(theirs)
        logger.setLevel(saved)
    assert [(r.levelno, r.exc_info) for r in ours.records] == [(logging.INFO, None)]
    assert "\n" not in ours.records[0].getMessage()
    assert [r for r in theirs.records if r.levelno >= logging.WARNING or r.exc_info] == []


@pytest.fixture
def guarded(tmp_path):
    """A server that takes one upload at a time (of at most 4 MiB) and waits at most 1 s for a body."""
    from cnnlab.serve.app import create_app

    predictor = Predictor.from_run(tiny_checkpoint(tmp_path / "last.pt"), device="cpu")
    srv = Server(create_app(predictor, max_pending=1, body_timeout=1.0))
    # small kernel buffers (inherited by accepted sockets): a body the server does not read cannot sit in
    # them, as under load, so closing on it resets the connection
    srv.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
    with srv:
        yield srv


# A busy server's 503 (bytes held, the decode queue full; a refused body sent whole before reading; Expect:
# 100-continue): tests/test_serve_load.py::test_a_refused_upload_sent_whole_before_reading_gets_its_503,
# ::test_bodies_arriving_count_their_bytes_against_what_the_server_holds, ::test_complete_uploads_beyond_the_decode_queue_are_503.


def test_body_that_does_not_arrive_is_408(guarded):
    with socket.create_connection(("127.0.0.1", _port(guarded)), timeout=30) as sock:
        sock.sendall(_head(b"image/png", length=1000) + b"a" * 10)  # and then nothing
        status, _, body = _read_response(sock)
    assert status == 408 and "did not arrive within 1 s" in json.loads(body)["error"]
    assert post(guarded.url, png(draw_digit()))[0] == 200  # the slot it held is free again


def test_decodes_run_on_the_services_own_threads(tmp_path, monkeypatch):
    """At most ``decodes`` images are decoded at once, always on the same threads (whose freed memory
    is then reused instead of piling up in every pool thread's malloc arena)."""
    from cnnlab.serve.app import Service

    predictor = Predictor.from_run(tiny_checkpoint(tmp_path / "last.pt"), device="cpu")
    service = Service(predictor, decodes=2)
    both = threading.Barrier(2, timeout=30)  # two decodes must be able to overlap
    lock, active, seen = threading.Lock(), [0, 0], set()
    real_prepared = predictor.prepared

    def prepared(data, name, *rest):
        if not isinstance(data, bytes):  # the net's own call, with the prepared field
            return real_prepared(data, name, *rest)
        with lock:
            active[0] += 1
            active[1] = max(active[1], active[0])
            seen.add(threading.current_thread().name)
        try:
            both.wait()
            return real_prepared(data, name)
        finally:
            with lock:
                active[0] -= 1

    monkeypatch.setattr(predictor, "prepared", prepared)
    data = png(draw_digit())
    callers = [threading.Thread(target=service.predict, args=(data, f"u{i}")) for i in range(6)]
    for t in callers:
        t.start()
    for t in callers:
        t.join(60)
    assert active == [0, 2] and len(seen) == 2 and all(n.startswith("cnnlab-decode") for n in seen)
    monkeypatch.undo()
    with pytest.raises(BadImageError, match="empty file"):  # errors come back to the caller
        service.predict(b"", "upload")


# ----------------------------------------------------------------------------- memory under load


def _vm(pid: int, key: str) -> float:
    """``VmHWM`` (peak) or ``VmRSS`` of a process, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(key)


def test_memory_stays_bounded_under_concurrent_uploads_of_the_worst_image(tmp_path):
    """16 uploads at once of the costliest image within the limits, a lossless RGBA WebP at the pixel cap
    (decoding it peaks at ~16 bytes a pixel in libwebp and Pillow), to ``cnnlab serve`` in a subprocess:
    every one is answered, and the server's peak RSS grows by about two decodes, not sixteen.

    At a cap of 2048x2048 one decode peaks at ~70 MB: sixteen at once, or their freed memory kept by
    sixteen threads, would add over 1 GB. (At the default cap, 40 uploads: ~0.9 GB peak; see docs/reliability.md.)"""
    if not Path("/proc/self/status").is_file():
        pytest.skip("needs /proc to read the server's peak memory")
    side = 2048
    buf = io.BytesIO()
    draw_digit((side, side), (side // 4, side // 4, 3 * side // 4, 3 * side // 4)).convert("RGBA").save(
        buf, "WEBP", lossless=True)
    worst = buf.getvalue()  # a few KB
    ckpt = tiny_checkpoint(tmp_path / "last.pt")
    with serve_process(ckpt, "--max-pixels", str(side * side)) as (proc, url):
        assert post(url, png(draw_digit()))[0] == 200  # warm: the net has run once
        before = _vm(proc.pid, "VmHWM")
        codes, start = [], threading.Barrier(16, timeout=60)

        def upload():
            start.wait()
            codes.append(post(url, worst)[0])

        threads = [threading.Thread(target=upload) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        grew = _vm(proc.pid, "VmHWM") - before
    assert sorted(codes) == [200] * 16
    assert grew < 400, f"peak RSS grew by {grew:.0f} MB"


class serve_process:
    """``cnnlab serve CKPT ARGS...`` in a subprocess on a free port of 127.0.0.1: ``(proc, url)`` once it answers."""

    def __init__(self, ckpt: Path, *args: str):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        src = str(Path(__file__).parents[1] / "src")
        env = {**os.environ, "OMP_NUM_THREADS": "1",
               "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
        command = [sys.executable, "-m", "cnnlab", "serve", str(ckpt), "--port", str(self.port), *args]
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self):
        try:
            return self._answering()
        except BaseException:  # (a with statement calls no __exit__ when __enter__ raises: the server outlived the test)
            self.proc.kill()
            self.proc.wait()
            raise

    def _answering(self):
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(self.url + "/info", timeout=10) as res:
                    res.read()
                return self.proc, self.url
            except (urllib.error.URLError, ConnectionError, TimeoutError):  # a loaded machine: a slow first answer
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.proc.kill()
                    pytest.fail(f"cnnlab serve did not come up: {self.proc.communicate()[0]}")
                time.sleep(0.2)

    def __exit__(self, *exc):
        self.proc.terminate()
        self.output = self.proc.communicate(timeout=10)[0]
        assert "Traceback" not in self.output, self.output


TRAVERSALS = ["/static/../../../../etc/passwd", "/static/..%2f..%2f..%2f..%2fetc%2fpasswd", "/static/%2e%2e/%2e%2e/etc/passwd",
              "/static/..\\..\\etc\\passwd", "/static//etc/passwd", "/static/%252e%252e/etc/passwd",
              "/../../etc/passwd", "/static/....//....//etc/passwd", "/static/..;/..;/etc/passwd",
              "/static/%c0%ae%c0%ae/etc/passwd", "/static/.%2e/.%2e/etc/passwd", "/static/index.html/../../app.py",
              "/static/../app.py", "/static/..%5c..%5capp.py", "/static/%00../etc/passwd", "/static/~/../etc/passwd"]


def _raw_get(url: str, path: str) -> tuple[int, bytes]:
    """GET ``path`` exactly as written (urllib would normalise the dots away)."""
    host, port = url.rsplit("/", 1)[-1].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


@pytest.mark.parametrize("path", TRAVERSALS)
def test_path_traversal_never_leaves_the_static_folder(server, path):
    status, body = _raw_get(server.url, path)
    assert status in (400, 404, 405) and b"root:" not in body and b"def create_app" not in body


def test_malformed_multipart_forms_are_400_and_write_no_warning(server, caplog, monkeypatch, tmp_path):
    import cnnlab.serve.server as srv

    monkeypatch.setattr(srv, "serve_forever", lambda app, sock: None)
    monkeypatch.setattr(logging.getLogger("python_multipart"), "level", logging.NOTSET)
    srv.run_server(tiny_checkpoint(tmp_path / "last.pt"), port=0, log=lambda m: None)  # what the command does
    bodies = [b"--x\r\nContent-Disposition: form-data\r\n\r\nno end", b"garbage", b"--x--\r\n"]
    with caplog.at_level(logging.WARNING):
        for body in bodies:
            req = urllib.request.Request(server.url + "/predict", data=body, method="POST",
                                         headers={"Content-Type": "multipart/form-data; boundary=x"})
            try:
                urllib.request.urlopen(req, timeout=30)
                status = 200
            except urllib.error.HTTPError as err:
                status = err.code
            assert status == 400
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_upload_limit_is_bounded_by_the_largest_image_allowed():
    """--max-upload-bytes 10**12 was taken: a client could make the server hold terabytes (each upload in
    progress may hold twice its body) for an image that --max-pixels would refuse anyway."""
    from cnnlab.errors import CnnlabError
    from cnnlab.serve.server import check_upload_limit

    check_upload_limit(4 * 1024 * 1024, 4096 * 4096)  # the defaults
    check_upload_limit(8 * 4096 * 4096 + 16 * 1024 * 1024, 4096 * 4096)  # the most: what predict reads of a file
    with pytest.raises(CnnlabError, match=r"^--max-upload-bytes 1,000,000,000,000 is more than any image within "
                                          r"--max-pixels 16,777,216 can take \(150,994,944 bytes"):
        check_upload_limit(10**12, 4096 * 4096)
    with pytest.raises(CnnlabError, match="must be at least 327,680 .the drawing page sends its 280x280 canvas"):
        check_upload_limit(100, 4096 * 4096)


# ----------------------------------------------------------------------------- hostile clients (2026-12 report)


def _answer_to(server, request: bytes, timeout: float = 10) -> tuple[int, dict[str, str], bytes]:
    with socket.create_connection(("127.0.0.1", _port(server)), timeout=timeout) as sock:
        sock.sendall(request)
        return _read_response(sock)


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS"])
@pytest.mark.parametrize("size", ["Content-Length: 4194304", "Transfer-Encoding: chunked"])
def test_a_body_on_a_method_that_takes_none_is_refused_before_it_is_read(server, method, size):
    """GET, HEAD and OPTIONS were not counted as uploads, yet the guard read and kept their bodies up to the
    limit: 150 clients holding such GETs open grew the server by 740 MB. Now 400 at once, the body unread:
    this client has sent 1000 bytes of 4 MiB and waits (the old server waited for the rest, then said 408)."""
    head = f"{method} /info HTTP/1.1\r\nHost: 127.0.0.1\r\n{size}\r\n\r\n".encode()
    body = b"a" * 1000 if "Length" in size else _chunk(b"a" * 1000)
    status, headers, answer = _answer_to(server, head + body)
    assert status == 400 and headers["connection"] == "close" and headers["content-type"] == "application/json"
    if method != "HEAD":
        error = json.loads(answer)["error"]
        assert error.startswith(f"a {method} request takes no body, and this one ") and "\n" not in error
        assert error.endswith("; send it without one") and ("4,194,304 bytes" in error or "Transfer-Encoding" in error)
    # no body, or an empty one, is served as ever
    assert _answer_to(server, b"GET /info HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n")[0] == 200


def test_the_guard_answers_a_body_on_a_get_without_receiving_it():
    """The refusal comes before the guard's first ``receive()``: nothing of the body is read or kept."""
    from cnnlab.serve.app import RequestGuard

    async def app(scope, receive, send):
        raise AssertionError("the app was called")

    async def receive():
        raise AssertionError("the body was read")

    sent = []

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/info", "headers": [(b"content-length", b"4194304")]}
    import anyio

    anyio.run(RequestGuard(app, max_bytes=MAX_BYTES), scope, receive, send)
    assert sent[0]["status"] == 400 and b"takes no body" in sent[1]["body"]


def test_bodies_held_open_on_gets_do_not_grow_the_server(tmp_path):
    """40 clients each send ``GET /info`` declaring a 4 MiB body, send all but its last 100 bytes and hold the
    connection open: the server's RSS stays where it was (it grew by about 4.3 MB a client: 150 of them, +640 MB)."""
    if not Path("/proc/self/status").is_file():
        pytest.skip("needs /proc to read the server's memory")
    length, clients = 4 * 1024 * 1024, 40
    body = b"a" * (length - 100)
    with serve_process(tiny_checkpoint(tmp_path / "last.pt")) as (proc, url):
        port = int(url.rsplit(":", 1)[1])
        before = _vm(proc.pid, "VmRSS")
        held = []
        try:
            for _ in range(clients):
                sock = socket.create_connection(("127.0.0.1", port), timeout=30)
                held.append(sock)
                try:
                    sock.sendall(b"GET /info HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n\r\n" % length + body)
                except OSError:  # refused and closed before the body was all sent: as it should be
                    pass
            time.sleep(1)
            grew = _vm(proc.pid, "VmRSS") - before
        finally:
            for sock in held:
                sock.close()
    assert grew < 60, f"RSS grew by {grew:.0f} MB with {clients} GETs holding bodies"


HOSTILE = {
    "not HTTP": b"GARBAGE\r\n\r\n",
    "a WebSocket upgrade": b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    "an h2c upgrade": b"GET /info HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
                      b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
    "an HTTP/2 preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
}


def test_no_client_can_write_into_the_servers_log(tmp_path):
    """Five ``GARBAGE`` requests wrote five ``WARNING:  Invalid HTTP request received.`` lines into the server's log,
    and an ``Upgrade`` header two more (``Unsupported upgrade request.``, ``No supported WebSocket library
    detected...``). Now the log holds only the serving line; the 400 is in the app's JSON shape (it was plain text)."""
    served = serve_process(tiny_checkpoint(tmp_path / "last.pt"))
    with served as (_proc, url):
        port = int(url.rsplit(":", 1)[1])
        for name, request in HOSTILE.items():
            for _ in range(5):
                with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                    sock.sendall(request)
                    status, headers, body = _read_response(sock)
                if name == "not HTTP":
                    assert status == 400 and headers["content-type"] == "application/json", body
                    assert json.loads(body)["error"].startswith("not a valid HTTP/1.1 request; send one of GET / ")
                else:
                    assert status in (200, 404), (name, status, body)
        time.sleep(0.5)  # anything the server would log is written
    assert [line for line in served.output.splitlines() if not line.startswith("serving ")] == []


def test_head_answers_wherever_get_does(server):
    """``HEAD /info`` was 405 (``GET /info`` 200): every route that answers GET answers HEAD, without a body."""
    for path in ("/", "/info", "/favicon.ico", "/static/app.js", "/static/favicon.svg"):
        with urllib.request.urlopen(server.url + path, timeout=30) as res:
            got = res.status, res.headers["content-type"], res.headers["content-length"]
        with urllib.request.urlopen(urllib.request.Request(server.url + path, method="HEAD"), timeout=30) as res:
            assert (res.status, res.headers["content-type"], res.headers["content-length"]) == got, path
            assert res.read() == b""
    fastapi_app = server.server.config.app.app  # inside the RequestGuard
    assert [r.path for r in fastapi_app.routes if "GET" in getattr(r, "methods", ()) and "HEAD" not in r.methods] == []


def test_the_limits_let_the_page_send_any_drawing(tmp_path, monkeypatch, capsys):
    """``--max-upload-bytes 1024`` (the old minimum) got 413 for the page's own canvas (4.8 KB for a digit), and
    ``--max-pixels`` under 280x280 refused every drawing. The minimums are now what the canvas can take: any
    280x280 PNG (noise in every channel, 314 KB, the most a canvas can be) fits the smallest upload limit."""
    import re

    import cnnlab.serve.server as srv
    from cnnlab.cli import main
    from cnnlab.errors import CnnlabError
    from cnnlab.serve.app import STATIC, create_app

    page = (STATIC / "index.html").read_text()
    side = srv.CANVAS_SIDE
    assert re.search(rf'<canvas id="pad" width="{side}" height="{side}"', page), "the canvas and CANVAS_SIDE differ"
    noise = Image.frombytes("RGBA", (side, side), os.urandom(side * side * 4))
    worst, digit = png(noise), png(draw_digit((side, side), (40, 40, 240, 240)).convert("RGBA"))
    assert len(worst) > 300_000
    predictor = Predictor.from_run(tiny_checkpoint(tmp_path / "last.pt"), device="cpu", max_pixels=srv.MIN_SERVE_PIXELS)
    with Server(create_app(predictor, max_bytes=srv.MIN_UPLOAD_BYTES)) as smallest:
        assert post(smallest.url, digit)[0] == 200
        status, body = post(smallest.url, worst)
        assert status != 413 and "limit" not in body.get("error", ""), body
    srv.check_pixel_limit(side * side)
    with pytest.raises(CnnlabError, match=r"^--max-pixels 78,399 is below the drawing page's 280x280 canvas "
                                          r"\(78,400 pixels\), so its every drawing would be refused; give serve at "
                                          r"least 78,400$"):
        srv.check_pixel_limit(side * side - 1)
    monkeypatch.setattr(srv, "serve_forever", lambda app, sock: None)
    ckpt = str(tmp_path / "last.pt")
    for flag, value, said in (("--max-pixels", "784", "--max-pixels 784 is below the drawing page's"),
                              ("--max-upload-bytes", "1024", "--max-upload-bytes must be at least 327,680")):
        assert main(["serve", ckpt, flag, value, "--port", "0"]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"cnnlab: error: {said}") and err.count("\n") == 1, err
