"""`make run-apdl-agent`: the terminal card agent beside a running `make run-apdl`, on the same machine.

Run as root, in a second terminal, while ``APDL_CARD_TRANSPORT=agent make run-apdl`` serves the module. Idempotent.
It:

1. issues the demo terminal's SSL通信証明書 through opauth's CLI (``ssl issue --tenant demo-city --terminal
   demo-terminal``; key and certificate kept in instance/apdl/agent/), once;
2. registers that terminal to the demo tenant in the module (端末管理, ``apdl terminal register --cert``), once;
3. starts the terminal's own private pcscd + vsmartcard-vpcd with an emulated card issued with the module's SCP03
   keys (its contents kept in instance/apdl/agent/card.json);
4. runs ``python -m apdl.agent`` against the module over mutual TLS: it prints the pairing code (a fresh one
   whenever the shown one expires or is used) that the operator types in at 端末の組付け (/terminal).

Ctrl-C or SIGTERM stops the agent and its card stack; the module keeps running.
"""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from types import FrameType

from apdl_demo import APDL, APDL_INSTANCE, BIN, OPAUTH_INSTANCE, ROOT, TENANT, _key_and_csr, _opauth, apdl_env

TERMINAL = "demo-terminal"
AGENT_DIR = APDL_INSTANCE / "agent"


def module_answers(ca_bundle: Path) -> bool:
    """Whether the module answers over TLS (any HTTP status will do)."""
    try:
        context = ssl.create_default_context(cafile=str(ca_bundle))
        urllib.request.urlopen(APDL + "/", timeout=5, context=context).close()  # noqa: S310 - APDL is https://
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError):
        return False
    return True


def terminal_certificate() -> tuple[Path, Path]:
    """The demo terminal's certificate chain and key, issued by opauth once."""
    AGENT_DIR.mkdir(parents=True, exist_ok=True)
    key, cert = AGENT_DIR / "terminal.key", AGENT_DIR / "terminal.pem"
    if not cert.exists():
        (AGENT_DIR / "terminal.csr").write_bytes(_key_and_csr(key))
        _opauth("ssl", "issue", "--tenant", TENANT, "--terminal", TERMINAL, "--host", "localhost",
                "--csr", AGENT_DIR / "terminal.csr", "--out", cert)
    return cert, key


def register_terminal(cert: Path, env: dict[str, str]) -> None:
    """端末管理 in the module: the terminal of ``cert`` registered to the demo tenant (unless it already is)."""
    def apdl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(BIN / "flask"), "--app", "apdl.app", "apdl", "terminal", *args], cwd=ROOT,
                              env={**os.environ, **env, "LANG": "en_US.UTF-8"}, capture_output=True, text=True,
                              timeout=120, check=False)

    listed = apdl("list", "--tenant", TENANT)
    if listed.returncode != 0:
        raise SystemExit(f"apdl terminal list failed:\n{listed.stdout}{listed.stderr}")
    if any(line.split("\t")[1:2] == [TERMINAL] for line in listed.stdout.splitlines()):
        return
    registered = apdl("register", "--tenant", TENANT, "--cert", str(cert))
    if registered.returncode != 0:
        raise SystemExit(f"apdl terminal register failed:\n{registered.stdout}{registered.stderr}")


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main() -> int:
    """Certificate, registration, the terminal's card stack and the agent; wait for Ctrl-C/SIGTERM."""
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    ca_bundle = OPAUTH_INSTANCE / "tls" / "ca-bundle.pem"
    if not ca_bundle.exists() or not module_answers(ca_bundle):
        raise SystemExit(f"the module does not answer at {APDL}: start `APDL_CARD_TRANSPORT=agent make run-apdl` "
                         "in another terminal first")
    env = apdl_env(APDL_INSTANCE / "tls")
    cert, key = terminal_certificate()
    register_terminal(cert, env)

    from apdl.cardops import card_keys
    from apdl.emulator.card import CardState, EmulatedCard
    from apdl.emulator.stack import StackUnavailable, start_stack
    from apdl.settings import load_settings

    card_file = AGENT_DIR / "card.json"
    issued = None if card_file.exists() else CardState.issued(card_keys(load_settings(environ={**os.environ, **env})))
    stack = agent = None
    try:
        try:
            stack = start_stack(AGENT_DIR / "pcsc", EmulatedCard(issued, state_path=card_file))
        except StackUnavailable as exc:
            raise SystemExit(f"the PC/SC stack cannot start (root, pcscd and vsmartcard-vpcd are needed): {exc}")
        print(f"terminal {TERMINAL} of {TENANT}: emulated card in '{stack.reader}' "
              f"(card FID {stack.card.state.card_identifier})")
        print(f"log in at {APDL}/ , open 端末の組付け ({APDL}/terminal) and type the pairing code below; "
              "Ctrl-C stops the agent\n", flush=True)
        agent = subprocess.Popen([sys.executable, "-m", "apdl.agent", "--url", APDL, "--cert", str(cert),
                                  "--key", str(key), "--ca", str(ca_bundle), "--reader", stack.reader],
                                 cwd=ROOT, env={**os.environ, "PCSCLITE_CSOCK_NAME": str(stack.socket_path)})
        return agent.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if agent is not None and agent.poll() is None:
            agent.terminate()
            agent.wait(timeout=10)
        if stack is not None:
            stack.stop()


if __name__ == "__main__":
    sys.exit(main())
