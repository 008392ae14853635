"""The per-statement work of custdata's SQLAlchemy hooks (issue 9, read-path budgets).

Behaviour, not timings: what the hooks do once per statement shape or per
policy, and what they leave to SQLAlchemy on every statement.
"""

# ruff: noqa: F811 - pytest fixtures imported from sa_fixtures

from __future__ import annotations

import sys

from pathlib import Path
from typing import Any

import pytest

from sqlalchemy import Integer, String, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

import custdata

from custdata.crypto import Keyring
from custdata.sqlalchemy import _runtime


sys.path.insert(0, str(Path(__file__).parent))
from sa_fixtures import (  # noqa: F401 - pytest fixtures
    Models,
    Recorder,
    engine,
    models,
    support,
)


def _listeners(engine: Engine, name: str) -> list[Any]:
    return list(getattr(engine.dispatch, name))


class TestCursorHook:
    def test_called_directly_without_a_wrapper(self, engine: Engine) -> None:
        """The cursor hook returns the statement itself: SQLAlchemy calls it as is.

        A listener registered without ``retval=True`` is wrapped by SQLAlchemy
        in one more Python function, called on every statement of every engine.
        """
        found = _listeners(engine, "before_cursor_execute")
        assert _runtime._before_cursor_execute in found

    def test_statement_and_parameters_pass_through(
        self,
        engine: Engine,
        models: Models,
        sample_policy: custdata.Policy,
    ) -> None:
        """A later listener sees the statement and parameters custdata was given."""
        seen: list[tuple[str, Any]] = []

        def later(
            conn: Any,
            cursor: Any,
            statement: str,
            parameters: Any,
            context: Any,
            executemany: bool,
        ) -> tuple[str, Any]:
            seen.append((statement, parameters))
            return statement, parameters

        recorder = Recorder()
        custodian = custdata.Custodian(
            policy=sample_policy, keyring=Keyring.generate(), audit=recorder
        )
        from sqlalchemy import event

        event.listen(engine, "before_cursor_execute", later, retval=True)
        try:
            with custodian.activate(), support(), Session(engine) as session:
                session.add(models.Customer(name="Canary Hanako", email="c@example.jp"))
                session.commit()
                got = session.scalars(select(models.Customer)).one()
                assert got.name == "Canary Hanako"
                with engine.connect() as conn:
                    assert conn.execute(text("SELECT 1")).scalar() == 1
        finally:
            event.remove(engine, "before_cursor_execute", later)
        statements = [s for s, _ in seen]
        assert any(s.lstrip().upper().startswith("INSERT") for s in statements)
        assert any(s.lstrip().upper().startswith("SELECT") for s in statements)
        assert "SELECT 1" in statements
        assert all(isinstance(s, str) for s in statements)
        # The reads were announced: the cursor hook did its work and returned.
        assert any(d.action is custdata.Action.READ for d in recorder.decisions)


class _Plain(DeclarativeBase):
    pass


class _Note(_Plain):
    __tablename__ = "hot_path_plain_notes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    body: Mapped[str] = mapped_column(String(40))


class TestMapperValidation:
    def test_once_per_policy_and_again_for_another(
        self,
        engine: Engine,
        models: Models,
        sample_policy: custdata.Policy,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """A mapper is validated once per policy, and afresh for a new policy."""
        calls: list[str] = []
        original = custdata.Policy.validate_field

        def counting(self: custdata.Policy, field: Any, *, where: str) -> None:
            calls.append(where)
            original(self, field, where=where)

        monkeypatch.setattr(custdata.Policy, "validate_field", counting)
        keyring = Keyring.generate()
        first = custdata.Custodian(policy=sample_policy, keyring=keyring)
        other_policy = custdata.Policy.from_toml(
            sample_policy.source  # type: ignore[arg-type]
        )
        assert other_policy is not sample_policy
        second = custdata.Custodian(policy=other_policy, keyring=keyring)

        def load(custodian: custdata.Custodian) -> None:
            with custodian.activate(), support(), Session(engine) as session:
                session.scalars(select(models.Customer)).all()

        load(first)
        assert calls
        done = len(calls)
        load(first)
        load(first)
        assert len(calls) == done
        load(second)
        table = models.Customer.__table__.name
        assert sorted(calls[done:]) == sorted(
            f"{table}.{key}" for key in ("name", "email", "phone", "card", "birth_date")
        )
        done = len(calls)
        load(first)
        load(second)
        assert len(calls) == done

    def test_plain_mapper_needs_no_custodian(self, engine: Engine) -> None:
        """An ORM statement on a table without customer data asks for no custodian."""
        _Plain.metadata.create_all(engine)
        try:
            with Session(engine) as session:
                session.add(_Note(id=1, body="hello"))
                session.commit()
                assert session.get(_Note, 1) is not None
                assert session.scalars(select(_Note)).one().body == "hello"
        finally:
            _Plain.metadata.drop_all(engine)


class TestStatementsWithoutCustomerData:
    def test_no_orm_execute_state(
        self, engine: Engine, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """ORM statements on a plain table build no ``ORMExecuteState``.

        SQLAlchemy builds one for every ORM execution (and runs the ORM's
        pre-execution step twice) as soon as any ``Session.do_orm_execute``
        listener exists: custdata installs none.
        """
        from sqlalchemy.orm import session as orm_session

        built: list[object] = []
        original = orm_session.ORMExecuteState.__init__

        def counting(self: Any, *args: Any, **kw: Any) -> None:
            built.append(self)
            original(self, *args, **kw)

        monkeypatch.setattr(orm_session.ORMExecuteState, "__init__", counting)
        _Plain.metadata.create_all(engine)
        try:
            with Session(engine) as session:
                session.add(_Note(id=1, body="hello"))
                session.commit()
                session.expunge_all()
                assert session.get(_Note, 1) is not None
                assert ["hello"] == session.scalars(select(_Note.body)).all()
        finally:
            _Plain.metadata.drop_all(engine)
        assert [] == built

    def test_customer_statements_still_enforced(
        self, engine: Engine, models: Models, sample_policy: custdata.Policy
    ) -> None:
        """Without that hook, an ORM load still validates, announces and refreshes quietly."""
        recorder = Recorder()
        custodian = custdata.Custodian(
            policy=sample_policy, keyring=Keyring.generate(), audit=recorder
        )
        with custodian.activate(), support(), Session(engine) as session:
            session.add(models.Customer(name="Canary Hanako", email="c@example.jp"))
            session.commit()
            start = len(recorder.decisions)
            got = session.scalars(select(models.Customer)).one()
            assert "Canary Hanako" == got.name
            reads = [
                d
                for d in recorder.decisions[start:]
                if d.action is custdata.Action.READ
            ]
            assert [(str(got.id),)] == [d.subjects for d in reads]
            session.commit()
            start = len(recorder.decisions)
            assert got.id is not None  # the refresh after commit: nothing read
            assert [] == [
                d
                for d in recorder.decisions[start:]
                if d.action is custdata.Action.READ
            ]
