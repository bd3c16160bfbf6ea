"""`ledger serve` (the HTTP API) and `ledger token create|list|revoke` (API tokens: a new one is
printed once; the list never shows a token, only what it may do).

`ledger serve` applies the migrations, then serves `api.app.create_app()` with the projections
running in the same process (unless `--no-projections`, for a separate `ledger project`), on the
database LEDGER_DATABASE_URL names (an SQLite file by default, or PostgreSQL). On an empty
database it says how to get an admin token and make a first posting: it never makes a secret
silently.
"""

from __future__ import annotations

import asyncio
import gc
import signal
import uuid
from collections.abc import Callable
from typing import Any, Final

import click

from api.auth import hash_token, new_token
from ledger_core import commands as cmd
from ledger_core.ledger import Ledger
from ledger_core.settings import LedgerSettings
from ledger_core.types import CommandContext

DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 8000
#: The ASGI servers `ledger serve` can run; the default is the one that measured faster here.
SERVERS: Final = ("granian", "uvicorn")
DEFAULT_SERVER: Final = "granian"
#: The event loops `ledger serve` can run on. uvloop (libuv, in C) is the default where it is
#: installed (every platform but Windows): measured on the HTTP benchmark here, GET account
#: +17% requests/s and p99 -20%, single postings +8% (medians of interleaved pairs).
LOOPS: Final = ("uvloop", "asyncio")
DEFAULT_LOOP: Final = "uvloop"
#: Allocations between two collections of the youngest generation in `ledger serve` (Python's
#: default is 700): see `tune_garbage_collector`.
GC_YOUNG_THRESHOLD: Final = 20_000


@click.command()
@click.option("--host", default=DEFAULT_HOST, show_default=True, help="Address to listen on.")
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--no-projections",
    is_flag=True,
    help="Do not run the projections in this process (run `ledger project` beside it).",
)
@click.option(
    "--server",
    type=click.Choice(SERVERS),
    default=DEFAULT_SERVER,
    show_default=True,
    help="The ASGI server.",
)
@click.option(
    "--loop",
    type=click.Choice(LOOPS),
    default=DEFAULT_LOOP,
    show_default=True,
    help="The event loop (asyncio where uvloop is not installed).",
)
def serve(host: str, port: int, no_projections: bool, server: str, loop: str) -> None:
    """Serve the HTTP API (LEDGER_DATABASE_URL selects the database)."""
    from api.app import create_app
    from migrations import apply_migrations

    settings = LedgerSettings()
    apply_migrations(settings.database_url)
    if _check_keys(settings):
        click.echo(first_start_message(settings, host, port))
    if not settings.encryption_key:
        click.echo(UNENCRYPTED_WARNING, err=True)
    app = create_app(settings, run_projections=not no_projections)
    app.on_startup.append(tune_garbage_collector)
    click.echo(f"serving the ledger API on http://{host}:{port} (docs: /schema)")
    run_server(app, host, port, server, loop)


def tune_garbage_collector(app: Any) -> None:
    """After startup: move every object alive (the app, its routes and schema, the ledger's
    state) out of the collected generations (`gc.freeze`), and collect the youngest generation
    every `GC_YOUNG_THRESHOLD` allocations instead of 700.

    Why: with 64 requests in flight, the objects of the requests in flight at each young
    collection were promoted to the oldest generation (to die there soon after), so a full
    collection, which walks the whole heap including the ledger's state, ran every second or
    two: 50-180 ms each, collecting nothing, stalling every request in flight (measured on the
    HTTP benchmark: about 20 full collections in 30 s). With the higher threshold, requests
    mostly die young; two full collections ran in the same run, and CPU per posting fell from
    ~590 to ~430 us, GET account's p99 from ~105 to ~35 ms. Cycles are still collected."""
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, oldest)


def run_server(app: Any, host: str, port: int, server: str, loop: str = DEFAULT_LOOP) -> None:
    """Serve `app` in this process (one worker: the ledger's writer is in-process)."""
    factory = loop_factory(loop)
    if server == "granian":
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(_serve_granian(app, host, port))
        return
    import uvicorn

    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        loop="uvloop" if factory is not None else "asyncio",
    )


def loop_factory(loop: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop factory for `loop` (None: asyncio's own). Asked for uvloop where it is
    not installed, say so and use asyncio."""
    if loop == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        click.echo("uvloop is not installed here: serving on asyncio's event loop", err=True)
        return None
    new_event_loop: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return new_event_loop


async def _serve_granian(app: Any, host: str, port: int) -> None:
    """granian's embedded server in this event loop. It installs no signal handlers itself, so
    SIGINT and SIGTERM are wired to its graceful stop: in-flight requests finish and the app's
    shutdown hooks close the ledger and the projections."""
    from granian.constants import Interfaces
    from granian.server.embed import Server

    server = Server(app, address=host, port=port, interface=Interfaces.ASGI)
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signal_number, server.stop)
    await server.serve()


#: What `ledger serve` says on standard error when it runs without encryption keys.
UNENCRYPTED_WARNING: Final = (
    "warning: LEDGER_ENCRYPTION_KEY is not set: names, descriptions, merchants and metadata are "
    "stored unencrypted. `ledger keygen` prints a key; keep it safe, the data it encrypts cannot "
    "be read without it."
)


def _check_keys(settings: LedgerSettings) -> bool:
    """Refuse encryption keys that are malformed or cannot open what the database holds (before
    the server starts, so the operator reads one line, not a failed startup); return whether
    the database is empty."""
    from ledger_core.crypto import Cipher, check_store_keys
    from ledger_core.store import open_store

    cipher = Cipher.from_setting(settings.encryption_key)
    store = open_store(settings.database_url, create_tables=True)
    try:
        check_store_keys(cipher, store.key_ids())
        return store.max_position() == 0
    finally:
        store.close()


#: The line after which `first_start_message` lists its shell commands (tests run them).
FIRST_POSTING_HEADING: Final = (
    "Then a space, two accounts and a first posting (bash, curl, python3):"
)
#: Those commands; `BASE` and `TOKEN` are set before them.
FIRST_POSTING_COMMANDS: Final = r"""
field_id() { python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])'; }
auth="Authorization: Bearer $TOKEN"
SPACE=$(curl -sf -X POST "$BASE/v1/spaces" -H "$auth" -H 'Idempotency-Key: first-space' \
  -d '{"name": "Home", "base_currency": "USD"}' | field_id)
CASH=$(curl -sf -X POST "$BASE/v1/spaces/$SPACE/accounts" -H "$auth" \
  -H 'Idempotency-Key: first-cash' \
  -d '{"name": "Cash", "type": "asset", "currency": "USD"}' | field_id)
GIFTS=$(curl -sf -X POST "$BASE/v1/spaces/$SPACE/accounts" -H "$auth" \
  -H 'Idempotency-Key: first-gifts' \
  -d '{"name": "Gifts", "type": "income", "currency": "USD"}' | field_id)
curl -sf -X POST "$BASE/v1/spaces/$SPACE/postings" -H "$auth" \
  -H 'Idempotency-Key: first-posting' -d '{"entries": [
    {"account_id": "'"$CASH"'", "direction": "debit", "amount": "20.00"},
    {"account_id": "'"$GIFTS"'", "direction": "credit", "amount": "20.00"}]}'
"""


def first_start_message(settings: LedgerSettings, host: str, port: int) -> str:
    """What `ledger serve` prints on an empty database: how to get an admin token (nothing is
    generated silently) and shell commands for a first posting."""
    base = f"http://{host}:{port}"
    if settings.admin_token:
        token_step = "Your admin token is LEDGER_ADMIN_TOKEN's value:\n  TOKEN=$LEDGER_ADMIN_TOKEN"
    else:
        token_step = (
            "No admin token yet. Either restart with LEDGER_ADMIN_TOKEN set to a long random\n"
            "secret, or create one in another terminal (it is printed once):\n"
            "  TOKEN=$(ledger token create --role admin)"
        )
    if settings.encryption_key:
        key_step = ""
    else:
        key_step = (
            "To encrypt names, descriptions, merchants and metadata at rest, stop now and restart\n"
            "with a key (keep it: what it encrypts cannot be read without it):\n"
            "  export LEDGER_ENCRYPTION_KEY=$(ledger keygen)\n"
        )
    commands = f"BASE={base}" + FIRST_POSTING_COMMANDS
    indented = "\n".join("  " + line for line in commands.strip().splitlines())
    return (
        f"The ledger database is empty ({settings.database_url}).\n{key_step}{token_step}\n"
        f"{FIRST_POSTING_HEADING}\n{indented}\nThe API is described at {base}/schema."
    )


@click.group()
def token() -> None:
    """API tokens."""


@token.command("create")
@click.option("--role", type=click.Choice(["admin", "write", "read"]), required=True)
@click.option(
    "--space",
    "spaces",
    multiple=True,
    type=click.UUID,
    help=(
        "A space to grant (repeatable). A read or write token needs at least one to see "
        "anything; an admin token given spaces is limited to them."
    ),
)
def create_token(role: str, spaces: tuple[uuid.UUID, ...]) -> None:
    """Create an API token and print it (only its hash is stored: it is shown this once)."""
    value = new_token()
    with Ledger.open(settings=LedgerSettings()) as ledger:
        issued = ledger.execute(
            cmd.IssueToken(
                idempotency_key=f"cli-token:{uuid.uuid4()}",
                token_hash=hash_token(value),
                role=role,  # type: ignore[arg-type]
                spaces=spaces,
                context=CommandContext(user_agent="ledger token create"),
            )
        )
    click.echo(value)  # alone on standard output: TOKEN=$(ledger token create ...)
    click.echo(f"token id {issued.outcome.id} (for `ledger token revoke`)", err=True)  # type: ignore[union-attr]


@token.command("list")
def list_tokens() -> None:
    """Every token issued: its id, role, spaces and whether it is revoked (never the token
    itself: only its hash is stored). LEDGER_ADMIN_TOKEN is not listed: it is not stored."""
    with Ledger.open(settings=LedgerSettings()) as ledger:
        records = ledger.tokens()
    if not records:
        click.echo("no tokens issued (LEDGER_ADMIN_TOKEN, if set, is not stored)")
        return
    click.echo(f"{'id':<36}  {'role':<5}  {'state':<7}  spaces")
    for record in records:
        if record.spaces:
            spaces = ", ".join(str(space) for space in record.spaces)
        else:
            spaces = "every space" if record.role == "admin" else "none"
        state = "revoked" if record.revoked else "active"
        click.echo(f"{record.id!s:<36}  {record.role:<5}  {state:<7}  {spaces}")


@token.command("revoke")
@click.argument("token_id", type=click.UUID)
def revoke_token(token_id: uuid.UUID) -> None:
    """Revoke a token at once (every later request with it is 401). Revoking a revoked token
    changes nothing; an unknown id is an error."""
    from ledger_core import errors

    with Ledger.open(settings=LedgerSettings()) as ledger:
        try:
            ledger.execute(
                cmd.RevokeToken(
                    idempotency_key=f"cli-revoke:{uuid.uuid4()}",
                    token_id=token_id,
                    context=CommandContext(user_agent="ledger token revoke"),
                )
            )
        except errors.TokenNotFound as error:
            raise click.ClickException(error.detail) from error
    click.echo(f"revoked {token_id}")


@click.command()
def keygen() -> None:
    """Print a new encryption key for LEDGER_ENCRYPTION_KEY (AES-256, base64). To rotate, put
    the new key first and keep the old ones after it: LEDGER_ENCRYPTION_KEY=new,old."""
    from ledger_core.crypto import generate_key

    click.echo(generate_key())
