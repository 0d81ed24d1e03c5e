"""The sliver of Azure Resource Manager the az CLI needs to sign in to customerkey.

``az cloud register --endpoint-resource-manager https://<host>:<port>/`` reads the cloud's
metadata document, ``az login --service-principal ... --tenant <tenant>`` lists the
subscriptions the principal sees, and from then on ``az keyvault key`` talks to the vaults
directly. On the bare host (a vault host answers 404):

====================================================  ====================================
``GET /metadata/endpoints?api-version=2022-09-01``    the cloud metadata document (one
                                                      cloud; ``2019-05-01``: a list of it)
``GET /subscriptions?api-version=...``                the caller's tenant's subscriptions
``GET /subscriptions/{id}?api-version=...``           one of them (``az login
                                                      --skip-subscription-discovery``)
====================================================  ====================================

The metadata names this server as the caller reached it (``discovery.authority_of``): sign-in
at ``loginEndpoint`` (az appends the tenant and finds the token endpoint through the tenant's
OpenID configuration), ARM at ``resourceManager``, and the key vault DNS suffix
``<domain>[:<port>]``, so ``--vault-name v`` is ``https://v.<domain>:<port>``.

ARM calls need a token for this server's ARM audience (``arm_audience``: the configured
authority with a trailing ``/``, ``audiences[0]`` of the metadata), which the token endpoint
issues next to vault tokens. The two audiences do not mix: a vault token is refused here, an
ARM token by the keys and admin APIs. A subscription is listed to every enabled principal of
the tenant that owns it (``SubscriptionRow``: the tenant of the first vault that named it) and
to nobody else; another tenant's subscription is "not found", as if it did not exist. ARM's
shapes: ``{"value": [...]}``, ids ``/subscriptions/<id>``, errors ``{"error": {"code",
"message"}}`` with ARM's codes.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool

from customerkey.api.deps import (
    ApiContext,
    AuthChallenge,
    NotAVaultHost,
    api,
    host_of,
    request_id,
    vault_label,
)
from customerkey.api.routers.discovery import authority_of
from customerkey.errors import BadParameter, CustomerKeyError, NotFound, Unauthorized
from customerkey.vault.models import Actor

router = APIRouter(tags=["arm"])

CLOUD_NAME = "customerkey"
# The metadata versions and their shapes: 2022-09-01 (what az sends) is one cloud, the older
# one a list of clouds (``ARM_CLOUD_METADATA_URL``).
METADATA_VERSIONS = {"2022-09-01": "object", "2019-05-01": "list"}
# Subscriptions - List/Get versions the az CLI and its API profiles send; they answer alike.
SUBSCRIPTION_VERSIONS = (
    "2016-06-01",
    "2019-06-01",
    "2019-11-01",
    "2020-01-01",
    "2021-01-01",
    "2022-12-01",
)
# What every subscription here says about itself (nothing in customerkey varies it).
_POLICIES = {
    "locationPlacementId": "Public_2014-09-01",
    "quotaId": "CustomerKey_2024-01-01",
    "spendingLimit": "Off",
}


class MissingApiVersion(BadParameter):
    code = "MissingApiVersionParameter"


class InvalidApiVersion(BadParameter):
    code = "InvalidApiVersionParameter"


class SubscriptionNotFound(NotFound):
    code = "SubscriptionNotFound"


class ArmUnauthorized(AuthChallenge):
    """ARM's 401: ``AuthenticationFailed`` without a token, ``InvalidAuthenticationToken``
    with one it refuses; the challenge names this server's sign-in authority."""

    code = "InvalidAuthenticationToken"


class ArmTokenMissing(ArmUnauthorized):
    code = "AuthenticationFailed"


def arm_audience(context: ApiContext) -> str:
    """The audience of ARM tokens: this server's configured authority, ``https://host[:port]/``."""
    return context.authority + "/"


def _api_version(request: Request, supported: tuple[str, ...]) -> str:
    version = request.query_params.get("api-version")
    if not version:
        raise MissingApiVersion("The api-version query parameter (?api-version=) is required.")
    if version not in supported:
        raise InvalidApiVersion(
            f"The api-version '{version[:40]}' is invalid. The supported versions are '"
            + ",".join(supported)
            + "'."
        )
    return version


def _bare_host(request: Request) -> ApiContext:
    context = api(request)
    if vault_label(host_of(request), context.domain) is not None:
        raise NotAVaultHost("Azure Resource Manager answers on the bare host, not a vault host.")
    return context


def metadata(authority: str, context: ApiContext) -> dict[str, Any]:
    """The cloud metadata document for a caller that reached this server as ``authority``."""
    return {
        "name": CLOUD_NAME,
        "resourceManager": authority + "/",
        "authentication": {
            "loginEndpoint": authority,
            "audiences": [arm_audience(context)],
            "tenant": "common",
            "identityProvider": "AAD",
        },
        # ``<domain>[:<port>]``: az builds ``https://<vault>`` + "." + this.
        "suffixes": {"keyVaultDns": context.resource.removeprefix("https://")},
    }


# az appends "/metadata/endpoints" to --endpoint-resource-manager as typed: with the trailing
# "/" ARM's own address has, the path begins with "//".
@router.get("//metadata/endpoints", include_in_schema=False)
@router.get("/metadata/endpoints")
def metadata_endpoints(request: Request) -> Any:
    context = _bare_host(request)
    version = _api_version(request, tuple(METADATA_VERSIONS))
    document = metadata(authority_of(request), context)
    return [document] if METADATA_VERSIONS[version] == "list" else document


def _challenge(
    context: ApiContext, message: str, kind: type[ArmUnauthorized] = ArmUnauthorized
) -> ArmUnauthorized:
    described = message.encode("ascii", "replace").decode("ascii").replace('"', "'")
    return kind(
        message,
        f'Bearer authorization_uri="{context.authority}/common", error="invalid_token", '
        f'error_description="{described}"',
    )


async def arm_actor(request: Request) -> Actor:
    """The caller of an ARM route: a valid ARM token of an existing, enabled principal."""
    context = _bare_host(request)
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        wanted = f"The request needs a bearer token for {arm_audience(context)}."
        raise _challenge(context, wanted, ArmTokenMissing)
    try:
        claims = context.signer.verify(token.strip(), audience=arm_audience(context))
    except Unauthorized as refused:
        raise _challenge(context, refused.message) from None
    principal = context.principals.get(claims.subject)
    if principal is None:
        try:
            principal = await run_in_threadpool(context.runtime.principals.get, claims.subject)
        except CustomerKeyError:
            raise _challenge(context, "The token's principal no longer exists.") from None
        context.principals.put(principal, claims.subject)
    # As the keys and admin APIs decide (deps._actor_from_token): the directory, not the token.
    if principal.object_id != claims.subject or principal.tenant != claims.tenant:
        raise _challenge(context, "The token's principal no longer exists.")
    if not principal.enabled:
        raise _challenge(context, "The token's principal is disabled.")
    if claims.generation != principal.token_generation:
        raise _challenge(context, "The token was revoked; sign in again.")
    return principal.actor(request_id=request_id(request))


def subscription_view(subscription: str, tenant: str) -> dict[str, Any]:
    return {
        "id": f"/subscriptions/{subscription}",
        "authorizationSource": "RoleBased",
        "managedByTenants": [],
        "subscriptionId": subscription,
        "tenantId": tenant,
        "displayName": subscription,
        "state": "Enabled",
        "subscriptionPolicies": dict(_POLICIES),
    }


@router.get("/subscriptions")
async def list_subscriptions(request: Request, actor: Actor = Depends(arm_actor)) -> dict[str, Any]:
    _api_version(request, SUBSCRIPTION_VERSIONS)
    ids = await run_in_threadpool(api(request).runtime.vault.subscriptions, actor)
    return {"value": [subscription_view(s, actor.tenant) for s in ids]}


@router.get("/subscriptions/{subscription}")
async def get_subscription(
    subscription: str, request: Request, actor: Actor = Depends(arm_actor)
) -> dict[str, Any]:
    _api_version(request, SUBSCRIPTION_VERSIONS)
    ids = await run_in_threadpool(api(request).runtime.vault.subscriptions, actor)
    if subscription not in ids:
        raise SubscriptionNotFound(f"The subscription '{subscription[:128]}' could not be found.")
    return subscription_view(subscription, actor.tenant)
