"""The sweep's ``pseudonymise`` action: keyed pseudonyms, dry run, rerun, replay."""

# ruff: noqa: F811 - pytest fixtures imported from sa_fixtures

from __future__ import annotations

import datetime as dt
import re
import sys
import uuid

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sqlalchemy import ForeignKey, LargeBinary, Text, column, select, table, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

import custdata

from custdata import ExpiryAction, Purpose, RetentionRule, Role
from custdata.audit import AuditTrail, MemorySink
from custdata.crypto import Keyring
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
LATER = T0 + dt.timedelta(days=3 * 365)
CANARY = "Canary Pseudo Taro"
PSEUDONYM = re.compile(r"ps_[a-z2-7]{26}")


@pytest.fixture(scope="module")
def policy() -> custdata.Policy:
    """Marketing data is pseudonymised two years after the last transaction."""
    return custdata.Policy.build(
        organisation="Pseudo K.K.",
        version="1",
        effective_date=dt.date(2019, 1, 1),
        next_review=dt.date(2099, 1, 1),
        retention_rules=[
            RetentionRule(
                id="billing", period="P7Y", anchor="last_transaction", action="delete"
            ),
            RetentionRule(
                id="marketing",
                period="P2Y",
                anchor="last_transaction",
                action="pseudonymise",
            ),
        ],
        purposes=[
            Purpose(
                id="billing", text_ja="請求", text_en="Billing", retention="billing"
            ),
            Purpose(
                id="marketing",
                text_ja="広告",
                text_en="Marketing",
                retention="marketing",
            ),
        ],
        roles=[Role(id="clerk", purposes=["billing", "marketing"])],
    )


class _Shop:
    def __init__(self) -> None:
        suffix = uuid.uuid4().hex[:8]

        class Base(DeclarativeBase):
            pass

        class Customer(Base):
            __tablename__ = f"ps_customers_{suffix}"
            id: Mapped[uuid.UUID] = subject_key()
            last_tx: Mapped[dt.datetime | None] = retention_anchor("last_transaction")
            name: Mapped[str] = customer_data("name", purposes=["billing", "marketing"])
            nickname: Mapped[str | None] = customer_data(
                "name", purposes=["marketing"], searchable=True
            )
            alias: Mapped[str | None] = customer_data(
                "name", purposes=["marketing"], storage="text"
            )
            birthday: Mapped[dt.date | None] = customer_data(
                "demographic.birth_date", purposes=["marketing"]
            )

        class Visit(Base):
            __tablename__ = f"ps_visits_{suffix}"
            id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
            customer_id: Mapped[uuid.UUID] = subject_key(
                ForeignKey(f"ps_customers_{suffix}.id")
            )
            last_tx: Mapped[dt.datetime | None] = retention_anchor("last_transaction")
            note: Mapped[str | None] = customer_data("name", purposes=["marketing"])

        self.Base = Base
        self.Customer = Customer
        self.Visit = Visit


@pytest.fixture
def shop(engine: Engine) -> Iterator[_Shop]:
    s = _Shop()
    s.Base.metadata.create_all(engine)
    yield s
    s.Base.metadata.drop_all(engine)


@pytest.fixture
def custodian(policy: custdata.Policy) -> Iterator[custdata.Custodian]:
    sink = MemorySink()
    trail = AuditTrail(Keyring.generate(), sinks=[sink], checkpoint_interval=None)
    c = custdata.Custodian(
        policy=policy, keyring=Keyring.generate(), audit=trail, clock=lambda: T0
    )
    with c.activate():
        yield c
    trail.close()


def _fill(engine: Engine, shop: _Shop) -> list[uuid.UUID]:
    ids = [uuid.uuid4(), uuid.uuid4()]
    with (
        Session(engine) as session,
        custdata.acting_as("c", role="clerk"),
        custdata.purpose("marketing"),
    ):
        for i, cid in enumerate(ids):
            session.add(
                shop.Customer(
                    id=cid,
                    last_tx=T0,
                    name=f"{CANARY} {i}",
                    nickname=f"{CANARY} nick {i}",
                    alias=f"{CANARY} alias {i}",
                    birthday=dt.date(1990, 1, 1),
                )
            )
            session.flush()
            for _ in range(2):
                session.add(
                    shop.Visit(customer_id=cid, last_tx=T0, note=f"{CANARY} v{i}")
                )
        session.commit()
    return ids


def _marketing_view(engine: Engine, shop: _Shop) -> dict[str, Any]:
    with (
        Session(engine) as session,
        custdata.acting_as("c", role="clerk"),
        custdata.purpose("marketing"),
    ):
        customers = {
            str(c.id): (c.nickname, c.alias, c.birthday)
            for c in session.scalars(select(shop.Customer))
        }
        visits = sorted(
            (str(v.customer_id), v.note) for v in session.scalars(select(shop.Visit))
        )
    return {"customers": customers, "visits": visits}


def _raw(engine: Engine, shop: _Shop) -> list[Any]:
    """The stored envelopes, through a plain view (nothing decrypted)."""
    raw = table(
        shop.Customer.__tablename__,
        column("id"),
        column("nickname", LargeBinary()),
        column("alias", Text()),
        column("nickname_bidx", LargeBinary()),
    )
    with engine.connect() as conn:
        return sorted(conn.execute(select(*raw.c)).all(), key=lambda r: str(r[0]))


def test_action_is_declared() -> None:
    """The core knows the action; it ranks below anonymise."""
    assert ExpiryAction("pseudonymise") is ExpiryAction.PSEUDONYMISE


def test_dry_run_then_sweep_then_rerun(
    engine: Engine, shop: _Shop, custodian: custdata.Custodian
) -> None:
    """Dry run counts; the sweep writes stable keyed pseudonyms; a rerun does nothing."""
    ids = _fill(engine, shop)
    before = _raw(engine, shop)
    dry = sweep(engine, custodian, tables=shop.Base, now=LATER, dry_run=True)
    assert 2 * 2 + 4 == dry.total("pseudonymise")  # nickname, alias; 4 visits
    assert 2 == dry.total("erase")  # birthdays: not text, erased
    assert before == _raw(engine, shop)

    done = sweep(engine, custodian, tables=shop.Base, now=LATER)
    assert (8, 2, 0) == (
        done.total("pseudonymise"),
        done.total("erase"),
        done.total("delete_row"),
    )
    view = _marketing_view(engine, shop)
    assert CANARY not in repr(view)
    for cid in map(str, ids):
        nickname, alias, birthday = view["customers"][cid]
        assert PSEUDONYM.fullmatch(nickname)
        assert PSEUDONYM.fullmatch(alias)
        assert birthday is None
        notes = {note for owner, note in view["visits"] if owner == cid}
        assert 1 == len(notes)  # the same pseudonym for every row of the subject
        (note,) = notes
        assert PSEUDONYM.fullmatch(note)
        assert cid.replace("-", "")[:8] not in nickname + note
    # Different subjects, different pseudonyms; different columns too.
    first, second = (view["customers"][str(i)] for i in ids)
    assert first[0] != second[0]
    assert first[0] != first[1]
    # The searchable column's old index is gone; billing's name is kept.
    assert all(r.nickname_bidx is None for r in _raw(engine, shop))
    with (
        Session(engine) as session,
        custdata.acting_as("c", role="clerk"),
        custdata.purpose("billing"),
    ):
        names = sorted(session.scalars(select(shop.Customer.name)))
    assert [f"{CANARY} 0", f"{CANARY} 1"] == names

    after = _raw(engine, shop)
    again = sweep(engine, custodian, tables=shop.Base, now=LATER)
    assert 0 == again.total("pseudonymise") == again.total("erase")
    assert 0 == again.batches
    assert after == _raw(engine, shop)


def test_pseudonym_depends_on_the_key(
    engine: Engine, shop: _Shop, policy: custdata.Policy
) -> None:
    """Another keyring gives other pseudonyms: not computable without the key."""
    seen = []
    for _ in range(2):
        c = custdata.Custodian(
            policy=policy, keyring=Keyring.generate(), clock=lambda: T0
        )
        with c.activate():
            cid = uuid.uuid4()
            with (
                Session(engine) as session,
                custdata.acting_as("c", role="clerk"),
                custdata.purpose("marketing"),
            ):
                session.add(
                    shop.Customer(id=cid, last_tx=T0, name="n", nickname="nick")
                )
                session.commit()
            sweep(engine, c, tables=[shop.Customer.__table__], now=LATER)
            with (
                Session(engine) as session,
                custdata.acting_as("c", role="clerk"),
                custdata.purpose("marketing"),
            ):
                seen.append(session.get(shop.Customer, cid).nickname)  # type: ignore[union-attr]
            with engine.begin() as conn:
                conn.execute(table(shop.Customer.__tablename__).delete())
    assert all(PSEUDONYM.fullmatch(p) for p in seen)
    assert seen[0] != seen[1]


def test_replay_after_restore(
    engine: Engine, shop: _Shop, custodian: custdata.Custodian, tmp_path: Path
) -> None:
    """Restore the pre-sweep values and replay the log: the pseudonyms come back."""
    _fill(engine, shop)
    t = shop.Customer.__table__
    raw = table(t.name, column("id"), column("nickname", LargeBinary()))
    with engine.connect() as conn:
        snapshot = {r.id: r.nickname for r in conn.execute(select(*raw.c))}
    log = tmp_path / "deletions.jsonl"
    sweep(engine, custodian, tables=shop.Base, now=LATER, log=log)
    swept = _marketing_view(engine, shop)
    assert '"op": "pseudonymise"' in log.read_text()
    with engine.begin() as conn:
        for key, value in snapshot.items():
            conn.execute(update(raw).where(raw.c.id == key).values(nickname=value))
    assert CANARY in repr(_marketing_view(engine, shop))
    with pytest.raises(custdata.ConfigurationError, match="custodian"):
        replay_deletions(engine, log, tables=shop.Base)
    assert replay_deletions(engine, log, tables=shop.Base, custodian=custodian) > 0
    assert swept == _marketing_view(engine, shop)
    assert 0 == replay_deletions(engine, log, tables=shop.Base, custodian=custodian)
