"""Languages of the web UI (Flask-Babel): Japanese by default, English selectable.

Templates and code use the Japanese text as the message id (``{{ _('ログイン') }}``);
``translations/en/LC_MESSAGES/messages.po`` holds the English. ``?lang=en`` or
``?lang=ja`` on any page switches and is remembered in a cookie. See the README
("Languages") for adding strings.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from flask import Flask, current_app, g, has_request_context, request
from flask_babel import Babel, get_locale, get_translations

LANGUAGES = ("ja", "en")
DEFAULT_LANGUAGE = "ja"
LANG_COOKIE = "opauth_lang"
# Paths used by programs rather than browsers: their clients may ask for a language with Accept-Language.
MACHINE_PATHS = ("/api/", "/pki/")
# Set on the lean apps (kernel.lean_app) that serve only machine clients, e.g. the OIDC token endpoint.
MACHINE_APP = "opauth.machine_app"
TRANSLATIONS_DIR = Path(__file__).resolve().parent.parent / "translations"

babel = Babel()


def select_locale() -> str:
    """``?lang=``, then the language cookie, then (API, PKI and lean machine-app clients) Accept-Language, then
    Japanese.

    Browsers always send Accept-Language, so pages ignore it: the UI is Japanese until the
    user switches. Outside a request (CLI commands) the shell's locale decides (``LANG=en_US.UTF-8``).
    """
    if not has_request_context():
        return _shell_language()
    for candidate in (request.args.get("lang"), request.cookies.get(LANG_COOKIE)):
        if candidate in LANGUAGES:
            return candidate
    if request.path.startswith(MACHINE_PATHS) or current_app.extensions.get(MACHINE_APP):
        return request.accept_languages.best_match(LANGUAGES) or DEFAULT_LANGUAGE
    return DEFAULT_LANGUAGE


def _shell_language() -> str:
    for variable in ("LC_ALL", "LC_MESSAGES", "LANG"):
        value = os.environ.get(variable, "")
        if value:
            language = value.split("_")[0].split(".")[0].lower()
            return language if language in LANGUAGES else DEFAULT_LANGUAGE
    return DEFAULT_LANGUAGE


def current_language() -> str:
    locale = get_locale()
    return locale.language if locale is not None else DEFAULT_LANGUAGE


def _remember_language(response: Any) -> Any:
    lang = request.args.get("lang")
    if lang in LANGUAGES and request.cookies.get(LANG_COOKIE) != lang:
        response.set_cookie(LANG_COOKIE, lang, max_age=365 * 24 * 3600, httponly=True, samesite="Lax",
                            secure=bool(current_app.config.get("SESSION_COOKIE_SECURE", True)))
    return response


def _catalog() -> Any:
    """The translations of the request's language, found once per request (and again only if the language
    changes, e.g. under ``force_locale``); Flask-Babel finds them anew for every string a template shows."""
    locale = get_locale()
    held = g.get("_opauth_catalog")
    if held is None or held[0] is not locale:
        held = (locale, get_translations())
        g._opauth_catalog = held
    return held[1]


def _template_gettext(message: str) -> str:
    return str(_catalog().ugettext(message))


def _template_ngettext(singular: str, plural: str, n: int) -> str:
    return str(_catalog().ungettext(singular, plural, n))


def init_app(app: Flask) -> None:
    babel.init_app(app, locale_selector=select_locale, default_locale=DEFAULT_LANGUAGE,
                   default_translation_directories=str(TRANSLATIONS_DIR))
    # The templates' _() and ngettext(): the same catalogue as Flask-Babel's, looked up once per request.
    app.jinja_env.install_gettext_callables(  # type: ignore[attr-defined]
        gettext=_template_gettext, ngettext=_template_ngettext, newstyle=True)
    app.jinja_env.globals["current_language"] = current_language
    app.jinja_env.globals["LANGUAGES"] = LANGUAGES
    app.after_request(_remember_language)
