"""``cnnlab serve``: a small web app to draw a digit and watch the net classify it.

``create_app`` (in :mod:`cnnlab.serve.app`) builds the FastAPI app around a
:class:`cnnlab.predict.Predictor`; :mod:`cnnlab.serve.server` runs it. FastAPI and uvicorn
are imported only where a server starts (app.py is imported by server.run_server alone), so the rest of
cnnlab does not pay for them.
"""

#: Default request body limit of POST /predict: a 280x280 canvas PNG is ~10 KB, a phone photo a few MB.
#: (Here, not in app.py, so that building the CLI parser imports neither torch nor FastAPI.)
DEFAULT_MAX_BYTES = 4 * 1024 * 1024
