"""The ids of the encryption keys that have sealed values (`ledger_core.crypto`).

Its DDL is the core's own (`ledger_core.store.KEYS_DDL`, the same on both databases), as for the
commands table (m0001).
"""

from yoyo import step

from ledger_core.store import KEYS_DDL, KEYS_TABLE


def apply_step(connection):
    connection.cursor().execute(KEYS_DDL)


def rollback_step(connection):
    connection.cursor().execute(f"DROP TABLE IF EXISTS {KEYS_TABLE}")


steps = [step(apply_step, rollback_step)]
