"""``docs/openapi.json`` against the running servers: every documented route exists, and every
route the servers register is documented."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from tests.conftest import Federation
from tests.webfed import web_federation

__all__ = ["web_federation"]

SPEC = json.loads((Path(__file__).resolve().parent.parent / "docs" / "openapi.json").read_text())
METHODS = ("get", "post", "put", "patch", "delete")


def documented(service: str) -> set[tuple[str, str]]:
    found = set()
    for path, item in SPEC["paths"].items():
        for method in METHODS:
            op = item.get(method)
            if op is None:
                continue
            services = op["x-service"] if isinstance(op["x-service"], list) else [op["x-service"]]
            if service in services:
                found.add((method.upper(), path))
    return found


def registered(app: web.Application) -> set[tuple[str, str]]:
    return {(route.method, route.resource.canonical) for route in app.router.routes()
            if route.method != "HEAD" and route.resource is not None}


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if "$ref" in node else []
        return own + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def test_the_description_is_openapi_3_1_and_every_reference_resolves() -> None:
    """Proves the file is an OpenAPI 3.1 document whose $refs all point somewhere."""
    def resolve(ref: str) -> Any:
        node: Any = SPEC
        for part in ref.removeprefix("#/").split("/"):
            node = node[part]
        return node

    assert "3.1.0" == SPEC["openapi"]
    assert [] == [r for r in _refs(SPEC) if not r.startswith("#/") or resolve(r) is None]


async def test_broker_and_node_routes_match_the_description(web_federation: Federation) -> None:
    """Proves the documented routes and the routes the real broker and node register are the same."""
    broker = web_federation.runners["broker"].app
    node = web_federation.runners["leeds"].app
    for service, app in (("broker", broker), ("node", node)):
        assert {"undocumented": set(), "missing": set()} == {
            "undocumented": registered(app) - documented(service),
            "missing": documented(service) - registered(app),
        }, service


async def test_every_documented_route_answers(web_federation: Federation) -> None:
    """Proves each documented route answers on the running servers (not 404 or 405)."""
    bases = {"broker": web_federation.broker_url, "node": web_federation.node_url("leeds")}
    seen = {}
    async with aiohttp.ClientSession() as session:
        for service, base in bases.items():
            for method, path in sorted(documented(service)):
                url = base + path.replace("{name}", "govuk.css").replace("{issuer}", "leeds-idp").replace(
                    "{check_id}", "00000000-0000-4000-8000-000000000000")
                async with session.request(method, url, allow_redirects=False,
                                           data={} if method == "POST" else None) as response:
                    seen[(service, method, path)] = response.status
    assert {} == {k: v for k, v in seen.items() if v in (404, 405)}
