"""The ledger's public interface: submit commands, read a space's current state.

    ledger = Ledger.open("sqlite:///ledger.db")
    result = await ledger.submit(RecordPosting(...))      # from asyncio (the HTTP API)
    result = ledger.execute(RecordPosting(...))           # from a thread (CLI, tests)

`submit`/`execute` return a `CommandResult` or raise the command's `LedgerError`. Both go through
the one writer of the process (group commit); see `ledger_core.writer`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar
from uuid import UUID

from ledger_core import errors
from ledger_core.commands import Command
from ledger_core.crypto import CLEAR, Cipher, check_store_keys
from ledger_core.limits import MAX_COMMANDS_PER_APPEND
from ledger_core.money import CurrencyTable
from ledger_core.records import AccountRecord, AssetRecord, CommandResult, TokenRecord
from ledger_core.settings import LedgerSettings
from ledger_core.state import SpaceState
from ledger_core.store import LedgerStore, open_store
from ledger_core.writer import Clock, Writer, utc_now

T = TypeVar("T")


class Ledger:
    def __init__(
        self,
        store: LedgerStore,
        *,
        clock: Clock = utc_now,
        max_commands_per_append: int = MAX_COMMANDS_PER_APPEND,
        cipher: Cipher = CLEAR,
    ) -> None:
        """Raises `EncryptionKeyMissing` (closing nothing: the store is the caller's) when the
        store holds text sealed with a key `cipher` lacks."""
        check_store_keys(cipher, store.key_ids())
        if cipher.enabled:
            store.register_key_id(cipher.key_ids[0])
        self.store = store
        self.cipher = cipher
        self.writer = Writer(
            store, clock=clock, max_commands_per_append=max_commands_per_append, cipher=cipher
        )
        self.writer.start()

    @classmethod
    def open(
        cls,
        url: str | None = None,
        *,
        settings: LedgerSettings | None = None,
        clock: Clock = utc_now,
    ) -> Ledger:
        settings = settings or LedgerSettings()
        database_url = url or settings.database_url
        options: dict[str, int] = {}
        if database_url.startswith("postgres"):
            options = {
                "pool_size": settings.postgres_pool_size,
                "max_overflow": settings.postgres_max_overflow,
            }
        cipher = Cipher.from_setting(settings.encryption_key)
        store = open_store(database_url, create_tables=True, **options)
        try:
            return cls(
                store,
                clock=clock,
                max_commands_per_append=settings.max_commands_per_append,
                cipher=cipher,
            )
        except BaseException:
            store.close()
            raise

    def close(self) -> None:
        self.writer.stop()
        self.store.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # Commands ----------------------------------------------------------------------------------

    async def submit(self, command: Command) -> CommandResult:
        """Apply a command (asyncio callers). Raises the command's `LedgerError` if refused."""
        return await self.writer.submit_async(command)

    def execute(self, command: Command) -> CommandResult:
        """Apply a command and wait for its answer (threads)."""
        return self.writer.submit(command).result()

    # Reads of the current state (consistent: they run on the writer between batches) ---------

    @property
    def currencies(self) -> CurrencyTable:
        return self.writer.currencies

    def assets(self) -> list[AssetRecord]:
        state = self.writer.global_state
        return self.writer.call(
            lambda: [
                AssetRecord(code=code, exponent=exponent, name=state.asset_names.get(code, ""))
                for code, exponent in sorted(state.assets.items())
            ]
        )

    async def catch_up_global(self) -> None:
        """Read the tokens and assets other processes recorded since this one last looked
        (the writer also does so every `GLOBAL_CATCH_UP_SECONDS`)."""
        await self.writer.call_async(self.writer.catch_up_global)

    def tokens(self) -> list[TokenRecord]:
        """Every token issued, revoked ones included, in the order they were issued."""
        state = self.writer.global_state
        return self.writer.call(lambda: list(state.tokens.values()))

    def token_by_hash(self, token_hash: str) -> TokenRecord | None:
        """The live (not revoked) token with this SHA-256 hex hash, if any."""
        state = self.writer.global_state
        token_id = state.token_ids_by_hash.get(token_hash)
        return state.tokens.get(token_id) if token_id is not None else None

    def account(self, space_id: UUID, account_id: UUID) -> AccountRecord:
        def read() -> AccountRecord:
            state = self._state(space_id)
            account = state.accounts.get(account_id)
            if account is None:
                raise errors.AccountNotFound(f"no account {account_id} in this space")
            return account.record(space_id)

        return self.writer.call(read)

    def inspect(self, space_id: UUID, function: Callable[[SpaceState], T]) -> T:
        """Run `function` on a space's live state on the writer thread (tests, audit tools)."""
        return self.writer.call(lambda: function(self._state(space_id)))

    def expire_due_holds(self) -> int:
        """Record the expiry of every hold past its `expires_at` now (the writer also does this
        by itself when idle, and before every batch on the spaces it touches)."""
        return self.writer.call(self.writer.expire_due_holds)

    def load_space(self, space_id: UUID) -> SpaceState | None:
        """A fresh state of the space from the store, bypassing the writer's cache."""
        return self.writer.load_space(space_id)

    def _state(self, space_id: UUID) -> SpaceState:
        state = self.writer._space(space_id)
        if state is None:
            raise errors.SpaceNotFound(f"no space {space_id}")
        return state
