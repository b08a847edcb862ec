"""The web app: one drawing page and a JSON endpoint, around a :class:`~cnnlab.predict.Predictor`.

Routes:
- ``GET /``: the page (``static/index.html`` and ``static/app.js``): draw, see the probabilities.
- ``GET /favicon.ico``: 204 (the page links ``static/favicon.svg``; this answers browsers that ask anyway).
- ``GET /info``: the model's name, classes, whether it has Inception modules, the upload limit.
- ``POST /predict``: an image as multipart form field ``file`` (or the raw body with an
  ``image/*`` content type). Answers ``{"prediction", "probabilities", "classes", "top",
  "input_png", "branches"}``; a bad image is ``400 {"error": "<one line>"}`` (the rules of
  ``cnnlab predict``), a body over the limit ``413``.
"""

import base64
import io
import json
import threading
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from cnnlab.analysis.branches import inception_modules
from cnnlab.errors import CnnlabError
from cnnlab.predict import BadImageError, Predictor, to_uint8_image
from cnnlab.serve import DEFAULT_MAX_BYTES
from cnnlab.serve.branches import record_branch_energy, shares

STATIC = Path(__file__).with_name("static")


class _BodyTooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware: refuse request bodies over ``max_bytes`` with 413, before parsing them.

    A declared ``Content-Length`` over the limit is refused at once; otherwise (chunked uploads)
    the bytes are counted as they arrive and the request is cut off when the count passes it.
    """

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def _refuse(self, send) -> None:
        body = json.dumps({"error": f"request body over the limit of {self.max_bytes:,} bytes; "
                                    "send a smaller image"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for key, value in scope.get("headers", []):
            if key == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = self.max_bytes + 1
                if declared > self.max_bytes:
                    return await self._refuse(send)
        seen = 0
        started = False

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _BodyTooLarge
            return message

        async def tracking_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if not started:
                await self._refuse(send)


def _png_data_url(img) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _client_name(filename: str | None) -> str:
    """A safe, short name for messages: the upload's base name, printable characters only."""
    base = (filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(ch for ch in base if ch.isprintable())[:80]
    return f"upload {base!r}" if base else "upload"


class Service:
    """Prediction for the app: one image at a time (a lock), branch energies for Inception nets."""

    def __init__(self, predictor: Predictor):
        self.predictor = predictor
        self.has_inception = bool(inception_modules(predictor.model))
        self._lock = threading.Lock()

    def predict(self, data: bytes, name: str) -> dict:
        # preprocessing (BadImageError for bad input) runs outside the lock; only the net is one at a time
        field_01 = self.predictor.prepare(data, name)
        with self._lock, record_branch_energy(self.predictor.model) as energies:
            pred = self.predictor(field_01, name=name, preprocess=False)
        return {
            **{k: v for k, v in pred.to_dict(3).items() if k != "file"},
            "probabilities": pred.probabilities,
            "classes": pred.classes,
            "input_png": _png_data_url(to_uint8_image(pred.input_image)),
            "branches": ({"energy": energies, "share": shares(energies)} if self.has_inception else None),
        }


def create_app(predictor: Predictor, max_bytes: int = DEFAULT_MAX_BYTES):
    """The FastAPI app (wrapped in the body-size limit) serving ``predictor``."""
    if not (STATIC / "index.html").is_file():
        raise CnnlabError(f"the page is missing from this install ({STATIC}/index.html); reinstall cnnlab")
    service = Service(predictor)
    app = FastAPI(title="cnnlab", docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    @app.get("/", include_in_schema=False)
    def index():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon():
        return Response(status_code=204)  # the page's icon is static/favicon.svg; no 404 in the browser's log

    @app.get("/info")
    def info():
        return {"model": predictor.model_name, "classes": predictor.classes, "inception": service.has_inception,
                "image_size": predictor.image_size, "max_upload_bytes": max_bytes}

    @app.post("/predict")
    async def predict(request: Request):
        ctype = request.headers.get("content-type", "")
        if ctype.startswith("multipart/form-data"):
            try:
                form = await request.form(max_files=1, max_fields=4, max_part_size=max_bytes)
            except Exception as err:  # noqa: BLE001 - malformed multipart bodies of any kind
                return error(400, f"unreadable multipart form ({str(err)[:100]}); send the image as field 'file'")
            upload = form.get("file")
            if upload is None or isinstance(upload, str):
                return error(400, "no file in the form; send the image as multipart field 'file'")
            data, name = await upload.read(), _client_name(upload.filename)
            await form.close()
        elif ctype.startswith("image/") or ctype.startswith("application/octet-stream"):
            data, name = await request.body(), "upload"
        else:
            return error(415, "send the image as multipart form field 'file', or as the body with Content-Type image/*")
        try:
            return await run_in_threadpool(service.predict, data, name)
        except BadImageError as err:
            return error(400, str(err))

    return BodyLimit(app, max_bytes)
