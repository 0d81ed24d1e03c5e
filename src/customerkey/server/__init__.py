"""Serving customerkey over HTTPS.

``tls`` owns the TLS material (the local CA and server certificate, or the operator's own),
``https`` runs an ASGI app over HTTPS with uvicorn, and ``supervisor`` runs the platform server:
one process with its scheduler and job worker, or a supervisor forking several server processes.
"""
