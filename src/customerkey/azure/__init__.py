"""Client-side helpers for using the ordinary Azure SDK against customerkey.

Owns what a user's script needs besides ``azure-keyvault-keys`` itself: a ``TokenCredential``
that signs in to customerkey's token endpoint with a client id and secret
(``ClientSecretCredential``), and an in-process resolver that sends ``*.vault.localhost`` names
to the loopback address (``resolve_to_loopback``).
"""

from customerkey.azure.credential import ClientSecretCredential
from customerkey.azure.localdns import (
    install_loopback_resolver,
    resolve_to_loopback,
    resolves_to_loopback,
    uninstall_loopback_resolver,
)

__all__ = [
    "ClientSecretCredential",
    "install_loopback_resolver",
    "resolve_to_loopback",
    "resolves_to_loopback",
    "uninstall_loopback_resolver",
]
