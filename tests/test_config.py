"""Service config files: every mistake is named by its setting, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from broker.config import BrokerConfig
from federation import config as configfile
from federation.errors import ConfigError
from node.config import NodeConfig

NODE = {"id": "leeds", "database": "node.sqlite3", "key": "leeds.pem", "trust_list": "trustlist.json",
        "trust_root": "root.json", "audit_log": "audit.log", "unsafe_plain_http": True}
BROKER = {"id": "broker", "key": "broker.pem", "trust_list": "trustlist.json", "trust_root": "root.json",
          "audit_log": "audit.log", "unsafe_plain_http": True}
TLS = {"tls_cert": "c.pem", "tls_key": "k.pem", "tls_ca": "ca.pem"}

CASES: dict[str, tuple[type[Any], dict[str, Any], str]] = {
    "empty id": (NodeConfig, {**NODE, "id": ""}, "id: expected the node's member id"),
    "port as text": (NodeConfig, {**NODE, "port": "8701"}, 'port: expected an integer, got "8701"'),
    "port out of range": (NodeConfig, {**NODE, "port": 70000}, "port: expected 0-65535, got 70000"),
    "flag as number": (NodeConfig, {**NODE, "retention_age": True}, "retention_age: expected an integer"),
    "missing required": (NodeConfig, {k: v for k, v in NODE.items() if k != "key"}, "key"),
    "unknown setting": (NodeConfig, {**NODE, "prot": 1}, "unknown setting(s) ['prot']"),
    "null required path": (NodeConfig, {**NODE, "database": None}, "database: expected a value, got null"),
    "one TLS file only": (NodeConfig, {**NODE, "tls_cert": "c.pem"},
                          "tls_cert, tls_key, tls_ca: expected all three"),
    "deadline as text": (BrokerConfig, {**BROKER, "node_deadline_seconds": "3"},
                         'node_deadline_seconds: expected a number, got "3"'),
    "deadline too long": (BrokerConfig, {**BROKER, "node_deadline_seconds": 60},
                          "node_deadline_seconds: expected more than 0 and at most 30"),
    # Closed by default: each open door needs its unsafe_ setting, and the refusal names both.
    "node without an audit log": (NodeConfig, {k: v for k, v in NODE.items() if k != "audit_log"},
                                  "audit_log: expected the node's audit log folder"),
    "broker without an audit log": (BrokerConfig, {k: v for k, v in BROKER.items() if k != "audit_log"},
                                    "set unsafe_no_audit_log to run without one"),
    "node without mutual TLS": (NodeConfig, {**NODE, "unsafe_plain_http": False},
                                "tls_cert, tls_key, tls_ca: expected the node's mutual TLS files; "
                                "set unsafe_plain_http"),
    "broker without mutual TLS": (BrokerConfig, {**BROKER, "unsafe_plain_http": False},
                                  "expected the broker's mutual TLS files"),
    "demo sign-in under its old name": (BrokerConfig, {**BROKER, "demo_identity_provider": "keys"},
                                        "demo_identity_provider: renamed unsafe_demo_identity_provider"),
}


OPEN_DOORS: dict[str, tuple[type[Any], dict[str, Any]]] = {
    "node with TLS and a log": (NodeConfig, {**NODE, **TLS, "unsafe_plain_http": False}),
    "broker with TLS and a log": (BrokerConfig, {**BROKER, **TLS, "unsafe_plain_http": False}),
    "node without a log, said unsafe": (NodeConfig, {**NODE, "audit_log": None, "unsafe_no_audit_log": True}),
    "broker with the demo sign-in, said unsafe": (BrokerConfig,
                                                  {**BROKER, "unsafe_demo_identity_provider": "k"}),
}


@pytest.mark.parametrize("case", OPEN_DOORS)
def test_safe_or_explicitly_unsafe_configs_load(tmp_path: Path, case: str) -> None:
    """A config with mutual TLS and an audit log loads; so does one that names its unsafe setting."""
    cls, data = OPEN_DOORS[case]
    path = tmp_path / "service.json"
    path.write_text(json.dumps(data))
    assert data["id"] == configfile.load(cls, path).id


@pytest.mark.parametrize("case", CASES)
def test_config_mistakes_are_named(tmp_path: Path, case: str) -> None:
    """Each mistake in a config file is a ConfigError naming the file and the setting."""
    cls, data, expected = CASES[case]
    path = tmp_path / "service.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError) as caught:
        configfile.load(cls, path)
    assert str(caught.value).startswith(f"{path}: ")
    assert expected in str(caught.value)


def test_a_good_config_resolves_paths_beside_the_file(tmp_path: Path) -> None:
    """Relative paths in a config file resolve against the file's folder."""
    path = tmp_path / "node.json"
    path.write_text(json.dumps({**NODE, "port": 9000}))
    config = configfile.load(NodeConfig, path)
    assert (tmp_path / "node.sqlite3", 9000) == (config.database, config.port)
