"""The small page scripts in a real Chromium: the CSV import shows one moving progress bar while the
server streams, and すべて選択 checks and clears every operator on the page."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

STATIC = Path(__file__).resolve().parents[2] / "static"


class _StreamingImport(BaseHTTPRequestHandler):
    """Serves the import page the way the app streams it, one chunk whenever the test hands one over."""

    chunks: queue.Queue[str | None]

    def do_GET(self) -> None:
        if self.path.startswith("/static/"):
            body = (STATIC / self.path[len("/static/"):]).read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", "text/javascript")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.end_headers()
        self.wfile.write(b'<!doctype html><html lang="ja"><head><meta charset="utf-8"><title>import</title>'
                         b'<script src="/static/js/import_progress.js"></script></head><body><main>')
        self.wfile.flush()
        while (chunk := self.chunks.get(timeout=60)) is not None:
            self.wfile.write(chunk.encode())
            self.wfile.flush()
        self.wfile.write(b"</main></body></html>")

    def log_message(self, format: str, *args: Any) -> None:  # keep the test output quiet
        pass


@pytest.fixture
def streaming_server() -> Iterator[tuple[str, queue.Queue[str | None]]]:
    chunks: queue.Queue[str | None] = queue.Queue()
    handler = type("Handler", (_StreamingImport,), {"chunks": chunks})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", chunks
    chunks.put(None)
    server.shutdown()
    thread.join(timeout=10)


def _step(done: int, total: int) -> str:
    # The markup operators/bulk_views.py streams for each chunk of rows.
    return (f'<p class="import-step" role="status"><progress value="{done}" max="{total}"></progress> '
            f"{done} / {total}</p>\n")


def test_import_progress_is_one_bar_that_moves_while_the_page_streams(
        browser: Any, streaming_server: tuple[str, queue.Queue[str | None]]) -> None:
    url, chunks = streaming_server
    context = browser.new_context()
    page = context.new_page()
    page.goto(url + "/import", wait_until="commit")
    for done in (0, 500, 1000, 1200):
        chunks.put(_step(done, 1200))
        page.wait_for_function(
            "done => document.querySelectorAll('progress').length === 1"
            " && document.querySelector('progress').value === done", arg=done)
    chunks.put('<p class="notice" id="done">1200 件を登録しました。</p>')
    chunks.put(None)
    page.wait_for_selector("#done")
    page.wait_for_load_state("load")
    assert page.locator("progress").count() == 1
    assert page.locator(".import-step").inner_text().strip() == "1200 / 1200"
    context.close()


def test_select_all_checks_and_clears_every_operator_of_the_form(browser: Any) -> None:
    context = browser.new_context()
    page = context.new_page()
    # The markup of templates/operators/pending.html and passwords.html.
    page.set_content(
        '<form><table><tr><th><input type="checkbox" id="select-all" data-select-all="operator_ids" hidden></th></tr>'
        + "".join(f'<tr><td><input type="checkbox" name="operator_ids" value="OP{i}"></td></tr>' for i in range(3))
        + '<tr><td><input type="checkbox" name="other" value="x"></td></tr></table></form>')
    page.add_script_tag(content=(STATIC / "js" / "select_all.js").read_text())
    master = page.locator("#select-all")
    boxes = page.locator('input[name="operator_ids"]')
    assert master.is_visible()  # hidden only for browsers without JavaScript

    master.check()
    assert [boxes.nth(i).is_checked() for i in range(3)] == [True, True, True]
    assert not page.locator('input[name="other"]').is_checked()

    boxes.nth(1).uncheck()
    assert not master.is_checked() and page.evaluate("document.getElementById('select-all').indeterminate")
    boxes.nth(1).check()
    assert master.is_checked()

    master.uncheck()
    assert [boxes.nth(i).is_checked() for i in range(3)] == [False, False, False]
    context.close()
