"""``custdata erase``: dry run, the real run, the audit trail, usage errors."""

from __future__ import annotations

import datetime as dt
import importlib
import json
import sys
import uuid

from pathlib import Path

import pytest

from sqlalchemy import column, create_engine, select, table
from sqlalchemy.orm import Session

import custdata

from custdata.cli import main


UTC = dt.timezone.utc
T0 = dt.datetime(2020, 3, 1, tzinfo=UTC)
CANARY = "canary-cli-erase-7c1d"

POLICY = """
[policy]
organisation = "CLI K.K."
version = "1"
effective_date = 2019-01-01
next_review = 2099-01-01

[retention.support]
period = "P1Y"
anchor = "acquired"
action = "delete"

[retention.accounting]
period = "P1Y"
anchor = "acquired"
action = "delete"
statutory_minimum = "P7Y"

[purposes.support]
text_ja = "サポート"
text_en = "Support"
retention = "support"

[purposes.billing]
text_ja = "請求"
text_en = "Billing"
retention = "accounting"

[purposes.privacy_desk]
text_ja = "本人からの請求への対応"
text_en = "Answering data-subject requests"
retention = "support"
may_erase = true

[roles.clerk]
purposes = ["support", "billing"]

[roles.dpo]
purposes = ["privacy_desk", "support"]
"""

MODELS = """
import datetime as dt
import uuid

from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from custdata.sqlalchemy import customer_data, retention_anchor, subject_key


class Base(DeclarativeBase):
    pass


class Customer(Base):
    __tablename__ = "cli_erase_{suffix}"
    id: Mapped[uuid.UUID] = subject_key()
    acquired_at: Mapped[dt.datetime] = retention_anchor("acquired")
    name: Mapped[str | None] = customer_data("name", purposes=["support"])


class Order(Base):
    __tablename__ = "cli_erase_orders_{suffix}"
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    customer_id: Mapped[uuid.UUID] = subject_key("cli_erase_{suffix}.id")
    acquired_at: Mapped[dt.datetime] = retention_anchor("acquired")
    total: Mapped[str | None] = customer_data("transaction.history", purposes=["billing"])
"""


class World:
    def __init__(self, tmp_path: Path) -> None:
        self.suffix = uuid.uuid4().hex[:8]
        self.module = f"cli_erase_models_{self.suffix}"
        (tmp_path / f"{self.module}.py").write_text(
            MODELS.format(suffix=self.suffix), encoding="utf-8"
        )
        (tmp_path / "custdata.toml").write_text(POLICY, encoding="utf-8")
        self.url = f"sqlite:///{tmp_path / 'app.db'}"
        sys.path.insert(0, str(tmp_path))
        self.models = importlib.import_module(self.module)
        policy = custdata.Policy.from_toml(tmp_path / "custdata.toml")
        engine = create_engine(self.url)
        self.models.Base.metadata.create_all(engine)
        custodian = custdata.Custodian(
            policy=policy, keyring=custdata.crypto.Keyring.generate()
        )
        self.subjects = [uuid.uuid4(), uuid.uuid4()]
        with (
            custodian.activate(),
            Session(engine) as session,
            custdata.acting_as("c-1", role="clerk"),
            custdata.purpose("support"),
        ):
            for sid in self.subjects:
                session.add(self.models.Customer(id=sid, acquired_at=T0, name=CANARY))
                session.flush()
                with custdata.purpose("billing"):
                    session.add(
                        self.models.Order(customer_id=sid, acquired_at=T0, total=CANARY)
                    )
                    session.flush()
            session.commit()
        engine.dispose()
        self.tmp = tmp_path

    def args(self, subject: object, *more: str) -> list[str]:
        return [
            "erase",
            str(subject),
            "--url",
            self.url,
            "--models",
            f"{self.module}:Base",
            "--policy",
            str(self.tmp / "custdata.toml"),
            "--actor",
            "dpo-7",
            "--role",
            "dpo",
            "--purpose",
            "privacy_desk",
            "--now",
            "2021-06-01T00:00:00+00:00",
            *more,
        ]

    def values(self) -> dict[str, list[tuple[str, bool]]]:
        """Per table: (subject, whether the value is stored) for each row."""
        engine = create_engine(self.url)
        out = {}
        try:
            with engine.connect() as conn:
                for name, subject, field in (
                    (f"cli_erase_{self.suffix}", "id", "name"),
                    (f"cli_erase_orders_{self.suffix}", "customer_id", "total"),
                ):
                    raw = table(name, column(subject), column(field))
                    out[name] = sorted(
                        (str(uuid.UUID(str(r[0]))), r[1] is not None)
                        for r in conn.execute(select(*raw.c)).all()
                    )
        finally:
            engine.dispose()
        return out


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    monkeypatch.chdir(tmp_path)
    return World(tmp_path)


class TestCommand:
    def test_dry_run_then_run(
        self, world: World, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """The dry run reports and changes nothing; the run erases one subject only."""
        subject, other = world.subjects
        before = world.values()
        assert 0 == main(world.args(subject, "--dry-run", "--json"))
        dry = json.loads(capsys.readouterr().out)
        assert dry["dry_run"] is True
        assert [(k["field"], k["reason"], k["rule"]) for k in dry["kept"]] == [
            ("total", "statutory_minimum", "accounting")
        ]
        assert world.values() == before

        assert 0 == main(world.args(subject, "--request-id", "req-42"))
        out, err = capsys.readouterr()
        assert "kept 1: statutory_minimum (accounting, until 2027-03-01)" in out
        assert "partial" in out
        assert "no audit trail" in err
        after = world.values()
        customers = dict(after[f"cli_erase_{world.suffix}"])
        orders = dict(after[f"cli_erase_orders_{world.suffix}"])
        assert customers.get(str(subject), False) is False
        assert customers[str(other)] is True
        assert orders[str(subject)] is True  # kept by the statute
        assert CANARY not in out + err

    def test_recorded_in_the_audit_trail(
        self, world: World, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """With --audit each table's erasure is a retention.expire event by --actor."""
        keyring = world.tmp / "keyring.json"
        assert 0 == main(["keys", "init", str(keyring)])
        audit = world.tmp / "audit.jsonl"
        subject = world.subjects[0]
        code = main(
            world.args(subject, "--keyring", str(keyring), "--audit", str(audit))
        )
        assert 0 == code, capsys.readouterr().err
        text = audit.read_text(encoding="utf-8")
        assert "retention.expire" in text
        assert "erasure_request" in text
        assert "dpo-7" in text
        assert CANARY not in text
        capsys.readouterr()
        assert 0 == main(["audit", "verify", str(audit), "--keyring", str(keyring)])

    @pytest.mark.parametrize(
        ("change", "message"),
        [
            (("SUBJECT", "not-a-uuid"), "not a subject id"),
            (("--purpose", "support"), "may not erase records"),
            (("--role", "clerk"), "privacy_desk"),
        ],
    )
    def test_errors_exit_2_with_one_line(
        self,
        world: World,
        capsys: pytest.CaptureFixture[str],
        change: tuple[str, str],
        message: str,
    ) -> None:
        """A bad subject, a purpose that may not erase, a role without it: one line, exit 2."""
        args = world.args(world.subjects[0])
        if change[0] == "SUBJECT":
            args[1] = change[1]
        else:
            args[args.index(change[0]) + 1] = change[1]
        before = world.values()
        assert 2 == main(args)
        err = capsys.readouterr().err
        assert 1 == len(err.strip().splitlines()), err
        assert message in err
        assert "Traceback" not in err
        assert world.values() == before
