"""``custdata request fulfil --execute``: a granted request answered from the CLI.

On SQLite, PostgreSQL and MariaDB (the ``db_url`` fixture): the request is
opened and granted with the CLI, then ``fulfil --execute`` opens its sealed
subject, locates it in the ``--models`` tables, discloses it to ``--out`` or
erases it, and records the answer; ``--dry-run`` changes nothing.
"""

from __future__ import annotations

import datetime as dt
import importlib
import json
import sys
import uuid

from collections.abc import Iterator
from pathlib import Path

import pytest

from sqlalchemy import column, create_engine, inspect, select, table
from sqlalchemy.orm import Session

import custdata

from custdata.cli import main
from custdata.crypto import Keyring


UTC = dt.timezone.utc
T0 = dt.datetime(2020, 3, 1, tzinfo=UTC)
CANARY = "canary-cli-fulfil-51ab"
OTHER = "other-cli-fulfil-9e0c"

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

[purposes.support]
text_ja = "サポート"
text_en = "Support"
retention = "support"

[purposes.disclosure]
text_ja = "本人への開示"
text_en = "Disclosure to the data subject"
retention = "support"
subject_disclosure = true

[purposes.privacy_desk]
text_ja = "本人からの請求への対応"
text_en = "Answering data-subject requests"
retention = "support"
may_erase = true

[roles.clerk]
purposes = ["support"]

[roles.dpo]
purposes = ["disclosure", "privacy_desk", "support"]
"""

MODELS = """
import datetime as dt
import uuid

from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from custdata.sqlalchemy import customer_data, retention_anchor, subject_key


class Base(DeclarativeBase):
    pass


class Customer(Base):
    __tablename__ = "cli_ful_{suffix}"
    id: Mapped[uuid.UUID] = subject_key()
    acquired_at: Mapped[dt.datetime] = retention_anchor("acquired")
    name: Mapped[str | None] = customer_data("name", purposes=["support"])


class Inquiry(Base):
    __tablename__ = "cli_ful_inq_{suffix}"
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    customer_id: Mapped[uuid.UUID] = subject_key("cli_ful_{suffix}.id")
    acquired_at: Mapped[dt.datetime] = retention_anchor("acquired")
    body: Mapped[str | None] = customer_data("inquiry", purposes=["support"])
"""


class World:
    def __init__(self, tmp_path: Path, url: str) -> None:
        self.suffix = uuid.uuid4().hex[:8]
        self.module = f"cli_ful_models_{self.suffix}"
        (tmp_path / f"{self.module}.py").write_text(
            MODELS.format(suffix=self.suffix), encoding="utf-8"
        )
        (tmp_path / "custdata.toml").write_text(POLICY, encoding="utf-8")
        self.keyring = tmp_path / "keyring.json"
        assert 0 == main(["keys", "init", str(self.keyring)])
        self.url = url
        self.prefix = f"t_fr_{self.suffix}"
        self.tmp = tmp_path
        sys.path.insert(0, str(tmp_path))
        self.models = importlib.import_module(self.module)
        policy = custdata.Policy.from_toml(tmp_path / "custdata.toml")
        engine = create_engine(url)
        self.models.Base.metadata.create_all(engine)
        custodian = custdata.Custodian(
            policy=policy, keyring=Keyring.load(self.keyring)
        )
        self.subjects = [uuid.uuid4(), uuid.uuid4()]
        with (
            custodian.activate(),
            Session(engine) as session,
            custdata.acting_as("c-1", role="clerk"),
            custdata.purpose("support"),
        ):
            for sid, value in zip(self.subjects, (CANARY, OTHER), strict=True):
                session.add(self.models.Customer(id=sid, acquired_at=T0, name=value))
                session.flush()
                session.add(
                    self.models.Inquiry(customer_id=sid, acquired_at=T0, body=value)
                )
            session.commit()
        engine.dispose()

    def drop(self) -> None:
        engine = create_engine(self.url)
        try:
            self.models.Base.metadata.drop_all(engine)
            names = [f"{self.prefix}_event", self.prefix]
            for name in names:
                if inspect(engine).has_table(name):
                    with engine.begin() as conn:
                        conn.exec_driver_sql(f"DROP TABLE {name}")
        finally:
            engine.dispose()

    def request(self, *argv: str, at: str = "2021-06-01T10:00+00:00") -> list[str]:
        return [
            "request",
            *argv,
            "--url",
            self.url,
            "--prefix",
            self.prefix,
            "--policy",
            str(self.tmp / "custdata.toml"),
            "--keyring",
            str(self.keyring),
            "--actor",
            "dpo-7",
            "--at",
            at,
        ]

    def granted(self, kind: str, rid: str) -> None:
        subject = str(self.subjects[0])
        assert 0 == main(
            [*self.request("open", kind, "--subject", subject, "--id", rid)]
        )
        assert 0 == main([*self.request("verify", rid, "--method", "id_document")])
        assert 0 == main([*self.request("decide", rid, "--grant")])

    def execute(self, rid: str, *more: str) -> list[str]:
        return [
            *self.request("fulfil", rid),
            "--execute",
            "--models",
            f"{self.module}:Base",
            "--role",
            "dpo",
            *more,
        ]

    def names(self) -> dict[str, str | None]:
        """Each customer row's stored name (envelope or NULL), by subject."""
        engine = create_engine(self.url)
        try:
            raw = table(f"cli_ful_{self.suffix}", column("id"), column("name"))
            with engine.connect() as conn:
                return {
                    str(uuid.UUID(str(r[0]))): r[1]
                    for r in conn.execute(select(*raw.c)).all()
                }
        finally:
            engine.dispose()


@pytest.fixture
def world(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, db_url: str
) -> Iterator[World]:
    monkeypatch.chdir(tmp_path)
    w = World(tmp_path, db_url)
    yield w
    w.drop()


class TestExecute:
    def test_disclosure_written_and_recorded(
        self, world: World, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A granted access request: the subject's values to --out, the request fulfilled."""
        world.granted("gdpr_access", "REQ-D")
        capsys.readouterr()
        out_file = world.tmp / "disclosure.json"
        audit = world.tmp / "audit.jsonl"
        code = main(
            [
                *world.execute("REQ-D", "--out", str(out_file), "--audit", str(audit)),
                "--json",
            ]
        )
        out, err = capsys.readouterr()
        assert (0, "") == (code, err)
        shown = json.loads(out)
        assert ("fulfilled", False) == (shown["state"], shown["dry_run"])
        assert {"format": "json", "tables": 2, "values": 2} == shown["result"]
        written = out_file.read_text(encoding="utf-8")
        assert CANARY in written
        assert OTHER not in written
        assert CANARY not in out
        trail = audit.read_text(encoding="utf-8")
        assert "export.subject" in trail
        assert str(world.subjects[0]) not in trail
        assert 0 == main([*world.request("show", "REQ-D"), "--json"])
        history = json.loads(capsys.readouterr().out)["history"]
        assert "fulfilled" == history[-1]["action"]

    def test_erasure_dry_run_then_run(
        self, world: World, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """--dry-run plans and changes nothing; the run erases the subject only."""
        world.granted("gdpr_erasure", "REQ-E")
        subject, other = (str(s) for s in world.subjects)
        before = world.names()
        capsys.readouterr()
        purpose = ("--purpose", "privacy_desk")
        assert 0 == main([*world.execute("REQ-E", *purpose, "--dry-run"), "--json"])
        dry = json.loads(capsys.readouterr().out)
        assert (True, "in_progress", 2) == (dry["dry_run"], dry["state"], dry["rows"])
        assert 2 == dry["deleted_rows"]
        assert before == world.names()
        code = main([*world.execute("REQ-E", *purpose), "--json"])
        out, err = capsys.readouterr()
        assert 0 == code
        assert "no audit trail" in err
        done = json.loads(out)
        assert "fulfilled" == done["state"]
        assert 2 == done["result"]["deleted_rows"]
        after = world.names()
        assert subject not in after
        assert after[other] is not None

    @pytest.mark.parametrize(
        ("more", "match"),
        [
            (("--partial",), "--execute records what it did"),
            (("--purpose", "support"), "is not permitted"),
        ],
    )
    def test_errors_are_one_line(
        self,
        world: World,
        capsys: pytest.CaptureFixture[str],
        more: tuple[str, ...],
        match: str,
    ) -> None:
        """Usage and refusals: one line on stderr, exit 2, nothing changed."""
        world.granted("gdpr_erasure", "REQ-X")
        before = world.names()
        capsys.readouterr()
        code = main(world.execute("REQ-X", *more))
        out, err = capsys.readouterr()
        assert (2, "") == (code, out)
        assert 1 == len(err.strip().splitlines())
        assert match in err
        assert CANARY not in err
        assert str(world.subjects[0]) not in err
        assert before == world.names()

    def test_not_granted_and_missing_options(
        self, world: World, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A request not yet granted is refused; --execute without --models says so."""
        subject = str(world.subjects[0])
        assert 0 == main(
            [*world.request("open", "gdpr_access", "--subject", subject, "--id", "R")]
        )
        capsys.readouterr()
        assert 2 == main(world.execute("R"))
        assert "only a granted request" in capsys.readouterr().err
        argv = [
            a
            for a in world.execute("R")
            if a not in {"--models", f"{world.module}:Base"}
        ]
        assert 2 == main(argv)
        assert "--execute needs --models" in capsys.readouterr().err

    def test_disclosure_needs_out(
        self, world: World, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A disclosure with nowhere to go is refused before anything is recorded."""
        world.granted("gdpr_access", "REQ-N")
        capsys.readouterr()
        assert 2 == main(world.execute("REQ-N"))
        assert "give --out" in capsys.readouterr().err
        assert 0 == main([*world.request("show", "REQ-N"), "--json"])
        assert "in_progress" == json.loads(capsys.readouterr().out)["state"]
