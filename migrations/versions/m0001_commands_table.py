"""The core's commands table (idempotency keys, stored answers, posting rows).

Its DDL is the core's own (`ledger_core.store`), so the writer and this migration can never
disagree; `CREATE TABLE IF NOT EXISTS` lets a store opened before migrations ran keep its table.
"""

import sqlite3

from yoyo import step

from ledger_core.store import _PG_COMMANDS_DDL, _SQLITE_COMMANDS_DDL


def apply_step(connection):
    ddl = _SQLITE_COMMANDS_DDL if isinstance(connection, sqlite3.Connection) else _PG_COMMANDS_DDL
    connection.cursor().execute(ddl)


def rollback_step(connection):
    connection.cursor().execute("DROP TABLE IF EXISTS ledger_commands")


steps = [step(apply_step, rollback_step)]
