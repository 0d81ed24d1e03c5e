"""The service: the provider's side (principals, tenants, policies, key cache, purge path)."""
