"""The service side of the admin API over a real server: tenants, DEPs, mailboxes, jobs."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from customerkey.identity.workload_principals import EXCHANGE

if TYPE_CHECKING:
    from tests.support.live_servers import LiveServer

PLATFORM_OPERATOR = "root@platform.example"


@pytest.fixture(scope="module")
def operator_token(live_server: LiveServer) -> str:
    view = live_server.cli_json(
        "principal", "create", PLATFORM_OPERATOR, "--tenant", "platform", "--roles", "operator"
    )
    return live_server.token(PLATFORM_OPERATOR, view["ClientSecret"], tenant="platform")


def test_tenant_policy_mailbox_and_reencryption_through_the_api(
    live: LiveServer, operator_token: str
) -> None:
    # only the operator creates tenants
    body = {"name": "contoso", "mail_domain": "contoso.com"}
    assert live.admin("POST", "/tenants", json=body).status_code == 403
    # (the server fixture made contoso; the operator makes another, which contoso's admin
    # does not see)
    other = {"name": "northwind", "mail_domain": "northwind.com"}
    created = live.admin("POST", "/tenants", json=other, token=operator_token)
    assert created.status_code == 201, created.text
    assert created.json()["MailDomain"] == "northwind.com"
    again = live.admin("POST", "/tenants", json=body, token=operator_token)
    assert again.status_code == 409, again.text
    tenants = live.admin("GET", "/tenants").json()["value"]
    assert [t["Name"] for t in tenants] == ["contoso"]

    uris = []
    for vault, region in (("svc-vault-a", "eastus"), ("svc-vault-b", "westus")):
        live.create_vault(vault, region=region, tenant="contoso")
        key = live.admin("GET", f"/vaults/{vault}").json()
        assert key["EnableSoftDelete"] is True
        live.cli(
            "key", "create", vault, "root", "--protection", "hsm", "--ops", "wrapKey,unwrapKey"
        )
        uris.append(f"https://{vault}.vault.azure.net/keys/root")

    policy_body = {"name": "NA-DEP", "AzureKeyIDs": uris, "description": "NA"}
    refused = live.admin("POST", "/tenants/contoso/policies", json=policy_body)
    assert refused.status_code == 400, refused.text
    assert "lacks" in refused.json()["error"]["message"] or "permission" in refused.text
    for vault in ("svc-vault-a", "svc-vault-b"):
        live.grant(vault, EXCHANGE.app_id, ["wrapKey", "unwrapKey", "get"])
    made = live.admin("POST", "/tenants/contoso/policies", json=policy_body)
    assert made.status_code == 201, made.text
    policy = made.json()
    assert policy["AzureKeyIDs"] == uris and policy["Enabled"] is True

    by_guid = live.admin("GET", f"/tenants/contoso/policies/{policy['Guid']}").json()
    assert by_guid["Name"] == "NA-DEP"
    renamed = live.admin(
        "PATCH", "/tenants/contoso/policies/NA-DEP", json={"description": "North America"}
    ).json()
    assert renamed["Description"] == "North America"

    box = live.admin(
        "POST",
        "/tenants/contoso/mailboxes",
        json={"upn": "bob@contoso.com", "display_name": "Bob"},
    )
    assert box.status_code == 201, box.text
    assert box.json()["RecipientTypeDetails"] == "UserMailbox"
    assert live.admin("GET", "/mailboxes/bob@contoso.com/statistics").json()["IsEncrypted"] is False

    assigned = live.admin(
        "PUT",
        "/mailboxes/bob@contoso.com/dataEncryptionPolicy",
        json={"data_encryption_policy": "NA-DEP"},
    )
    assert assigned.status_code == 202, assigned.text
    assert assigned.json()["job"] is None  # no content yet: the key is simply replaced
    stats = live.admin("GET", "/mailboxes/bob@contoso.com/statistics").json()
    assert stats["IsEncrypted"] is True
    assert stats["DataEncryptionPolicyID"] == policy["CurrentKeyGenerationId"]
    found = live.admin("GET", f"/tenants/contoso/policies/{stats['DataEncryptionPolicyID']}")
    assert found.json()["Guid"] == policy["Guid"]

    assert [
        m["UserPrincipalName"]
        for m in live.admin("GET", "/tenants/contoso/mailboxes").json()["value"]
    ] == ["bob@contoso.com"]
    assert live.admin("GET", "/mailboxes/bob@contoso.com/items").json() == {"value": []}
    missing = live.admin("GET", "/mailboxes/nobody@contoso.com")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "MailboxNotFound"


def test_service_api_refuses_users_without_roles_and_bad_bodies(live: LiveServer) -> None:
    secret = live.create_principal("carol@contoso.com")
    token = live.token("carol@contoso.com", secret)
    for method, path in (
        ("GET", "/tenants"),
        ("GET", "/tenants/contoso/policies"),
        ("GET", "/mailboxes/bob@contoso.com"),
        ("GET", "/jobs"),
    ):
        response = live.admin(method, path, token=token)
        assert response.status_code == 403, (path, response.text)
        assert response.json()["error"]["code"] == "Forbidden"
    bad = live.admin("POST", "/tenants/contoso/policies", json={"name": "x", "AzureKeyIDs": "no"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "BadParameter"
    extra = live.admin(
        "POST", "/tenants/contoso/mailboxes", json={"upn": "x@contoso.com", "bogus": 1}
    )
    assert extra.status_code == 400
