"""Both services driven from ``docs/openapi.json`` with generated input: no 5xx but the documented
ones, and every response valid against the description.

An equivalent of a schema-driven fuzzer on a fixed small budget: for each documented operation of
the broker's and a node's JSON API, ``EXAMPLES`` requests with generated bodies (random JSON
values, and hostile mutations of a valid body) or query parameters, with and without a valid
token. Every status must be one the operation documents, 500 never, and a JSON response must
match the documented schema (``$ref``, ``type``, ``required``, ``properties``,
``additionalProperties``, ``items``, ``enum``, ``const``, ``oneOf``, ``minimum``).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import aiohttp

from federation.tools.fuzzbench import mutate, random_json
from tests.conftest import AMARA, Federation

SPEC = json.loads((Path(__file__).resolve().parent.parent / "docs" / "openapi.json").read_text())
EXAMPLES = 25
TYPES: dict[str, tuple[type, ...]] = {"string": (str,), "integer": (int,), "number": (int, float),
                                      "boolean": (bool,), "object": (dict,), "array": (list,),
                                      "null": (type(None),)}


def resolve(node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        found: Any = SPEC
        for part in node["$ref"].removeprefix("#/").split("/"):
            found = found[part]
        node = found
    return node


def problems(value: Any, schema: dict[str, Any], where: str = "$") -> list[str]:
    """Where ``value`` breaks ``schema`` (the subset of JSON Schema the description uses)."""
    schema = resolve(schema)
    if "oneOf" in schema:
        matching = [s for s in schema["oneOf"] if not problems(value, s, where)]
        return [] if len(matching) == 1 else [f"{where}: matches {len(matching)} of oneOf"]
    found: list[str] = []
    kinds = schema.get("type")
    if kinds is not None:
        allowed = tuple(t for k in ([kinds] if isinstance(kinds, str) else kinds) for t in TYPES[k])
        if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
            return [f"{where}: expected {kinds}, got {type(value).__name__}"]
    if "const" in schema and value != schema["const"]:
        found.append(f"{where}: expected {schema['const']!r}")
    if "enum" in schema and value not in schema["enum"]:
        found.append(f"{where}: {value!r} not in {schema['enum']}")
    if "minimum" in schema and isinstance(value, int | float) and value < schema["minimum"]:
        found.append(f"{where}: below {schema['minimum']}")
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        found += [f"{where}.{name}: required" for name in schema.get("required", []) if name not in value]
        for name, item in value.items():
            if name in properties:
                found += problems(item, properties[name], f"{where}.{name}")
            elif schema.get("additionalProperties") is False:
                found.append(f"{where}.{name}: not described")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            found += problems(item, schema["items"], f"{where}[{i}]")
    return found


def operations(service: str) -> list[tuple[str, str, dict[str, Any]]]:
    out = []
    for path, item in SPEC["paths"].items():
        for method, op in item.items():
            services = op.get("x-service", [])
            services = services if isinstance(services, list) else [services]
            if service in services and (path.startswith("/v1/") or path == "/healthz"):
                out.append((method.upper(), path, op))
    return out


def body_for(rng: random.Random) -> bytes:
    valid = json.dumps({"identity": AMARA, "purpose": "child_protection_enquiry"}).encode()
    choice = rng.randrange(3)
    if choice == 0:
        return json.dumps(random_json(rng)).encode()
    if choice == 1:
        return mutate(rng, valid)
    identity = {k: random_json(rng) if rng.random() < 0.3 else v for k, v in AMARA.items()}
    return json.dumps({"identity": identity, "purpose": random_json(rng), "query": random_json(rng)}).encode()


def params_for(rng: random.Random, op: dict[str, Any]) -> dict[str, str]:
    values = ["0", "1", "-1", "999999999999999999999", "x", "", "3", "1e3", "\u0000"]
    return {p["name"]: rng.choice(values) for p in op.get("parameters", []) if rng.random() < 0.8}


async def test_both_services_answer_generated_requests_as_described(federation: Federation) -> None:
    """Proves no generated request gets a 500 or an undocumented status from the broker or a node,
    and every JSON response matches its documented schema."""
    rng = random.Random(14)
    tokens = {"search": federation.token(), "auditor": federation.token(role="auditor")}
    bases = {"broker": federation.broker_url, "node": federation.node_url("alpha")}
    failures: list[str] = []
    async with aiohttp.ClientSession() as session:
        for service, base in bases.items():
            for method, path, op in operations(service):
                for _ in range(EXAMPLES):
                    token = rng.choice([None, tokens["search"], tokens["auditor"]])
                    headers = {"Authorization": f"Bearer {token}"} if token else {}
                    kwargs: dict[str, Any] = {"headers": headers}
                    if method == "POST":
                        kwargs["data"] = body_for(rng)
                        headers["Content-Type"] = "application/json"
                    else:
                        kwargs["params"] = params_for(rng, op)
                    async with session.request(method, base + path, **kwargs) as response:
                        status, kind, text = response.status, response.content_type, await response.text()
                    documented = resolve(op["responses"].get(str(status), {}))
                    where = f"{service} {method} {path} -> {status}"
                    if (status >= 500 and status != 503) or str(status) not in op["responses"]:
                        failures.append(f"{where}: not documented ({text[:120]!r})")
                        continue
                    content = documented.get("content", {})
                    if kind in ("application/json", "application/problem+json"):
                        schema = content.get(kind, {}).get("schema")
                        if schema is not None:
                            failures += [f"{where}: {p}" for p in problems(json.loads(text), schema)]
    assert [] == failures


def test_the_schema_check_finds_what_it_should() -> None:
    """Proves the schema check used above rejects a wrong health document and accepts a right one."""
    health = SPEC["paths"]["/healthz"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    good = {"status": "ok", "id": "alpha", "role": "node", "trust_list_version": 1}
    assert [] == problems(good, health)
    assert ["$.role: required", "$.status: 'fine' not in ['ok', 'degraded']"] == problems(
        {"status": "fine", "id": "alpha", "trust_list_version": 1}, health)
