"""README.md, run as a new admin would run it: every fenced ``bash`` and ``python`` block, in
order, copied verbatim into a shell of a fresh user (a new ``$HOME``, so ``~/.customerkey`` is a
new installation) while ``customerkey serve`` runs, started the README's way.

What the test adds, and why:
- ``alice.mbox`` and ``q4.xlsx``: the README imports and uploads "your" mail store and file;
  the test writes a small mbox and some bytes under those names first.
- ``CUSTOMERKEY_PORT``: a free port instead of 8443 (tests run in parallel); the README's
  snippets read it the way they tell users to.
- For the az block: the az CLI of ``$CUSTOMERKEY_AZ`` on ``PATH``, and ``HTTPS_PROXY`` to a
  loopback proxy standing in for the README's ``/etc/hosts`` line (this machine's resolver does
  not resolve ``*.localhost``; see ``tests/support/az_cli.py``).
- Blocks that install the package (``pip install``) are what CI itself runs, so they are left out.

A block fails the test when it exits non-zero or reports an error on stderr (customerkey's
``Error (Code): ...``, az's ``ERROR:``, a traceback): the README cannot drift from the code
again.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.az_cli import loopback_proxy, require_az
from tests.support.mailfixtures import write_mbox
from tests.support.servers import clean_env, free_port

README = Path(__file__).resolve().parents[2] / "README.md"
BLOCK_TIMEOUT = 600
START_TIMEOUT = 60.0
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


@dataclass(frozen=True)
class Block:
    language: str
    text: str
    line: int  # where it starts in README.md, for the failure message

    @property
    def uses_az(self) -> bool:
        return bool(re.search(r"^\s*az ", self.text, re.MULTILINE))


def readme_blocks() -> list[Block]:
    """The README's fenced bash and python blocks, in order, without the install blocks."""
    source = README.read_text(encoding="utf-8")
    blocks = [
        Block(m.group(1), m.group(2), source.count("\n", 0, m.start()) + 1)
        for m in _FENCE.finditer(source)
    ]
    return [b for b in blocks if b.language in {"bash", "python"} and "pip install" not in b.text]


@dataclass
class User:
    """A fresh user account: its home folder, a working folder, and its environment."""

    home: Path
    work: Path
    env: dict[str, str]

    @property
    def installation(self) -> Path:
        return self.home / ".customerkey"


def _user(tmp_path: Path) -> User:
    home = tmp_path / "user"
    work = home / "work"
    work.mkdir(parents=True)
    scripts = str(Path(sys.executable).parent)  # customerkey and python, as installed
    env = {
        **clean_env(),
        "HOME": str(home),
        "PATH": os.pathsep.join([scripts, os.environ.get("PATH", "")]),
        "CUSTOMERKEY_PORT": str(free_port()),
        "COLUMNS": "100",
    }
    return User(home, work, env)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[User]:
    """The user, with ``customerkey serve`` running as the README starts it."""
    user = _user(tmp_path)
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen(
        ["customerkey", "serve", "--scheduler-interval", "3600"],
        cwd=user.work,
        env=user.env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_until_served(user, process, tmp_path / "serve.log")
        yield user
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _wait_until_served(user: User, process: subprocess.Popen[bytes], log: Path) -> None:
    ca = user.installation / "tls" / "ca.pem"
    url = f"https://localhost:{user.env['CUSTOMERKEY_PORT']}/healthz"
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"customerkey serve exited {process.returncode}:\n{log.read_text()}")
        if ca.exists():
            try:
                if httpx.get(url, verify=ssl.create_default_context(cafile=ca)).is_success:
                    return
            except (httpx.HTTPError, ssl.SSLError, OSError):
                pass
        time.sleep(0.05)  # polling /healthz while the server starts
    pytest.fail(f"customerkey serve did not answer {url}:\n{log.read_text()}")


def _run(block: Block, user: User, env: dict[str, str]) -> None:
    if block.language == "python":
        command = [sys.executable, "-c", block.text]
    else:
        command = ["bash", "-euo", "pipefail", "-c", block.text]
    result = subprocess.run(
        command, cwd=user.work, env=env, capture_output=True, text=True, timeout=BLOCK_TIMEOUT
    )
    # customerkey reports a failure as "Error (Code): message" on stderr
    errors = [
        line
        for line in result.stderr.splitlines()
        if line.startswith(("Error (", "Traceback", "ERROR:"))
    ]
    assert result.returncode == 0 and not errors, (
        f"README.md block at line {block.line} exited {result.returncode}:\n{block.text}\n"
        f"--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-4000:]}"
    )


def test_the_readme_runs_as_written(served: User) -> None:
    blocks = readme_blocks()
    assert len(blocks) >= 6, "the README's quickstart blocks were not found"
    write_mbox(served.work / "alice.mbox", 3)
    (served.work / "q4.xlsx").write_bytes(os.urandom(70_000))
    for block in blocks:
        env = dict(served.env)
        if block.uses_az:
            az = require_az()
            env["PATH"] = os.pathsep.join([env["PATH"], str(Path(az).parent)])
            with loopback_proxy(int(env["CUSTOMERKEY_PORT"])) as proxy:
                env.update(HTTPS_PROXY=proxy.url, https_proxy=proxy.url, NO_PROXY="")
                env["AZURE_CORE_COLLECT_TELEMETRY"] = "false"
                _run(block, served, env)
            continue
        _run(block, served, env)
    # what the blocks did is there: the mail came back byte for byte, the file too
    exported = (served.work / "alice-export.mbox").read_bytes()
    assert exported.count(b"CANARY-") >= 3
    assert (served.work / "out.xlsx").read_bytes() == (served.work / "q4.xlsx").read_bytes()


def test_every_quickstart_is_a_block_the_test_runs() -> None:
    text = "\n".join(b.text for b in readme_blocks())
    for expected in (
        "customerkey init",
        "customerkey dep create",
        "customerkey files register",
        "purge-approve",
        "ClientSecretCredential",
        "az keyvault key create",
    ):
        assert expected in text, expected
    assert shutil.which("bash"), "the README's blocks are bash"
