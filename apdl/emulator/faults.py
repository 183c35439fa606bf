"""Fault injection through a JSON file the emulator watches, so another process (a test, the demo) can make
the card fail: take it out, make it mute, or answer chosen status words.

The file (written atomically by :func:`write`, or by ``python -m apdl.emulator.faults``)::

    {"card": "present" | "absent" | "mute" | "no_atr",
     "mute_seconds": 1.5,
     "status": [{"sw": "6A82", "ins": "A4", "data": "D392F000030001", "times": 1}]}

- ``absent``: the card is taken out of the reader until the mode changes;
- ``mute``: the card is in the reader and answers reset, but no command: after ``mute_seconds`` the emulator
  drops the link (what a reader reports after its timeout), then comes back, mute again;
- ``no_atr``: the card is in the reader but gives no valid answer to reset;
- ``status``: each rule answers commands with instruction ``ins`` (hex, any when absent) whose data starts
  with ``data`` (hex, any when absent) with ``sw`` and does nothing, ``times`` times (always when absent).
  Counts restart whenever the file is rewritten.

A missing file means no faults. A file that cannot be read as above also means no faults (and is reported
on stderr once per version), so a half-written file never turns into a surprise.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from apdl.card.apdu import CommandApdu

MODES = ("present", "absent", "mute", "no_atr")
DEFAULT_MUTE_SECONDS = 1.5


@dataclass
class StatusRule:
    """Answer matching commands with ``sw``."""

    sw: int
    ins: int | None = None
    data: bytes | None = None
    times: int | None = None  # None: every time

    def matches(self, command: CommandApdu) -> bool:
        return ((self.ins is None or command.ins == self.ins)
                and (self.data is None or command.data.startswith(self.data))
                and (self.times is None or self.times > 0))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"sw": f"{self.sw:04X}"}
        if self.ins is not None:
            out["ins"] = f"{self.ins:02X}"
        if self.data is not None:
            out["data"] = self.data.hex().upper()
        if self.times is not None:
            out["times"] = self.times
        return out


@dataclass
class Faults:
    """What the card should do wrong."""

    card: str = "present"
    mute_seconds: float = DEFAULT_MUTE_SECONDS
    status: list[StatusRule] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"card": self.card, "mute_seconds": self.mute_seconds, "status": [r.to_json() for r in self.status]}


def _hex_int(value: Any, width: int) -> int:
    if not isinstance(value, str) or len(value) != width * 2:
        raise ValueError(f"expected {width * 2} hex digits: {value!r}")
    return int(value, 16)


def parse(data: Any) -> Faults:
    """Faults from the file's JSON; ValueError when it does not have the documented shape."""
    if not isinstance(data, dict):
        raise ValueError("the fault file holds a JSON object")
    card = data.get("card", "present")
    if card not in MODES:
        raise ValueError(f"card must be one of {MODES}")
    seconds = data.get("mute_seconds", DEFAULT_MUTE_SECONDS)
    if not isinstance(seconds, int | float) or not 0 < seconds <= 60:
        raise ValueError("mute_seconds must be 0..60")
    rules = []
    for raw in data.get("status", []):
        if not isinstance(raw, dict):
            raise ValueError("each status rule is an object")
        times = raw.get("times")
        if times is not None and (not isinstance(times, int) or times < 1):
            raise ValueError("times must be a positive integer")
        rules.append(StatusRule(sw=_hex_int(raw.get("sw"), 2),
                                ins=None if raw.get("ins") is None else _hex_int(raw["ins"], 1),
                                data=None if raw.get("data") is None else bytes.fromhex(raw["data"]), times=times))
    return Faults(card=card, mute_seconds=float(seconds), status=rules)


def write(path: Path, faults: Faults | None = None, *, card: str = "present", status: list[StatusRule] | None = None,
          mute_seconds: float = DEFAULT_MUTE_SECONDS) -> None:
    """Replace the fault file atomically (``faults``, or one built from the keyword arguments)."""
    faults = faults or Faults(card=card, mute_seconds=mute_seconds, status=list(status or []))
    parse(faults.to_json())  # never write what the emulator would ignore
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(faults.to_json()))
    os.replace(tmp, path)


def clear(path: Path) -> None:
    """No faults any more."""
    write(path, Faults())


class FaultFile:
    """The emulator's view of one fault file, re-read whenever it changes (checked on every use)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._signature: tuple[int, int, int] | None = None
        self._faults = Faults()
        self._lock = threading.Lock()

    def current(self) -> Faults:
        """The faults in force now."""
        with self._lock:
            try:
                st = self.path.stat()
                signature = (st.st_ino, st.st_mtime_ns, st.st_size)
            except FileNotFoundError:
                self._signature, self._faults = None, Faults()
                return self._faults
            if signature != self._signature:
                self._signature = signature
                try:
                    self._faults = parse(json.loads(self.path.read_text()))
                except (OSError, ValueError) as exc:
                    print(f"apdl.emulator: ignoring fault file {self.path}: {exc}", file=sys.stderr, flush=True)
                    self._faults = Faults()
            return self._faults

    def mode(self) -> str:
        """present, absent, mute or no_atr."""
        return self.current().card

    def take_status(self, command: CommandApdu) -> int | None:
        """The status word a rule forces for ``command`` (spending one of its times), or None."""
        faults = self.current()
        with self._lock:
            for rule in faults.status:
                if rule.matches(command):
                    if rule.times is not None:
                        rule.times -= 1
                    return rule.sw
        return None


def main(argv: list[str] | None = None) -> None:
    """``python -m apdl.emulator.faults FILE ...``: tell a running emulator (``--faults FILE``) to fail."""
    parser = argparse.ArgumentParser(prog="python -m apdl.emulator.faults", description=main.__doc__)
    parser.add_argument("file", type=Path)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--clear", action="store_true", help="no faults")
    mode.add_argument("--absent", action="store_true", help="take the card out")
    mode.add_argument("--mute", action="store_true", help="card present, no answer to commands")
    mode.add_argument("--no-atr", action="store_true", help="card present, no valid answer to reset")
    parser.add_argument("--mute-seconds", type=float, default=DEFAULT_MUTE_SECONDS)
    parser.add_argument("--sw", help="answer this status word (4 hex digits)")
    parser.add_argument("--ins", help="only to this instruction (2 hex digits)")
    parser.add_argument("--data", help="only to commands whose data starts with these hex bytes")
    parser.add_argument("--times", type=int, help="this many times (default: until cleared)")
    args = parser.parse_args(argv)
    card = "absent" if args.absent else "mute" if args.mute else "no_atr" if args.no_atr else "present"
    raw: dict[str, Any] = {"card": card, "mute_seconds": args.mute_seconds, "status": []}
    if args.sw and not args.clear:
        rule: dict[str, Any] = {"sw": args.sw.upper()}
        for key in ("ins", "data", "times"):
            if getattr(args, key) is not None:
                rule[key] = getattr(args, key).upper() if isinstance(getattr(args, key), str) else getattr(args, key)
        raw["status"].append(rule)
    try:
        faults = parse(raw)
    except ValueError as exc:
        parser.error(str(exc))
    write(args.file, faults)
    print(json.dumps(faults.to_json()))


if __name__ == "__main__":
    main()
