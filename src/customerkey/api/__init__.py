"""The HTTP face of customerkey: the FastAPI app and what it is made of.

``app`` builds the application (error rendering, health, metrics), ``middleware`` holds the
pure ASGI middlewares wrapped around it, ``deps`` the request context and authentication,
``tokens`` the OAuth2 access tokens it issues and checks, ``rate_limit`` the token endpoint's
admission control, ``schemas`` the keys API's bodies and shapes, and ``routers`` one router per
resource: the Azure-Key-Vault-compatible keys API, the token and discovery endpoints, and the
admin API. Serving it over HTTPS (TLS material, uvicorn, the supervisor) is ``server``'s.
"""
