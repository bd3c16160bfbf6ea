"""One settings object for the whole ledger (pydantic-settings), read from `LEDGER_*`
environment variables. Every knob has a sane default; the database defaults to an SQLite file in
the working directory."""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ledger_core.limits import MAX_COMMANDS_PER_APPEND

DEFAULT_DATABASE_URL = "sqlite:///ledger.db"


class LedgerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LEDGER_", extra="ignore")

    #: `sqlite:///path` (relative to the working directory; `sqlite:////abs/path` for absolute)
    #: or `postgresql://user:password@host:port/dbname`.
    database_url: str = DEFAULT_DATABASE_URL
    #: The AES-256-GCM key(s) that seal sensitive text at rest (`ledger_core.crypto`): base64 of
    #: 32 bytes, comma-separated to rotate (the first seals). Unset: text is stored as it comes.
    #: Also the secret the API derives tokens from on `POST /v1/tokens`.
    encryption_key: str | None = None
    #: Bootstraps the first admin token of the HTTP API.
    admin_token: str | None = None
    #: Commands appended in one database transaction at most (group commit).
    max_commands_per_append: int = Field(
        default=MAX_COMMANDS_PER_APPEND, ge=1, le=MAX_COMMANDS_PER_APPEND
    )
    #: PostgreSQL connection pool of the process.
    postgres_pool_size: int = Field(default=4, ge=1, le=64)
    postgres_max_overflow: int = Field(default=8, ge=0, le=64)
    #: How long a read waits for `Ledger-Min-Position` before answering 503.
    position_wait_seconds: float = Field(default=5.0, gt=0, le=60)

    @field_validator("database_url")
    @classmethod
    def _supported_database(cls, url: str) -> str:
        if not url.startswith(DATABASE_URL_SCHEMES):
            raise ValueError("must start with sqlite:/// or postgresql://")
        return url


#: The database URLs the ledger opens (`ledger_core.store.open_store`).
DATABASE_URL_SCHEMES = ("sqlite:", "postgresql:", "postgres:", "postgresql+psycopg:")
