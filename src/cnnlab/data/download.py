"""One IDX file from a mirror, read as it arrives: capped, given up on when too slow, every failure one line.

``urllib``'s timeout bounds each socket read, not a download: a mirror that sends a byte every two seconds never
trips it and stalls a fetch for as long as it likes, and one that sends without end is stopped only by a cap.
:class:`Download` reads a response with both bounds: at most ``cap`` bytes (the file's known size with a margin),
and on average at least ``min_rate`` bytes a second once ``grace_s`` seconds have passed, a deadline that grows
with what has arrived, so that an honest slow link finishes and a trickle is given up on for the next mirror.
The bytes are decoded as they come (:func:`cnnlab.data.idx.read_idx_download`): memory is the file's array,
never the download. Every failure is a :class:`DataError` naming the URL and what happened in one line:
unreachable, a redirect loop, cut off, too slow, too large.
"""

from __future__ import annotations

import http.client
import io
import time
from collections.abc import Callable

import numpy as np

from cnnlab.data.idx import DOWNLOAD_FIX, MAX_IDX_BYTES, read_idx_download
from cnnlab.errors import DataError

_CHUNK = 1 << 20
#: Beyond a file's unpacked size, what its download may hold: gzip's headers and, for data that does not
#: compress, its stored blocks' 5 bytes in 64 KiB (a ``.gz`` file is never much larger than what it packs).
_MARGIN_BYTES = 64 << 10


def download_cap(unpacked: int | None) -> int:
    """The most bytes a download of a file of ``unpacked`` bytes may hold (``None``: a size the catalog does
    not know, then the largest IDX file there is)."""
    return MAX_IDX_BYTES if unpacked is None else unpacked + unpacked // 100 + _MARGIN_BYTES


def one_line(text: object, limit: int = 200) -> str:
    words = " ".join(str(text).split())
    return words if len(words) <= limit else words[:limit] + "..."


def net_reason(err: BaseException) -> str:
    """A network error in a few words, on one line (urllib's redirect loop spans three)."""
    code = getattr(err, "code", None)  # an HTTPError
    if isinstance(code, int):
        if 300 <= code < 400 and "infinite loop" in str(getattr(err, "msg", "")):
            return f"a redirect loop, HTTP {code}"
        return f"HTTP {code} {one_line(getattr(err, 'reason', '') or '')}".rstrip()
    reason = getattr(err, "reason", None)  # a URLError: its reason is the socket's error, or words
    return one_line(reason if reason is not None else f"{type(err).__name__}: {err}")


def _rate(n: float) -> str:
    return f"{n / 1024:,.0f} KB/s" if n >= 10 * 1024 else f"{n:,.0f} bytes/s"


class Download(io.RawIOBase):
    """An HTTP response (or anything with ``read1``, and ``length``: the bytes still announced) as a raw stream
    bounded by ``cap`` bytes and by a minimum average rate (see the module docstring)."""

    def __init__(self, response, url: str, cap: int, min_rate: float, grace_s: float,
                 clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.response, self.url, self.cap = response, url, cap
        self.min_rate, self.grace_s, self.clock = min_rate, grace_s, clock
        self.got = 0
        self.start = clock()

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        self._check_rate()
        try:
            data = self.response.read1(min(len(buf), _CHUNK))
        except (OSError, http.client.HTTPException) as err:  # a read timed out, the connection reset...
            raise DataError(f"{self.url}: the download broke off after {self.got:,} bytes ({net_reason(err)}); "
                            f"{DOWNLOAD_FIX}") from None
        if not data:
            left = getattr(self.response, "length", None)
            if left:
                raise DataError(f"{self.url}: the download was cut off after {self.got:,} of the "
                                f"{self.got + left:,} bytes announced; {DOWNLOAD_FIX}")
            return 0
        self.got += len(data)
        if self.got > self.cap:
            raise DataError(f"{self.url}: more than {self.cap:,} bytes, far larger than the file can be; it is not "
                            "the expected file: use another mirror")
        buf[:len(data)] = data
        return len(data)

    def _check_rate(self) -> None:
        elapsed = self.clock() - self.start
        if elapsed > self.grace_s and self.got < self.min_rate * elapsed:
            raise DataError(f"{self.url}: too slow, gave up on it: {self.got:,} bytes in {elapsed:.0f} s, less than "
                            f"{_rate(self.min_rate)} on average; {DOWNLOAD_FIX}")


def download_idx(opener, url: str, ndim: int, unpacked: int | None, timeout: float, min_rate: float,
                 grace_s: float) -> tuple[np.ndarray, str]:
    """The IDX file at ``url`` -> (array, MD5 of its unpacked bytes), read through :class:`Download`.

    ``opener(url, timeout)`` opens it (``urllib.request.urlopen``); ``unpacked`` is the file's known size, which
    bounds the download and what its header may declare. Any failure is a one-line :class:`DataError`."""
    cap = download_cap(unpacked)
    try:
        response = opener(url, timeout)
    except DataError:
        raise
    except Exception as err:  # network errors of every kind (URLError, HTTPError, timeouts, bad URLs...)
        raise DataError(f"{url}: unreachable ({net_reason(err)})") from None
    with response:
        announced = getattr(response, "length", None)
        if announced is not None and announced > cap:
            raise DataError(f"{url}: announces {announced:,} bytes, more than the file can be (at most {cap:,}); "
                            "it is not the expected file: use another mirror")
        stream = Download(response, url, cap, min_rate, grace_s)
        return read_idx_download(stream, url, ndim, limit=MAX_IDX_BYTES if unpacked is None else unpacked)
