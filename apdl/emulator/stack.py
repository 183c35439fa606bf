"""A private PC/SC stack for tests, the bench and the demo: pcscd + vsmartcard-vpcd + the emulated card.

pcscd always creates its socket at ``/run/pcscd/pcscd.comm`` (the daemon ignores
``PCSCLITE_CSOCK_NAME``; only the client library reads it). To run beside a system pcscd, or several
test runs side by side, pcscd starts in its own mount namespace (``unshare --mount``, root only) where
a private directory is bind-mounted over ``/run/pcscd``; clients find the socket through
``PCSCLITE_CSOCK_NAME``. Its reader.conf.d (``pcscd -c``) points vpcd at a free port pair instead of
Debian's fixed 35963/35964, which vpcd binds on all interfaces; the card connects from 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from smartcard import scard

from apdl.emulator.card import EmulatedCard
from apdl.emulator.vpcd import VpcdLink

VPCD_DRIVER = Path("/usr/lib/pcsc/drivers/serial/libifdvpcd.so")
READER_NAME = "Virtual PCD 00 00"  # vpcd's first reader (port), the one the in-process card connects to
SECOND_READER_NAME = "Virtual PCD 00 01"  # vpcd's second reader (port + 1), free for another emulator


class StackUnavailable(RuntimeError):
    """pcscd, the vpcd driver or the privileges to run them are missing."""


def missing_parts() -> list[str]:
    """What this machine lacks to run the stack (empty when everything is there)."""
    missing = []
    if shutil.which("pcscd") is None and not Path("/usr/sbin/pcscd").exists():
        missing.append("pcscd (apt-get install pcscd)")
    if not VPCD_DRIVER.exists():
        missing.append(f"{VPCD_DRIVER} (apt-get install vsmartcard-vpcd)")
    if shutil.which("unshare") is None:
        missing.append("unshare (util-linux)")
    if os.geteuid() != 0:
        missing.append("root (pcscd needs its own mount namespace for a private socket)")
    return missing


def _die_with_parent() -> None:
    # PR_SET_PDEATHSIG survives exec: a test run that is killed does not leave its pcscd behind
    ctypes.CDLL(None).prctl(1, signal.SIGTERM)


def _free_port_pair() -> int:
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port < 65535 and _port_free(port) and _port_free(port + 1):
            return port
    raise StackUnavailable("no free pair of TCP ports for vpcd")


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("0.0.0.0", port))  # noqa: S104 - vpcd itself binds all interfaces; probe the same
        except OSError:
            return False
    return True


def _listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
        return True
    return False


@dataclass
class PcscStack:
    """A running pcscd with vpcd readers and an emulated card in the first reader."""

    directory: Path
    port: int
    card: EmulatedCard = field(default_factory=EmulatedCard)
    reader: str = READER_NAME
    _pcscd: subprocess.Popen[bytes] | None = None
    link: VpcdLink | None = None

    @property
    def socket_path(self) -> Path:
        """pcscd's client socket (give it to clients as PCSCLITE_CSOCK_NAME)."""
        return self.directory / "run" / "pcscd.comm"

    @property
    def fault_path(self) -> Path:
        """The emulated card's fault file (:mod:`apdl.emulator.faults`): write it to make the card fail."""
        return self.directory / "faults.json"

    @property
    def env(self) -> dict[str, str]:
        """Environment for client processes (scriptor, pcsc_scan) that must reach this pcscd."""
        return {**os.environ, "PCSCLITE_CSOCK_NAME": str(self.socket_path)}

    @property
    def log(self) -> str:
        """pcscd's output so far (for failure messages)."""
        path = self.directory / "pcscd.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self, *, timeout: float = 15.0) -> PcscStack:
        """Start pcscd and the card; raises StackUnavailable with the reason when it cannot."""
        missing = missing_parts()
        if missing:
            raise StackUnavailable("missing: " + ", ".join(missing))
        conf, run = self.directory / "reader.conf.d", self.directory / "run"
        conf.mkdir(parents=True, exist_ok=True)
        run.mkdir(exist_ok=True)
        (conf / "vpcd").write_text(
            'FRIENDLYNAME "Virtual PCD"\n'
            f"DEVICENAME   /dev/null:0x{self.port:04X}\n"
            f"LIBPATH      {VPCD_DRIVER}\n"
            f"CHANNELID    0x{self.port:04X}\n")
        script = f'mkdir -p /run/pcscd && mount --bind "{run}" /run/pcscd && exec pcscd --foreground -c "{conf}"'
        with open(self.directory / "pcscd.log", "wb") as log:
            self._pcscd = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                                           stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
        deadline = time.monotonic() + timeout
        while not (self.socket_path.exists() and _listening(self.port)):
            if self._pcscd.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise StackUnavailable(f"pcscd did not come up:\n{self.log}")
            time.sleep(0.05)
        os.environ["PCSCLITE_CSOCK_NAME"] = str(self.socket_path)  # for pyscard in this process
        if self.card.faults is None:
            self.card.use_fault_file(self.fault_path)
        self.link = VpcdLink(self.card, port=self.port).start()
        if not self.link.wait_connected(timeout):
            self.stop()
            raise StackUnavailable(f"the emulated card could not reach vpcd on port {self.port}")
        try:
            self.wait_card(present=True, timeout=timeout)
        except StackUnavailable:
            self.stop()
            raise
        return self

    def wait_card(self, *, present: bool = True, timeout: float = 10.0, reader: str | None = None) -> None:
        """Wait until pcscd sees a card in (or out of) ``reader`` (default: the emulated card's one).

        Raises StackUnavailable on timeout.
        """
        reader = reader or self.reader
        context = None
        try:
            hresult, context = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
            if hresult != scard.SCARD_S_SUCCESS:
                raise StackUnavailable(f"SCardEstablishContext: {scard.SCardGetErrorMessage(hresult)}")
            states = [(reader, scard.SCARD_STATE_UNAWARE)]
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                hresult, states = scard.SCardGetStatusChange(context, 200, states)
                if hresult == scard.SCARD_S_SUCCESS:
                    if bool(states[0][1] & scard.SCARD_STATE_PRESENT) == present:
                        return
                    states = [(reader, states[0][1] & ~scard.SCARD_STATE_CHANGED)]
                elif hresult != scard.SCARD_E_TIMEOUT:
                    raise StackUnavailable(f"SCardGetStatusChange: {scard.SCardGetErrorMessage(hresult)}")
            raise StackUnavailable(f"pcscd did not see the card {'arrive' if present else 'leave'} in {timeout} s")
        finally:
            if context is not None:
                scard.SCardReleaseContext(context)

    def remove_card(self) -> None:
        """Take the card out of the reader and wait until pcscd notices."""
        assert self.link is not None
        self.link.remove_card()
        self.wait_card(present=False)

    def insert_card(self) -> None:
        """Put the card back and wait until pcscd has powered it up."""
        assert self.link is not None
        self.link.mute = False
        self.link.insert_card()
        self.wait_card(present=True)

    def insert_mute_card(self) -> None:
        """Replace the card by a mute one: present in the reader, but no valid answer to reset."""
        assert self.link is not None
        self.remove_card()
        self.link.mute = True
        self.link.insert_card()
        self.wait_card(present=True)

    def stop(self) -> None:
        """Take the card out and stop pcscd."""
        if self.link is not None:
            self.link.stop()
        if self._pcscd is not None and self._pcscd.poll() is None:
            self._pcscd.terminate()
            try:
                self._pcscd.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._pcscd.kill()
                self._pcscd.wait()


def start_stack(directory: Path, card: EmulatedCard | None = None) -> PcscStack:
    """Start a private stack in ``directory`` on a free vpcd port pair (with ``card``, or a new blank one)."""
    return PcscStack(directory=directory, port=_free_port_pair(), card=card or EmulatedCard()).start()
