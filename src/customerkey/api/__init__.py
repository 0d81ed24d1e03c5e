"""The HTTP face of customerkey.

Owns everything that speaks HTTPS: the TLS material the server presents (``tls``), the OAuth2
access tokens it issues and checks (``tokens``), the uvicorn runner (``server``), the pure ASGI
middlewares wrapped around every app (``middleware``), and the FastAPI routers for the
Azure-Key-Vault-compatible keys API, the admin API and the token endpoint.
"""
