"""``signpost broker serve``, and ``signpost search``: a search through a broker from the command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from pathlib import Path
from typing import Any

import aiohttp

from broker.app import create_app
from broker.config import BrokerConfig
from federation import config as configfile
from federation.errors import SignpostError
from federation.http import serve, setup_logging
from federation.tools import memberconfig
from federation.tools.render import answer_text
from trust import tls


def cmd_broker_serve(args: argparse.Namespace) -> int:
    setup_logging(args.verbose)

    config = configfile.load(BrokerConfig, Path(args.config))
    serve_tls = config.tls is not None and config.serve_tls
    context = tls.server_context(config.tls, require_client=False) if config.tls and serve_tls else None
    serve(create_app(config), config.host, config.port, context)
    return 0


def cmd_broker_init(args: argparse.Namespace) -> int:
    path = memberconfig.broker_config(Path(args.dir), args.id, federation=Path(args.federation)
                                      if args.federation else None, port=args.port, host=args.host,
                                      trust_list_url=args.trust_list_url, redis_url=args.redis_url,
                                      public_url=args.public_url, force=args.force)
    print(f"Wrote {path}; read it through, then: signpost broker serve --config {path}")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    token = args.token or os.environ.get("SIGNPOST_TOKEN")
    if not token:
        raise SignpostError("give --token or set SIGNPOST_TOKEN")
    ident = {k: getattr(args, k) for k in ("nhs_number", "upn", "given_name", "family_name",
                                             "date_of_birth", "sex", "postcode") if getattr(args, k)}
    body: dict[str, Any] = {"identity": ident, "purpose": args.purpose}
    if args.on_behalf_of:
        name, org, role, phone = ([*args.on_behalf_of.split("|"), "", "", "", ""])[:4]
        body["on_behalf_of"] = {"name": name, "organisation": org, "role": role, "phone": phone}
    contact = {k: v for k, v in (("email", args.contact_email), ("phone", args.contact_phone)) if v}
    if contact:
        body["contact"] = contact

    async def go() -> tuple[int, Any]:
        connector = aiohttp.TCPConnector(ssl=tls.plain_client_context(Path(args.ca))) if args.ca else None
        async with aiohttp.ClientSession(connector=connector) as session, session.post(
            args.broker.rstrip("/") + "/v1/search", json=body,
            headers={"Authorization": f"Bearer {token}"},
        ) as response:
            return response.status, await response.json(content_type=None)

    try:
        status, answer = asyncio.run(go())
    except (aiohttp.ClientError, OSError) as exc:
        raise SignpostError(
            f"--broker: cannot reach {args.broker} ({exc.__class__.__name__}: {exc})") from exc
    except ValueError as exc:
        raise SignpostError(f"--broker: {args.broker} did not answer with JSON") from exc
    if args.json or status != 200:
        print(json.dumps(answer, indent=2))
        return 0 if status == 200 else 1
    print(answer_text(answer))
    return 0
