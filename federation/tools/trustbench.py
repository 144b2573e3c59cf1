"""How long trust-list work takes at national scale: ``python -m federation.tools.trustbench``.

Builds a trust list of 152 authorities (a node and an identity provider each, plus a broker),
signed by 3 of 5 governance keys, and times verifying it, a full refresh from disk (what every
party does once per ``trust_refresh_seconds``), verifying one practitioner token and one query
envelope, and binding a TLS certificate to a member. Numbers are printed, never asserted.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from trust import envelope, tls, tokens, trustlist
from trust import keys as keyfiles
from trust.store import TrustStore
from trust.trustlist import DOCUMENT_TYPE, GovernanceRoot, format_time

AUTHORITIES = 152


def _time(label: str, repeat: int, action: Callable[[], object]) -> None:
    action()
    started = time.perf_counter()
    for _ in range(repeat):
        action()
    each = (time.perf_counter() - started) / repeat
    print(f"  {label:<52} {each * 1000:8.3f} ms")


def main() -> None:
    now = datetime.now(UTC)
    governance = [keyfiles.generate() for _ in range(5)]
    root = GovernanceRoot(3, {keyfiles.key_id(k.public_key()): k.public_key() for k in governance})
    broker_key, idp_key = keyfiles.generate(), keyfiles.generate()
    broker_public = broker_key.public_key()
    members: list[dict[str, Any]] = [{"id": "broker", "roles": ["broker"], "keys": [
        {"kid": keyfiles.key_id(broker_public), "public_key": keyfiles.public_b64(broker_public)}]}]
    for i in range(AUTHORITIES):
        for suffix, role in (("", "node"), ("-idp", "token_issuer")):
            key = idp_key if role == "token_issuer" and i == 0 else keyfiles.generate()
            members.append({"id": f"la{i:03d}{suffix}", "roles": [role], "authority": f"la{i:03d}",
                            "endpoint": f"https://la{i:03d}.example:8701" if role == "node" else None,
                            "tls_fingerprint": "sha256:" + "0" * 64 if role == "node" else None,
                            "keys": [{"kid": keyfiles.key_id(key.public_key()),
                                      "public_key": keyfiles.public_b64(key.public_key())}]})
    signed = {"type": DOCUMENT_TYPE, "federation": "bench", "version": 1, "issued": format_time(now),
              "expires": format_time(now + timedelta(days=30)), "governance": root.to_json(),
              "members": [{k: v for k, v in m.items() if v is not None} for m in members]}
    document = trustlist.sign(signed, governance[:3])
    size = len(json.dumps(document))
    print(f"trust list: {len(members)} members, 3-of-5 governance signatures, {size / 1024:.0f} KiB")
    _time("verify the list (signatures, parse, expiry)", 20, lambda: trustlist.verify(document, root, now))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "root.json").write_text(json.dumps(root.to_json()))
        (folder / "trustlist.json").write_text(json.dumps(document))
        store = TrustStore(folder / "root.json", folder / "trustlist.json")
        _time("refresh from disk (read, verify, state file)", 20, store.load)
        trust = store.current
        token = tokens.issue(issuer="la000-idp", key=idp_key, audience="signpost-broker", sub="s",
                             name="S", org="O", role="practitioner", now=now)
        _time("verify one practitioner token", 200,
              lambda: tokens.verify(token, trust, audience="signpost-broker", now=now))
        iat = int(now.timestamp())
        query = envelope.sign({"iss": "broker", "aud": "bench", "iat": iat, "exp": iat + 60, "jti": "q"},
                              broker_key, envelope.QUERY_TYPE)
        _time("verify one query envelope (what each node does)", 200,
              lambda: envelope.verify(query, trust, role="broker", typ=envelope.QUERY_TYPE, now=now,
                                      audience="bench"))
        tls.create_ca(folder / "ca.pem", folder / "ca.key", "bench")
        tls.issue_certificate(folder / "ca.pem", folder / "ca.key", "broker", folder / "b.pem",
                              folder / "b.key")
        der = x509.load_pem_x509_certificate((folder / "b.pem").read_bytes()).public_bytes(Encoding.DER)
        _time("bind a TLS certificate to a member (per request)", 200,
              lambda: tls.peer_member(trust, der, "broker"))


if __name__ == "__main__":
    main()
