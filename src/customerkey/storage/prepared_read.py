"""``PreparedRead``: a read-only Core ``select``, compiled once per database, run on a pooled
DB-API connection without an ORM session or a SQLAlchemy ``Connection``.

For the hottest read only: a key operation's checks, once per call of the keys API. Through a
``Database.read()`` session that read cost about 150 µs of Python, through a Core connection
about 80, this way about 20 (SQLite, one thread; bench/README.md). One statement is its own
consistent snapshot, so no transaction is opened around it: the engine's SQLite connections are
in autocommit mode (``Database`` issues ``BEGIN`` itself), and on PostgreSQL the pool rolls
back the statement's implicit transaction when the connection goes back.

Values come back as the ORM gives them: each selected column's type converts its value for the
dialect (datetimes stored as text on SQLite, JSON, booleans), by its public
``result_processor``. Parameters are plain values (strings, numbers); the statement's own
literals (a ``LIMIT``) are bound as compiled.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import Engine, Select

_Processor = Callable[[Any], Any] | None


class PreparedRead:
    """One ``select``; ``first(engine, params)`` is its first row, converted, or None."""

    def __init__(self, statement: Select[Any]) -> None:
        self.statement = statement
        # Per dialect name: (SQL text, positional parameter order or None, processors,
        # the statement's own bound literals). Filled once; a race fills it twice, alike.
        self._compiled: dict[
            str, tuple[str, tuple[str, ...] | None, tuple[_Processor, ...], dict[str, Any]]
        ] = {}

    def _prepared(
        self, engine: Engine
    ) -> tuple[str, tuple[str, ...] | None, tuple[_Processor, ...], dict[str, Any]]:
        dialect = engine.dialect
        prepared = self._compiled.get(dialect.name)
        if prepared is None:
            compiled = self.statement.compile(dialect=dialect)
            order = tuple(compiled.positiontup or ()) if compiled.positional else None
            processors = tuple(
                column.type.dialect_impl(dialect).result_processor(dialect, None)
                for column in self.statement.selected_columns
            )
            literals = {k: v for k, v in compiled.params.items() if v is not None}
            prepared = (str(compiled), order, processors, literals)
            self._compiled[dialect.name] = prepared
        return prepared

    def first(self, engine: Engine, params: Mapping[str, Any]) -> tuple[Any, ...] | None:
        sql, order, processors, literals = self._prepared(engine)
        values = {**literals, **params}
        arguments: tuple[Any, ...] | dict[str, Any]
        arguments = tuple(values[name] for name in order) if order is not None else values
        connection = engine.raw_connection()
        try:
            cursor = connection.cursor()
            try:
                cursor.execute(sql, arguments)
                row = cursor.fetchone()
            finally:
                cursor.close()
        finally:
            connection.close()
        if row is None:
            return None
        return tuple(
            value if process is None or value is None else process(value)
            for value, process in zip(row, processors, strict=True)
        )
