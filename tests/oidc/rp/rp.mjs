// A business system's login with panva's openid-client (shares no code with the server):
//   node rp.mjs start  <issuer> <client_id> <redirect_uri> <ca.pem>                  -> JSON {url, verifier, state, nonce}
//   node rp.mjs finish <issuer> <client_id> <callback_url> <ca.pem> <cert> <key> <verifier> <state> <nonce>
//                                                                                     -> JSON {id_token_claims, userinfo, access_token}
// The client authenticates with its certificate (RFC 8705 tls_client_auth) through an undici Agent.
import { readFileSync } from "node:fs";
import * as client from "openid-client";
import { Agent, fetch as undiciFetch } from "undici";

const [mode, issuer, clientId, third, caPath, certPath, keyPath, verifier, state, nonce] = process.argv.slice(2);
const connect = { ca: readFileSync(caPath) };
if (certPath) {
  connect.cert = readFileSync(certPath);
  connect.key = readFileSync(keyPath);
}
const dispatcher = new Agent({ connect });
const customFetch = (url, options) => undiciFetch(url, { ...options, dispatcher });

const config = await client.discovery(new URL(issuer), clientId, { use_mtls_endpoint_aliases: true },
  client.TlsClientAuth(), { [client.customFetch]: customFetch });
config[client.customFetch] = customFetch;

if (mode === "start") {
  const verifierNew = client.randomPKCECodeVerifier();
  const challenge = await client.calculatePKCECodeChallenge(verifierNew);
  const stateNew = client.randomState();
  const nonceNew = client.randomNonce();
  const url = client.buildAuthorizationUrl(config, {
    redirect_uri: third, scope: "openid profile", code_challenge: challenge, code_challenge_method: "S256",
    state: stateNew, nonce: nonceNew,
  });
  console.log(JSON.stringify({ url: url.href, verifier: verifierNew, state: stateNew, nonce: nonceNew }));
} else {
  const tokens = await client.authorizationCodeGrant(config, new URL(third), {
    pkceCodeVerifier: verifier, expectedState: state, expectedNonce: nonce, idTokenExpected: true,
  });
  const claims = tokens.claims();
  const info = await client.fetchUserInfo(config, tokens.access_token, claims.sub);
  console.log(JSON.stringify({ id_token_claims: claims, userinfo: info, access_token: tokens.access_token }));
}
