"""``python -m apdl.agent``: the terminal card agent.

It connects to the AP download module over HTTPS with the terminal's SSL通信証明書 (mutual TLS), asks for a
one-time pairing code and shows it on screen (a fresh one whenever the shown one expires or has been used, so an
operator arriving later finds a valid code without a restart), then long-polls the module for APDUs, sends each to the
card in the local reader (pyscard → pcscd) and posts the answer back, which is also the next poll. Asked for
it (カード障害切り分け) it reports its reader and the card's ATR, and says why it could not reach a card: no
reader, no card, no answer to reset (no_atr) or no answer to a command (mute). It never sees a key: under SCP03
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

from smartcard import scard
from smartcard.Exceptions import CardConnectionException, NoCardException
from smartcard.System import readers


class Stopped(Exception):
    """The module refused this terminal: stop."""


class Reader:
    """The terminal's card reader, connected on first use and again after a failure."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._connection: Any = None

    def _connect(self) -> str:
        """Connect to the card: "" or why not (no_reader, no_card, no_atr)."""
        try:
            match = [r for r in readers() if str(r) == self.name]
        except Exception:  # pyscard raises its own types for "no service"
            return "no_reader"
        if not match:
            return "no_reader"
        connection = match[0].createConnection()
        try:
            connection.connect()
        except Exception:  # no card, one without a usable answer to reset, or taken out meanwhile
            with contextlib.suppress(Exception):
                connection.release()
            return self._absent_or_no_atr()
        self._connection = connection
        return ""

    def _absent_or_no_atr(self) -> str:
        """Why connecting failed, asked of pcscd without connecting (SCardGetStatusChange, no wait)."""
        try:
            hresult, context = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
            if hresult != scard.SCARD_S_SUCCESS:
                return "no_reader"
            try:
                hresult, states = scard.SCardGetStatusChange(context, 0, [(self.name, scard.SCARD_STATE_UNAWARE)])
            finally:
                scard.SCardReleaseContext(context)
        except Exception:  # pyscard raises its own types for "no service"
            return "no_reader"
        if hresult not in (scard.SCARD_S_SUCCESS, scard.SCARD_E_TIMEOUT):
            return "no_reader"
        return "no_atr" if states[0][1] & scard.SCARD_STATE_PRESENT else "no_card"

    def exchange(self, apdu: bytes) -> tuple[bytes | None, str]:
        """The card's answer, or None and why not: no_reader, no_card, no_atr or mute (no answer)."""
        error = ""
        for _attempt in range(2):
            if self._connection is None:
                connected = self._connect()
                if connected:  # after a command went unanswered the card is mute, even if it drops off meanwhile
                    return None, "mute" if error == "mute" and connected != "no_reader" else connected
            try:
                data, sw1, sw2 = self._connection.transmit(list(apdu))
                return bytes(data) + bytes((sw1, sw2)), ""
            except (NoCardException, CardConnectionException):
                self.close()
                error = "mute"
            except Exception:  # pyscard raises its own types for "no service"
                self.close()
                return None, "no_reader"
        return None, error

    def transmit(self, apdu: bytes) -> bytes | None:
        """The card's answer, or None when there is no reader, no card or no answer."""
        return self.exchange(apdu)[0]

    def status(self) -> dict[str, str]:
        """The reader's name, the card's ATR and protocol (connected afresh), or the error why there is none."""
        self.close()
        error = self._connect()
        said = {"reader": self.name, "protocol": "", "atr": "", "error": error}
        if not error:
            try:
                said["atr"] = bytes(self._connection.getATR()).hex().upper()
                protocol = int(self._connection.getProtocol())
                said["protocol"] = {1: "T=0", 2: "T=1", 4: "RAW"}.get(protocol, f"0x{protocol:X}")
            except Exception:
                self.close()
                said["error"] = "no_atr"
        if said["error"] == "" and len(said["atr"]) < 4:
            said["error"] = "no_atr"
        return said

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
        self.code_state = ""  # the last idle poll's X-Pairing-Code: "pending", "none" or "" (not said)

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
            if answer.status == 204:
                self.code_state = answer.getheader("X-Pairing-Code", "")
            return json.loads(raw) if raw else None
        return None


def _shown(apdu: bytes, answer: bytes | None, error: str, *, trace: bool) -> str:
    """One relayed exchange for the terminal's console: the command header, lengths and status word only
    (card data, e.g. a 利用者ID read from an AP, stays off the screen and out of logs); ``trace``: all of it."""
    if trace:
        return f"APDU {apdu.hex().upper()} -> {answer.hex().upper() if answer else error}"
    said = f"SW {answer[-2:].hex().upper()}, {len(answer) - 2} bytes" if answer and len(answer) >= 2 else error
    return f"APDU {apdu[:4].hex(' ').upper()} ({max(len(apdu) - 5, 0)} bytes) -> {said}"


def _answer(reader: Reader, job: dict[str, Any], *, trace: bool = False) -> dict[str, Any]:
    """The answer to one job: an APDU's response (or why there is none), or the reader's state."""
    if job.get("control") == "atr":
        said = reader.status()
        print(f"ATR {said['atr'] or said['error']} ({said['reader']})", flush=True)
        return {"exchange": job["exchange"], "response": said["atr"] or None, "error": said["error"] or None,
                "protocol": said["protocol"], "reader": said["reader"]}
    apdu = bytes.fromhex(str(job["apdu"]))
    answer, error = reader.exchange(apdu)
    print(_shown(apdu, answer, error, trace=trace), flush=True)
    return {"exchange": job["exchange"], "response": answer.hex().upper() if answer is not None else None,
            "error": error or None}


class PairingCode:
    """The code on screen: asked for at start-up and again once it has expired or been used."""

    def __init__(self, module: Module) -> None:
        self.module = module
        self.expires = 0.0  # time.monotonic() when the shown code expires; 0: none shown yet

    def refresh(self) -> None:
        """Ask for a fresh code and print it (an unreachable module: tried again at the next look)."""
        try:
            paired = self.module.post("/agent/pair", {})
        except OSError as exc:
            print(f"no pairing code: module unreachable ({exc}); retrying", file=sys.stderr, flush=True)
            self.expires = time.monotonic() + 1
            return
        assert paired is not None
        lifetime = int(paired["expires_in"])
        self.expires = time.monotonic() + lifetime
        until = time.strftime("%H:%M:%S %Z", time.localtime(time.time() + lifetime))
        print(f"PAIRING CODE {paired['code']} (terminal {paired['terminal']}; enter it in the module before "
              f"{until})", flush=True)

    def due(self) -> bool:
        """Whether the code on screen is no good any more: expired, or used (the module said so)."""
        return time.monotonic() >= self.expires or self.module.code_state == "none"

    def wait(self, wait: int) -> int:
        """The long-poll seconds: at most until the code expires, so the fresh one shows at once."""
        return max(1, min(wait, int(self.expires - time.monotonic()) + 1))


def run(module: Module, reader: Reader, *, wait: int = 20, once: bool = False, trace: bool = False) -> None:
    """Pair (print the code), then relay until refused; a fresh code is printed whenever the one shown has
    expired or been used.

    Each answer also asks for the next job (one request per APDU; the module checks revocation on it, as on
    every poll).
    """
    code = PairingCode(module)
    code.refresh()
    job: dict[str, Any] | None = None
    while True:
        if job is None and code.due():
            module.code_state = ""
            code.refresh()
        try:
            job = module.post("/agent/poll", {"wait": code.wait(wait)}) if job is None else job
        except OSError as exc:
            print(f"module unreachable ({exc}); retrying", file=sys.stderr, flush=True)
            time.sleep(1)
            continue
        if job is None:
            if once:
                return
            continue
        answer = _answer(reader, job, trace=trace)
        try:
            job = module.post("/agent/respond", {**answer, "wait": wait})
        except OSError as exc:
            print(f"answer not taken ({exc}); polling", file=sys.stderr, flush=True)
            job = None  # e.g. the module gave up waiting for it; the next poll retries an unreachable module


def main(argv: list[str] | None = None) -> int:
    """Parse the options and relay until refused or interrupted."""
    parser = argparse.ArgumentParser(prog="python -m apdl.agent", description=__doc__.split("\n")[0])
    parser.add_argument("--url", required=True, help="the module's https URL")
    parser.add_argument("--cert", required=True, help="the terminal's SSL通信証明書 (PEM chain)")
    parser.add_argument("--key", required=True, help="its private key (PEM)")
    parser.add_argument("--ca", required=True, help="CA bundle that signs the module's server certificate")
    parser.add_argument("--reader", default="Virtual PCD 00 00", help="PC/SC reader name")
    parser.add_argument("--wait", type=int, default=20, help="long-poll seconds (default 20)")
    parser.add_argument("--trace", action="store_true",
                        help="print each APDU and answer in full (card data included: for fault finding only)")
    args = parser.parse_args(argv)
    reader = Reader(args.reader)
    try:
        run(Module(args.url, cert=args.cert, key=args.key, ca=args.ca), reader, wait=args.wait, trace=args.trace)
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
