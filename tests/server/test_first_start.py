"""What ``customerkey serve`` tells the operator, and in which format (issue 17, item 11).

Real servers: the first start of a new home prints the next steps (back up master.key, trust
the CA, create a tenant, an admin and a vault), a later start does not; everything the server
writes is one format (JSON lines when not on a terminal, uvicorn's own lines included, or text
with ``CUSTOMERKEY_LOG_FORMAT=text``); a certificate that expires within 30 days is warned
about at start, and the local CA's is reissued under the same CA.
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509

from customerkey.clock import FrozenClock
from customerkey.server.tls import ensure_server_certificate
from tests.support.live_servers import DOMAIN, LiveServer, start_server


def _records(server: LiveServer) -> list[dict[str, Any]]:
    lines = [line for line in server.log().splitlines() if line.strip()]
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"not a JSON line in the server's output: {line!r}") from None
    return records


def _messages(server: LiveServer) -> str:
    return "\n".join(str(r.get("message", "")) for r in _records(server))


def test_the_first_start_prints_next_steps_and_the_second_does_not(tmp_path: Path) -> None:
    home = tmp_path / "home"
    first = start_server(home, log_path=tmp_path / "first.log")
    try:
        first.log_after(0, "Next steps")
    finally:
        assert first.stop() == 0
    said = _messages(first)
    assert "This is a new installation. Next steps:" in said, said
    assert f"Back up {home / 'master.key'}" in said
    assert f"REQUESTS_CA_BUNDLE={home / 'tls' / 'ca.pem'}" in said
    assert f"customerkey --home {home} tenant create" in said
    assert "principal create admin@contoso.com --tenant contoso --roles tenant-admin" in said
    assert f"customerkey --home {home} vault create" in said

    second = start_server(home, log_path=tmp_path / "second.log")
    try:
        second.log_after(0, "customerkey listening on")
    finally:
        assert second.stop() == 0
    assert "customerkey listening on" in _messages(second)
    assert "Next steps" not in second.log()


def test_everything_the_server_writes_is_one_json_object_a_line(tmp_path: Path) -> None:
    server = start_server(tmp_path / "home")
    try:
        assert server.http.get(f"{server.url}/healthz").status_code == 200
        server.log_after(0, '"path":"/healthz"')
    finally:
        assert server.stop() == 0
    records = _records(server)
    loggers = {r["logger"] for r in records}
    assert {"customerkey.serve", "customerkey.access", "uvicorn.error"} <= loggers, loggers
    for record in records:
        assert {"time", "level", "logger"} <= set(record), record
    access = [r for r in records if r["logger"] == "customerkey.access"]
    assert any(r["path"] == "/healthz" and r["status"] == 200 for r in access), access


def test_text_logs_are_text_everywhere(tmp_path: Path) -> None:
    server = start_server(tmp_path / "home", env={"CUSTOMERKEY_LOG_FORMAT": "text"})
    try:
        assert server.http.get(f"{server.url}/healthz").status_code == 200
        server.log_after(0, "path=/healthz")
    finally:
        assert server.stop() == 0
    lines = [line for line in server.log().splitlines() if line.strip()]
    assert not [line for line in lines if line.lstrip().startswith("{")], lines
    assert any(" INFO uvicorn.error: " in line for line in lines), lines
    assert any("customerkey.access: method=GET path=/healthz status=200" in line for line in lines)


def _issue(folder: Path, days_ago: int) -> None:
    past = datetime.now(UTC) - timedelta(days=days_ago)
    ensure_server_certificate(folder, DOMAIN, clock=FrozenClock(past))


def test_an_operator_certificate_near_expiry_is_warned_about(tmp_path: Path) -> None:
    # A certificate of the operator's own CA with 15 days left.
    own = tmp_path / "own-ca"
    _issue(own, days_ago=350)
    home = tmp_path / "home"
    (home / "tls").mkdir(parents=True)
    shutil.copy(own / "ca.pem", home / "tls" / "ca.pem")  # what the test client trusts
    server = start_server(
        home, args=("--cert", str(own / "server.pem"), "--key", str(own / "server-key.pem"))
    )
    try:
        server.log_after(0, "customerkey listening on")
    finally:
        assert server.stop() == 0
    warnings = [r for r in _records(server) if r["level"] == "WARNING"]
    assert any(
        f"The server certificate {own / 'server.pem'} expires in 14 days" in r["message"]
        or f"The server certificate {own / 'server.pem'} expires in 15 days" in r["message"]
        for r in warnings
    ), warnings


def test_the_local_ca_certificate_near_expiry_is_reissued_under_the_same_ca(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    _issue(home / "tls", days_ago=350)
    ca = (home / "tls" / "ca.pem").read_bytes()
    server = start_server(home)
    try:
        server.log_after(0, "customerkey listening on")
    finally:
        assert server.stop() == 0
    assert (home / "tls" / "ca.pem").read_bytes() == ca
    cert = x509.load_pem_x509_certificate((home / "tls" / "server.pem").read_bytes())
    assert cert.not_valid_after_utc - datetime.now(UTC) > timedelta(days=360)
    said = _messages(server)
    assert f"Issued a new server certificate (same CA): {home / 'tls' / 'server.pem'}" in said
    assert "Created a local CA" not in said
