"""Languages of apdl's UI: Japanese message ids, English from apdl/translations (Flask-Babel).

``?lang=en`` or ``?lang=ja`` switches and is remembered in a cookie; otherwise Japanese (the business-system
API also follows ``Accept-Language``). Commands (``flask --app apdl.app apdl ...``) follow the shell's locale, as
opauth's do (``LANG=en_US.UTF-8``).
"""

from __future__ import annotations

import os
from pathlib import Path

from flask import Flask, Response, request
from flask_babel import Babel, get_locale

LANGUAGES = ("ja", "en")
LANG_COOKIE = "apdl_lang"
TRANSLATIONS_DIR = Path(__file__).resolve().parent / "translations"

babel = Babel()


def select_locale() -> str:
    """``?lang=``, then the cookie, then Japanese; a machine caller of ``/api/`` (no cookie) may also ask with
    ``Accept-Language`` (a browser's is not followed: the screens are Japanese unless the operator switches)."""
    for candidate in (request.args.get("lang"), request.cookies.get(LANG_COOKIE)):
        if candidate in LANGUAGES:
            return candidate
    if request.path.startswith("/api/"):
        return request.accept_languages.best_match(LANGUAGES, default="ja") or "ja"
    return "ja"


def shell_language() -> str:
    """The language of a command: the shell's locale (LC_ALL, LC_MESSAGES, LANG), Japanese unless English."""
    for variable in ("LC_ALL", "LC_MESSAGES", "LANG"):
        value = os.environ.get(variable, "")
        if value:
            language = value.split("_")[0].split(".")[0].lower()
            return language if language in LANGUAGES else "ja"
    return "ja"


def init_app(app: Flask) -> None:
    """Babel with apdl's own catalogue; a ``?lang=`` choice is kept in a cookie."""
    app.config["BABEL_TRANSLATION_DIRECTORIES"] = str(TRANSLATIONS_DIR)
    app.config["BABEL_DEFAULT_LOCALE"] = "ja"
    babel.init_app(app, locale_selector=select_locale)
    app.jinja_env.globals["get_locale"] = get_locale

    @app.after_request
    def _remember(response: Response) -> Response:
        chosen = request.args.get("lang")
        if chosen in LANGUAGES:
            response.set_cookie(LANG_COOKIE, chosen, max_age=365 * 86400, samesite="Lax",
                                secure=app.config["SESSION_COOKIE_SECURE"], httponly=True)
        return response
