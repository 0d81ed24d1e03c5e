"""What every test that starts ``customerkey`` processes needs: a free loopback port, and an
environment that no CUSTOMERKEY_* setting of the machine running the tests leaks into."""

from __future__ import annotations

import os
import socket


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def clean_env() -> dict[str, str]:
    """The environment for our subprocesses: no CUSTOMERKEY_* settings leak in (SQLite)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CUSTOMERKEY_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env
