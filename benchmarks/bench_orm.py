"""ORM and Core benchmark: 4 encrypted short strings, as ratios to the hand-written floor.

One process, interleaved repetitions, medians of paired ratios (DESIGN.md §6):
noise on a shared machine cancels out of a ratio measured side by side.

Usage::

    python benchmarks/bench_orm.py                  # SQLite file, N=20000, gc on and off
    python benchmarks/bench_orm.py --rows 2000      # quicker
    python benchmarks/bench_orm.py --growth         # select-all ratio at 10k and 100k rows
    python benchmarks/bench_orm.py --profile        # custdata's time by package
    python benchmarks/bench_orm.py --count --only none  # Python calls and collections per row
    python benchmarks/bench_orm.py --clock cpu      # CPU time: a busy machine disturbs it less
    python benchmarks/bench_orm.py --op "ORM session.get" --op "Core get by id"  # these only
    CUSTDATA_TEST_POSTGRES_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test \\
        python benchmarks/bench_orm.py --only postgresql

Variants (same table shape: a UUID key and 4 string columns):

- ``plain``: ``String`` columns, run **without** custdata's statement hooks (as an
  application without custdata would).
- ``hooked``: the same plain table with custdata's hooks installed: what custdata
  costs the statements that touch no customer data (budget ≤ 1.02× plain).
- ``floor``: the hand-written AES-GCM ``TypeDecorator`` of ``benchmarks/_floor.py``
  (random nonce, ``table.column`` as associated data, processors as closures, no
  purpose, no audit), without custdata's hooks. Every budget is a ratio to it.
- ``custdata``: ``customer_data(...)`` columns bound to a ``subject_key()``, run
  inside ``acting_as`` + ``purpose`` (purpose checks on) with the recorder chosen
  by ``--audit``: the real ``AuditTrail`` into a JSON-lines file (``jsonl``, the
  default and the budget), a memory sink (``trail``), one HMAC-chained line per
  decision with one ``write`` (``minimal``: the least a crash-safe,
  tamper-evident record can cost from Python, a lower bound), a list or nowhere
  (``noop``); all but ``jsonl`` are diagnostics.
- ``utils``: sqlalchemy-utils ``StringEncryptedType(String, key, AesGcmEngine)``,
  without custdata's hooks.

Operations: ORM insert; ORM select-all and ``session.get``, each reading every
field of every object (values are sealed until read, so a load alone would
measure nothing); Core select-all and Core get by id, each reading every value.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import gc
import hmac
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

from sqlalchemy import String, create_engine, delete, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column


ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _floor import floor_string  # noqa: E402

import custdata  # noqa: E402

from custdata.audit import AuditTrail, JsonLinesSink, MemorySink  # noqa: E402
from custdata.crypto import Keyring  # noqa: E402
from custdata.sqlalchemy import customer_data, subject_key  # noqa: E402


FIELDS = ("name", "email", "phone", "city")
OPERATIONS = (
    "ORM insert",
    "ORM select-all",
    "ORM session.get",
    "Core select-all",
    "Core get by id",
)
#: Budgets ÷ floor (DESIGN.md §6).
BUDGETS = {
    "ORM insert": 1.0,
    "ORM select-all": 1.05,
    "ORM session.get": 1.10,
    "Core select-all": 1.15,
    "Core get by id": 1.15,
}


def build_models(tag: str) -> dict[str, Any]:
    from sqlalchemy_utils import StringEncryptedType
    from sqlalchemy_utils.types.encrypted.encrypted_type import AesGcmEngine

    class Base(DeclarativeBase):
        pass

    class Plain(Base):
        __tablename__ = f"bench_plain_{tag}"
        id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
        name: Mapped[str] = mapped_column(String(100))
        email: Mapped[str] = mapped_column(String(100))
        phone: Mapped[str] = mapped_column(String(100))
        city: Mapped[str] = mapped_column(String(100))

    floor_table = f"bench_floor_{tag}"

    class Floor(Base):
        __tablename__ = floor_table
        id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
        name: Mapped[str] = mapped_column(floor_string(floor_table, "name"))
        email: Mapped[str] = mapped_column(floor_string(floor_table, "email"))
        phone: Mapped[str] = mapped_column(floor_string(floor_table, "phone"))
        city: Mapped[str] = mapped_column(floor_string(floor_table, "city"))

    class Cust(Base):
        __tablename__ = f"bench_custdata_{tag}"
        id: Mapped[uuid.UUID] = subject_key()
        name: Mapped[str] = customer_data("name", purposes=["support"])
        email: Mapped[str] = customer_data("contact.email", purposes=["support"])
        phone: Mapped[str] = customer_data("contact.phone", purposes=["support"])
        city: Mapped[str] = customer_data("contact.address", purposes=["support"])

    key = "benchmark-passphrase"

    def utils() -> Any:
        return mapped_column(StringEncryptedType(String, key, AesGcmEngine))

    class Utils(Base):
        __tablename__ = f"bench_utils_{tag}"
        id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
        name: Mapped[str] = utils()
        email: Mapped[str] = utils()
        phone: Mapped[str] = utils()
        city: Mapped[str] = utils()

    return {
        "Base": Base,
        "plain": Plain,
        "hooked": Plain,
        "floor": Floor,
        "custdata": Cust,
        "utils": Utils,
    }


VARIANTS = ("plain", "hooked", "floor", "custdata", "utils")


def rows(n: int) -> list[dict[str, Any]]:
    return [
        {
            "id": uuid.uuid4(),
            "name": f"Customer Name {i:06d}",
            "email": f"customer{i:06d}@example.jp",
            "phone": f"090-{i % 10000:04d}-{i % 9999:04d}",
            "city": f"Tokyo Shibuya {i % 97}",
        }
        for i in range(n)
    ]


#: The clock timings are read from: wall time (the budgets), or this process's
#: CPU time (``--clock cpu``: a diagnostic that the other processes of a busy
#: machine disturb less; it leaves out the time a database server spends).
CLOCK: list[Callable[[], float]] = [time.perf_counter]


def timed(fn: Callable[[], Any], *, gc_on: bool) -> float:
    gc.collect()
    if not gc_on:
        gc.disable()
    clock = CLOCK[0]
    try:
        start = clock()
        fn()
        return clock() - start
    finally:
        gc.enable()


def _read_objects(objs: Any) -> None:
    for obj in objs:
        obj.name, obj.email, obj.phone, obj.city  # noqa: B018 - the reads are the point


def operations(
    engine: Any, model: Any, data: list[dict[str, Any]], lookup_ids: list[uuid.UUID]
) -> dict[str, tuple[Callable[[], Any], int]]:
    """The timed operations of one variant, with the count each is divided by."""
    table = model.__table__
    n = len(data)

    def insert() -> None:
        with Session(engine) as s:
            s.add_all([model(**r) for r in data])
            s.commit()

    def select_all() -> None:
        with Session(engine) as s:
            got = s.scalars(select(model)).all()
            _read_objects(got)
            if len(got) != n:
                raise RuntimeError("lost rows")

    def get() -> None:
        with Session(engine) as s:
            for i in lookup_ids:
                obj = s.get(model, i)
                if obj is None:
                    raise RuntimeError("lost row")
                _read_objects((obj,))
                s.expunge_all()

    def core_select_all() -> None:
        with engine.connect() as conn:
            got = conn.execute(select(table)).all()
            for row in got:
                row[1], row[2], row[3], row[4]
            if len(got) != n:
                raise RuntimeError("lost rows")

    def core_get() -> None:
        with engine.connect() as conn:
            for i in lookup_ids:
                row = conn.execute(select(table).where(table.c.id == i)).one()
                row[1], row[2], row[3], row[4]

    return {
        "ORM insert": (insert, n),
        "ORM select-all": (select_all, n),
        "ORM session.get": (get, len(lookup_ids)),
        "Core select-all": (core_select_all, n),
        "Core get by id": (core_get, len(lookup_ids)),
    }


@contextlib.contextmanager
def _context(variant: str, custodian: custdata.Custodian) -> Iterator[None]:
    """custdata's context for its own variant; none of custdata's hooks for the others."""
    with custodian.activate():
        if variant == "custdata":
            with (
                custdata.acting_as("bench", role="support_agent"),
                custdata.purpose("support"),
            ):
                yield
        elif variant == "hooked":
            yield
        else:
            with _hooks_removed():
                yield


def run_db(
    label: str,
    url: str,
    *,
    n: int,
    reps: int,
    lookups: int,
    custodian: custdata.Custodian,
    gc_modes: tuple[bool, ...],
    ops: tuple[str, ...] = OPERATIONS,
    quiet: bool = False,
) -> dict[tuple[str, str, bool], list[float]]:
    tag = uuid.uuid4().hex[:6]
    models = build_models(tag)
    engine = create_engine(url, hide_parameters=True)
    models["Base"].metadata.create_all(engine)
    data = rows(n)
    ids = [r["id"] for r in data]
    lookup_ids = ids[:: max(1, n // lookups)][:lookups]
    results: dict[tuple[str, str, bool], list[float]] = {}
    try:
        for rep in range(reps):
            shift = rep % len(VARIANTS)
            order = VARIANTS[shift:] + VARIANTS[:shift]
            for gc_on in gc_modes:
                for variant in order:
                    model = models[variant]
                    with _context("custdata", custodian), engine.begin() as conn:
                        conn.execute(delete(model.__table__))
                    todo = operations(engine, model, data, lookup_ids)
                    with _context(variant, custodian):
                        if "ORM insert" not in ops:
                            todo["ORM insert"][0]()  # the rows the reads need
                        for op in ops:
                            fn, count = todo[op]
                            results.setdefault((variant, op, gc_on), []).append(
                                timed(fn, gc_on=gc_on) / count
                            )
    finally:
        models["Base"].metadata.drop_all(engine)
        engine.dispose()
    if not quiet:
        report(label, n, reps, lookups, results, gc_modes, ops)
    return results


def ratio(
    results: dict[tuple[str, str, bool], list[float]],
    variant: str,
    base: str,
    op: str,
    *,
    gc_on: bool,
) -> float:
    vals = results[(variant, op, gc_on)]
    bases = results[(base, op, gc_on)]
    return statistics.median(v / b for v, b in zip(vals, bases, strict=True))


def report(  # noqa: PLR0917 - a printing helper
    label: str,
    n: int,
    reps: int,
    lookups: int,
    results: dict[tuple[str, str, bool], list[float]],
    gc_modes: tuple[bool, ...],
    ops: tuple[str, ...],
) -> None:
    for gc_on in gc_modes:
        print(
            f"\n### {label}, gc {'on' if gc_on else 'off'} "
            f"(N={n}, reps={reps}, lookups={lookups})\n"
        )
        print(
            "| operation | plain µs | floor µs (÷ plain) | custdata µs (÷ floor) "
            "| budget | sqlalchemy-utils µs (÷ floor) | plain with hooks (÷ plain) |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|")
        for op in ops:

            def us(variant: str, op: str = op, gc_on: bool = gc_on) -> float:
                return statistics.median(results[(variant, op, gc_on)]) * 1e6

            print(
                f"| {op} | {us('plain'):.2f} "
                f"| {us('floor'):.2f} ({ratio(results, 'floor', 'plain', op, gc_on=gc_on):.2f}×) "
                f"| {us('custdata'):.2f} ({ratio(results, 'custdata', 'floor', op, gc_on=gc_on):.2f}×) "
                f"| ≤ {BUDGETS[op]:.2f}× "
                f"| {us('utils'):.2f} ({ratio(results, 'utils', 'floor', op, gc_on=gc_on):.2f}×) "
                f"| {ratio(results, 'hooked', 'plain', op, gc_on=gc_on):.3f}× |"
            )


def growth(url: str, custodian: custdata.Custodian, reps: int) -> None:
    """The ORM select-all ratio ÷ floor at 10k and at 100k rows (budget: +0.05 at most)."""
    print("\n### growth: ORM select-all ÷ floor, gc on\n")
    print("| N | custdata ÷ floor | floor ÷ plain |")
    print("|---:|---:|---:|")
    for n in (10_000, 100_000):
        results = run_db(
            "growth",
            url,
            n=n,
            reps=reps,
            lookups=1,
            custodian=custodian,
            gc_modes=(True,),
            ops=("ORM select-all",),
            quiet=True,
        )
        print(
            f"| {n} | {ratio(results, 'custdata', 'floor', 'ORM select-all', gc_on=True):.3f}× "
            f"| {ratio(results, 'floor', 'plain', 'ORM select-all', gc_on=True):.3f}× |"
        )


@contextlib.contextmanager
def _fresh_tables(
    url: str, n: int, lookups: int
) -> Iterator[tuple[dict[str, Any], Any, list[dict[str, Any]], list[uuid.UUID]]]:
    """Fresh models and tables, N rows and the ids to look up; dropped afterwards."""
    models = build_models(uuid.uuid4().hex[:6])
    engine = create_engine(url, hide_parameters=True)
    models["Base"].metadata.create_all(engine)
    data = rows(n)
    ids = [r["id"] for r in data][:: max(1, n // lookups)][:lookups]
    try:
        yield models, engine, data, ids
    finally:
        models["Base"].metadata.drop_all(engine)
        engine.dispose()


def profile(url: str, custodian: custdata.Custodian, n: int, lookups: int) -> None:
    """custdata's ORM select-all and get, cumulative time grouped by package."""
    with _fresh_tables(url, n, lookups) as (models, engine, data, ids):
        todo = operations(engine, models["custdata"], data, ids)
        with _context("custdata", custodian):
            todo["ORM insert"][0]()
            for op in ("ORM select-all", "ORM session.get", "Core select-all"):
                prof = cProfile.Profile()
                prof.enable()
                todo[op][0]()
                prof.disable()
                print(f"\n### profile: {op} (custdata, self time by package)\n")
                by_package(prof)


def count(url: str, custodian: custdata.Custodian, n: int, lookups: int) -> None:
    """Counted, not timed: Python calls (``cProfile``) and garbage collections per row.

    Exact for a given N whatever the machine's load: per row (per lookup for
    the two gets), every variant, each operation run twice before it is
    counted (compiled statements cached, column keys derived).
    """
    ops = [op for op in OPERATIONS if op != "ORM insert"]
    calls: dict[tuple[str, str], float] = {}
    collections: dict[tuple[str, str], list[int]] = {}
    with _fresh_tables(url, n, lookups) as (models, engine, data, ids):
        for variant in VARIANTS:
            model = models[variant]
            with _context("custdata", custodian), engine.begin() as conn:
                conn.execute(delete(model.__table__))
            todo = operations(engine, model, data, ids)
            with _context(variant, custodian):
                todo["ORM insert"][0]()
                for op in ops:
                    fn, per = todo[op]
                    fn()
                    fn()
                    prof = cProfile.Profile()
                    prof.enable()
                    fn()
                    prof.disable()
                    stats = pstats.Stats(prof).stats  # type: ignore[attr-defined]
                    calls[variant, op] = sum(e[1] for e in stats.values()) / per
                    gc.collect()
                    before = [g["collections"] for g in gc.get_stats()]
                    fn()
                    after = [g["collections"] for g in gc.get_stats()]
                    collections[variant, op] = [
                        a - b for a, b in zip(after, before, strict=True)
                    ]
    print(
        f"\n### counted: Python calls per row or lookup (N={n}, lookups={len(ids)})\n"
    )
    print("| operation | " + " | ".join(VARIANTS) + " |")
    print("|---|" + "---:|" * len(VARIANTS))
    for op in ops:
        cells = " | ".join(f"{calls[v, op]:.1f}" for v in VARIANTS)
        print(f"| {op} | {cells} |")
    print("\ngarbage collections (generation 0 / 1 / 2) during one run:\n")
    print("| operation | floor | custdata |")
    print("|---|---:|---:|")
    for op in ops:
        print(
            f"| {op} | {' / '.join(map(str, collections['floor', op]))} "
            f"| {' / '.join(map(str, collections['custdata', op]))} |"
        )


def by_package(prof: cProfile.Profile) -> None:
    stats = pstats.Stats(prof)
    totals: dict[str, float] = defaultdict(float)
    for (path, _line, _name), entry in stats.stats.items():  # type: ignore[attr-defined]
        totals[_package(path)] += entry[2]
    whole = sum(totals.values()) or 1.0
    print("| package | self time ms | share |")
    print("|---|---:|---:|")
    for name, t in sorted(totals.items(), key=lambda kv: -kv[1]):
        print(f"| {name} | {t * 1e3:.1f} | {t / whole:.0%} |")


def _package(path: str) -> str:
    for marker, name in (
        ("custdata/sqlalchemy", "custdata.sqlalchemy"),
        ("custdata/audit", "custdata.audit"),
        ("custdata/crypto", "custdata.crypto"),
        ("/custdata/", "custdata (core)"),
        ("sqlalchemy/orm", "sqlalchemy.orm"),
        ("sqlalchemy", "sqlalchemy (core)"),
        ("structlog", "structlog"),
        ("cryptography", "cryptography"),
    ):
        if marker in path:
            return name
    if path == "~":
        return "builtins (C)"
    return "other"


@contextlib.contextmanager
def _hooks_removed() -> Iterator[None]:
    """Run without custdata's statement hooks (as an application without custdata)."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    from custdata.sqlalchemy import _runtime

    # The hooks are private on purpose: an application must not run without them.
    hooks = [
        (Engine, "before_execute", _runtime._before_execute, {"retval": True}),  # noqa: SLF001
        (
            Engine,
            "before_cursor_execute",
            _runtime._before_cursor_execute,  # noqa: SLF001
            {"retval": True},
        ),
        *(
            (Session, name, getattr(_runtime, f"_{name}"), {})
            for name in (
                "before_flush",
                "after_flush",
                "before_commit",
                "after_commit",
                "after_soft_rollback",
            )
            if hasattr(_runtime, f"_{name}")
        ),
    ]
    hooks = [hook for hook in hooks if event.contains(hook[0], hook[1], hook[2])]
    for target, name, fn, _ in hooks:
        event.remove(target, name, fn)
    try:
        yield
    finally:
        for target, name, fn, kw in hooks:
            event.listen(target, name, fn, **kw)


class _NoopRecorder:
    """Drops every decision: the SQLAlchemy layer's cost alone."""

    def record_decision(self, decision: Any) -> None:
        pass


class _MinimalRecorder:
    """The least a tamper-evident, crash-safe record of a decision can be, in Python.

    One line per decision (action, actor, purpose, the first subject in clear,
    the count), chained by one HMAC-SHA256 over the previous MAC and the line,
    written with one ``os.write`` on an ``O_APPEND`` file before the decision
    returns. No pseudonym, no event id or time, no evolving key, no schema:
    a lower bound for the ``--audit`` recorders, not a trail (a diagnostic).
    """

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._key = os.urandom(32)
        self._mac = bytes(32)

    def record_decision(self, decision: Any) -> None:
        d = decision
        subject = d.subjects[0] if d.subjects else ""
        line = b'{"a":"%s","actor":"%s","purpose":"%s","subject":"%s","n":%d,' % (
            d.action.value.encode(),
            str(d.actor).encode(),
            str(d.purpose).encode(),
            subject.encode(),
            d.count,
        )
        self._mac = hmac.digest(self._key, self._mac + line, "sha256")
        os.write(self._fd, b'%s"mac":"%s"}\n' % (line, self._mac.hex().encode()))

    def close(self) -> None:
        os.close(self._fd)


class _ListRecorder:
    """Keeps decisions in a list: the cheapest recorder that keeps them."""

    def __init__(self) -> None:
        self.decisions: list[Any] = []

    def record_decision(self, decision: Any) -> None:
        self.decisions.append(decision)


def recorder(kind: str, keyring: Keyring, directory: Path) -> Any:
    """The decisions' recorder a ``--audit`` choice names (files in *directory*)."""
    if kind == "jsonl":
        return AuditTrail(
            keys=keyring,
            sinks=[JsonLinesSink(directory / "audit.jsonl")],
            checkpoint_interval=None,
        )
    if kind == "trail":
        return AuditTrail(keys=keyring, sinks=[MemorySink()], checkpoint_interval=None)
    if kind == "list":
        return _ListRecorder()
    if kind == "minimal":
        return _MinimalRecorder(directory / "minimal.log")
    return _NoopRecorder()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--lookups", type=int, default=1000)
    parser.add_argument("--gc", choices=["on", "off", "both"], default="both")
    parser.add_argument(
        "--growth", action="store_true", help="also the select-all ratio at 10k/100k"
    )
    parser.add_argument(
        "--profile", action="store_true", help="also custdata's time by package"
    )
    parser.add_argument(
        "--count",
        action="store_true",
        help="also Python calls and garbage collections per row (counted, not timed)",
    )
    parser.add_argument(
        "--audit",
        choices=["jsonl", "trail", "minimal", "list", "noop"],
        default="jsonl",
        help="jsonl: custdata.audit.AuditTrail into a JSON-lines file (default); "
        "trail: the same into a memory sink; minimal: one HMAC-chained line per "
        "decision, one write (a lower bound, not a trail); list: decisions "
        "appended to a list; "
        "noop: decisions dropped (isolates the SQLAlchemy layer)",
    )
    parser.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="wall: elapsed time (the budgets; default); cpu: this process's CPU "
        "time, less disturbed by other processes (leaves out the database server's)",
    )
    parser.add_argument(
        "--op",
        choices=OPERATIONS,
        action="append",
        help="time only these operations (repeatable; default: all)",
    )
    parser.add_argument(
        "--only",
        choices=["sqlite-file", "sqlite-memory", "postgresql", "none"],
        action="append",
        help="run only these databases (repeatable; default: sqlite-file, postgresql; "
        "none: only what --growth or --profile ask for)",
    )
    args = parser.parse_args()
    if args.clock == "cpu":
        CLOCK[0] = time.process_time

    policy = custdata.Policy.from_toml(ROOT / "examples" / "custdata.toml")
    keyring = Keyring.generate()
    audit_dir = tempfile.TemporaryDirectory()
    audit = recorder(args.audit, keyring, Path(audit_dir.name))
    custodian = custdata.Custodian(policy=policy, keyring=keyring, audit=audit)

    import sqlalchemy
    import sqlalchemy_utils

    print(
        f"clock: {args.clock}; "
        f"audit recorder: {type(audit).__name__}; python {sys.version.split()[0]}, "
        f"SQLAlchemy {sqlalchemy.__version__}, sqlalchemy-utils {sqlalchemy_utils.__version__}"
    )
    gc_modes = {"on": (True,), "off": (False,), "both": (True, False)}[args.gc]
    opts: dict[str, Any] = {
        "n": args.rows,
        "reps": args.reps,
        "lookups": args.lookups,
        "custodian": custodian,
        "gc_modes": gc_modes,
        "ops": tuple(op for op in OPERATIONS if op in (args.op or OPERATIONS)),
    }
    only = set(args.only or ["sqlite-file", "postgresql"])
    try:
        with tempfile.TemporaryDirectory() as tmp:
            file_url = f"sqlite:///{Path(tmp) / 'bench.db'}"
            if "sqlite-file" in only:
                run_db("SQLite file", file_url, **opts)
            if "sqlite-memory" in only:
                run_db("SQLite memory", "sqlite://", **opts)
            pg = os.environ.get("CUSTDATA_TEST_POSTGRES_URL")
            if "postgresql" in only:
                if pg:
                    run_db("PostgreSQL", pg, **opts)
                else:
                    print("\n(set CUSTDATA_TEST_POSTGRES_URL to include PostgreSQL)")
            if args.growth:
                growth(file_url, custodian, args.reps)
            if args.profile:
                profile(file_url, custodian, args.rows, args.lookups)
            if args.count:
                count(file_url, custodian, args.rows, args.lookups)
    finally:
        if isinstance(audit, (AuditTrail, _MinimalRecorder)):
            audit.close()
        audit_dir.cleanup()


if __name__ == "__main__":
    main()
