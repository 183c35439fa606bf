"""Card access: APDUs, the card adapter interface and its reference (ISO 7816-4 / GlobalPlatform) implementation."""
