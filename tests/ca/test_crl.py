"""CRLs (RFC 5280 section 5) as openssl, pkilint, pyhanko-certvalidator and cryptography read them."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from asn1crypto import x509 as asn1_x509
from click.testing import Result
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from flask import Flask
from flask.testing import FlaskClient
from pyhanko_certvalidator import CertificateValidator, ValidationContext
from pyhanko_certvalidator.errors import RevokedError
from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from ca.authority import CaSettings, authorities
from ca.crl import build_crl, issue_crl
from ca.keys import SoftwareSigner
from ca.models import Certificate, CertificateProfile, Crl, RevocationReason
from ca.publishing import publisher
from ca.revocation import revoke_by_serial
from db import get_session, new_session
from kernel.audit import SYSTEM_ACTOR
from tests.ca.pki_helpers import Leaf, issue_leaf, live_server, pki_path, revoke
from tests.helpers import pkilint, run


def _cdp(cert: x509.Certificate) -> str:
    cdp = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    return pki_path(str(cdp[0].full_name[0].value))


def _download_crls(url: str, leaf: Leaf, directory: Path) -> tuple[Path, Path]:
    """The leaf's CRL and the issuing CA's CRL (the root's), fetched with curl from the CDP URLs."""
    issuer = x509.load_pem_x509_certificate(leaf.issuer.read_bytes())
    paths = []
    for name, cert in (("leaf.crl", leaf.cert), ("issuer.crl", issuer)):
        path = directory / name
        result = run("curl", "-sSf", "-o", path, f"{url}{_cdp(cert)}")
        assert result.returncode == 0, result.stderr
        paths.append(path)
    return paths[0], paths[1]


def _openssl_verify(leaf: Leaf, crls: tuple[Path, Path]) -> tuple[int, str]:
    result = run("openssl", "verify", "-CAfile", leaf.bundle, "-crl_check_all", "-CRLfile", crls[0],
                 "-CRLfile", crls[1], leaf.leaf)
    return result.returncode, result.stdout + result.stderr


def _der(path: Path) -> asn1_x509.Certificate:
    return asn1_x509.Certificate.load(x509.load_pem_x509_certificate(path.read_bytes()).public_bytes(Encoding.DER))


def _pyhanko(leaf: Leaf, crls: tuple[Path, Path]) -> str:
    context = ValidationContext(trust_roots=[_der(leaf.root)], crls=[p.read_bytes() for p in crls],
                                allow_fetching=False, revocation_mode="hard-fail")
    validator = CertificateValidator(_der(leaf.leaf), intermediate_certs=[_der(leaf.issuer)],
                                     validation_context=context)
    try:
        asyncio.run(validator.async_validate_usage({"digital_signature"}, {"server_auth"}))
    except RevokedError:
        return "revoked"
    return "good"


def test_openssl_and_pyhanko_accept_then_reject_with_the_served_crls(
        app: Flask, api: FlaskClient, tmp_path: Path) -> None:
    leaf = issue_leaf(api, tmp_path)
    with live_server(app) as url:
        (tmp_path / "before").mkdir()
        before = _download_crls(url, leaf, tmp_path / "before")
        revoke(api, leaf.serial, "keyCompromise")
        (tmp_path / "after").mkdir()
        after = _download_crls(url, leaf, tmp_path / "after")
    code, output = _openssl_verify(leaf, before)
    assert code == 0 and "OK" in output, output
    assert _pyhanko(leaf, before) == "good"
    code, output = _openssl_verify(leaf, after)
    assert code == 2 and "error 23" in output and "certificate revoked" in output, output
    assert _pyhanko(leaf, after) == "revoked"


def test_crl_carries_aki_number_reason_and_invalidity_date(app: Flask, api: FlaskClient, tmp_path: Path) -> None:
    leaf = issue_leaf(api, tmp_path)
    invalid_since = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    revoke(api, leaf.serial, "affiliationChanged", invalidity_date=invalid_since.isoformat())
    response = api.get(_cdp(leaf.cert))
    assert response.status_code == 200 and response.mimetype == "application/pkix-crl"
    crl = x509.load_der_x509_crl(response.data)
    issuer = x509.load_pem_x509_certificate(leaf.issuer.read_bytes())
    assert crl.issuer == issuer.subject and crl.is_signature_valid(issuer.public_key())
    aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number >= 1
    assert crl.next_update_utc - crl.last_update_utc == timedelta(hours=app.config["CRL_VALIDITY_HOURS"])
    entry = crl.get_revoked_certificate_by_serial_number(int(leaf.serial, 16))
    assert entry is not None
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason is \
        x509.ReasonFlags.affiliation_changed
    assert entry.extensions.get_extension_for_class(x509.InvalidityDate).value.invalidity_date_utc == invalid_since
    # "unspecified" is expressed by leaving the reasonCode out (RFC 5280 5.3.1).
    other = issue_leaf(api, tmp_path / "other")
    revoke(api, other.serial, "unspecified")
    crl = x509.load_der_x509_crl(api.get(_cdp(leaf.cert)).data)
    unspecified = crl.get_revoked_certificate_by_serial_number(int(other.serial, 16))
    assert unspecified is not None and len(unspecified.extensions) == 0


def test_pem_on_request_and_earlier_crls_by_number(app: Flask, api: FlaskClient, tmp_path: Path) -> None:
    leaf = issue_leaf(api, tmp_path)
    path = _cdp(leaf.cert)
    first = x509.load_der_x509_crl(api.get(path).data)
    revoke(api, leaf.serial, "superseded")
    second = x509.load_der_x509_crl(api.get(path).data)
    n1 = first.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    n2 = second.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    assert n2 > n1
    base = path.removesuffix(".crl")
    old = api.get(f"{base}/{n1}.crl")
    assert old.status_code == 200 and x509.load_der_x509_crl(old.data) == first
    assert x509.load_pem_x509_crl(api.get(f"{base}/{n2}.pem").data) == second
    assert x509.load_pem_x509_crl(api.get(f"{base}.pem").data) == second
    assert x509.load_pem_x509_crl(api.get(path, headers={"Accept": "application/x-pem-file"}).data) == second
    assert x509.load_der_x509_crl(api.get(path, headers={"Accept": "*/*"}).data) == second
    assert api.get(f"{base}/{n2 + 100}.crl").status_code == 404
    assert api.get("/pki/crl/999.crl").status_code == 404


def test_crl_is_served_from_storage_until_a_status_changes(app: Flask, api: FlaskClient, tmp_path: Path) -> None:
    leaf = issue_leaf(api, tmp_path)
    path = _cdp(leaf.cert)
    one, two = api.get(path), api.get(path)
    assert one.data == two.data  # not re-signed per request
    assert one.headers["ETag"] and one.headers["Expires"] and "max-age=" in one.headers["Cache-Control"]
    assert api.get(path, headers={"If-None-Match": one.headers["ETag"]}).status_code == 304
    # A script revoking through the engine alone (a session, no app: nothing republishes after its commit):
    # the next fetch still serves the stored CRL (no request signs one) and has the next one signed in the
    # background.
    with app.extensions["opauth.sessionmaker"]() as session:
        revoke_by_serial(session, serial=leaf.serial, reason=RevocationReason.PRIVILEGE_WITHDRAWN, actor=SYSTEM_ACTOR)
        session.commit()
    assert api.get(path).data == one.data
    assert publisher.wait_idle()
    crl = x509.load_der_x509_crl(api.get(path).data)
    assert crl.get_revoked_certificate_by_serial_number(int(leaf.serial, 16)) is not None


def test_released_hold_disappears_from_the_next_crl(app: Flask, api: FlaskClient, tmp_path: Path) -> None:
    leaf = issue_leaf(api, tmp_path)
    path = _cdp(leaf.cert)
    revoke(api, leaf.serial, "certificateHold")
    held = x509.load_der_x509_crl(api.get(path).data).get_revoked_certificate_by_serial_number(int(leaf.serial, 16))
    assert held is not None
    assert held.extensions.get_extension_for_class(x509.CRLReason).value.reason is x509.ReasonFlags.certificate_hold
    revoke(api, leaf.serial, "removeFromCRL")
    assert x509.load_der_x509_crl(api.get(path).data).get_revoked_certificate_by_serial_number(
        int(leaf.serial, 16)) is None


def test_crl_numbers_increase_under_concurrent_production(app: Flask) -> None:
    """Eight workers sign CRLs for one CA at once: every number is used once, in commit order."""
    results: list[tuple[int, int]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    settings = CaSettings.from_config(app.config)

    def worker() -> None:
        try:
            with app.app_context():
                session = new_session()
                try:
                    issuing = authorities(session)[-1]
                    crl = issue_crl(session, settings, issuing)
                    number = crl.number
                    session.commit()
                    with lock:  # recorded after commit: commit order
                        results.append((number, int(crl.this_update.timestamp())))
                finally:
                    session.close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    numbers = [n for n, _ in results]
    assert len(set(numbers)) == 8
    with app.app_context():
        stored = get_session().scalars(select(Crl.number).where(Crl.authority_id == 2).order_by(Crl.id)).all()
    assert stored == sorted(stored) and len(set(stored)) == len(stored)
    assert set(numbers) <= set(stored)


def test_refresh_command_re_signs_only_when_next_update_is_near(app: Flask) -> None:
    runner = app.test_cli_runner()
    first: Result = runner.invoke(args=["pki", "refresh"])
    again: Result = runner.invoke(args=["pki", "refresh"])
    assert first.exit_code == 0 and again.exit_code == 0, first.output
    assert first.output == again.output  # nothing due: same CRL numbers, same responders
    app.config["CRL_REFRESH_HOURS"] = app.config["CRL_VALIDITY_HOURS"]  # every CRL is due now
    due: Result = runner.invoke(args=["pki", "refresh"])
    assert due.exit_code == 0 and due.output != first.output
    with app.app_context():
        numbers = get_session().scalars(select(Crl.number).where(Crl.authority_id == 2)).all()
    assert max(numbers) == 2


def test_crls_pass_pkilint(app: Flask, api: FlaskClient, tmp_path: Path) -> None:
    leaf = issue_leaf(api, tmp_path)
    revoke(api, leaf.serial, "keyCompromise", invalidity_date="2026-01-02T03:04:05+09:00")
    held = issue_leaf(api, tmp_path / "held")
    revoke(api, held.serial, "certificateHold")
    issuer = x509.load_pem_x509_certificate(leaf.issuer.read_bytes())
    for name, cert in (("issuing.crl", leaf.cert), ("root.crl", issuer)):
        path = tmp_path / name
        path.write_bytes(api.get(_cdp(cert)).data)
        assert pkilint("lint_crl", path, "-t", "CRL", "-p", "PKIX") == [], name


def test_build_streams_many_entries_from_bulk_rows(sqlite_app: Flask) -> None:
    """Rows inserted in bulk (no ORM objects), then the CRL read back completely."""
    n = 5000
    now = datetime.now(UTC).replace(microsecond=0)
    with sqlite_app.app_context():
        session = get_session()
        issuing = authorities(session)[-1]
        session.execute(insert(Certificate), [
            {"serial": format(0x10_0000_0000 + i, "x"), "authority_id": issuing.id,
             "profile": CertificateProfile.OPERATOR, "subject": f"CN=bulk {i}", "common_name": f"bulk {i}",
             "sans": [], "not_before": now, "not_after": now + timedelta(days=30), "der": b"",
             "fingerprint_sha256": f"{i:064x}", "spki_sha256": "0" * 64, "issued_by": "test",
             "created_at": now, "details": {}, "revoked_at": now - timedelta(seconds=i),
             "revocation_reason": list(RevocationReason)[i % len(RevocationReason)],
             "invalidity_date": now - timedelta(days=1) if i % 3 == 0 else None}
            for i in range(n)])
        session.commit()
        crl_row = issue_crl(session, CaSettings.from_config(sqlite_app.config), issuing)
        session.commit()
        crl = x509.load_der_x509_crl(crl_row.der)
        assert crl_row.entries == n == len(crl)
        entry = crl.get_revoked_certificate_by_serial_number(0x10_0000_0000 + 3)
        assert entry is not None and entry.revocation_date_utc == now - timedelta(seconds=3)
        assert crl.is_signature_valid(x509.load_der_x509_certificate(issuing.cert_der).public_key())


def test_empty_crl_omits_the_revoked_list_and_signs_with_rsa_too(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rsa test CA")])
    now = datetime.now(UTC).replace(microsecond=0)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256()))
    der, count = build_crl(issuer_cert=cert, signer=SoftwareSigner(key), number=7, this_update=now,
                           next_update=now + timedelta(hours=1), entries=[])
    crl = x509.load_der_x509_crl(der)
    assert count == 0 and len(crl) == 0 and crl.is_signature_valid(key.public_key())
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 7
    far = datetime(2051, 1, 1, tzinfo=UTC)  # GeneralizedTime from 2050 on
    der, _ = build_crl(issuer_cert=cert, signer=SoftwareSigner(key), number=8, this_update=now, next_update=far,
                       entries=[("abc", now, RevocationReason.KEY_COMPROMISE, None)])
    assert x509.load_der_x509_crl(der).next_update_utc == far


@pytest.mark.parametrize("reason", ["certificateHold", "keyCompromise"])
def test_root_crl_lists_a_revoked_issuing_ca(sqlite_app: Flask, reason: str) -> None:
    with sqlite_app.app_context():
        session = get_session()
        issuing_cert = session.scalar(select(Certificate).where(Certificate.profile == CertificateProfile.ISSUING_CA))
        assert issuing_cert is not None
        revoke_by_serial(session, serial=issuing_cert.serial, reason=RevocationReason(reason), actor=SYSTEM_ACTOR)
        session.commit()
        serial = int(issuing_cert.serial, 16)
    client = sqlite_app.test_client()
    client.get("/pki/crl/1.crl")  # the stored CRL, and a new one due: signed in the background
    assert publisher.wait_idle()
    response = client.get("/pki/crl/1.crl")
    assert x509.load_der_x509_crl(response.data).get_revoked_certificate_by_serial_number(serial) is not None


def test_a_cli_revocation_publishes_right_after_its_commit(app: Flask, api: FlaskClient, tmp_path: Path) -> None:
    leaf = issue_leaf(api, tmp_path)
    result = app.test_cli_runner().invoke(args=["cert", "revoke", leaf.serial, "--reason", "keyCompromise"])
    assert result.exit_code == 0, result.output
    crl = x509.load_der_x509_crl(api.get(_cdp(leaf.cert)).data)  # no waiting: the command published it
    assert crl.get_revoked_certificate_by_serial_number(int(leaf.serial, 16)) is not None


def test_a_rolled_back_revocation_publishes_nothing(app: Flask, api: FlaskClient, tmp_path: Path) -> None:
    from ca.revocation import publish

    leaf = issue_leaf(api, tmp_path)
    with app.app_context():
        session = get_session()
        before = session.scalar(select(Crl.number).order_by(Crl.number.desc()).where(Crl.authority_id == 2).limit(1))
        cert = revoke_by_serial(session, serial=leaf.serial, reason=RevocationReason.KEY_COMPROMISE,
                                actor=SYSTEM_ACTOR)
        publish(session, CaSettings.from_config(app.config), cert)
        session.rollback()
        session.commit()  # a later commit of the same session must not publish the abandoned change
        after = session.scalar(select(Crl.number).order_by(Crl.number.desc()).where(Crl.authority_id == 2).limit(1))
    assert publisher.wait_idle()
    assert before == after


def test_pki_worker_re_signs_what_is_due(app: Flask) -> None:
    runner = app.test_cli_runner()
    app.config["CRL_REFRESH_HOURS"] = app.config["CRL_VALIDITY_HOURS"]  # every CRL is due now
    result: Result = runner.invoke(args=["pki", "worker", "--rounds", "1"])
    assert result.exit_code == 0, result.output
    with app.app_context():
        numbers = get_session().scalars(select(Crl.number).where(Crl.authority_id == 2)).all()
    assert max(numbers) == 2


def test_a_revocation_by_another_module_republishes_after_its_commit(
        app: Flask, api: FlaskClient, tmp_path: Path) -> None:
    """Operator certificates are revoked through ``revoke`` alone: the CRL follows all the same."""
    leaf = issue_leaf(api, tmp_path)
    with app.app_context():
        session = get_session()
        revoke_by_serial(session, serial=leaf.serial, reason=RevocationReason.AFFILIATION_CHANGED, actor=SYSTEM_ACTOR)
        session.commit()  # outside a request: published right after the commit
    crl = x509.load_der_x509_crl(api.get(_cdp(leaf.cert)).data)
    assert crl.get_revoked_certificate_by_serial_number(int(leaf.serial, 16)) is not None



def test_a_failed_worker_round_is_reported_and_the_next_round_runs(
        app: Flask, capsys: pytest.CaptureFixture[str]) -> None:
    """The loop both background workers (`pki worker`, `oidc logout-worker`) run: a round that fails
    (a database hiccup) is reported and does not end the worker; each round has a session of its own."""
    from kernel.cli import run_rounds

    sessions: list[Session] = []

    def round_(session: Session) -> None:
        sessions.append(session)
        if len(sessions) == 1:
            raise RuntimeError("database is locked")

    with app.app_context():
        run_rounds(round_, interval=0, rounds=2, what="test round")
    assert len(sessions) == 2 and sessions[0] is not sessions[1]
    assert "test round failed: database is locked" in capsys.readouterr().err
