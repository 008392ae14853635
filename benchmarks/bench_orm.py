"""ORM benchmark: 4 encrypted short string columns vs plain columns vs sqlalchemy-utils.

One process, interleaved repetitions, medians; prints per-row microseconds and the
ratio to plain columns for each operation and database.

Usage::

    python benchmarks/bench_orm.py                  # SQLite file + memory, N=20000
    python benchmarks/bench_orm.py --rows 2000      # quicker
    CUSTDATA_TEST_POSTGRES_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test \\
        python benchmarks/bench_orm.py              # adds PostgreSQL

Variants (same table shape: UUID key + 4 string columns):

- ``plain``: ``String`` columns.
- ``custdata``: ``customer_data(...)`` columns bound to a ``subject_key()``; writes and
  reads run inside ``acting_as`` + ``purpose``, i.e. purpose checks and audit on. The
  decisions go to the recorder chosen with ``--audit``: the real ``AuditTrail`` (HMAC
  chain) into a JSON-lines file (``jsonl``, the default) or a memory sink (``trail``),
  a list (``list``) or nowhere (``noop``, which isolates the SQLAlchemy layer).
- ``utils``: sqlalchemy-utils ``StringEncryptedType(String, key, AesGcmEngine)``.

The ratios are against ``plain`` run in the same process, with custdata's
statement hooks installed (as in an application that uses custdata). The
``plain µs, no hooks`` column is the same plain run with custdata's hooks
removed: what the hooks cost every other statement of the application.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import statistics
import sys
import tempfile
import time
import uuid

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import String, create_engine, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column


ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

import custdata  # noqa: E402

from custdata.audit import AuditTrail, JsonLinesSink, MemorySink  # noqa: E402
from custdata.crypto import Keyring  # noqa: E402
from custdata.sqlalchemy import customer_data, subject_key  # noqa: E402


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

    class Cust(Base):
        __tablename__ = f"bench_custdata_{tag}"
        id: Mapped[uuid.UUID] = subject_key()
        name: Mapped[str] = customer_data("name", purposes=["support"])
        email: Mapped[str] = customer_data("contact.email", purposes=["support"])
        phone: Mapped[str] = customer_data("contact.phone", purposes=["support"])
        city: Mapped[str] = customer_data("contact.address", purposes=["support"])

    key = "benchmark-passphrase"

    class Utils(Base):
        __tablename__ = f"bench_utils_{tag}"
        id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
        name: Mapped[str] = mapped_column(
            StringEncryptedType(String, key, AesGcmEngine)
        )
        email: Mapped[str] = mapped_column(
            StringEncryptedType(String, key, AesGcmEngine)
        )
        phone: Mapped[str] = mapped_column(
            StringEncryptedType(String, key, AesGcmEngine)
        )
        city: Mapped[str] = mapped_column(
            StringEncryptedType(String, key, AesGcmEngine)
        )

    return {"Base": Base, "plain": Plain, "custdata": Cust, "utils": Utils}


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


def timed(fn: Callable[[], Any]) -> float:
    gc.collect()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run_db(
    label: str,
    url: str,
    *,
    n: int,
    reps: int,
    lookups: int,
    custodian: custdata.Custodian,
) -> None:
    tag = uuid.uuid4().hex[:6]
    models = build_models(tag)
    engine = create_engine(url, hide_parameters=True)
    models["Base"].metadata.create_all(engine)
    data = rows(n)
    ids = [r["id"] for r in data]
    variants = ["plain", "custdata", "utils", "bare"]
    results: dict[tuple[str, str], list[float]] = {}
    try:
        for rep in range(reps):
            order = variants[rep % 4 :] + variants[: rep % 4]
            for variant in order:
                model = models["plain" if variant == "bare" else variant]

                with (
                    custodian.activate(),
                    custdata.acting_as("bench", role="support_agent"),
                    custdata.purpose("support"),
                    Session(engine) as s,
                ):
                    s.query(model).delete()
                    s.commit()
                objs = [model(**r) for r in data]

                def insert(objs: list[Any] = objs) -> None:
                    with Session(engine) as s:
                        s.add_all(objs)
                        s.commit()

                def select_all(model: Any = model) -> None:
                    with Session(engine) as s:
                        got = s.scalars(select(model)).all()
                        if len(got) != n:
                            raise RuntimeError("lost rows")

                lookup_ids = ids[:: max(1, n // lookups)][:lookups]

                def get(
                    model: Any = model, lookup_ids: list[uuid.UUID] = lookup_ids
                ) -> None:
                    with Session(engine) as s:
                        for i in lookup_ids:
                            obj = s.get(model, i)
                            if obj is None:
                                raise RuntimeError("lost row")
                            s.expunge_all()

                with (
                    custodian.activate(),
                    custdata.acting_as("bench", role="support_agent"),
                    custdata.purpose("support"),
                    _hooks_removed(variant == "bare"),
                ):
                    results.setdefault((variant, "ORM insert"), []).append(
                        timed(insert) / n
                    )
                    results.setdefault((variant, "ORM select-all"), []).append(
                        timed(select_all) / n
                    )
                    results.setdefault((variant, "ORM session.get"), []).append(
                        timed(get) / len(lookup_ids)
                    )
    finally:
        models["Base"].metadata.drop_all(engine)
        engine.dispose()

    print(f"\n### {label} (N={n}, reps={reps}, lookups={lookups})\n")
    print(
        "| operation | plain µs | custdata µs (x plain) | sqlalchemy-utils µs (x plain) | budget | plain µs, no hooks |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    budgets = {
        "ORM insert": "≤1.15x" if label.startswith("PostgreSQL") else "≤1.25x",
        "ORM select-all": "≤1.5x",
        "ORM session.get": "≤1.15x",
    }
    for op in ("ORM insert", "ORM select-all", "ORM session.get"):
        plain = results[("plain", op)]
        cells = []
        for variant in ("custdata", "utils"):
            vals = results[(variant, op)]
            ratio = statistics.median(v / p for v, p in zip(vals, plain, strict=True))
            cells.append(f"{statistics.median(vals) * 1e6:.2f} ({ratio:.2f}x)")
        bare = statistics.median(results[("bare", op)]) * 1e6
        print(
            f"| {op} | {statistics.median(plain) * 1e6:.2f} | {cells[0]} | {cells[1]} | {budgets[op]} | {bare:.2f} |"
        )


@contextlib.contextmanager
def _hooks_removed(remove: bool) -> Iterator[None]:
    """Run without custdata's statement hooks (for the plain baseline without them)."""
    if not remove:
        yield
        return
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    from custdata.sqlalchemy import _runtime

    # The hooks are private on purpose: an application must not run without them.
    hooks = [
        (Engine, "before_execute", _runtime._before_execute, {"retval": True}),  # noqa: SLF001
        (Engine, "before_cursor_execute", _runtime._before_cursor_execute, {}),  # noqa: SLF001
        (Session, "do_orm_execute", _runtime._do_orm_execute, {}),  # noqa: SLF001
    ]
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


class _ListRecorder:
    """Keeps decisions in a list: the cheapest recorder that keeps them."""

    def __init__(self) -> None:
        self.decisions: list[Any] = []

    def record_decision(self, decision: Any) -> None:
        self.decisions.append(decision)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--lookups", type=int, default=1000)
    parser.add_argument(
        "--no-memory", action="store_true", help="skip SQLite in memory"
    )
    parser.add_argument(
        "--audit",
        choices=["jsonl", "trail", "list", "noop"],
        default="jsonl",
        help="jsonl: custdata.audit.AuditTrail into a JSON-lines file (default); "
        "trail: the same into a memory sink; list: decisions appended to a list; "
        "noop: decisions dropped (isolates the SQLAlchemy layer)",
    )
    parser.add_argument(
        "--only",
        choices=["sqlite-file", "sqlite-memory", "postgresql"],
        action="append",
        help="run only these databases (repeatable)",
    )
    args = parser.parse_args()

    policy = custdata.Policy.from_toml(ROOT / "examples" / "custdata.toml")
    keyring = Keyring.generate()
    audit_dir = tempfile.TemporaryDirectory()
    audit: Any
    if args.audit == "jsonl":
        audit = AuditTrail(
            keys=keyring,
            sinks=[JsonLinesSink(Path(audit_dir.name) / "audit.jsonl")],
            checkpoint_interval=None,
        )
    elif args.audit == "trail":
        audit = AuditTrail(keys=keyring, sinks=[MemorySink()], checkpoint_interval=None)
    elif args.audit == "list":
        audit = _ListRecorder()
    else:
        audit = _NoopRecorder()
    custodian = custdata.Custodian(policy=policy, keyring=keyring, audit=audit)
    print(f"audit recorder: {type(audit).__name__}")

    import sqlalchemy
    import sqlalchemy_utils

    print(
        f"python {sys.version.split()[0]}, SQLAlchemy {sqlalchemy.__version__}, sqlalchemy-utils {sqlalchemy_utils.__version__}"
    )
    opts = {
        "n": args.rows,
        "reps": args.reps,
        "lookups": args.lookups,
        "custodian": custodian,
    }
    only = set(args.only or ["sqlite-file", "sqlite-memory", "postgresql"])
    if args.no_memory:
        only.discard("sqlite-memory")
    try:
        if "sqlite-file" in only:
            with tempfile.TemporaryDirectory() as tmp:
                run_db("SQLite file", f"sqlite:///{Path(tmp) / 'bench.db'}", **opts)  # type: ignore[arg-type]
        if "sqlite-memory" in only:
            run_db("SQLite memory", "sqlite://", **opts)  # type: ignore[arg-type]
        pg = os.environ.get("CUSTDATA_TEST_POSTGRES_URL")
        if "postgresql" not in only:
            pass
        elif pg:
            run_db("PostgreSQL", pg, **opts)  # type: ignore[arg-type]
        else:
            print("\n(set CUSTDATA_TEST_POSTGRES_URL to include PostgreSQL)")
    finally:
        if isinstance(audit, AuditTrail):
            audit.close()
        audit_dir.cleanup()


if __name__ == "__main__":
    main()
