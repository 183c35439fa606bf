"""Helpers every CLI command shares: the audit actor of a shell user, ``--json`` and tab-separated output,
the paths a command reads and writes (checked before any work), and the loop of the background workers."""

from __future__ import annotations

import getpass
import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
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


# --- paths: checked when the options are parsed, so a bad one ends the command (exit 2) before anything is
# issued or committed, never with a traceback after it ---------------------------------------------------------

def input_file() -> click.Path:
    """An existing, readable file (a CSR, a CSV...)."""
    return click.Path(exists=True, dir_okay=False, readable=True, path_type=Path)


def _directory_problem(directory: Path) -> str | None:
    if not directory.is_dir():
        if directory.exists():
            return f"{str(directory)!r} is not a directory"
        return f"directory {str(directory)!r} does not exist"
    if not os.access(directory, os.W_OK | os.X_OK):
        return f"directory {str(directory)!r} is not writable"
    return None


def output_problem(path: Path, *, new: bool = False) -> str | None:
    """Why ``path`` cannot be written (its directory missing or not writable, the file not writable, or, with
    ``new``, already there), or None."""
    if path.is_dir():
        return f"{str(path)!r} is a directory"
    problem = _directory_problem(path.parent)
    if problem is not None:
        return problem
    if path.exists() or path.is_symlink():
        if new:
            return f"{str(path)!r} already exists (it is never overwritten)"
        if not os.access(path, os.W_OK):
            return f"{str(path)!r} is not writable"
    return None


def directory_output_problem(directory: Path) -> str | None:
    """Why files cannot be written into ``directory`` (created with its parents if missing), or None."""
    if directory.exists():
        return _directory_problem(directory)
    ancestor = directory.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    return _directory_problem(ancestor)


def write_secret(path: Path, data: bytes, *, new: bool = True) -> None:
    """Write a key, a PKCS#12 or passwords readable by the owner only, from the first byte on (``new``: refuse an
    existing file; otherwise an existing one is made 0600 before anything is written into it)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | (os.O_EXCL if new else os.O_TRUNC), 0o600)
    with os.fdopen(fd, "wb") as fh:
        os.fchmod(fh.fileno(), 0o600)
        fh.write(data)


class OutputFile(click.Path):
    """A file the command writes: its directory must exist and be writable (``new``: the file must not exist)."""

    def __init__(self, *, new: bool = False) -> None:
        super().__init__(dir_okay=False, path_type=Path)
        self.new = new

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        path = super().convert(value, param, ctx)
        problem = output_problem(Path(os.fsdecode(path)), new=self.new)
        if problem is not None:
            self.fail(problem, param, ctx)
        return path


class OutputDirectory(click.Path):
    """A directory the command writes files into (created if missing, so its nearest existing ancestor must be
    a writable directory)."""

    def __init__(self) -> None:
        super().__init__(file_okay=False, path_type=Path)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        path = super().convert(value, param, ctx)
        problem = directory_output_problem(Path(os.fsdecode(path)))
        if problem is not None:
            self.fail(problem, param, ctx)
        return path


def ensure_output_directory(directory: Path, *, param_hint: str) -> None:
    """The same check for a directory chosen inside the command (a default): exit 2 naming ``param_hint``."""
    problem = directory_output_problem(directory)
    if problem is not None:
        raise click.BadParameter(problem, param_hint=param_hint)


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
