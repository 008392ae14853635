"""Requests answered by the execution layer (issue 15): disclosure and erasure recorded on the request.

Reuses the three-table shop of ``test_subjects.py`` (customers, orders by
foreign key, inquiries by a declared reference) on SQLite, PostgreSQL and
MariaDB.
"""

# ruff: noqa: F811 - pytest fixtures imported from sa_fixtures and test_subjects
from __future__ import annotations

import datetime as dt
import io
import json
import sys
import uuid

from pathlib import Path

import pytest

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

import custdata

from custdata import RequestError, RequestTransitionError
from custdata.governance import InMemoryRequestStore, RequestDesk, RequestState
from custdata.sqlalchemy import SqlRequestStore, answer_request


sys.path.insert(0, str(Path(__file__).parent))
from sa_fixtures import engine  # noqa: F401 - pytest fixture
from test_subjects import (  # noqa: F401 - pytest fixtures
    CANARY,
    OTHER,
    T1,
    Shop,
    World,
    dpo,
    policy,
    shop,
    two,
    world,
)


def _granted(desk: RequestDesk, kind: str, subject: uuid.UUID, **kw: object) -> str:
    received = T1 - dt.timedelta(days=2)
    r = desk.open(
        kind,
        subject=str(subject),
        received_at=received,
        actor="desk-1",
        **kw,  # type: ignore[arg-type]
    )
    desk.verify(r.request_id, method="login", at=received, actor="desk-1")
    desk.decide(r.request_id, grant=True, at=received, actor="dpo-1")
    return r.request_id


class TestAnswer:
    @pytest.mark.parametrize(
        ("kind", "fmt"), [("gdpr_access", None), ("gdpr_portability", "csv")]
    )
    def test_disclosure_fulfils_the_request(
        self,
        engine: Engine,
        shop: Shop,
        world: World,
        two: tuple[uuid.UUID, uuid.UUID],
        kind: str,
        fmt: str | None,
    ) -> None:
        """Every value of the subject is written, none of the other; the request is fulfilled."""
        subject, _other = two
        desk = RequestDesk(InMemoryRequestStore())
        rid = _granted(desk, kind, subject, disclosure_format=fmt)
        out = io.StringIO()
        with Session(engine) as session, dpo():
            answered, disclosure = answer_request(
                desk, rid, session, at=T1, out=out, tables=shop.Base
            )
        text = out.getvalue()
        assert all(v in text for v in CANARY.values())
        assert not any(v in text for v in OTHER.values())
        assert (RequestState.FULFILLED, "dpo-1") == (
            answered.state,
            answered.history[-1].actor,
        )
        expected = "csv" if fmt == "csv" else "json"
        assert {"format": expected, "tables": 3, "values": 5} == dict(
            answered.history[-1].detail["result"]
        )
        assert 5 == disclosure.values
        recorded = json.dumps(answered.as_dict())
        assert not any(v in recorded for v in CANARY.values())
        exports = [e for e in world.events() if e.get("action") == "export.subject"]
        assert exports

    def test_erasure_kept_by_a_statute_is_partial(
        self, engine: Engine, shop: Shop, world: World, two: tuple[uuid.UUID, uuid.UUID]
    ) -> None:
        """The accounting statute keeps the order total: partially fulfilled on 17(3)."""
        subject, _other = two
        desk = RequestDesk(InMemoryRequestStore())
        rid = _granted(desk, "gdpr_erasure", subject)
        with (
            Session(engine) as session,
            dpo(),
            custdata.purpose("privacy_desk"),
        ):
            answered, erasure = answer_request(
                desk, rid, session, at=T1, tables=shop.Base
            )
        assert RequestState.PARTIALLY_FULFILLED is answered.state
        assert ("17_3_exception",) == answered.refusal_grounds
        result = answered.history[-1].detail["result"]
        assert (1, False, erasure.erasure_id) == (
            result["kept"],
            result["shredded"],
            result["erasure_id"],
        )
        assert result["deleted_rows"] >= 1
        assert world.verified()

    def test_not_granted_or_not_executable(
        self, engine: Engine, shop: Shop, world: World, two: tuple[uuid.UUID, uuid.UUID]
    ) -> None:
        """A request not yet granted, or a kind answered by the application, changes nothing."""
        subject, _other = two
        desk = RequestDesk(InMemoryRequestStore())
        r = desk.open(
            "gdpr_erasure", subject=str(subject), received_at=T1, actor="desk-1"
        )
        correction = _granted(desk, "gdpr_rectification", subject)
        with Session(engine) as session, dpo(), custdata.purpose("privacy_desk"):
            with pytest.raises(RequestTransitionError, match="only a granted request"):
                answer_request(desk, r.request_id, session, at=T1, tables=shop.Base)
            with pytest.raises(RequestError, match="answered by the application"):
                answer_request(desk, correction, session, at=T1, tables=shop.Base)
            assert (
                4
                == __import__("custdata.sqlalchemy", fromlist=["locate_subject"])
                .locate_subject(session, subject, tables=shop.Base)
                .row_count
            )
        assert 1 == len(desk.get(r.request_id).history)


class TestSealedSubjectAnswered:
    @pytest.mark.parametrize("kind", ["gdpr_access", "gdpr_erasure"])
    def test_answered_from_the_sql_store(
        self,
        engine: Engine,
        shop: Shop,
        world: World,
        two: tuple[uuid.UUID, uuid.UUID],
        unique_suffix: str,
        kind: str,
    ) -> None:
        """The SQL store keeps the subject sealed; answering opens it on a recorded read."""
        subject, _other = two
        store = SqlRequestStore(engine, prefix=f"t_ans_{unique_suffix}")
        store.create_tables()
        try:
            desk = RequestDesk(store)
            rid = _granted(desk, kind, subject)
            assert desk.get(rid).subject is None
            out = io.StringIO()
            with Session(engine) as session, dpo(), custdata.purpose("privacy_desk"):
                answered, _done = answer_request(
                    desk, rid, session, at=T1, out=out, tables=shop.Base
                )
            assert answered.state in {
                RequestState.FULFILLED,
                RequestState.PARTIALLY_FULFILLED,
            }
            if kind == "gdpr_access":
                assert all(v in out.getvalue() for v in CANARY.values())
            reads = [
                e
                for e in world.events()
                if e.get("action") == "field.reveal"
                and e.get("entity") == store.tables.request.name
            ]
            assert 1 == len(reads)
            assert str(subject) not in json.dumps(world.events())
        finally:
            for table in (store.tables.event, store.tables.request):
                table.drop(engine, checkfirst=True)
