"""Login, sessions, passwords and lockout, and the one client-certificate enforcement point (``mtls``)."""
