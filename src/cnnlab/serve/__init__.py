"""``cnnlab serve``: a small web app to draw a digit and watch the net classify it.

``create_app`` (in :mod:`cnnlab.serve.app`) builds the FastAPI app around a
:class:`cnnlab.predict.Predictor`; :mod:`cnnlab.serve.server` runs it. FastAPI and uvicorn
are imported only where a server starts (app.py is imported by server.run_server alone, protocol.py, uvicorn's
HTTP protocol as the server runs it, by server.make_server), so the rest of cnnlab does not pay for them.
"""

#: Default request body limit of POST /predict: a 280x280 canvas PNG is ~10 KB, a phone photo a few MB.
#: (Here, not in app.py, so that building the CLI parser imports neither torch nor FastAPI.)
DEFAULT_MAX_BYTES = 4 * 1024 * 1024
#: What a request to a route or method that does not exist, or one that is not HTTP at all, is told.
ROUTES_HINT = "GET / (the page), GET /info, POST /predict (an image)"
#: The drawing page's canvas, pixels a side (``static/index.html``: ``<canvas width="280" height="280">``).
CANVAS_SIDE = 280
#: The smallest ``--max-pixels`` of serve: the page's canvas (78,400). Below it, every drawing it sends is refused.
MIN_SERVE_PIXELS = CANVAS_SIDE * CANVAS_SIDE
