"""The OCSP responder (RFC 6960) as openssl, curl and cryptography see it over real HTTP."""

from __future__ import annotations

import base64
import os
import re
from pathlib import Path
from urllib.parse import quote

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from ca.authority import CaSettings, authorities
from ca.models import Certificate, CertificateProfile, OcspResponse, RevocationReason
from ca.ocsp import ensure_responder
from ca.revocation import revoke_by_serial
from db import get_session
from kernel.audit import SYSTEM_ACTOR
from tests.ca.pki_helpers import Leaf, issue_leaf, live_server, openssl_ocsp, revoke
from tests.helpers import pkilint, run


def _request(leaf: Leaf, *, nonce: bytes | None = None, algorithm: hashes.HashAlgorithm | None = None) -> bytes:
    issuer = x509.load_pem_x509_certificate(leaf.issuer.read_bytes())
    builder = ocsp.OCSPRequestBuilder().add_certificate(leaf.cert, issuer, algorithm or hashes.SHA1())
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(serialization.Encoding.DER)


def _post(api: FlaskClient, body: bytes) -> ocsp.OCSPResponse:
    response = api.post("/pki/ocsp", data=body, content_type="application/ocsp-request")
    assert response.status_code == 200 and response.mimetype == "application/ocsp-response"
    return ocsp.load_der_ocsp_response(response.data)


def test_openssl_reports_good_then_revoked_with_reason_and_verifies_the_signature(
        app: Flask, api: FlaskClient, tmp_path: Path) -> None:
    leaf = issue_leaf(api, tmp_path)
    with live_server(app) as url:
        before = openssl_ocsp(leaf, url)
        revoke(api, leaf.serial, "keyCompromise")
        after = openssl_ocsp(leaf, url)
    assert before.status == "good"
    assert "Response verify OK" in before.output, before.output
    assert after.status == "revoked"
    assert "Response verify OK" in after.output, after.output
    assert re.search(r"Reason: keyCompromise", after.output), after.output
    assert "Revocation Time" in after.output


def test_nonce_is_echoed_and_openssl_checks_it(app: Flask, api: FlaskClient, tmp_path: Path) -> None:
    leaf = issue_leaf(api, tmp_path)
    with live_server(app) as url:
        result = openssl_ocsp(leaf, url)  # openssl sends a nonce by default and compares the echo
    assert "OCSP Nonce" in result.output and "WARNING: no nonce" not in result.output, result.output
    nonce = os.urandom(16)
    answer = _post(api, _request(leaf, nonce=nonce))
    assert answer.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == nonce


def test_get_with_base64_path_is_answered_and_cacheable(app: Flask, api: FlaskClient, tmp_path: Path) -> None:
    leaf = issue_leaf(api, tmp_path)
    encoded = quote(base64.b64encode(_request(leaf)).decode(), safe="")
    with live_server(app) as url:
        result = run("curl", "-sS", "-D", tmp_path / "headers.txt", "-o", tmp_path / "resp.der",
                     f"{url}/pki/ocsp/{encoded}")
        assert result.returncode == 0, result.stderr
        headers = (tmp_path / "headers.txt").read_text().lower()
        etag = re.search(r"^etag: (.+?)\r?$", headers, re.MULTILINE)
        assert etag, headers
        again = run("curl", "-sS", "-o", os.devnull, "-w", "%{http_code}", "-H", f"If-None-Match: {etag.group(1)}",
                    f"{url}/pki/ocsp/{encoded}")
    assert "content-type: application/ocsp-response" in headers
    max_age = re.search(r"^cache-control: public, max-age=(\d+)", headers, re.MULTILINE)
    assert max_age and 0 < int(max_age.group(1)) <= 60, headers
    assert "expires:" in headers and "last-modified:" in headers
    assert again.stdout == "304"
    # openssl reads and verifies the bytes curl fetched.
    verified = run("openssl", "ocsp", "-respin", tmp_path / "resp.der", "-issuer", leaf.issuer, "-cert", leaf.leaf,
                   "-CAfile", leaf.bundle, "-resp_text")
    assert f"{leaf.leaf}: good" in verified.stdout and "Response verify OK" in verified.stderr + verified.stdout


def test_pre_signed_response_is_reused_until_the_status_changes(app: Flask, api: FlaskClient, tmp_path: Path) -> None:
    leaf = issue_leaf(api, tmp_path)
    request = _request(leaf)
    first = api.post("/pki/ocsp", data=request).data
    second = api.post("/pki/ocsp", data=request).data
    assert first == second  # ECDSA signatures are randomised: equal bytes mean no new signature
    assert ocsp.load_der_ocsp_response(first).certificate_status is ocsp.OCSPCertStatus.GOOD
    revoke(api, leaf.serial, "superseded")
    third = api.post("/pki/ocsp", data=request).data
    assert third != first
    answer = ocsp.load_der_ocsp_response(third)
    assert answer.certificate_status is ocsp.OCSPCertStatus.REVOKED
    assert answer.revocation_reason is x509.ReasonFlags.superseded
    assert api.post("/pki/ocsp", data=request).data == third


def test_revocation_by_the_service_alone_is_visible_on_the_next_request(
        app: Flask, api: FlaskClient, tmp_path: Path) -> None:
    """Another module calling revoke() without publishing: the stored good answer is not served again."""
    leaf = issue_leaf(api, tmp_path)
    with live_server(app) as url:
        assert openssl_ocsp(leaf, url, "-no_nonce").status == "good"
        with app.app_context():
            session = get_session()
            revoke_by_serial(session, serial=leaf.serial, reason=RevocationReason.CESSATION_OF_OPERATION,
                             actor=SYSTEM_ACTOR)
            session.commit()
        assert openssl_ocsp(leaf, url, "-no_nonce").status == "revoked"


def test_hold_is_revoked_with_certificate_hold_then_good_after_release(
        app: Flask, api: FlaskClient, tmp_path: Path) -> None:
    leaf = issue_leaf(api, tmp_path)
    with live_server(app) as url:
        revoke(api, leaf.serial, "certificateHold")
        held = openssl_ocsp(leaf, url)
        assert api.post(f"/api/v1/certificates/{leaf.serial}/release-hold").status_code == 200
        released = openssl_ocsp(leaf, url)
    assert held.status == "revoked" and "Reason: certificateHold" in held.output
    assert released.status == "good"


def test_unknown_serial_is_unknown(app: Flask, api: FlaskClient, tmp_path: Path) -> None:
    leaf = issue_leaf(api, tmp_path)
    with live_server(app) as url:
        result = run("openssl", "ocsp", "-issuer", leaf.issuer, "-serial", "0x1234567890abcdef", "-CAfile",
                     leaf.bundle, "-url", f"{url}/pki/ocsp", "-resp_text")
    assert re.search(r"^0x1234567890abcdef: unknown$", result.stdout, re.MULTILINE), result.stdout + result.stderr
    assert "Response verify OK" in result.stdout + result.stderr


def test_certificate_of_another_ca_is_unauthorized(app: Flask, api: FlaskClient, tmp_path: Path) -> None:
    leaf = issue_leaf(api, tmp_path)
    # A CertID naming the leaf itself as issuer: a name/key pair that is none of our CAs.
    builder = ocsp.OCSPRequestBuilder().add_certificate(leaf.cert, leaf.cert, hashes.SHA1())
    answer = _post(api, builder.build().public_bytes(serialization.Encoding.DER))
    assert answer.response_status is ocsp.OCSPResponseStatus.UNAUTHORIZED


def test_malformed_requests_get_malformed_request_never_a_500(app: Flask, api: FlaskClient, tmp_path: Path) -> None:
    leaf = issue_leaf(api, tmp_path)
    valid = _request(leaf)
    for body in (b"", b"garbage", valid[:-3], b"\x30\x03\x02\x01\x01", valid + b"\x00" * 5, b"\x30" * 20000):
        assert _post(api, body).response_status is ocsp.OCSPResponseStatus.MALFORMED_REQUEST, body[:20]
    for path in ("/pki/ocsp", "/pki/ocsp/", "/pki/ocsp/not*base64", "/pki/ocsp/" + "A" * 40,
                 "/pki/ocsp/%FF%FE", "/pki/ocsp/" + base64.b64encode(b"\x00\x01").decode()):
        response = api.get(path)
        assert response.status_code == 200, path
        assert ocsp.load_der_ocsp_response(response.data).response_status is \
            ocsp.OCSPResponseStatus.MALFORMED_REQUEST, path
    with live_server(app) as url:
        (tmp_path / "junk.der").write_bytes(b"\x30\x05junk")
        result = run("curl", "-sS", "-o", tmp_path / "out.der", "-w", "%{http_code}", "--data-binary",
                     f"@{tmp_path / 'junk.der'}", "-H", "Content-Type: application/ocsp-request", f"{url}/pki/ocsp")
    assert result.stdout == "200"
    assert ocsp.load_der_ocsp_response((tmp_path / "out.der").read_bytes()).response_status is \
        ocsp.OCSPResponseStatus.MALFORMED_REQUEST


def test_sha256_cert_ids_are_answered_in_kind(app: Flask, api: FlaskClient, tmp_path: Path) -> None:
    leaf = issue_leaf(api, tmp_path)
    answer = _post(api, _request(leaf, algorithm=hashes.SHA256()))
    assert answer.certificate_status is ocsp.OCSPCertStatus.GOOD
    assert isinstance(answer.hash_algorithm, hashes.SHA256)
    with live_server(app) as url:
        assert openssl_ocsp(leaf, url, "-sha256").status == "good"


def test_responses_are_signed_by_a_dedicated_ocsp_signing_certificate(
        app: Flask, api: FlaskClient, tmp_path: Path) -> None:
    leaf = issue_leaf(api, tmp_path)
    answer = _post(api, _request(leaf))
    signer = answer.certificates[0]
    issuer = x509.load_pem_x509_certificate(leaf.issuer.read_bytes())
    assert signer.issuer == issuer.subject and signer.subject != issuer.subject
    signer.verify_directly_issued_by(issuer)
    assert list(signer.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.OCSP_SIGNING]
    signer.extensions.get_extension_for_class(x509.OCSPNoCheck)
    assert answer.responder_key_hash == signer.extensions.get_extension_for_class(
        x509.SubjectKeyIdentifier).value.digest
    assert answer.this_update_utc <= answer.next_update_utc <= signer.not_valid_after_utc
    (tmp_path / "responder.pem").write_bytes(signer.public_bytes(serialization.Encoding.PEM))
    assert pkilint("lint_pkix_cert", tmp_path / "responder.pem") == []
    (tmp_path / "response.der").write_bytes(api.post("/pki/ocsp", data=_request(leaf)).data)
    assert pkilint("lint_ocsp_response", tmp_path / "response.der") == []


def test_responder_certificate_is_renewed_before_it_expires(app: Flask, api: FlaskClient, tmp_path: Path) -> None:
    with app.app_context():
        session = get_session()
        settings = CaSettings.from_config(app.config)
        issuing = authorities(session)[-1]
        first = ensure_responder(session, settings, issuing)
        assert ensure_responder(session, settings, issuing).certificate_id == first.certificate_id
        # Renewal window wider than the certificate's life: due now.
        due = CaSettings.from_config({**app.config, "OCSP_SIGNING_RENEW_DAYS": 31})
        renewed = ensure_responder(session, due, issuing)
        session.commit()
        assert renewed.certificate_id != first.certificate_id
        assert renewed.certificate.public_key() != first.certificate.public_key()  # a new key, too
        count = session.scalar(select(func.count()).select_from(Certificate)
                               .where(Certificate.profile == CertificateProfile.OCSP_SIGNING,
                                      Certificate.authority_id == issuing.id))
        assert count == 2
    leaf = issue_leaf(api, tmp_path)
    answer = _post(api, _request(leaf))
    assert answer.certificates[0].serial_number == renewed.certificate.serial_number


def test_stored_responses_are_kept_per_certificate_and_hash(app: Flask, api: FlaskClient, tmp_path: Path) -> None:
    leaf = issue_leaf(api, tmp_path)
    _post(api, _request(leaf))
    _post(api, _request(leaf, algorithm=hashes.SHA256()))
    with app.app_context():
        rows = get_session().execute(
            select(OcspResponse.hash_algorithm).join(Certificate, Certificate.id == OcspResponse.certificate_id)
            .where(Certificate.serial == leaf.serial)).scalars().all()
    assert sorted(rows) == ["sha1", "sha256"]


def test_revoking_the_responder_certificate_replaces_it_and_its_stored_answers(
        app: Flask, api: FlaskClient, tmp_path: Path) -> None:
    leaf = issue_leaf(api, tmp_path)
    request = _request(leaf)
    before = _post(api, request)
    old_signer = before.certificates[0]
    revoke(api, format(old_signer.serial_number, "x"), "keyCompromise")
    after = _post(api, request)
    assert after.certificate_status is ocsp.OCSPCertStatus.GOOD
    assert after.certificates[0].serial_number != old_signer.serial_number
    assert after.certificates[0].public_key() != old_signer.public_key()


def test_get_path_with_raw_slashes_and_plus_signs_is_decoded(app: Flask, api: FlaskClient, tmp_path: Path) -> None:
    """Clients do not always percent-encode the base64: '//' must not be merged, '+' must survive."""
    leaf = issue_leaf(api, tmp_path)
    for _ in range(2000):
        nonce = os.urandom(16)
        encoded = base64.b64encode(_request(leaf, nonce=nonce)).decode()
        if "//" in encoded and "+" in encoded:
            break
    else:  # pragma: no cover - 2000 tries without both is vanishingly unlikely
        raise AssertionError("no request with '//' and '+' in its base64")
    with live_server(app) as url:
        result = run("curl", "-sS", "--path-as-is", "-o", tmp_path / "resp.der", "-w", "%{http_code}",
                     f"{url}/pki/ocsp/{encoded}")
    assert result.stdout == "200", result.stderr
    answer = ocsp.load_der_ocsp_response((tmp_path / "resp.der").read_bytes())
    assert answer.certificate_status is ocsp.OCSPCertStatus.GOOD
    assert answer.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == nonce


def test_a_pre_signed_answer_is_one_read_and_no_write(app: Flask, api: FlaskClient, tmp_path: Path) -> None:
    """What a stored answer needs: the status and the stored response in one query; nothing signed or written."""
    from sqlalchemy import event

    leaf = issue_leaf(api, tmp_path)
    body = _request(leaf)
    first = api.post("/pki/ocsp", data=body, content_type="application/ocsp-request").data  # pre-signs if needed
    statements: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        statements.append(statement)

    engine = app.extensions["opauth.engine"]
    event.listen(engine, "before_cursor_execute", record)
    try:
        again = api.post("/pki/ocsp", data=body, content_type="application/ocsp-request").data
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert again == first
    # Every request first asks whether 環境基本設定 changed (one max() over instance_setting, app-wide);
    # the OCSP answer itself must be a single read.
    statements = [s for s in statements if "instance_setting" not in s]
    reads = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert len(reads) == 1 and len(statements) == 1, statements
