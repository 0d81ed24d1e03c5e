"""Start-up cost of the CLI (issue 17, item 10): ``--version`` and ``--help`` import no heavy
library (the runtime, SQLAlchemy, pydantic, cryptography, the server, Rich). Timings are
bench/cli_startup.py's business; this only checks what gets imported, in a fresh
interpreter."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

HEAVY = (
    "alembic",
    "azure",
    "cryptography",
    "fastapi",
    "httpx",
    "pydantic",
    "pydantic_settings",
    "rich",
    "sqlalchemy",
    "starlette",
    "uvicorn",
)

PROBE = f"""
import json, sys
from customerkey.cli.main import main
code = main(sys.argv[1:])
heavy = sorted(set(m.split(".")[0] for m in sys.modules) & set({HEAVY!r}))
ours = sorted(m for m in sys.modules if m.startswith("customerkey."))
print(json.dumps(dict(code=code, heavy=heavy, ours=ours)))
"""


def _probe(*args: str) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CUSTOMERKEY_")}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


@pytest.mark.parametrize("args", [["--version"], ["--help"]])
def test_version_and_help_import_nothing_heavy(args: list[str]) -> None:
    report = _probe(*args)
    assert report["code"] == 0
    assert report["heavy"] == [], report["heavy"]
    # and none of the command modules, the runtime or the services
    assert set(report["ours"]) <= {  # type: ignore[arg-type]
        "customerkey.actor",
        "customerkey.cli",
        "customerkey.cli.context",
        "customerkey.cli.main",
        "customerkey.cli.parameter_help",
        "customerkey.errors",
    }, report["ours"]


def test_python_m_customerkey_runs_the_cli() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "customerkey", "--version"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0 and done.stdout.startswith("customerkey "), done
