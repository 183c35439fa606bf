"""A very long URL gets the module's own 414 answer from its real gunicorn: the error page (JSON under /api/) for
what the application reads, and the same page, in Japanese and English, for a request line gunicorn itself
refuses to read — never gunicorn's bare "Request Line is too large" text. Every other request gunicorn refuses
to read (a NUL in the request line, an oversized or invalid header) gets the module's answer with the right
status too, never repeating the request."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
from collections.abc import Iterator

import pytest

from tests.servers import BIN, ROOT, _wait_for_port, free_port


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """The module's gunicorn (its own config, plain HTTP) on a fresh instance."""
    instance = tmp_path_factory.mktemp("apdl")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("APDL_", "OPAUTH_"))}
    env.update(APDL_INSTANCE_DIR=str(instance), APDL_BIND=f"127.0.0.1:{port}", APDL_WORKERS="1")
    log_path = instance / "gunicorn.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen([str(BIN / "gunicorn"), "--config", "python:apdl.gunicorn_conf"], cwd=ROOT,
                                env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
        try:
            _wait_for_port(proc, port, "apdl gunicorn", log_path)
            yield port
        finally:
            proc.terminate()
            proc.wait(timeout=60)


def _get(port: int, path: str) -> tuple[int, str, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", path)
        answer = connection.getresponse()
        return answer.status, answer.getheader("Content-Type", ""), answer.read().decode()
    finally:
        connection.close()


def test_a_long_url_gets_the_modules_414_page(served: int) -> None:
    status, kind, body = _get(served, "/residents?q=" + "x" * 5000)
    assert (status, kind.split(";")[0]) == (414, "text/html")
    assert 'id="message">URLが長すぎます。<' in body and "トップへ戻る" in body
    status, _, body = _get(served, "/residents?lang=en&q=" + "x" * 5000)
    assert status == 414 and "The URL is too long." in body


def test_a_long_api_url_gets_json(served: int) -> None:
    status, kind, body = _get(served, "/api/v1/residents?q=" + "x" * 5000)
    assert (status, kind) == (414, "application/json")
    assert json.loads(body) == {"error": "URLが長すぎます。"}


def test_a_request_line_gunicorn_will_not_read_gets_the_same_page(served: int) -> None:
    status, kind, body = _get(served, "/" + "x" * 9000)
    assert (status, kind) == (414, "text/html; charset=utf-8")
    assert "URLが長すぎます。 / The URL is too long." in body and "トップへ戻る" in body
    assert "Request Line is too large" not in body
    assert _get(served, "/")[0] in (200, 302)  # the worker serves on


def _raw(port: int, request: bytes) -> tuple[int, str, str]:
    """Status, Content-Type and body of the answer to bytes http.client would refuse to send."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers.get("Content-Type", ""), body.decode()


def test_a_long_api_request_line_gunicorn_will_not_read_gets_json(served: int) -> None:
    status, kind, body = _get(served, "/api/v1/residents?q=" + "x" * 9000)
    assert (status, kind) == (414, "application/json")
    assert json.loads(body) == {"error": "URLが長すぎます。"}


def test_a_nul_in_the_request_line_gets_the_modules_400_page(served: int) -> None:
    status, kind, body = _raw(served, b"GET /resid\x00ents-echo HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert (status, kind) == (400, "text/html; charset=utf-8")
    assert "リクエストが正しくありません。 / The request is not valid." in body and "トップへ戻る" in body
    assert "ents-echo" not in body and "Invalid" not in body
    status, kind, body = _raw(served, b"GET /api/v1/resid\x00ents HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert (status, kind, json.loads(body)) == (400, "application/json", {"error": "リクエストが正しくありません。"})


def test_an_oversized_header_gets_the_modules_431_page(served: int) -> None:
    big = b"X-Big: " + b"y" * 9000
    status, kind, body = _raw(served, b"GET /residents HTTP/1.1\r\nHost: localhost\r\n" + big + b"\r\n\r\n")
    assert (status, kind) == (431, "text/html; charset=utf-8")
    assert "リクエストのヘッダーが大きすぎます。 / " in body and "yyyy" not in body and "Error parsing" not in body


def test_an_invalid_header_or_version_gets_the_modules_400_page(served: int) -> None:
    for request in (b"GET / HTTP/1.1\r\nHost: localhost\r\nBad\x01Name: v\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n",
                    b"G\x01T / HTTP/1.1\r\n\r\n"):
        status, kind, body = _raw(served, request)
        assert (status, kind) == (400, "text/html; charset=utf-8"), request
        assert "リクエストが正しくありません。 / " in body and "Invalid" not in body
    assert _get(served, "/")[0] in (200, 302)  # the worker serves on
