"""``custdata audit``: verify an audit trail and investigate it.

::

    custdata audit verify SOURCE --keyring PATH
                          [--kek-file PATH | --kek-env VAR | --aws-kms-key-id KEY]
                          [--checkpoints PATH --checkpoint-key KEY|@FILE]
                          [--prefix NAME] [--heartbeat SECONDS] [--json]
    custdata audit who-read SOURCE --subject ID --keyring PATH [...]
                          [--since TIME] [--until TIME] [--tenant T] [--json]
    custdata audit what-did SOURCE --actor ID --keyring PATH [...]
                          [--since TIME] [--until TIME] [--json]

``who-read`` lists every event that concerns a data subject (its raw id is
turned into its pseudonym with the keyring), allowed or denied; ``what-did``
every event of an actor. Both verify the trail first and state the checkpoint
it is verified through, and exit like ``verify`` (0 intact, 1 findings).

SOURCE is a JSON-lines file or a database URL (anything with ``://``). Exit
status 0: intact (informational findings only); 1: findings; 2: usage error;
3: intact, but a record was torn by a crash or a failed write
(``CRASH_TRUNCATED``: an I/O artefact, not tampering).
"""

from __future__ import annotations

import argparse
import json

from pathlib import Path
from typing import Any

from custdata._errors import CustdataError

from ._options import add_kek_arguments, fail, iso_time, load_keyring


__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the ``audit`` command group on *subparsers*."""
    audit = subparsers.add_parser(
        "audit",
        help="verify and inspect the audit trail",
        description=(
            "Verify an audit trail and investigate it. SOURCE is a JSON-lines file "
            "or a database URL (anything with ://). 'verify' names every kind of "
            "tampering it finds; 'who-read' lists every event concerning a data "
            "subject (its id is turned into its pseudonym with the keyring), "
            "allowed or denied; 'what-did' every event of an actor. The queries "
            "verify the trail first and state the checkpoint it is verified "
            "through. " + _EXIT
        ),
    )
    commands = audit.add_subparsers(
        dest="audit_command", metavar="COMMAND", required=True
    )
    verify = commands.add_parser(
        "verify",
        help="verify a JSON-lines file or audit tables; exit 0 intact, 1 findings",
        description="Verify an audit trail and name each kind of tampering. " + _EXIT,
    )
    _common(verify)
    verify.set_defaults(handler=_verify)
    who = commands.add_parser(
        "who-read",
        help="every event concerning a data subject (allowed and denied)",
        description=(
            "List every event concerning a data subject, allowed or denied, after "
            "verifying the trail. " + _EXIT
        ),
    )
    _common(who)
    who.add_argument("--subject", required=True, metavar="ID", help="the subject's id")
    who.add_argument(
        "--tenant", default="", help="the tenant mixed into pseudonyms, if any"
    )
    _window(who)
    who.set_defaults(handler=_who_read)
    what = commands.add_parser(
        "what-did",
        help="every event of an actor",
        description="List every event of an actor, after verifying the trail. " + _EXIT,
    )
    _common(what)
    what.add_argument("--actor", required=True, metavar="ID", help="the actor's id")
    _window(what)
    what.set_defaults(handler=_what_did)


_EXIT = (
    "Exit 0: intact (informational findings only); 1: findings; 2: usage error; "
    "3: intact, but a record was torn by a crash or a failed write "
    "(CRASH_TRUNCATED: an I/O artefact, not tampering)."
)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "source", metavar="SOURCE", help="a JSON-lines file or a database URL"
    )
    parser.add_argument(
        "--keyring",
        metavar="PATH",
        required=True,
        help="the keyring file holding the audit root keys",
    )
    # --kek is the older spelling of --kek-file.
    add_kek_arguments(parser, kek_file_aliases=("--kek",))
    parser.add_argument(
        "--checkpoints", metavar="PATH", help="the checkpoint anchor file (JSON lines)"
    )
    parser.add_argument(
        "--checkpoint-key",
        metavar="KEY",
        help="the pinned checkpoint verifier key, or @FILE holding it",
    )
    parser.add_argument(
        "--prefix", default="custdata_audit", help="the audit tables' prefix"
    )
    parser.add_argument(
        "--heartbeat",
        type=float,
        metavar="SECONDS",
        help="the checkpoint interval to enforce",
    )
    parser.add_argument("--json", action="store_true", help="print JSON")


def _window(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--since",
        type=iso_time,
        metavar="TIME",
        help="start, inclusive: ISO 8601 with its offset (Z, +09:00) or a date",
    )
    parser.add_argument(
        "--until",
        type=iso_time,
        metavar="TIME",
        help="end, exclusive: ISO 8601 with its offset (Z, +09:00) or a date",
    )


def _usage(args: argparse.Namespace, message: str, command: str = "verify") -> int:
    return fail(args, f"audit {command}", f"error: {message}")


class _Usage(Exception):  # noqa: N818 - internal control flow, never escapes
    """A usage error, turned into exit status 2 by the command."""


def _prepare(args: argparse.Namespace) -> tuple[Any, Any, Any, Any, Any]:
    """Return ``(keys, source, anchor, verifier, engine)`` or raise :class:`_Usage`."""
    from custdata.audit import (  # noqa: PLC0415
        CheckpointVerifier,
        FileAnchor,
        JsonLinesSource,
        SqlSource,
        audit_tables,
    )

    if bool(args.checkpoints) != bool(args.checkpoint_key):
        raise _Usage("--checkpoints and --checkpoint-key go together")
    try:
        keys = load_keyring(args.keyring, args)
    except (CustdataError, OSError) as exc:
        raise _Usage(f"cannot load the keyring: {exc}") from None
    verifier = None
    anchor = None
    if args.checkpoint_key:
        text = args.checkpoint_key
        if text.startswith("@"):
            try:
                text = Path(text[1:]).read_text()
            except OSError as exc:
                raise _Usage(
                    f"cannot read the checkpoint key: {exc.strerror}"
                ) from None
        try:
            verifier = CheckpointVerifier(text)
        except ValueError as exc:
            raise _Usage(str(exc)) from None
        if Path(args.checkpoints).is_dir():
            raise _Usage(f"the checkpoint anchor {args.checkpoints} is a directory")
        # A missing anchor file holds no checkpoints: for a trail that records
        # that it is checkpointed, that is a finding, not a usage error.
        anchor = FileAnchor(args.checkpoints)
    engine = None
    if "://" in args.source:
        import sqlalchemy as sa  # noqa: PLC0415

        try:
            engine = sa.create_engine(args.source)
        except (sa.exc.ArgumentError, ImportError) as exc:
            raise _Usage(f"bad database URL ({type(exc).__name__})") from None
        source: Any = SqlSource(engine, audit_tables(prefix=args.prefix))
    else:
        if not Path(args.source).is_file():
            raise _Usage(f"no such file: {args.source}")
        source = JsonLinesSource(args.source)
    return keys, source, anchor, verifier, engine


def _run_verify(
    args: argparse.Namespace, keys: Any, source: Any, anchor: Any, verifier: Any
) -> Any:
    from custdata.audit import verify_trail  # noqa: PLC0415

    return verify_trail(
        source, keys, checkpoints=anchor, verifier=verifier, heartbeat=args.heartbeat
    )


def _verified_line(report: Any) -> str:
    vt = report.verified_through
    anchored = (
        "no checkpoints"
        if vt is None
        else f"verified through checkpoint {vt.tree_size} at {vt.time.isoformat()}"
    )
    state = "intact" if report.intact else f"FINDINGS ({len(report.findings)})"
    return (
        f"{report.source}: {report.events} events in {report.chains} chains; "
        f"{anchored}; {report.unanchored} newer; {state}"
    )


def _verify(args: argparse.Namespace) -> int:
    try:
        keys, source, anchor, verifier, engine = _prepare(args)
    except _Usage as exc:
        return _usage(args, str(exc))
    try:
        report = _run_verify(args, keys, source, anchor, verifier)
    except Exception as exc:  # noqa: BLE001 - report any read failure as usage
        return _usage(args, f"cannot read the trail ({type(exc).__name__})")
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
    return _status(report)


def _who_read(args: argparse.Namespace) -> int:
    return _investigate(args, "who-read")


def _what_did(args: argparse.Namespace) -> int:
    return _investigate(args, "what-did")


def _investigate(args: argparse.Namespace, command: str) -> int:
    from custdata.audit import find_events, pseudonym_for  # noqa: PLC0415

    try:
        keys, source, anchor, verifier, engine = _prepare(args)
    except _Usage as exc:
        return _usage(args, str(exc), command)
    try:
        report = _run_verify(args, keys, source, anchor, verifier)
        if command == "who-read":
            # The pseudonym the writers recorded for this subject.
            ref = pseudonym_for(keys, args.subject, tenant=args.tenant)
            rows = find_events(
                source, subject_ref=ref, since=args.since, until=args.until
            )
            subject: dict[str, Any] = {"subject_ref": ref}
        else:
            rows = find_events(
                source, actor=args.actor, since=args.since, until=args.until
            )
            subject = {"actor": args.actor}
    except Exception as exc:  # noqa: BLE001 - report any read failure as usage
        return _usage(args, f"cannot read the trail ({type(exc).__name__})", command)
    finally:
        if engine is not None:
            engine.dispose()
    vt = report.verified_through
    if args.json:
        out = {
            **subject,
            "verification": report.to_dict(),
            "verified_through": None
            if vt is None
            else {"tree_size": vt.tree_size, "time": vt.time.isoformat()},
            "events": [
                {**r, "ts": r["ts"].isoformat().replace("+00:00", "Z")} for r in rows
            ],
        }
        print(json.dumps(out, indent=2, sort_keys=True, ensure_ascii=False))
    else:
        print(_verified_line(report))
        if "subject_ref" in subject:
            print(f"subject pseudonym {subject['subject_ref']}")
        for r in rows:
            fields = ",".join(r["fields"]) or "-"
            print(
                f"  {r['ts'].isoformat().replace('+00:00', 'Z')}  {r['action']:<20} "
                f"{r['outcome'] or '-':<8} actor={r['actor_id']} purpose={r['purpose']} "
                f"entity={r['entity']} fields={fields} count={r['count']}"
                + (f" reason={r['reason']}" if r["reason"] else "")
            )
        print(f"{len(rows)} events")
    return _status(report)


def _status(report: Any) -> int:
    """The exit status: 0 intact, 1 findings, 3 intact but with torn records."""
    if not report.intact:
        return 1
    if any(f.kind.value == "CRASH_TRUNCATED" for f in report.findings):
        return 3
    return 0
