"""The key and job commands through the installed ``custdata`` command.

Every test runs the command as a user would -- a fresh process of
``.venv/bin/custdata`` -- on the project's own example models
(``examples/shop``), on SQLite, PostgreSQL and MariaDB: rotation of data and
index keys together, re-encryption with its audit trail, retirement counted
against the database, locked rows, plaintext migration by codec, the shared
key-encryption-key options and bad keyring files.
"""

from __future__ import annotations

import base64
import contextlib
import decimal
import io
import json
import re
import sqlite3
import subprocess
import sys

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sqlalchemy import create_engine, insert, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

import custdata

from custdata.audit import JsonLinesSource
from custdata.cli._progress import Progress
from custdata.crypto import Keyring


ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from examples.shop.models import Base, Customer, Order  # noqa: E402


CUSTDATA = Path(sys.executable).parent / "custdata"
MODELS = "examples.shop.models:Base"
CUSTOMER_COLUMNS = ("name", "email", "card")  # the example customer's encrypted columns
KEK_OPTIONS = (
    "--kek-file",
    "--kek-env",
    "--aws-kms-key-id",
    "--aws-region",
    "--aws-endpoint-url",
)


def cli(
    *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the installed command from the project's root, as a user would."""
    return subprocess.run(
        [str(CUSTDATA), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )


def events(path: Path) -> list[dict[str, Any]]:
    """The bodies of the events of a JSON-lines audit file (in either line format)."""
    return [
        json.loads(body)
        for record in JsonLinesSource(path).records()
        if (body := getattr(record, "body", None)) is not None
    ]


class Shop:
    """The example shop's tables in one database, with a keyring file."""

    def __init__(self, url: str, tmp_path: Path) -> None:
        self.url = url
        self.keyring_path = tmp_path / "keyring.json"
        self.audit = tmp_path / "audit.jsonl"
        self.engine: Engine = create_engine(url)
        Base.metadata.drop_all(self.engine)
        Base.metadata.create_all(self.engine)
        self.policy = custdata.Policy.from_toml(ROOT / "examples" / "custdata.toml")

    def custodian(self) -> custdata.Custodian:
        """A custodian with the keyring as saved now."""
        return custdata.Custodian(
            policy=self.policy, keyring=Keyring.load(self.keyring_path)
        )

    @contextlib.contextmanager
    def clerk(self) -> Iterator[Session]:
        """A session of the billing clerk, for billing, under the saved keyring."""
        with (
            self.custodian().activate(),
            Session(self.engine) as session,
            custdata.acting_as("c-1", role="billing_clerk"),
            custdata.purpose("billing"),
        ):
            yield session

    def add(self, n: int) -> None:
        """Add *n* customers with one order each, as the billing clerk."""
        with self.clerk() as session:
            for i in range(n):
                customer = Customer(
                    name=f"name-{i}", email=f"E{i}@example.jp", card="4111111111111111"
                )
                customer.orders.append(
                    Order(total=decimal.Decimal(i) + decimal.Decimal("0.50"))
                )
                session.add(customer)
            session.commit()

    def found(self, n: int) -> list[tuple[int, decimal.Decimal]]:
        """For each e-mail, how many rows a search finds, and the order total."""
        out = []
        with self.clerk() as session:
            for i in range(n):
                rows = session.scalars(
                    select(Customer).where(Customer.email == f"e{i}@example.jp")
                ).all()
                out.append(
                    (
                        len(rows),
                        rows[0].orders[0].total if rows else decimal.Decimal(-1),
                    )
                )
        return out

    def key_ids(self, kind: str, status: str) -> list[int]:
        """The keyring's key ids of one kind and status."""
        keyring = Keyring.load(self.keyring_path)
        return [
            k.key_id
            for k in keyring.keys
            if k.kind.value == kind and k.status.value == status
        ]

    def database(self) -> list[str]:
        """The ``--url``/``--models`` arguments."""
        return ["--url", self.url, "--models", MODELS]

    def close(self) -> None:
        Base.metadata.drop_all(self.engine)
        self.engine.dispose()


@pytest.fixture
def shop(db_url: str, tmp_path: Path) -> Iterator[Shop]:
    """The example shop on each database of the matrix, with a new keyring file."""
    made = cli("keys", "init", str(tmp_path / "keyring.json"))
    assert 0 == made.returncode, made.stderr
    shop = Shop(db_url, tmp_path)
    try:
        yield shop
    finally:
        shop.close()


def _clean(result: subprocess.CompletedProcess[str]) -> None:
    """No traceback, and no carriage return written into a pipe."""
    assert "Traceback" not in result.stderr
    assert "\r" not in result.stderr


class TestRotateReencryptRetire:
    """Data and index keys rotated together: one run, then both old keys retired."""

    def test_one_run_reencrypts_and_reindexes(self, shop: Shop) -> None:
        """After one reencrypt run both old keys retire and every search finds its row."""
        shop.add(20)
        old_data = shop.key_ids("data", "primary")[0]
        old_index = shop.key_ids("index", "primary")[0]
        audit = ["--audit", str(shop.audit)]
        assert 0 == cli("keys", "rotate", str(shop.keyring_path), *audit).returncode
        assert (
            0
            == cli(
                "keys", "rotate", "--index", str(shop.keyring_path), *audit
            ).returncode
        )

        run = cli(
            "reencrypt", "--keyring", str(shop.keyring_path), *shop.database(), *audit
        )
        assert 0 == run.returncode, run.stderr
        _clean(run)
        assert "re-encrypted 80 values, re-indexed 20" in run.stdout
        assert "no audit trail" not in run.stderr
        assert "shop_orders: 20/20 rows" in run.stderr

        for key in (old_data, old_index):
            retired = cli(
                "keys",
                "retire",
                str(shop.keyring_path),
                str(key),
                *shop.database(),
                *audit,
            )
            assert 0 == retired.returncode, retired.stderr
        assert [
            (1, decimal.Decimal(i) + decimal.Decimal("0.50")) for i in range(20)
        ] == shop.found(20)

        verified = cli(
            "audit", "verify", str(shop.audit), "--keyring", str(shop.keyring_path)
        )
        assert 0 == verified.returncode, verified.stdout
        recorded = events(shop.audit)
        assert [("data", str(old_data)), ("index", str(old_index))] == [
            (e["keys"]["kind"], e["keys"].get("old"))
            for e in recorded
            if e["action"] == "key.rotate"
        ]
        assert [str(old_data), str(old_index)] == [
            e["keys"]["retired"] for e in recorded if e["action"] == "key.retire"
        ]
        batches = {
            (e["entity"], e["actor"]["id"], e["count"])
            for e in recorded
            if e["action"] == "record.bulk_update"
        }
        assert {
            ("shop_customers", "custdata.reencrypt", 60),
            ("shop_orders", "custdata.reencrypt", 20),
            ("shop_customers", "custdata.index-usage", 20),
        } == batches

    def test_json_report(self, shop: Shop) -> None:
        """--json prints the report as one JSON object on stdout."""
        shop.add(5)
        assert 0 == cli("keys", "rotate", str(shop.keyring_path)).returncode
        run = cli(
            "reencrypt",
            "--keyring",
            str(shop.keyring_path),
            *shop.database(),
            "--json",
            "--quiet",
        )
        assert 0 == run.returncode, run.stderr
        report = json.loads(run.stdout)
        assert (20, 0, 0, 0, True) == (
            report["reencrypted"],
            report["reindexed"],
            report["remaining"],
            report["failed"],
            report["complete"],
        )

    def test_json_rotate_retire(self, shop: Shop) -> None:
        """``keys rotate/retire --json``: one JSON object each, refused, retired, again."""
        shop.add(2)
        old = shop.key_ids("data", "primary")[0]
        ring = str(shop.keyring_path)
        rotated = cli("keys", "rotate", ring, "--json")
        assert 0 == rotated.returncode, rotated.stderr
        new = shop.key_ids("data", "primary")[0]
        assert {
            "keyring": ring,
            "kind": "data",
            "previous_key": old,
            "primary_key": new,
            "recorded": False,
        } == json.loads(rotated.stdout)

        retire = ("keys", "retire", ring, str(old), *shop.database(), "--json")
        refused = cli(*retire)
        assert 1 == refused.returncode, refused.stderr
        out = json.loads(refused.stdout)
        assert ("refused", old, False) == (out["outcome"], out["key_id"], out["forced"])
        assert {
            *(
                f"shop_customers.{c}: 2 stored values under key {old}"
                for c in CUSTOMER_COLUMNS
            ),
            f"shop_orders.total: 2 stored values under key {old}",
        } == set(out["dependents"])

        assert 0 == cli("reencrypt", "--keyring", ring, *shop.database()).returncode
        retired = cli(*retire)
        assert 0 == retired.returncode, retired.stderr
        assert {
            "keyring": ring,
            "key_id": old,
            "outcome": "retired",
            "forced": False,
            "dependents": [],
            "recorded": False,
        } == json.loads(retired.stdout)
        again = cli(*retire)
        assert 0 == again.returncode
        assert "already_retired" == json.loads(again.stdout)["outcome"]

    def test_audit_to_database(self, shop: Shop, tmp_path: Path) -> None:
        """--audit URL records the job's batches in the SQL sink's tables, verifiably."""
        shop.add(3)
        assert 0 == cli("keys", "rotate", str(shop.keyring_path)).returncode
        prefix = f"cli_audit_{tmp_path.name[-8:].replace('-', '_')}"
        run = cli(
            "reencrypt",
            "--keyring",
            str(shop.keyring_path),
            *shop.database(),
            "--audit",
            shop.url,
            "--audit-prefix",
            prefix,
        )
        try:
            assert 0 == run.returncode, run.stderr
            with shop.engine.connect() as conn:
                actions = conn.execute(
                    text(f"SELECT action, entity FROM {prefix}_event ORDER BY id")  # noqa: S608 - a test's own table
                ).all()
            assert ("record.bulk_update", "shop_customers") in actions
            verified = cli(
                "audit",
                "verify",
                shop.url,
                "--keyring",
                str(shop.keyring_path),
                "--prefix",
                prefix,
            )
            assert 0 == verified.returncode, verified.stdout + verified.stderr
        finally:
            with shop.engine.begin() as conn:
                for part in ("subject", "event", "checkpoint"):
                    conn.execute(text(f"DROP TABLE IF EXISTS {prefix}_{part}"))


class TestNoLeaks:
    """Values, keys and ciphertexts never reach the output or the audit trail."""

    def test_canaries(self, shop: Shop) -> None:
        """No customer value, key or envelope in any output of the jobs or their events."""
        shop.add(3)
        old = shop.key_ids("data", "primary")[0]
        audit = ["--audit", str(shop.audit)]
        outputs = [cli("keys", "rotate", str(shop.keyring_path), *audit)]
        secrets = [k["key"] for k in json.loads(shop.keyring_path.read_text())["keys"]]
        outputs += [
            cli("keys", "retire", str(shop.keyring_path), str(old), *shop.database()),
            cli(
                "reencrypt",
                "--keyring",
                str(shop.keyring_path),
                *shop.database(),
                *audit,
            ),
            cli(
                "keys",
                "retire",
                str(shop.keyring_path),
                str(old),
                *shop.database(),
                *audit,
            ),
            cli("keys", "show", str(shop.keyring_path)),
        ]
        seen = "".join(r.stdout + r.stderr for r in outputs) + shop.audit.read_text()
        with shop.engine.connect() as conn:
            envelopes = [
                form
                for v in conn.execute(
                    select(custdata_raw(Customer.__table__).c.email)
                ).scalars()
                for form in (bytes(v).hex(), base64.b64encode(bytes(v)).decode())
            ]
        canaries = [f"name-{i}" for i in range(3)] + [
            f"E{i}@example.jp" for i in range(3)
        ]
        canaries += ["e0@example.jp", "4111111111111111", *secrets, *envelopes]
        assert [] == [c for c in canaries if c in seen]

    def test_audit_url_password_not_shown(self, tmp_path: Path) -> None:
        """An --audit URL that cannot be opened is named without its password."""
        keyring = tmp_path / "keyring.json"
        assert 0 == cli("keys", "init", str(keyring)).returncode
        result = cli(
            "keys",
            "rotate",
            str(keyring),
            "--audit",
            "postgresql+psycopg://app:s3cr3t-canary@127.0.0.1:1/none",
        )
        assert 2 == result.returncode
        _clean(result)
        assert "s3cr3t-canary" not in result.stderr
        assert "cannot open the audit trail" in result.stderr


class TestRetire:
    """keys retire refuses while anything depends on the key; --force is loud and recorded."""

    def test_refuses_data_key_with_values(self, shop: Shop) -> None:
        """Values under the key: exit 1, the keyring unchanged, the columns named."""
        shop.add(5)
        old = shop.key_ids("data", "primary")[0]
        assert 0 == cli("keys", "rotate", str(shop.keyring_path)).returncode
        before = shop.keyring_path.read_text()
        refused = cli(
            "keys", "retire", str(shop.keyring_path), str(old), *shop.database()
        )
        assert 1 == refused.returncode
        _clean(refused)
        assert (
            f"shop_customers.email: 5 stored values under key {old}" in refused.stderr
        )
        assert f"shop_orders.total: 5 stored values under key {old}" in refused.stderr
        assert before == shop.keyring_path.read_text()

    def test_refuses_index_key_with_entries(self, shop: Shop) -> None:
        """Blind-index entries under the index key: exit 1, the keyring unchanged."""
        shop.add(4)
        old = shop.key_ids("index", "primary")[0]
        assert 0 == cli("keys", "rotate", "--index", str(shop.keyring_path)).returncode
        before = shop.keyring_path.read_text()
        refused = cli(
            "keys", "retire", str(shop.keyring_path), str(old), *shop.database()
        )
        assert 1 == refused.returncode
        assert (
            f"shop_customers.email_bidx: 4 blind-index entries under index key {old}"
            in refused.stderr
        )
        assert before == shop.keyring_path.read_text()

    def test_force_is_loud_and_recorded(self, shop: Shop) -> None:
        """--force needs --audit, says what is lost, and records a forced key.retire."""
        shop.add(2)
        old = shop.key_ids("data", "primary")[0]
        assert 0 == cli("keys", "rotate", str(shop.keyring_path)).returncode
        args = [
            "keys",
            "retire",
            str(shop.keyring_path),
            str(old),
            *shop.database(),
            "--force",
        ]
        unrecorded = cli(*args)
        assert (2, True) == (
            unrecorded.returncode,
            "--force needs --audit" in unrecorded.stderr,
        )
        forced = cli(*args, "--audit", str(shop.audit), "--actor", "ops-7")
        assert 0 == forced.returncode, forced.stderr
        assert "FORCED" in forced.stderr
        assert [old] == shop.key_ids("data", "retired")
        (event,) = [e for e in events(shop.audit) if e["action"] == "key.retire"]
        assert (
            {"retired": str(old), "kind": "data", "forced": True, "dependents": 4},
            "ops-7",
        ) == (
            event["keys"],
            event["actor"]["id"],
        )


class TestLockedRows:
    """Rows an application transaction holds are counted, and the command fails."""

    def test_locked_row_exits_non_zero_then_finishes(
        self, shop: Shop, tmp_path: Path
    ) -> None:
        """While a row is locked: exit 1 naming it; after the lock is gone: exit 0."""
        shop.add(6)
        assert 0 == cli("keys", "rotate", str(shop.keyring_path)).returncode
        url = shop.url
        holder: Any
        if url.startswith("sqlite"):
            # SQLite locks the whole file: the application's write transaction
            # keeps every batch out (a short busy timeout keeps the test quick).
            url = f"{url}?timeout=0.2"
            holder = sqlite3.connect(
                url.split("///", 1)[1].split("?")[0], isolation_level=None
            )
            holder.execute("BEGIN IMMEDIATE")
        else:
            holder = shop.engine.connect()
            holder.begin()
            holder.execute(
                select(Customer.__table__.c.id).limit(1).with_for_update()
            ).all()
        args = [
            "reencrypt",
            "--keyring",
            str(shop.keyring_path),
            "--url",
            url,
            "--models",
            MODELS,
            "--retries",
            "1",
            "--retry-wait",
            "0",
        ]
        try:
            blocked = cli(*args)
        finally:
            holder.rollback()
            holder.close()
        assert 1 == blocked.returncode, blocked.stdout + blocked.stderr
        _clean(blocked)
        assert "stayed locked by other transactions" in blocked.stderr
        assert (
            "warning: stored values are decrypted with no audit trail recording it"
            in blocked.stderr
        )
        done = cli(*args)
        assert 0 == done.returncode, done.stderr
        usage = cli("keys", "usage", *shop.database(), "--json")
        keys = {u["key_id"] for u in json.loads(usage.stdout)["usage"]}
        assert set(shop.key_ids("data", "primary")) == keys


class TestPlaintextMigration:
    """--plaintext reads each legacy value as its column's type before encrypting it."""

    def test_decimal_column_stays_decimal(self, shop: Shop) -> None:
        """A legacy '3980.50' in a Decimal column reads back as Decimal; bad text is left."""
        customers, orders = Customer.__table__, Order.__table__
        ids = [custdata.sqlalchemy.uuid7() for _ in range(3)]
        with shop.engine.begin() as conn:
            conn.execute(
                insert(custdata_raw(customers)),
                [
                    {
                        "id": cid,
                        "plan": "basic",
                        "name": f"n{i}".encode(),
                        "email": f"E{i}@example.jp".encode(),
                        "card": b"4111",
                    }
                    for i, cid in enumerate(ids)
                ],
            )
            conn.execute(
                insert(custdata_raw(orders)),
                [
                    {"id": i + 1, "customer_id": cid, "total": f"{i}3980.50".encode()}
                    for i, cid in enumerate(ids)
                ],
            )
        run = cli(
            "reencrypt",
            "--plaintext",
            "--keyring",
            str(shop.keyring_path),
            *shop.database(),
        )
        assert 0 == run.returncode, run.stdout + run.stderr
        assert "shop_orders.total: encrypted 3, plaintext left 0" in run.stdout
        assert [(1, decimal.Decimal(f"{i}3980.50")) for i in range(3)] == shop.found(3)

    def test_unreadable_legacy_value_is_left_and_counted(self, shop: Shop) -> None:
        """Text that is no decimal stays as it was; the command exits 1."""
        cid = custdata.sqlalchemy.uuid7()
        with shop.engine.begin() as conn:
            conn.execute(
                insert(custdata_raw(Customer.__table__)),
                {
                    "id": cid,
                    "plan": "basic",
                    "name": b"n",
                    "email": b"x@example.jp",
                    "card": None,
                },
            )
            conn.execute(
                insert(custdata_raw(Order.__table__)),
                {"id": 1, "customer_id": cid, "total": b"about 40 yen"},
            )
        run = cli(
            "reencrypt",
            "--plaintext",
            "--keyring",
            str(shop.keyring_path),
            *shop.database(),
        )
        assert 1 == run.returncode
        assert (
            "shop_orders.total: encrypted 0, plaintext left 1 (1 unreadable"
            in run.stdout
        )
        with shop.engine.connect() as conn:
            stored = conn.execute(
                select(custdata_raw(Order.__table__).c.total)
            ).scalar_one()
        assert b"about 40 yen" == bytes(stored)


def custdata_raw(tbl: Any) -> Any:
    """A plain view of *tbl* (binary columns), for writing legacy rows."""
    from sqlalchemy import LargeBinary, column, table

    cols = [
        column(
            c.name,
            LargeBinary()
            if c.name in {"name", "email", "card", "phone", "total", "note"}
            else c.type,
        )
        for c in tbl.columns
        if c.name != "email_bidx"
    ]
    return table(tbl.name, *cols)


COMMANDS_WITH_KEYRING = {
    "keys rotate": ["keys", "rotate", "{keyring}"],
    "keys retire": [
        "keys",
        "retire",
        "{keyring}",
        "1",
        "--url",
        "sqlite://",
        "--models",
        MODELS,
    ],
    "keys show": ["keys", "show", "{keyring}"],
    "reencrypt": [
        "reencrypt",
        "--keyring",
        "{keyring}",
        "--url",
        "sqlite://",
        "--models",
        MODELS,
    ],
    "audit verify": ["audit", "verify", "{trail}", "--keyring", "{keyring}"],
}


class TestKeyringOptions:
    """Every command that opens a keyring takes the same KEK options and survives garbage."""

    @pytest.mark.parametrize("command", list(COMMANDS_WITH_KEYRING))
    def test_same_kek_options(self, command: str) -> None:
        """Each command's help lists the five key-encryption-key options."""
        shown = cli(*command.split(), "--help")
        assert 0 == shown.returncode
        assert [o for o in KEK_OPTIONS if o not in shown.stdout] == []

    @pytest.mark.parametrize("command", list(COMMANDS_WITH_KEYRING))
    def test_binary_garbage_keyring(self, command: str, tmp_path: Path) -> None:
        """A keyring file of random bytes: one line naming the file, exit 2."""
        keyring = tmp_path / "keyring.json"
        keyring.write_bytes(bytes(range(256)) * 4)
        keyring.chmod(0o600)
        trail = tmp_path / "audit.jsonl"
        trail.write_text("")
        args = [
            a.format(keyring=keyring, trail=trail)
            for a in COMMANDS_WITH_KEYRING[command]
        ]
        result = cli(*args)
        assert 2 == result.returncode
        _clean(result)
        assert 1 == len(result.stderr.strip().splitlines()), result.stderr
        assert f"{keyring}: the keyring file is not UTF-8 text" in result.stderr

    def test_reencrypt_and_verify_with_kek_env(self, tmp_path: Path) -> None:
        """A KEK-wrapped keyring opens in reencrypt and audit verify with --kek-env."""
        import base64
        import os

        env = {**os.environ, "SHOP_KEK": base64.b64encode(bytes(range(32))).decode()}
        keyring, trail = tmp_path / "keyring.json", tmp_path / "audit.jsonl"
        url = f"sqlite:///{tmp_path / 'shop.db'}"
        kek = ["--kek-env", "SHOP_KEK"]
        assert 0 == cli("keys", "init", str(keyring), *kek, env=env).returncode
        assert '"key"' not in keyring.read_text()
        engine = create_engine(url)
        Base.metadata.create_all(engine)
        engine.dispose()
        assert (
            0
            == cli(
                "keys", "rotate", str(keyring), *kek, "--audit", str(trail), env=env
            ).returncode
        )
        run = cli(
            "reencrypt",
            "--keyring",
            str(keyring),
            *kek,
            "--url",
            url,
            "--models",
            MODELS,
            env=env,
        )
        assert 0 == run.returncode, run.stderr
        assert (
            2
            == cli(
                "reencrypt", "--keyring", str(keyring), "--url", url, "--models", MODELS
            ).returncode
        )
        verified = cli(
            "audit", "verify", str(trail), "--keyring", str(keyring), *kek, env=env
        )
        assert 0 == verified.returncode, verified.stdout + verified.stderr


class TestKekFileSpellings:
    """audit verify keeps its older --kek spelling of --kek-file."""

    def test_kek_alias(self, tmp_path: Path) -> None:
        """--kek and --kek-file open the same wrapped keyring; nothing wrong with it."""
        keyring, kek, trail = (
            tmp_path / "keyring.json",
            tmp_path / "kek",
            tmp_path / "audit.jsonl",
        )
        assert 0 == cli("keys", "init", str(keyring), "--kek-file", str(kek)).returncode
        rotated = cli(
            "keys",
            "rotate",
            str(keyring),
            "--kek-file",
            str(kek),
            "--audit",
            str(trail),
        )
        assert 0 == rotated.returncode, rotated.stderr
        for spelling in ("--kek", "--kek-file"):
            verified = cli(
                "audit",
                "verify",
                str(trail),
                "--keyring",
                str(keyring),
                spelling,
                str(kek),
            )
            assert 0 == verified.returncode, verified.stdout + verified.stderr


class TestProgress:
    """Progress: rate and time left on a terminal, plain lines elsewhere."""

    class _Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    def test_terminal_shows_rate_and_time_left(self) -> None:
        """On a terminal a tqdm bar is redrawn with rows per second and the time left."""
        stream = self._Tty()
        bar = Progress(quiet=False, stream=stream, min_interval=0)
        bar("shop_customers", 0, 400)
        bar("shop_customers", 100, 400)
        bar("shop_customers", 400, 400)
        bar.close()
        out = stream.getvalue()
        assert "\r" in out
        assert re.search(r"shop_customers: +25%.*100/400 \[\d\d:\d\d<\d\d:\d\d", out), (
            out
        )
        assert "rows/s" in out
        assert "400/400" in out

    def test_pipe_gets_one_plain_line_per_table(self) -> None:
        """Into a pipe nothing is redrawn: one line per finished table."""
        ticks = iter([0.0, 3.0, 3.0, 4.0])  # a starts, a ends, b starts, b ends
        stream = io.StringIO()
        bar = Progress(quiet=False, stream=stream, clock=lambda: next(ticks))
        bar("a", 5, 10)
        bar("a", 10, 10)
        bar("b", 2, 2)
        bar.close()
        assert "a: 10/10 rows in 3s\nb: 2/2 rows in 1s\n" == stream.getvalue()
