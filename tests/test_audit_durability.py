"""No reveal without a durable event (issue 11, item 5).

A writer process reveals values one batch at a time through the SQL sink and
says so on stdout only after ``record_decision`` returned, i.e. once the value
could be released. The test then makes the audit database stop accepting
writes (an exclusive lock on the event table), kills the writer with SIGKILL,
and checks that every released value has its event in the database. In the
default synchronous mode that holds; the opt-in asynchronous mode loses the
queued events, which is its documented loss window.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa


sys.path.insert(0, str(Path(__file__).resolve().parent))

from audit_fixtures import T0, FakeKeys, decision
from custdata import AuditUnavailableError
from custdata.audit import (
    AuditTrail,
    JsonLinesSource,
    MemorySink,
    SqlSink,
    SqlSource,
    audit_tables,
    verify_trail,
)


WRITER = textwrap.dedent(
    """
    import sys, time
    from custdata import AuditUnavailableError
    from custdata._decision import AccessDecision, Action, Outcome
    from custdata.audit import AuditTrail, JsonLinesSink, SqlSink

    url, prefix, seed, mode = sys.argv[1:5]

    class Keys:
        def audit_root_key(self):
            return "audit-1", bytes.fromhex(seed)

        def audit_root_key_for(self, key_id):
            return bytes.fromhex(seed)

    if mode == "jsonl":
        sink = JsonLinesSink(url)
    else:
        sink = SqlSink(url, prefix=prefix, create=False, mode=mode, flush_interval=0.01)
    trail = AuditTrail(Keys(), sinks=[sink], checkpoint_interval=None)
    i = 0
    while True:
        decision = AccessDecision(
            outcome=Outcome.ALLOWED, action=Action.READ, actor="u-1",
            role="support_agent", purpose="support", policy_version="1",
            entity="customers", fields=("email",), categories=("contact",),
            subjects=(f"c-{i}",), count=1,
        )
        try:
            trail.record_decision(decision)
        except AuditUnavailableError:
            time.sleep(0.01)
            continue
        print(f"released {i}", flush=True)
        i += 1
    """
)


class Lock:
    """Make the audit database stop accepting writes to the event table."""

    def __init__(self, url: str, table: str) -> None:
        self.url = url
        self.table = table
        self._sqlite: sqlite3.Connection | None = None
        self._engine: sa.Engine | None = None
        self._conn: sa.Connection | None = None

    def take(self) -> None:
        url = sa.make_url(self.url)
        if url.get_backend_name() == "sqlite":
            self._sqlite = sqlite3.connect(str(url.database), isolation_level=None)
            self._sqlite.execute("BEGIN EXCLUSIVE")
            return
        self._engine = sa.create_engine(self.url)
        self._conn = self._engine.connect()
        if url.get_backend_name() == "postgresql":
            self._conn.exec_driver_sql(
                f"LOCK TABLE {self.table} IN ACCESS EXCLUSIVE MODE"
            )
        else:
            self._conn.exec_driver_sql(f"LOCK TABLES {self.table} WRITE")

    def release(self) -> None:
        if self._sqlite is not None:
            self._sqlite.execute("ROLLBACK")
            self._sqlite.close()
        if self._conn is not None:
            if self._engine is not None and self._engine.dialect.name != "postgresql":
                self._conn.exec_driver_sql("UNLOCK TABLES")
            self._conn.rollback()
            self._conn.close()
        if self._engine is not None:
            self._engine.dispose()


@pytest.fixture
def tables(db_url: str) -> Iterator[tuple[str, str]]:
    prefix = f"t_dur_{os.urandom(4).hex()}"
    engine = sa.create_engine(db_url)
    t = audit_tables(prefix=prefix)
    t.metadata.create_all(engine)
    try:
        yield db_url, prefix
    finally:
        t.metadata.drop_all(engine)
        engine.dispose()


def _run(url: str, prefix: str, seed: bytes, mode: str) -> list[int]:
    """Run the writer, block the database after 20 releases, kill it; return what it released."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, url, prefix, seed.hex(), mode],
        stdout=subprocess.PIPE,
        env=env,
    )
    assert proc.stdout is not None
    released: list[int] = []
    enough = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            released.append(int(line.split()[1]))
            if len(released) >= 20:
                enough.set()

    reader = threading.Thread(target=read)
    reader.start()
    lock = Lock(url, f"{prefix}_event")
    try:
        assert enough.wait(60), "the writer released nothing"
        lock.take()
        time.sleep(1.0)  # the writer goes on trying while the database is blocked
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
        reader.join(30)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
        proc.stdout.close()
        lock.release()
    return released


def _recorded_refs(url: str, prefix: str) -> set[str]:
    engine = sa.create_engine(url)
    t = audit_tables(prefix=prefix)
    try:
        with engine.connect() as conn:
            return set(conn.execute(sa.select(t.subject.c.subject_ref)).scalars())
    finally:
        engine.dispose()


def _refs(seed: bytes, released: list[int]) -> dict[int, str]:
    keys = FakeKeys(seed=seed)
    trail = AuditTrail(keys, sinks=[MemorySink()], checkpoint_interval=None)
    try:
        return {i: trail.subject_ref(f"c-{i}") for i in released}
    finally:
        trail.close()


class TestNoRevealWithoutADurableEvent:
    def test_sync_mode_every_released_value_has_its_event(
        self, tables: tuple[str, str]
    ) -> None:
        """Database blocked, process killed: every released value has its committed event."""
        url, prefix = tables
        seed = os.urandom(32)
        released = _run(url, prefix, seed, "sync")
        assert len(released) >= 20
        recorded = _recorded_refs(url, prefix)
        missing = [i for i, ref in _refs(seed, released).items() if ref not in recorded]
        assert [] == missing

    def test_a_killed_writer_leaves_no_tampering(self, tables: tuple[str, str]) -> None:
        """A crash is not tampering: the killed writer's trail has no tampering finding."""
        url, prefix = tables
        seed = os.urandom(32)
        released = _run(url, prefix, seed, "sync")
        assert len(released) >= 20
        engine = sa.create_engine(url)
        try:
            report = verify_trail(
                SqlSource(engine, audit_tables(prefix=prefix)), FakeKeys(seed=seed)
            )
        finally:
            engine.dispose()
        assert [] == [str(f) for f in report.findings if not f.informational]
        assert report.events >= len(released) + 1  # and the chain's start

    def test_json_lines_every_released_value_has_its_line(self, tmp_path: Path) -> None:
        """JSON lines: a writer killed at any moment leaves every released value's line."""
        path = tmp_path / "audit.jsonl"
        seed = os.urandom(32)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), "-", seed.hex(), "jsonl"],
            stdout=subprocess.PIPE,
            env=env,
        )
        assert proc.stdout is not None
        released: list[int] = []
        try:
            for line in proc.stdout:
                released.append(int(line.split()[1]))
                if len(released) >= 200:
                    break
            os.kill(proc.pid, signal.SIGKILL)
            released.extend(int(line.split()[1]) for line in proc.stdout)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(30)
            proc.stdout.close()
        keys = FakeKeys(seed=seed)
        report = verify_trail(JsonLinesSource(path), keys)
        assert [] == [str(f) for f in report.findings if not f.informational]
        bodies = [
            json.loads(rec.body)
            for rec in JsonLinesSource(path).records()
            if rec.body is not None  # type: ignore[union-attr]
        ]
        recorded = {b.get("subject_ref") for b in bodies} | {
            ref for b in bodies for ref in b.get("subjects", ())
        }
        missing = [i for i, ref in _refs(seed, released).items() if ref not in recorded]
        assert [] == missing

    def test_async_mode_has_a_loss_window(self, tables: tuple[str, str]) -> None:
        """The opt-in asynchronous mode releases on queueing: killed, it loses events (documented)."""
        url, prefix = tables
        seed = os.urandom(32)
        released = _run(url, prefix, seed, "async")
        recorded = _recorded_refs(url, prefix)
        missing = [i for i, ref in _refs(seed, released).items() if ref not in recorded]
        assert missing


class TestOutageIsNotTampering:
    def test_refused_events_leave_no_gap(self, tables: tuple[str, str]) -> None:
        """While the database is blocked the access is refused; afterwards the trail goes on, intact."""

        url, prefix = tables
        keys = FakeKeys()
        # Give up on a blocked table after a fraction of a second.
        backend = sa.make_url(url).get_backend_name()
        connect_args: dict[str, object] = (
            {"timeout": 0.2}
            if backend == "sqlite"
            else {"options": "-c lock_timeout=200"}
            if backend == "postgresql"
            else {"read_timeout": 1}
        )
        sink = SqlSink(
            sa.create_engine(url, connect_args=connect_args),
            prefix=prefix,
            create=False,
        )
        trail = AuditTrail(keys, sinks=[sink], checkpoint_interval=None)
        trail.record_decision(decision("u-1", subjects=("c-1",)), now=T0)
        lock = Lock(url, f"{prefix}_event")
        lock.take()
        try:
            with pytest.raises(AuditUnavailableError, match="did not commit"):
                trail.record_decision(decision("u-1", subjects=("c-2",)), now=T0)
        finally:
            lock.release()
        trail.record_decision(decision("u-1", subjects=("c-3",)), now=T0)
        trail.close()
        engine = sa.create_engine(url)
        try:
            report = verify_trail(SqlSource(engine, audit_tables(prefix=prefix)), keys)
        finally:
            engine.dispose()
            sink.engine.dispose()  # given to the sink, so not disposed by it
        assert ["UNANCHORED_TAIL"] == report.kinds()
        assert (
            4 == report.events
        )  # start, c-1, c-3, stop: the refused one never counted
