"""The ``signpost`` command line: demo, federation set-up, nodes, broker, tokens, searches.

This module is the parser and the dispatch. The commands are in one module per area:
``federation_cli`` (the trust list, ``status``), ``node_cli``, ``broker_cli`` (serving, ``search``),
``demo_cli`` (the demo and its identity provider), ``bench_cli`` (benchmarks, ``eval-matching``)
and ``audit_cli``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from broker.config import BrokerConfig
from federation import config as configfile
from federation.commands import audit as audit_cli
from federation.commands import bench as bench_cli
from federation.commands import broker as broker_cli
from federation.commands import demo as demo_cli
from federation.commands import federation as federation_cli
from federation.commands import node as node_cli
from federation.errors import SignpostError
from node.config import NodeConfig

Handler = Callable[[argparse.Namespace], int]


def _serves(actions: argparse._SubParsersAction[argparse.ArgumentParser], service: str,
            config_class: type[Any], func: Handler) -> None:
    """The ``serve`` command of a service, whose ``--help`` lists the settings of its config file."""
    p = actions.add_parser("serve", help=f"serve the {service}'s HTTP API",
                           formatter_class=argparse.RawDescriptionHelpFormatter,
                           epilog="settings (JSON config file; each also from the environment as "
                           "SIGNPOST_<SETTING>, e.g. SIGNPOST_PORT, which wins over the file):\n"
                           + configfile.describe(config_class))
    p.add_argument("--config", required=True)
    p.add_argument("--verbose", action="store_true")
    p.set_defaults(func=func)


def _inits(p: argparse.ArgumentParser, port: int) -> None:
    """The options of ``node init`` and ``broker init``."""
    p.add_argument("dir", help="the service's folder (created if needed)")
    p.add_argument("--id", required=True, help="the member id in the trust list")
    p.add_argument("--federation", help="the governance folder the member's key, trust list, root and TLS "
                   "files come from (the root is copied into DIR)")
    p.add_argument("--port", type=int, default=port, help=f"port to listen on (default {port})")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--trust-list-url", help="the federation's publication point for the trust list")
    p.add_argument("--force", action="store_true", help="overwrite an existing config")


def _publishes(p: argparse.ArgumentParser) -> None:
    """The options of a command that publishes the next trust list version (or a draft of it)."""
    p.add_argument("--valid-days", type=int, default=None,
                   help="lifetime of the new version (default: the current version's lifetime)")
    p.add_argument("--draft", action="store_true", help="write an unsigned draft for multi-party signing")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="signpost",
        description="Signpost: who else is working with this child? A federated signposting index.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo", help="run a local demo federation (nodes and broker on loopback)",
                       description="Create a temporary federation of 5 authorities with synthetic "
                       "children, start every node and the broker, run sample searches, keep serving.")
    p.add_argument("--once", action="store_true", help="exit after the sample searches (non-zero on failure)")
    p.add_argument("--dir", help="folder for the federation (default: a new temporary folder)")
    p.add_argument("--children", type=int, default=3000, help="children per authority (default 3000)")
    p.add_argument("--redis", metavar="URL", help="keep the broker's rate limits and sessions in this Redis "
                   "(e.g. redis://127.0.0.1:6379/0)")
    p.add_argument("--independent", action="store_true",
                   help="keep serving when one process exits (fault drills); default: stop them all")
    p.set_defaults(func=lambda args: demo_cli.cmd_demo(args, main))

    fed = sub.add_parser("federation", help="create a federation and manage its trust list")
    fsub = fed.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = fsub.add_parser("create", help="create governance keys and a signed, empty trust list")
    p.add_argument("dir")
    p.add_argument("--name", required=True, help="federation name (the query audience)")
    p.add_argument("--governance-keys", type=int, default=1)
    p.add_argument("--threshold", type=int, default=1)
    p.add_argument("--valid-days", type=int, default=30)
    p.set_defaults(func=federation_cli.cmd_federation_create)
    p = fsub.add_parser("add-member", help="add a member with a new key; publish the next version")
    p.add_argument("dir")
    p.add_argument("--id", required=True)
    p.add_argument("--name")
    p.add_argument("--role", action="append", required=True,
                   choices=["node", "broker", "token_issuer", "auditor"])
    p.add_argument("--endpoint", help="base URL (nodes and brokers)")
    p.add_argument("--authority", help="the authority a node or token issuer belongs to")
    p.add_argument("--contact-name")
    p.add_argument("--contact-phone")
    p.add_argument("--contact-email")
    _publishes(p)
    p.set_defaults(func=federation_cli.cmd_federation_add)
    p = fsub.add_parser("remove-member", help="remove a member; publish the next version")
    p.add_argument("dir")
    p.add_argument("--id", required=True)
    _publishes(p)
    p.set_defaults(func=federation_cli.cmd_federation_remove)
    p = fsub.add_parser("sign", help="add one governance signature to the waiting draft")
    p.add_argument("dir")
    p.add_argument("--key", required=True, help="a governance private key (PEM)")
    p.set_defaults(func=federation_cli.cmd_federation_sign)
    p = fsub.add_parser("publish", help="install the draft once a threshold of governance keys signed it")
    p.add_argument("dir")
    p.set_defaults(func=federation_cli.cmd_federation_publish)
    p = fsub.add_parser("verify", help="verify a trust list against the pinned root (exit 2 if not good)")
    p.add_argument("dir")
    p.add_argument("--file", help="trust list to verify (default: DIR/trustlist.json)")
    p.add_argument("--root", help="pinned root.json (default: DIR/root.json)")
    p.set_defaults(func=federation_cli.cmd_federation_verify)
    p = fsub.add_parser("rotate-key", help="give a member a new signing key, with overlapping validity")
    p.add_argument("dir")
    p.add_argument("--id", required=True)
    p.add_argument("--overlap-hours", type=float, default=24)
    _publishes(p)
    p.set_defaults(func=federation_cli.cmd_federation_rotate_key)
    p = fsub.add_parser("revoke-key", help="remove a lost or stolen member key at once")
    p.add_argument("dir")
    p.add_argument("--id", required=True)
    p.add_argument("--kid", required=True)
    _publishes(p)
    p.set_defaults(func=federation_cli.cmd_federation_revoke_key)
    p = fsub.add_parser("rotate-governance", help="replace the governance keys (signed by old and new)")
    p.add_argument("dir")
    p.add_argument("--governance-keys", type=int, required=True)
    p.add_argument("--threshold", type=int, required=True)
    p.add_argument("--valid-days", type=int, default=None,
                   help="lifetime of the new version (default: the current version's lifetime)")
    p.set_defaults(func=federation_cli.cmd_federation_rotate_governance)
    p = fsub.add_parser("tls", help="create the federation CA; issue (and bind) a member certificate")
    p.add_argument("dir")
    p.add_argument("--id", help="member to issue a certificate for (DIR/tls/ID.pem, ID.key)")
    p.add_argument("--host", action="append", help="host name or IP for the certificate (repeat; "
                   "default 127.0.0.1 and localhost)")
    p.add_argument("--bind", action="store_true", help="pin the certificate's fingerprint in the trust list")
    p.add_argument("--federation-name", help="name in the CA certificate (default: the folder name)")
    _publishes(p)
    p.set_defaults(func=federation_cli.cmd_federation_tls)
    p = fsub.add_parser("set-oidc", help="name a token issuer's OpenID provider and claim mapping "
                        "(or remove it); publish the next version")
    p.add_argument("dir")
    p.add_argument("--id", required=True, help="the token issuer's member id")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--file", help="JSON file with the oidc entry (see docs/operator-guide.md)")
    group.add_argument("--remove", action="store_true", help="remove the issuer's oidc entry")
    _publishes(p)
    p.set_defaults(func=federation_cli.cmd_federation_set_oidc)
    p = fsub.add_parser("show", help="verify and print the trust list")
    p.add_argument("dir")
    p.add_argument("--root", help="pinned root.json (default: DIR/root.json)")
    p.add_argument("--keys", action="store_true",
                   help="also list each member's key ids, validity and TLS pin")
    p.set_defaults(func=federation_cli.cmd_federation_show)

    p = sub.add_parser("token", help="issue a development practitioner token (demo identity provider)")
    p.add_argument("--federation", default=".", help="federation folder holding keys/<issuer>.pem")
    p.add_argument("--key", help="issuer private key (default: FEDERATION/keys/ISSUER.pem)")
    p.add_argument("--issuer", required=True)
    p.add_argument("--sub", required=True)
    p.add_argument("--name")
    p.add_argument("--org", required=True)
    p.add_argument("--role", required=True,
                   choices=["practitioner", "mediator", "signposting_officer", "auditor", "operator"])
    p.add_argument("--audience", default="signpost-broker")
    p.add_argument("--minutes", type=int, default=15)
    p.add_argument("--no-mfa", action="store_true", help="issue a token without multi-factor (refused)")
    p.set_defaults(func=demo_cli.cmd_token)

    node = sub.add_parser("node", help="run and feed an authority's node")
    nsub = node.add_subparsers(dest="action", required=True, metavar="ACTION")
    _serves(nsub, "node", NodeConfig, node_cli.cmd_node_serve)
    p = nsub.add_parser("init", help="write a complete, commented node config (DIR/node.json)")
    _inits(p, 8701)
    p.set_defaults(func=node_cli.cmd_node_init)
    p = nsub.add_parser("import", help="import children and involvements CSV files")
    p.add_argument("--config", help="node config (for the database path)")
    p.add_argument("--database", help="SQLite file (instead of --config)")
    p.add_argument("--children", required=True)
    p.add_argument("--involvements", required=True)
    p.add_argument("--full", action="store_true", help="also remove records absent from the files")
    p.add_argument("--rejects", help="rejects CSV (default: rejects.csv beside the children file)")
    p.add_argument("--nice", type=int, default=node_cli.IMPORT_NICENESS, metavar="N",
                   help=f"lower the import's CPU priority by N (default {node_cli.IMPORT_NICENESS}; 0 keeps "
                        "it), so that a node serving from the same machine keeps answering promptly")
    p.add_argument("--no-index", dest="index", action="store_false",
                   help="do not build the match index for the node's next start (by default it is "
                        "built and saved beside the store when none is saved yet or the import changed "
                        "many children)")
    p.set_defaults(func=node_cli.cmd_node_import)
    p = nsub.add_parser("purge", help="delete records past the retention age (default: 24th birthday)")
    p.add_argument("--config", required=True, help="node config")
    p.add_argument("--retention-age", type=int, help="override the configured retention age")
    p.add_argument("--today", help="YYYY-MM-DD (default: today)")
    p.add_argument("--dry-run", action="store_true", help="count, delete nothing")
    p.set_defaults(func=node_cli.cmd_node_purge)

    brk = sub.add_parser("broker", help="run the broker")
    bsub = brk.add_subparsers(dest="action", required=True, metavar="ACTION")
    _serves(bsub, "broker", BrokerConfig, broker_cli.cmd_broker_serve)
    p = bsub.add_parser("init", help="write a complete, commented broker config (DIR/broker.json)")
    _inits(p, 8700)
    p.add_argument("--redis-url", help="Redis for rate limits and sessions shared by broker replicas")
    p.add_argument("--public-url", help="how practitioners reach the broker (https://…)")
    p.set_defaults(func=broker_cli.cmd_broker_init)

    p = sub.add_parser("status", help="show every member of the federation: reachable, trust list, audit log",
                       description="Probe /healthz (and the audit log checkpoint) of every member in the "
                       "verified trust list. Exit status 1 if any member with an endpoint is unreachable.")
    p.add_argument("--federation", default=".", help="federation folder (trustlist.json, root.json)")
    p.add_argument("--trust-list", help="trust list file (default: FEDERATION/trustlist.json)")
    p.add_argument("--root", help="pinned root.json (default: FEDERATION/root.json)")
    p.add_argument("--timeout", type=float, default=3.0, help="seconds per member (default 3)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--tls-ca", help="federation CA for HTTPS members (default: FEDERATION/tls/ca.pem)")
    p.add_argument("--tls-cert", help="client certificate for nodes that require one "
                   "(default: FEDERATION/tls/auditor.pem)")
    p.add_argument("--tls-key", help="its key (default: the certificate's name with .key)")
    p.set_defaults(func=federation_cli.cmd_status)


    audit_cli.add_parsers(sub)

    bench = sub.add_parser("bench", help="run a benchmark and print its numbers")
    bench_sub = bench.add_subparsers(dest="which", required=True, metavar="BENCHMARK")
    p = bench_sub.add_parser("audit", help="audit log: durable appends/s, verify time, proof latency")
    p.add_argument("--entries", type=int, default=1_000_000,
                   help="size of the verified log (default 1,000,000)")
    p.add_argument("--appends", type=int, default=50_000, help="durable appends to time (default 50,000)")
    p.add_argument("--appenders", type=int, default=500, help="concurrent appenders (default 500)")
    p.add_argument("--proofs", type=int, default=5_000, help="proofs to time (default 5,000)")
    p.add_argument("--dir", help="where the temporary logs go (its disk decides the fsync cost)")
    p.set_defaults(func=bench_cli.cmd_bench_audit)
    p = bench_sub.add_parser("matching", help="matcher at scale: index build time, memory, query latency")
    p.add_argument("--children", type=int, default=350_000, help="children in the node (default 350,000)")
    p.add_argument("--queries", type=int, default=10_000, help="queries to time (default 10,000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the figures (and the machine's load) as JSON")
    p.set_defaults(func=bench_cli.cmd_bench_matching)
    p = bench_sub.add_parser("trust", help="trust list of 150 authorities: verify, refresh, token, envelope")
    p.set_defaults(func=bench_cli.cmd_bench_trust)
    p = bench_sub.add_parser("search", help="end to end: searches/s and latency through the demo federation")
    p.add_argument("--children", type=int, default=20_000, help="children per authority (default 20,000)")
    p.add_argument("--searches", type=int, default=1_000, help="searches to time (default 1,000)")
    p.add_argument("--concurrency", type=int, default=8, help="searches in flight (default 8)")
    p.set_defaults(func=bench_cli.cmd_bench_search)
    p = bench_sub.add_parser(
        "federation", help="N authorities as real node processes over mutual TLS, beside a central index",
        description="Build (once; cached) a federation of N node processes and a central baseline (one "
        "node holding every child); run searches one at a time and C at a time through each broker; "
        "print broker CPU per search, node CPU per answer, p50/p99, searches/s, incomplete searches, "
        "new TLS handshakes and the federated/central ratios.")
    p.add_argument("--nodes", type=int, required=True, help="authorities, each its own node process")
    p.add_argument("--children-per-node", type=int, default=1000,
                   help="children per authority (default 1000)")
    p.add_argument("--concurrency", type=int, default=8,
                   help="searches in flight in the second phase (default 8)")
    p.add_argument("--searches", type=int, default=48, help="searches per phase (default 48)")
    p.add_argument("--idle", type=float, default=0,
                   help="also time one search after this many seconds idle (default: skip)")
    p.add_argument("--no-central", action="store_true", help="skip the central baseline")
    p.add_argument("--seconds", type=float,
                   help="instead of the phases: keep --concurrency searches in flight for this long "
                   "(federated side only), and report p50/p99, incomplete searches and every refusal by type")
    p.add_argument("--redis", action="store_true",
                   help="with --seconds: the broker keeps its rate limits in a private redis-server, "
                   "PINGed twice a second during the run")
    p.add_argument("--http", action="store_true",
                   help="the broker asks nodes over POST /v1/query, not the channel")
    p.add_argument("--baseline-source", metavar="DIR",
                   help="also measure the federated side with the node and broker processes of the "
                   "checkout in DIR (for example the code before a change), in the same run")
    p.add_argument("--dir", help="where the federation is built and cached "
                   "(default ~/.cache/signpost/bench/federation-NxM)")
    p.add_argument("--json", action="store_true", help="print every figure as one JSON object")
    p.set_defaults(func=bench_cli.cmd_bench_federation)
    p = bench_sub.add_parser(
        "channel", help="the broker's transport alone: CPU per node per fan-out, three clients",
        description="Open N WebSocket channels over TLS to a few small local servers that answer each "
                    "query frame after a random delay, and print the client's CPU per node per fan-out "
                    "for aiohttp's client and the broker's own (at once, and read together).")
    p.add_argument("--nodes", type=int, default=152, help="channels (default 152)")
    p.add_argument("--fanouts", type=int, default=30, help="fan-outs timed per client (default 30)")
    p.add_argument("--servers", type=int, default=4, help="server processes (default 4)")
    p.add_argument("--spread-ms", type=float, default=100.0,
                   help="answers arrive after a random 0 to this many ms (default 100)")
    p.add_argument("--hold-ms", type=float, default=10.0,
                   help="the read-together pause (default 10, the broker's)")
    p.add_argument("--json", action="store_true", help="print every figure as one JSON object")
    p.set_defaults(func=bench_cli.cmd_bench_channel)
    p = bench_sub.add_parser("fuzz", help="every parser of untrusted input on hostile inputs "
                             "(crashes must be 0)")
    p.add_argument("--inputs", type=int, default=100_000, help="inputs per parser (default 100,000)")
    p.add_argument("--seed", type=int, default=1)
    p.set_defaults(func=bench_cli.cmd_bench_fuzz)
    p = bench_sub.add_parser("soak", help="the demo federation under steady load: errors, latency and "
                             "memory per minute, reconcile at the end")
    p.add_argument("--minutes", type=float, default=30, help="how long (default 30)")
    p.add_argument("--rate", type=float, default=5, help="searches per second (default 5)")
    p.add_argument("--children", type=int, default=5_000, help="children per authority (default 5,000)")
    p.add_argument("--json", action="store_true",
                   help="print the figures (per minute too) as JSON; the progress lines go to stderr")
    p.set_defaults(func=bench_cli.cmd_bench_soak)
    p = bench_sub.add_parser(
        "node", help="one node at size: import rates, time to ready, CPU per query, queries during a "
                     "re-import, memory, index build")
    p.add_argument("--children", type=int, default=350_000, help="children in the node (default 350,000)")
    p.add_argument("--queries", type=int, default=2_000, help="queries to time (default 2,000)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.add_argument("--baseline-source", metavar="DIR",
                   help="first run the same steps with another Signpost checkout, on the same records, "
                        "as the baseline printed beside this checkout's figures")
    p.set_defaults(func=bench_cli.cmd_bench_node)

    p = sub.add_parser(
        "eval-matching", help="measure the matcher on labelled data: precision, recall, false matches",
        description="Run every query of a labelled set through the real matcher and print precision, "
        "recall, false matches, misses, possible_match count and latency; per category (held, "
        "absent, and the synthetic set's adversarial traps) the wrong-child answers, recall and "
        "possible_match share; the signposting recall and the possible_match rate on absent "
        "children. FEBRL sets need the "
        "'eval' extra (pip install -e '.[eval]').")
    p.add_argument("dataset", choices=["febrl1", "febrl2", "febrl3", "febrl4", "synthetic", "all"])
    p.add_argument("--with-identifier", action="store_true",
                   help="also give the identifier (FEBRL soc_sec_id standing in for the NHS number)")
    p.add_argument("--open-set", action="store_true",
                   help="the node holds only half the records; queries for the rest must not match")
    p.add_argument("--both", action="store_true", help="run all four: closed/open x with/without identifier")
    p.add_argument("--sample", type=int, help="only this many queries")
    p.add_argument("--seed", type=int, default=0, help="synthetic set seed (default 0)")
    p.set_defaults(func=bench_cli.cmd_eval_matching)

    p = sub.add_parser("demo-code", help="print the demo identity provider's current one-time code")
    p.add_argument("--json", action="store_true",
                   help='print {"code", "valid_seconds", "step_seconds", "secret"} as JSON')
    p.set_defaults(func=demo_cli.cmd_demo_code)

    p = sub.add_parser("search", help="search for a child through a broker")
    p.add_argument("--broker", required=True, help="broker base URL")
    p.add_argument("--token", help="bearer token (or SIGNPOST_TOKEN)")
    p.add_argument("--nhs-number")
    p.add_argument("--upn")
    p.add_argument("--given-name")
    p.add_argument("--family-name")
    p.add_argument("--date-of-birth", help="YYYY-MM-DD")
    p.add_argument("--sex", help="F, M, X or U")
    p.add_argument("--postcode")
    p.add_argument("--purpose", required=True)
    p.add_argument("--on-behalf-of", help="mediators: 'name|organisation|role|phone'")
    p.add_argument("--contact-email", help="your secure email (told to a matched child's lead practitioner)")
    p.add_argument("--contact-phone", help="your phone number (told to a matched child's lead practitioner)")
    p.add_argument("--json", action="store_true", help="print the raw JSON answer")
    p.add_argument("--ca", help="CA certificate to trust for an https broker (e.g. the federation CA)")
    p.set_defaults(func=broker_cli.cmd_search)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except SignpostError as exc:
        print(f"signpost: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (`signpost … | head`): stop quietly
        # Point stdout at /dev/null so the interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as exc:  # a port in use, a folder that cannot be written, a disk full
        print(f"signpost: {exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else ""),
              file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
