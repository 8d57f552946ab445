"""Hand-written SQL on the transaction's own DBAPI connection, for the hot paths.

Building and caching a SQLAlchemy statement costs 100–300 µs of Python per execution,
several times what SQLite needs to run it; a webhook runs five or six. The inbound pipeline,
the outbox and the delivery callbacks therefore speak plain SQL (the same text on SQLite and
PostgreSQL, `:name` placeholders) through `Raw`, inside the transaction SQLAlchemy opened,
and convert the two types whose storage differs: timestamps (naive UTC text on SQLite, like
`app.db.UtcDateTime`) and JSON. Everything else keeps using SQLAlchemy Core.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from psycopg.types.json import Json
from sqlalchemy.engine import Connection

from app.db import UtcDateTime
from app.models import metadata

_CURSOR = "optline.cursor"
_NAME = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")
# Columns whose values need converting on SQLite, found from the models once.
DATETIME_COLUMNS = frozenset(c.name for t in metadata.tables.values() for c in t.columns if isinstance(c.type, UtcDateTime))
JSON_COLUMNS = frozenset(c.name for t in metadata.tables.values() for c in t.columns if c.type.__class__.__name__ == "JSON")


@lru_cache(maxsize=512)
def pg_sql(sql: str) -> str:
    """`:name` placeholders → psycopg's `%(name)s` (and literal % doubled)."""
    return _NAME.sub(r"%(\1)s", sql.replace("%", "%%"))


@lru_cache(maxsize=1024)  # a text writes its time into six or seven columns
def _sqlite_datetime(value: datetime) -> str:
    if value.tzinfo is None:
        raise ValueError("naive datetime given to the database")
    # The text SQLAlchemy's SQLite DateTime writes ("%Y-%m-%d %H:%M:%S.%f"), five times cheaper than strftime.
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


# Let sqlite3 adapt parameters in C instead of a Python pass over every value. SQLAlchemy is
# unaffected: its DateTime and JSON types hand sqlite3 strings, never these types.
sqlite3.register_adapter(datetime, _sqlite_datetime)
sqlite3.register_adapter(dict, json.dumps)
sqlite3.register_adapter(list, json.dumps)


class Array(list):  # type: ignore[type-arg]
    """Values to bind as one PostgreSQL array (a plain list binds as JSON, for JSON columns)."""


def _pg_value(value: Any) -> Any:
    return Json(value) if isinstance(value, (dict, list)) and type(value) is not Array else value


def _pg_json(value: Any) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database")
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


class Raw:
    """Plain SQL inside the transaction of a SQLAlchemy connection."""

    __slots__ = ("cur", "pg")

    def __init__(self, conn: Connection):
        self.pg = conn.dialect.name == "postgresql"
        # `conn.connection` checks the connection out, so the transaction has begun on it. Its
        # cursor is kept with the DBAPI connection: every statement consumes its rows at once.
        dbapi = conn.connection
        cur = dbapi.info.get(_CURSOR)
        if cur is None:
            cur = dbapi.info[_CURSOR] = dbapi.driver_connection.cursor()  # type: ignore[union-attr]
        self.cur = cur

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> Any:
        """Run one statement; returns the cursor."""
        if self.pg:
            self.cur.execute(pg_sql(sql), {k: _pg_value(v) for k, v in (params or {}).items()})
        else:
            self.cur.execute(sql, params or {})
        return self.cur

    def executemany(self, sql: str, rows: Sequence[Mapping[str, Any]]) -> int:
        """Run one statement over many parameter sets (psycopg pipelines them; sqlite3 loops in C); rows touched."""
        if self.pg:
            self.cur.executemany(pg_sql(sql), [{k: _pg_value(v) for k, v in row.items()} for row in rows])
        else:
            self.cur.executemany(sql, rows)
        return int(self.cur.rowcount)

    def insert_rows(self, table: str, columns: tuple[str, ...], rows: Sequence[Mapping[str, Any]], *,
                    on_conflict: str = "", ids: bool = False) -> list[int]:
        """Insert `rows` (each holding at least `columns`) in their order, with one statement; their new ids if asked.

        `on_conflict` (e.g. "(provider, message_id) DO NOTHING") may skip rows: then fewer ids
        come back, and the caller must not guess which rows they belong to.
        - PostgreSQL: the rows travel as one JSON parameter, so the statement's text is the same
          however many there are, and is prepared once (a multi-row VALUES list is a new
          statement, parsed and planned anew, for every row count). Values in a JSON column
          must be objects or arrays.
        - SQLite: executemany, which loops in C over one prepared statement. The writer holds
          the database's only write lock and the ids are rowids, so the rows get consecutive
          ids ending at last_insert_rowid().
        """
        if not rows:
            return []
        if self.pg:
            data = json.dumps(rows, default=_pg_json, ensure_ascii=False)
            self.cur.execute(_insert_json_sql(table, columns, on_conflict, ids), (data,))
            return sorted(row[0] for row in self.cur.fetchall()) if ids else []
        self.cur.executemany(_insert_sql(table, columns, on_conflict), rows)
        if not ids:
            return []
        inserted = self.cur.rowcount
        last = self.cur.execute("SELECT last_insert_rowid()").fetchone()[0]
        return list(range(last - inserted + 1, last + 1))

    def each(self, name: str, values: Iterable[str], params: dict[str, Any]) -> str:
        """A FROM item with one row per text in `values`, in column `name.value`; its text does not vary with them.

        Join it to a table through a correlated subquery (one index probe per value): with a
        join, PostgreSQL may choose a hash join over a scan of the whole table, and does so on
        a table it has no statistics for yet, e.g. a new database on launch day.
        """
        if self.pg:
            params[name] = Array(values)
            return f"unnest(CAST(:{name} AS text[])) AS {name}(value)"
        params[name] = json.dumps(list(values), ensure_ascii=False)
        return f"json_each(:{name}) AS {name}"

    def rows(self, sql: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Every row as a dict, timestamps and JSON converted."""
        cur = self.execute(sql, params)
        names = [d[0] for d in cur.description]
        rows = cur.fetchall()
        if self.pg:
            return [dict(zip(names, row, strict=True)) for row in rows]
        convert = [(i, n) for i, n in enumerate(names) if n in DATETIME_COLUMNS or n in JSON_COLUMNS]
        out = []
        for row in rows:
            record = dict(zip(names, row, strict=True))
            for _i, name in convert:
                value = record[name]
                if value is not None:
                    record[name] = (datetime.fromisoformat(value).replace(tzinfo=UTC) if name in DATETIME_COLUMNS
                                    else json.loads(value))
            out.append(record)
        return out

    def scalar(self, sql: str, params: Mapping[str, Any] | None = None) -> Any:
        """The first column of the first row, or None."""
        row = self.execute(sql, params).fetchone()
        return None if row is None else row[0]

    def rowcount(self, sql: str, params: Mapping[str, Any] | None = None) -> int:
        """Run a statement and return how many rows it touched."""
        return int(self.execute(sql, params).rowcount)


@lru_cache(maxsize=256)
def insert_sql(table: str, columns: tuple[str, ...], returning: str | None = None) -> str:
    """INSERT INTO table (columns) VALUES (:columns) [RETURNING x]."""
    sql = f"INSERT INTO {table} ({', '.join(_q(c) for c in columns)}) VALUES ({', '.join(':' + c for c in columns)})"
    return f"{sql} RETURNING {returning}" if returning else sql


@lru_cache(maxsize=256)
def _insert_json_sql(table: str, columns: tuple[str, ...], on_conflict: str, ids: bool) -> str:
    # Ids are drawn in the ORDER BY's order, so sorted they match the rows.
    sql = (f"INSERT INTO {table} ({', '.join(_q(c) for c in columns)})"
           f" SELECT {', '.join('r.' + _q(c) for c in columns)} FROM json_populate_recordset(NULL::{table}, %s)"
           " WITH ORDINALITY AS r ORDER BY r.ordinality")
    if on_conflict:
        sql += f" ON CONFLICT {on_conflict}"
    return sql + " RETURNING id" if ids else sql


@lru_cache(maxsize=256)
def _insert_sql(table: str, columns: tuple[str, ...], on_conflict: str) -> str:
    sql = insert_sql(table, columns)
    return f"{sql} ON CONFLICT {on_conflict}" if on_conflict else sql


@lru_cache(maxsize=256)
def update_sql(table: str, columns: tuple[str, ...], key: str = "id") -> str:
    """UPDATE table SET c = :c, … WHERE key = :key."""
    sets = ", ".join(f"{_q(c)} = :{c}" for c in columns)
    return f"UPDATE {table} SET {sets} WHERE {key} = :{key}"


def in_list(name: str, values: Sequence[Any] | Iterable[Any], params: dict[str, Any]) -> str:
    """`(:name0, :name1, …)` for an IN clause, adding the values to `params`."""
    keys = []
    for i, value in enumerate(values):
        params[f"{name}{i}"] = value
        keys.append(f":{name}{i}")
    return "(" + ", ".join(keys) + ")" if keys else "(NULL)"


def _q(column: str) -> str:
    # "to" is a reserved word on PostgreSQL.
    return f'"{column}"' if column == "to" else column
