"""An independent relying party, Apache's mod_auth_openidc (Debian), against gunicorn over real TLS.

Apache runs unprivileged-port in the foreground from its own configuration under tmp, serving HTTPS on
127.0.0.1 with the server certificate opauth issued for business system 05 (whose registered host is
127.0.0.1). It protects /protected/, exchanges codes presenting the system's SSL通信証明書 at the token
endpoint (RFC 8705 tls_client_auth; mod_auth_openidc's ``none`` method posts ``client_id``) and shows
the claims through server-side includes. A back-channel logout delivered by ``flask oidc deliver-logouts``
ends its session. The browser is a cookie-keeping HTTPS client.

``cnf``: mod_auth_openidc 2.4.12 (Debian 12) checks an access token's ``cnf.x5t#S256`` as an OAuth 2.0 resource
server (``AuthType oauth20``, ``OIDCOAuthAccessTokenBindingPolicy enforced``): it introspects the token at opauth
(presenting its SSL通信証明書) and compares the introspected ``cnf`` with the caller's certificate fingerprint in
``TB_SSL_CLIENT_CERT_FINGERPRINT``. That variable is normally exported by mod_token_binding, which Debian does
not package; a three-line mod_lua hook (``fingerprint.lua``, the SHA-256 of the caller's certificate as
openssl computes it, base64url) exports it instead. The comparison, the refusal and the policy are
mod_auth_openidc's own code.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.helpers import BUSINESS, SUBJECT, make_csr
from tests.oidc.browser import FormBrowser
from tests.servers import _wait_for_port, flask_cli, free_port, gunicorn, instance_env

MODULES = Path("/usr/lib/apache2/modules")
LOOPBACK = x509.Name([*list(SUBJECT)[:-1], x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
NEW_PASSWORD = "Operator-Secret-2026"


def _apache() -> str:
    """The apache2 binary; the test fails (never skips) when Apache or mod_auth_openidc is missing."""
    binary = shutil.which("apache2") or ("/usr/sbin/apache2" if Path("/usr/sbin/apache2").exists() else None)
    if binary is None or not (MODULES / "mod_auth_openidc.so").exists():
        pytest.fail("apache2 and libapache2-mod-auth-openidc are required (scripts/system-deps.sh installs them)")
    return binary


@dataclass(frozen=True)
class Site:
    opauth: str
    apache: str
    ca: Path
    env: dict[str, str]
    one_time_password: str
    client_cert: Path
    client_key: Path
    other_cert: Path  # 南江戸市's SSL通信証明書 for the same system: trusted, client auth, another key
    other_key: Path
    error_log: Path
    changed: list[bool] = field(default_factory=list)  # the one-time password has been changed


def _conf(root: Path, port: int, opauth: str, ca: Path) -> str:
    modules = ["mpm_prefork", "authn_core", "authz_core", "authz_user", "mime", "include", "ssl", "socache_shmcb",
               "auth_openidc", "lua"]
    # Started as root (CI), Apache drops to www-data before serving; everything it reads then is world-readable.
    user = "User www-data\nGroup www-data\n" if os.geteuid() == 0 else ""
    loads = "".join(f"LoadModule {m}_module {MODULES / f'mod_{m}.so'}\n" for m in modules)
    return f"""ServerRoot {root}
PidFile {root}/httpd.pid
Mutex file:{root}
{user}{loads}ServerName 127.0.0.1
Listen 127.0.0.1:{port}
ErrorLog {root}/error.log
LogLevel warn auth_openidc:debug
TypesConfig /etc/mime.types
AddType text/html .shtml
DocumentRoot {root}/htdocs
SSLEngine on
SSLCertificateFile {root}/server.pem
SSLCertificateKeyFile {root}/server.key
SSLSessionCache none
# The resource server (/api) asks callers for a certificate; browsers at /protected present none.
SSLVerifyClient optional_no_ca
SSLVerifyDepth 3

# mod_auth_openidc 2.4.12 refuses discovery documents that list only auth methods it does not know
# (tls_client_auth): the provider is configured by hand from the same endpoints instead.
OIDCProviderIssuer {opauth}/oidc
OIDCProviderAuthorizationEndpoint {opauth}/oidc/authorize
OIDCProviderTokenEndpoint {opauth}/oidc/token
OIDCProviderJwksUri {opauth}/oidc/jwks.json
OIDCProviderUserInfoEndpoint {opauth}/oidc/userinfo
OIDCProviderBackChannelLogoutSupported On
OIDCCABundlePath {ca}
OIDCClientID biz-05
OIDCRedirectURI https://127.0.0.1:{port}/protected/redirect_uri
OIDCCryptoPassphrase apache-test-passphrase
OIDCProviderTokenEndpointAuth none
OIDCClientTokenEndpointCert {root}/client.pem
OIDCClientTokenEndpointKey {root}/client.key
OIDCPKCEMethod S256
OIDCScope "openid profile"
OIDCIDTokenSignedResponseAlg ES256
OIDCPassClaimsAs environment
OIDCSessionType server-cache

# The resource server: bearer tokens introspected at opauth over mutual TLS, bound to the caller's certificate.
OIDCOAuthIntrospectionEndpoint {opauth}/oidc/introspect
OIDCOAuthIntrospectionEndpointAuth none
OIDCOAuthClientID biz-05
OIDCOAuthIntrospectionEndpointCert {root}/client.pem
OIDCOAuthIntrospectionEndpointKey {root}/client.key
OIDCOAuthSSLValidateServer On
OIDCOAuthAccessTokenBindingPolicy enforced
OIDCOAuthTokenIntrospectionInterval -1

<Location /protected>
  AuthType openid-connect
  Require valid-user
</Location>
<Location /api>
  LuaHookAccessChecker {root}/fingerprint.lua fingerprint early
  AuthType oauth20
  Require valid-user
</Location>
<Directory {root}/htdocs>
  Options +Includes
  AddOutputFilter INCLUDES .shtml
</Directory>
"""


CLAIMS_PAGE = """<html><body>
<p id="sub"><!--#echo var="OIDC_CLAIM_sub" --></p>
<p id="amr"><!--#echo var="OIDC_CLAIM_amr" --></p>
<p id="acr"><!--#echo var="OIDC_CLAIM_acr" --></p>
<p id="name"><!--#echo encoding="none" var="OIDC_CLAIM_name" --></p>
<p id="iss"><!--#echo var="OIDC_CLAIM_iss" --></p>
<p id="access_token"><!--#echo var="OIDC_access_token" --></p>
</body></html>
"""

API_PAGE = """<p id="user"><!--#echo var="REMOTE_USER" --></p>\n"""

# Exports the caller's certificate fingerprint the way mod_token_binding would (RFC 8705 x5t#S256).
FINGERPRINT_LUA = """
function fingerprint(r)
  local pem = r:ssl_var_lookup("SSL_CLIENT_CERT")
  if pem == nil or pem == "" then return apache2.DECLINED end
  local path = os.tmpname()
  local file = io.open(path, "w"); file:write(pem); file:close()
  local pipe = io.popen("openssl x509 -in " .. path .. " -outform DER | openssl dgst -sha256 -binary")
  local digest = pipe:read("a"); pipe:close(); os.remove(path)
  local b64 = r:base64_encode(digest):gsub("%+", "-"):gsub("/", "_"):gsub("=", "")
  r.subprocess_env["TB_SSL_CLIENT_CERT_FINGERPRINT"] = b64
  return apache2.DECLINED
end
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    binary = _apache()
    tmp = tmp_path_factory.mktemp("mod-auth-openidc")
    oport, aport = free_port(), free_port()
    opauth, apache = f"https://localhost:{oport}", f"https://127.0.0.1:{aport}"
    env = instance_env(tmp / "instance", OPAUTH_PUBLIC_BASE_URL=opauth, OPAUTH_ARGON2_TIME_COST="1",
                       OPAUTH_ARGON2_MEMORY_KIB="8192", OPAUTH_ARGON2_PARALLELISM="1")
    assert flask_cli(env, "init").returncode == 0
    root = Path(tempfile.mkdtemp(prefix="apache-oidc-"))  # outside pytest's 0700 tree: www-data reads it
    root.chmod(0o755)
    (root / "htdocs" / "protected").mkdir(parents=True)
    (root / "htdocs" / "protected" / "claims.shtml").write_text(CLAIMS_PAGE)
    (root / "htdocs" / "api").mkdir()
    (root / "htdocs" / "api" / "whoami.shtml").write_text(API_PAGE)
    (root / "fingerprint.lua").write_text(FINGERPRINT_LUA)
    server_key = ec.generate_private_key(ec.SECP256R1())
    (root / "server.key").write_bytes(server_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    (tmp / "server.csr").write_bytes(make_csr(server_key, LOOPBACK))
    system = dict(BUSINESS, top_url=f"{apache}/protected/claims.shtml", operator_admin_url=f"{apache}/admin",
                  personalize_url=f"{apache}/perso")
    args: list[str | Path] = ["cert", "issue-business-server", "--csr", tmp / "server.csr", "--format", "chain.pem",
                              "--out", root / "server.pem"]
    for name, value in system.items():
        args += [f"--{name.replace('_', '-')}", value]
    client_key = ec.generate_private_key(ec.SECP256R1())
    (root / "client.key").write_bytes(client_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    (tmp / "client.csr").write_bytes(make_csr(client_key, LOOPBACK))
    other_key = ec.generate_private_key(ec.SECP256R1())
    (tmp / "other.key").write_bytes(other_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    (tmp / "other.csr").write_bytes(make_csr(other_key, LOOPBACK))
    redirect = f"{apache}/protected/redirect_uri"
    for command in (args, ["tenant", "create", "--code", "minamiedo", "--name", "南江戸市"],
                    ["tenant", "joint-use", "05", "minamiedo"],
                    ["oidc", "client", "set", "05", "--enable", "--redirect-uri", redirect,
                     "--backchannel-logout-uri", f"{redirect}?logout=backchannel"],
                    ["ssl", "issue", "--tenant", "system", "--business-id", "05", "--host", "127.0.0.1",
                     "--csr", tmp / "client.csr", "--out", root / "client.pem"],
                    ["ssl", "issue", "--tenant", "minamiedo", "--business-id", "05", "--host", "127.0.0.1",
                     "--csr", tmp / "other.csr", "--out", tmp / "other.pem"]):
        result = flask_cli(env, *command)
        assert result.returncode == 0, (command, result.stdout, result.stderr)
    registered = flask_cli(env, "operator", "register", "--tenant", "minamiedo", "--operator-id", "OP0601",
                           "--name", "山田 太郎", "--business-ids", "05", "--csr", tmp / "server.csr")
    assert registered.returncode == 0, registered.stderr
    password = registered.stdout.split("shown once): ")[-1].strip()
    ca = root / "ca-bundle.pem"
    shutil.copy(tmp / "instance" / "tls" / "ca-bundle.pem", ca)
    for path in root.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    conf = root / "apache2.conf"
    conf.write_text(_conf(root, aport, opauth, ca))
    with gunicorn(env, oport):
        proc = subprocess.Popen([binary, "-X", "-d", str(root), "-f", str(conf)], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        try:
            _wait_for_port(proc, aport, "apache2", root / "error.log")
            yield Site(opauth=opauth, apache=apache, ca=ca, env=env, one_time_password=password,
                       client_cert=root / "client.pem", client_key=root / "client.key",
                       other_cert=tmp / "other.pem", other_key=tmp / "other.key", error_log=root / "error.log")
        finally:
            proc.terminate()
            proc.wait(timeout=30)
            shutil.rmtree(root, ignore_errors=True)


class _Browser(FormBrowser):
    """Relative redirects made absolute, and followed by hand (so each hop can be checked)."""

    # mod_auth_openidc sends only requests that accept HTML to the provider (others get 401).
    headers: ClassVar[dict[str, str]] = {"Accept-Language": "en", "Accept": "text/html"}

    def location(self, url: str, raw: str) -> str:
        return urllib.parse.urljoin(url, raw)

    def follow(self, url: str, until: str) -> tuple[str, str]:
        """GET url and follow redirects until a page is answered or the next hop starts with ``until``."""
        for _ in range(10):
            status, location, page = self.go(url)
            if status not in (301, 302, 303) or location.startswith(until):
                return (location if status in (301, 302, 303) else url), page
            url = location
        raise AssertionError(f"redirect loop at {url}")


def _claim(page: str, name: str) -> str:
    found = re.search(rf'<p id="{name}">(.*?)</p>', page, re.S)
    assert found, page[:1000]
    return found.group(1)


def _sign_in(browser: _Browser, site: Site, protected: str) -> tuple[str, str]:
    """Apache sends the browser to opauth; OP0601 logs in (changing the one-time password the first time);
    opauth's top screen resumes the authorization request; Apache exchanges the code and shows the page."""
    login, page = browser.follow(protected, until=site.opauth + "/login")
    assert login == site.opauth + "/login", (login, page[:500], site.error_log.read_text()[-3000:])
    password = NEW_PASSWORD if site.changed else site.one_time_password
    status, location, _ = browser.post_form(login, {"tenant": "minamiedo", "operator_id": "OP0601",
                                                    "password": password})
    assert status == 302, (status, location)
    if not site.changed:
        assert location.endswith("/password")
        status, location, _ = browser.post_form(location, {
            "current_password": password, "new_password": NEW_PASSWORD, "confirm_password": NEW_PASSWORD})
        assert status == 302
        site.changed.append(True)
    return browser.follow(location, until="never")


def test_mod_auth_openidc_logs_in_and_drops_its_session_on_back_channel_logout(site: Site) -> None:
    browser = _Browser(site.ca)
    protected = site.apache + "/protected/claims.shtml"
    final, page = _sign_in(browser, site, protected)
    log = site.error_log.read_text()
    assert final == protected, (final, page[:500], log[-3000:])
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", _claim(page, "sub")), page
    assert _claim(page, "amr") == "pwd" and _claim(page, "acr") == "urn:opauth:acr:password"
    assert _claim(page, "name") == "山田 太郎" and _claim(page, "iss") == site.opauth + "/oidc"
    # Apache's token request (its debug log) posted client_id and presented the SSL通信証明書 (tls_client_auth).
    token_call = next(line for line in log.splitlines() if f"url={site.opauth}/oidc/token," in line)
    assert "client_id=biz-05" in token_call and f"ssl_cert={site.client_cert}," in token_call
    assert "client_secret" not in token_call
    _, again = browser.follow(protected, until="never")  # the session holds: no trip to opauth
    assert _claim(again, "sub") == _claim(page, "sub")

    # Logging out of opauth announces it to Apache over the back channel; its session is gone.
    status, _, top = browser.go(site.opauth + "/top")
    token = re.search(r'name="csrf_token" value="([^"]+)"', top)
    assert status == 200 and token, top[:500]
    status, _, _ = browser.go(site.opauth + "/logout", {"csrf_token": token.group(1)})
    assert status in (200, 302)
    delivered = flask_cli(site.env, "oidc", "deliver-logouts", "--timeout", "5")
    assert delivered.returncode == 0, delivered.stderr
    assert "1 logout tokens delivered, 0 failed" in delivered.stdout, (delivered.stdout, delivered.stderr)
    status, location, _ = browser.go(protected)
    assert status == 302 and location.startswith(site.opauth + "/oidc/authorize?"), (status, location)


def _call_api(site: Site, token: str, cert: Path | None, key: Path | None) -> tuple[int, str]:
    """The business system's API behind Apache, called with a bearer token over the given client certificate."""
    args = ["curl", "-sS", "--cacert", str(site.ca), "-H", f"Authorization: Bearer {token}",
            "-o", "-", "-w", "\n%{http_code}", site.apache + "/api/whoami.shtml"]
    if cert is not None and key is not None:
        args += ["--cert", str(cert), "--key", str(key)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    body, _, status = done.stdout.rpartition("\n")
    return int(status), body


def test_mod_auth_openidc_as_resource_server_honours_the_certificate_binding(site: Site) -> None:
    """The access token Apache received is accepted at its API only over the certificate it is bound to."""
    browser = _Browser(site.ca)
    protected = site.apache + "/protected/claims.shtml"
    final, page = _sign_in(browser, site, protected)
    assert final == protected, (final, page[:500])
    token = _claim(page, "access_token")
    assert token.count(".") == 2, page  # a JWT access token with cnf (x5t#S256) of the SSL通信証明書

    status, body = _call_api(site, token, site.client_cert, site.client_key)
    log = site.error_log.read_text()
    assert status == 200, (status, body, log[-3000:])
    assert re.search(r'<p id="user">[A-Za-z0-9_-]{43}</p>', body), body  # the pairwise sub
    assert "matches cnf[\"x5t#S256\"]" in log
    status, body = _call_api(site, token, site.other_cert, site.other_key)  # stolen: another certificate
    assert status == 401, (status, body)
    assert "does not match cnf[\"x5t#S256\"]" in site.error_log.read_text()
    status, body = _call_api(site, token, None, None)  # stolen: no certificate at all
    assert status == 401, (status, body)
