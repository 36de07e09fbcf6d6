"""Logging in: which token file a kubeconfig names, and $KUBECONFIG read at call time.
(How the client re-reads a token file is in test_client.py, against a real HTTP server.)"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from conveyor.kube.credentials import Connection, kubeconfig_token_file


def write_kubeconfig(path: Path, server: str, user: dict[str, Any]) -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": server}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


@pytest.mark.parametrize(
    ("user", "expected"),
    [
        ({"tokenFile": "secrets/token"}, "secrets/token"),
        ({"token": "inline", "tokenFile": "secrets/token"}, None),
        ({"client-certificate": "c.crt", "client-key": "c.key"}, None),
    ],
    ids=["token-file-relative-to-the-kubeconfig", "inline-token-wins", "client-certificate"],
)
def test_the_kubeconfig_token_file(tmp_path: Path, user: dict[str, Any], expected: str | None) -> None:
    path = write_kubeconfig(tmp_path / "config", "https://k8s", user)
    found = kubeconfig_token_file(str(path))
    assert found == (str(tmp_path / expected) if expected else None)


def test_the_connection_reads_kubeconfig_when_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    (tmp_path / "token").write_text("from-file\n")
    for server in ("http://127.0.0.1:1", "http://127.0.0.1:2"):
        path = write_kubeconfig(tmp_path / f"config{server[-1]}", server, {"tokenFile": "token"})
        monkeypatch.setenv("KUBECONFIG", str(path))
        conn = Connection.from_environment()
        assert (conn.server, conn.token_file) == (server, str(tmp_path / "token"))
