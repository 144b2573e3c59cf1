"""``signpost node ...``: serve an authority's node, import its records, purge old ones."""

from __future__ import annotations

import argparse
import functools
import os
import sqlite3
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from federation import config as configfile
from federation.commands.progress import ProgressBar, table
from federation.errors import SignpostError
from federation.http import serve, setup_logging
from federation.tools import memberconfig
from node import audit
from node.api import create_app, event_loop
from node.config import NodeConfig
from node.importer import DEFAULT_RETENTION_AGE, import_files
from node.indexing import save_for_next_start
from node.purge import purge
from node.store import Store
from trust import tls
from trust.store import read_json
from trust.trustlist import GovernanceRoot, verify


def cmd_node_serve(args: argparse.Namespace) -> int:
    setup_logging(args.verbose)

    config = configfile.load(NodeConfig, Path(args.config))
    context = tls.server_context(config.tls) if config.tls else None
    serve(create_app(config), config.host, config.port, context, loop=event_loop())
    return 0


def cmd_node_init(args: argparse.Namespace) -> int:
    path = memberconfig.node_config(Path(args.dir), args.id, federation=Path(args.federation)
                                    if args.federation else None, port=args.port, host=args.host,
                                    trust_list_url=args.trust_list_url, force=args.force)
    print(f"Wrote {path}; read it through, then: signpost node serve --config {path}")
    return 0


T = TypeVar("T")
IMPORT_NICENESS = 10
"""How much ``signpost node import`` lowers its own CPU priority unless told otherwise (``--nice``)."""


def cmd_node_import(args: argparse.Namespace) -> int:
    if not 0 <= args.nice <= 19:
        raise SignpostError(f"--nice: expected 0-19, got {args.nice}")
    if args.config:
        database = configfile.load(NodeConfig, Path(args.config)).database
    elif args.database:
        database = Path(args.database)
    else:
        raise SignpostError("give --config or --database")
    rejects = Path(args.rejects) if args.rejects else Path(args.children).with_name("rejects.csv")
    node_config = configfile.load(NodeConfig, Path(args.config)) if args.config else None
    store = Store(database)
    retention_age = _retention_age(node_config) if node_config is not None else DEFAULT_RETENTION_AGE

    bar = ProgressBar("importing")
    try:
        plain_webhooks = node_config is not None and node_config.unsafe_http_webhooks
        summary = import_files(store, Path(args.children), Path(args.involvements), full=args.full,
                               rejects_path=rejects, progress=bar.update, retention_age=retention_age,
                               unsafe_http_webhooks=plain_webhooks,
                               stage=functools.partial(_yielding, args.nice))
        logged = _audit_import(store, node_config, args, summary)
    finally:
        store.close()
        bar.finish()
    s = summary
    index, index_failure = None, ""
    if args.index:
        busy = node_config.busy_timeout_seconds if node_config is not None else 10.0
        try:
            index = _yielding(args.nice, functools.partial(
                save_for_next_start, database, s.children_added + s.children_updated + s.children_removed,
                busy_timeout_seconds=busy, today=datetime.now(UTC).date()))
        except (OSError, sqlite3.Error, SignpostError, ValueError) as exc:  # the import itself stands
            index_failure = f"{exc.__class__.__name__}: {exc}"

    def rejected(name: str) -> int:
        return sum(1 for r in s.rejects if r.file == name)

    print(table(
        ("", "accepted", "added", "updated", "unchanged", "removed", "rejected"),
        [("children", s.children_added + s.children_updated + s.children_unchanged, s.children_added,
          s.children_updated, s.children_unchanged, s.children_removed, rejected(Path(args.children).name)),
         ("involvements", s.involvements_added + s.involvements_updated + s.involvements_unchanged,
          s.involvements_added, s.involvements_updated, s.involvements_unchanged, s.involvements_removed,
          rejected(Path(args.involvements).name))],
    ))
    where = f" (see {rejects})" if s.rejected else ""
    print(f"\nrejected rows: {s.rejected}{where}   time: {s.seconds:.2f} s")
    print(f"archived (aged 18 or over, never returned): {s.children_archived}   "
          f"past retention age {s.retention_age} (deleted by the node's next purge): "
          f"{s.children_past_retention}")
    if index is not None:
        print(f"match index: {len(index.index)} children, built in {index.seconds:.2f} s and saved "
              "beside the store (the node reads it at its next start)")
    if index_failure:
        print(f"match index not saved ({index_failure}); the node builds it at its next start",
              file=sys.stderr)
    if logged:
        print(f"import summary: {logged}")
    return 0


def _yielding(nice: int, work: Callable[[], T]) -> T:
    """``work()`` on a thread whose CPU priority is lowered by ``nice``, so that a node serving
    from the same machine keeps answering promptly while a large import reads its files. Only
    that thread is lowered (Linux gives each thread its own priority), never the caller, so the
    import's final write transaction, which the node's queries wait on, is not starved;
    elsewhere, or with ``nice`` 0, ``work`` runs as it is."""
    if not nice or sys.platform != "linux":
        return work()
    outcome: list[T] = []
    failure: list[BaseException] = []

    def run() -> None:
        me = threading.get_native_id()
        try:
            os.setpriority(os.PRIO_PROCESS, me, min(19, os.getpriority(os.PRIO_PROCESS, me) + nice))
            outcome.append(work())
        except BaseException as exc:  # raised again on the caller's thread
            failure.append(exc)

    worker = threading.Thread(target=run, name="signpost-import")
    worker.start()
    worker.join()
    if failure:
        raise failure[0]
    return outcome[0]


def _audit_import(store: Any, config: Any, args: argparse.Namespace, summary: Any) -> str:
    """Write the import summary (counts only) to the node's audit log, or queue it for the node."""
    if config is None or config.audit_log is None:
        return ""

    entry = audit.import_entry(config.id, datetime.now(UTC), summary.to_json(), full=args.full,
                               children_file=Path(args.children).name,
                               involvements_file=Path(args.involvements).name)
    return str(audit.record(store, config.audit_log, entry))


def _retention_age(config: NodeConfig) -> int:
    """The node's own retention age, else the one in its trust list's policy."""
    if config.retention_age is not None:
        return config.retention_age
    trust = verify(read_json(config.trust_list), GovernanceRoot.from_json(read_json(config.trust_root)),
                   datetime.now(UTC), unsafe_allow_expired=True)
    return trust.policy.retention_age


def cmd_node_purge(args: argparse.Namespace) -> int:
    config = configfile.load(NodeConfig, Path(args.config))
    now = datetime.now(UTC)
    today = datetime.strptime(args.today, "%Y-%m-%d").date() if args.today else now.date()
    retention_age = args.retention_age or _retention_age(config)
    store = Store(config.database)
    try:
        summary = purge(store, today=today, now=now, retention_age=retention_age, dry_run=args.dry_run)
    finally:
        store.close()
    verb = "would delete" if args.dry_run else "deleted"
    print(f"retention age {summary.retention_age}: born on or before {summary.cutoff}")
    print(f"{verb}: {summary.children} children, {summary.involvements} involvements, "
          f"{summary.notifications} pending notifications")
    if not args.dry_run:
        print(f"recorded in {config.database} (purge_log){_audit_purge(config, summary)}")
    return 0


def _audit_purge(config: Any, summary: Any) -> str:
    """Also write the purge to the node's audit log (queued for the node while it runs)."""
    if config.audit_log is None:
        return ""

    store = Store(config.database)
    try:
        return f"; {audit.record(store, config.audit_log, summary.to_entry(config.id))}"
    finally:
        store.close()
