"""The read models' tables and the projections' tracking table.

One DDL text for both databases; only the column types differ ({uuid}, {date}, {timestamp},
{integer}, {boolean}): PostgreSQL gets native `uuid`, `date`, `timestamptz` and `bigint`; SQLite
gets BLOB (16-byte UUIDs), TEXT (ISO dates, fixed-width UTC timestamps, see `projections.db`)
and INTEGER, and WITHOUT ROWID tables clustered on their primary key. Primary keys put rows in
log order within a space or an account, so projecting appends at the end of each range.
Constraints guard what the projections must never write: positive entry amounts, known enums,
non-negative pending totals, one account code per space, one posting per position.

- `ledger_projections`: per projection, the last log position applied (committed in the same
  transaction as the read tables' updates: exactly-once), the replay generation, and the event
  it last failed on.
- `balances` projection: `rm_spaces`, `rm_accounts` (balances in the normal direction),
  `rm_balance_holds` (open holds: what to release), `rm_entries` (posted legs with the running
  balance), `rm_daily_balances` (per account and effective date: the day's posted delta and the
  closing balance; balance-as-of is one index seek).
- `postings` projection: `rm_postings`, keyed by (space, log position), and
  `rm_posting_accounts` (which accounts a posting touches, for the account filter). A posting
  is found by its id through the core's `ledger_commands` (its primary key (space, posting id)
  holds the position of the event that recorded the posting): the writer already maintains that
  unique index in the same transaction as the event, and a second index on a random UUID here
  would cost a random page write per posting when projecting.

Index names are `<table>__<purpose>`; a replay builds `<table>__replay` with its own indexes.
"""

import sqlite3

from yoyo import step

TYPES = {
    "postgresql": {
        "uuid": "uuid",
        "date": "date",
        "timestamp": "timestamptz",
        "integer": "bigint",
        "boolean": "boolean",
        "without_rowid": "",
    },
    "sqlite": {
        "uuid": "BLOB",
        "date": "TEXT",
        "timestamp": "TEXT",
        "integer": "INTEGER",
        "boolean": "INTEGER",
        "without_rowid": "WITHOUT ROWID",
    },
}

STATEMENTS = [
    """
    CREATE TABLE ledger_projections (
        name text PRIMARY KEY,
        position {integer} NOT NULL DEFAULT 0 CHECK (position >= 0),
        generation {integer} NOT NULL DEFAULT 0,
        failed_position {integer},
        failed_topic text,
        failed_reason text,
        failed_at {timestamp}
    )
    """,
    """
    CREATE TABLE rm_spaces (
        space_id {uuid} PRIMARY KEY,
        position {integer} NOT NULL,
        name text NOT NULL,
        base_currency text NOT NULL,
        opened_at {timestamp} NOT NULL
    )
    """,
    """
    CREATE TABLE rm_accounts (
        space_id {uuid} NOT NULL,
        account_id {uuid} NOT NULL,
        position {integer} NOT NULL,
        name text NOT NULL,
        type text NOT NULL
            CHECK (type IN ('asset', 'liability', 'equity', 'income', 'expense')),
        subtype text NOT NULL,
        currency text NOT NULL,
        code text,
        normal_balance text NOT NULL CHECK (normal_balance IN ('debit', 'credit')),
        status text NOT NULL CHECK (status IN ('active', 'frozen', 'closed')),
        overdraft_limit_minor {integer} CHECK (overdraft_limit_minor >= 0),
        metadata text NOT NULL,
        posted_minor {integer} NOT NULL,
        pending_debits_minor {integer} NOT NULL CHECK (pending_debits_minor >= 0),
        pending_credits_minor {integer} NOT NULL CHECK (pending_credits_minor >= 0),
        PRIMARY KEY (space_id, account_id),
        UNIQUE (space_id, code),
        UNIQUE (space_id, position, account_id)
    ) {without_rowid}
    """,
    """
    CREATE TABLE rm_balance_holds (
        space_id {uuid} NOT NULL,
        posting_id {uuid} NOT NULL,
        effective_date {date} NOT NULL,
        entries text NOT NULL,
        PRIMARY KEY (space_id, posting_id)
    ) {without_rowid}
    """,
    """
    CREATE TABLE rm_entries (
        space_id {uuid} NOT NULL,
        account_id {uuid} NOT NULL,
        position {integer} NOT NULL,
        leg {integer} NOT NULL CHECK (leg >= 0),
        posting_id {uuid} NOT NULL,
        direction text NOT NULL CHECK (direction IN ('debit', 'credit')),
        amount_minor {integer} NOT NULL CHECK (amount_minor > 0),
        currency text NOT NULL,
        effective_date {date} NOT NULL,
        recorded_at {timestamp} NOT NULL,
        balance_after_minor {integer} NOT NULL,
        PRIMARY KEY (space_id, account_id, position, leg)
    ) {without_rowid}
    """,
    """
    CREATE TABLE rm_daily_balances (
        space_id {uuid} NOT NULL,
        account_id {uuid} NOT NULL,
        effective_date {date} NOT NULL,
        posted_delta_minor {integer} NOT NULL,
        closing_posted_minor {integer} NOT NULL,
        PRIMARY KEY (space_id, account_id, effective_date)
    ) {without_rowid}
    """,
    """
    CREATE TABLE rm_postings (
        space_id {uuid} NOT NULL,
        posting_id {uuid} NOT NULL,
        position {integer} NOT NULL,
        status text NOT NULL
            CHECK (status IN ('posted', 'pending', 'voided', 'expired', 'declined')),
        entries text NOT NULL,
        description text NOT NULL,
        effective_date {date} NOT NULL,
        merchant text,
        category_id {uuid},
        metadata text NOT NULL,
        pending {boolean} NOT NULL,
        expires_at {timestamp},
        recorded_at {timestamp} NOT NULL,
        reverses {uuid},
        reversed_by {uuid},
        declined_reason text,
        PRIMARY KEY (space_id, position)
    ) {without_rowid}
    """,
    "CREATE INDEX rm_postings__by_status ON rm_postings (space_id, status, position)",
    """
    CREATE TABLE rm_posting_accounts (
        space_id {uuid} NOT NULL,
        account_id {uuid} NOT NULL,
        position {integer} NOT NULL,
        posting_id {uuid} NOT NULL,
        PRIMARY KEY (space_id, account_id, position)
    ) {without_rowid}
    """,
    "INSERT INTO ledger_projections (name) VALUES ('balances')",
    "INSERT INTO ledger_projections (name) VALUES ('postings')",
]

TABLES = [
    "rm_posting_accounts",
    "rm_postings",
    "rm_daily_balances",
    "rm_entries",
    "rm_balance_holds",
    "rm_accounts",
    "rm_spaces",
    "ledger_projections",
]


def apply_step(connection):
    dialect = "sqlite" if isinstance(connection, sqlite3.Connection) else "postgresql"
    cursor = connection.cursor()
    for statement in STATEMENTS:
        cursor.execute(statement.format(**TYPES[dialect]))


def rollback_step(connection):
    cursor = connection.cursor()
    for table in TABLES:
        cursor.execute(f"DROP TABLE IF EXISTS {table}")


steps = [step(apply_step, rollback_step)]
