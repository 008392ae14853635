"""How encrypted values are fetched: entity loads read the row's own subject column.

An entity load (select-all, ``get``, joined eager loads, aliases) selects each
envelope as stored and decrypts it with the subject id read from the same row;
only a column select that lacks the subject column selects ``subject || '|' ||
envelope``. Either way the subject id is named by the same canonical text in
the audit trail. On SQLite, PostgreSQL and MariaDB.
"""

# ruff: noqa: F811 - pytest fixtures imported from sa_fixtures

from __future__ import annotations

import decimal
import sys
import types
import uuid

from pathlib import Path
from typing import Any

import pytest

from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, aliased, joinedload

import custdata

from custdata.crypto import _accel as _crypto_accel
from custdata.crypto._envelope import length_prefixed, subject_bytes
from custdata.governance import ConsentLedger
from custdata.sqlalchemy import _runtime
from custdata.sqlalchemy._binding import subject_parts, subject_tail, subject_value


sys.path.insert(0, str(Path(__file__).parent))
from sa_fixtures import (  # noqa: F401 - pytest fixtures
    CANARIES,
    CountingKeyring,
    Models,
    Recorder,
    billing,
    counting,
    engine,
    keyring,
    models,
    plant,
    recorder,
    sa_custodian,
    support,
)


def _customer(session: Session, models: Models, name: str, total: str) -> uuid.UUID:
    with billing():
        customer = models.Customer(name=name, email=f"{name.lower()}@example.jp")
        customer.orders.append(models.Order(total=decimal.Decimal(total)))
        session.add(customer)
        session.commit()
        return customer.id  # type: ignore[no-any-return]


def _concatenates(sql: str) -> bool:
    return "||" in sql or "CONCAT(" in sql.upper()


class TestEntityLoads:
    """Entity loads fetch envelopes as stored; column selects carry the subject."""

    def test_sql_of_entity_load_and_column_select(
        self, engine: Engine, models: Models
    ) -> None:
        """select(Customer) has no concatenation; select(Customer.email) has one."""
        entity = str(select(models.Customer).compile(engine))
        column = str(select(models.Customer.email).compile(engine))
        with_subject = str(
            select(models.Customer.id, models.Customer.email).compile(engine)
        )
        assert not _concatenates(entity)
        assert _concatenates(column)
        assert not _concatenates(with_subject)

    def test_aliased_and_joined_loads_decrypt(
        self, engine: Engine, models: Models, sa_custodian: custdata.Custodian
    ) -> None:
        """An aliased entity and a joined eager load decrypt with their rows' subjects."""
        with Session(engine) as session:
            ids = [
                _customer(session, models, "Alice", "1.50"),
                _customer(session, models, "Bob", "2.50"),
            ]
        with Session(engine) as session, support():
            alias = aliased(models.Customer)
            got = session.execute(select(alias.id, alias.name)).all()
            assert {(ids[0], "Alice"), (ids[1], "Bob")} == {tuple(r) for r in got}
            loaded = (
                session.scalars(
                    select(models.Customer).options(joinedload(models.Customer.orders))
                )
                .unique()
                .all()
            )
            assert {
                ("Alice", decimal.Decimal("1.50")),
                ("Bob", decimal.Decimal("2.50")),
            } == {(c.name, c.orders[0].total) for c in loaded}

    def test_swap_between_customers_in_joined_load(
        self, engine: Engine, models: Models, sa_custodian: custdata.Custodian
    ) -> None:
        """An order total copied to another customer's order fails in a joined load."""
        with Session(engine) as session:
            _customer(session, models, "Alice", "1.50")
            _customer(session, models, "Bob", "2.50")
        t = models.Order.__table__.name
        with engine.begin() as conn:
            stolen = conn.execute(text(f"SELECT total FROM {t}").columns()).all()  # noqa: S608
            plant(conn, t, "total", stolen[0][0])
        with Session(engine) as session, support():
            loaded = (
                session.scalars(
                    select(models.Customer).options(joinedload(models.Customer.orders))
                )
                .unique()
                .all()
            )
            orders = [order for customer in loaded for order in customer.orders]
            with pytest.raises(custdata.DecryptionError):
                _ = [order.total for order in orders]

    def test_denied_entity_load_decrypts_nothing(
        self,
        engine: Engine,
        models: Models,
        sa_custodian: custdata.Custodian,
        counting: CountingKeyring,
    ) -> None:
        """Without an actor, the entity loads its plain columns and decrypts nothing."""
        with Session(engine) as session:
            cid = _customer(session, models, "Alice", "1.50")
        before = counting.counts["decrypt"]
        with Session(engine) as session:
            c = session.get(models.Customer, cid)
            assert c is not None
            assert "basic" == c.plan
            with pytest.raises(custdata.ActorRequiredError):
                _ = c.name
        assert before == counting.counts["decrypt"]


class TestOneRowFetch:
    """``session.get`` with the library's own field ciphers (the one-call decryption path)."""

    def test_get_decrypts_and_detects_swaps(
        self, engine: Engine, models: Models, sample_policy: custdata.Policy
    ) -> None:
        """Values come back equal, masks stay masks, a swapped envelope raises."""
        from custdata.crypto import Keyring
        from custdata.sqlalchemy import MASK_TEXT

        custodian = custdata.Custodian(policy=sample_policy, keyring=Keyring.generate())
        with custodian.activate():
            with Session(engine) as session:
                ids = [
                    _customer(session, models, "Alice", "1.50"),
                    _customer(session, models, "Bob", "2.50"),
                ]
                with support():
                    for c in session.scalars(select(models.Customer)):
                        c.phone = f"090-0000-{c.name[:1]}"
                    session.commit()
            with Session(engine) as session, billing():
                alice = session.get(models.Customer, ids[0])
                assert alice is not None
                assert (alice.name, alice.email, alice.phone) == (
                    "Alice",
                    "alice@example.jp",
                    MASK_TEXT,
                )
            t = models.Customer.__table__.name
            with engine.begin() as conn:
                # Bob's name envelope copied over Alice's: bound to Bob.
                names = conn.execute(text(f"SELECT id, name FROM {t}")).all()  # noqa: S608
                bob = next(n for i, n in names if str(i).replace("-", "") == ids[1].hex)
                plant(conn, t, "name", bob)
            with Session(engine) as session, billing():
                bob_row = session.get(models.Customer, ids[1])
                assert bob_row is not None
                assert "Bob" == bob_row.name
                alice_row = session.get(models.Customer, ids[0])
                with pytest.raises(custdata.DecryptionError):
                    _ = alice_row.name


class TestMasks:
    """Masked fields read as the mask on every fetch path, never decrypted."""

    def test_masks_in_batches_streams_and_single_rows(
        self,
        engine: Engine,
        models: Models,
        sa_custodian: custdata.Custodian,
        counting: CountingKeyring,
    ) -> None:
        """Billing sees the support-only phone as the mask: all rows, streamed, one row."""
        from custdata.sqlalchemy import MASK_TEXT

        with Session(engine) as session:
            for name in ("Alice", "Bob", "Carol"):
                _customer(session, models, name, "1.00")
            with support():
                for c in session.scalars(select(models.Customer)):
                    c.phone = CANARIES["phone"]
                session.commit()
            session.expunge_all()
            with billing():
                before = counting.counts["decrypt"]
                phones = session.scalars(select(models.Customer.phone)).all()
                streamed = [
                    row[0]
                    for row in session.execute(
                        select(models.Customer.phone),
                        execution_options={"yield_per": 2},
                    )
                ]
                entities = session.scalars(select(models.Customer)).all()
                one = session.get(models.Customer, entities[0].id)
                assert one is not None
                assert [MASK_TEXT] * 3 == phones == streamed
                assert [MASK_TEXT] * 3 == [c.phone for c in entities]
                assert MASK_TEXT == one.phone
                # Objects decrypt only the fields read: nothing, here.
                assert counting.counts["decrypt"] - before == 0


class TestRowByRow:
    """A result read one row at a time is fetched and announced in read-ahead batches."""

    @pytest.mark.parametrize("count", [3, 4])
    def test_fetchone_reads_every_row_then_none(
        self,
        engine: Engine,
        models: Models,
        sa_custodian: custdata.Custodian,
        recorder: Recorder,
        monkeypatch: pytest.MonkeyPatch,
        count: int,
    ) -> None:
        """Every row once, then ``None``; one decision per batch; nothing after a short one."""
        from custdata.sqlalchemy import _runtime

        cursor = _runtime._AnnouncingCursor
        monkeypatch.setattr(cursor, "chunk", 2)
        batches: list[int] = []
        release = cursor._release

        def spy(self: Any, rows: Any) -> Any:
            batches.append(len(rows))
            return release(self, rows)

        monkeypatch.setattr(cursor, "_release", spy)
        names = [f"Name{n}" for n in range(count)]
        with Session(engine) as session:
            for name in names:
                _customer(session, models, name, "1.00")
        table = models.Customer.__table__
        before = len(recorder.decisions)
        batches.clear()
        with billing(), engine.connect() as conn:
            result = conn.execute(select(table.c.name))
            got = []
            while (row := result.fetchone()) is not None:
                got.append(row[0])
            assert result.fetchone() is None
        assert names == sorted(got)
        reads = [d for d in recorder.decisions[before:] if d.entity == table.name]
        assert [2, count - 2] == [d.count for d in reads]
        # A short batch is the last (PEP 249): the driver is not asked again.
        assert {3: [2, 1], 4: [2, 2, 0]}[count] == batches


class TestJoinedLoads:
    """Eagerly joined entities hold sealed values, as top-level ones do."""

    def test_joinedload_defers_denied_field(
        self,
        engine: Engine,
        models: Models,
        sa_custodian: custdata.Custodian,
        counting: CountingKeyring,
        recorder: Recorder,
    ) -> None:
        """Billing loads customers with their orders; the support-only note stays sealed."""
        with Session(engine) as session:
            _customer(session, models, "Alice", "1.50")
            with support():
                order = session.scalars(select(models.Order)).one()
                order.note = CANARIES["note"]
                session.commit()
        with Session(engine) as session, billing():
            before = counting.counts["decrypt"]
            loaded = (
                session.scalars(
                    select(models.Customer).options(joinedload(models.Customer.orders))
                )
                .unique()
                .all()
            )
            order = loaded[0].orders[0]
            assert (loaded[0].name, order.total) == ("Alice", decimal.Decimal("1.50"))
            # Only the fields read: the name and the order total, not the note.
            assert counting.counts["decrypt"] - before == 2
            with pytest.raises(custdata.PurposeViolationError) as info:
                _ = order.note
            assert CANARIES["note"] not in str(info.value)
            assert counting.counts["decrypt"] - before == 2
        denied = [d for d in recorder.decisions if not d.allowed]
        assert ("note",) == denied[-1].fields

    def test_nested_joins_and_top_level_both_deferred(
        self,
        engine: Engine,
        models: Models,
        sa_custodian: custdata.Custodian,
        consent_ledger: ConsentLedger,
    ) -> None:
        """Orders joined to their customers: marketing sees only the e-mail."""
        from sa_fixtures import consent_to_marketing, marketing

        with Session(engine) as session:
            alice = _customer(session, models, "Alice", "1.50")
        consent_to_marketing(consent_ledger, alice)
        with Session(engine) as session, marketing():
            order = session.scalars(
                select(models.Order).options(
                    joinedload(models.Order.customer).joinedload(models.Customer.orders)
                )
            ).first()
            assert order is not None
            assert "alice@example.jp" == order.customer.email
            for touch in (
                lambda: order.total,
                lambda: order.customer.name,
                lambda: order.customer.orders[0].note,
            ):
                with pytest.raises(custdata.PurposeViolationError):
                    touch()

    def test_configured_joined_relationship(
        self, engine: Engine, sa_custodian: custdata.Custodian
    ) -> None:
        """A relationship configured lazy="joined" seals the same way, without options."""
        from sa_fixtures import make_models

        models = make_models(orders_lazy="joined")
        models.create(engine)
        try:
            with Session(engine) as session:
                _customer(session, models, "Alice", "1.50")
            with Session(engine) as session, billing():
                customer = session.scalars(select(models.Customer)).unique().one()
                assert decimal.Decimal("1.50") == customer.orders[0].total
                with pytest.raises(custdata.PurposeViolationError):
                    _ = customer.orders[0].note
        finally:
            models.drop(engine)


class TestCanonicalSubject:
    """The subject id is the same text in every decision, on every dialect and path."""

    def test_every_path_names_the_same_text(
        self,
        engine: Engine,
        models: Models,
        sa_custodian: custdata.Custodian,
        recorder: Recorder,
    ) -> None:
        """Write, entity load, get, column select, joined and lazy loads agree."""
        with Session(engine) as session:
            cid = _customer(session, models, "Alice", "1.50")
        expected = (str(cid),)
        writes = [d for d in recorder.decisions if d.action is custdata.Action.WRITE]
        assert writes
        assert all(expected == d.subjects for d in writes)
        n = len(recorder.decisions)
        # Support may read the orders' notes too, so a joined eager load of
        # the orders reads everything.
        with Session(engine) as session, support():
            session.scalars(select(models.Customer)).all()
            session.expunge_all()
            session.get(models.Customer, cid)
            session.expunge_all()
            session.scalars(select(models.Customer.name)).all()
            session.scalars(select(models.Order.total)).all()
            customers = (
                session.scalars(
                    select(models.Customer).options(joinedload(models.Customer.orders))
                )
                .unique()
                .all()
            )
            session.expunge_all()
            _ = session.get(models.Customer, cid).orders[0].total  # type: ignore[union-attr]
        reads = [d for d in recorder.decisions[n:] if d.action is custdata.Action.READ]
        assert 1 == len(customers)
        assert len(reads) >= 6
        assert [expected] * len(reads) == [d.subjects for d in reads]

    @pytest.mark.parametrize(
        "form",
        ["uuid", "hex", "HEX", "hyphenated", "hex-bytes", "hyphenated-bytes", "braces"],
    )
    def test_fetched_uuid_forms(self, form: str) -> None:
        """Every form a driver or a concatenation returns gives the same text and tail."""
        u = uuid.UUID("0192f0c4-7b1e-7c3a-9d4e-5f6a7b8c9d0e")
        raw = {
            "uuid": u,
            "hex": u.hex,
            "HEX": u.hex.upper(),
            "hyphenated": str(u),
            "hex-bytes": u.hex.encode(),
            "hyphenated-bytes": str(u).encode(),
            "braces": "{" + str(u) + "}",
        }[form]
        expected_tail = length_prefixed(subject_bytes(u))
        assert (str(u), expected_tail) == subject_parts(raw, "uuid")
        assert expected_tail == subject_tail(raw, "uuid")

    @pytest.mark.parametrize(
        ("raw", "kind"), [(12, "int"), (b"-5", "int"), ("ab", "str")]
    )
    def test_other_kinds(self, raw: object, kind: str) -> None:
        """Integer and text subject ids: the text and tail of subject_value()."""
        value = subject_value(raw, kind)  # type: ignore[arg-type]
        assert (str(value), length_prefixed(subject_bytes(value))) == subject_parts(
            raw,
            kind,  # type: ignore[arg-type]
        )

    @pytest.mark.parametrize("raw", ["zz" * 16, " " + "a" * 31, "x", "a" * 30 + " b"])
    def test_malformed_uuid_text(self, raw: str) -> None:
        """Text that is not a UUID is refused, not read as some other subject."""
        with pytest.raises(ValueError, match=r"."):
            subject_parts(raw, "uuid")


def test_canaries_are_not_in_messages() -> None:
    """The helpers' errors name no value."""
    with pytest.raises(ValueError, match=r".") as info:
        subject_parts(CANARIES["card"], "uuid")
    assert CANARIES["card"] not in str(info.value)


_UUID_FORMS = st.sampled_from(
    ["uuid", "hex", "HEX", "hyphenated", "HYPHENATED", "digits", "none"]
)


def _uuid_form(u: uuid.UUID, form: str) -> object:
    return {
        "uuid": u,
        "hex": u.hex,
        "HEX": u.hex.upper(),
        "hyphenated": str(u),
        "HYPHENATED": str(u).upper(),
        # A canonical text with no letter in it (str.islower() is False).
        "digits": str(uuid.UUID(int=int(str(u.int)[:30]))),
        "none": None,
    }[form]


class TestNativeSubjectBatch:
    """A batch's UUID subjects, native or in Python: the same texts and tails."""

    @settings(max_examples=200, deadline=None)
    @given(
        picks=st.lists(
            st.tuples(st.integers(min_value=0, max_value=5), _UUID_FORMS), max_size=40
        )
    )
    def test_batch_same_as_python(self, picks: list[tuple[int, str]]) -> None:
        """_batch_subjects gives the same result with and without the extension."""
        pool = [uuid.UUID(int=0), uuid.UUID(int=(1 << 128) - 1)] + [
            uuid.UUID(int=i * 0x0123456789ABCDEF0123456789ABCDEF % (1 << 128))
            for i in range(1, 5)
        ]
        rows = [(_uuid_form(pool[i], form),) for i, form in picks]
        plan = types.SimpleNamespace(sources=[(0, "uuid", False)])
        native = _runtime._crypto_accel.native
        try:
            _runtime._crypto_accel.native = None
            expected = _runtime._batch_subjects(rows * 2, plan)  # type: ignore[arg-type]
        finally:
            _runtime._crypto_accel.native = native
        assert expected == _runtime._batch_subjects(rows * 2, plan)  # type: ignore[arg-type]

    @pytest.mark.skipif(
        _crypto_accel.native is None, reason="the native extension is not built"
    )
    def test_native_takes_the_common_forms(self) -> None:
        """UUID objects, 32 hex digits and canonical text are read natively; others are not."""
        native = _crypto_accel.native
        assert native is not None
        u = uuid.UUID("0192f0c4-7b1e-7c3a-9d4e-5f6a7b8c9d0e")
        tail = length_prefixed(subject_bytes(u))
        for raw in (u, u.hex, u.hex.upper(), str(u)):
            assert native.uuid_subjects([raw, None]) == ([str(u)], [tail, None])
        for raw in (str(u).upper(), "{" + str(u) + "}", u.hex.encode(), "zz" * 16, 12):
            assert native.uuid_subjects([u, raw]) is None

    @pytest.mark.skipif(
        _crypto_accel.native is None, reason="the native extension is not built"
    )
    @pytest.mark.parametrize("number", [-1, 1 << 128, 1 << 200, "text", 1.5])
    def test_a_uuid_whose_slot_was_overwritten_is_left_to_python(
        self, number: object
    ) -> None:
        """A UUID object holding no 128-bit number is not read natively (no crash)."""
        native = _crypto_accel.native
        assert native is not None
        broken = uuid.UUID(int=5)
        object.__setattr__(broken, "int", number)
        assert native.uuid_subjects([uuid.UUID(int=1), broken]) is None
        assert native.uuid_subjects([uuid.UUID(int=1)]) is not None
