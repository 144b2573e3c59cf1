"""What every HTML page a Signpost service serves must carry: safety headers, session cookies and
the shared stylesheet.

The broker's practitioner pages and a node's staff pages both use these, so they cannot drift
apart. Pages use no script and no inline style (the CSP says so); nothing they serve may be
cached; session cookies are ``HttpOnly`` and use the ``__Host-`` prefix with ``Secure`` except
over plain HTTP on loopback (development and the demo), where a browser would refuse them.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from importlib import resources
from typing import Final

from aiohttp import web

CSP: Final = ("default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
              "frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), interest-cohort=()",
}
LOOPBACK_HOSTS: Final = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})


def add_safety_headers(headers: MutableMapping[str, str]) -> None:
    """The safety headers (a handler's own value wins) and ``Cache-Control: no-store`` (always)."""
    for name, value in SECURITY_HEADERS.items():
        headers.setdefault(name, value)
    headers["Cache-Control"] = "no-store"


def loopback_http(request: web.Request) -> bool:
    """Whether ``request`` came over plain HTTP to a loopback host name."""
    host = request.host
    host = host.split("]")[0] + "]" if host.startswith("[") else host.rsplit(":", 1)[0]
    return not request.secure and host in LOOPBACK_HOSTS


def cookie_name(request: web.Request, secure: str, loopback: str) -> str:
    """``loopback`` over plain HTTP on loopback, else ``secure`` (a ``__Host-`` name)."""
    return loopback if loopback_http(request) else secure


SHARED_STYLESHEET: Final = "govuk.css"
"""The GOV.UK patterns both services' pages are drawn with (``federation/static/govuk.css``)."""


def stylesheet(request: web.Request, own: Mapping[str, tuple[str, str]]) -> web.Response:
    """``GET /static/{name}``: the shared stylesheet, or one of the service's ``own`` stylesheets
    (name: package and path inside it); any other name is 404."""
    name = request.match_info["name"]
    package, path = ("federation", f"static/{SHARED_STYLESHEET}") if name == SHARED_STYLESHEET else own.get(
        name, ("", ""))
    if not package:
        raise web.HTTPNotFound()
    css = resources.files(package).joinpath(path).read_bytes()
    return web.Response(body=css, content_type="text/css", charset="utf-8")
