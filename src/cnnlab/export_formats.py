"""What ``cnnlab export`` and ``export-weights`` write: formats, file suffixes and the check's tolerance.

Torch-free, so that the command line offers these as choices without importing torch (~1.3 s); the
exporter (:mod:`cnnlab.export`) takes them from here too, so there is one copy.
"""

from __future__ import annotations

#: Formats of the whole net (graph and weights), usable outside Python's cnnlab.
FORMATS = ("onnx", "torchscript")
SUFFIXES = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}
#: Largest accepted difference of logits between the export and PyTorch, relative to the largest logit's magnitude
#: (and at least this much: logits under 1 are held to it as an absolute difference); ``export.tolerance``.
TOLERANCE = 1e-4
#: The check's largest batch: ``--samples`` images are run in batches of at most this many (and one of 1), so that its
#: memory does not grow with them (10,000 as one batch took 3.4 GB, and onnxruntime's failed allocation a traceback).
CHECK_BATCH = 256
#: Formats of the bare weights (``export_safetensors``): safetensors only.
WEIGHT_FORMATS = ("safetensors",)
