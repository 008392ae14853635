"""Data-subject requests executed: locate, disclose, correct, erase (R-DSR-1…3)."""

# ruff: noqa: F811 - pytest fixtures imported from sa_fixtures

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import sys
import uuid

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sqlalchemy import column, select, table
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

import custdata

from custdata import Purpose, RetentionRule, Role
from custdata.audit import AuditTrail, JsonLinesSink, JsonLinesSource, verify_trail
from custdata.crypto import InMemorySubjectKeyStore, Keyring
from custdata.governance import (
    InMemoryProvisionRecordStore,
    LegalHolds,
    ProvisionRecord,
    Restrictions,
)
from custdata.sqlalchemy import (
    customer_data,
    disclose_subject,
    erase_subject,
    locate_subject,
    replay_deletions,
    retention_anchor,
    subject_key,
    subject_reference,
)


sys.path.insert(0, str(Path(__file__).parent))
from sa_fixtures import engine  # noqa: F401 - pytest fixture


UTC = dt.timezone.utc
T0 = dt.datetime(2020, 4, 1, 9, 0, tzinfo=UTC)
#: One year on: support's period is over, the accounting statute still runs.
T1 = dt.datetime(2021, 4, 1, 9, 0, tzinfo=UTC)
#: Eight years on: the seven-year statute is over too.
T8 = dt.datetime(2028, 4, 2, 9, 0, tzinfo=UTC)

CANARY = {
    "name": "Canary Subject Hanako",
    "email": "hanako.canary@example.jp",
    "total": "canary-total-98765",
    "note": "canary note: green tea",
    "body": "canary inquiry: where is my parcel",
}
OTHER = {
    "name": "Other Person Taro",
    "email": "taro.other@example.jp",
    "total": "other-total-11111",
    "note": "other note: coffee",
    "body": "other inquiry: refund",
}


@pytest.fixture(scope="module")
def policy() -> custdata.Policy:
    """Support one year; accounting one year with a seven-year statute; disclosure."""
    return custdata.Policy.build(
        organisation="Requests K.K.",
        version="1",
        effective_date=dt.date(2019, 1, 1),
        next_review=dt.date(2099, 1, 1),
        retention_rules=[
            RetentionRule(
                id="support", period="P1Y", anchor="acquired", action="delete"
            ),
            RetentionRule(
                id="accounting",
                period="P1Y",
                anchor="acquired",
                action="delete",
                statutory_minimum="P7Y",
            ),
        ],
        purposes=[
            Purpose(
                id="support", text_ja="サポート", text_en="Support", retention="support"
            ),
            Purpose(
                id="billing",
                text_ja="請求",
                text_en="Billing",
                retention="accounting",
            ),
            Purpose(
                id="disclosure",
                text_ja="本人への開示",
                text_en="Disclosure to the data subject",
                retention="support",
                subject_disclosure=True,
            ),
            Purpose(
                id="privacy_desk",
                text_ja="本人からの請求への対応",
                text_en="Answering data-subject requests",
                retention="support",
                may_erase=True,
            ),
        ],
        roles=[
            Role(id="clerk", purposes=["support", "billing"]),
            Role(id="dpo", purposes=["disclosure", "privacy_desk", "support"]),
        ],
    )


@dataclass
class Shop:
    Base: type[DeclarativeBase]
    Customer: Any
    Order: Any
    Inquiry: Any

    @property
    def tables(self) -> list[Any]:
        return [self.Customer.__table__, self.Order.__table__, self.Inquiry.__table__]


def make_shop() -> Shop:
    """Customers; orders by foreign key; inquiries by a declared reference."""
    suffix = uuid.uuid4().hex[:8]
    customers = f"dsr_customers_{suffix}"

    class Base(DeclarativeBase):
        pass

    class Customer(Base):
        __tablename__ = customers
        id: Mapped[uuid.UUID] = subject_key()
        acquired_at: Mapped[dt.datetime] = retention_anchor("acquired")
        name: Mapped[str | None] = customer_data(
            "name", purposes=["support"], key_scope="subject"
        )
        email: Mapped[str | None] = customer_data(
            "contact.email",
            purposes=["support"],
            searchable=True,
            key_scope="subject",
        )

    class Order(Base):
        __tablename__ = f"dsr_orders_{suffix}"
        id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
        customer_id: Mapped[uuid.UUID] = subject_key(f"{customers}.id")
        acquired_at: Mapped[dt.datetime] = retention_anchor("acquired")
        total: Mapped[str | None] = customer_data(
            "transaction.history",
            purposes=["billing"],
            key_scope="subject",
        )
        note: Mapped[str | None] = customer_data(
            "transaction.history", purposes=["support"]
        )

    class Inquiry(Base):
        __tablename__ = f"dsr_inquiries_{suffix}"
        id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
        customer_ref: Mapped[uuid.UUID | None] = subject_reference(f"{customers}.id")
        acquired_at: Mapped[dt.datetime] = retention_anchor("acquired")
        body: Mapped[str | None] = customer_data("inquiry", purposes=["support"])

    return Shop(Base=Base, Customer=Customer, Order=Order, Inquiry=Inquiry)


@pytest.fixture
def shop(engine: Engine) -> Iterator[Shop]:
    s = make_shop()
    s.Base.metadata.create_all(engine)
    yield s
    s.Base.metadata.drop_all(engine)


@dataclass
class World:
    custodian: custdata.Custodian
    trail: AuditTrail
    keyring: Keyring
    audit_path: Path
    holds: LegalHolds
    restrictions: Restrictions

    def events(self) -> list[dict[str, Any]]:
        self.trail.flush()
        return [
            json.loads(r.body)
            for r in JsonLinesSource(self.audit_path).records()
            if getattr(r, "body", None) is not None
        ]

    def verified(self) -> bool:
        self.trail.flush()
        return verify_trail(JsonLinesSource(self.audit_path), self.keyring).intact


@pytest.fixture
def world(policy: custdata.Policy, tmp_path: Path) -> Iterator[World]:
    keyring = Keyring.generate()
    path = tmp_path / "audit.jsonl"
    trail = AuditTrail(keyring, sinks=[JsonLinesSink(path)], checkpoint_interval=None)
    holds = LegalHolds()
    restrictions = Restrictions.for_policy(policy, audit=trail)
    c = custdata.Custodian(
        policy=policy,
        keyring=keyring,
        audit=trail,
        subject_keys=InMemorySubjectKeyStore(),
        holds=holds,
        restrictions=restrictions,
        clock=lambda: T1,
    )
    with c.activate():
        yield World(
            custodian=c,
            trail=trail,
            keyring=keyring,
            audit_path=path,
            holds=holds,
            restrictions=restrictions,
        )
    trail.close()


def _add(engine: Engine, shop: Shop, values: dict[str, str]) -> uuid.UUID:
    cid = uuid.uuid4()
    with (
        Session(engine) as session,
        custdata.acting_as("clerk-1", role="clerk"),
        custdata.purpose("support"),
    ):
        session.add(
            shop.Customer(
                id=cid, acquired_at=T0, name=values["name"], email=values["email"]
            )
        )
        session.flush()
        with custdata.purpose("billing"):
            session.add(
                shop.Order(customer_id=cid, acquired_at=T0, total=values["total"])
            )
            session.flush()
        session.add(shop.Order(customer_id=cid, acquired_at=T0, note=values["note"]))
        session.add(shop.Inquiry(customer_ref=cid, acquired_at=T0, body=values["body"]))
        session.commit()
    return cid


@pytest.fixture
def two(engine: Engine, shop: Shop, world: World) -> tuple[uuid.UUID, uuid.UUID]:
    """The subject of the request and another customer (canaries of both)."""
    return _add(engine, shop, CANARY), _add(engine, shop, OTHER)


def dpo() -> Any:
    return custdata.acting_as("dpo-1", role="dpo")


def _stored(engine: Engine, tbl: Any) -> list[tuple[Any, ...]]:
    """Every row's stored values (None-ness of the encrypted ones), read raw."""
    names = [c.name for c in tbl.columns]
    raw = table(tbl.name, *(column(n) for n in names))
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(select(*raw.c)).all()]


class TestLocate:
    def test_finds_every_row_by_subject_id(
        self, engine: Engine, shop: Shop, two: tuple[uuid.UUID, uuid.UUID]
    ) -> None:
        """Rows by subject key, by foreign key and by declared reference; no one else's."""
        subject, other = two
        with Session(engine) as session, dpo():
            fp = locate_subject(session, subject, tables=shop.Base)
            fp_other = locate_subject(session, other, tables=shop.Base)
        by_table = {r.table: r for r in fp.rows}
        assert set(by_table) == {t.name for t in shop.tables}
        assert by_table[shop.Customer.__tablename__].primary_keys == (subject,)
        assert by_table[shop.Customer.__tablename__].via == "subject_key"
        assert len(by_table[shop.Order.__tablename__].primary_keys) == 2
        assert by_table[shop.Inquiry.__tablename__].via == "reference:customer_ref"
        assert by_table[shop.Customer.__tablename__].fields == ("name", "email")
        assert by_table[shop.Order.__tablename__].fields == ("total", "note")
        assert by_table[shop.Inquiry.__tablename__].categories == ("inquiry",)
        mine = {k for r in fp.rows for k in r.primary_keys}
        theirs = {k for r in fp_other.rows for k in r.primary_keys}
        assert not mine & theirs
        assert fp.row_count == 4
        assert fp.audit_pseudonym is not None
        assert fp.audit_pseudonym.startswith("sr_")

    def test_finds_the_subject_by_email_through_the_blind_index(
        self, engine: Engine, shop: Shop, two: tuple[uuid.UUID, uuid.UUID]
    ) -> None:
        """The e-mail (case folded by its normaliser) or a model attribute finds the subject."""
        subject, _other = two
        with Session(engine) as session, dpo(), custdata.purpose("support"):
            by_category = locate_subject(
                session,
                identifier=("contact.email", CANARY["email"].upper()),
                tables=shop.Base,
            )
            by_attribute = locate_subject(
                session,
                identifier=(shop.Customer.email, CANARY["email"]),
                tables=shop.Base,
            )
        assert by_category.subject == subject
        assert by_attribute.subject == subject
        assert by_category.rows == by_attribute.rows

    def test_unknown_identifier_is_a_typed_error_without_the_value(
        self, engine: Engine, shop: Shop, two: tuple[uuid.UUID, uuid.UUID]
    ) -> None:
        """SubjectNotFoundError; its message does not repeat the value searched."""
        with (
            Session(engine) as session,
            dpo(),
            custdata.purpose("support"),
            pytest.raises(custdata.SubjectNotFoundError) as info,
        ):
            locate_subject(
                session,
                identifier=("contact.email", "nobody.canary@example.jp"),
                tables=shop.Base,
            )
        assert "nobody.canary" not in str(info.value)

    @pytest.mark.parametrize(
        ("args", "error"),
        [
            ({}, ValueError),
            (
                {"subject": uuid.uuid4(), "identifier": ("contact.email", "x")},
                ValueError,
            ),
            ({"identifier": ("no.such.category", "x")}, custdata.ConfigurationError),
            ({"subject": "not-a-uuid"}, TypeError),
        ],
    )
    def test_misuse(
        self,
        engine: Engine,
        shop: Shop,
        world: World,
        args: dict[str, Any],
        error: type[Exception],
    ) -> None:
        """Each misuse raises its own error type."""
        with Session(engine) as session, dpo(), pytest.raises(error):
            locate_subject(session, tables=shop.Base, **args)

    def test_footprint_lists_holds_and_recipients(
        self, engine: Engine, shop: Shop, world: World, two: tuple[uuid.UUID, uuid.UUID]
    ) -> None:
        """Hold records come from the custodian's register."""
        subject, _other = two
        world.holds.place(
            case="case-7",
            subjects=[subject],
            reason="litigation",
            actor="legal-1",
            now=T0,
        )
        with Session(engine) as session, dpo():
            fp = locate_subject(session, subject, tables=shop.Base)
        assert [h.case for h in fp.holds] == ["case-7"]
        assert fp.held_at(T1)
        assert fp.recipients == ()

    def test_provision_records_give_the_recipients_to_notify(
        self, engine: Engine, shop: Shop, two: tuple[uuid.UUID, uuid.UUID]
    ) -> None:
        """Provisions and receipts naming the subject; recipients for GDPR Art. 19."""
        subject, other = two
        store = InMemoryProvisionRecordStore()

        def record(kind: str, who: str, subjects: list[str]) -> ProvisionRecord:
            return ProvisionRecord(
                record_id=f"{kind}-{who}",
                kind=kind,  # type: ignore[arg-type]
                basis="consent",
                method="each",
                counterparty_id=who,
                subjects=subjects,
                data_items=["name"],
                items={},
                created_at=T0,
                first_at=T0,
                last_at=T0,
                retain_until=T8,
                pack_id="appi-2022-04",
            )

        store.add(record("provision", "partner-1", [str(subject), str(other)]))
        store.add(record("provision", "partner-2", [str(other)]))
        store.add(record("receipt", "broker-9", [str(subject)]))
        with Session(engine) as session, dpo():
            fp = locate_subject(session, subject, tables=shop.Base, records=store)
        assert [r.record_id for r in fp.provisions] == ["provision-partner-1"]
        assert [r.record_id for r in fp.receipts] == ["receipt-broker-9"]
        assert fp.recipients == ("partner-1",)


class TestDisclose:
    @pytest.mark.parametrize("fmt", ["json", "csv"])
    def test_export_has_every_value_of_the_subject_and_nothing_else(
        self,
        engine: Engine,
        shop: Shop,
        world: World,
        two: tuple[uuid.UUID, uuid.UUID],
        fmt: str,
    ) -> None:
        """Every canary of the subject is written, none of the other customer."""
        subject, other = two
        out = io.StringIO()
        with Session(engine) as session, dpo():
            fp = locate_subject(session, subject, tables=shop.Base)
            report = disclose_subject(session, fp, fmt, out, tables=shop.Base)  # type: ignore[arg-type]
        text = out.getvalue()
        for value in CANARY.values():
            assert value in text
        for value in OTHER.values():
            assert value not in text
        assert str(other) not in text
        assert report.values == 5
        assert report.format == fmt
        if fmt == "json":
            doc = json.loads(text)
            assert doc["subject"] == str(subject)
            customers = doc["tables"][shop.Customer.__tablename__]
            assert customers[0]["email"] == CANARY["email"]
            assert "email_bidx" not in customers[0]
        else:
            rows = list(csv.reader(io.StringIO(text)))
            assert rows[0] == ["table", "primary_key", "column", "value"]
            assert [
                shop.Customer.__tablename__,
                str(subject),
                "name",
                CANARY["name"],
            ] in rows

    def test_recorded_as_an_export_to_the_subject_without_values(
        self, engine: Engine, shop: Shop, world: World, two: tuple[uuid.UUID, uuid.UUID]
    ) -> None:
        """One export.subject event per table, fields and counts, under the purpose."""
        subject, _other = two
        with Session(engine) as session, dpo():
            fp = locate_subject(session, subject, tables=shop.Base)
            disclose_subject(
                session, fp, "json", io.StringIO(), tables=shop.Base, request_id="req-1"
            )
        events = world.events()
        exports = [e for e in events if e.get("action") == "export.subject"]
        assert {e["entity"] for e in exports} == {t.name for t in shop.tables}
        assert all(e["purpose"] == "disclosure" for e in exports)
        assert all(e["subject_ref"] == fp.audit_pseudonym for e in exports)
        assert all(e["request_id"] == "req-1" for e in exports)
        assert sum(e["count"] for e in exports) == 5
        reveals = [e for e in events if e.get("action") == "field.reveal"]
        assert reveals
        assert all(e["purpose"] == "disclosure" for e in reveals)
        text = world.audit_path.read_text(encoding="utf-8")
        for value in CANARY.values():
            assert value not in text
        assert world.verified()

    def test_refused_for_a_role_without_the_disclosure_purpose(
        self, engine: Engine, shop: Shop, world: World, two: tuple[uuid.UUID, uuid.UUID]
    ) -> None:
        """A clerk cannot claim the disclosure purpose: nothing written, nothing exported."""
        subject, _other = two
        out = io.StringIO()
        with (
            Session(engine) as session,
            custdata.acting_as("clerk-1", role="clerk"),
        ):
            fp = locate_subject(session, subject, tables=shop.Base)
            with pytest.raises(custdata.PurposeNotGrantedError):
                disclose_subject(session, fp, "json", out, tables=shop.Base)
        assert out.getvalue() == ""
        assert not [e for e in world.events() if e.get("action") == "export.subject"]

    def test_to_a_file_or_returned_never_in_the_repr(
        self,
        engine: Engine,
        shop: Shop,
        world: World,
        two: tuple[uuid.UUID, uuid.UUID],
        tmp_path: Path,
    ) -> None:
        """A path is written as UTF-8; without *out* the text is returned, not shown."""
        subject, _other = two
        with Session(engine) as session, dpo():
            fp = locate_subject(session, subject, tables=shop.Base)
            written = disclose_subject(session, fp, "csv", tmp_path / "copy.csv")
            returned = disclose_subject(session, fp, "csv")
        assert written.path == tmp_path / "copy.csv"
        assert written.path.read_text(encoding="utf-8") == returned.text
        assert 0o600 == written.path.stat().st_mode & 0o777
        assert [] == list(tmp_path.glob(".copy.csv.*"))  # no temporary left
        assert CANARY["email"] in returned.text
        assert written.text == ""
        for value in CANARY.values():
            assert value not in repr(returned)
            assert value not in repr(fp)

    def test_needs_an_actor(self, engine: Engine, shop: Shop, world: World) -> None:
        """No actor, no disclosure."""
        fp = custdata.sqlalchemy.SubjectFootprint(subject=uuid.uuid4(), rows=())
        with Session(engine) as session, pytest.raises(custdata.ActorRequiredError):
            disclose_subject(session, fp, "json", io.StringIO(), tables=shop.Base)

    def test_unwritable_out_is_a_configuration_error(
        self,
        engine: Engine,
        shop: Shop,
        world: World,
        two: tuple[uuid.UUID, uuid.UUID],
        tmp_path: Path,
    ) -> None:
        """A path that cannot be written is a typed error naming no value; no file is left."""
        subject, _other = two
        exports = tmp_path / "exports"
        exports.mkdir()
        target = exports / "missing-folder" / "copy.json"
        with Session(engine) as session, dpo():
            fp = locate_subject(session, subject, tables=shop.Base)
            with pytest.raises(custdata.ConfigurationError) as info:
                disclose_subject(session, fp, "json", target)
        assert "cannot write the disclosure" in str(info.value)
        for value in CANARY.values():
            assert value not in str(info.value)
        assert [] == list(exports.iterdir())

    def test_bad_format(self, engine: Engine, shop: Shop, world: World) -> None:
        """An unknown format is a ConfigurationError (a ValueError too)."""
        fp = custdata.sqlalchemy.SubjectFootprint(subject=uuid.uuid4(), rows=())
        with (
            Session(engine) as session,
            dpo(),
            pytest.raises(custdata.ConfigurationError, match="format"),
        ):
            disclose_subject(session, fp, "xml", io.StringIO())  # type: ignore[arg-type]


class TestCorrect:
    def test_correction_goes_through_the_normal_write_path(
        self, engine: Engine, shop: Shop, world: World, two: tuple[uuid.UUID, uuid.UUID]
    ) -> None:
        """訂正: a write under a purpose that permits it, encrypted and searchable."""
        subject, _other = two
        with (
            Session(engine) as session,
            custdata.acting_as("clerk-1", role="clerk"),
            custdata.purpose("support"),
        ):
            customer = session.get(shop.Customer, subject)
            assert customer is not None
            customer.email = "hanako.corrected@example.jp"
            session.commit()
            found = session.scalars(
                select(shop.Customer).where(
                    shop.Customer.email == "hanako.corrected@example.jp"
                )
            ).all()
            assert [c.id for c in found] == [subject]
        stored = _stored(engine, shop.Customer.__table__)
        assert all(b"hanako.corrected" not in bytes(str(r), "utf-8") for r in stored)


class TestErase:
    def _erase(
        self, engine: Engine, shop: Shop, subject: uuid.UUID, **kw: Any
    ) -> custdata.sqlalchemy.ErasureResult:
        with Session(engine) as session, dpo(), custdata.purpose("privacy_desk"):
            fp = locate_subject(session, subject, tables=shop.Base)
            return erase_subject(
                session, fp, reason="erasure_request", tables=shop.Base, **kw
            )

    def test_statutory_minimum_keeps_the_accounting_value_only(
        self, engine: Engine, shop: Shop, world: World, two: tuple[uuid.UUID, uuid.UUID]
    ) -> None:
        """After one year: the order total is kept (statute), everything else goes; key kept."""
        subject, other = two
        result = self._erase(engine, shop, subject, request_id="req-9")
        assert [(k.table, k.field, k.reason, k.rule) for k in result.kept] == [
            (shop.Order.__tablename__, "total", "statutory_minimum", "accounting")
        ]
        assert result.kept[0].until == dt.datetime(2027, 4, 1, 9, 0, tzinfo=UTC)
        assert not result.shredded
        with Session(engine) as session, dpo(), custdata.purpose("disclosure"):
            fp = locate_subject(session, subject, tables=shop.Base)
            assert [(r.table, r.fields) for r in fp.rows if r.fields] == [
                (shop.Order.__tablename__, ("total",))
            ]
            # The kept value still reads: the key was not destroyed under it.
            totals = session.scalars(
                select(shop.Order.total).where(shop.Order.customer_id == subject)
            ).all()
            assert CANARY["total"] in totals
            # The other customer is untouched.
            other_fp = locate_subject(session, other, tables=shop.Base)
            assert other_fp.row_count == 4
            assert sum(len(r.fields) for r in other_fp.rows) == 5
        events = world.events()
        expire = [e for e in events if e.get("action") == "retention.expire"]
        assert expire
        assert all(e["reason"] == "erasure_request" for e in expire)
        assert all(e["actor"]["id"] == "dpo-1" for e in expire)
        assert all(e["purge_id"] == "req-9" for e in expire)
        assert not [e for e in events if e.get("action") == "key.shred"]
        assert world.verified()

    def test_after_the_statute_everything_goes_and_the_key_is_shredded(
        self, engine: Engine, shop: Shop, world: World, two: tuple[uuid.UUID, uuid.UUID]
    ) -> None:
        """No row is left that could later be read (and logged as revealed)."""
        subject, other = two
        dry = self._erase(engine, shop, subject, now=T8, dry_run=True)
        assert dry.total("crypto_shred") == 1
        assert not dry.shredded
        result = self._erase(engine, shop, subject, now=T8)
        assert result.counts == dry.counts
        assert result.complete
        assert result.shredded
        assert result.total("crypto_shred") == 1
        with Session(engine) as session, dpo(), custdata.purpose("disclosure"):
            fp = locate_subject(session, subject, tables=shop.Base)
            assert all(not r.fields for r in fp.rows)
            assert session.get(shop.Customer, subject) is None or (
                session.get(shop.Customer, subject).name is None  # type: ignore[union-attr]
            )
            orders = session.scalars(
                select(shop.Order).where(shop.Order.customer_id == subject)
            ).all()
            assert all(o.total is None and o.note is None for o in orders)
            other_customer = session.get(shop.Customer, other)
            assert other_customer is not None
            assert other_customer.name == OTHER["name"]
        events = world.events()
        shreds = [e for e in events if e.get("action") == "key.shred"]
        assert len(shreds) == 1
        assert shreds[0]["subject_ref"] == fp.audit_pseudonym
        reveals = [
            e
            for e in events
            if e.get("action") == "field.reveal"
            and e.get("subject_ref") == fp.audit_pseudonym
            and e.get("purpose") == "disclosure"
        ]
        assert reveals == []
        assert world.verified()

    def test_a_legal_hold_keeps_everything(
        self, engine: Engine, shop: Shop, world: World, two: tuple[uuid.UUID, uuid.UUID]
    ) -> None:
        """Held: nothing erased, nothing shredded, every value counted as held."""
        subject, _other = two
        world.holds.place(
            case="case-1",
            subjects=[subject],
            reason="litigation",
            actor="legal-1",
            now=T0,
        )
        before = {t.name: _stored(engine, t) for t in shop.tables}
        result = self._erase(engine, shop, subject, now=T8)
        assert {k.reason for k in result.kept} == {"legal_hold"}
        assert sum(k.count for k in result.kept) == 5
        assert result.counts == ()
        assert not result.shredded
        assert {t.name: _stored(engine, t) for t in shop.tables} == before

    def test_dry_run_counts_and_changes_nothing(
        self, engine: Engine, shop: Shop, world: World, two: tuple[uuid.UUID, uuid.UUID]
    ) -> None:
        """The dry run reports what the real run then does."""
        subject, _other = two
        before = {t.name: _stored(engine, t) for t in shop.tables}
        dry = self._erase(engine, shop, subject, dry_run=True)
        assert {t.name: _stored(engine, t) for t in shop.tables} == before
        assert not [e for e in world.events() if e.get("action") == "retention.expire"]
        real = self._erase(engine, shop, subject)
        assert dry.kept == real.kept
        assert dry.total("erase") + dry.total("delete_row") > 0

    def test_deletion_log_replays_after_a_restore(
        self,
        engine: Engine,
        shop: Shop,
        world: World,
        two: tuple[uuid.UUID, uuid.UUID],
        tmp_path: Path,
    ) -> None:
        """The erasure writes the sweep's deletion log; replay repeats it."""
        subject, _other = two
        log = tmp_path / "deletions.jsonl"
        self._erase(engine, shop, subject, log=log)
        after = {t.name: _stored(engine, t) for t in shop.tables}
        entries = [json.loads(x) for x in log.read_text(encoding="utf-8").splitlines()]
        assert entries
        assert all(e["sweep"] == entries[0]["sweep"] for e in entries)
        assert replay_deletions(engine, log, tables=shop.Base) == 0
        assert {t.name: _stored(engine, t) for t in shop.tables} == after

    def test_needs_a_purpose_that_may_erase(
        self, engine: Engine, shop: Shop, world: World, two: tuple[uuid.UUID, uuid.UUID]
    ) -> None:
        """Erasing under a purpose without may_erase is refused; nothing changes."""
        subject, _other = two
        before = {t.name: _stored(engine, t) for t in shop.tables}
        with Session(engine) as session, dpo(), custdata.purpose("support"):
            fp = locate_subject(session, subject, tables=shop.Base)
            with pytest.raises(custdata.PurposeViolationError):
                erase_subject(session, fp, tables=shop.Base)
        assert {t.name: _stored(engine, t) for t in shop.tables} == before


class TestDisclosurePurpose:
    """A ``subject_disclosure`` purpose: every tagged field, no retention rule."""

    def test_permits_every_tagged_field_without_being_listed(
        self, policy: custdata.Policy
    ) -> None:
        """Listed nowhere, prohibited or not, it is compliant; an untagged field stays refused."""
        plain = custdata.FieldPolicy(category="name", purposes=["support"])
        prohibiting = custdata.FieldPolicy(
            category="name", purposes=["billing"], prohibited=["support"]
        )
        untagged = custdata.FieldPolicy(category="name", purposes=[])
        assert policy.permits(plain, "disclosure")
        assert policy.permits(prohibiting, "disclosure")
        assert not policy.permits(untagged, "disclosure")
        # Other purposes keep the ordinary rule.
        assert not policy.permits(plain, "billing")
        assert policy.disclosure_purposes == frozenset({"disclosure"})

    def test_declared_in_toml_and_never_lengthens_retention(
        self, tmp_path: Path
    ) -> None:
        """``subject_disclosure = true`` loads; its long rule does not reach any field."""
        text = """
[policy]
organisation = "T K.K."
version = "1"
effective_date = 2019-01-01
next_review = 2099-01-01

[retention.support]
period = "P1Y"
anchor = "acquired"
action = "delete"

[retention.requests]
period = "P10Y"
anchor = "acquired"
action = "delete"

[purposes.support]
text_ja = "サポート"
text_en = "Support"
retention = "support"

[purposes.disclosure]
text_ja = "本人への開示"
text_en = "Disclosure to the data subject"
retention = "requests"
subject_disclosure = true

[purposes."disclosure.portability"]
parent = "disclosure"
text_ja = "データポータビリティ"
text_en = "Portability"
"""
        path = tmp_path / "p.toml"
        path.write_text(text, encoding="utf-8")
        loaded = custdata.Policy.from_toml(path)
        assert loaded.disclosure_purposes == frozenset(
            {"disclosure", "disclosure.portability"}
        )
        field = custdata.FieldPolicy(category="name", purposes=["support"])
        assert loaded.permits(field, "disclosure.portability")
        assert [r.id for r in loaded.retention_rules_for(field)] == ["support"]
        path.write_text(
            text.replace("subject_disclosure = true\n", ""), encoding="utf-8"
        )
        assert custdata.Policy.from_toml(path).disclosure_purposes == frozenset()


class TestRestricted:
    """A subject whose use is restricted (利用停止, GDPR Art. 18)."""

    def test_disclosure_stays_allowed_and_normal_use_is_refused(
        self, engine: Engine, shop: Shop, world: World, two: tuple[uuid.UUID, uuid.UUID]
    ) -> None:
        """The footprint lists the restriction; disclosure reads; support is refused."""
        subject, _other = two
        world.restrictions.restrict(
            subject, reason="request", actor="dpo-1", request_id="req-3", at=T0
        )
        out = io.StringIO()
        with Session(engine) as session, dpo():
            fp = locate_subject(session, subject, tables=shop.Base)
            assert [r.request_id for r in fp.restrictions] == ["req-3"]
            disclose_subject(session, fp, "json", out)
            with (
                custdata.purpose("support"),
                pytest.raises(custdata.SubjectRestrictedError),
            ):
                _ = session.get(shop.Customer, subject).name  # type: ignore[union-attr]
        for value in CANARY.values():
            assert value in out.getvalue()
        denied = [
            e
            for e in world.events()
            if e.get("outcome") == "denied" and e.get("reason") == "restricted"
        ]
        assert denied
        assert all(e["purpose"] == "support" for e in denied)

    def test_a_restricted_subject_can_be_erased(
        self, engine: Engine, shop: Shop, world: World, two: tuple[uuid.UUID, uuid.UUID]
    ) -> None:
        """Stopping use does not stop erasure (a purpose that may_erase)."""
        subject, _other = two
        world.restrictions.restrict(subject, reason="request", actor="dpo-1", at=T0)
        with Session(engine) as session, dpo(), custdata.purpose("privacy_desk"):
            fp = locate_subject(session, subject, tables=shop.Base)
            result = erase_subject(session, fp, now=T8)
        assert result.complete
        assert result.shredded
