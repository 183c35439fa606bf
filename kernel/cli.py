"""Helpers every CLI command shares: the audit actor of a shell user, ``--json`` and tab-separated output,
and the loop of the background workers."""

from __future__ import annotations

import getpass
import json
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import click
from sqlalchemy.orm import Session

from db import new_session
from kernel.audit import Actor
from kernel.errors import OpauthError


def cli_actor() -> Actor:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return Actor(name=f"cli:{user}", tenant="system", source="cli")


def json_option(fn: Any) -> Any:
    """``--json`` for list commands."""
    return click.option("--json", "as_json", is_flag=True,
                        help="print a JSON array of objects instead of tab-separated text")(fn)


def echo_rows(columns: Sequence[str], rows: Iterable[Mapping[str, Any]], *, as_json: bool) -> None:
    """A list command's output: a header line and tab-separated rows, or (``--json``) a JSON array."""
    items = [{c: row[c] for c in columns} for row in rows]
    if as_json:
        click.echo(json.dumps(items, ensure_ascii=False, indent=2, default=_json_value))
        return
    click.echo("\t".join(columns))
    for item in items:
        click.echo("\t".join(_text(item[c]) for c in columns))


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return ",".join(_text(v) for v in value)
    if isinstance(value, datetime):
        return value.isoformat()
    # a tab or newline inside a value would shift the columns
    return str(value).replace("\t", " ").replace("\n", " ")


def fail(exc: OpauthError) -> None:
    """End a command with the error's message on stderr and exit status 2."""
    click.echo(f"error: {exc.message}", err=True)
    sys.exit(2)


def run_rounds(work: Callable[[Session], None], *, interval: int, rounds: int, what: str) -> None:
    """A background worker's loop: ``work`` on a session of its own every ``interval`` seconds, ``rounds``
    times (0: until stopped). A failed round is rolled back and reported on stderr; a database hiccup must
    not end the worker, so the next round retries."""
    done = 0
    while True:
        session = new_session()
        try:
            work(session)
        except Exception as exc:
            session.rollback()
            click.echo(f"{what} failed: {exc}", err=True)
        finally:
            session.close()
        done += 1
        if rounds and done >= rounds:
            return
        time.sleep(interval)
