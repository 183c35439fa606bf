"""The shared kernel: errors, the audit log, request input and helpers, CLI helpers, UI languages.

Used by every package and owned by none of the features; it imports only ``config``, ``db`` and
third-party libraries (see the import contracts in pyproject.toml).
"""
