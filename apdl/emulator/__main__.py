"""``python -m apdl.emulator``: serve an emulated card to a vpcd reader until interrupted."""

from __future__ import annotations

import argparse
import threading
from pathlib import Path

from apdl.card.diversification import MasterKeys
from apdl.emulator.card import CardState, EmulatedCard
from apdl.emulator.vpcd import DEFAULT_PORT, VpcdLink


def main(argv: list[str] | None = None) -> None:
    """Parse the options, connect to vpcd and serve."""
    parser = argparse.ArgumentParser(prog="python -m apdl.emulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="vpcd host (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"vpcd reader port (default {DEFAULT_PORT})")
    parser.add_argument("--state", type=Path, help="JSON file holding the card's contents (created if missing)")
    parser.add_argument("--faults", type=Path,
                        help="fault file to obey (apdl.emulator.faults): no card, mute card, forced status words")
    parser.add_argument("--card-identifier", default=CardState.card_identifier)
    parser.add_argument("--residence-code", default=CardState.residence_code)
    parser.add_argument("--keys-file", type=Path,
                        help="issue the card with SCP03 keys diversified from this master key set (the module's "
                             "APDL_CARD_KEYS or instance card-keys file); without it a new card's management is open")
    parser.add_argument("--kdd", type=bytes.fromhex,
                        help="the new card's key diversification data (10 bytes, hex); default: random")
    args = parser.parse_args(argv)
    state = None
    if args.state is None or not args.state.exists():
        fields = {"card_identifier": args.card_identifier, "residence_code": args.residence_code}
        if args.keys_file:
            state = CardState.issued(MasterKeys.from_hex(args.keys_file.read_text()), kdd=args.kdd, **fields)
        else:
            state = CardState(**fields)
    card = EmulatedCard(state, state_path=args.state, fault_path=args.faults)
    link = VpcdLink(card, host=args.host, port=args.port).start()
    print(f"emulated card for vpcd at {args.host}:{args.port}; Ctrl-C to stop", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        link.stop()


if __name__ == "__main__":
    main()
