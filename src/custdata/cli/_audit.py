"""``custdata audit``: verify an audit trail.

::

    custdata audit verify SOURCE --keyring PATH
                          [--kek-file PATH | --kek-env VAR | --aws-kms-key-id KEY]
                          [--checkpoints PATH --checkpoint-key KEY|@FILE]
                          [--prefix NAME] [--heartbeat SECONDS] [--json]

SOURCE is a JSON-lines file or a database URL (anything with ``://``). Exit
status 0: intact (informational findings only); 1: findings; 2: usage error.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys

from pathlib import Path
from typing import Any

from custdata._errors import CustdataError

from ._options import add_kek_arguments, load_keyring


__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the ``audit`` command group on *subparsers*."""
    audit = subparsers.add_parser(
        "audit", help="verify and inspect the audit trail", description=__doc__
    )
    commands = audit.add_subparsers(
        dest="audit_command", metavar="COMMAND", required=True
    )
    verify = commands.add_parser(
        "verify",
        help="verify a JSON-lines file or audit tables; exit 0 intact, 1 findings",
    )
    verify.add_argument(
        "source", metavar="SOURCE", help="a JSON-lines file or a database URL"
    )
    verify.add_argument(
        "--keyring",
        metavar="PATH",
        required=True,
        help="the keyring file holding the audit root keys",
    )
    # --kek is the older spelling of --kek-file.
    add_kek_arguments(verify, kek_file_aliases=("--kek",))
    verify.add_argument(
        "--checkpoints", metavar="PATH", help="the checkpoint anchor file (JSON lines)"
    )
    verify.add_argument(
        "--checkpoint-key",
        metavar="KEY",
        help="the pinned checkpoint verifier key, or @FILE holding it",
    )
    verify.add_argument(
        "--prefix", default="custdata_audit", help="the audit tables' prefix"
    )
    verify.add_argument(
        "--heartbeat",
        type=float,
        metavar="SECONDS",
        help="the checkpoint interval to enforce",
    )
    verify.add_argument("--json", action="store_true", help="print the report as JSON")
    verify.set_defaults(handler=_verify)


def _usage(message: str) -> int:
    print(f"custdata audit verify: error: {message}", file=sys.stderr)
    return 2


def _verify(args: argparse.Namespace) -> int:
    from custdata.audit import (  # noqa: PLC0415
        CheckpointVerifier,
        FileAnchor,
        JsonLinesSource,
        SqlSource,
        audit_tables,
        verify_trail,
    )

    if bool(args.checkpoints) != bool(args.checkpoint_key):
        return _usage("--checkpoints and --checkpoint-key go together")
    try:
        keys = load_keyring(args.keyring, args)
    except (CustdataError, OSError) as exc:
        return _usage(f"cannot load the keyring: {exc}")
    verifier = None
    anchor = None
    if args.checkpoint_key:
        text = args.checkpoint_key
        if text.startswith("@"):
            try:
                text = Path(text[1:]).read_text()
            except OSError as exc:
                return _usage(f"cannot read the checkpoint key: {exc.strerror}")
        try:
            verifier = CheckpointVerifier(text)
        except ValueError as exc:
            return _usage(str(exc))
        if not Path(args.checkpoints).is_file():
            return _usage(f"no checkpoint anchor at {args.checkpoints}")
        anchor = FileAnchor(args.checkpoints)
    engine = None
    if "://" in args.source:
        import sqlalchemy as sa  # noqa: PLC0415

        try:
            engine = sa.create_engine(args.source)
        except (sa.exc.ArgumentError, ImportError) as exc:
            return _usage(f"bad database URL ({type(exc).__name__})")
        source: Any = SqlSource(engine, audit_tables(prefix=args.prefix))
    else:
        if not Path(args.source).is_file():
            return _usage(f"no such file: {args.source}")
        source = JsonLinesSource(args.source)
    try:
        report = verify_trail(
            source,
            keys,
            checkpoints=anchor,
            verifier=verifier,
            heartbeat=args.heartbeat,
            now=dt.datetime.now(dt.timezone.utc),
        )
    except Exception as exc:  # noqa: BLE001 - report any read failure as usage
        return _usage(f"cannot read the trail ({type(exc).__name__})")
    finally:
        if engine is not None:
            engine.dispose()
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, sort_keys=True))
    else:
        vt = report.verified_through
        anchored = (
            "no checkpoints"
            if vt is None
            else f"checkpoint {vt.tree_size} at {vt.time.isoformat()}"
        )
        print(
            f"{report.source}: {report.events} events in {report.chains} chains; {anchored}"
        )
        for finding in report.findings:
            print(f"  {finding}")
        print("intact" if report.intact else "FINDINGS")
    return 0 if report.intact else 1
