"""The retention sweep, legal holds and replay after restore (R-RET-1…3)."""

# ruff: noqa: F811 - pytest fixtures imported from sa_fixtures

from __future__ import annotations

import datetime as dt
import json
import random
import sys
import uuid

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sqlalchemy import column, event, select, table
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session

import custdata

from custdata import Purpose, RetentionRule, Role
from custdata.audit import AuditTrail, MemorySink
from custdata.crypto import Keyring
from custdata.governance import HoldError, LegalHolds, UnknownHoldError
from custdata.sqlalchemy import (
    customer_data,
    replay_deletions,
    retention_anchor,
    subject_key,
    sweep,
)


sys.path.insert(0, str(Path(__file__).parent))
from sa_fixtures import engine  # noqa: F401 - pytest fixture


UTC = dt.timezone.utc
T0 = dt.datetime(2020, 3, 1, 9, 0, tzinfo=UTC)
CANARY_NAME = "Canary Sweep Hanako"


def _years(n: int, days: int = 0) -> dt.datetime:
    return T0.replace(year=T0.year + n) + dt.timedelta(days=days)


@pytest.fixture(scope="module")
def policy() -> custdata.Policy:
    """billing 7 years, support 1 year, marketing 2 years (anonymise), a statute."""
    return custdata.Policy.build(
        organisation="Sweep K.K.",
        version="1",
        effective_date=dt.date(2019, 1, 1),
        next_review=dt.date(2099, 1, 1),
        retention_rules=[
            RetentionRule(
                id="billing", period="P7Y", anchor="last_transaction", action="delete"
            ),
            RetentionRule(
                id="support", period="P1Y", anchor="last_transaction", action="delete"
            ),
            RetentionRule(
                id="marketing",
                period="P2Y",
                anchor="last_transaction",
                action="anonymise",
            ),
            RetentionRule(
                id="intake", period="P1D", anchor="acquired", action="delete"
            ),
            RetentionRule(
                id="vault", period="P3Y", anchor="acquired", action="crypto_shred"
            ),
            RetentionRule(
                id="statute",
                period="P1Y",
                anchor="acquired",
                action="delete",
                statutory_minimum="P10Y",
            ),
        ],
        purposes=[
            Purpose(
                id="billing", text_ja="請求", text_en="Billing", retention="billing"
            ),
            Purpose(
                id="support", text_ja="サポート", text_en="Support", retention="support"
            ),
            Purpose(
                id="marketing",
                text_ja="広告",
                text_en="Marketing",
                retention="marketing",
            ),
            Purpose(id="vault", text_ja="保管", text_en="Vault", retention="vault"),
            Purpose(
                id="intake",
                text_ja="受付",
                text_en="Intake",
                retention="intake",
                may_erase=True,
            ),
        ],
        roles=[Role(id="clerk", purposes=["intake", "billing", "support", "vault"])],
    )


@dataclass
class Shop:
    Base: type[DeclarativeBase]
    Customer: Any
    Ledger: Any

    @property
    def tables(self) -> list[Any]:
        return [self.Customer.__table__, self.Ledger.__table__]


def make_shop() -> Shop:
    suffix = uuid.uuid4().hex[:8]

    class Base(DeclarativeBase):
        pass

    class Customer(Base):
        __tablename__ = f"sw_customers_{suffix}"
        id: Mapped[uuid.UUID] = subject_key()
        acquired_at: Mapped[dt.datetime] = retention_anchor("acquired")
        last_tx: Mapped[dt.datetime | None] = retention_anchor("last_transaction")
        name: Mapped[str] = customer_data(
            "name", purposes=["billing", "support", "intake"]
        )
        email: Mapped[str | None] = customer_data(
            "contact.email", purposes=["support", "intake"], searchable=True
        )
        note: Mapped[str | None] = customer_data(
            "transaction.history", purposes=["marketing", "intake"]
        )

    class Ledger(Base):
        """Accounting records kept by statute: ten years whatever the purpose."""

        __tablename__ = f"sw_ledger_{suffix}"
        id: Mapped[uuid.UUID] = subject_key()
        acquired_at: Mapped[dt.datetime] = retention_anchor("acquired")
        entry: Mapped[str | None] = customer_data(
            "transaction.history", purposes=["intake"], retention="statute"
        )

    return Shop(Base=Base, Customer=Customer, Ledger=Ledger)


@pytest.fixture
def shop(engine: Engine) -> Iterator[Shop]:
    s = make_shop()
    s.Base.metadata.create_all(engine)
    yield s
    s.Base.metadata.drop_all(engine)


@pytest.fixture
def sink() -> MemorySink:
    return MemorySink()


@pytest.fixture
def custodian(
    policy: custdata.Policy, sink: MemorySink
) -> Iterator[custdata.Custodian]:
    trail = AuditTrail(Keyring.generate(), sinks=[sink], checkpoint_interval=None)
    c = custdata.Custodian(
        policy=policy,
        keyring=Keyring.generate(),
        audit=trail,
        holds=LegalHolds(),
        clock=lambda: T0,
    )
    with c.activate():
        yield c
    trail.close()


def _add(
    engine: Engine,
    shop: Shop,
    *,
    n: int = 1,
    last_tx: list[dt.datetime] | None = None,
    ids: list[uuid.UUID] | None = None,
) -> list[uuid.UUID]:
    ids = ids or [uuid.uuid4() for _ in range(n)]
    with (
        Session(engine) as session,
        custdata.acting_as("clerk-1", role="clerk"),
        custdata.purpose("intake"),
    ):
        for i, cid in enumerate(ids):
            session.add(
                shop.Customer(
                    id=cid,
                    acquired_at=T0,
                    last_tx=(last_tx[i % len(last_tx)] if last_tx else T0),
                    name=CANARY_NAME,
                    email=f"c{i}@example.jp",
                    note="bought tea",
                )
            )
            session.add(shop.Ledger(id=cid, acquired_at=T0, entry="invoice 1"))
        session.commit()
    return ids


def _state(engine: Engine, shop: Shop) -> dict[str, list[tuple[Any, ...]]]:
    """Which values each row still holds (None-ness only), per table."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    for tbl in shop.tables:
        names = [
            c.name for c in tbl.columns if c.name not in {"acquired_at", "last_tx"}
        ]
        raw = table(tbl.name, *(column(n) for n in names))
        with engine.connect() as conn:
            rows = conn.execute(select(*raw.c)).all()
        out[tbl.name] = sorted(
            (_uuid_text(r[0]), *(v is not None for v in r[1:])) for r in rows
        )
    return out


def _uuid_text(value: object) -> str:
    """A UUID read through an untyped column (hex on SQLite and MySQL) as text."""
    return str(uuid.UUID(str(value)))


def _expire_events(sink: MemorySink) -> list[dict[str, Any]]:
    bodies = [json.loads(r.body) for r in sink.records]
    return [b for b in bodies if b["action"] == "retention.expire"]


class TestFrozenClock:
    """{billing 7y, support 1y}: alive at 2 years, swept at 7 years and a day."""

    def test_lifecycle_of_one_customer(
        self, engine: Engine, shop: Shop, custodian: custdata.Custodian
    ) -> None:
        """Each value goes when its last purpose has expired; the row with the last."""
        (cid,) = _add(engine, shop)
        key = str(cid)

        def row() -> list[tuple[Any, ...]]:
            return _state(engine, shop)[shop.Customer.__tablename__]

        sweep(engine, custodian, tables=shop.Base, now=_years(1, -1))
        assert [(key, True, True, True)] == [r[:2] + r[2:3] + r[4:5] for r in row()]

        report = sweep(engine, custodian, tables=shop.Base, now=_years(2, -1))
        # support (1y) has expired: the e-mail and its blind index are erased.
        (only,) = row()
        assert (True, False, False, True) == only[1:]
        assert 1 == report.total("erase")

        sweep(engine, custodian, tables=shop.Base, now=_years(2, 1))
        # marketing (2y, anonymise) has expired too; billing keeps the name.
        (only,) = row()
        assert (True, False, False, False) == only[1:]

        sweep(engine, custodian, tables=shop.Base, now=_years(7, -1))
        assert 1 == len(row())

        report = sweep(engine, custodian, tables=shop.Base, now=_years(7, 1))
        assert [] == row()
        assert 1 == report.total("delete_row")

    def test_statutory_minimum_keeps_a_value(
        self, engine: Engine, shop: Shop, custodian: custdata.Custodian
    ) -> None:
        """A ten-year statutory minimum keeps the ledger entry past its own year."""
        _add(engine, shop)
        ledger = shop.Ledger.__tablename__
        sweep(engine, custodian, tables=shop.Base, now=_years(9, 300))
        assert 1 == len(_state(engine, shop)[ledger])
        sweep(engine, custodian, tables=shop.Base, now=_years(10, 1))
        assert [] == _state(engine, shop)[ledger]

    def test_second_run_is_a_no_op(
        self,
        engine: Engine,
        shop: Shop,
        custodian: custdata.Custodian,
        sink: MemorySink,
    ) -> None:
        """Run twice at the same instant: the second run changes and records nothing."""
        _add(engine, shop, n=7, last_tx=[T0, _years(-5), _years(1)])
        first = sweep(
            engine, custodian, tables=shop.Base, now=_years(7, 1), batch_size=3
        )
        after = _state(engine, shop)
        events = len(_expire_events(sink))
        second = sweep(
            engine, custodian, tables=shop.Base, now=_years(7, 1), batch_size=3
        )
        assert first.total("delete_row") > 0
        assert (0, 0, 0) == (
            second.total("delete_row"),
            second.total("erase"),
            second.batches,
        )
        assert after == _state(engine, shop)
        assert events == len(_expire_events(sink))

    def test_dry_run_counts_and_changes_nothing(
        self,
        engine: Engine,
        shop: Shop,
        custodian: custdata.Custodian,
        sink: MemorySink,
    ) -> None:
        """A dry run reports the real run's counts, and changes, records and logs nothing."""
        _add(engine, shop, n=5, last_tx=[T0, _years(6)])
        before = _state(engine, shop)
        dry = sweep(engine, custodian, tables=shop.Base, now=_years(7, 1), dry_run=True)
        assert before == _state(engine, shop)
        assert [] == _expire_events(sink)
        real = sweep(engine, custodian, tables=shop.Base, now=_years(7, 1))
        assert dry.counts == real.counts
        assert dry.total("delete_row") == 3

    def test_one_event_per_batch_naming_subjects_and_fields(
        self,
        engine: Engine,
        shop: Shop,
        custodian: custdata.Custodian,
        sink: MemorySink,
    ) -> None:
        """Each changing batch is one retention.expire event; no value or id in it."""
        ids = _add(engine, shop, n=5)
        report = sweep(
            engine, custodian, tables=shop.Base, now=_years(2, -1), batch_size=2
        )
        events = _expire_events(sink)
        assert report.batches == len(events) == 3
        assert {("email",)} == {tuple(e["fields"]) for e in events}
        assert 5 == sum(len(e["subjects"]) for e in events)
        assert {"retention_expired"} == {e["reason"] for e in events}
        text = sink.lines()
        assert CANARY_NAME.encode() not in text
        assert not any(str(i).encode() in text for i in ids)


class TestLegalHold:
    """Held values survive the sweep and shredding; released, the next sweep removes them."""

    def test_hold_keeps_then_release_removes(
        self, engine: Engine, shop: Shop, custodian: custdata.Custodian
    ) -> None:
        """A subject held for a case keeps every value; after release it is swept."""
        held, free = _add(engine, shop, n=2)
        holds = custodian.holds
        hold_id = holds.place(
            case="case-2026-7",
            subjects=[held],
            reason="litigation",
            actor="legal-1",
            now=T0,
        )
        report = sweep(engine, custodian, tables=shop.Base, now=_years(7, 1))
        customers = _state(engine, shop)[shop.Customer.__tablename__]
        assert [str(held)] == [r[0] for r in customers]
        assert report.total("held") >= 1
        holds.release(hold_id, reason="case closed", actor="legal-1", now=_years(7, 2))
        sweep(engine, custodian, tables=shop.Base, now=_years(7, 3))
        assert [] == _state(engine, shop)[shop.Customer.__tablename__]
        assert free != held

    def test_shred_and_erasure_refused_while_held(
        self, policy: custdata.Policy, engine: Engine, shop: Shop
    ) -> None:
        """shred() and deleting a held subject's record raise LegalHoldError."""
        from custdata.crypto import InMemorySubjectKeyStore

        holds = LegalHolds()
        c = custdata.Custodian(
            policy=policy,
            keyring=Keyring.generate(),
            subject_keys=InMemorySubjectKeyStore(),
            holds=holds,
        )
        with c.activate():
            (cid,) = _add(engine, shop)
            holds.place(case="c-1", subjects=[cid], reason="audit", actor="legal-1")
            with (
                custdata.acting_as("ops-1", role="clerk"),
                pytest.raises(custdata.LegalHoldError, match="legal hold"),
            ):
                c.shred(cid)
            with (
                Session(engine) as session,
                custdata.acting_as("ops-1", role="clerk"),
                custdata.purpose("intake"),
            ):
                session.delete(session.get(shop.Ledger, cid))
                with pytest.raises(custdata.LegalHoldError, match="legal hold"):
                    session.commit()
            # Nothing was destroyed or deleted.
            assert 1 == len(_state(engine, shop)[shop.Ledger.__tablename__])

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"case": "", "subjects": ["s"], "reason": "r", "actor": "a"},
            {"case": "c", "subjects": [], "reason": "r", "actor": "a"},
            {"case": "c", "subjects": ["s"], "reason": "", "actor": "a"},
            {"case": "c", "subjects": ["s"], "reason": "r", "actor": ""},
            {"case": "c", "subjects": "cust-1", "reason": "r", "actor": "a"},
            {
                "case": "c",
                "subjects": ["s"],
                "reason": "r",
                "actor": "a",
                "now": dt.datetime(2020, 1, 1),
            },
            {"case": "c", "subjects": ["s"], "reason": "r", "actor": "a", "now": 7},
        ],
        ids=[
            "no-case",
            "no-subject",
            "no-reason",
            "no-actor",
            "one-string",
            "naive-now",
            "not-a-time",
        ],
    )
    def test_misuse(self, kwargs: dict[str, Any]) -> None:
        """A bad hold is a typed HoldError (still a ValueError), nothing stored."""
        holds = LegalHolds()
        with pytest.raises(HoldError) as caught:
            holds.place(**kwargs)
        assert isinstance(caught.value, custdata.CustdataError)
        assert isinstance(caught.value, ValueError)
        # Bad input is not the refusal of a disposal.
        assert not isinstance(caught.value, custdata.LegalHoldError)
        assert [] == holds.store.records_for(["s", "cust-1", "c"])

    def test_release_unknown(self) -> None:
        """Releasing a hold not in force is an UnknownHoldError (a LookupError)."""
        holds = LegalHolds()
        with pytest.raises(UnknownHoldError, match="hold_x") as caught:
            holds.release("hold_x", reason="r", actor="a")
        assert isinstance(caught.value, LookupError)
        assert isinstance(caught.value, HoldError)
        hold_id = holds.place(
            case="c", subjects=["cust-canary-77"], reason="r", actor="a", now=T0
        )
        assert 1 == holds.release(hold_id, reason="r", actor="a", now=_years(1))
        # A second release finds nothing in force; the message names no subject.
        with pytest.raises(UnknownHoldError) as again:
            holds.release(hold_id, reason="r", actor="a", now=_years(2))
        assert "cust-canary-77" not in str(again.value)

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"reason": "", "actor": "a"},
            {"reason": "r", "actor": ""},
            {"reason": "r", "actor": "a", "now": dt.datetime(2020, 1, 1)},
        ],
        ids=["no-reason", "no-actor", "naive-now"],
    )
    def test_release_misuse(self, kwargs: dict[str, Any]) -> None:
        """A bad release is a HoldError and leaves the hold in force."""
        holds = LegalHolds()
        hold_id = holds.place(case="c", subjects=["s"], reason="r", actor="a", now=T0)
        with pytest.raises(HoldError) as caught:
            holds.release(hold_id, **kwargs)
        assert not isinstance(caught.value, UnknownHoldError)
        assert {"s"} == holds.held(["s"], _years(1))

    def test_held_naive_time(self) -> None:
        """Asking with a naive time is a HoldError, not a TypeError from a compare."""
        holds = LegalHolds()
        holds.place(case="c", subjects=["s"], reason="r", actor="a", now=T0)
        with pytest.raises(HoldError, match="time-zone aware"):
            holds.held(["s"], dt.datetime(2030, 1, 1))
        with pytest.raises(HoldError, match="time-zone aware"):
            holds.refuse_if_held(["s"], dt.datetime(2030, 1, 1), what="x")


def _fail_after(engine: Engine, statements: int) -> Any:
    """Make the engine fail its n-th statement from now on, like a process killed there."""
    seen = [0]

    def before(*_args: Any) -> None:
        seen[0] += 1
        if seen[0] == statements:
            raise _KilledError

    event.listen(engine, "before_cursor_execute", before)
    return before


class _KilledError(Exception):
    """Raised to stop the sweep mid-way."""


class TestInterrupted:
    """Killed at random points and rerun: the same state as an uninterrupted sweep."""

    def test_kill_and_rerun(
        self, engine: Engine, custodian: custdata.Custodian, tmp_path: Path
    ) -> None:
        """Interrupted at five random statements, then run through: same end state."""
        rng = random.Random(1207)  # a reproducible test
        ids = [uuid.uuid4() for _ in range(23)]
        spread = [T0, _years(-6), _years(1), _years(5, 200), _years(6, 364)]
        shops = [make_shop(), make_shop()]
        for s in shops:
            s.Base.metadata.create_all(engine)
        try:
            for s in shops:
                _add(engine, s, ids=ids, last_tx=spread)
            at = _years(7, 1)
            straight = sweep(
                engine, custodian, tables=shops[0].Base, now=at, batch_size=4
            )
            kills = 0
            for _ in range(5):
                hook = _fail_after(engine, rng.randint(1, 12))
                try:
                    sweep(
                        engine,
                        custodian,
                        tables=shops[1].Base,
                        now=at,
                        batch_size=4,
                        log=tmp_path / "deletions.jsonl",
                    )
                except _KilledError:
                    kills += 1
                finally:
                    event.remove(engine, "before_cursor_execute", hook)
            sweep(engine, custodian, tables=shops[1].Base, now=at, batch_size=4)
            assert 5 == kills
            assert straight.total("delete_row") > 0
            want, got = _state(engine, shops[0]), _state(engine, shops[1])
            assert list(want.values()) == list(got.values())
        finally:
            for s in shops:
                s.Base.metadata.drop_all(engine)


class TestReplay:
    """Restore the pre-sweep backup, replay the deletion log: the post-sweep state."""

    def test_restore_and_replay(
        self, engine: Engine, shop: Shop, custodian: custdata.Custodian, tmp_path: Path
    ) -> None:
        """The replayed database equals the swept one; a second replay changes nothing."""
        _add(engine, shop, n=9, last_tx=[T0, _years(1), _years(6, 100)])
        backup = _dump(engine, shop)
        log = tmp_path / "deletions.jsonl"
        sweep(
            engine, custodian, tables=shop.Base, now=_years(7, 1), batch_size=4, log=log
        )
        swept = _state(engine, shop)
        assert swept != _state_of(backup)
        _restore(engine, shop, backup)
        assert 0 < replay_deletions(engine, log, tables=shop.Base)
        assert swept == _state(engine, shop)
        assert 0 == replay_deletions(engine, log, tables=shop.Base)
        lines = log.read_text(encoding="utf-8")
        assert CANARY_NAME not in lines

    @pytest.mark.parametrize(
        "content",
        ["not json\n", '{"v": 9, "op": "delete"}\n', '{"v": 1, "op": "drop"}\n'],
        ids=["garbage", "version", "op"],
    )
    def test_bad_log(
        self, engine: Engine, shop: Shop, tmp_path: Path, content: str
    ) -> None:
        """A file that is not a deletion log is a ConfigurationError naming the line."""
        log = tmp_path / "log.jsonl"
        log.write_text(content, encoding="utf-8")
        with pytest.raises(custdata.ConfigurationError, match="line 1"):
            replay_deletions(engine, log, tables=shop.Base)


def _dump(engine: Engine, shop: Shop) -> dict[str, list[dict[str, Any]]]:
    out = {}
    for tbl in shop.tables:
        raw = table(tbl.name, *(column(c.name) for c in tbl.columns))
        with engine.connect() as conn:
            out[tbl.name] = [dict(r._mapping) for r in conn.execute(select(*raw.c))]
    return out


def _state_of(
    dump: dict[str, list[dict[str, Any]]],
) -> dict[str, list[tuple[Any, ...]]]:
    return {
        name: sorted(
            (
                _uuid_text(r["id"]),
                *(
                    v is not None
                    for k, v in r.items()
                    if k not in {"id", "acquired_at", "last_tx"}
                ),
            )
            for r in rows
        )
        for name, rows in dump.items()
    }


def _restore(engine: Engine, shop: Shop, dump: dict[str, list[dict[str, Any]]]) -> None:
    with engine.begin() as conn:
        for tbl in reversed(shop.tables):
            raw = table(tbl.name, *(column(c.name) for c in tbl.columns))
            conn.execute(raw.delete())
        for tbl in shop.tables:
            raw = table(tbl.name, *(column(c.name) for c in tbl.columns))
            if dump[tbl.name]:
                conn.execute(raw.insert(), dump[tbl.name])


class TestCryptoShred:
    """crypto_shred deletes the row and destroys the subject's key, in backups too."""

    def test_row_deleted_key_destroyed_replay_shreds(
        self, policy: custdata.Policy, engine: Engine, tmp_path: Path
    ) -> None:
        """After the sweep the subject key is a tombstone; replay destroys it again."""
        from custdata.crypto import InMemorySubjectKeyStore
        from custdata.crypto._envelope import subject_bytes

        suffix = uuid.uuid4().hex[:8]

        class Base(DeclarativeBase):
            pass

        class Secret(Base):
            __tablename__ = f"sw_vault_{suffix}"
            id: Mapped[uuid.UUID] = subject_key()
            acquired_at: Mapped[dt.datetime] = retention_anchor("acquired")
            value: Mapped[str] = customer_data(
                "name", purposes=["vault"], key_scope="subject"
            )

        Base.metadata.create_all(engine)
        store = InMemorySubjectKeyStore()
        c = custdata.Custodian(
            policy=policy, keyring=Keyring.generate(), subject_keys=store
        )
        try:
            with c.activate():
                sid = uuid.uuid4()
                with (
                    Session(engine) as session,
                    custdata.acting_as("clerk-1", role="clerk"),
                    custdata.purpose("vault"),
                ):
                    session.add(Secret(id=sid, acquired_at=T0, value=CANARY_NAME))
                    session.commit()
                key = subject_bytes(sid)
                before = store.get(key)
                assert before is not None
                assert before.destroyed_at is None
                log = tmp_path / "log.jsonl"
                report = sweep(engine, c, tables=Base, now=_years(3, 1), log=log)
                assert (1, 1) == (
                    report.total("delete_row"),
                    report.total("crypto_shred"),
                )
                after = store.get(key)
                assert after is not None
                assert after.destroyed_at is not None
                # A restored key store (the backup's) is shredded again by replay.
                store.put(before)
                replay_deletions(engine, log, tables=Base, custodian=c)
                again = store.get(key)
                assert again is not None
                assert again.destroyed_at is not None
        finally:
            Base.metadata.drop_all(engine)


class TestSqlHolds:
    """The legal-hold register in the application's database (three databases)."""

    def test_place_release_in_sql(
        self, engine: Engine, shop: Shop, custodian: custdata.Custodian
    ) -> None:
        """Holds kept in SQL keep a subject through the sweep until released."""
        from custdata.sqlalchemy import SqlHoldStore

        store = SqlHoldStore(engine, table_name=f"hold_{uuid.uuid4().hex[:8]}")
        store.create_table()
        try:
            holds = LegalHolds(store)
            held, _free = _add(engine, shop, n=2)
            hold_id = holds.place(
                case="case-9",
                subjects=[held],
                reason="regulator",
                actor="legal-2",
                now=T0,
            )
            assert {str(held)} == holds.held([held, _free], _years(7, 1))
            report = sweep(
                engine, custodian, tables=shop.Base, now=_years(7, 1), holds=holds
            )
            assert 1 == report.total("delete_row")
            assert 1 == holds.release(
                hold_id, reason="closed", actor="legal-2", now=_years(7, 2)
            )
            (record,) = store.records_for([str(held)])
            assert ("legal-2", "closed", _years(7, 2)) == (
                record.released_by,
                record.release_reason,
                record.released_at,
            )
            sweep(engine, custodian, tables=shop.Base, now=_years(7, 3), holds=holds)
            assert [] == _state(engine, shop)[shop.Customer.__tablename__]
        finally:
            store.table.drop(engine)


class TestWorkers:
    """Two workers (SKIP LOCKED where the database has it) end like one."""

    def test_two_workers_same_state_and_progress(
        self, engine: Engine, custodian: custdata.Custodian
    ) -> None:
        """Two workers dispose of the same rows as one; progress reaches the total."""
        ids = [uuid.uuid4() for _ in range(40)]
        spread = [T0, _years(1), _years(6, 300)]
        shops = [make_shop(), make_shop()]
        for s in shops:
            s.Base.metadata.create_all(engine)
        try:
            for s in shops:
                _add(engine, s, ids=ids, last_tx=spread)
            at = _years(7, 1)
            one = sweep(engine, custodian, tables=shops[0].Base, now=at, batch_size=3)
            seen: list[tuple[str, int, int]] = []
            two = sweep(
                engine,
                custodian,
                tables=shops[1].Base,
                now=at,
                batch_size=3,
                workers=2,
                progress=lambda t, done, total: seen.append((t, done, total)),
            )
            assert one.total("delete_row") == two.total("delete_row") > 0
            assert list(_state(engine, shops[0]).values()) == list(
                _state(engine, shops[1]).values()
            )
            customers = shops[1].Customer.__tablename__
            assert (40, 40) == max(
                (done, total) for t, done, total in seen if t == customers
            )
        finally:
            for s in shops:
                s.Base.metadata.drop_all(engine)


class TestExpiredNotReadable:
    """A read for a purpose whose retention has ended for the record is refused."""

    def test_support_refused_billing_allowed(
        self, engine: Engine, shop: Shop, policy: custdata.Policy
    ) -> None:
        """At two years, support (1 year) may no longer read an old record; billing may."""
        from custdata.sqlalchemy import SqlRetentionGuard

        class Recorder:
            def __init__(self) -> None:
                self.decisions: list[custdata.AccessDecision] = []

            def record_decision(self, decision: custdata.AccessDecision) -> None:
                self.decisions.append(decision)

        recorder = Recorder()
        clock = [T0]
        c = custdata.Custodian(
            policy=policy,
            keyring=Keyring.generate(),
            audit=recorder,
            retention=SqlRetentionGuard(engine, policy, tables=shop.Base),
            clock=lambda: clock[0],
        )
        with c.activate():
            old, new = _add(engine, shop, n=2, last_tx=[T0, _years(2)])
            clock[0] = _years(2, 1)
            assert CANARY_NAME == _read(engine, shop, old, "billing", "name")
            assert "c1@example.jp" == _read(engine, shop, new, "support", "email")
            with pytest.raises(custdata.PurposeViolationError, match="retention"):
                _read(engine, shop, old, "support", "email")
            denied = recorder.decisions[-1]
            assert (custdata.DenyReason.RETENTION_EXPIRED, (str(old),)) == (
                denied.reason,
                denied.subjects,
            )
            # The ORM entity load is refused the same way.
            with (
                Session(engine) as session,
                custdata.acting_as("s-1", role="clerk"),
                custdata.purpose("support"),
                pytest.raises(custdata.PurposeViolationError, match="retention"),
            ):
                session.scalars(
                    select(shop.Customer).where(shop.Customer.id == old)
                ).all()


def _read(engine: Engine, shop: Shop, cid: uuid.UUID, purpose: str, field: str) -> Any:
    with (
        Session(engine) as session,
        custdata.acting_as("s-1", role="clerk"),
        custdata.purpose(purpose),
    ):
        return session.scalars(
            select(getattr(shop.Customer, field)).where(shop.Customer.id == cid)
        ).one()
