"""The SQLAlchemy integration on SQLite, PostgreSQL and MariaDB: ORM and Core."""

# ruff: noqa: F811 - pytest fixtures imported from sa_fixtures

from __future__ import annotations

import datetime as dt
import decimal
import sys
import uuid

from pathlib import Path

import pytest

from sqlalchemy import (
    LargeBinary,
    column,
    delete,
    insert,
    select,
    table,
    text,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, selectinload

import custdata

from custdata.governance import ConsentLedger
from custdata.sqlalchemy import MASK_TEXT


sys.path.insert(0, str(Path(__file__).parent))
from sa_fixtures import (  # noqa: F401 - pytest fixtures
    CANARIES,
    CountingKeyring,
    Models,
    Recorder,
    billing,
    consent_to_marketing,
    counting,
    engine,
    keyring,
    marketing,
    models,
    recorder,
    sa_custodian,
    support,
)


def _add_customer(session: Session, models: Models, **over: object) -> uuid.UUID:
    values: dict[str, object] = {
        "name": CANARIES["name"],
        "email": CANARIES["email"],
        "phone": CANARIES["phone"],
        "card": CANARIES["card"],
        "birth_date": dt.date(1990, 4, 1),
    }
    values.update(over)
    # Each value is written for a purpose that permits it: the billing fields
    # at sign-up, the support-only phone and note by support afterwards.
    phone = values.pop("phone")
    with billing():
        customer = models.Customer(**values)
        customer.orders.append(models.Order(total=decimal.Decimal("12.50")))
        session.add(customer)
        session.commit()
        customer_id: uuid.UUID = customer.id
    with support():
        loaded = session.get(models.Customer, customer_id)
        loaded.phone = phone
        loaded.orders[0].note = CANARIES["note"]
        session.commit()
    return customer_id


@pytest.fixture
def cid(engine: Engine, models: Models, sa_custodian: custdata.Custodian) -> uuid.UUID:
    with Session(engine) as session:
        return _add_customer(session, models)


class TestRoundTrip:
    """Values written through the ORM and Core come back equal in an allowed purpose."""

    def test_orm_entity_round_trip(
        self, engine: Engine, models: Models, cid: uuid.UUID
    ) -> None:
        """Every declared type reads back equal under billing."""
        with Session(engine) as session, billing():
            c = session.get(models.Customer, cid)
            assert c is not None
            expected = (
                CANARIES["name"],
                CANARIES["email"],
                CANARIES["card"],
                dt.date(1990, 4, 1),
            )
            assert expected == (c.name, c.email, c.card, c.birth_date)
            assert [decimal.Decimal("12.50")] == [o.total for o in c.orders]

    def test_uuid7_subject_is_generated(
        self, engine: Engine, models: Models, cid: uuid.UUID
    ) -> None:
        """The subject key defaults to a client-generated UUIDv7."""
        assert 7 == cid.version

    def test_core_insert_and_select(
        self, engine: Engine, models: Models, sa_custodian: custdata.Custodian
    ) -> None:
        """Core insert (subject found in the parameters) and Core select round-trip."""
        t = models.Customer.__table__
        new_id = uuid.uuid4()
        with engine.begin() as conn, support():
            conn.execute(
                insert(t),
                [{"id": new_id, "name": "Core Taro", "email": "core@example.jp"}],
            )
        with engine.connect() as conn, support():
            row = conn.execute(
                select(t.c.name, t.c.email).where(t.c.id == new_id)
            ).one()
        assert ("Core Taro", "core@example.jp") == tuple(row)

    def test_core_update_with_where_subject(
        self, engine: Engine, models: Models, cid: uuid.UUID
    ) -> None:
        """A Core UPDATE pinned to one subject binds the new value to it."""
        t = models.Customer.__table__
        with engine.begin() as conn, support():
            conn.execute(update(t).where(t.c.id == cid).values(name="Renamed"))
        with Session(engine) as session, support():
            assert "Renamed" == session.get(models.Customer, cid).name

    def test_orm_update(self, engine: Engine, models: Models, cid: uuid.UUID) -> None:
        """Assigning through the ORM re-encrypts, child rows keep their subject."""
        with Session(engine) as session, support():
            c = session.get(models.Customer, cid)
            c.name = "Changed"
            c.orders[0].note = "changed note"
            session.commit()
        with Session(engine) as session, support():
            c = session.get(models.Customer, cid)
            assert ("Changed", "changed note") == (c.name, c.orders[0].note)


class TestPurpose:
    """The same read through entity load, column select, relationship and get."""

    def test_get_allowed_and_denied_field(
        self, engine: Engine, models: Models, cid: uuid.UUID, counting: CountingKeyring
    ) -> None:
        """get() reveals permitted fields; a denied one raises on access without decrypting."""
        with Session(engine) as session, support():
            c = session.get(models.Customer, cid)
            assert CANARIES["email"] == c.email
            before = counting.counts["decrypt"]
            with pytest.raises(custdata.PurposeViolationError):
                _ = c.card
            assert before == counting.counts["decrypt"]

    def test_entity_load_denied_never_decrypts(
        self,
        engine: Engine,
        models: Models,
        cid: uuid.UUID,
        counting: CountingKeyring,
        consent_ledger: ConsentLedger,
    ) -> None:
        """An entity load decrypts nothing; reading email in marketing decrypts it alone."""
        consent_to_marketing(consent_ledger, cid)
        with Session(engine) as session, marketing():
            before = counting.counts["decrypt"]
            c = session.scalars(select(models.Customer)).one()
            assert 0 == counting.counts["decrypt"] - before
            assert CANARIES["email"] == c.email
            with pytest.raises(custdata.PurposeViolationError):
                _ = c.name
            assert 1 == counting.counts["decrypt"] - before

    def test_column_select_allowed(
        self,
        engine: Engine,
        models: Models,
        cid: uuid.UUID,
        consent_ledger: ConsentLedger,
    ) -> None:
        """select(Customer.email) in an allowed purpose returns plaintext."""
        consent_to_marketing(consent_ledger, cid)
        with Session(engine) as session, marketing():
            assert [CANARIES["email"]] == session.scalars(
                select(models.Customer.email)
            ).all()

    def test_column_select_denied(
        self, engine: Engine, models: Models, cid: uuid.UUID, counting: CountingKeyring
    ) -> None:
        """select(Customer.card) in support raises before fetching: no decrypt."""
        before = counting.counts["decrypt"]
        with (
            Session(engine) as session,
            support(),
            pytest.raises(custdata.PurposeViolationError),
        ):
            session.scalars(select(models.Customer.card)).all()
        assert before == counting.counts["decrypt"]

    def test_relationship_allowed_and_denied(
        self, engine: Engine, models: Models, cid: uuid.UUID, counting: CountingKeyring
    ) -> None:
        """Order.note is support-only: billing reads total but not note."""
        with Session(engine) as session, billing():
            c = session.get(models.Customer, cid)
            order = c.orders[0]
            assert decimal.Decimal("12.50") == order.total
            before = counting.counts["decrypt"]
            with pytest.raises(custdata.PurposeViolationError):
                _ = order.note
            assert before == counting.counts["decrypt"]

    def test_relationship_load_names_the_subject(
        self, engine: Engine, models: Models, cid: uuid.UUID, recorder: Recorder
    ) -> None:
        """A lazy relationship load records the parent's subject id."""
        with Session(engine) as session, support():
            c = session.get(models.Customer, cid)
            _ = c.orders[0].note
        last = [
            d for d in recorder.decisions if d.entity == models.Order.__tablename__
        ][-1]
        assert (str(cid),) == last.subjects

    def test_selectinload_relationship(
        self, engine: Engine, models: Models, cid: uuid.UUID
    ) -> None:
        """Eager relationship loads decrypt with each row's subject."""
        with Session(engine) as session, support():
            c = session.scalars(
                select(models.Customer).options(selectinload(models.Customer.orders))
            ).one()
            assert [CANARIES["note"]] == [o.note for o in c.orders]

    def test_mask_on_violation(
        self, engine: Engine, models: Models, cid: uuid.UUID, counting: CountingKeyring
    ) -> None:
        """phone masks on violation: billing sees the mask, and it is not decrypted."""
        with Session(engine) as session, billing():
            before = counting.counts["decrypt"]
            phone = session.scalars(select(models.Customer.phone)).one()
            assert MASK_TEXT == phone
            assert before == counting.counts["decrypt"]

    def test_no_actor_entity_load_hides_fields(
        self, engine: Engine, models: Models, cid: uuid.UUID
    ) -> None:
        """Without any context an entity loads, but reading a field raises ActorRequiredError."""
        with Session(engine) as session:
            c = session.get(models.Customer, cid)
            assert "basic" == c.plan
            with pytest.raises(custdata.ActorRequiredError):
                _ = c.email

    def test_denied_read_is_audited(
        self, engine: Engine, models: Models, cid: uuid.UUID, recorder: Recorder
    ) -> None:
        """A denied read records one denied decision naming the field, not the value."""
        with (
            Session(engine) as session,
            support(),
            pytest.raises(custdata.PurposeViolationError),
        ):
            session.scalars(select(models.Customer.card)).all()
        last = recorder.decisions[-1]
        assert (custdata.Outcome.DENIED, ("card",)) == (last.outcome, last.fields)
        assert CANARIES["card"] not in repr(last)

    def test_one_decision_per_statement(
        self,
        engine: Engine,
        models: Models,
        sa_custodian: custdata.Custodian,
        recorder: Recorder,
    ) -> None:
        """Loading 30 customers records one read decision, not one per field or row."""
        with Session(engine) as session, support():
            for i in range(30):
                session.add(models.Customer(name=f"n{i}", email=f"e{i}@example.jp"))
            session.commit()
        with Session(engine) as session, support():
            n = len(recorder.decisions)
            rows = session.scalars(select(models.Customer)).all()
            assert 30 == len(rows)
            reads = [
                d for d in recorder.decisions[n:] if d.action is custdata.Action.READ
            ]
            assert 1 == len(reads)


class TestAttacks:
    """Ciphertext moved to another column or another customer's row does not decrypt."""

    def test_swap_between_columns(
        self, engine: Engine, models: Models, cid: uuid.UUID
    ) -> None:
        """name's ciphertext copied into email fails with DecryptionError.

        The copy is made as an attacker with database access would, outside
        the application's encrypted columns (custdata refuses it through them).
        """
        raw = table(models.Customer.__tablename__, column("email"), column("name"))
        with engine.begin() as conn:
            conn.execute(update(raw).values(email=raw.c.name))
        with (
            Session(engine) as session,
            support(),
            pytest.raises(custdata.DecryptionError),
        ):
            session.scalars(select(models.Customer.email)).all()

    def test_swap_between_customers(
        self, engine: Engine, models: Models, cid: uuid.UUID
    ) -> None:
        """Alice's card copied into Bob's row fails with DecryptionError when read."""
        with Session(engine) as session, billing():
            bob = models.Customer(name="Bob", email="bob@example.jp", card="5555")
            session.add(bob)
            session.commit()
            bob_id = bob.id
        t = models.Customer.__table__
        with engine.begin() as conn:
            stolen = conn.execute(text(f"SELECT card FROM {t.name}").columns()).all()  # noqa: S608
            alice_card = next(r[0] for r in stolen if r[0] is not None)
            # Planted as an attacker with database access would, outside the
            # application's encrypted columns (custdata refuses it through them).
            raw = table(t.name, column("card", LargeBinary), column("email_bidx"))
            conn.execute(
                update(raw)
                .where(raw.c.email_bidx.is_not(None), raw.c.card != alice_card)
                .values(card=alice_card)
            )
        with Session(engine) as session, billing():
            loaded = session.get(models.Customer, bob_id)
            with pytest.raises(custdata.DecryptionError):
                _ = loaded.card

    def test_raw_sql_sees_no_plaintext(
        self, engine: Engine, models: Models, cid: uuid.UUID
    ) -> None:
        """A dump of each table through raw SQL contains none of the canaries."""
        dump = b""
        with engine.connect() as conn:
            for table in models.Base.metadata.sorted_tables:
                for row in conn.execute(text(f"SELECT * FROM {table.name}")):  # noqa: S608
                    dump += repr(tuple(row)).encode()
        for canary in CANARIES.values():
            assert canary.encode() not in dump
            assert canary.lower().encode() not in dump


class TestSearch:
    """Blind-index equality search, uniqueness, and refused operators."""

    def test_equality_and_in(
        self, engine: Engine, models: Models, cid: uuid.UUID
    ) -> None:
        """== and in_() find the row through the companion column (e-mail case-folded)."""
        with Session(engine) as session, support():
            found = session.scalars(
                select(models.Customer).where(
                    models.Customer.email == "CANARY.Hanako@example.jp"
                )
            ).all()
            assert [cid] == [c.id for c in found]
            found = session.scalars(
                select(models.Customer.id).where(
                    models.Customer.email.in_(["x@y.z", CANARIES["email"]])
                )
            ).all()
            assert [cid] == found

    def test_unique_through_companion(
        self, engine: Engine, models: Models, cid: uuid.UUID
    ) -> None:
        """A second customer with the same e-mail violates the unique blind index."""
        from sqlalchemy.exc import IntegrityError

        with Session(engine) as session, billing():
            session.add(models.Customer(name="Twin", email=CANARIES["email"].upper()))
            with pytest.raises(IntegrityError):
                session.commit()

    @pytest.mark.parametrize(
        "build",
        [
            lambda c: c.email.like("%a%"),
            lambda c: c.email > "a",
            lambda c: c.email.desc(),
            lambda c: c.name == "x",
            lambda c: c.email.contains("a"),
        ],
        ids=["like", "range", "order", "not-searchable", "contains"],
    )
    def test_unsupported_operators_raise_at_construction(
        self, models: Models, sa_custodian: custdata.Custodian, build: object
    ) -> None:
        """LIKE, ranges, ordering and == on a non-searchable column raise at once."""
        with pytest.raises(custdata.UnsupportedOperationError):
            build(models.Customer)  # type: ignore[operator]

    def test_order_by_bare_column_raises(
        self, engine: Engine, models: Models, cid: uuid.UUID
    ) -> None:
        """order_by(Customer.email) raises before the statement runs."""
        with (
            Session(engine) as session,
            support(),
            pytest.raises(custdata.UnsupportedOperationError),
        ):
            session.scalars(
                select(models.Customer).order_by(models.Customer.email)
            ).all()


class TestBulk:
    """ORM bulk update()/delete() go through the purpose checks."""

    def test_bulk_delete_needs_context(
        self, engine: Engine, models: Models, cid: uuid.UUID
    ) -> None:
        """delete(Customer) without an actor raises ActorRequiredError."""
        with Session(engine) as session, pytest.raises(custdata.ActorRequiredError):
            session.execute(delete(models.Order))

    def test_bulk_delete_in_context_is_audited(
        self, engine: Engine, models: Models, cid: uuid.UUID, recorder: Recorder
    ) -> None:
        """A bulk delete in support is recorded as a DELETE decision."""
        with Session(engine) as session, support():
            session.execute(delete(models.Order))
            session.commit()
        assert custdata.Action.DELETE == recorder.decisions[-1].action

    def test_bulk_update_of_subject_bound_column_refused(
        self, engine: Engine, models: Models, cid: uuid.UUID
    ) -> None:
        """update(Customer).values(name=...) cannot bind one ciphertext to many subjects."""
        with (
            Session(engine) as session,
            support(),
            pytest.raises(custdata.UnsupportedOperationError),
        ):
            session.execute(update(models.Customer).values(name="x"))


class TestAtRest:
    """The database file itself holds no plaintext."""

    def test_sqlite_file_has_no_canaries(
        self, engine: Engine, db_url: str, models: Models, cid: uuid.UUID
    ) -> None:
        """The raw bytes of the SQLite file contain none of the canary plaintexts."""
        if not db_url.startswith("sqlite"):
            pytest.skip("the file dump applies to SQLite")
        engine.dispose()
        data = Path(db_url.removeprefix("sqlite:///")).read_bytes()
        for canary in CANARIES.values():
            assert canary.encode() not in data
            assert canary.encode("utf-16-le") not in data


class TestTypes:
    """Every codec type round-trips through Core, in binary and text storage."""

    @pytest.mark.parametrize("storage", ["binary", "text"])
    def test_bytes_are_not_taken_as_sealed(
        self, engine: Engine, sa_custodian: custdata.Custodian, storage: str
    ) -> None:
        """Bytes that reach a str column's bind processor unsealed are refused, not stored."""
        from sqlalchemy import Column, Integer, MetaData, Table, literal_column

        from custdata import sqlalchemy as cs

        md = MetaData()
        tag = {
            "custdata": custdata.FieldPolicy(category="inquiry", purposes=["support"])
        }
        t = Table(
            f"sa_smuggle_{uuid.uuid4().hex[:8]}",
            md,
            Column("id", Integer, primary_key=True),
            Column("note", cs.EncryptedString(storage=storage), info=tag),
            Column("other", cs.EncryptedString(storage=storage), info=tag),
        )
        md.create_all(engine)
        try:
            canary = CANARIES["note"].encode()
            # A SQL expression among the values is refused before anything
            # is sent (it can be neither encrypted nor bound to a subject).
            stmt = insert(t).values(id=1, note=canary, other=literal_column("NULL"))
            with (
                pytest.raises(custdata.UnsupportedOperationError) as refused,
                engine.begin() as conn,
                support(),
            ):
                conn.execute(stmt)
            assert "other" in str(refused.value)
            assert "canary" not in str(refused.value)
            # Bytes that reach the bind processor unsealed (a statement the
            # hooks did not prepare) are refused there, not stored.
            process = t.c.note.type.bind_processor(engine.dialect)
            with pytest.raises(custdata.UnsupportedOperationError) as info:
                process(canary)
            assert "canary" not in str(info.value)
            with engine.connect() as conn:
                assert conn.execute(select(t.c.id)).all() == []
        finally:
            md.drop_all(engine)

    @pytest.mark.parametrize("storage", ["binary", "text"])
    def test_all_types_round_trip(
        self, engine: Engine, sa_custodian: custdata.Custodian, storage: str
    ) -> None:
        """int, bool, Decimal, date, datetime, time, UUID, JSON, Enum, bytes and str come back equal."""
        import enum

        from sqlalchemy import Column, Integer, MetaData, Table

        from custdata import sqlalchemy as cs

        class Color(enum.Enum):
            RED = 1
            BLUE = 2

        md = MetaData()
        name = f"sa_types_{uuid.uuid4().hex[:8]}"
        kinds = {
            "s": (cs.EncryptedString, "日本語テキスト"),
            "b": (cs.EncryptedBytes, b"\x00\xffraw"),
            "i": (cs.EncryptedInteger, -(2**70)),
            "d": (cs.EncryptedDecimal, decimal.Decimal("-12.3400")),
            "f": (cs.EncryptedBoolean, True),
            "dt": (cs.EncryptedDate, dt.date(2001, 2, 3)),
            "ts": (
                cs.EncryptedDateTime,
                dt.datetime(2001, 2, 3, 4, 5, 6, 7, tzinfo=dt.timezone.utc),
            ),
            "tm": (cs.EncryptedTime, dt.time(23, 59, 58, 999)),
            "u": (cs.EncryptedUUID, uuid.UUID(int=42)),
            "j": (cs.EncryptedJSON, {"a": [1, 2, {"b": None}]}),
        }
        tag = {
            "custdata": custdata.FieldPolicy(
                category="transaction.history", purposes=["support"]
            )
        }
        cols = [Column(k, t(storage=storage), info=tag) for k, (t, _) in kinds.items()]
        cols.append(Column("e", cs.EncryptedEnum(Color, storage=storage), info=tag))
        t = Table(name, md, Column("id", Integer, primary_key=True), *cols)
        md.create_all(engine)
        try:
            row = {k: v for k, (_, v) in kinds.items()} | {"id": 1, "e": Color.BLUE}
            more = [row | {"id": 2}, row | {"id": 3, "b": b"\x01\x01" + bytes(40)}]
            with engine.begin() as conn, support():
                conn.execute(insert(t), [row])
                # Several rows are sealed a column at a time; a bytes
                # plaintext that looks like an envelope is still a plaintext.
                conn.execute(insert(t), more)
            with engine.connect() as conn, support():
                got = [r._asdict() for r in conn.execute(select(t).order_by(t.c.id))]
            assert got == [row, *more]
            with (
                engine.connect() as conn,
                billing(),
                pytest.raises(custdata.PurposeViolationError),
            ):
                conn.execute(select(t.c.s)).all()
        finally:
            md.drop_all(engine)
