"""SQLite: the read tables' CHECKs on a list of values (`status IN ('posted', 'pending', ...)`)
become ORs of comparisons (`status = 'posted' OR status = 'pending' OR ...`).

Both accept exactly the same values. SQLite tests an `IN` of more than two constants against a
temporary index that it builds each time the statement runs, and the projections insert with one
run per row (`executemany`): measured with SQLite 3.40, that index cost 1.7 us of the 6.6 us an
rm_postings row took, 25% of rebuilding the postings projection. Comparisons are tested in place.

SQLite cannot alter a constraint, so each table is rebuilt as SQLite documents it, inside the
migration's transaction: a new table from the stored CREATE statement with the CHECKs rewritten,
the rows copied, the old table dropped, the new one renamed, its indexes made again from their
stored statements (so names a replay gave them are kept).

PostgreSQL: nothing to do. There `IN` is one comparison with an array.
"""

import re
import sqlite3

from yoyo import step

#: The tables with a CHECK on a list of values (m0002).
TABLES = ("rm_accounts", "rm_postings")
_IN_LIST = re.compile(r"CHECK \((\w+) IN \(([^()]*)\)\)")
_OR_CHAIN = re.compile(r"CHECK \(((\w+) = '[^']*'(?: OR \2 = '[^']*')+)\)")
_CREATE_TABLE = re.compile(r'^CREATE TABLE\s+("?)(\w+)\1', re.IGNORECASE)


def as_comparisons(table_sql):
    def ors(match):
        column, values = match.group(1), [v.strip() for v in match.group(2).split(",")]
        return "CHECK (" + " OR ".join(f"{column} = {value}" for value in values) + ")"

    return _IN_LIST.subn(ors, table_sql)


def as_in_lists(table_sql):
    def in_list(match):
        column = match.group(2)
        values = re.findall(r"= ('[^']*')", match.group(1))
        return f"CHECK ({column} IN ({', '.join(values)}))"

    return _OR_CHAIN.subn(in_list, table_sql)


def _rebuild(connection, rewrite):
    if not isinstance(connection, sqlite3.Connection):
        return
    cursor = connection.cursor()
    for table in TABLES:
        cursor.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,))
        (table_sql,) = cursor.fetchone()
        new_sql, rewritten = rewrite(table_sql)
        if not rewritten:
            continue
        cursor.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ? "
            "AND sql IS NOT NULL",
            (table,),
        )
        indexes = [index_sql for (index_sql,) in cursor.fetchall()]
        staging = f"{table}__m0005"
        cursor.execute(_CREATE_TABLE.sub(f'CREATE TABLE "{staging}"', new_sql, count=1))
        cursor.execute(f'INSERT INTO "{staging}" SELECT * FROM "{table}"')
        cursor.execute(f'DROP TABLE "{table}"')
        cursor.execute(f'ALTER TABLE "{staging}" RENAME TO "{table}"')
        for index_sql in indexes:
            cursor.execute(index_sql)


def apply_step(connection):
    _rebuild(connection, as_comparisons)


def rollback_step(connection):
    _rebuild(connection, as_in_lists)


steps = [step(apply_step, rollback_step)]
