"""Sums of the usage records of a partial hour, computed by the database.

``GET /v1/usage`` reads whole hours from the rollups (rollup.py) and only the records of
the partial hours at the window's edges. At a steady 1,400 requests an hour, fetching each
of those records into Python (every column, the attempts parsed from JSON) cost more than
the rest of the read together. Here the database sums them and returns one row per group:
the same sums as ``Rollup.add``, so a window's answer does not depend on which path read it.

The upstream calls are the elements of each record's ``attempts`` (a JSON array, as
routing/plan.py writes it: ``provider`` a name, ``status`` an HTTP status or a word,
``cost_micro`` an integer), expanded with ``json_each`` (SQLite) or
``json_array_elements`` (PostgreSQL).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from sqlalchemy import (
    BigInteger,
    Connection,
    Integer,
    Numeric,
    bindparam,
    case,
    cast,
    func,
    null,
    select,
    true,
    type_coerce,
)
from sqlalchemy.dialects import postgresql

from imagegate.db.models import UsageRow

Filter = Literal["all", "key", "keys"]  # every key, ``key_id``, or the list ``keys``
_BUILT: dict[tuple[str, str, str | None, Filter], Any] = {}


def usage_sums(
    conn: Connection, column: str | None, where: Filter, params: dict[str, Any]
) -> list[tuple[Any, ...]]:
    """Per value of ``column`` (one row without it): requests, succeeded, images, cost,
    of the records in ``[lo, hi)`` (``params``: ``lo``, ``hi``, ``key_id`` or ``keys``)."""
    return [tuple(row) for row in conn.execute(_built(conn, "usage", column, where), params)]


def upstream_sums(
    conn: Connection, where: Filter, params: dict[str, Any]
) -> list[tuple[str, int, int, int]]:
    """Per provider (``"unknown"`` when an attempt names none): calls, succeeded, cost."""
    sums: dict[str, list[int]] = {}
    for provider, *values in conn.execute(_built(conn, "upstream", None, where), params):
        name = str(provider or "unknown")  # as Rollup.add: "" or none -> unknown
        acc = sums.setdefault(name, [0, 0, 0])
        for i, value in enumerate(values):
            acc[i] += int(value or 0)
    return [(name, *acc) for name, acc in sums.items()]  # type: ignore[misc]


def _built(conn: Connection, kind: str, column: str | None, where: Filter) -> Any:
    """The statement, built once per shape (building one costs more than running it)."""
    shape = (conn.dialect.name, kind, column, where)
    if shape not in _BUILT:
        r = UsageRow
        clauses = [r.created_at >= bindparam("lo"), r.created_at < bindparam("hi")]
        if where == "key":
            clauses.append(r.key_id == bindparam("key_id"))
        elif where == "keys":
            clauses.append(r.key_id.in_(bindparam("keys", expanding=True)))
        if kind == "usage":
            _BUILT[shape] = _usage(None if column is None else r.__table__.c[column], clauses)
        else:
            calls = (_postgresql if shape[0] == "postgresql" else _sqlite)(clauses).subquery()
            _BUILT[shape] = select(
                calls.c.provider,
                func.count(),
                func.sum(calls.c.succeeded),
                func.sum(calls.c.cost_micro),
            ).group_by(calls.c.provider)
    return _BUILT[shape]


def _usage(column: Any, where: Sequence[Any]) -> Any:
    r = UsageRow
    succeeded = func.sum(case((r.status == 200, 1), else_=0))
    sums = (func.count(), succeeded, func.sum(r.images), func.sum(r.cost_micro))
    if column is None:
        return select(*sums).where(*where)
    return select(column, *sums).where(*where).group_by(column)


def _sqlite(where: Sequence[Any]) -> Any:
    each = func.json_each(UsageRow.attempts).table_valued("value", "type")
    status = func.json_extract(each.c.value, "$.status")  # 200, 200.0 match; "200" not
    cost = func.coalesce(cast(func.json_extract(each.c.value, "$.cost_micro"), Integer), 0)
    return (
        select(
            func.json_extract(each.c.value, "$.provider").label("provider"),
            case((status == 200, 1), else_=0).label("succeeded"),
            cost.label("cost_micro"),
        )
        .select_from(UsageRow)
        .join(each, true())
        .where(*where, each.c.type == "object")  # not the scalar a JSON null expands to
    )


def _postgresql(where: Sequence[Any]) -> Any:
    attempts = UsageRow.attempts
    array = case((func.json_typeof(attempts) == "array", attempts), else_=null())
    elements = func.json_array_elements(array).table_valued("value").render_derived()
    attempt = type_coerce(elements.c.value, postgresql.JSON)
    status, cost = attempt["status"], attempt["cost_micro"]
    ok = case((cast(status.astext, Numeric) == 200, 1), else_=0)
    whole = cast(func.trunc(cast(cost.astext, Numeric)), BigInteger)
    return (
        select(
            attempt["provider"].astext.label("provider"),
            case((func.json_typeof(status) == "number", ok), else_=0).label("succeeded"),
            case((func.json_typeof(cost) == "number", whole), else_=0).label("cost_micro"),
        )
        .select_from(UsageRow)
        .join(elements, true())
        .where(*where)
    )
