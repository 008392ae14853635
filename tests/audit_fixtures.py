"""Helpers for the audit tests: key sources, stores that can be tampered with, scenarios."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import sqlalchemy as sa

from custdata._decision import AccessDecision, Action, Outcome
from custdata.audit import (
    AuditSink,
    AuditTrail,
    Checkpointer,
    CheckpointSigner,
    CheckpointVerifier,
    FileAnchor,
    JsonLinesSink,
    JsonLinesSource,
    SqlSink,
    SqlSource,
    TrailSource,
    VerificationReport,
    audit_tables,
    verify_trail,
)


T0 = dt.datetime(2026, 11, 29, 9, 0, tzinfo=dt.timezone.utc)


class FakeKeys:
    """A minimal audit key source with string key ids."""

    def __init__(self, key_id: str = "audit-1", seed: bytes | None = None) -> None:
        self.key_id = key_id
        self.roots = {key_id: seed if seed is not None else os.urandom(32)}

    def audit_root_key(self) -> tuple[str, bytes]:
        return self.key_id, self.roots[self.key_id]

    def audit_root_key_for(self, key_id: Any) -> bytes:
        try:
            return self.roots[key_id]
        except KeyError:
            raise LookupError("no such audit key") from None


def decision(
    actor: str, *, subjects: tuple[str, ...] = ("c-1",), **kw: Any
) -> AccessDecision:
    """An allowed READ decision by *actor*."""
    values: dict[str, Any] = {
        "outcome": Outcome.ALLOWED,
        "action": Action.READ,
        "actor": actor,
        "role": "support_agent",
        "purpose": "support",
        "policy_version": "2026.1",
        "entity": "customers",
        "fields": ("email", "name"),
        "categories": ("contact", "name"),
        "subjects": subjects,
        "count": 2 * len(subjects),
    }
    values.update(kw)
    return AccessDecision(**values)


class Store:
    """A stored trail that tests write through sinks and then tamper with."""

    kind: str

    def sink(self) -> AuditSink:
        raise NotImplementedError

    def source(self) -> TrailSource:
        raise NotImplementedError

    def close(self) -> None:
        """Release resources."""

    # Tampering operations, each on (chain, seq).
    def flip_body_byte(self, chain: str, seq: int) -> None:
        raise NotImplementedError

    def set_column(self, chain: str, seq: int, column: str, value: object) -> None:
        raise NotImplementedError

    def delete(self, chain: str, seqs: list[int]) -> None:
        raise NotImplementedError

    def delete_chain(self, chain: str) -> None:
        raise NotImplementedError

    def swap_seq(self, chain: str, a: int, b: int) -> None:
        raise NotImplementedError

    def append_raw(
        self, chain: str, seq: int, *, like: tuple[str, int], mac: bytes | None = None
    ) -> None:
        raise NotImplementedError

    def drop_body(self, chain: str, seq: int) -> None:
        """Remove a body the way a redaction would, but without a redaction event."""
        raise NotImplementedError

    def body(self, chain: str, seq: int) -> bytes | None:
        """The stored body of (chain, seq), or ``None`` when it is gone."""
        raise NotImplementedError

    def duplicate(self, chain: str, seq: int) -> None:
        raise NotImplementedError

    def snapshot(self) -> object:
        raise NotImplementedError

    def restore(self, snap: object) -> None:
        raise NotImplementedError


class JsonLinesStore(Store):
    kind = "jsonl"

    def __init__(self, path: Path) -> None:
        self.path = path

    def sink(self) -> AuditSink:
        return JsonLinesSink(self.path, version=1)

    def source(self) -> TrailSource:
        return JsonLinesSource(self.path)

    def _lines(self) -> list[tuple[dict[str, Any], bytes | None]]:
        out: list[tuple[dict[str, Any], bytes | None]] = []
        for line in self.path.read_bytes().splitlines():
            cut = line.find(b',"body":')
            if cut < 0:  # a redacted line
                out.append((json.loads(line), None))
            else:
                out.append((json.loads(line[:cut] + b"}"), line[cut + 8 : -1]))
        return out

    def _write(self, lines: list[tuple[dict[str, Any], bytes | None]]) -> None:
        data = b""
        for env, body in lines:
            head = json.dumps(env, separators=(",", ":")).encode()
            if body is None:
                data += head + b"\n"
            else:
                data += head[:-1] + b',"body":' + body + b"}\n"
        self.path.write_bytes(data)

    def body(self, chain: str, seq: int) -> bytes | None:
        return next(
            b for e, b in self._lines() if (e["chain"], e["seq"]) == (chain, seq)
        )

    def drop_body(self, chain: str, seq: int) -> None:
        self._edit(chain, seq, lambda env, body: (env, None))

    def _edit(self, chain: str, seq: int, fn: Any) -> None:
        lines = self._lines()
        for i, (env, body) in enumerate(lines):
            if env["chain"] == chain and env["seq"] == seq:
                lines[i] = fn(env, body)
        self._write(lines)

    def flip_body_byte(self, chain: str, seq: int) -> None:
        def flip(env: dict[str, Any], body: bytes) -> tuple[dict[str, Any], bytes]:
            assert body is not None
            i = body.index(b'"event_id":"') + 13
            c = b"1" if body[i : i + 1] != b"1" else b"2"
            return env, body[:i] + c + body[i + 1 :]

        self._edit(chain, seq, flip)

    def set_column(self, chain: str, seq: int, column: str, value: object) -> None:
        def setit(env: dict[str, Any], body: bytes) -> tuple[dict[str, Any], bytes]:
            return {**env, column: value}, body

        self._edit(chain, seq, setit)

    def delete(self, chain: str, seqs: list[int]) -> None:
        self._write(
            [
                (e, b)
                for e, b in self._lines()
                if not (e["chain"] == chain and e["seq"] in seqs)
            ]
        )

    def delete_chain(self, chain: str) -> None:
        self._write([(e, b) for e, b in self._lines() if e["chain"] != chain])

    def swap_seq(self, chain: str, a: int, b: int) -> None:
        lines = self._lines()
        for env, _ in lines:
            if env["chain"] == chain and env["seq"] in (a, b):
                env["seq"] = b if env["seq"] == a else a
        self._write(lines)

    def append_raw(
        self, chain: str, seq: int, *, like: tuple[str, int], mac: bytes | None = None
    ) -> None:
        lines = self._lines()
        env, body = next((e, b) for e, b in lines if (e["chain"], e["seq"]) == like)
        env = {**env, "chain": chain, "seq": seq}
        if mac is not None:
            env["mac"] = mac.hex()
        lines.append((env, body))
        self._write(lines)

    def duplicate(self, chain: str, seq: int) -> None:
        """Store the record at (chain, seq) once more, right after itself."""
        lines = self.path.read_bytes().splitlines(keepends=True)
        at = next(
            i
            for i, (e, _) in enumerate(self._lines())
            if (e["chain"], e["seq"]) == (chain, seq)
        )
        lines.insert(at + 1, lines[at])
        self.path.write_bytes(b"".join(lines))

    def snapshot(self) -> object:
        return self.path.read_bytes()

    def restore(self, snap: object) -> None:
        assert isinstance(snap, bytes)
        self.path.write_bytes(snap)


class SqlStore(Store):
    kind = "sql"

    def __init__(self, url: str, prefix: str) -> None:
        self.url = url
        self.prefix = prefix
        self.engine = sa.create_engine(url)
        self.tables = audit_tables(prefix=prefix)
        self.tables.metadata.create_all(self.engine)
        self._sinks: list[SqlSink] = []

    def sink(self) -> AuditSink:
        sink = SqlSink(self.url, prefix=self.prefix, create=False, flush_interval=0.01)
        self._sinks.append(sink)
        return sink

    def source(self) -> TrailSource:
        return SqlSource(self.engine, self.tables)

    def close(self) -> None:
        for sink in self._sinks:
            sink.close()
        self.tables.metadata.drop_all(self.engine)
        self.engine.dispose()

    def _where(self, chain: str, seq: int) -> Any:
        t = self.tables.event
        return sa.and_(t.c.chain == chain, t.c.seq == seq)

    def flip_body_byte(self, chain: str, seq: int) -> None:
        t = self.tables.event
        with self.engine.begin() as conn:
            body = bytes(
                conn.execute(
                    sa.select(t.c.body).where(self._where(chain, seq))
                ).scalar_one()
            )
            i = body.index(b'"event_id":"') + 13
            c = b"1" if body[i : i + 1] != b"1" else b"2"
            conn.execute(
                t.update()
                .where(self._where(chain, seq))
                .values(body=body[:i] + c + body[i + 1 :])
            )

    def set_column(self, chain: str, seq: int, column: str, value: object) -> None:
        t = self.tables.event
        with self.engine.begin() as conn:
            conn.execute(
                t.update().where(self._where(chain, seq)).values({column: value})
            )

    def delete(self, chain: str, seqs: list[int]) -> None:
        t, s = self.tables.event, self.tables.subject
        with self.engine.begin() as conn:
            conn.execute(t.delete().where(t.c.chain == chain, t.c.seq.in_(seqs)))
            conn.execute(s.delete().where(s.c.chain == chain, s.c.seq.in_(seqs)))

    def delete_chain(self, chain: str) -> None:
        t, s = self.tables.event, self.tables.subject
        with self.engine.begin() as conn:
            conn.execute(t.delete().where(t.c.chain == chain))
            conn.execute(s.delete().where(s.c.chain == chain))

    def swap_seq(self, chain: str, a: int, b: int) -> None:
        t, s = self.tables.event, self.tables.subject
        with self.engine.begin() as conn:
            for tab in (t, s):
                conn.execute(
                    tab.update()
                    .where(tab.c.chain == chain, tab.c.seq == a)
                    .values(seq=-1)
                )
                conn.execute(
                    tab.update()
                    .where(tab.c.chain == chain, tab.c.seq == b)
                    .values(seq=a)
                )
                conn.execute(
                    tab.update()
                    .where(tab.c.chain == chain, tab.c.seq == -1)
                    .values(seq=b)
                )

    def append_raw(
        self, chain: str, seq: int, *, like: tuple[str, int], mac: bytes | None = None
    ) -> None:
        t, s = self.tables.event, self.tables.subject
        with self.engine.begin() as conn:
            row = dict(
                conn.execute(sa.select(t).where(self._where(*like))).one()._mapping
            )
            subs = [
                dict(r._mapping)
                for r in conn.execute(
                    sa.select(s).where(s.c.chain == like[0], s.c.seq == like[1])
                )
            ]
            row.pop("id")
            row.update(chain=chain, seq=seq, prev=os.urandom(32))
            if mac is not None:
                row["mac"] = mac
            conn.execute(t.insert(), row)
            for sub in subs:
                sub.update(chain=chain, seq=seq)
                conn.execute(s.insert(), sub)

    def drop_unique_constraints(self) -> None:
        """Drop the event table's unique constraints, as an attacker with DDL rights could."""
        t = self.tables.event
        names = [f"uq_{self.prefix}_chain_seq", f"uq_{self.prefix}_chain_prev"]
        dialect = self.engine.dialect.name
        with self.engine.begin() as conn:
            if dialect == "sqlite":
                # SQLite cannot drop a constraint: copy the table without it.
                conn.exec_driver_sql(
                    f"CREATE TABLE tmp_{t.name} AS SELECT * FROM {t.name}"  # noqa: S608 - test-owned names
                )
                conn.exec_driver_sql(f"DROP TABLE {t.name}")
                conn.exec_driver_sql(f"ALTER TABLE tmp_{t.name} RENAME TO {t.name}")
                return
            for name in names:
                if dialect == "postgresql":
                    conn.exec_driver_sql(f"ALTER TABLE {t.name} DROP CONSTRAINT {name}")
                else:
                    conn.exec_driver_sql(f"ALTER TABLE {t.name} DROP INDEX {name}")

    def duplicate(self, chain: str, seq: int) -> None:
        """Insert a copy of the row at (chain, seq) (after dropping the constraints)."""
        self.drop_unique_constraints()
        t = self.tables.event
        with self.engine.begin() as conn:
            row = dict(
                conn.execute(sa.select(t).where(self._where(chain, seq))).one()._mapping
            )
            if self.engine.dialect.name != "sqlite":
                row.pop("id")
            conn.execute(t.insert(), row)

    def body(self, chain: str, seq: int) -> bytes | None:
        t = self.tables.event
        with self.engine.connect() as conn:
            raw = conn.execute(
                sa.select(t.c.body).where(self._where(chain, seq))
            ).scalar_one()
        return None if raw is None else bytes(raw)

    def row(self, chain: str, seq: int) -> dict[str, Any]:
        t = self.tables.event
        with self.engine.connect() as conn:
            return dict(
                conn.execute(sa.select(t).where(self._where(chain, seq))).one()._mapping
            )

    def fanout(self, chain: str, seq: int) -> list[str]:
        s = self.tables.subject
        with self.engine.connect() as conn:
            return list(
                conn.execute(
                    sa.select(s.c.subject_ref).where(s.c.chain == chain, s.c.seq == seq)
                ).scalars()
            )

    def drop_body(self, chain: str, seq: int) -> None:
        t, s = self.tables.event, self.tables.subject
        with self.engine.begin() as conn:
            conn.execute(
                t.update()
                .where(self._where(chain, seq))
                .values(
                    body=None,
                    actor_id=None,
                    subject_ref=None,
                    entity=None,
                    purpose=None,
                )
            )
            conn.execute(s.delete().where(s.c.chain == chain, s.c.seq == seq))

    def snapshot(self) -> object:
        with self.engine.connect() as conn:
            return [
                [dict(r._mapping) for r in conn.execute(sa.select(tab))]
                for tab in (self.tables.event, self.tables.subject)
            ]

    def restore(self, snap: object) -> None:
        assert isinstance(snap, list)
        with self.engine.begin() as conn:
            for tab, rows in zip(
                (self.tables.event, self.tables.subject), snap, strict=True
            ):
                conn.execute(tab.delete())
                if rows:
                    conn.execute(tab.insert(), rows)


@attrs.define
class Scenario:
    """A trail written by several chains with anchored checkpoints."""

    store: Store
    keys: FakeKeys
    signer: CheckpointSigner
    anchor: FileAnchor
    checkpointer: Checkpointer
    trails: list[AuditTrail]
    chains: list[str]
    clock: list[dt.datetime]

    def tick(self) -> dt.datetime:
        self.clock[0] += dt.timedelta(seconds=1)
        return self.clock[0]

    def write(self, n: int) -> None:
        """Write *n* events on each chain."""
        for _ in range(n):
            for i, trail in enumerate(self.trails):
                trail.record_decision(
                    decision(f"u-{i}", subjects=(f"c-{i}",)), now=self.tick()
                )

    def checkpoint(self) -> None:
        for trail in self.trails:
            trail.flush()
        self.checkpointer.checkpoint(now=self.tick())

    def close_trails(self) -> None:
        for trail in self.trails:
            trail.close(now=self.tick())

    def verify(self, **kw: Any) -> VerificationReport:
        for trail in self.trails:
            if trail.chain is not None:
                with contextlib.suppress(Exception):
                    trail.flush()
        return verify_trail(
            self.store.source(),
            self.keys,
            checkpoints=self.anchor,
            verifier=CheckpointVerifier(self.signer.verifier_key),
            **kw,
        )


def build_scenario(
    store: Store,
    tmp_path: Path,
    *,
    writers: int = 3,
    per_round: int = 20,
    rounds: int = 3,
) -> Scenario:
    """Write *rounds* rounds of *per_round* events on each of *writers* chains, checkpointing each."""
    keys = FakeKeys()
    signer = CheckpointSigner.generate("test.example/audit")
    anchor = FileAnchor(tmp_path / f"anchor-{os.urandom(4).hex()}.jsonl")
    checkpointer = Checkpointer(store.source(), signer, anchor)
    trails = [
        AuditTrail(
            keys, sinks=[store.sink()], checkpoint_interval=None, service=f"w{i}"
        )
        for i in range(writers)
    ]
    sc = Scenario(
        store=store,
        keys=keys,
        signer=signer,
        anchor=anchor,
        checkpointer=checkpointer,
        trails=trails,
        chains=[],
        clock=[T0],
    )
    for _ in range(rounds):
        sc.write(per_round)
        sc.checkpoint()
    sc.chains = [str(t.chain) for t in trails]
    return sc


def store_for(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Store]:
    """Yield a store of *kind* ('jsonl', 'sqlite', 'postgresql', 'mysql')."""
    if kind == "jsonl":
        yield JsonLinesStore(tmp_path / "audit.jsonl")
        return
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'audit.db'}"
    else:
        env = (
            "CUSTDATA_TEST_POSTGRES_URL"
            if kind == "postgresql"
            else "CUSTDATA_TEST_MYSQL_URL"
        )
        url = os.environ.get(env, "")
        if not url:
            pytest.skip(f"set {env} to run this test against a real server")
    store = SqlStore(url, f"t_audit_{os.urandom(4).hex()}")
    try:
        yield store
    finally:
        store.close()
