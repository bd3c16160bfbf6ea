"""The core's append function on PostgreSQL (`ledger_append_batch`: one statement per append).

Its DDL is the core's own (`ledger_core.store`), so the writer and this migration can never
disagree; `CREATE OR REPLACE` lets a store opened before migrations ran keep its function. SQLite
has no server-side functions and needs none (its append is in-process): nothing to do there.
"""

import sqlite3

from yoyo import step

from ledger_core.store import _PG_APPEND_FUNCTION_DDL, APPEND_FUNCTION


def apply_step(connection):
    if not isinstance(connection, sqlite3.Connection):
        connection.cursor().execute(_PG_APPEND_FUNCTION_DDL)


def rollback_step(connection):
    if not isinstance(connection, sqlite3.Connection):
        connection.cursor().execute(f"DROP FUNCTION IF EXISTS {APPEND_FUNCTION}")


steps = [step(apply_step, rollback_step)]
