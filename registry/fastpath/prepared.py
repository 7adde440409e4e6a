"""The one seam between SQLAlchemy and a raw DBAPI connection: a statement compiled once for a dialect, and the
bind processing SQLAlchemy would do for each of its parameters, applied by hand."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, cast

from sqlalchemy.engine import Dialect
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ClauseElement


class Prepared:
    """A statement compiled once for ``dialect`` (a positional paramstyle: ``?`` or ``%s``): its SQL, and for
    each parameter in the SQL's order SQLAlchemy's bind processor of its type (the conversion of a datetime,
    date, Decimal or bool for the driver that ``Connection.execute`` would apply), so the DBAPI connection gets
    exactly the values SQLAlchemy would pass."""

    def __init__(self, statement: ClauseElement, dialect: Dialect) -> None:
        compiled = cast(SQLCompiler, statement.compile(dialect=dialect))
        self.sql = str(compiled)
        self.names: tuple[str, ...] = tuple(compiled.positiontup or ())
        # (name, given by the caller, the statement's own value, SQLAlchemy's processing) in the SQL's order
        self._binds: tuple[tuple[str, bool, Any, Callable[[Any], Any] | None], ...] = tuple(
            (name, bind.required, bind.value, bind.type.dialect_impl(dialect).bind_processor(dialect))
            for name in self.names
            for bind in (compiled.binds[name],)
        )
        self._processed = tuple((index, bind[3]) for index, bind in enumerate(self._binds) if bind[3] is not None)

    def params(self, values: Mapping[str, Any]) -> tuple[Any, ...]:
        """The parameters for ``values`` by name (a name the statement holds a value for may be left out)."""
        out = []
        for name, required, default, process in self._binds:
            value = values[name] if required else values.get(name, default)
            out.append(value if process is None else process(value))
        return tuple(out)

    def row(self, values: list[Any]) -> list[Any]:
        """One row of a multi-row INSERT (see :meth:`rows_sql`): ``values`` in the order of :attr:`names`,
        processed in place, only those whose type needs it."""
        for index, process in self._processed:
            values[index] = process(values[index])
        return values

    def rows_sql(self, rows: int) -> str:
        """A one-row INSERT's SQL with ``rows`` rows of parameters: its VALUES group repeated."""
        head, values, group = self.sql.rpartition(" VALUES ")
        if not values or not re.fullmatch(r"\([^()\s]+(, [^()\s]+)*\)", group):
            raise ValueError(f"not a one-row INSERT of parameters: {self.sql}")
        return head + values + ", ".join([group] * rows)
