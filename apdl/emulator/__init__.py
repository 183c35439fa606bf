"""A card emulator for tests and the demo, attached to pcscd through Debian's vsmartcard-vpcd driver."""
