"""How the service reaches root keys: a small interface and its implementations."""
