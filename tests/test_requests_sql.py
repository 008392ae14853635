"""Data-subject requests in the application's database, on SQLite, PostgreSQL and MariaDB."""

# ruff: noqa: F811 - pytest fixtures imported from sa_fixtures
from __future__ import annotations

import datetime as dt
import sys

from collections.abc import Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from sqlalchemy import Engine, MetaData, select, update

from custdata import (
    ConfigurationError,
    Custodian,
    DecryptionError,
    Policy,
    PurposeViolationError,
    RequestError,
    RequestSettings,
    RequestTransitionError,
    UnknownRequestError,
    acting_as,
    purpose,
)
from custdata.audit import AuditTrail, MemorySink
from custdata.crypto import Keyring
from custdata.governance import RequestAction, RequestDesk, RequestEvent, RequestState
from custdata.sqlalchemy import SqlRequestStore, add_custdata_tables


sys.path.insert(0, str(Path(__file__).resolve().parent))

from sa_fixtures import engine  # noqa: F401 - pytest fixture


JST = ZoneInfo("Asia/Tokyo")
CANARY = "canary-sql-subject@example.jp"
POLICY = Path(__file__).resolve().parent.parent / "examples" / "custdata.toml"
KEYRING = Keyring.generate()


@pytest.fixture
def store(engine: Engine, unique_suffix: str) -> Iterator[SqlRequestStore]:
    """A SQL request store on its own tables, dropped afterwards."""
    s = SqlRequestStore(engine, keyring=KEYRING, prefix=f"t_req_{unique_suffix}")
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


class TestSealedSubject:
    """The subject of a request is customer data: stored sealed, opened on a recorded read."""

    @staticmethod
    def custodian(sink: MemorySink) -> Custodian:
        return Custodian(
            policy=Policy.from_toml(POLICY),
            keyring=KEYRING,
            audit=AuditTrail(KEYRING, sinks=[sink], checkpoint_interval=None),
        )

    def test_stored_sealed_and_read_without_it(
        self, store: SqlRequestStore, engine: Engine
    ) -> None:
        """The rows hold no subject in clear; requests come back without it."""
        desk = RequestDesk(store)
        opened = desk.open(
            "gdpr_erasure",
            subject=CANARY,
            received_at=at(3),
            actor="a",
            request_id="REQ-1",
        )
        assert CANARY == opened.subject
        with engine.connect() as conn:
            rows = conn.execute(select(store.tables.request)).all()
            events = conn.execute(select(store.tables.event)).all()
        dump = repr(rows) + repr(events)
        assert CANARY not in dump
        assert CANARY.encode() not in bytes(rows[0].subject)
        assert '"subject": null' in rows[0].record
        got = store.get("REQ-1")
        assert got.subject is None
        assert [None] == [r.subject for r in store.requests()]
        assert CANARY not in repr(store) + repr(got) + str(got.as_dict())

    def test_open_subject_is_a_recorded_read(self, store: SqlRequestStore) -> None:
        """A purpose that answers requests reads it; the decision is in the trail."""
        RequestDesk(store).open(
            "gdpr_access", subject=CANARY, received_at=at(3), actor="a", request_id="R1"
        )
        sink = MemorySink()
        custodian = self.custodian(sink)
        with acting_as("cpo-1", role="privacy_desk"), purpose("disclosure"):
            assert CANARY == store.open_subject("R1", custodian=custodian)
        with acting_as("agent-1", role="support_agent"), purpose("support"):
            assert CANARY == store.open_subject("R1", custodian=custodian)
        reads = [r.fields for r in sink.records if r.action == "field.reveal"]
        assert 2 == len(reads)
        assert {"allowed"} == {r["outcome"] for r in reads}
        assert {store.tables.request.name} == {r["entity"] for r in reads}
        assert CANARY not in "".join(r.body.decode() for r in sink.records)

    def test_open_subject_refused_outside_the_answering_purposes(
        self, store: SqlRequestStore
    ) -> None:
        """A purpose that neither discloses nor erases may not read it; recorded, no value."""
        RequestDesk(store).open(
            "gdpr_access", subject=CANARY, received_at=at(3), actor="a", request_id="R1"
        )
        sink = MemorySink()
        custodian = self.custodian(sink)
        with (
            acting_as("clerk-1", role="billing_clerk"),
            purpose("billing"),
            pytest.raises(PurposeViolationError) as info,
        ):
            store.open_subject("R1", custodian=custodian)
        assert CANARY not in str(info.value) + repr(info.value)
        denied = [r.fields for r in sink.records if r.fields.get("outcome") == "denied"]
        assert 1 == len(denied)
        with pytest.raises(UnknownRequestError):
            store.open_subject("R404", custodian=custodian)

    def test_sealed_subject_bound_to_its_request(
        self, store: SqlRequestStore, engine: Engine
    ) -> None:
        """An envelope moved to another request does not open there."""
        desk = RequestDesk(store)
        for rid in ("R1", "R2"):
            desk.open(
                "gdpr_access",
                subject=CANARY,
                received_at=at(3),
                actor="a",
                request_id=rid,
            )
        t = store.tables.request
        with engine.begin() as conn:
            sealed = conn.execute(
                select(t.c.subject).where(t.c.request_id == "R1")
            ).scalar_one()
            conn.execute(update(t).where(t.c.request_id == "R2").values(subject=sealed))
        custodian = self.custodian(MemorySink())
        with (
            acting_as("cpo-1", role="privacy_desk"),
            purpose("disclosure"),
            pytest.raises(DecryptionError) as info,
        ):
            store.open_subject("R2", custodian=custodian)
        assert CANARY not in str(info.value)

    def test_no_keyring_no_request(self, engine: Engine, unique_suffix: str) -> None:
        """Without a keyring (or a custodian with one) nothing is stored."""
        s = SqlRequestStore(engine, prefix=f"t_rq_{unique_suffix}")
        s.create_tables()
        try:
            custodian = Custodian(policy=Policy.from_toml(POLICY))
            with (
                custodian.activate(),
                pytest.raises(ConfigurationError, match="keyring"),
            ):
                RequestDesk(s).open(
                    "gdpr_access",
                    subject=CANARY,
                    received_at=at(3),
                    actor="a",
                    request_id="R1",
                )
            assert () == s.requests()
        finally:
            for table in (s.tables.event, s.tables.request):
                table.drop(engine, checkfirst=True)
