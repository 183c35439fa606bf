"""The terminal card agent (カードエージェント): relays the module's APDUs to the terminal's reader.

Self-contained on purpose: it imports only the standard library and pyscard, never the module's server
code, and it holds no key material. It runs on the terminal with that terminal's SSL通信証明書.
"""
