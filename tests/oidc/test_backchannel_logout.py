"""Back-channel logout: ended opauth sessions are announced to the business systems they signed into.

A real HTTPS receiver on 127.0.0.1 (its server certificate issued by opauth for business system 09) stands
in for the business system; delivery runs through the CLI, as cron (``deliver-logouts``) or ``make run``
(``logout-worker``) runs it.
"""

from __future__ import annotations

import http.server
import ssl
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from joserfc import jwt
from joserfc.jwk import KeySet
from sqlalchemy import select

from db import get_session
from kernel.audit import AuditEvent
from oidc.models import OidcLogoutDelivery
from tests.bio.helpers import bio_login, manager_enrols
from tests.bio.softauthn import SoftAuthenticator
from tests.conftest import ADMIN_PASSWORD, csrf_token
from tests.helpers import BUSINESS, make_csr
from tests.oidc.conftest import AuthRequest, Cert, World, exchange, get_code, web_login
from tests.servers import free_port


@dataclass
class Receiver:
    port: int
    tokens: list[str] = field(default_factory=list)
    status: int = 200
    serial: str = ""  # its server certificate's


@pytest.fixture
def receiver(world: World, tmp_path: Path) -> Iterator[Receiver]:
    """Business system 09 at https://127.0.0.1:<port>, with a back-channel logout URI served by this test."""
    port = free_port()
    base = f"https://127.0.0.1:{port}"
    key = ec.generate_private_key(ec.SECP256R1())
    system = dict(BUSINESS, business_id="09", name="テスト業務", top_url=f"{base}/top",
                  operator_admin_url=f"{base}/admin", personalize_url=f"{base}/perso",
                  csr=make_csr(key, subject=x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "JP")])).decode())
    response = world.admin.post("/api/v1/business-server-certificates", json=system)
    assert response.status_code == 201, response.get_json()
    response_serial = response.get_json()["serial"]
    chain = world.admin.get(f"/api/v1/certificates/{response_serial}/chain.pem").get_data()
    (tmp_path / "rp.pem").write_bytes(chain)
    (tmp_path / "rp.key").write_bytes(key.private_bytes(Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                        serialization.NoEncryption()))
    assert world.admin.put("/api/v1/business-systems/09/joint-use", json={"tenants": ["minamiedo"]}).status_code == 200
    operator = world.admin.get("/api/v1/tenants/minamiedo/operators/OP0601").get_json()
    operator["business_ids"] = ["05", "07", "09"]
    assert world.admin.put("/api/v1/tenants/minamiedo/operators/OP0601", json=operator).status_code == 200
    response = world.admin.put("/api/v1/business-systems/09/oidc-client", json={
        "enabled": True, "redirect_uris": [f"{base}/cb"], "backchannel_logout_uri": f"{base}/bcl"})
    assert response.status_code == 200, response.get_json()
    state = Receiver(port=port, serial=response_serial)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode()
            state.tokens.append(urllib.parse.parse_qs(body)["logout_token"][0])
            self.send_response(state.status)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "rp.pem", tmp_path / "rp.key")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


def _client_cert_09(world: World) -> Cert:
    key = ec.generate_private_key(ec.SECP256R1())
    response = world.admin.post("/api/v1/ssl-certificates", json={
        "tenant": "system", "business_id": "09", "hosts": ["127.0.0.1"], "csr": make_csr(key).decode()})
    assert response.status_code == 201, response.get_json()
    serial = response.get_json()["serial"]
    cert = x509.load_pem_x509_certificate(world.admin.get(f"/api/v1/certificates/{serial}/pem").get_data())
    return Cert(pem=cert.public_bytes(Encoding.PEM).decode(), der=cert.public_bytes(Encoding.DER), serial=serial)


def _sign_in_to_09(world: World, receiver: Receiver) -> dict[str, object]:
    req = AuthRequest("09", redirect=f"https://127.0.0.1:{receiver.port}/cb")
    body = exchange(world.app, req, get_code(world.browser, req), _client_cert_09(world)).get_json()
    keys = KeySet.import_key_set(world.app.test_client().get("/oidc/jwks.json").get_json())
    return dict(jwt.decode(body["id_token"], keys, algorithms=["ES256"]).claims)


def _deliver(world: World) -> str:
    result = world.app.test_cli_runner().invoke(args=["oidc", "deliver-logouts", "--timeout", "2"])
    assert result.exit_code == 0, result.output
    return str(result.output)


def _audit(world: World, action: str) -> list[AuditEvent]:
    with world.app.app_context():
        return list(get_session().scalars(select(AuditEvent).where(AuditEvent.action == action)))


def test_logout_sends_a_signed_logout_token_to_the_business_system(world: World, receiver: Receiver) -> None:
    id_token = _sign_in_to_09(world, receiver)
    get_code(world.browser, AuthRequest("05"))  # signed in to 05 too, which has no back-channel URI
    page = world.browser.get("/top").get_data(as_text=True)
    response = world.browser.post("/logout", data={"csrf_token": csrf_token(page)})
    assert response.status_code == 302
    assert receiver.tokens == [], "nothing is sent during the operator's own request"
    assert "1 logout tokens delivered" in _deliver(world)
    assert len(receiver.tokens) == 1
    keys = KeySet.import_key_set(world.app.test_client().get("/oidc/jwks.json").get_json())
    token = jwt.decode(receiver.tokens[0], keys, algorithms=["ES256"])
    assert token.header["typ"] == "logout+jwt"
    claims = token.claims
    assert claims["aud"] == "biz-09" and claims["iss"] == id_token["iss"]
    assert claims["sub"] == id_token["sub"] and claims["sid"] == id_token["sid"]
    assert claims["events"] == {"http://schemas.openid.net/event/backchannel-logout": {}} and "nonce" not in claims
    assert _audit(world, "oidc.logout_sent")
    assert "0 logout tokens delivered" in _deliver(world), "delivered once only"


def test_revoking_the_operator_logs_out_every_business_system_session(world: World, receiver: Receiver) -> None:
    id_token = _sign_in_to_09(world, receiver)
    assert world.admin.post("/api/v1/tenants/minamiedo/operators/OP0601/revoke", json={}).status_code == 200
    _deliver(world)
    assert len(receiver.tokens) == 1
    keys = KeySet.import_key_set(world.app.test_client().get("/oidc/jwks.json").get_json())
    assert jwt.decode(receiver.tokens[0], keys, algorithms=["ES256"]).claims["sid"] == id_token["sid"]


def test_an_unreachable_business_system_is_retried_later_and_audited(world: World, receiver: Receiver) -> None:
    _sign_in_to_09(world, receiver)
    receiver.status = 500
    page = world.browser.get("/top").get_data(as_text=True)
    assert world.browser.post("/logout", data={"csrf_token": csrf_token(page)}).status_code == 302
    output = _deliver(world)
    assert "0 logout tokens delivered, 1 failed" in output and "HTTP 500" in output
    failures = _audit(world, "oidc.logout_failed")
    assert failures and failures[-1].detail["gave_up"] is False
    with world.app.app_context():
        delivery = get_session().scalars(select(OidcLogoutDelivery)).one()
        assert delivery.delivered_at is None and delivery.attempts == 1
        assert delivery.next_attempt_at > delivery.created_at
    assert "0 logout tokens delivered, 0 failed" in _deliver(world), "not retried before its time"



def test_no_logout_token_goes_to_a_server_whose_certificate_opauth_revoked(world: World, receiver: Receiver) -> None:
    """The receiver's certificate is opauth's own: its revocation counts at once, as at the mutual-TLS check."""
    _sign_in_to_09(world, receiver)
    revoked = world.admin.post(f"/api/v1/certificates/{receiver.serial}/revoke", json={"reason": "keyCompromise"})
    assert revoked.status_code == 200, revoked.get_json()
    page = world.browser.get("/top").get_data(as_text=True)
    assert world.browser.post("/logout", data={"csrf_token": csrf_token(page)}).status_code == 302
    output = _deliver(world)
    assert "0 logout tokens delivered, 1 failed" in output and "revoked" in output, output
    assert receiver.tokens == [], "the token was not sent to the holder of the revoked certificate's key"
    assert "revoked" in _audit(world, "oidc.logout_failed")[-1].detail["error"]

def test_revoking_the_operator_certificate_of_a_biometric_session_logs_it_out(world: World,
                                                                             receiver: Receiver) -> None:
    app = world.app
    op_key = ec.generate_private_key(ec.SECP256R1())
    response = world.admin.post("/api/v1/tenants/minamiedo/operators", json={
        "operator_id": "OP0602", "name": "生体 花子", "auth_method": "biometric", "business_ids": ["09"],
        "csr": make_csr(op_key).decode()})
    assert response.status_code == 201, response.get_json()
    serial = response.get_json()["certificate"]["serial"]
    leaf = x509.load_pem_x509_certificate(world.admin.get(f"/api/v1/certificates/{serial}/pem").get_data())
    authn = SoftAuthenticator(rp_id="opauth.example.jp", origin="https://opauth.example.jp")
    assert manager_enrols(web_login(app, "system", "admin", ADMIN_PASSWORD), "OP0602", authn,
                          tenant="minamiedo").status_code == 200
    app.config["BIOMETRIC_CLIENT_CERT_REQUIRED"] = True
    operator_browser = app.test_client()
    operator_browser.environ_base["HTTP_X_SSL_CLIENT_CERT"] = urllib.parse.quote(
        leaf.public_bytes(Encoding.PEM).decode())
    assert bio_login(operator_browser, "OP0602", authn, tenant="minamiedo").status_code == 200
    req = AuthRequest("09", redirect=f"https://127.0.0.1:{receiver.port}/cb")
    body = exchange(app, req, get_code(operator_browser, req), _client_cert_09(world)).get_json()
    keys = KeySet.import_key_set(app.test_client().get("/oidc/jwks.json").get_json())
    sid = jwt.decode(body["id_token"], keys, algorithms=["ES256"]).claims["sid"]
    response = world.admin.post(f"/api/v1/tenants/minamiedo/operators/OP0602/certificates/{serial}/revoke",
                                json={"reason": "keyCompromise"})
    assert response.status_code == 200, response.get_json()
    _deliver(world)
    assert [jwt.decode(t, keys, algorithms=["ES256"]).claims["sid"] for t in receiver.tokens] == [sid]
    ended = operator_browser.get("/top")  # the operator's next request: back to the biometric login, told why
    assert ended.status_code == 302 and ended.headers["Location"].endswith("/bio/login")
    assert "操作者証明書が失効したか有効期限が切れたため" in operator_browser.get("/bio/login").get_data(as_text=True)


def _sid(world: World, token: str) -> str:
    keys = KeySet.import_key_set(world.app.test_client().get("/oidc/jwks.json").get_json())
    return str(jwt.decode(token, keys, algorithms=["ES256"]).claims["sid"])


def test_a_session_that_simply_stops_is_announced_once_it_has_timed_out(world: World, receiver: Receiver) -> None:
    absolute = int(world.app.config["SESSION_ABSOLUTE_MINUTES"]) * 60
    with world.browser.session_transaction() as browser_session:  # logged in almost that long ago
        browser_session["auth_at"] = int(time.time()) - absolute + 20
    id_token = _sign_in_to_09(world, receiver)
    assert "0 logout tokens delivered" in _deliver(world), "not before the session has ended"
    deadline = time.monotonic() + 90  # no request comes from the browser any more
    while not receiver.tokens and time.monotonic() < deadline:
        time.sleep(1)
        result = world.app.test_cli_runner().invoke(args=["oidc", "logout-worker", "--rounds", "1"])
        assert result.exit_code == 0, result.output
    assert [_sid(world, t) for t in receiver.tokens] == [id_token["sid"]]
    sent = _audit(world, "oidc.logout_sent")
    assert sent and sent[-1].detail["reason"] == "session_timeout"
    response = world.browser.get("/top")  # the browser comes back: its session is over ...
    assert response.status_code == 302 and "/login" in response.headers["Location"]
    assert "0 logout tokens delivered" in _deliver(world), "... and the business system is not told twice"


def test_an_idle_session_ends_at_its_next_request_and_is_announced(world: World, receiver: Receiver) -> None:
    id_token = _sign_in_to_09(world, receiver)
    idle = int(world.app.config["SESSION_IDLE_MINUTES"]) * 60
    with world.browser.session_transaction() as browser_session:  # the operator left the browser alone
        browser_session["seen_at"] = int(time.time()) - idle - 5
    response = world.browser.get("/top")
    assert response.status_code == 302 and "/login" in response.headers["Location"]
    assert _audit(world, "auth.session_expired")
    assert "1 logout tokens delivered" in _deliver(world)
    assert [_sid(world, t) for t in receiver.tokens] == [id_token["sid"]]


def test_locking_the_operator_logs_out_their_business_system_sessions(world: World, receiver: Receiver) -> None:
    id_token = _sign_in_to_09(world, receiver)
    someone = world.app.test_client()
    for _ in range(int(world.app.config["LOGIN_MAX_FAILURES"])):
        page = someone.get("/login").get_data(as_text=True)
        someone.post("/login", data={"csrf_token": csrf_token(page), "tenant": "minamiedo", "operator_id": "OP0601",
                                     "password": "not-the-password"})
    assert _audit(world, "auth.locked")
    assert "1 logout tokens delivered" in _deliver(world)
    assert [_sid(world, t) for t in receiver.tokens] == [id_token["sid"]]


def test_an_unused_code_owes_no_logout(world: World, receiver: Receiver) -> None:
    absolute = int(world.app.config["SESSION_ABSOLUTE_MINUTES"]) * 60
    with world.browser.session_transaction() as browser_session:
        browser_session["auth_at"] = int(time.time()) - absolute + 2
    get_code(world.browser, AuthRequest("09", redirect=f"https://127.0.0.1:{receiver.port}/cb"))  # never exchanged
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with world.app.app_context():
            if get_session().scalars(select(OidcLogoutDelivery.gave_up_at)).one() is not None:
                break
        time.sleep(1)
        _deliver(world)
    with world.app.app_context():
        delivery = get_session().scalars(select(OidcLogoutDelivery)).one()
        assert delivery.gave_up_at is not None and delivery.attempts == 0, "settled when due, without sending"
    assert receiver.tokens == []
    assert not _audit(world, "oidc.logout_sent") and not _audit(world, "oidc.logout_failed")


def test_logout_asked_by_another_business_system_is_announced(world: World, receiver: Receiver) -> None:
    id_token = _sign_in_to_09(world, receiver)
    req = AuthRequest("05")
    hint = exchange(world.app, req, get_code(world.browser, req), world.certs["05"]).get_json()["id_token"]
    response = world.browser.get("/oidc/logout?" + urllib.parse.urlencode({"id_token_hint": hint}))
    assert response.status_code == 200, "RP-initiated logout of the same session ends it at once"
    assert world.browser.get("/top").status_code == 302
    assert "1 logout tokens delivered" in _deliver(world)
    assert [_sid(world, t) for t in receiver.tokens] == [id_token["sid"]]
