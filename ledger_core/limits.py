"""Every limit of the ledger, named in one place.

TigerBeetle's rule: put a limit on everything, and say why. Each constant here is enforced by
exactly one guard in the domain (or the API for wire-only limits) and tested at and past its edge.
"""

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final

# Amounts -----------------------------------------------------------------------------------------

#: Largest magnitude any balance (posted, or a pending total) may reach, in minor units: a posting
#: that would take a balance past it is refused with `invalid-amount`, so no read model overflows
#: a signed 64-bit column (what SQLite and PostgreSQL `bigint` store exactly).
MAX_BALANCE_MINOR: Final = 2**63 - 1

#: Largest amount of one entry, in minor units: as much as a balance can hold. Sums of amounts are
#: Python integers and every balance is checked against MAX_BALANCE_MINOR, so nothing overflows.
#: (USD: 92 quadrillion dollars; BTC at 8 places: 92 billion coins; an asset with the largest
#: exponent, 18 places, up to 9.223372036854775807 units: the price of 64-bit columns. It was
#: 10**18 - 1, which left such an asset unable to hold even one unit.)
MAX_AMOUNT_MINOR: Final = MAX_BALANCE_MINOR

#: Largest exponent (decimal places) of a currency or registered asset (API.md: 0-18).
MAX_CURRENCY_EXPONENT: Final = 18

# Postings ----------------------------------------------------------------------------------------

#: A posting has at least two entries: one debit and one credit.
MIN_ENTRIES_PER_POSTING: Final = 2
#: At most this many entries in one posting: a split across 100 accounts covers payroll-style
#: postings while bounding the work and the event size of one posting.
MAX_ENTRIES_PER_POSTING: Final = 100
#: At most this many postings in one all-or-nothing batch (API.md: 1-1000).
MAX_POSTINGS_PER_BATCH: Final = 1000

# Text and metadata -------------------------------------------------------------------------------

MAX_SPACE_NAME_LENGTH: Final = 200
MAX_ACCOUNT_NAME_LENGTH: Final = 200
MAX_ACCOUNT_CODE_LENGTH: Final = 64
MAX_DESCRIPTION_LENGTH: Final = 1000
MAX_MERCHANT_LENGTH: Final = 200
MAX_REASON_LENGTH: Final = 500
MAX_ASSET_NAME_LENGTH: Final = 200
#: Metadata is a flat map of string keys to string values.
MAX_METADATA_KEYS: Final = 32
MAX_METADATA_KEY_LENGTH: Final = 64
MAX_METADATA_VALUE_LENGTH: Final = 1000
#: Total of the UTF-8 lengths of every key and value of one metadata map.
MAX_METADATA_BYTES: Final = 8192

# Idempotency -------------------------------------------------------------------------------------

#: An idempotency key is 1-255 printable ASCII characters (API.md).
MAX_IDEMPOTENCY_KEY_LENGTH: Final = 255

#: A token is granted at most this many spaces (an admin token needs none).
MAX_SPACES_PER_TOKEN: Final = 1000

# Write path --------------------------------------------------------------------------------------

#: The writer appends at most this many commands in one database transaction (group commit).
MAX_COMMANDS_PER_APPEND: Final = 2000
#: Postings that may wait in the writer's queue, a batch counting as its postings and any other
#: command as one. Past it a command is refused at once with `unavailable` (503 with
#: Retry-After; nothing is recorded, the client retries with the same key) instead of joining a
#: queue that grows without bound while the database is slow or stuck: the memory held by
#: waiting requests stays bounded, and a client learns in microseconds, not at its own timeout,
#: that the ledger is saturated. The writer appends about 3,000 single postings or 10,000
#: postings in batches per second here, so a full queue is a few seconds of work; it holds 20
#: batches of the largest size.
MAX_QUEUED_POSTINGS: Final = 20_000
#: How many recent idempotency keys each space keeps in memory; older keys are found in the
#: commands table, whose primary key is what makes a key unique forever.
RECENT_KEYS_PER_SPACE: Final = 50_000
#: After a batch of a space conflicts (a key used before the in-memory window, or another
#: process appended first), the writer looks up the unknown keys of the space's next batches in
#: the commands table before deciding them, until this many batches in a row bring no such key.
#: (Without it, a client retrying old keys made every batch they were in conflict, drop the
#: space's state and reload it: about 230 such retries a second over HTTP here.)
KEY_CHECK_BATCHES_AFTER_CONFLICT: Final = 100
#: A snapshot of a space's state is written after this many new events in its stream, so loading a
#: space replays at most this many events after the snapshot.
SNAPSHOT_INTERVAL_EVENTS: Final = 5_000
#: A load of a space that replayed at least this many events after its snapshot (its cached state
#: was dropped: evicted, or after a conflict) snapshots it once its next batch lands, so loading it
#: again replays fewer. Without it, each batch that reused a key older than the in-memory window
#: (`RECENT_KEYS_PER_SPACE`) reloaded the space from a snapshot up to 5,000 events old.
SNAPSHOT_AFTER_LOAD_EVENTS: Final = 500
#: How many times the writer retries a batch after a concurrent writer (another process) appended
#: to the same space first, before answering `unavailable`.
MAX_APPEND_ATTEMPTS: Final = 20

# Database ----------------------------------------------------------------------------------------

#: Seconds a caller waits for a PostgreSQL connection (a new one, or a free one from a pool)
#: before the database counts as unavailable for now: the API answers 503 `unavailable` with
#: Retry-After within seconds while the database is down, instead of holding the request. (The
#: libraries' defaults waited 5-30 s per attempt, and eventsourcing's recorders make ten attempts:
#: a write waited minutes.) Whole seconds: libpq's `connect_timeout` takes no fractions.
DATABASE_CONNECT_TIMEOUT_S: Final = 3
#: TCP keepalive on every PostgreSQL connection (libpq's `keepalives_*`): a connection whose peer
#: vanished without a reset or a refusal (a host powered off, a network path that drops packets)
#: is found dead after this many seconds of silence and `DATABASE_KEEPALIVE_PROBES` unanswered
#: probes `DATABASE_KEEPALIVE_INTERVAL_S` apart (about 19 s), so a statement waiting on it fails
#: (503 `unavailable`; the writer answers and goes on) instead of waiting for the kernel's
#: default of over two hours. Idle pooled connections and the projections' LISTEN connection
#: are found dead the same way.
DATABASE_KEEPALIVE_IDLE_S: Final = 10
DATABASE_KEEPALIVE_INTERVAL_S: Final = 3
DATABASE_KEEPALIVE_PROBES: Final = 3
#: Data sent to PostgreSQL and not acknowledged (by its host's TCP, not by an answer: a long
#: statement is not cut) for this long drops the connection (libpq's `tcp_user_timeout`): the
#: case keepalive does not cover, a peer that vanished while a request was on its way.
DATABASE_TCP_USER_TIMEOUT_MS: Final = 20_000
#: The libpq parameters of every PostgreSQL connection the ledger opens (pools and single ones).
DATABASE_CONNECTION_PARAMETERS: Final[Mapping[str, Any]] = MappingProxyType(
    {
        "connect_timeout": DATABASE_CONNECT_TIMEOUT_S,
        "keepalives": 1,
        "keepalives_idle": DATABASE_KEEPALIVE_IDLE_S,
        "keepalives_interval": DATABASE_KEEPALIVE_INTERVAL_S,
        "keepalives_count": DATABASE_KEEPALIVE_PROBES,
        "tcp_user_timeout": DATABASE_TCP_USER_TIMEOUT_MS,
    }
)
#: PostgreSQL cancels a statement of the API's reads (the read models' pools) that runs longer
#: than this (`statement_timeout`): a read stuck behind a lock (an operator's `ALTER TABLE`,
#: `VACUUM FULL`, a session left in a transaction) or a runaway query answers 503 `unavailable`
#: and gives its connection back, instead of holding it, and its client, for as long as the lock
#: lasts. API reads take milliseconds; the slowest seen here, under a second.
READ_STATEMENT_TIMEOUT_MS: Final = 10_000
#: The store's connections (the writer's appends, its loads of spaces and keys): a statement
#: that waits this long for a lock fails (`lock_timeout`), so the batch is answered 503
#: `unavailable` (nothing recorded, retry with the same key) and the writer goes on, instead of
#: every command queueing behind an operator's lock on the events table. Writers of other
#: processes hold the events table's lock only for their append (milliseconds).
STORE_LOCK_TIMEOUT_MS: Final = 10_000
#: ... and one that runs this long is cancelled (an append of the largest group takes well
#: under a second here).
STORE_STATEMENT_TIMEOUT_MS: Final = 30_000
#: The libpq parameters of the API's read connections and of the store's (as
#: DATABASE_CONNECTION_PARAMETERS, with the server-side timeouts above). The projections, replay,
#: verify and export run without them: their long statements are their work.
READ_CONNECTION_PARAMETERS: Final[Mapping[str, Any]] = MappingProxyType(
    {
        **DATABASE_CONNECTION_PARAMETERS,
        "options": f"-c statement_timeout={READ_STATEMENT_TIMEOUT_MS}",
    }
)
STORE_CONNECTION_PARAMETERS: Final[Mapping[str, Any]] = MappingProxyType(
    {
        **DATABASE_CONNECTION_PARAMETERS,
        "options": (
            f"-c lock_timeout={STORE_LOCK_TIMEOUT_MS} "
            f"-c statement_timeout={STORE_STATEMENT_TIMEOUT_MS}"
        ),
    }
)
#: A pool that lost a connection retries with back-off (1, 2, 4 s ...) for at most this long, then
#: starts again afresh when a request needs a connection. (psycopg_pool's default, five minutes,
#: let the back-off grow over a long outage: the pools stayed empty for minutes after the
#: database was back.)
DATABASE_RECONNECT_WINDOW_S: Final = 10.0
#: Attempts of one read or write of the store through eventsourcing's recorders. A second attempt
#: replaces a pooled connection the database closed (a restart); none is made when no connection
#: came within `DATABASE_CONNECT_TIMEOUT_S`.
STORE_ATTEMPTS: Final = 2
