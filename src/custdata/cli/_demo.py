"""``custdata demo``: the whole walkthrough on the embedded default.

Everything happens in a temporary folder: a local keyring file, a SQLite
database, a JSON-lines audit trail and a checkpoint anchor file. Nothing is
fetched from the network and nothing outside the folder is touched.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import stat
import tempfile

from importlib.resources import files
from pathlib import Path
from typing import Any


#: The demo's "today", so the retention sweep always finds the same work.
_TODAY = dt.datetime(2026, 12, 1, tzinfo=dt.timezone.utc)
#: When each fictional customer last ordered.
_LAST_ORDERS = (
    dt.datetime(2026, 11, 3, tzinfo=dt.timezone.utc),
    dt.datetime(2018, 5, 20, tzinfo=dt.timezone.utc),
    dt.datetime(2025, 1, 15, tzinfo=dt.timezone.utc),
)

#: Fictional customers; the demo checks none of these values is stored in clear.
_CUSTOMERS = (
    ("Yamada Hanako", "Hanako.Yamada@example.jp", "090-1234-5678", "4111111111111111"),
    ("Suzuki Taro", "taro.suzuki@example.jp", "080-2345-6789", "5555555555554444"),
    ("Sato Aiko", "aiko@example.com", "070-3456-7890", "378282246310005"),
)


def register(commands: Any) -> None:
    """Register the ``demo`` command."""
    parser = commands.add_parser(
        "demo",
        help="run the end-to-end walkthrough in a temporary folder",
        description=(
            "Create a local keyring, a SQLite database of sample customers and a "
            "JSON-lines audit trail in a temporary folder; show the ciphertext at "
            "rest, an allowed, a masked and a denied read, a blind-index lookup, a "
            "key rotation with re-encryption, a consent withdrawal, a retention "
            "sweep, and the verified audit trail."
        ),
    )
    parser.add_argument(
        "--keep",
        metavar="DIR",
        type=Path,
        help="work in DIR (created) and keep it, instead of a temporary folder",
    )
    parser.set_defaults(handler=run)


def sample_policy_path() -> Path:
    """Return the path of the sample business's policy shipped with custdata."""
    return Path(str(files("custdata.cli") / "sample_policy.toml"))


def _section(number: int, title: str) -> None:
    print(f"\n{number}. {title}")


def run(args: argparse.Namespace) -> int:
    """Run ``custdata demo``."""
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        _walkthrough(args.keep)
        print(f"\nThe files are kept in {args.keep}")
        return 0
    folder = Path(tempfile.mkdtemp(prefix="custdata-demo-"))
    try:
        _walkthrough(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


def _values_per_key(usage: Any) -> dict[int, int]:
    totals: dict[int, int] = {}
    for u in usage:
        totals[u.key_id] = totals.get(u.key_id, 0) + u.count
    return totals


def _walkthrough(folder: Path) -> None:
    from sqlalchemy import create_engine, select, text  # noqa: PLC0415
    from sqlalchemy.orm import Session  # noqa: PLC0415

    import custdata  # noqa: PLC0415

    from ..audit import (  # noqa: PLC0415
        AuditTrail,
        Checkpointer,
        CheckpointSigner,
        CheckpointVerifier,
        FileAnchor,
        JsonLinesSink,
        JsonLinesSource,
        verify_trail,
    )
    from ..crypto import Keyring  # noqa: PLC0415
    from ..governance import ConsentLedger  # noqa: PLC0415
    from ..sqlalchemy import key_usage, reencrypt, sweep  # noqa: PLC0415

    print(f"custdata {custdata.__version__} demo, working in {folder}")

    _section(1, "The policy: the regulation as data")
    policy = custdata.Policy.from_toml(sample_policy_path())
    print(f"  {policy.organisation}, policy v{policy.version}")
    for pid, p in policy.purposes.items():
        print(f"  purpose {pid:22} {p.text_en}")
    for rid, role in policy.roles.items():
        print(f"  role    {rid:22} may claim {', '.join(role.purposes)}")

    _section(2, "A local keyring file (mode 0600) and an audit trail")
    keyring_path = folder / "keyring.json"
    Keyring.generate().save(keyring_path)
    keyring = Keyring.load(keyring_path)
    mode = stat.S_IMODE(keyring_path.stat().st_mode)
    print(f"  {keyring_path.name}: mode {mode:o}, {keyring!r}")
    audit_path = folder / "audit.jsonl"
    anchor_path = folder / "checkpoints.jsonl"
    signer = CheckpointSigner.generate("custdata.demo/audit")
    trail = AuditTrail(
        keyring,
        sinks=[JsonLinesSink(audit_path)],
        checkpointer=Checkpointer(
            JsonLinesSource(audit_path), signer, FileAnchor(anchor_path)
        ),
        checkpoint_interval=None,
        service="demo",
    )
    consent = ConsentLedger.for_policy(policy, audit=trail)
    custodian = custdata.Custodian(
        policy=policy, keyring=keyring, audit=trail, consent=consent
    )

    from ._demo_models import Base, Customer  # noqa: PLC0415 - needs SQLAlchemy

    engine = create_engine(f"sqlite:///{folder / 'demo.db'}", hide_parameters=True)
    try:
        with custodian.activate():
            Base.metadata.create_all(engine)
            _section(3, "Sign-up: every customer-data value is encrypted on write")
            # Writes need an actor and a purpose: the billing clerk enters the
            # sign-up. The phone (shipping only, masked elsewhere) is write-only
            # for billing: it can be entered but reads back as its mask.
            with (
                Session(engine, expire_on_commit=False) as session,
                custdata.acting_as("c-9", role="billing_clerk"),
                custdata.purpose("billing"),
            ):
                rows = [
                    Customer(name=n, email=e, phone=p, card=c, last_order_at=last)
                    for (n, e, p, c), last in zip(_CUSTOMERS, _LAST_ORDERS, strict=True)
                ]
                session.add_all(rows)
                session.commit()
                hanako_id = rows[0].id
            print(f"  stored {len(rows)} customers")

            _section(4, "At rest: raw SQL and the database file hold only ciphertext")
            with engine.connect() as conn:
                stored = (
                    conn.execute(text("SELECT email FROM demo_customers"))
                    .scalars()
                    .first()
                )
            blob = bytes(stored or b"")
            print(
                f"  email column: {len(blob)} bytes: version {blob[0]}, algorithm {blob[1]}, "
                f"key id {int.from_bytes(blob[2:6], 'big')}, then nonce, ciphertext and tag"
            )
            raw = (folder / "demo.db").read_bytes()
            leaked = [v for row in _CUSTOMERS for v in row if v.encode() in raw]
            print(f"  plaintext values found in demo.db: {len(leaked)}")

            _section(5, "Allowed: a support agent reads contact details for support")
            with (
                Session(engine) as session,
                custdata.acting_as("u-102", role="support_agent"),
                custdata.purpose("support"),
            ):
                hanako = session.get(Customer, hanako_id)
                assert hanako is not None  # noqa: S101 - just inserted
                print(f"  {hanako.name} <{hanako.email}>")
                print(
                    f"  phone, kept for billing and shipping, is shown as a mask: {hanako.phone}"
                )

                _section(6, "Denied: the same agent cannot read the payment card")
                try:
                    print(hanako.card)
                except custdata.PurposeViolationError as exc:
                    print(f"  refused and audited: {exc}")

            _section(7, "A role may claim only the purposes granted to it")
            with custdata.acting_as("u-102", role="support_agent"):
                try:
                    with custdata.purpose("marketing.email"):
                        pass
                except custdata.PurposeNotGrantedError as exc:
                    print(f"  refused and audited: {exc}")

            _section(8, "Search: an e-mail lookup through the blind index")
            with (
                Session(engine) as session,
                custdata.acting_as("u-102", role="support_agent"),
                custdata.purpose("support"),
            ):
                found = session.scalars(
                    select(Customer).where(
                        Customer.email == "  HANAKO.yamada@example.JP "
                    )
                ).one()
                print(f"  'HANAKO.yamada@example.JP' -> {found.name}")

            _section(9, "Rotation: a new primary key, then re-encryption")
            before = _values_per_key(key_usage(engine, tables=Base))
            with custdata.acting_as("ops-1", role="billing_clerk"):
                new = custodian.rotate_key()
            keyring.save(keyring_path)
            report = reencrypt(engine, custodian, tables=Base)
            after = _values_per_key(key_usage(engine, tables=Base))
            print(f"  values per key id before: {before}")
            print(f"  re-encrypted {report.reencrypted} values to key {new}")
            print(f"  values per key id after:  {after}")

            _section(10, "Consent: marketing e-mail only while consent is in force")
            granted = consent.grant(
                hanako_id, "marketing", method="web_form", notice_version="2026-10"
            )
            query = select(Customer.email).where(Customer.id == hanako_id)
            with (
                Session(engine) as session,
                custdata.acting_as("m-3", role="marketer"),
                custdata.purpose("marketing.email"),
            ):
                print(
                    f"  consent {granted.id[:12]}... granted: {session.scalar(query)}"
                )
            consent.withdraw(granted.id, actor="cs-1")
            with (
                Session(engine) as session,
                custdata.acting_as("m-3", role="marketer"),
                custdata.purpose("marketing.email"),
            ):
                try:
                    session.scalar(query)
                except custdata.ConsentRequiredError as exc:
                    print(f"  withdrawn, refused and audited: {exc}")

            _section(11, "Retention: the sweep disposes of what has expired")
            dry = sweep(engine, custodian, tables=Base, now=_TODAY, dry_run=True)
            for c in dry.counts:
                print(f"  dry run: {c.table} {c.field} {c.action} {c.count}")
            done = sweep(
                engine,
                custodian,
                tables=Base,
                now=_TODAY,
                log=folder / "deletions.jsonl",
            )
            again = sweep(engine, custodian, tables=Base, now=_TODAY)
            print(
                f"  swept: {done.total('delete_row')} customer deleted (last order in "
                f"2018, kept 7 years); a second run deletes {again.total('delete_row')}"
            )
    finally:
        engine.dispose()
        trail.checkpoint()
        trail.close()

    _section(12, "The audit trail: who did what, and proof it was not altered")
    # The trail's reader gives each record's body, whatever the line format
    # (a new file is written in the compact format 2).
    for record in JsonLinesSource(audit_path).records():
        event_body: bytes | None = getattr(record, "body", None)  # None: not a record
        if event_body is None:
            continue
        body = json.loads(event_body)
        actor = (body.get("actor") or {}).get("id", "-")
        fields = ",".join(body.get("fields", [])) or "-"
        print(
            f"  {body['action']:16} {body['outcome']:8} actor={actor:6} "
            f"purpose={body.get('purpose') or '-':18} fields={fields}"
        )
    result = verify_trail(
        JsonLinesSource(audit_path),
        keyring,
        checkpoints=FileAnchor(anchor_path),
        verifier=CheckpointVerifier(signer.verifier_key),
    )
    problems = [f for f in result.findings if not f.informational]
    print(f"  verified {result.events} events: {problems or 'intact'}")
