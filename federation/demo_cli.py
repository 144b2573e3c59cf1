"""``signpost demo``, and the demo identity provider: ``signpost token``, ``signpost demo-code``."""

from __future__ import annotations

import argparse
import tempfile
from datetime import UTC, datetime
from pathlib import Path


def cmd_demo(args: argparse.Namespace) -> int:
    from federation import demo

    folder = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="signpost-demo-"))
    return demo.run(folder, once=args.once, children=args.children)


def cmd_token(args: argparse.Namespace) -> int:
    from trust import keys as keyfiles
    from trust import tokens

    key_path = Path(args.key) if args.key else Path(args.federation) / "keys" / f"{args.issuer}.pem"
    amr = ["pwd"] if args.no_mfa else ["pwd", "otp"]
    print(tokens.issue(issuer=args.issuer, key=keyfiles.load_private(key_path), audience=args.audience,
                       sub=args.sub, name=args.name or args.sub, org=args.org, role=args.role, amr=amr,
                       now=datetime.now(UTC), lifetime_seconds=args.minutes * 60))
    return 0


def cmd_demo_code(args: argparse.Namespace) -> int:
    import time

    from broker.demo_idp import DEMO_TOTP_SECRET, TOTP_STEP_SECONDS, current_code

    now = time.time()
    left = TOTP_STEP_SECONDS - int(now) % TOTP_STEP_SECONDS
    print(f"{current_code(now)}  (demo one-time code, valid for {left} more s; secret {DEMO_TOTP_SECRET})")
    return 0
