"""A bad setting is one clear error line naming the setting, and never echoes its value: a
malformed CUSTOMERKEY_REMOTE_VAULTS holds client secrets (issue 17.17)."""

from __future__ import annotations

import pytest

from tests.cli.conftest import Cli

SECRET = "s3cr3t-Client-Secret-Value-0123456789"


@pytest.mark.parametrize(
    "value",
    [
        f'[{{"domain": "vault.azure.net", "client_secret": "{SECRET}"}}]',  # fields missing
        f'{{"v": {{"client_secret": "{SECRET}", ',  # not JSON
        f'[{{"domain": 7, "authority": "a", "tenant": "t", "client_id": "c", '
        f'"client_secret": "{SECRET}", "tenants": "{SECRET}"}}]',  # wrong types
    ],
)
def test_a_malformed_remote_vault_setting_never_shows_the_secret(
    cli: Cli, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("CUSTOMERKEY_REMOTE_VAULTS", value)
    result = cli.run("init")
    assert result.code == 1
    assert result.err.startswith("Error (BadSettings): Invalid settings: "), result.err
    assert "remote_vaults" in result.err and "Traceback" not in result.err
    assert SECRET not in result.err + result.out
    assert SECRET[-8:] not in result.err + result.out
