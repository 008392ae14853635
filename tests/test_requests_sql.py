"""Data-subject requests in the application's database, on SQLite, PostgreSQL and MariaDB."""

# ruff: noqa: F811 - pytest fixtures imported from sa_fixtures
from __future__ import annotations

import datetime as dt
import sys

from collections.abc import Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from sqlalchemy import Engine, MetaData, select

from custdata import (
    RequestError,
    RequestSettings,
    RequestTransitionError,
    UnknownRequestError,
)
from custdata.governance import RequestAction, RequestDesk, RequestEvent, RequestState
from custdata.sqlalchemy import SqlRequestStore, add_custdata_tables


sys.path.insert(0, str(Path(__file__).resolve().parent))

from sa_fixtures import engine  # noqa: F401 - pytest fixture


JST = ZoneInfo("Asia/Tokyo")
CANARY = "canary-sql-subject@example.jp"


@pytest.fixture
def store(engine: Engine, unique_suffix: str) -> Iterator[SqlRequestStore]:
    """A SQL request store on its own tables, dropped afterwards."""
    s = SqlRequestStore(engine, prefix=f"t_req_{unique_suffix}")
    s.create_tables()
    yield s
    for table in (s.tables.event, s.tables.request):
        table.drop(engine, checkfirst=True)


def at(day: int, hour: int = 10) -> dt.datetime:
    return dt.datetime(2026, 1, day, hour, tzinfo=JST)


class TestSqlRequestStore:
    def test_round_trip_of_every_step(self, store: SqlRequestStore) -> None:
        """A request read back from the database equals the one the desk returned."""
        desk = RequestDesk(store, settings=RequestSettings(fee_yen=1000))
        desk.open(
            "appi_stop_use",
            subject=CANARY,
            received_at=at(5),
            actor="desk-1",
            request_id="REQ-A",
            purposes=["marketing"],
            grounds=["35_5_no_longer_needed"],
            note="電話で受付",
        )
        desk.verify("REQ-A", method="login", at=at(6), actor="desk-1")
        desk.decide("REQ-A", grant=True, at=at(7), actor="cpo")
        last = desk.fulfil(
            "REQ-A", at=at(8), actor="cpo", result={"restricted_purposes": 1}
        )
        got = store.get("REQ-A")
        assert last == got
        assert RequestState.FULFILLED is got.state
        assert at(5).utcoffset() == got.received_at.utcoffset()
        assert "電話で受付" == got.note
        assert [1, 2, 3, 4] == [e.seq for e in got.history]

    def test_listing_oldest_first(self, store: SqlRequestStore) -> None:
        """requests() lists every request by receipt, with its state replayed."""
        desk = RequestDesk(store)
        desk.open(
            "gdpr_access",
            subject="s2",
            received_at=at(9),
            actor="a",
            request_id="REQ-2",
        )
        desk.open(
            "gdpr_erasure",
            subject="s1",
            received_at=at(3),
            actor="a",
            request_id="REQ-1",
        )
        desk.withdraw("REQ-2", at=at(10), actor="a")
        listed = store.requests()
        assert ["REQ-1", "REQ-2"] == [r.request_id for r in listed]
        assert [RequestState.RECEIVED, RequestState.WITHDRAWN] == [
            r.state for r in listed
        ]

    def test_position_taken_is_a_transition_error(self, store: SqlRequestStore) -> None:
        """Two writers for the same history position: the primary key keeps one."""
        desk = RequestDesk(store)
        desk.open(
            "gdpr_access", subject="s", received_at=at(3), actor="a", request_id="REQ-1"
        )
        desk.verify("REQ-1", method="login", at=at(4), actor="a")
        late = RequestEvent(
            request_id="REQ-1",
            seq=2,
            at=at(4),
            actor="b",
            action=RequestAction.WITHDRAWN,
        )
        with pytest.raises(RequestTransitionError, match="changed meanwhile"):
            store.append(late)
        assert RequestState.IDENTITY_VERIFIED is store.get("REQ-1").state

    def test_unknown_and_duplicate(self, store: SqlRequestStore) -> None:
        """Unknown ids and reused ids are typed errors."""
        desk = RequestDesk(store)
        desk.open(
            "gdpr_access", subject="s", received_at=at(3), actor="a", request_id="REQ-1"
        )
        with pytest.raises(RequestError, match="already exists"):
            desk.open(
                "gdpr_access",
                subject="s",
                received_at=at(3),
                actor="a",
                request_id="REQ-1",
            )
        with pytest.raises(UnknownRequestError):
            store.get("REQ-9")
        with pytest.raises(UnknownRequestError):
            store.append(
                RequestEvent(
                    request_id="REQ-9", seq=2, at=at(4), actor="a", action="note"
                )
            )

    def test_only_inserts(self, store: SqlRequestStore, engine: Engine) -> None:
        """Every step is a new event row; the opening record never changes."""
        desk = RequestDesk(store)
        desk.open(
            "gdpr_access", subject="s", received_at=at(3), actor="a", request_id="REQ-1"
        )
        with engine.connect() as conn:
            before = conn.execute(select(store.tables.request)).all()
        desk.verify("REQ-1", method="login", at=at(4), actor="a")
        desk.extend("REQ-1", reason="complex", at=at(5), actor="a")
        with engine.connect() as conn:
            after = conn.execute(select(store.tables.request)).all()
            events = conn.execute(select(store.tables.event)).all()
        assert before == after
        assert 3 == len(events)


def test_add_custdata_tables_defines_the_request_tables() -> None:
    """Alembic sees the request tables through add_custdata_tables."""
    md = MetaData()
    names = {t.name for t in add_custdata_tables(md)}
    assert {"custdata_request", "custdata_request_event"} <= names
    assert {"custdata_request", "custdata_request_event"} <= set(md.tables)
    assert set(md.tables) == {t.name for t in add_custdata_tables(md)}
