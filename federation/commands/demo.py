"""``signpost demo``, and the demo identity provider: ``signpost token``, ``signpost demo-code``."""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from broker.demo_idp import DEMO_TOTP_SECRET, TOTP_STEP_SECONDS, current_code
from federation.tools import demo
from trust import keys as keyfiles
from trust import tokens


def cmd_demo(args: argparse.Namespace, run_command: Callable[[list[str]], int]) -> int:
    """``signpost demo``; ``run_command`` runs another ``signpost`` command (the audit and status)."""
    folder = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="signpost-demo-"))
    return demo.run(folder, once=args.once, children=args.children,
                    checks=lambda built: _audit_and_status(built, run_command), redis_url=args.redis,
                    independent=args.independent)


def _audit_and_status(folder: Path, run_command: Callable[[list[str]], int]) -> int:
    """Reconcile every audit log as an auditor would, then show the federation as an operator would."""
    print("\nAudit: signpost audit reconcile (verifies each log's signed checkpoint first)")
    tls_dir = folder / "tls"
    failures = 0 if run_command([
        "audit", "reconcile", "--federation", str(folder), "--state", str(folder / "audit-state"),
        "--token", demo.demo_token(folder, "auditor"), "--tls-ca", str(tls_dir / "ca.pem"),
        "--tls-cert", str(tls_dir / "auditor.pem"), "--tls-key", str(tls_dir / "auditor.key")]) == 0 else 1
    print("\nStatus: signpost status")
    return failures + (0 if run_command(["status", "--federation", str(folder)]) == 0 else 1)


def cmd_token(args: argparse.Namespace) -> int:
    key_path = Path(args.key) if args.key else Path(args.federation) / "keys" / f"{args.issuer}.pem"
    amr = ["pwd"] if args.no_mfa else ["pwd", "otp"]
    print(tokens.issue(issuer=args.issuer, key=keyfiles.load_private(key_path), audience=args.audience,
                       sub=args.sub, name=args.name or args.sub, org=args.org, role=args.role, amr=amr,
                       now=datetime.now(UTC), lifetime_seconds=args.minutes * 60))
    return 0


def cmd_demo_code(args: argparse.Namespace) -> int:
    now = time.time()
    left = TOTP_STEP_SECONDS - int(now) % TOTP_STEP_SECONDS
    if args.json:
        print(json.dumps({"code": current_code(now), "valid_seconds": left, "step_seconds": TOTP_STEP_SECONDS,
                          "secret": DEMO_TOTP_SECRET}))
        return 0
    print(f"{current_code(now)}  (demo one-time code, valid for {left} more s; secret {DEMO_TOTP_SECRET})")
    return 0
