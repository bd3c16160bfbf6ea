"""What one app instance serves with: the Ledger, the read models and the projection runner.

Created in the app's on_startup and closed on_shutdown (Litestar lifecycle hooks), kept on
the app (`services_of(request)`): the app factory has no module-level state, so tests can run
several apps, each on its own database. Things passed in by the caller (a test's Ledger, say) are
used as they are and not closed.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, TypeVar

from litestar import Litestar, Request

from api.account_reader import AccountReader
from api.auth import hash_token
from api.limits import READ_THREADS, UNKNOWN_TOKEN_CATCH_UP_INTERVAL_S
from api.metrics import Metrics
from api.token_catch_up import TokenCatchUp
from ledger_core.crypto import Cipher
from ledger_core.ledger import Ledger
from ledger_core.settings import LedgerSettings

logger = logging.getLogger("api")

if TYPE_CHECKING:
    from projections.queries import ReadModels
    from projections.runner import ProjectionRunner

T = TypeVar("T")

#: What the token secret is derived for, from the encryption key (`Services.token_secret`).
TOKEN_SECRET_LABEL: Final = b"ledger api token secret"


@dataclass
class Services:
    settings: LedgerSettings
    metrics: Metrics
    run_projections: bool
    ledger_given: Ledger | None = None
    read_models_given: ReadModels | None = None
    _ledger: Ledger | None = None
    _read_models: ReadModels | None = None
    runner: ProjectionRunner | None = None
    read_executor: ThreadPoolExecutor | None = None
    account_reader: AccountReader | None = None
    admin_token_hash: str | None = field(default=None)
    _token_secret: str | None = None
    _token_catch_up: TokenCatchUp | None = None

    @property
    def token_catch_up(self) -> TokenCatchUp:
        """What the gate awaits before it answers 401 to an unknown token."""
        if self._token_catch_up is None:
            raise RuntimeError("the app has not started")
        return self._token_catch_up

    @property
    def ledger(self) -> Ledger:
        if self._ledger is None:
            raise RuntimeError("the app has not started")
        return self._ledger

    @property
    def read_models(self) -> ReadModels:
        if self._read_models is None:
            raise RuntimeError("the app has not started")
        return self._read_models

    @property
    def token_secret(self) -> str | None:
        """The server secret tokens issued over HTTP are derived from (see auth.derived_token):
        derived from the oldest encryption key (so a key rotation changes no replayed token),
        else LEDGER_ADMIN_TOKEN."""
        if self._token_secret is None:
            cipher = Cipher.from_setting(self.settings.encryption_key)
            self._token_secret = cipher.derived_secret(TOKEN_SECRET_LABEL) or ""
        return self._token_secret or self.settings.admin_token

    def start(self) -> None:
        url = self.settings.database_url
        if self.settings.admin_token:
            self.admin_token_hash = hash_token(self.settings.admin_token)
        self._ledger = self.ledger_given or Ledger.open(settings=self.settings)
        self._token_catch_up = TokenCatchUp(
            self._ledger.catch_up_global, UNKNOWN_TOKEN_CATCH_UP_INTERVAL_S
        )
        self._read_models = self.read_models_given or _open_read_models(url, self._ledger.cipher)
        self.read_executor = ThreadPoolExecutor(READ_THREADS, thread_name_prefix="ledger-read")
        self.account_reader = AccountReader(
            self._read_models,
            self.in_read_thread,
            database_url=url if self.read_models_given is None else None,
        )
        if self.run_projections:
            from projections.runner import ProjectionRunner

            self.runner = ProjectionRunner(url)
            self.runner.start()
        self.metrics.watch_projection_lag(self.projection_lag)
        self.metrics.watch_projection_failures(self.failed_projections)
        writer = self._ledger.writer
        self.metrics.watch_writer(
            lambda: writer.batches, lambda: writer.commands, lambda: writer.queued_postings
        )

    async def on_startup(self, app: Litestar) -> None:
        """The app's startup hook: `start()`, then what needs the serving event loop (the
        account reader's asyncio connections)."""
        self.start()
        await self.open_connections()

    async def on_shutdown(self, app: Litestar) -> None:
        if self.account_reader is not None:
            await self.account_reader.close()  # later reads go through the read models
        self.stop()

    async def open_connections(self) -> None:
        if self.account_reader is not None:
            await self.account_reader.open()

    async def in_read_thread(self, query: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a synchronous read-model query on the read threads (api.limits.READ_THREADS)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self.read_executor, functools.partial(query, *args, **kwargs)
        )

    def stop(self) -> None:
        if self.read_executor is not None:
            self.read_executor.shutdown(wait=True)
            self.read_executor = None
        if self.runner is not None:
            self.runner.stop()
            self.runner = None
        if self._read_models is not None and self.read_models_given is None:
            close = getattr(self._read_models, "close", None)
            if close is not None:
                close()
        if self._ledger is not None and self.ledger_given is None:
            self._ledger.close()
        self._ledger = None
        self._read_models = None

    def failed_projections(self) -> int:
        """How many projections stopped on an event (-1 if the database does not answer)."""
        if self._read_models is None:
            return -1
        try:
            return len(self._read_models.projection_failures())
        except Exception:  # a scrape must not fail because the database is away
            logger.warning("could not read the projections' failures", exc_info=True)
            return -1

    def projection_lag(self) -> int | None:
        """Events not yet applied by the projections (None when they do not run here)."""
        if self.runner is not None:
            lag: int = self.runner.lag()
            return lag
        if self._ledger is None or self._read_models is None:
            return None
        applied: int = self._read_models.applied_position()
        return max(0, self._ledger.store.max_position() - applied)


def _open_read_models(url: str, cipher: Cipher) -> ReadModels:
    """The read models, on a database migrated to the current schema, opening sealed text with
    the ledger's cipher."""
    from migrations import apply_migrations
    from projections.queries import ReadModels

    apply_migrations(url)
    return ReadModels(url, cipher=cipher)


def services_of(request: Request[Any, Any, Any]) -> Services:
    """The services of the app serving `request` (an attribute of the app, read on every request
    several times: cheaper than `app.state`, a mapping behind `__getattr__`)."""
    services: Services = request.scope["litestar_app"].services  # type: ignore[attr-defined]
    return services
