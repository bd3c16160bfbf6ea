"""Where each projection stands: the position it has applied, its lag behind the head of the
log, the generation of its tables (how many replays swapped in) and the event it failed on, if
any. Read from `ledger_projections`, so it describes every projector of the database, whichever
process runs it (`ledger status`, `/ready`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from ledger_core.store import EVENTS_TABLE
from projections.base import TRACKING_TABLE, head_position
from projections.db import Database
from projections.registry import PROJECTIONS


@dataclass(frozen=True)
class ProjectionStatus:
    name: str
    position: int
    lag: int
    generation: int
    failed_position: int | None
    failed_topic: str | None
    failed_reason: str | None
    failed_at: datetime | None


def sealing_key_ids(database_url: str) -> set[str]:
    """The ids of the encryption keys that have sealed text in this database (`ledger_keys`;
    none before the table exists)."""
    from ledger_core.store import KEYS_TABLE

    database = Database(database_url)
    connection = database.connect()
    try:
        cursor = connection.cursor()
        if not database.table_exists(cursor, KEYS_TABLE):
            return set()
        cursor.execute(f"SELECT key_id FROM {KEYS_TABLE}")
        return {row[0] for row in cursor.fetchall()}
    finally:
        connection.close()


def read_models_exist(database_url: str) -> bool:
    """Whether the database has the read models' tables (the migrations were applied); raises
    what connecting raises if the database cannot be reached."""
    database = Database(database_url)
    connection = database.connect()
    try:
        return database.table_exists(connection.cursor(), TRACKING_TABLE)
    finally:
        connection.close()


def projection_statuses(database_url: str) -> tuple[int, list[ProjectionStatus]]:
    """(head position, the status of each registered projection)."""
    database = Database(database_url)
    connection = database.connect()
    try:
        cursor = connection.cursor()
        # A database the ledger never opened, or never migrated, has nothing applied yet.
        head = head_position(database, cursor) if database.table_exists(cursor, EVENTS_TABLE) else 0
        rows = {}
        if database.table_exists(cursor, TRACKING_TABLE):
            cursor.execute(
                "SELECT name, position, generation, failed_position, failed_topic, failed_reason, "
                f"failed_at FROM {TRACKING_TABLE} ORDER BY name"
            )
            rows = {row[0]: row for row in cursor.fetchall()}
    finally:
        connection.close()
    statuses = []
    for name in PROJECTIONS:
        row = rows.get(name)
        if row is None:
            statuses.append(ProjectionStatus(name, 0, head, 0, None, None, None, None))
            continue
        statuses.append(
            ProjectionStatus(
                name=name,
                position=int(row[1]),
                lag=max(head - int(row[1]), 0),
                generation=int(row[2]),
                failed_position=row[3],
                failed_topic=row[4],
                failed_reason=row[5],
                failed_at=database.dialect.to_timestamp(row[6]),
            )
        )
    return head, statuses
