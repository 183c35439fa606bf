"""gunicorn settings of the AP download module, from the same APDL_* settings as the app.

``gunicorn --config python:apdl.gunicorn_conf``: HTTPS on APDL_BIND when APDL_TLS_CERT/KEY are set
(the server certificate opauth issued for the module's host), asking for an optional client certificate
(the card agents' and business systems'), plain HTTP behind a proxy otherwise.
"""

from __future__ import annotations

import ssl

from apdl.settings import load_settings

_settings = load_settings()

wsgi_app = "apdl.app:create_app()"
bind = [_settings["BIND"]]
workers = _settings["WORKERS"]
worker_class = "apdl.gunicorn_worker.Worker"  # gthread, with the module's own pages for requests it cannot read
threads = 4
limit_request_line = 8190  # gunicorn's most; the application answers 414 above MAX_URL_LENGTH (4096)
if _settings["TLS_CERT"]:
    certfile = _settings["TLS_CERT"]
    keyfile = _settings["TLS_KEY"]
    # Card agents and business systems present their SSL通信証明書; browsers present none. The TLS layer only
    # asks (and checks the chain when one is presented); apdl.clientcert.verify decides per request.
    if _settings["TERMINAL_CA"] or _settings["CA_BUNDLE"]:
        cert_reqs = ssl.CERT_OPTIONAL
        ca_certs = _settings["TERMINAL_CA"] or _settings["CA_BUNDLE"]
accesslog = "-"
errorlog = "-"
control_socket_disable = True
