"""Parsing and vetting certificate signing requests (証明書発行要求ファイル).

Every way a CSR can be wrong ends in ``InvalidCsr`` with a message a person can act on.
"""

from __future__ import annotations

import re

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPublicKeyTypes
from flask_babel import lazy_gettext as _

from kernel.errors import InvalidCsr

ALLOWED_CURVES = {"secp256r1": 256, "secp384r1": 384, "secp521r1": 521}
MIN_RSA_BITS = 2048
MAX_RSA_BITS = 8192
_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----")
_CSR_LABELS = {b"CERTIFICATE REQUEST", b"NEW CERTIFICATE REQUEST"}
_WEAK_HASHES = (hashes.MD5, hashes.SHA1)


def parse_csr(data: bytes, *, max_bytes: int = 64 * 1024) -> x509.CertificateSigningRequest:
    """Load a PEM or DER CSR, verify its self-signature and key strength."""
    if not data or not data.strip():
        raise InvalidCsr(_("証明書発行要求 (CSR) が空です。"))
    if len(data) > max_bytes:
        raise InvalidCsr(_("証明書発行要求 (CSR) が大きすぎます(%(size)d バイト。最大 %(limit)d バイト)。",
                            size=len(data), limit=max_bytes))
    stripped = data.lstrip()
    if stripped.startswith(b"-----BEGIN"):
        match = _PEM_BLOCK.match(stripped)
        label = match.group(1) if match else b"?"
        if label not in _CSR_LABELS:
            raise InvalidCsr(_("PEM の 'CERTIFICATE REQUEST' ブロックを指定してください"
                               "('%(label)s' が指定されました)。", label=label.decode(errors="replace")))
        try:
            csr = x509.load_pem_x509_csr(stripped)
        except ValueError:
            raise InvalidCsr(_("PEM の CERTIFICATE REQUEST ブロックが壊れているか、途中で切れています。")) from None
    else:
        try:
            csr = x509.load_der_x509_csr(data)
        except ValueError:
            raise InvalidCsr(_("証明書発行要求 (CSR) ではありません。PEM (-----BEGIN CERTIFICATE REQUEST-----) 又は "
                               "DER (PKCS#10) で指定してください。")) from None
    try:
        public_key = csr.public_key()
    except (ValueError, UnsupportedAlgorithm):
        raise InvalidCsr(_("証明書発行要求 (CSR) の公開鍵を読み取れません(未対応の形式か、壊れています)。")) from None
    check_public_key(public_key)
    try:
        signature_hash = csr.signature_hash_algorithm
    except UnsupportedAlgorithm:
        raise InvalidCsr(_("証明書発行要求 (CSR) の署名アルゴリズムには対応していません。")) from None
    if isinstance(signature_hash, _WEAK_HASHES):
        raise InvalidCsr(_("証明書発行要求 (CSR) の署名に使われた %(hash)s は弱すぎます。SHA-256 で署名してください。",
                            hash=signature_hash.name.upper()))
    try:
        valid = csr.is_signature_valid
    except (ValueError, UnsupportedAlgorithm):
        valid = False
    if not valid:
        raise InvalidCsr(_("証明書発行要求 (CSR) の署名を検証できません(改変されたか、別の鍵で署名されています)。"))
    try:
        csr.subject.rfc4514_string()
        list(csr.extensions)
    except ValueError as exc:
        raise InvalidCsr(_("証明書発行要求 (CSR) のサブジェクト又は拡張が不正です: %(detail)s",
                           detail=str(exc))) from None
    return csr


def check_public_key(public_key: object) -> CertificateIssuerPublicKeyTypes:
    """Reject keys opauth will not certify: RSA under 2048 bits, unknown curves, other types."""
    if isinstance(public_key, rsa.RSAPublicKey):
        if public_key.key_size < MIN_RSA_BITS:
            raise InvalidCsr(_("RSA 鍵は %(min)d ビット以上にしてください(この鍵は %(bits)d ビット)。",
                                min=MIN_RSA_BITS, bits=public_key.key_size))
        if public_key.key_size > MAX_RSA_BITS:
            raise InvalidCsr(_("%(max)d ビットを超える RSA 鍵は受け付けません。", max=MAX_RSA_BITS))
        exponent = public_key.public_numbers().e
        if exponent < 65537 or exponent % 2 == 0:
            raise InvalidCsr(_("RSA の公開指数は 65537 以上の奇数にしてください。"))
        return public_key
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if public_key.curve.name not in ALLOWED_CURVES:
            raise InvalidCsr(_("楕円曲線 %(curve)s は受け付けません(P-256, P-384 又は P-521 を使ってください)。",
                               curve=public_key.curve.name))
        return public_key
    if isinstance(public_key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
        raise InvalidCsr(_("Ed25519/Ed448 の鍵にはまだ対応していません(ECDSA P-256/P-384 又は RSA を使ってください)。"))
    raise InvalidCsr(_("この種類の公開鍵には対応していません"
                       "(ECDSA P-256/P-384 又は 2048 ビット以上の RSA を使ってください)。"))
