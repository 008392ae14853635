"""Per-subject keys benchmark: cold and warm key cache beside column keys, plain and the floor.

One process, interleaved repetitions, medians of paired ratios (DESIGN §6). Each
variant has the same table shape (UUID key + 4 short strings):

- ``plain``: ``String`` columns, custdata's hooks removed.
- ``floor``: the hand-written AES-GCM type (``benchmarks/_floor.py``), hooks removed.
- ``column``: ``customer_data(...)`` with column keys (purpose checks and the
  JSON-lines audit trail on).
- ``subject cold``: ``key_scope="subject"`` with a :class:`SqlSubjectKeyStore` in
  the same database, the key cache emptied before each operation (inserts
  always create every subject's key: the keys are deleted between repetitions).
- ``subject warm``: the same with the cache filled by an untimed read first.

Usage::

    python benchmarks/bench_subject_keys.py                 # SQLite file, N=20000
    CUSTDATA_TEST_POSTGRES_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test \\
        python benchmarks/bench_subject_keys.py             # adds PostgreSQL
    python benchmarks/bench_subject_keys.py --scale         # 10k / 100k / 1M subjects
    python benchmarks/bench_subject_keys.py --profile "ORM insert"
    python benchmarks/bench_subject_keys.py --audit noop    # decisions dropped

``--scale`` measures what grows with the number of distinct subjects in a pass:
the subject-key cache (keys fetched per batch of 1,000 rows from a SQLite store
of N keys, then decrypted) and the audit trail's pseudonym cache, for a first
(cold) and a second pass over N distinct subjects.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import gc
import os
import pstats
import statistics
import sys
import tempfile
import time
import uuid

from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import String, create_engine, event, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column


ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _floor import floor_string  # noqa: E402
from bench_orm import _hooks_removed, _NoopRecorder, recorder, timed  # noqa: E402
from bench_orm import rows as make_rows  # noqa: E402

import custdata  # noqa: E402

from custdata.audit import AuditTrail, MemorySink  # noqa: E402
from custdata.crypto import InMemorySubjectKeyStore, Keyring, codec_for  # noqa: E402
from custdata.crypto._envelope import length_prefixed, subject_bytes  # noqa: E402
from custdata.sqlalchemy import (  # noqa: E402
    SqlSubjectKeyStore,
    _keystore,
    customer_data,
    subject_key,
)


VARIANTS = ("plain", "floor", "column", "subject cold", "subject warm")
OPERATIONS = ("ORM insert", "ORM select-all", "ORM session.get", "Core select-all")
BUDGETS = {  # ÷ floor, cold cache (DESIGN §6, issue 18)
    "ORM insert": 1.3,
    "ORM select-all": 1.5,
    "ORM session.get": 1.3,
    "Core select-all": 2.0,
}
FIELDS = ("name", "email", "phone", "city")
#: Whether the cyclic GC runs during the timed operations (``--gc-off``: not).
GC_ON = [True]
#: The clock: ``perf_counter`` (wall) or ``process_time`` (``--clock cpu``:
#: this process's CPU only -- steadier on a busy machine, but blind to the
#: time a database server spends).
CLOCK = ["wall"]


def _timed(fn: Callable[[], Any]) -> float:
    if CLOCK[0] == "wall":
        return timed(fn, gc_on=GC_ON[0])
    gc.collect()
    if not GC_ON[0]:
        gc.disable()
    try:
        start = time.process_time()
        fn()
        return time.process_time() - start
    finally:
        gc.enable()


def build_models(tag: str) -> dict[str, Any]:
    class Base(DeclarativeBase):
        pass

    class Plain(Base):
        __tablename__ = f"bsk_plain_{tag}"
        id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
        name: Mapped[str] = mapped_column(String(100))
        email: Mapped[str] = mapped_column(String(100))
        phone: Mapped[str] = mapped_column(String(100))
        city: Mapped[str] = mapped_column(String(100))

    floor_table = f"bsk_floor_{tag}"

    class Floor(Base):
        __tablename__ = floor_table
        id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
        name: Mapped[str] = mapped_column(floor_string(floor_table, "name"))
        email: Mapped[str] = mapped_column(floor_string(floor_table, "email"))
        phone: Mapped[str] = mapped_column(floor_string(floor_table, "phone"))
        city: Mapped[str] = mapped_column(floor_string(floor_table, "city"))

    class Column(Base):
        __tablename__ = f"bsk_column_{tag}"
        id: Mapped[uuid.UUID] = subject_key()
        name: Mapped[str] = customer_data("name", purposes=["support"])
        email: Mapped[str] = customer_data("contact.email", purposes=["support"])
        phone: Mapped[str] = customer_data("contact.phone", purposes=["support"])
        city: Mapped[str] = customer_data("contact.address", purposes=["support"])

    class Subject(Base):
        __tablename__ = f"bsk_subject_{tag}"
        id: Mapped[uuid.UUID] = subject_key()
        name: Mapped[str] = customer_data(
            "name", purposes=["support"], key_scope="subject"
        )
        email: Mapped[str] = customer_data(
            "contact.email", purposes=["support"], key_scope="subject"
        )
        phone: Mapped[str] = customer_data(
            "contact.phone", purposes=["support"], key_scope="subject"
        )
        city: Mapped[str] = customer_data(
            "contact.address", purposes=["support"], key_scope="subject"
        )

    return {
        "Base": Base,
        "plain": Plain,
        "floor": Floor,
        "column": Column,
        "subject cold": Subject,
        "subject warm": Subject,
    }


@contextlib.contextmanager
def _transaction_hooks_removed(remove: bool) -> Iterator[None]:
    """Also remove the key store's transaction listeners (for plain and the floor)."""
    if not remove:
        yield
        return
    hooks = [
        ("commit", _keystore._on_commit),  # noqa: SLF001
        ("rollback", _keystore._on_rollback),  # noqa: SLF001
        ("savepoint", _keystore._on_savepoint),  # noqa: SLF001
        ("rollback_savepoint", _keystore._on_rollback_savepoint),  # noqa: SLF001
        ("release_savepoint", _keystore._on_release_savepoint),  # noqa: SLF001
    ]
    for name, fn in hooks:
        event.remove(Engine, name, fn)
    try:
        yield
    finally:
        for name, fn in hooks:
            event.listen(Engine, name, fn)


class Bench:
    """One database: models, a key store beside them, and the timings."""

    def __init__(
        self, url: str, custodian_for: Callable[[Any], custdata.Custodian], n: int
    ) -> None:
        self.tag = uuid.uuid4().hex[:6]
        self.models = build_models(self.tag)
        self.engine = create_engine(url, hide_parameters=True)
        self.store = SqlSubjectKeyStore(self.engine, table_name=f"bsk_keys_{self.tag}")
        self.store.create_table()
        self.models["Base"].metadata.create_all(self.engine)
        self.custodian = custodian_for(self.store)
        self.scope = self.custodian.keyring.subject_scope(self.store)  # type: ignore[union-attr]
        self.n = n
        self.data = make_rows(n)
        self.results: dict[tuple[str, str], list[float]] = defaultdict(list)

    def context(self, variant: str) -> contextlib.ExitStack:
        stack = contextlib.ExitStack()
        stack.enter_context(self.custodian.activate())
        stack.enter_context(custdata.acting_as("bench", role="support_agent"))
        stack.enter_context(custdata.purpose("support"))
        bare = variant in {"plain", "floor"}
        if bare:
            stack.enter_context(_hooks_removed())
        stack.enter_context(_transaction_hooks_removed(bare))
        return stack

    def reset(self, model: Any) -> None:
        with self.context("column"), Session(self.engine) as s:
            s.query(model).delete()
            s.commit()
        self.store.delete_all()
        self.scope.clear()

    def operations(
        self, variant: str, lookups: int
    ) -> dict[str, tuple[Callable[[], Any], int]]:
        model = self.models[variant]
        engine = self.engine
        n = self.n
        objs = [model(**r) for r in self.data]
        ids = [r["id"] for r in self.data]
        lookup_ids = ids[:: max(1, n // lookups)][:lookups]
        table = model.__table__

        def insert() -> None:
            with Session(engine) as s:
                s.add_all(objs)
                s.commit()

        def select_all() -> None:
            with Session(engine) as s:
                got = s.scalars(select(model)).all()
                if len(got) != n:
                    raise RuntimeError("lost rows")
                for obj in got:
                    for f in FIELDS:
                        getattr(obj, f)

        def get() -> None:
            with Session(engine) as s:
                for i in lookup_ids:
                    obj = s.get(model, i)
                    if obj is None:
                        raise RuntimeError("lost row")
                    obj.name  # noqa: B018 - read the value
                    s.expunge_all()

        def core_select() -> None:
            with engine.connect() as conn:
                got = conn.execute(select(table)).all()
                if len(got) != n:
                    raise RuntimeError("lost rows")

        return {
            "ORM insert": (insert, n),
            "ORM select-all": (select_all, n),
            "ORM session.get": (get, len(lookup_ids)),
            "Core select-all": (core_select, n),
        }

    def prepare(self, variant: str, op: str, fn: Callable[[], Any]) -> None:
        """Set the cache as the variant says, right before the timed operation."""
        if variant == "subject cold" or (
            variant == "subject warm" and op == "ORM insert"
        ):
            self.scope.clear()
        elif variant == "subject warm":
            with self.context(variant):
                fn()  # the same operation, untimed: every key it needs is cached

    def run(self, reps: int, lookups: int, profile: str | None) -> None:
        for rep in range(reps):
            k = rep % len(VARIANTS)
            order = VARIANTS[k:] + VARIANTS[:k]
            for variant in order:
                self.reset(self.models[variant])
                for op, (fn, count) in self.operations(variant, lookups).items():
                    if op != "ORM insert":
                        self.prepare(variant, op, fn)
                    with self.context(variant):
                        if profile == op and variant == "subject cold":
                            profiler = cProfile.Profile()
                            profiler.enable()
                            fn()
                            profiler.disable()
                            print_profile(profiler)
                        else:
                            self.results[(variant, op)].append(_timed(fn) / count)

    def close(self) -> None:
        self.models["Base"].metadata.drop_all(self.engine)
        self.store.table.drop(self.engine)
        self.engine.dispose()

    def report(self, label: str, reps: int) -> None:
        print(
            f"\n### {label} (N={self.n}, reps={reps}, gc {'on' if GC_ON[0] else 'off'}, "
            f"{CLOCK[0]} clock, audit: {type(self.custodian.audit).__name__})\n"
        )
        print(
            "| operation | plain µs | floor µs | column ÷ floor | subject cold µs | "
            "cold ÷ floor | budget | subject warm ÷ floor | warm ÷ column |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        res = self.results

        def ratio(a: str, b: str, op: str) -> float:
            return statistics.median(
                x / y for x, y in zip(res[(a, op)], res[(b, op)], strict=True)
            )

        for op in OPERATIONS:
            cold = ratio("subject cold", "floor", op)
            mark = "" if cold <= BUDGETS[op] else " ✗"
            warm_col = (
                "n/a (new subjects)"
                if op == "ORM insert"
                else f"{ratio('subject warm', 'column', op):.2f}x"
            )
            print(
                f"| {op} | {statistics.median(res[('plain', op)]) * 1e6:.2f} "
                f"| {statistics.median(res[('floor', op)]) * 1e6:.2f} "
                f"| {ratio('column', 'floor', op):.2f}x "
                f"| {statistics.median(res[('subject cold', op)]) * 1e6:.2f} "
                f"| {cold:.2f}x{mark} | ≤{BUDGETS[op]}x "
                f"| {ratio('subject warm', 'floor', op):.2f}x | {warm_col} |"
            )


def print_profile(profiler: cProfile.Profile) -> None:
    """Print cumulative own time grouped by package (custdata, sqlalchemy, driver, ...)."""
    stats = pstats.Stats(profiler)
    groups: dict[str, float] = defaultdict(float)
    total = 0.0
    for (filename, _line, _name), (
        _cc,
        _nc,
        tottime,
        _ct,
        _callers,
    ) in stats.stats.items():  # type: ignore[attr-defined]
        total += tottime
        path = filename.replace("\\", "/")
        if "/custdata/" in path:
            rest = path.split("/custdata/", 1)[1]
            key = "custdata." + rest.split("/", 1)[0].removesuffix(".py")
        elif "site-packages/" in path:
            key = path.split("site-packages/", 1)[1].split("/", 1)[0]
        elif filename.startswith("<built-in") or filename == "~":
            key = "builtins (C: crypto, sqlite3, dict, ...)"
        else:
            key = "python stdlib / other"
        groups[key] += tottime
    print("\nprofile (own time by package):")
    for key, t in sorted(groups.items(), key=lambda kv: -kv[1])[:12]:
        print(f"  {key:45s} {t * 1e3:9.1f} ms  {t / total:6.1%}")


def scale(sizes: list[int], batch: int, tmp: Path, *, in_memory: bool) -> None:
    """Per-row cost of the subject-key cache and the pseudonym cache at N subjects."""
    where = "an in-memory store" if in_memory else "a SQLite file store"
    print(
        f"\n### Growth with distinct subjects (per row, µs; batches of {batch} rows; "
        f"keys in {where})\n"
    )
    print(
        "| distinct subjects | key cache: pass 1 | key cache: pass 2 "
        "| pseudonyms: pass 1 | pseudonyms: pass 2 |"
    )
    print("|---:|---:|---:|---:|---:|")
    keyring = Keyring.generate()
    for n in sizes:
        engine = create_engine(f"sqlite:///{tmp / f'scale_{n}.db'}")
        store: Any = InMemorySubjectKeyStore()
        if not in_memory:
            store = SqlSubjectKeyStore(engine, table_name="keys")
            store.create_table()
        cipher = keyring.field_cipher(
            table="t", column="c", codec=codec_for(str), subject_keys=store
        )
        scope = keyring.subject_scope(store)
        subjects = [uuid.uuid4() for _ in range(n)]
        blobs: list[bytes] = []
        for start in range(0, n, 10_000):
            chunk = subjects[start : start + 10_000]
            blobs.extend(cipher.encrypt_many(["x" * 20] * len(chunk), chunk))
        tails = [length_prefixed(subject_bytes(s)) for s in subjects]
        scope.clear()
        passes = []
        for _ in range(2):
            start_t = time.perf_counter()
            for start in range(0, n, batch):
                cipher.open_fetched(
                    blobs[start : start + batch], tails[start : start + batch]
                )
            passes.append((time.perf_counter() - start_t) / n * 1e6)
        trail = AuditTrail(keyring, sinks=[MemorySink()], checkpoint_interval=None)
        texts = [str(s) for s in subjects]
        refs = []
        for _ in range(2):
            start_t = time.perf_counter()
            for text in texts:
                trail.subject_ref(text)
            refs.append((time.perf_counter() - start_t) / n * 1e6)
        trail.close()
        print(
            f"| {n:,} | {passes[0]:.2f} | {passes[1]:.2f} | {refs[0]:.2f} | {refs[1]:.2f} |"
        )
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--lookups", type=int, default=1000)
    parser.add_argument("--gc-off", action="store_true", help="disable the cyclic GC")
    parser.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="wall time, or this process's CPU time (steadier on a busy machine)",
    )
    parser.add_argument(
        "--only", choices=["sqlite-file", "postgresql"], action="append"
    )
    parser.add_argument(
        "--profile",
        choices=OPERATIONS,
        help="profile this operation of 'subject cold' instead of timing it (no table)",
    )
    parser.add_argument(
        "--audit",
        choices=["jsonl", "minimal", "noop"],
        default="jsonl",
        help="jsonl: custdata.audit.AuditTrail into a JSON-lines file (default); "
        "minimal: one HMAC-chained line per decision (a lower bound, a diagnostic); "
        "noop: decisions dropped (the key and SQLAlchemy layers alone)",
    )
    parser.add_argument("--scale", action="store_true", help="10k/100k/1M subjects")
    parser.add_argument(
        "--sizes", default="10000,100000,1000000", help="sizes for --scale"
    )
    parser.add_argument(
        "--in-memory",
        action="store_true",
        help="--scale with an in-memory key store (the caches alone, no database)",
    )
    args = parser.parse_args()
    if args.gc_off:
        GC_ON[0] = False
    CLOCK[0] = args.clock
    if args.scale:
        with tempfile.TemporaryDirectory() as tmp:
            scale(
                [int(s) for s in args.sizes.split(",")],
                1000,
                Path(tmp),
                in_memory=args.in_memory,
            )
        return

    policy = custdata.Policy.from_toml(ROOT / "examples" / "custdata.toml")
    keyring = Keyring.generate()
    audit_dir = tempfile.TemporaryDirectory()
    audit = recorder(args.audit, keyring, Path(audit_dir.name))

    def custodian_for(store: Any) -> custdata.Custodian:
        return custdata.Custodian(
            policy=policy, keyring=keyring, audit=audit, subject_keys=store
        )

    only = set(args.only or ["sqlite-file", "postgresql"])
    targets: list[tuple[str, str]] = []
    tmp = tempfile.TemporaryDirectory()
    if "sqlite-file" in only:
        targets.append(("SQLite file", f"sqlite:///{Path(tmp.name) / 'bench.db'}"))
    pg = os.environ.get("CUSTDATA_TEST_POSTGRES_URL")
    if "postgresql" in only and pg:
        targets.append(("PostgreSQL", pg))
    try:
        for label, url in targets:
            bench = Bench(url, custodian_for, args.rows)
            try:
                bench.run(args.reps, args.lookups, args.profile)
                if args.profile is None:
                    bench.report(label, args.reps)
            finally:
                bench.close()
    finally:
        if not isinstance(audit, _NoopRecorder):
            audit.close()
        audit_dir.cleanup()
        tmp.cleanup()


if __name__ == "__main__":
    main()
