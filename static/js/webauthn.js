// opauth WebAuthn ceremonies (生体情報登録・生体認証). Hand-written, no dependencies.
// The server's options JSON goes straight into PublicKeyCredential.parse*OptionsFromJSON and
// credential.toJSON() straight back; the server keeps the challenge and verifies everything.
(function () {
  "use strict";

  function status(root, text, isError) {
    var el = root.querySelector("[data-role=status]") || document.getElementById("webauthn-status");
    if (el) { el.textContent = text; el.className = isError ? "error" : ""; }
  }

  // Words in the page's language, keyed by DOMException name (templates/bio/_webauthn_messages.html).
  function messages() {
    var block = document.getElementById("webauthn-messages");
    try { return block ? JSON.parse(block.textContent) : {}; } catch (e) { return {}; }
  }

  // What the operator should do. The browser's own message (English, with a W3C link) is never shown;
  // the server's message is already in the user's language.
  function explain(error) {
    var words = messages();
    if (error && error.fromServer) {
      return (words.failed ? words.failed + " " : "") + error.message;
    }
    if (error && error.name === "TypeError" && error.fromFetch) { return words.network || String(error); }
    if (error && error.name && words[error.name]) { return words[error.name]; }
    return words.otherError || String(error && error.name ? error.name : error);
  }

  async function postJSON(url, body, csrf) {
    var response;
    try {
      response = await fetch(url, {
        method: "POST", credentials: "same-origin",
        headers: {"Content-Type": "application/json", "X-CSRFToken": csrf},
        body: JSON.stringify(body || {})
      });
    } catch (e) {
      e.fromFetch = true;
      throw e;
    }
    var data = {};
    try { data = await response.json(); } catch (e) { data = {message: response.statusText}; }
    if (!response.ok) {
      var failure = new Error(data.message || ("HTTP " + response.status));
      failure.fromServer = true;
      throw failure;
    }
    return data;
  }

  async function register(root, extra) {
    var csrf = root.dataset.csrf;
    var options = await postJSON(root.dataset.optionsUrl, extra, csrf);
    var publicKey = PublicKeyCredential.parseCreationOptionsFromJSON(options);
    var credential = await navigator.credentials.create({publicKey: publicKey});
    var nickname = root.querySelector("[name=nickname]");
    return postJSON(root.dataset.verifyUrl, {credential: credential.toJSON(),
                                              nickname: nickname ? nickname.value : ""}, csrf);
  }

  async function authenticate(root, extra) {
    var csrf = root.dataset.csrf;
    var options = await postJSON(root.dataset.optionsUrl, extra, csrf);
    var publicKey = PublicKeyCredential.parseRequestOptionsFromJSON(options);
    var credential = await navigator.credentials.get({publicKey: publicKey});
    return postJSON(root.dataset.verifyUrl, {credential: credential.toJSON()}, csrf);
  }

  function run(root, button, ceremony, extra) {
    button.addEventListener("click", async function (event) {
      event.preventDefault();
      if (!window.PublicKeyCredential || !PublicKeyCredential.parseRequestOptionsFromJSON) {
        status(root, messages().unsupported || "WebAuthn is not available in this browser.", true);
        return;
      }
      button.disabled = true;
      status(root, messages().waiting || "…", false);
      try {
        var result = await ceremony(root, extra ? extra() : {});
        var next = result.redirect || root.dataset.next || "/";
        window.location.assign(next);
      } catch (error) {
        status(root, explain(error), true);
        button.disabled = false;
      }
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var root = document.getElementById("webauthn");
    if (!root) { return; }
    var login = document.getElementById("bio-login");
    if (login) {
      run(root, login, authenticate, function () {
        return {tenant: document.getElementById("tenant").value,
                operator_id: document.getElementById("operator_id").value};
      });
    }
    var enrol = document.getElementById("bio-register");
    if (enrol) { run(root, enrol, register); }
    var reauth = document.getElementById("reauth-bio");
    if (reauth) {
      root.dataset.verifyUrl = root.dataset.verifyUrl + "?next=" + encodeURIComponent(root.dataset.next || "/");
      run(root, reauth, authenticate);
    }
  });
})();
