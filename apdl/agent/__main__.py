"""``python -m apdl.agent``: the terminal card agent.

It connects to the AP download module over HTTPS with the terminal's SSL通信証明書 (mutual TLS), asks for a
one-time pairing code and shows it on screen, then long-polls the module for APDUs, sends each to the
card in the local reader (pyscard → pcscd) and posts the answer back. It never sees a key: under SCP03
the module sends only protected commands. A 403 (certificate missing, foreign, expired or revoked) stops
it; so does Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import ssl
import sys
import time
import urllib.parse
from typing import Any

from smartcard.Exceptions import CardConnectionException, NoCardException
from smartcard.System import readers


class Stopped(Exception):
    """The module refused this terminal: stop."""


class Reader:
    """The terminal's card reader, connected on first use and again after a failure."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._connection: Any = None

    def transmit(self, apdu: bytes) -> bytes | None:
        """The card's answer, or None when there is no reader, no card or no answer."""
        for _attempt in range(2):
            try:
                if self._connection is None:
                    match = [r for r in readers() if str(r) == self.name]
                    if not match:
                        return None
                    self._connection = match[0].createConnection()
                    self._connection.connect()
                data, sw1, sw2 = self._connection.transmit(list(apdu))
                return bytes(data) + bytes((sw1, sw2))
            except (NoCardException, CardConnectionException):
                self.close()
            except Exception:  # pyscard raises its own types for "no service"
                self.close()
                return None
        return None

    def close(self) -> None:
        """Let go of the card."""
        if self._connection is not None:
            with contextlib.suppress(Exception):
                self._connection.disconnect()
            with contextlib.suppress(Exception):
                self._connection.release()
        self._connection = None


class Module:
    """The module's agent API over mutual TLS, on one kept-alive connection."""

    def __init__(self, base: str, *, cert: str, key: str, ca: str, timeout: float = 40.0) -> None:
        parts = urllib.parse.urlsplit(base)
        if parts.scheme != "https" or not parts.hostname:
            raise SystemExit("the module URL must be https://host[:port]")
        self.host, self.port, self.prefix = parts.hostname, parts.port or 443, parts.path.rstrip("/")
        self.timeout = timeout
        self.context = ssl.create_default_context(cafile=ca)
        self.context.load_cert_chain(cert, key)
        self._connection: http.client.HTTPSConnection | None = None

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """POST JSON; the JSON answer, or None for 204. A 403 raises Stopped; other errors raise OSError."""
        for attempt in range(2):
            if self._connection is None:
                self._connection = http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout,
                                                               context=self.context)
            try:
                self._connection.request("POST", self.prefix + path, body=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
                answer = self._connection.getresponse()
                raw = answer.read()
            except (OSError, http.client.HTTPException):
                self._connection.close()
                self._connection = None
                if attempt:
                    raise
                continue  # the server closed the kept-alive connection: once more on a new one
            if answer.status == 403:
                raise Stopped(raw.decode(errors="replace"))
            if answer.status >= 400:
                raise OSError(f"HTTP {answer.status}: {raw[:200].decode(errors='replace')}")
            return json.loads(raw) if raw else None
        return None


def run(module: Module, reader: Reader, *, wait: int = 20, once: bool = False) -> None:
    """Pair (print the code), then relay until refused."""
    paired = module.post("/agent/pair", {})
    assert paired is not None
    print(f"PAIRING CODE {paired['code']} (terminal {paired['terminal']}; enter it in the module within "
          f"{paired['expires_in'] // 60} minutes)", flush=True)
    while True:
        try:
            job = module.post("/agent/poll", {"wait": wait})
        except OSError as exc:
            print(f"module unreachable ({exc}); retrying", file=sys.stderr, flush=True)
            time.sleep(1)
            continue
        if job is None:
            if once:
                return
            continue
        apdu = bytes.fromhex(str(job["apdu"]))
        answer = reader.transmit(apdu)
        print(f"APDU {apdu.hex().upper()} -> {answer.hex().upper() if answer else 'no card'}", flush=True)
        module.post("/agent/respond", {"exchange": job["exchange"],
                                        "response": answer.hex().upper() if answer is not None else None})


def main(argv: list[str] | None = None) -> int:
    """Parse the options and relay until refused or interrupted."""
    parser = argparse.ArgumentParser(prog="python -m apdl.agent", description=__doc__.split("\n")[0])
    parser.add_argument("--url", required=True, help="the module's https URL")
    parser.add_argument("--cert", required=True, help="the terminal's SSL通信証明書 (PEM chain)")
    parser.add_argument("--key", required=True, help="its private key (PEM)")
    parser.add_argument("--ca", required=True, help="CA bundle that signs the module's server certificate")
    parser.add_argument("--reader", default="Virtual PCD 00 00", help="PC/SC reader name")
    parser.add_argument("--wait", type=int, default=20, help="long-poll seconds (default 20)")
    args = parser.parse_args(argv)
    reader = Reader(args.reader)
    try:
        run(Module(args.url, cert=args.cert, key=args.key, ca=args.ca), reader, wait=args.wait)
    except Stopped as exc:
        print(f"STOPPED: the module refused this terminal: {exc}", flush=True)
        return 3
    except KeyboardInterrupt:
        return 0
    finally:
        reader.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
