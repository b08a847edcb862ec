"""uvicorn's HTTP/1.1 protocol (h11) as ``cnnlab serve`` runs it: a request that is not valid HTTP/1.1 (``GARBAGE``,
an HTTP/2 preface, headers over h11's limit) is answered 400 in the app's shape, ``{"error": "<one line>"}``, where
uvicorn answered plain text. (uvicorn also logs a WARNING line for each; :func:`cnnlab.serve.server.make_server`
runs it at level ERROR, so that no client can write into the server's log.)

Imported only where a server starts (uvicorn and h11 are heavy, and only ``serve`` needs them).
"""

from __future__ import annotations

import json

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from cnnlab.serve import ROUTES_HINT

#: The answer to a request that h11 cannot parse.
NOT_HTTP = json.dumps({"error": f"not a valid HTTP/1.1 request; send one of {ROUTES_HINT}"}).encode()


class JsonErrorsProtocol(H11Protocol):
    """uvicorn's h11 protocol, whose own 400 (a request it cannot parse) is JSON in the app's shape."""

    def send_400_response(self, msg: str) -> None:  # uvicorn's hook; msg is its plain-text reason
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(NOT_HTTP)).encode()),
                   (b"connection", b"close")]
        for event in (h11.Response(status_code=400, headers=headers, reason=b"Bad Request"),
                      h11.Data(data=NOT_HTTP), h11.EndOfMessage()):
            self.transport.write(self.conn.send(event))
        self.transport.close()
