"""cnnlab's benchmarks: run with ``make bench`` (``python -m benchmarks.run``), not by the tests."""
