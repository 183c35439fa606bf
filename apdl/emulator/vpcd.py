"""The emulator's side of Debian's ``vsmartcard-vpcd`` reader driver: a TCP client speaking vpcd framing.

vpcd (loaded by pcscd) listens on a TCP port per virtual reader; a "virtual ICC" connects to it. Each
message is a 2-byte big-endian length and a payload. A one-byte payload is a control message (00 power
off, 01 power on, 02 reset, 04 send the ATR); anything else is a command APDU, answered with the
response APDU in the same framing. The card is "inserted" while the connection is open.

vpcd writes the length and the body in two segments: with delayed ACK every APDU would wait ~45 ms,
so TCP_QUICKACK (which Linux clears again after use) is re-armed around every receive.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time

from apdl.emulator.card import ATR, EmulatedCard

POWER_OFF = 0x00
POWER_ON = 0x01
RESET = 0x02
GET_ATR = 0x04
POLL_GAP = 0.8  # seconds a swapped card stays out: more than pcscd's presence polling (400 ms)
DEFAULT_PORT = 35963  # vpcd's first reader ("Virtual PCD 00 00") in Debian's /etc/reader.conf.d/vpcd


def _quickack(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)


def _recv_exactly(sock: socket.socket, n: int, *, quickack: bool = True) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        if quickack:
            _quickack(sock)
        chunk = sock.recv(n - len(buf))
        if quickack:
            _quickack(sock)
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


class VpcdLink:
    """Connects an :class:`EmulatedCard` to a vpcd reader and serves it in a background thread.

    ``remove_card``/``insert_card`` close and reopen the connection (pcscd then sees no card / a new
    card); with ``mute`` set, the next insertion gives an invalid ATR (a present but unusable card).
    When the card has a fault file, a second thread applies its card mode (absent, no_atr) as it changes,
    and a ``mute`` card leaves every command unanswered until the link drops it after ``mute_seconds``.
    """

    def __init__(self, card: EmulatedCard, *, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
                 quickack: bool = True) -> None:
        self.card = card
        self.quickack = quickack  # off only to measure what delayed ACK costs
        self.host = host
        self.port = port
        self.mute = False
        self._present = threading.Event()
        self._present.set()
        self._stopped = threading.Event()
        self._connected = threading.Event()
        self._sock: socket.socket | None = None
        self._thread = threading.Thread(target=self._run, name=f"vpcd-card-{port}", daemon=True)
        self._watcher = threading.Thread(target=self._watch, name=f"vpcd-faults-{port}", daemon=True)
        self._applied_mode = "present"
        self._apply_lock = threading.Lock()

    def start(self) -> VpcdLink:
        """Start serving (connects as soon as vpcd listens)."""
        self._thread.start()
        if self.card.faults is not None:
            self._watcher.start()
        return self

    def apply_faults(self) -> None:
        """Follow a change of the fault file's card mode now (the watcher does this every 50 ms)."""
        with self._apply_lock:
            mode = self.card.fault_mode()
            if mode == self._applied_mode:
                return
            previous, self._applied_mode = self._applied_mode, mode
            if mode == "absent":
                self.remove_card()
            elif mode == "no_atr":
                self._swap(mute=True)
            elif previous == "no_atr":
                self._swap(mute=False)
            elif previous == "absent":
                self.mute = False
                self.insert_card()

    def _swap(self, *, mute: bool) -> None:
        # out long enough for pcscd's presence polling to see the card leave, then the other card in
        self.remove_card()
        self._stopped.wait(POLL_GAP)
        self.mute = mute
        self.insert_card()

    def _watch(self) -> None:
        while not self._stopped.wait(0.05):
            self.apply_faults()

    def wait_connected(self, timeout: float = 10.0) -> bool:
        """True once the card is connected to vpcd."""
        return self._connected.wait(timeout)

    def stop(self) -> None:
        """Disconnect and end the thread."""
        self._stopped.set()
        self._present.set()
        self._drop()
        self._thread.join(timeout=5)

    def remove_card(self) -> None:
        """Take the card out of the reader."""
        self._present.clear()
        self._drop()

    def insert_card(self) -> None:
        """Put the card back (a fresh power-up: selection and authentication are forgotten)."""
        self.card.power_cycle()
        self._present.set()

    def _drop(self) -> None:
        sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _run(self) -> None:
        while not self._stopped.is_set():
            if not self._present.wait(0.2):
                continue
            try:
                sock = socket.create_connection((self.host, self.port), timeout=1)
            except OSError:
                time.sleep(0.05)
                continue
            sock.settimeout(None)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sock = sock
            self._connected.set()
            try:
                self._serve(sock)
            except OSError:
                pass
            finally:
                self._connected.clear()
                self._sock = None
                sock.close()

    def _serve(self, sock: socket.socket) -> None:
        while self._present.is_set() and not self._stopped.is_set():
            header = _recv_exactly(sock, 2, quickack=self.quickack)
            if header is None:
                return
            payload = _recv_exactly(sock, int.from_bytes(header, "big"), quickack=self.quickack)
            if payload is None:
                return
            if len(payload) == 1:
                if payload[0] in (POWER_OFF, RESET):
                    self.card.power_cycle()
                elif payload[0] == GET_ATR:
                    # A mute card: present, but no valid answer to reset (vpcd would wait forever for
                    # a silent card, so the failure is shown at power-up, where readers detect it).
                    atr = b"\x00" if self.mute else ATR
                    sock.sendall(len(atr).to_bytes(2, "big") + atr)
                continue
            faults = self.card.faults.current() if self.card.faults is not None else None
            if faults is not None and faults.card == "mute":
                # no answer; a reader gives up after its timeout: the card is gone, then found again
                self._stopped.wait(faults.mute_seconds)
                return
            response = self.card.process(payload)
            sock.sendall(len(response).to_bytes(2, "big") + response)
