"""The broker's aiohttp application: the search API, the practitioners' pages, logs and metrics.

``create_app`` wires the parts together; ``broker.api`` (the JSON API) and ``broker.web`` (the
pages, which call the API's search) never import this module.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from broker import admission, check_api, check_pages, ratelimit, sessions
from broker import web as pages
from broker.api import BROKER, Broker, handle_health, handle_search
from broker.channel import Channels, Counters, Link
from broker.config import BrokerConfig
from broker.demo_idp import DemoIdentityProvider
from federation import metrics
from federation.errors import ConfigError
from trust import logapi, oidc, tls

KEEPALIVE_SECONDS = 120.0  # pooled HTTP connections to nodes (the fallback path) survive idle minutes


async def _client(app: web.Application) -> AsyncIterator[None]:
    broker = app[BROKER]
    tls_files = broker.config.tls
    # No cap on connections (the default 100 queues requests against each node's deadline once
    # searches are in flight to many nodes), and pooled connections kept through idle spells.
    context = tls.client_context(tls_files, bind=lambda: broker.trust.current) if tls_files else None
    connector = aiohttp.TCPConnector(ssl=context if context is not None else True, limit=0,
                                     keepalive_timeout=KEEPALIVE_SECONDS)
    tracing = aiohttp.TraceConfig()

    async def opened(*_: object) -> None:
        broker.metrics.connections.inc()

    tracing.on_connection_create_end.append(opened)
    broker.session = aiohttp.ClientSession(connector=connector, trace_configs=[tracing])
    if broker.config.node_channel:
        link = Link(context, (lambda: broker.trust.current) if context is not None else None)
        broker.channels = Channels(broker.session, link, broker.config.id, Counters(
            opened=lambda node: broker.metrics.channels_opened.inc(node),
            dropped=lambda node: broker.metrics.dropped.inc(node)))
        broker.channels.warm(broker.trust.current.with_role("node"))

    try:
        async with broker.trust.refreshing(broker.config.trust_refresh_seconds):
            yield
    finally:
        if broker.channels is not None:
            await broker.channels.close()
        await broker.session.close()


def _oidc(config: BrokerConfig) -> oidc.OpenIdSignIn | None:
    """OpenID sign-in when the config registers the broker with providers (secrets from the environment)."""
    if not config.oidc_clients:
        return None
    clients = {}
    for issuer, entry in config.oidc_clients.items():
        secret_env = entry.get("client_secret_env")
        secret = os.environ.get(secret_env) if secret_env else None
        if secret_env and not secret:
            raise ConfigError(f"oidc_clients.{issuer}.client_secret_env: variable {secret_env} is not set")
        clients[issuer] = oidc.OidcClient(entry["client_id"], secret)
    return oidc.OpenIdSignIn(clients, (config.public_url or "").rstrip("/") + oidc.CALLBACK_PATH,
                             session_seconds=config.session_max_seconds)


def _add_pages_and_metrics(app: web.Application, broker: Broker) -> None:
    config = broker.config
    folder = config.unsafe_demo_identity_provider
    idp = DemoIdentityProvider(folder, config.audience) if folder is not None else None
    store = sessions.create_store(config.redis_url, config.session_idle_seconds,
                                  prefix=f"signpost:session:{broker.trust.current.federation}",
                                  timeout_seconds=config.redis_timeout_seconds)
    pages.add_routes(app, store, idp, _oidc(config))
    metrics.install(app, broker.metrics)


def create_app(config: BrokerConfig) -> web.Application:
    """The broker's aiohttp application."""
    app = web.Application(client_max_size=config.body_limit)
    app[BROKER] = Broker(config)
    app.router.add_post("/v1/search", handle_search)
    app.router.add_get("/healthz", handle_health)
    _add_pages_and_metrics(app, app[BROKER])
    logapi.install(app, app[BROKER].audit)
    app.cleanup_ctx.append(_client)
    admission.install(app, config.max_searches_in_flight, config.max_loop_lag_seconds)
    check_api.install(app)  # /v1/checks and the check pages' follow-up task, after the HTTP client
    check_pages.add_routes(app)  # "Ask this authority to check" and "Your checks"
    ratelimit.install(app, config.redis_url,
                      ratelimit.FollowingLimits(lambda: app[BROKER].trust.current, config.rate_limits),
                      key=ratelimit.pseudonym_key(app[BROKER].key),
                      prefix=f"signpost:rl:{app[BROKER].trust.current.federation}",
                      timeout_seconds=config.redis_timeout_seconds)
    return app
