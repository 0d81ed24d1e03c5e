"""Settings, read from the environment (prefix ``CUSTOMERKEY_``) with sane defaults.

``CUSTOMERKEY_HOME`` is the data folder (default ``~/.customerkey``); without
``CUSTOMERKEY_DATABASE_URL`` the database is SQLite inside it.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_home() -> Path:
    return Path.home() / ".customerkey"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CUSTOMERKEY_", extra="ignore")

    home: Path = Field(default_factory=default_home)
    database_url: str | None = None
    domain: str = "vault.localhost"
    host: str = "127.0.0.1"
    port: int = Field(default=8443, ge=1, le=65535)
    dek_cache_ttl_seconds: int = Field(default=900, ge=0)
    max_request_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    token_lifetime_seconds: int = Field(default=3600, ge=60)

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.home / 'customerkey.db'}"
