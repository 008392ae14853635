"""``custdata sweep``: dry run, the real run, replay, and a real ``kill -9``."""

from __future__ import annotations

import datetime as dt
import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid

from pathlib import Path
from typing import Any

import pytest

from sqlalchemy import column, create_engine, select, table
from sqlalchemy.orm import Session

import custdata

from custdata.cli import main


UTC = dt.timezone.utc
T0 = dt.datetime(2020, 3, 1, tzinfo=UTC)
CANARY = "canary-cli-sweep-3b9f"

POLICY = """
[policy]
organisation = "CLI K.K."
version = "1"
effective_date = 2019-01-01
next_review = 2099-01-01

[retention.billing]
period = "P7Y"
anchor = "last_transaction"
action = "delete"

[retention.support]
period = "P1Y"
anchor = "last_transaction"
action = "delete"

[purposes.billing]
text_ja = "請求"
text_en = "Billing"
retention = "billing"

[purposes.support]
text_ja = "サポート"
text_en = "Support"
retention = "support"

[roles.clerk]
purposes = ["billing", "support"]
"""

MODELS = """
import datetime as dt
import uuid

from sqlalchemy.orm import DeclarativeBase, Mapped

from custdata.sqlalchemy import customer_data, retention_anchor, subject_key


class Base(DeclarativeBase):
    pass


class Customer(Base):
    __tablename__ = "cli_sweep_{suffix}"
    id: Mapped[uuid.UUID] = subject_key()
    last_tx: Mapped[dt.datetime | None] = retention_anchor("last_transaction")
    name: Mapped[str] = customer_data("name", purposes=["billing"])
    email: Mapped[str | None] = customer_data("contact.email", purposes=["support"])
"""


class World:
    def __init__(self, tmp_path: Path, rows: int) -> None:
        self.suffix = uuid.uuid4().hex[:8]
        self.module = f"cli_sweep_models_{self.suffix}"
        (tmp_path / f"{self.module}.py").write_text(
            MODELS.format(suffix=self.suffix), encoding="utf-8"
        )
        (tmp_path / "custdata.toml").write_text(POLICY, encoding="utf-8")
        self.db = tmp_path / "app.db"
        self.url = f"sqlite:///{self.db}"
        sys.path.insert(0, str(tmp_path))
        self.models = importlib.import_module(self.module)
        self.policy = custdata.Policy.from_toml(tmp_path / "custdata.toml")
        engine = create_engine(self.url)
        self.models.Base.metadata.create_all(engine)
        custodian = custdata.Custodian(
            policy=self.policy, keyring=custdata.crypto.Keyring.generate()
        )
        spread = [T0, T0.replace(year=2026)]
        with (
            custodian.activate(),
            Session(engine) as session,
            custdata.acting_as("c-1", role="clerk"),
            custdata.purpose("billing"),
        ):
            for i in range(rows):
                session.add(
                    self.models.Customer(last_tx=spread[i % 2], name=CANARY, email=None)
                )
            session.commit()
        engine.dispose()
        self.tmp = tmp_path

    def args(self, *more: str) -> list[str]:
        return [
            "sweep",
            "--url",
            self.url,
            "--models",
            f"{self.module}:Base",
            "--policy",
            str(self.tmp / "custdata.toml"),
            "--now",
            "2027-03-02T00:00:00+00:00",
            "--quiet",
            *more,
        ]

    def rows(self, url: str | None = None) -> int:
        engine = create_engine(url or self.url)
        try:
            raw = table(f"cli_sweep_{self.suffix}", column("id"))
            with engine.connect() as conn:
                return len(conn.execute(select(raw.c.id)).all())
        finally:
            engine.dispose()


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    monkeypatch.chdir(tmp_path)
    return World(tmp_path, rows=10)


class TestCommand:
    """Dry run, run, second run and replay through the command line."""

    def test_dry_run_then_run_then_replay(
        self, world: World, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """The dry run counts, the run deletes and logs, the replay restores the state."""
        backup = world.tmp / "backup.db"
        shutil.copy(world.db, backup)
        assert 0 == main(world.args("--dry-run", "--json"))
        dry = json.loads(capsys.readouterr().out)
        assert [("*", "delete_row", 5)] == [
            (c["field"], c["action"], c["count"]) for c in dry["counts"]
        ]
        assert 10 == world.rows()

        log = world.tmp / "deletions.jsonl"
        assert 0 == main(world.args("--log", str(log)))
        out, err = capsys.readouterr()
        assert "delete_row 5" in out
        assert "no audit trail" in err
        assert 5 == world.rows()

        assert 0 == main(world.args("--json"))
        assert [] == json.loads(capsys.readouterr().out)["counts"]

        # Restore the pre-sweep backup and replay the log.
        shutil.copy(backup, world.db)
        assert 10 == world.rows()
        assert 0 == main(world.args("--replay", str(log)))
        assert "5 entries applied" in capsys.readouterr().out
        assert 5 == world.rows()
        assert CANARY not in log.read_text(encoding="utf-8")

    def test_replay_json(
        self, world: World, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """``--replay --json`` prints one JSON object: the log and the entries applied."""
        backup = world.tmp / "backup.db"
        shutil.copy(world.db, backup)
        log = world.tmp / "deletions.jsonl"
        assert 0 == main(world.args("--log", str(log)))
        shutil.copy(backup, world.db)
        capsys.readouterr()
        assert 0 == main(world.args("--replay", str(log), "--json"))
        assert {"replayed": str(log), "applied": 5} == json.loads(
            capsys.readouterr().out
        )
        assert 5 == world.rows()

    def test_missing_log_one_line_exit_2(
        self, world: World, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A deletion log that cannot be read: one line on stderr, exit 2."""
        assert 2 == main(world.args("--replay", "missing.jsonl"))
        err = capsys.readouterr().err
        assert 1 == len(err.strip().splitlines())
        assert "cannot read the deletion log" in err

    def test_naive_instant_is_a_usage_error(
        self, world: World, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """--now without a time zone is refused by the parser (exit 2), before anything runs."""
        with pytest.raises(SystemExit) as caught:
            main(world.args("--now", "2027-01-01T00:00:00"))
        assert 2 == caught.value.code
        assert "time zone" in capsys.readouterr().err
        assert 10 == world.rows()


@pytest.mark.skipif(sys.platform == "win32", reason="kill -9 is POSIX")
class TestKill9:
    """A sweep process killed with SIGKILL and run again ends like an uninterrupted one."""

    def test_kill_and_rerun(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """SIGKILL mid-sweep, then a rerun: the same rows as a straight sweep of a copy."""
        monkeypatch.chdir(tmp_path)
        world = World(tmp_path, rows=2400)
        straight = tmp_path / "straight.db"
        shutil.copy(world.db, straight)
        exe = Path(sys.executable).parent / "custdata"
        env = {**os.environ, "PYTHONPATH": str(tmp_path)}
        args = [str(exe), *world.args("--batch-size", "5")]
        proc = subprocess.Popen(args, cwd=tmp_path, env=env)
        deadline = time.monotonic() + 60
        while world.rows() == 2400 and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        killed_at = world.rows()
        assert -signal.SIGKILL == proc.returncode
        assert 1200 < killed_at < 2400, "the kill landed mid-sweep"
        assert 0 == subprocess.run(args, cwd=tmp_path, env=env, check=False).returncode
        straight_args = [
            str(exe),
            *world.args("--batch-size", "500"),
        ]
        straight_args[straight_args.index("--url") + 1] = f"sqlite:///{straight}"
        assert (
            0
            == subprocess.run(
                straight_args, cwd=tmp_path, env=env, check=False
            ).returncode
        )
        assert 1200 == world.rows() == world.rows(f"sqlite:///{straight}")
        assert _ids(world.url, world.suffix) == _ids(
            f"sqlite:///{straight}", world.suffix
        )


def _ids(url: str, suffix: str) -> list[Any]:
    engine = create_engine(url)
    try:
        raw = table(f"cli_sweep_{suffix}", column("id"), column("name"))
        with engine.connect() as conn:
            return sorted(conn.execute(select(raw.c.id, raw.c.name)).all())
    finally:
        engine.dispose()
