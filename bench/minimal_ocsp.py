"""The yardstick for opauth's OCSP responder: a minimal Flask app answering pre-signed OCSP responses.

`make bench-peers` runs it under the same gunicorn settings (config/gunicorn.conf.py) and the same wrk
client as opauth. It holds the responses opauth pre-signed for the benchmark's requests in a dict keyed
by the DER request (``BENCH_OCSP_DIR``: ``<i>.req`` / ``<i>.resp`` pairs) and answers POST /pki/ocsp and
GET /pki/ocsp/<base64> with a lookup: the Flask + gunicorn floor, with no database and no opauth hooks.
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path
from urllib.parse import unquote

from flask import Flask, Response, request

app = Flask(__name__)
_answers: dict[bytes, bytes] = {}
_directory = Path(os.environ.get("BENCH_OCSP_DIR", "."))
for _request in sorted(_directory.glob("*.req")):
    _answers[_request.read_bytes()] = _request.with_suffix(".resp").read_bytes()
_UNAUTHORIZED = bytes.fromhex("30030a0106")


def _answer(der: bytes | None) -> Response:
    return Response(_answers.get(der or b"", _UNAUTHORIZED), mimetype="application/ocsp-response")


@app.post("/pki/ocsp")
def ocsp_post() -> Response:
    return _answer(request.get_data())


@app.get("/pki/ocsp/<path:encoded>")
def ocsp_get(encoded: str) -> Response:
    try:
        return _answer(base64.b64decode(unquote(encoded)))
    except (binascii.Error, ValueError):
        return _answer(None)
