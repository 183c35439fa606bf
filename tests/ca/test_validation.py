"""validate_chain: pyhanko-certvalidator against our roots and the current CRLs in the database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from ca.authority import CaSettings
from ca.models import Certificate, CertificateProfile, Crl, RevocationReason
from ca.revocation import release_hold, revoke, revoke_by_serial
from ca.validation import ValidationResult, validate_chain
from db import get_session
from kernel.audit import SYSTEM_ACTOR
from tests.ca.pki_helpers import Leaf, issue_leaf


def _validate(app: Flask, der: bytes, *, eku: str = "server_auth", intermediates: tuple[bytes, ...] = ()
              ) -> ValidationResult:
    with app.app_context():
        session = get_session()
        result = validate_chain(session, CaSettings.from_config(app.config), leaf_der=der,
                                intermediates_der=intermediates, required_eku={eku},
                                key_usage={"digital_signature"})
        session.commit()
        return result


def _der(leaf: Leaf) -> bytes:
    return leaf.cert.public_bytes(Encoding.DER)


def _status_change(app: Flask, serial: str, reason: RevocationReason | None) -> None:
    """Revoke or release through the service alone (no explicit publish): validation must see it."""
    with app.app_context():
        session = get_session()
        cert = session.scalar(select(Certificate).where(Certificate.serial == serial))
        assert cert is not None
        if reason is None:
            release_hold(session, certificate=cert, actor=SYSTEM_ACTOR)
        else:
            revoke(session, certificate=cert, reason=reason, actor=SYSTEM_ACTOR)
        session.commit()


def test_valid_revoked_held_and_released(app: Flask, api: FlaskClient, tmp_path: Path) -> None:
    leaf = issue_leaf(api, tmp_path)
    good = _validate(app, _der(leaf))
    assert good.valid and good.reason == "" and good.serial == leaf.serial
    _status_change(app, leaf.serial, RevocationReason.CERTIFICATE_HOLD)
    held = _validate(app, _der(leaf))
    assert not held.valid and held.reason == "revoked" and held.revocation_reason == "certificate_hold"
    _status_change(app, leaf.serial, None)
    assert _validate(app, _der(leaf)).valid
    _status_change(app, leaf.serial, RevocationReason.KEY_COMPROMISE)
    revoked = _validate(app, _der(leaf))
    assert not revoked.valid and revoked.reason == "revoked" and revoked.revocation_reason == "key_compromise"


def test_validation_reads_revocation_from_the_database_and_signs_no_crl(
        app: Flask, api: FlaskClient, tmp_path: Path) -> None:
    """The path is validated once and reused; the status is read per call; no CRL is signed here."""
    leaf = issue_leaf(api, tmp_path)
    assert _validate(app, _der(leaf)).valid
    assert _validate(app, _der(leaf)).valid  # from the path cache
    with app.app_context():
        crls_before = get_session().scalars(select(Crl.id)).all()
    # A script revoking through the engine alone (a session, no app): nothing republishes, the CRL lags.
    with app.extensions["opauth.sessionmaker"]() as session:
        revoke_by_serial(session, serial=leaf.serial, reason=RevocationReason.KEY_COMPROMISE, actor=SYSTEM_ACTOR)
        session.commit()
    revoked = _validate(app, _der(leaf))
    assert not revoked.valid and revoked.reason == "revoked" and revoked.revocation_reason == "key_compromise"
    with app.app_context():
        assert get_session().scalars(select(Crl.id)).all() == crls_before


def test_a_certificate_chaining_to_our_root_but_unrecorded_is_refused(app: Flask) -> None:
    """Signed with our issuing CA's key yet absent from the certificate table: its status is unknown."""
    issuing_cert, issuing_key = _issuing_ca(app)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    rogue = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rogue")]))
             .issuer_name(issuing_cert.subject).public_key(key.public_key())
             .serial_number(x509.random_serial_number())
             .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=1))
             .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False),
                            critical=True)
             .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
             .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuing_key.public_key()),
                            critical=False)
             .sign(issuing_key, hashes.SHA256()))
    result = _validate(app, rogue.public_bytes(Encoding.DER))
    assert not result.valid and result.reason == "no_revocation_info", result


def test_the_chain_sent_by_the_client_is_accepted_but_not_required(
        app: Flask, api: FlaskClient, tmp_path: Path) -> None:
    leaf = issue_leaf(api, tmp_path)
    issuer = x509.load_pem_x509_certificate(leaf.issuer.read_bytes()).public_bytes(Encoding.DER)
    assert _validate(app, _der(leaf), intermediates=(issuer,)).valid


def test_wrong_extended_key_usage_is_refused(app: Flask, api: FlaskClient, tmp_path: Path) -> None:
    leaf = issue_leaf(api, tmp_path)
    result = _validate(app, _der(leaf), eku="1.3.6.1.5.5.7.3.2")  # client_auth, as a dotted OID
    assert not result.valid and result.reason == "usage"


def _certificate(subject: str, key: ec.EllipticCurvePrivateKey, *, issuer: str | None = None,
                 issuer_key: ec.EllipticCurvePrivateKey | None = None, ca: bool = False) -> x509.Certificate:
    now = datetime.now(UTC)
    return (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer or subject)]))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .sign(issuer_key or key, hashes.SHA256()))


def test_foreign_certificates_are_untrusted(app: Flask) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    self_signed = _certificate("impostor", key)
    result = _validate(app, self_signed.public_bytes(Encoding.DER))
    assert not result.valid and result.reason == "untrusted"
    ca_key = ec.generate_private_key(ec.SECP256R1())
    foreign_ca = _certificate("opauth Issuing CA 1", ca_key, ca=True)  # our CA's name, another key
    leaf = _certificate("www1.city.itozaki.nagano.jp", key, issuer="opauth Issuing CA 1", issuer_key=ca_key)
    result = _validate(app, leaf.public_bytes(Encoding.DER), intermediates=(foreign_ca.public_bytes(Encoding.DER),))
    assert not result.valid and result.reason == "untrusted", result


def test_garbage_is_malformed_not_an_exception(app: Flask) -> None:
    for der in (b"", b"not a certificate", b"\x30\x03\x02\x01\x01"):
        result = _validate(app, der)
        assert not result.valid and result.reason == "malformed"


def test_a_revoked_issuing_ca_fails_every_leaf_below_it(app: Flask, api: FlaskClient, tmp_path: Path) -> None:
    leaf = issue_leaf(api, tmp_path)
    with app.app_context():
        session = get_session()
        issuing = session.scalar(select(Certificate).where(Certificate.profile == CertificateProfile.ISSUING_CA))
        assert issuing is not None
        revoke_by_serial(session, serial=issuing.serial, reason=RevocationReason.CA_COMPROMISE, actor=SYSTEM_ACTOR)
        session.commit()
    result = _validate(app, _der(leaf))
    assert not result.valid and result.reason == "revoked" and result.revocation_reason == "ca_compromise"


# --- revocation checking fails closed: a chain whose only CRL is unusable is refused ---------------------------

def _issuing_ca(app: Flask) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """The issuing CA's certificate and its key, read through the product's own key store."""
    from ca.authority import current_issuer

    with app.app_context():
        issuer = current_issuer(get_session(), CaSettings.from_config(app.config))
        row = get_session().scalar(select(Certificate).where(Certificate.profile == CertificateProfile.ISSUING_CA))
        assert row is not None
        key = issuer.signer.private_key
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return x509.load_der_x509_certificate(row.der), key


def _crl(issuer_name: x509.Name, issuer_key: ec.EllipticCurvePrivateKey, *, aki_key: ec.EllipticCurvePublicKey,
         this_update: datetime | None = None, next_update: datetime | None = None,
         extra: x509.ExtensionType | None = None) -> bytes:
    now = datetime.now(UTC)
    builder = (x509.CertificateRevocationListBuilder().issuer_name(issuer_name)
               .last_update(this_update or now - timedelta(minutes=5))
               .next_update(next_update or now + timedelta(hours=12))
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(aki_key), critical=False)
               .add_extension(x509.CRLNumber(4242), critical=False))
    if extra is not None:
        builder = builder.add_extension(extra, critical=True)
    return builder.sign(issuer_key, hashes.SHA256()).public_bytes(Encoding.DER)


def _idp(**overrides: object) -> x509.IssuingDistributionPoint:
    fields: dict[str, object] = {"full_name": None, "relative_name": None, "only_contains_user_certs": False,
                                 "only_contains_ca_certs": False, "only_some_reasons": None, "indirect_crl": False,
                                 "only_contains_attribute_certs": False}
    fields.update(overrides)
    return x509.IssuingDistributionPoint(**fields)  # type: ignore[arg-type]


def _root_crl(api: FlaskClient) -> bytes:
    response = api.get("/pki/crl/1.crl")
    assert response.status_code == 200
    return response.data


UNUSABLE_ISSUING_CRLS = {
    "signed_by_another_key": lambda name, key, pub: _crl(name, ec.generate_private_key(ec.SECP256R1()), aki_key=pub),
    "expired_next_update": lambda name, key, pub: _crl(
        name, key, aki_key=pub, this_update=datetime.now(UTC) - timedelta(days=3),
        next_update=datetime.now(UTC) - timedelta(days=2)),
    "not_yet_valid": lambda name, key, pub: _crl(
        name, key, aki_key=pub, this_update=datetime.now(UTC) + timedelta(days=1),
        next_update=datetime.now(UTC) + timedelta(days=2)),
    "idp_only_some_reasons": lambda name, key, pub: _crl(
        name, key, aki_key=pub, extra=_idp(only_some_reasons=frozenset({x509.ReasonFlags.key_compromise}))),
    "idp_indirect": lambda name, key, pub: _crl(name, key, aki_key=pub, extra=_idp(indirect_crl=True)),
    "idp_only_ca_certificates": lambda name, key, pub: _crl(name, key, aki_key=pub,
                                                            extra=_idp(only_contains_ca_certs=True)),
    "idp_other_distribution_point": lambda name, key, pub: _crl(name, key, aki_key=pub, extra=_idp(
        full_name=[x509.UniformResourceIdentifier("http://pki.opauth.example.jp/pki/crl/99.crl")])),
    "delta_crl": lambda name, key, pub: _crl(name, key, aki_key=pub, extra=x509.DeltaCRLIndicator(4241)),
    "another_issuers_crl": lambda name, key, pub: _crl(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Foreign CA")]), key, aki_key=pub),
}


@pytest.mark.parametrize("case", sorted(UNUSABLE_ISSUING_CRLS))
def test_a_leaf_whose_only_crl_is_unusable_is_refused(app: Flask, api: FlaskClient, tmp_path: Path,
                                                      case: str) -> None:
    leaf = issue_leaf(api, tmp_path)
    issuing_cert, issuing_key = _issuing_ca(app)
    public = issuing_key.public_key()
    # The same CRL made properly is accepted: the refusals below are about the CRL, not the harness.
    proper = _crl(issuing_cert.subject, issuing_key, aki_key=public)
    assert _validate_with(app, _der(leaf), crls=(_root_crl(api), proper)).valid
    bad = UNUSABLE_ISSUING_CRLS[case](issuing_cert.subject, issuing_key, public)
    result = _validate_with(app, _der(leaf), crls=(_root_crl(api), bad))
    assert not result.valid and result.reason == "no_revocation_info", result
    assert "unusable CRLs set aside" in result.message


def test_the_root_crl_alone_does_not_cover_the_leaf(app: Flask, api: FlaskClient, tmp_path: Path) -> None:
    """A CRL for a different issuer (the root's) says nothing about the issuing CA's certificates."""
    leaf = issue_leaf(api, tmp_path)
    result = _validate_with(app, _der(leaf), crls=(_root_crl(api),))
    assert not result.valid and result.reason == "no_revocation_info", result


def test_an_unusable_root_crl_fails_the_issuing_ca_and_so_the_leaf(app: Flask, api: FlaskClient,
                                                                   tmp_path: Path) -> None:
    leaf = issue_leaf(api, tmp_path)
    issuing_cert, issuing_key = _issuing_ca(app)
    own = _crl(issuing_cert.subject, issuing_key, aki_key=issuing_key.public_key())
    root = x509.load_der_x509_crl(_root_crl(api))
    forged_root = _crl(root.issuer, ec.generate_private_key(ec.SECP256R1()), aki_key=issuing_key.public_key())
    result = _validate_with(app, _der(leaf), crls=(forged_root, own))
    assert not result.valid and result.reason == "no_revocation_info", result
    assert "not signed by that CA's key" in result.message


def test_validation_after_the_crl_expires_is_refused(app: Flask, api: FlaskClient, tmp_path: Path) -> None:
    """Judged at a moment past the stored CRLs' nextUpdate (the certificate itself still valid)."""
    leaf = issue_leaf(api, tmp_path)
    with app.app_context():
        session = get_session()
        result = validate_chain(session, CaSettings.from_config(app.config), leaf_der=_der(leaf),
                                required_eku={"server_auth"}, key_usage={"digital_signature"},
                                moment=datetime.now(UTC) + timedelta(days=3))
        session.commit()
    assert not result.valid and result.reason == "no_revocation_info", result


def _validate_with(app: Flask, der: bytes, *, crls: tuple[bytes, ...]) -> ValidationResult:
    with app.app_context():
        session = get_session()
        result = validate_chain(session, CaSettings.from_config(app.config), leaf_der=der, required_eku={"server_auth"},
                                key_usage={"digital_signature"}, crls=crls)
        session.commit()
        return result
