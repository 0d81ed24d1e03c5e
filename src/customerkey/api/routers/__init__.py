"""The API's routers, one per resource; ``api.app`` includes them in the order routes are tried.

``keys`` is the Azure-Key-Vault-compatible keys API (vault hosts); ``auth`` the token endpoint
and its signing keys, ``discovery`` the sign-in discovery documents; the admin API under
``/api/v1``: ``vaults`` (and access policies), ``principals``, ``audit``, ``tenants``,
``policies`` (DEPs), ``mailboxes``, ``jobs``, and ``files`` (the files workload: its policy,
sites and files). Handlers stay thin: authenticate, call one service, shape the answer.
"""
