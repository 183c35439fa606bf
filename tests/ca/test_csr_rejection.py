"""Every bad CSR gets a clear 4xx, an audit entry, and leaves no certificate or business system behind."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from asn1crypto import csr as asn1_csr
from asn1crypto import keys as asn1_keys
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from ca.csr import parse_csr
from ca.models import Certificate
from db import get_session
from kernel.audit import AuditEvent
from kernel.errors import InvalidCsr
from operators.models import BusinessSystem
from tests.helpers import BUSINESS, make_csr, rsa_key


def _bad_signature() -> bytes:
    """A CSR whose public key was swapped after signing."""
    der = make_csr(encoding=serialization.Encoding.DER)
    parsed = asn1_csr.CertificationRequest.load(der)
    other = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    info = parsed["certification_request_info"]
    info["subject_pk_info"] = asn1_keys.PublicKeyInfo.load(other)
    return asn1_csr.CertificationRequest({
        "certification_request_info": info,
        "signature_algorithm": parsed["signature_algorithm"],
        "signature": parsed["signature"],
    }).dump(force=True)


def _certificate_pem() -> bytes:
    from cryptography import x509

    cert = x509.load_der_x509_certificate(_issued_ca_der())
    return cert.public_bytes(serialization.Encoding.PEM)


def _issued_ca_der() -> bytes:
    import datetime

    from cryptography import x509
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.DER)


def _sha1_csr() -> bytes:
    """cryptography refuses to sign with SHA-1; openssl still can, so clients may send one."""
    import tempfile
    from pathlib import Path

    from tests.helpers import run

    with tempfile.TemporaryDirectory() as tmp:
        key = Path(tmp) / "k.pem"
        key.write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        out = Path(tmp) / "r.csr"
        run("openssl", "req", "-new", "-sha1", "-key", key, "-subj", "/CN=x", "-out", out, check=True)
        return out.read_bytes()


NOT_A_CSR = "証明書発行要求 (CSR) ではありません"
BAD_CSRS: dict[str, tuple[Callable[[], bytes], str]] = {
    "garbage": (lambda: b"this is not a certificate request at all", NOT_A_CSR),
    "empty": (lambda: b"   \n", "空です"),
    "wrong_pem_label": (_certificate_pem, "'CERTIFICATE' が指定されました"),
    "bad_signature": (_bad_signature, "署名を検証できません"),
    "rsa_1024": (lambda: make_csr(rsa_key(1024)), "2048 ビット以上"),
    "truncated_der": (lambda: make_csr(encoding=serialization.Encoding.DER)[:-20], NOT_A_CSR),
    "truncated_pem": (lambda: make_csr()[:200], "壊れているか"),
    "secp256k1": (lambda: make_csr(ec.generate_private_key(ec.SECP256K1())), "楕円曲線 secp256k1 は受け付けません"),
    "sha1": (_sha1_csr, "弱すぎます"),
    "huge": (lambda: b"-----BEGIN CERTIFICATE REQUEST-----\n" + b"A" * 70_000, "大きすぎます"),
}


@pytest.mark.parametrize("case", sorted(BAD_CSRS))
def test_parse_csr_rejects_with_clear_message(case: str) -> None:
    build, message = BAD_CSRS[case]
    with pytest.raises(InvalidCsr) as info:
        parse_csr(build())
    assert message in info.value.message


def _counts(app: Flask) -> tuple[int, int, int]:
    with app.app_context():
        s = get_session()
        return (s.scalar(select(func.count()).select_from(Certificate)) or 0,
                s.scalar(select(func.count()).select_from(BusinessSystem)) or 0,
                s.scalar(select(func.count()).select_from(AuditEvent).where(
                    AuditEvent.action == "certificate.csr_rejected")) or 0)


@pytest.mark.parametrize("case", ["garbage", "wrong_pem_label", "bad_signature", "rsa_1024", "truncated_der"])
def test_api_rejects_bad_csr_and_writes_nothing(app: Flask, api: FlaskClient, case: str) -> None:
    build, message = BAD_CSRS[case]
    before = _counts(app)
    data = dict(BUSINESS)
    from io import BytesIO

    response = api.post("/api/v1/business-server-certificates",
                        data=dict(data, csr=(BytesIO(build()), "certreq.txt")),
                        content_type="multipart/form-data")
    assert response.status_code == 400
    body = response.get_json()
    assert body["error"] == "invalid_csr" and message in body["message"]
    after = _counts(app)
    assert after[0] == before[0] and after[1] == before[1], "a rejected CSR left rows behind"
    assert after[2] == before[2] + 1, "the rejection was not audited"


def test_huge_upload_gets_413_with_message(app: Flask, api: FlaskClient) -> None:
    from io import BytesIO

    before = _counts(app)
    response = api.post("/api/v1/business-server-certificates",
                        data=dict(BUSINESS, csr=(BytesIO(b"A" * (2 * 1024 * 1024)), "big.csr")),
                        content_type="multipart/form-data")
    assert response.status_code == 413
    assert "大きすぎます" in response.get_json()["message"]
    assert _counts(app)[:2] == before[:2]


def test_json_without_csr_or_with_bad_fields_is_400(api: FlaskClient) -> None:
    response = api.post("/api/v1/business-server-certificates", json=dict(BUSINESS))
    assert response.status_code == 400 and "csr" in response.get_json()["message"]
    response = api.post("/api/v1/business-server-certificates", data="not json", content_type="application/json")
    assert response.status_code == 400
    for field, value, message in [("business_id", "5", "two digits"), ("top_url", "ftp://x.jp/", "https"),
                                  ("email", "no-at-sign", "(email)"), ("phone", "03(1234)", "digits"),
                                  ("name", "", "required"), ("business_id", 5, "two digits")]:
        payload = dict(BUSINESS, csr=make_csr().decode())
        payload[field] = value
        response = api.post("/api/v1/business-server-certificates", json=payload, headers={"Accept-Language": "en"})
        assert response.status_code == 400, field
        assert message in response.get_json()["message"], (field, response.get_json())


# --- what a CSR may ask for: only the business system's registered host names, subjects checked not cut ---

BIZ34 = dict(BUSINESS, business_id="34", top_url="https://biz34.example.jp/top",
             operator_admin_url="https://biz34.example.jp/admin", personalize_url="https://biz34.example.jp/perso")


def _csr_for(cn: str | None = None, *, sans: tuple[str, ...] = (), **attrs: str) -> bytes:
    """A CSR with the usual subject, ``cn`` (None: no CN) and ``attrs`` (C, ST, L, O, OU) overriding it."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    oids = {"C": NameOID.COUNTRY_NAME, "ST": NameOID.STATE_OR_PROVINCE_NAME, "L": NameOID.LOCALITY_NAME,
            "O": NameOID.ORGANIZATION_NAME, "OU": NameOID.ORGANIZATIONAL_UNIT_NAME}
    values = {"C": "JP", "ST": "tokyo", "L": "minamiedo", "O": "ICS", "OU": "minamiedo", **attrs}
    names = [x509.NameAttribute(oids[k], v) for k, v in values.items()]
    if cn is not None:
        names.append(x509.NameAttribute(NameOID.COMMON_NAME, cn, _validate=False))  # clients send long CNs too
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(names))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(s) for s in sans]), critical=False)
    return builder.sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256()).public_bytes(
        serialization.Encoding.PEM)


def _register_biz34(api: FlaskClient) -> None:
    payload = {k: v for k, v in BIZ34.items() if k != "business_id"}
    assert api.put("/api/v1/business-systems/34", json=payload).status_code == 201


UNREGISTERED: dict[str, tuple[Callable[[], bytes], tuple[str, ...]]] = {
    "foreign_cn": (lambda: _csr_for("www.google.com"), ("www.google.com", "biz34.example.jp")),
    "foreign_san": (lambda: _csr_for("biz34.example.jp", sans=("biz34.example.jp", "www.google.com")),
                    ("www.google.com",)),
    "wildcard_cn": (lambda: _csr_for("*.example.jp"), ("*.example.jp", "ワイルドカード")),
    "wildcard_of_registered": (lambda: _csr_for("*.biz34.example.jp"), ("*.biz34.example.jp", "ワイルドカード")),
    "too_long_o": (lambda: _csr_for("biz34.example.jp", O="O" * 65), ("組織(O)", "65", "64")),
    "nul_in_ou": (lambda: _csr_for("biz34.example.jp", OU="sales\x00evil"), ("部門名(OU)", "制御文字", "\\u0000")),
    "escape_in_l": (lambda: _csr_for("biz34.example.jp", L="minamiedo\x1b[31m"), ("市区町村(L)", "制御文字")),
    "bidi_override_in_cn": (lambda: _csr_for("biz34.example.jp\u202e"), ("一般名(CN)", "制御文字")),
    "other_country": (lambda: _csr_for("biz34.example.jp", C="US"), ("国名(C)", "US")),
}


@pytest.mark.parametrize("case", sorted(UNREGISTERED))
def test_api_refuses_names_and_subjects_a_csr_may_not_ask_for(app: Flask, api: FlaskClient, case: str) -> None:
    _register_biz34(api)
    build, fragments = UNREGISTERED[case]
    before = _counts(app)
    response = api.post("/api/v1/business-server-certificates", json=dict(BIZ34, csr=build().decode()))
    assert response.status_code == 400, response.get_json()
    body = response.get_json()
    assert body["error"] == "invalid_csr"
    for fragment in fragments:
        assert fragment in body["message"], (fragment, body["message"])
    after = _counts(app)
    assert after[0] == before[0], "a certificate was issued"
    assert after[2] == before[2] + 1, "the refusal was not audited"


def test_registered_cn_is_issued_with_the_subject_as_given(api: FlaskClient) -> None:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    _register_biz34(api)
    exact = "O" * 64  # the RFC 5280 upper bound itself is fine, and is not cut
    response = api.post("/api/v1/business-server-certificates",
                        json=dict(BIZ34, csr=_csr_for("BIZ34.example.jp", O=exact).decode()))
    assert response.status_code == 201, response.get_json()
    cert = x509.load_der_x509_certificate(api.get(f"/api/v1/certificates/{response.get_json()['serial']}/der").data)
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == exact
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "biz34.example.jp"
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["biz34.example.jp"]
    # Without a CN the first registered host becomes the CN; the SAN still names only registered hosts.
    response = api.post("/api/v1/business-server-certificates", json=dict(BIZ34, csr=_csr_for(None).decode()))
    assert response.status_code == 201, response.get_json()
    assert response.get_json()["sans"] == ["DNS:biz34.example.jp"]


def test_web_ui_confirmation_refuses_an_unregistered_cn(app: Flask, admin_client: FlaskClient,
                                                       api: FlaskClient) -> None:
    import io

    from tests.conftest import csrf_token

    _register_biz34(api)
    before = _counts(app)
    page = admin_client.get("/admin/business-server-certificates/new").get_data(as_text=True)
    data: dict[str, object] = dict(BIZ34, csrf_token=csrf_token(page),
                                   csr=(io.BytesIO(_csr_for("www.google.com")), "certreq.txt"))
    response = admin_client.post("/admin/business-server-certificates/confirm", data=data,
                                 content_type="multipart/form-data")
    assert response.status_code == 400
    html = response.get_data(as_text=True)
    assert "www.google.com" in html and "登録されたホスト名ではない" in html
    assert _counts(app)[0] == before[0] and _counts(app)[2] == before[2] + 1


def test_cli_refuses_an_unregistered_cn(app: Flask, api: FlaskClient, tmp_path: Path) -> None:
    _register_biz34(api)
    csr = tmp_path / "google.csr"
    csr.write_bytes(_csr_for("www.google.com"))
    args = ["cert", "issue-business-server", "--csr", str(csr)]
    for field, value in BIZ34.items():
        args += [f"--{field.replace('_', '-')}", value]
    before = _counts(app)
    result = app.test_cli_runner().invoke(args=args)
    assert result.exit_code != 0 and "www.google.com" in result.output, result.output
    assert _counts(app)[0] == before[0]


def test_ssl_certificate_of_a_business_system_names_only_its_registered_hosts(api: FlaskClient) -> None:
    _register_biz34(api)
    refused = api.post("/api/v1/ssl-certificates", json={"tenant": "system", "business_id": "34",
                                                         "hosts": ["biz34.example.jp", "www.google.com"]})
    assert refused.status_code == 400 and "www.google.com" in refused.get_json()["message"]
    issued = api.post("/api/v1/ssl-certificates", json={"tenant": "system", "business_id": "34",
                                                        "hosts": "biz34.example.jp"})
    assert issued.status_code == 201, issued.get_json()
    # The system moves to another host: reissuing the old certificate would name a host no longer registered.
    moved = {k: v.replace("biz34.example.jp", "new34.example.jp") for k, v in BIZ34.items() if k != "business_id"}
    assert api.put("/api/v1/business-systems/34", json=moved).status_code == 200
    again = api.post(f"/api/v1/ssl-certificates/{issued.get_json()['serial']}/reissue", json={})
    assert again.status_code == 400 and "biz34.example.jp" in again.get_json()["message"]
    # A terminal's certificate is bound to no business system: its host names are the administrator's choice.
    terminal = api.post("/api/v1/ssl-certificates", json={"tenant": "system", "terminal": "t34",
                                                          "hosts": "t34.example.jp"})
    assert terminal.status_code == 201


def test_ssl_certificate_subject_is_refused_not_cut_when_the_tenant_name_is_too_long(api: FlaskClient) -> None:
    long_name = "長" * 65
    created = api.post("/api/v1/tenants", json={"code": "long65", "name": long_name, "kind": "municipality"})
    assert created.status_code == 201, created.get_json()
    response = api.post("/api/v1/ssl-certificates", json={"tenant": "long65", "terminal": "t1",
                                                          "hosts": "t1.example.jp"})
    assert response.status_code == 400, response.get_json()
    assert "組織(O)" in response.get_json()["message"] and "65" in response.get_json()["message"]


def test_a_registered_host_too_long_for_a_cn_is_named_in_the_san_only(api: FlaskClient) -> None:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    long_host = "a" * 60 + ".example.jp"  # 71 characters: a valid host name, too long for a CN (64)
    system = dict(BIZ34, top_url=f"https://{long_host}/", operator_admin_url=f"https://{long_host}/admin",
                  personalize_url=f"https://{long_host}/perso")
    response = api.post("/api/v1/business-server-certificates", json=dict(system, csr=_csr_for(None).decode()))
    assert response.status_code == 201, response.get_json()
    cert = x509.load_der_x509_certificate(api.get(f"/api/v1/certificates/{response.get_json()['serial']}/der").data)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME) == []  # not a cut host name
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == [long_host]
    # Asking for it as the CN is refused as too long, not cut.
    refused = api.post("/api/v1/business-server-certificates", json=dict(system, csr=_csr_for(long_host).decode()))
    assert refused.status_code == 400 and "71" in refused.get_json()["message"]


def test_csr_refusals_speak_the_callers_language(api: FlaskClient) -> None:
    """The CSR's checks answer in Japanese by default and in English when asked, like every other message."""
    payload = dict(BUSINESS, csr="this is not a certificate request at all")
    japanese = api.post("/api/v1/business-server-certificates", json=payload).get_json()["message"]
    english = api.post("/api/v1/business-server-certificates", json=payload,
                       headers={"Accept-Language": "en"}).get_json()["message"]
    assert "証明書発行要求 (CSR) ではありません" in japanese
    assert english.startswith("Not a CSR: expected PEM") and not any("\u3040" <= ch <= "\u30ff" for ch in english)


@pytest.mark.parametrize(("field", "value"), [
    ("name", "利用環境設定\u202eexe.gpj"),  # a right-to-left override: displays as something else
    ("admin_org", "BCS\u2066"),
    ("top_url", "https://user:secret@biz.example.jp/top"),  # credentials in a URL
    ("personalize_url", "https://user@biz.example.jp/perso"),
])
def test_business_system_fields_refuse_bidi_controls_and_url_credentials(api: FlaskClient, field: str,
                                                                          value: str) -> None:
    payload = dict(BUSINESS, csr=make_csr().decode())
    payload[field] = value
    response = api.post("/api/v1/business-server-certificates", json=payload)
    assert response.status_code == 400, response.get_json()
    assert response.get_json()["error"] == "invalid_input"
    assert "secret" not in response.get_json()["message"]
    assert api.get("/api/v1/business-systems/05").status_code == 404  # nothing written
