"""Data-subject requests in the application's database.

:class:`SqlRequestStore` is the SQL :class:`custdata.governance.RequestStore`:
two tables (``custdata_request`` and ``custdata_request_event``) that
:func:`add_custdata_tables` adds to the application's metadata. The store only
ever inserts: a request's state is its history replayed, and two writers
racing for the same position in a history are kept apart by the primary key.
"""

from __future__ import annotations

import datetime as dt
import json

from typing import Any

import attrs
import sqlalchemy as sa

from custdata._errors import RequestError, RequestTransitionError, UnknownRequestError
from custdata.governance import (
    DataSubjectRequest,
    RequestAction,
    RequestEvent,
    request_from_dict,
    request_to_dict,
)


__all__ = ["RequestTables", "SqlRequestStore", "request_tables"]


@attrs.frozen
class RequestTables:
    """The data-subject request tables.

    Attributes:
        request: One row per request: id, kind, receipt time, the opening
            record (JSON).
        event: One row per history entry, keyed by (request id, seq).
    """

    request: sa.Table
    event: sa.Table


def request_tables(
    metadata: sa.MetaData | None = None, *, prefix: str = "custdata_request"
) -> RequestTables:
    """Return the request tables on *metadata* (a new one when omitted), defining them if needed."""
    md = metadata if metadata is not None else sa.MetaData()
    names = (prefix, f"{prefix}_event")
    if all(n in md.tables for n in names):
        return RequestTables(*(md.tables[n] for n in names))
    request = sa.Table(
        names[0],
        md,
        sa.Column("request_id", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.Column("record", sa.Text(), nullable=False),
    )
    event = sa.Table(
        names[1],
        md,
        sa.Column(
            "request_id",
            sa.String(64),
            sa.ForeignKey(f"{names[0]}.request_id"),
            primary_key=True,
        ),
        sa.Column("seq", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("at", sa.String(40), nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
    )
    return RequestTables(request, event)


def _utc(value: dt.datetime) -> dt.datetime:
    return value.astimezone(dt.timezone.utc).replace(tzinfo=None)


def _event_row(event: RequestEvent) -> dict[str, Any]:
    return {
        "request_id": event.request_id,
        "seq": event.seq,
        "at": event.at.isoformat(),
        "actor": event.actor,
        "action": event.action.value,
        "detail": json.dumps(dict(event.detail), ensure_ascii=False, sort_keys=True),
    }


class SqlRequestStore:
    """The data-subject request register's store in the application's database.

    Args:
        engine: The database (not disposed here).
        metadata: The metadata to define the tables on (Alembic's, after
            :func:`add_custdata_tables`); a new one when omitted.
        prefix: The tables' name prefix.
    """

    def __init__(
        self,
        engine: sa.Engine,
        *,
        metadata: sa.MetaData | None = None,
        prefix: str = "custdata_request",
    ) -> None:
        self.engine = engine
        self.tables = request_tables(metadata, prefix=prefix)

    def __repr__(self) -> str:
        return f"<SqlRequestStore {self.tables.request.name}>"

    def create_tables(self) -> None:
        """Create the tables if they do not exist (tests, the CLI; else use migrations)."""
        for table in (self.tables.request, self.tables.event):
            table.create(self.engine, checkfirst=True)

    def add(self, request: DataSubjectRequest) -> None:
        """Store a newly opened request with its ``opened`` event.

        Raises:
            RequestError: A request with that id already exists, or the
                request carries no ``opened`` event.
        """
        if not request.history or request.history[0].action is not RequestAction.OPENED:
            msg = f"request {request.request_id}: history must start with 'opened'"
            raise RequestError(msg)
        t = self.tables
        record = json.dumps(
            request_to_dict(request), ensure_ascii=False, sort_keys=True
        )
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    t.request.insert().values(
                        request_id=request.request_id,
                        kind=request.kind,
                        received_at=_utc(request.received_at),
                        record=record,
                    )
                )
                conn.execute(t.event.insert().values(**_event_row(request.history[0])))
        except sa.exc.IntegrityError:
            msg = f"request {request.request_id!r} already exists"
            raise RequestError(msg) from None

    def append(self, event: RequestEvent) -> None:
        """Append *event* at its position in the request's history.

        Raises:
            UnknownRequestError: No request has that id.
            RequestTransitionError: Another writer took that position first.
        """
        self._record(event.request_id)
        try:
            with self.engine.begin() as conn:
                conn.execute(self.tables.event.insert().values(**_event_row(event)))
        except sa.exc.IntegrityError:
            msg = f"request {event.request_id}: changed meanwhile; try again"
            raise RequestTransitionError(msg, action=event.action.value) from None

    def _record(self, request_id: str) -> str:
        t = self.tables.request
        with self.engine.connect() as conn:
            record = conn.execute(
                sa.select(t.c.record).where(t.c.request_id == request_id)
            ).scalar_one_or_none()
        if record is None:
            raise UnknownRequestError(f"no request {request_id!r}")
        return str(record)

    def _events(
        self, conn: sa.Connection, ids: list[str]
    ) -> dict[str, list[RequestEvent]]:
        t = self.tables.event
        out: dict[str, list[RequestEvent]] = {i: [] for i in ids}
        for chunk in range(0, len(ids), 500):
            rows = conn.execute(
                sa.select(t)
                .where(t.c.request_id.in_(ids[chunk : chunk + 500]))
                .order_by(t.c.request_id, t.c.seq)
            ).all()
            for r in rows:
                out[r.request_id].append(
                    RequestEvent(
                        request_id=r.request_id,
                        seq=r.seq,
                        at=dt.datetime.fromisoformat(r.at),
                        actor=r.actor,
                        action=RequestAction(r.action),
                        detail=json.loads(r.detail),
                    )
                )
        return out

    def get(self, request_id: str) -> DataSubjectRequest:
        """Return the request with its history replayed.

        Raises:
            UnknownRequestError: No request has that id.
        """
        record = self._record(request_id)
        with self.engine.connect() as conn:
            events = self._events(conn, [request_id])[request_id]
        return request_from_dict(json.loads(record), events)

    def requests(self) -> tuple[DataSubjectRequest, ...]:
        """Every request, oldest receipt first."""
        t = self.tables.request
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(t.c.request_id, t.c.record).order_by(
                    t.c.received_at, t.c.request_id
                )
            ).all()
            events = self._events(conn, [r.request_id for r in rows])
        return tuple(
            request_from_dict(json.loads(r.record), events[r.request_id]) for r in rows
        )
