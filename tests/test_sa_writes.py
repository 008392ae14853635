"""Core and ORM writes: every form is encrypted for its row's subject, or refused.

On SQLite, PostgreSQL and MariaDB. A refused statement raises
:class:`custdata.UnsupportedOperationError` naming the column before anything
is sent, and leaves the stored values as they were.
"""

# ruff: noqa: F811 - pytest fixtures imported from sa_fixtures

from __future__ import annotations

import decimal
import sys
import uuid

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sqlalchemy import (
    and_,
    bindparam,
    func,
    insert,
    literal_column,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session

import custdata

from custdata.sqlalchemy import customer_data, subject_key


sys.path.insert(0, str(Path(__file__).parent))
from sa_fixtures import (  # noqa: F401 - pytest fixtures
    CANARIES,
    Models,
    Recorder,
    billing,
    counting,
    engine,
    keyring,
    models,
    recorder,
    sa_custodian,
    support,
)


@pytest.fixture
def two(
    engine: Engine, models: Models, sa_custodian: custdata.Custodian
) -> tuple[uuid.UUID, uuid.UUID]:
    """Two customers, each with a card of their own."""
    a, b = uuid.uuid4(), uuid.uuid4()
    t = models.Customer.__table__
    with engine.begin() as conn, billing():
        conn.execute(
            insert(t),
            [
                {"id": a, "name": "Alice", "email": "alice@example.jp", "card": "1111"},
                {"id": b, "name": "Bob", "email": "bob@example.jp", "card": "2222"},
            ],
        )
    return a, b


def _cards(engine: Engine, models: Models) -> dict[uuid.UUID, str | None]:
    t = models.Customer.__table__
    with engine.connect() as conn, billing():
        return dict(conn.execute(select(t.c.id, t.c.card)).all())  # type: ignore[arg-type]


def _found(engine: Engine, models: Models, email: str) -> list[str]:
    t = models.Customer.__table__
    with engine.connect() as conn, billing():
        return list(conn.scalars(select(t.c.name).where(t.c.email == email)))


def _refused(
    engine: Engine, stmt: Any, match: str | None = None
) -> custdata.UnsupportedOperationError:
    """Run *stmt* under billing; return the UnsupportedOperationError it must raise."""
    with (
        pytest.raises(custdata.UnsupportedOperationError, match=match) as info,
        engine.begin() as conn,
        billing(),
    ):
        conn.execute(stmt)
    return info.value


class TestBoundParameters:
    """``bindparam`` values are encrypted for the subject of their own row, never NULL."""

    def test_update_executemany(
        self, engine: Engine, models: Models, two: tuple[uuid.UUID, uuid.UUID]
    ) -> None:
        """update().values(card=bindparam("c")) over many rows stores each row's own value."""
        a, b = two
        t = models.Customer.__table__
        stmt = update(t).where(t.c.id == bindparam("b_id")).values(card=bindparam("c"))
        with engine.begin() as conn, billing():
            conn.execute(stmt, [{"b_id": a, "c": "3333"}, {"b_id": b, "c": "4444"}])
        assert {a: "3333", b: "4444"} == _cards(engine, models)

    def test_update_single(
        self, engine: Engine, models: Models, two: tuple[uuid.UUID, uuid.UUID]
    ) -> None:
        """One parameter set: the value is encrypted for the subject named in the WHERE."""
        a, b = two
        t = models.Customer.__table__
        stmt = update(t).where(t.c.id == a).values(card=bindparam("c"))
        with engine.begin() as conn, billing():
            conn.execute(stmt, {"c": "5555"})
        assert {a: "5555", b: "2222"} == _cards(engine, models)

    def test_insert_single_and_many(
        self, engine: Engine, models: Models, sa_custodian: custdata.Custodian
    ) -> None:
        """insert().values(card=bindparam("c")), one row and many, reads back."""
        t = models.Customer.__table__
        stmt = insert(t).values(card=bindparam("c"))
        ids = [uuid.uuid4() for _ in range(3)]
        rows = [
            {"id": i, "name": f"N{n}", "email": f"n{n}@example.jp", "c": f"card-{n}"}
            for n, i in enumerate(ids)
        ]
        with engine.begin() as conn, billing():
            conn.execute(stmt, rows[0])
            conn.execute(stmt, rows[1:])
        assert {i: f"card-{n}" for n, i in enumerate(ids)} == _cards(engine, models)

    def test_ordered_values(
        self, engine: Engine, models: Models, two: tuple[uuid.UUID, uuid.UUID]
    ) -> None:
        """update().ordered_values(...) with a literal and a bindparam: both encrypted."""
        a, b = two
        t = models.Customer.__table__
        stmt = (
            update(t)
            .where(t.c.id == a)
            .ordered_values((t.c.name, "Alicia"), (t.c.card, bindparam("c")))
        )
        with engine.begin() as conn, billing():
            conn.execute(stmt, {"c": "1212"})
        assert {a: "1212", b: "2222"} == _cards(engine, models)
        with engine.connect() as conn, billing():
            names = set(conn.scalars(select(t.c.name)))
        assert {"Alicia", "Bob"} == names

    def test_searchable_value_is_indexed(
        self, engine: Engine, models: Models, two: tuple[uuid.UUID, uuid.UUID]
    ) -> None:
        """A searchable value given as a bindparam gets its blind index: search finds it."""
        a, b = two
        t = models.Customer.__table__
        stmt = update(t).where(t.c.id == bindparam("b_id")).values(email=bindparam("e"))
        with engine.begin() as conn, billing():
            conn.execute(
                stmt,
                [
                    {"b_id": a, "e": "new.a@example.jp"},
                    {"b_id": b, "e": "new.b@example.jp"},
                ],
            )
        assert ["Alice"] == _found(engine, models, "New.A@example.jp")
        assert ["Bob"] == _found(engine, models, "new.b@example.jp")
        assert [] == _found(engine, models, "alice@example.jp")

    def test_literal_for_many_rows(
        self, engine: Engine, models: Models, two: tuple[uuid.UUID, uuid.UUID]
    ) -> None:
        """A literal value executed for many rows is encrypted once per row's subject."""
        a, b = two
        t = models.Customer.__table__
        stmt = update(t).where(t.c.id == bindparam("b_id")).values(card="9999")
        with engine.begin() as conn, billing():
            conn.execute(stmt, [{"b_id": a}, {"b_id": b}])
        assert {a: "9999", b: "9999"} == _cards(engine, models)

    def test_write_names_every_subject(
        self,
        engine: Engine,
        models: Models,
        two: tuple[uuid.UUID, uuid.UUID],
        recorder: Recorder,
    ) -> None:
        """The write decision names the subjects of all the rows written."""
        a, b = two
        t = models.Customer.__table__
        stmt = update(t).where(t.c.id == bindparam("b_id")).values(card=bindparam("c"))
        with engine.begin() as conn, billing():
            conn.execute(stmt, [{"b_id": a, "c": "1"}, {"b_id": b, "c": "2"}])
        write = recorder.decisions[-1]
        assert custdata.Action.WRITE == write.action
        assert 2 == len(write.subjects)

    def test_where_and_conjunction_pins(
        self, engine: Engine, models: Models, two: tuple[uuid.UUID, uuid.UUID]
    ) -> None:
        """``plan = ... AND id = ...`` names one subject: the update goes through."""
        a, b = two
        t = models.Customer.__table__
        stmt = (
            update(t).where(and_(t.c.plan == "basic", t.c.id == a)).values(card="7777")
        )
        with engine.begin() as conn, billing():
            conn.execute(stmt)
        assert {a: "7777", b: "2222"} == _cards(engine, models)


def _or(t: Any, a: uuid.UUID, b: uuid.UUID) -> Any:
    return or_(t.c.id == a, t.c.id == b)


def _in(t: Any, a: uuid.UUID, b: uuid.UUID) -> Any:
    return t.c.id.in_([a, b])


def _range(t: Any, a: uuid.UUID, b: uuid.UUID) -> Any:
    return t.c.id >= min(a, b)


def _subquery(t: Any, a: uuid.UUID, b: uuid.UUID) -> Any:
    return (
        t.c.id == select(t.c.id).where(t.c.plan == "basic").limit(1).scalar_subquery()
    )


def _two_values(t: Any, a: uuid.UUID, b: uuid.UUID) -> Any:
    return and_(t.c.id == a, t.c.id == b)


def _other_column(t: Any, a: uuid.UUID, b: uuid.UUID) -> Any:
    return t.c.plan == "basic"


UNPINNED: dict[str, Callable[[Any, uuid.UUID, uuid.UUID], Any]] = {
    "or": _or,
    "in": _in,
    "range": _range,
    "subquery": _subquery,
    "two-values": _two_values,
    "other-column": _other_column,
}


class TestUnpinnedWhere:
    """An UPDATE whose WHERE cannot name exactly one subject is refused, not guessed."""

    @pytest.mark.parametrize("where", sorted(UNPINNED))
    def test_refused_and_nothing_changed(
        self,
        engine: Engine,
        models: Models,
        two: tuple[uuid.UUID, uuid.UUID],
        where: str,
    ) -> None:
        """UnsupportedOperationError naming the column; every stored card still reads."""
        a, b = two
        t = models.Customer.__table__
        stmt = update(t).where(UNPINNED[where](t, a, b)).values(card=CANARIES["card"])
        refused = _refused(engine, stmt)
        assert f"{t.name}.card" in str(refused)
        assert CANARIES["card"] not in str(refused)
        assert {a: "1111", b: "2222"} == _cards(engine, models)

    def test_no_where(
        self, engine: Engine, models: Models, two: tuple[uuid.UUID, uuid.UUID]
    ) -> None:
        """An UPDATE of every row is refused for a subject-bound column."""
        t = models.Customer.__table__
        _refused(engine, update(t).values(card="0000"), match="card")
        assert {"1111", "2222"} == set(_cards(engine, models).values())

    def test_erasing_needs_no_subject(
        self, engine: Engine, models: Models, two: tuple[uuid.UUID, uuid.UUID]
    ) -> None:
        """Setting NULL binds nothing to a subject: allowed under any WHERE."""
        a, b = two
        t = models.Customer.__table__
        with engine.begin() as conn, billing():
            conn.execute(update(t).where(_or(t, a, b)).values(card=None))
        assert {a: None, b: None} == _cards(engine, models)

    def test_erasing_a_searchable_value_erases_its_index(
        self, engine: Engine, sa_custodian: custdata.Custodian
    ) -> None:
        """values(email=None) and values(email=null()) leave nothing to find."""
        from sqlalchemy import null

        class Base(DeclarativeBase):
            pass

        class Contact(Base):
            __tablename__ = f"sa_contacts_{uuid.uuid4().hex[:8]}"
            id: Mapped[uuid.UUID] = subject_key()
            email: Mapped[str | None] = customer_data(
                "contact.email", purposes=["billing"], searchable=True
            )

        Base.metadata.create_all(engine)
        try:
            t = Contact.__table__
            a, b = uuid.uuid4(), uuid.uuid4()
            with engine.begin() as conn, billing():
                conn.execute(
                    insert(t),
                    [
                        {"id": a, "email": "a@example.jp"},
                        {"id": b, "email": "b@example.jp"},
                    ],
                )
                conn.execute(update(t).where(t.c.id == a).values(email=None))
                conn.execute(update(t).where(t.c.id == b).values(email=null()))
            with engine.connect() as conn, billing():
                found = conn.execute(
                    select(t.c.id).where(
                        t.c.email.in_(["a@example.jp", "b@example.jp"])
                    )
                ).all()
                stored = conn.execute(select(t.c.email)).scalars().all()
            assert ([], [None, None]) == (found, stored)
        finally:
            Base.metadata.drop_all(engine)

    def test_bind_subject_pins_the_value(
        self, engine: Engine, models: Models, two: tuple[uuid.UUID, uuid.UUID]
    ) -> None:
        """A value paired with its subject by bind_subject() needs no WHERE to name it."""
        from custdata.sqlalchemy import bind_subject

        a, b = two
        t = models.Customer.__table__
        with engine.begin() as conn, billing():
            conn.execute(
                update(t)
                .where(t.c.email == "alice@example.jp")
                .values(card=bind_subject("8888", a))
            )
        assert {a: "8888", b: "2222"} == _cards(engine, models)


EXPRESSIONS: dict[str, Callable[[Any], Any]] = {
    "function": lambda t: func.lower("x"),
    "column-copy": lambda t: t.c.name,
    "literal-column": lambda t: literal_column("'4111'"),
    "subquery": lambda t: select(t.c.card).limit(1).scalar_subquery(),
}


class TestExpressions:
    """SQL expressions cannot be encrypted: refused, naming the column."""

    @pytest.mark.parametrize("kind", sorted(EXPRESSIONS))
    def test_update_refused(
        self,
        engine: Engine,
        models: Models,
        two: tuple[uuid.UUID, uuid.UUID],
        kind: str,
    ) -> None:
        """update().values(card=<expression>) raises before anything is sent."""
        a, b = two
        t = models.Customer.__table__
        stmt = update(t).where(t.c.id == a).values(card=EXPRESSIONS[kind](t))
        refused = _refused(engine, stmt)
        assert f"{t.name}.card" in str(refused)
        assert {a: "1111", b: "2222"} == _cards(engine, models)

    def test_insert_refused(
        self, engine: Engine, models: Models, sa_custodian: custdata.Custodian
    ) -> None:
        """insert().values(name=<function>) raises; no row is stored."""
        t = models.Customer.__table__
        stmt = insert(t).values(
            id=uuid.uuid4(), name=func.upper("x"), email="x@example.jp"
        )
        _refused(engine, stmt, match=r"\.name")
        assert {} == _cards(engine, models)

    def test_blind_index_set_by_hand_refused(
        self, engine: Engine, models: Models, two: tuple[uuid.UUID, uuid.UUID]
    ) -> None:
        """The blind-index companion is custdata's to compute."""
        a, _b = two
        t = models.Customer.__table__
        _refused(
            engine,
            update(t).where(t.c.id == a).values(email_bidx=b"\x00" * 32),
            match="email_bidx",
        )
        assert ["Alice"] == _found(engine, models, "alice@example.jp")


class TestInsertForms:
    """INSERT forms whose values custdata cannot encrypt are refused."""

    def test_from_select_refused(
        self, engine: Engine, models: Models, two: tuple[uuid.UUID, uuid.UUID]
    ) -> None:
        """insert().from_select() into an encrypted column copies envelopes: refused."""
        t = models.Customer.__table__
        stmt = insert(t).from_select(
            ["id", "name", "email"],
            select(func.lower(t.c.plan), t.c.name, t.c.email),  # type: ignore[arg-type]
        )
        _refused(engine, stmt, match=r"\.name")
        assert 2 == len(_cards(engine, models))

    def test_multi_values_refused(
        self, engine: Engine, models: Models, sa_custodian: custdata.Custodian
    ) -> None:
        """insert().values([{...}, {...}]) with encrypted columns: refused, nothing stored."""
        t = models.Customer.__table__
        stmt = insert(t).values(
            [
                {"id": uuid.uuid4(), "name": "A", "email": "a@example.jp"},
                {"id": uuid.uuid4(), "name": "B", "email": "b@example.jp"},
            ]
        )
        _refused(engine, stmt, match="execute")
        assert {} == _cards(engine, models)

    def test_upsert_refused(
        self, engine: Engine, models: Models, two: tuple[uuid.UUID, uuid.UUID]
    ) -> None:
        """An upsert whose conflict branch sets an encrypted column: refused."""
        a, _b = two
        t = models.Customer.__table__
        name = engine.dialect.name
        row = {"id": a, "name": "X", "email": "x@example.jp", "card": "0000"}
        if name == "sqlite":
            from sqlalchemy.dialects.sqlite import insert as dialect_insert
        elif name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as dialect_insert  # type: ignore[assignment]
        else:
            from sqlalchemy.dialects.mysql import insert as mysql_insert

            stmt: Any = mysql_insert(t).values(**row)
            stmt = stmt.on_duplicate_key_update(card=stmt.inserted.card)
        if name in {"sqlite", "postgresql"}:
            stmt = dialect_insert(t).values(**row)
            stmt = stmt.on_conflict_do_update(
                index_elements=[t.c.id], set_={"card": stmt.excluded.card}
            )
        _refused(engine, stmt, match=r"\.card")
        assert "1111" == _cards(engine, models)[a]


class TestSqlText:
    """SQL text that writes an encrypted column is refused; other SQL text runs."""

    @pytest.mark.parametrize(
        "sql",
        [
            "UPDATE {t} SET card = NULL",
            "update {t} set name = email",
            "/* maintenance */ INSERT INTO {t} (id, card) VALUES ('x', 'y')",
            'INSERT INTO "{t}" VALUES (1, 2, 3)',
            "WITH x AS (SELECT 1) UPDATE {t} SET card = NULL",
            "UPDATE {t} SET plan = 'a''b', card = NULL",
            "UPDATE {t} SET plan = '--', card = NULL",
            # Names in another case; text with no quote or comment; text
            # that is not ASCII (each takes its own path through the guard).
            "UPDATE {T} SET CARD = NULL",
            "INSERT INTO {T} (ID, CARD) VALUES (1, 2), (3, 4)",
            "UPDATE {t} SET plan = NULL, card = NULL -- ☃",
        ],
    )
    def test_text_and_driver_sql_refused(
        self,
        engine: Engine,
        models: Models,
        two: tuple[uuid.UUID, uuid.UUID],
        sql: str,
    ) -> None:
        """text() and exec_driver_sql() writes raise, naming the columns."""
        t = models.Customer.__table__
        statement = sql.format(t=t.name, T=t.name.upper())
        if engine.dialect.name in {"mysql", "mariadb"}:
            statement = statement.replace('"', "`")
        with (
            pytest.raises(custdata.UnsupportedOperationError, match=t.name),
            engine.begin() as conn,
        ):
            conn.execute(text(statement))
        with (
            pytest.raises(custdata.UnsupportedOperationError, match=t.name),
            engine.begin() as conn,
        ):
            conn.exec_driver_sql(statement)
        assert 2 == len([v for v in _cards(engine, models).values() if v])

    def test_other_text_runs(
        self, engine: Engine, models: Models, two: tuple[uuid.UUID, uuid.UUID]
    ) -> None:
        """Text that writes only plain columns, or reads, is not refused."""
        t = models.Customer.__table__
        with engine.begin() as conn:
            conn.execute(text(f"UPDATE {t.name} SET plan = 'gold'"))  # noqa: S608
            # Column names inside literals and comments are not names.
            conn.execute(
                text(f"UPDATE {t.name} SET plan = 'card, email' -- not card\n")  # noqa: S608
            )
            conn.exec_driver_sql(
                f"/* name = 'x' */ UPDATE {t.name} SET plan = 'it''s gold'"  # noqa: S608
            )
            conn.execute(text(f"UPDATE {t.name} SET plan = 'gold'"))  # noqa: S608
            conn.exec_driver_sql(f"SELECT card FROM {t.name}")  # noqa: S608
            conn.execute(
                text(f"WITH c AS (SELECT card FROM {t.name}) SELECT count(*) FROM c")  # noqa: S608
            )
            plans = set(conn.execute(text(f"SELECT plan FROM {t.name}")).scalars())  # noqa: S608
        assert {"gold"} == plans


class TestOrmAndReturning:
    """ORM bulk inserts and RETURNING write the same envelopes."""

    def test_orm_bulk_insert(
        self, engine: Engine, models: Models, sa_custodian: custdata.Custodian
    ) -> None:
        """session.execute(insert(Model), [...]) encrypts every row for its own subject."""
        a, b = uuid.uuid4(), uuid.uuid4()
        with Session(engine) as session, billing():
            session.execute(
                insert(models.Customer),
                [
                    {"id": a, "name": "A", "email": "a@example.jp", "card": "1"},
                    {"id": b, "name": "B", "email": "b@example.jp", "card": "2"},
                ],
            )
            session.commit()
        assert {a: "1", b: "2"} == _cards(engine, models)
        assert ["B"] == _found(engine, models, "b@example.jp")

    def test_orm_bulk_insert_returning(
        self, engine: Engine, models: Models, sa_custodian: custdata.Custodian
    ) -> None:
        """session.execute(insert(Model).returning(Model.card), [...]): encrypted, read back."""
        if not engine.dialect.insert_returning:
            pytest.skip(f"{engine.dialect.name} has no INSERT ... RETURNING")
        c = models.Customer
        with Session(engine) as session, billing():
            returned = session.execute(
                insert(c).returning(c.id, c.card),
                [{"name": "R", "email": "r@example.jp", "card": "4"}],
            ).all()
            session.commit()
        [(new_id, card)] = returned
        assert "4" == card
        assert {new_id: "4"} == _cards(engine, models)
        with pytest.raises(custdata.UnsupportedOperationError):
            _ = c.card == c.name

    def test_orm_insert_values(
        self, engine: Engine, models: Models, sa_custodian: custdata.Custodian
    ) -> None:
        """session.execute(insert(Model).values(...)): a UUIDv7 subject, searchable."""
        with Session(engine) as session, billing():
            session.execute(
                insert(models.Customer).values(name="V", email="v@example.jp", card="3")
            )
            session.commit()
        assert ["3"] == list(_cards(engine, models).values())
        assert ["V"] == _found(engine, models, "v@example.jp")

    def test_orm_bulk_update_names_the_column(
        self, engine: Engine, models: Models, two: tuple[uuid.UUID, uuid.UUID]
    ) -> None:
        """ORM update(Model).values(card=...) is refused naming the column."""
        a, _b = two
        with (
            Session(engine) as session,
            billing(),
            pytest.raises(custdata.UnsupportedOperationError, match=r"\.card"),
        ):
            session.execute(
                update(models.Customer).where(models.Customer.id == a).values(card="0")
            )

    def test_update_returning(
        self, engine: Engine, models: Models, two: tuple[uuid.UUID, uuid.UUID]
    ) -> None:
        """update().returning(card): the returned and the stored value are the new one."""
        if not engine.dialect.update_returning:
            pytest.skip(f"{engine.dialect.name} has no UPDATE ... RETURNING")
        a, b = two
        t = models.Customer.__table__
        stmt = (
            update(t).where(t.c.id == a).values(card=bindparam("c")).returning(t.c.card)
        )
        with engine.begin() as conn, billing():
            returned = conn.execute(stmt, {"c": "6666"}).scalar_one()
        assert "6666" == returned
        assert {a: "6666", b: "2222"} == _cards(engine, models)


class TestSubjectChange:
    """A row moved to another subject keeps no value bound to the old one."""

    @pytest.fixture
    def order(
        self, engine: Engine, models: Models, two: tuple[uuid.UUID, uuid.UUID]
    ) -> int:
        """An order of the first customer, with a total and a note."""
        a, _b = two
        with Session(engine) as session, support():
            order = models.Order(customer_id=a, total=decimal.Decimal(5), note="n")
            session.add(order)
            session.commit()
            return order.id  # type: ignore[no-any-return]

    def _order(self, engine: Engine, models: Models, order_id: int) -> tuple[Any, ...]:
        with Session(engine) as session, support():
            o = session.get(models.Order, order_id)
            assert o is not None
            return o.customer_id, o.total, o.note

    def test_core_move_refused(
        self,
        engine: Engine,
        models: Models,
        two: tuple[uuid.UUID, uuid.UUID],
        order: int,
    ) -> None:
        """update(orders).values(customer_id=b) alone is refused, naming note and total."""
        a, b = two
        t = models.Order.__table__
        with (
            pytest.raises(custdata.UnsupportedOperationError) as info,
            engine.begin() as conn,
            support(),
        ):
            conn.execute(update(t).where(t.c.id == order).values(customer_id=b))
        assert {f"{t.name}.note", f"{t.name}.total"} <= set(
            str(info.value).split(":")[0].split(", ")
        )
        assert (a, decimal.Decimal(5), "n") == self._order(engine, models, order)

    def test_core_move_with_values(
        self,
        engine: Engine,
        models: Models,
        two: tuple[uuid.UUID, uuid.UUID],
        order: int,
    ) -> None:
        """Moving the row and rewriting every subject-bound value binds them to the new subject."""
        _a, b = two
        t = models.Order.__table__
        with engine.begin() as conn, support():
            conn.execute(
                update(t)
                .where(t.c.id == order)
                .values(customer_id=b, total=decimal.Decimal(6), note=None)
            )
        assert (b, decimal.Decimal(6), None) == self._order(engine, models, order)

    def test_orm_move_refused(
        self,
        engine: Engine,
        models: Models,
        two: tuple[uuid.UUID, uuid.UUID],
        order: int,
    ) -> None:
        """Reassigning order.customer without its values: refused at flush, nothing lost."""
        a, b = two
        with Session(engine) as session, support():
            o = session.get(models.Order, order)
            o.customer = session.get(models.Customer, b)
            with pytest.raises(custdata.UnsupportedOperationError, match="note"):
                session.commit()
        assert (a, decimal.Decimal(5), "n") == self._order(engine, models, order)

    def test_orm_move_with_values(
        self,
        engine: Engine,
        models: Models,
        two: tuple[uuid.UUID, uuid.UUID],
        order: int,
    ) -> None:
        """Reassigning and assigning the values in the same flush re-binds them."""
        _a, b = two
        with Session(engine) as session, support():
            o = session.get(models.Order, order)
            o.customer_id = b
            o.total = decimal.Decimal(7)
            o.note = "moved"
            session.commit()
        assert (b, decimal.Decimal(7), "moved") == self._order(engine, models, order)
