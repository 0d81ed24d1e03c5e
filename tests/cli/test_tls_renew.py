"""``customerkey tls show`` and ``customerkey tls renew`` (issue 17, item 11), through the CLI
entry point on a real home folder: renewing issues a new server certificate under the same CA,
so clients that trust ``ca.pem`` go on trusting the server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509

from customerkey.clock import FrozenClock
from customerkey.server.tls import ensure_server_certificate
from tests.cli.conftest import Cli

DOMAIN = "vault.localhost"


def _certificate(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _home_with_certificates(cli: Cli, issued_days_ago: int) -> Path:
    cli.ok("init")
    tls = cli.home / "tls"
    past = datetime.now(UTC) - timedelta(days=issued_days_ago)
    ensure_server_certificate(tls, DOMAIN, clock=FrozenClock(past))
    return tls


def test_show_lists_both_certificates_and_when_they_expire(cli: Cli) -> None:
    tls = _home_with_certificates(cli, issued_days_ago=300)
    shown = {c["Certificate"]: c for c in cli.json("tls", "show")}
    assert set(shown) == {"CA", "Server"}
    server = shown["Server"]
    assert server["Path"] == str(tls / "server.pem")
    assert 60 <= server["DaysLeft"] <= 65
    assert server["NotAfter"] == _certificate(tls / "server.pem").not_valid_after_utc.isoformat()
    assert f"*.{DOMAIN}" in server["Names"] and "127.0.0.1" in server["Names"]
    assert shown["CA"]["DaysLeft"] > 3000


def test_renew_issues_a_new_server_certificate_under_the_same_ca(cli: Cli) -> None:
    tls = _home_with_certificates(cli, issued_days_ago=300)
    ca_before = (tls / "ca.pem").read_bytes()
    ca_key_before = (tls / "ca-key.pem").read_bytes()
    old = _certificate(tls / "server.pem")

    renewed = cli.json("tls", "renew")

    assert (tls / "ca.pem").read_bytes() == ca_before
    assert (tls / "ca-key.pem").read_bytes() == ca_key_before
    new = _certificate(tls / "server.pem")
    assert new.serial_number != old.serial_number
    new.verify_directly_issued_by(_certificate(tls / "ca.pem"))
    assert new.not_valid_after_utc - datetime.now(UTC) > timedelta(days=360)
    assert renewed["DaysLeft"] >= 360
    assert (tls / "server-key.pem").stat().st_mode & 0o777 == 0o600
    san = new.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san) == set(
        old.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    )


def test_renew_without_a_local_ca_says_what_to_do(cli: Cli) -> None:
    cli.ok("init")
    message = cli.fail("tls", "renew", error="BadParameter")
    assert "customerkey serve" in message
    assert not (cli.home / "tls" / "server.pem").exists()


def test_tls_commands_refuse_a_folder_that_is_no_installation(cli: Cli) -> None:
    for command in (("tls", "show"), ("tls", "renew")):
        cli.fail(*command, error="NoInstallation")
    assert not cli.home.exists()
