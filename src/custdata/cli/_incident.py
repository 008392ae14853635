"""``custdata incident``: open, classify and follow incidents kept in the application's database.

Each sub-command works on the incident tables (``custdata_incident*``) of the
database given by ``--url``; ``open`` creates them when they are missing (use
your migrations and :func:`custdata.sqlalchemy.add_custdata_tables` in
production). ``--policy`` supplies the taxonomy, the reporting routes and the
organisation's name (``ack`` needs it, for the steps). Sub-commands: ``open``,
``classify``, ``deadlines``, ``fact``, ``ack``, ``notified``, ``exemption``
(``--confirm`` or ``--reject`` a candidate), ``timeline`` and ``report``; each
takes ``--json``.

Exit status: 0 done; 1 a final report lacks items (they are listed); 2 a usage,
configuration or database error, an unknown incident or an invalid value.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import sys

from collections.abc import Iterator
from typing import Any

from .._errors import (
    CustdataError,
    IncidentError,
    IncidentReportIncompleteError,
    UnknownIncidentError,
)
from ._options import (
    add_kek_arguments,
    fail,
    iso_time,
    load_keyring,
    operator,
    print_result,
)


__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the ``incident`` command group on *subparsers*."""
    incident = subparsers.add_parser(
        "incident",
        help="open, classify and report incidents (APPI 規則7-8条, GDPR 33-34)",
        description=__doc__,
    )
    commands = incident.add_subparsers(
        dest="incident_command", metavar="COMMAND", required=True
    )

    opened = commands.add_parser("open", help="record a new incident")
    _common(opened)
    opened.add_argument("--id", dest="incident_id", help="the incident id (generated)")
    opened.add_argument(
        "--detected-at",
        required=True,
        metavar="ISO",
        help="when the business knew, with its offset (2026-02-02T10:00+09:00)",
    )
    opened.add_argument("--reporter", required=True, help="who reported it")
    opened.add_argument("--kind", required=True, choices=("leak", "loss", "damage"))
    opened.add_argument(
        "--possible", action="store_true", help="only possibly occurred (おそれ)"
    )
    opened.add_argument("--malicious", action="store_true", help="a malicious act")
    opened.add_argument(
        "--acquisition-stage",
        action="store_true",
        help="data being acquired was involved (web skimming)",
    )
    opened.add_argument("--cause", default="", help="the cause, as known")
    opened.add_argument(
        "--category",
        action="append",
        required=True,
        metavar="KEY[:encrypted]",
        help="a category concerned (repeat); ':encrypted' when stored encrypted",
    )
    opened.add_argument(
        "--subjects", required=True, type=int, metavar="N", help="data subjects"
    )
    opened.add_argument("--records", type=int, metavar="N", help="records concerned")
    opened.add_argument(
        "--jurisdiction",
        action="append",
        choices=("appi", "gdpr"),
        help="appi (default) and/or gdpr",
    )
    opened.add_argument("--principal", help="as a contractor: the principal to notify")
    opened.add_argument("--contractor", help="the contractor where it happened")
    opened.add_argument(
        "--keys-compromised", action="store_true", help="encryption keys were exposed"
    )
    opened.set_defaults(handler=_open)

    classify = commands.add_parser(
        "classify", help="classify under 規則7条 and GDPR 33/34 and record it"
    )
    _common(classify, with_id=True)
    classify.add_argument(
        "--keyring",
        metavar="PATH",
        help="the keyring the fields are encrypted under (key custody evidence)",
    )
    classify.add_argument(
        "--keys-stored-apart",
        action="store_true",
        help="declare the keyring kept apart from the data",
    )
    add_kek_arguments(classify)
    classify.set_defaults(handler=_classify)

    due = commands.add_parser("deadlines", help="due items and reminders")
    _common(due, with_id=True)
    due.add_argument("--now", metavar="ISO", help="the time to remind at (now)")
    due.set_defaults(handler=_deadlines)

    fact = commands.add_parser("fact", help="record what is known for a report item")
    _common(fact, with_id=True)
    fact.add_argument("--item", required=True, help="the item key (cause, ...)")
    fact.add_argument("--text", required=True, help="what is known")
    fact.set_defaults(handler=_fact)

    ack = commands.add_parser(
        "ack", help="record a reporting-route step's acknowledgement"
    )
    _common(ack, with_id=True)
    ack.add_argument("--step", required=True, help="the step id of the policy's routes")
    ack.set_defaults(handler=_ack)

    done = commands.add_parser(
        "notified", help="record that a due item was done (a report sent)"
    )
    _common(done, with_id=True)
    done.add_argument(
        "--item", required=True, help="the due item (ppc_preliminary, ...)"
    )
    done.add_argument("--recipient", required=True, help="who was told")
    done.set_defaults(handler=_notified)

    exemption = commands.add_parser(
        "exemption", help="confirm or reject an encryption-exemption candidate"
    )
    _common(exemption, with_id=True)
    decision = exemption.add_mutually_exclusive_group(required=True)
    decision.add_argument("--confirm", action="store_true")
    decision.add_argument("--reject", action="store_true")
    exemption.add_argument("--reason", required=True, help="why")
    exemption.set_defaults(handler=_exemption)

    timeline = commands.add_parser("timeline", help="the incident's recorded timeline")
    _common(timeline, with_id=True)
    timeline.set_defaults(handler=_timeline)

    report = commands.add_parser("report", help="build a report")
    _common(report, with_id=True)
    report.add_argument(
        "--kind",
        default="ppc",
        choices=("ppc", "subject_notice", "gdpr_authority"),
    )
    report.add_argument("--stage", default="final", choices=("preliminary", "final"))
    report.add_argument("--lang", default="ja", choices=("ja", "en"))
    report.set_defaults(handler=_report)


def _common(parser: argparse.ArgumentParser, *, with_id: bool = False) -> None:
    if with_id:
        parser.add_argument("incident_id", metavar="ID", help="the incident id")
    parser.add_argument("--url", required=True, help="the application's database URL")
    parser.add_argument(
        "--prefix", default="custdata_incident", help="the incident tables' prefix"
    )
    parser.add_argument("--policy", metavar="PATH", help="the policy file")
    parser.add_argument("--actor", help="who records this (default cli:<login>)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def _time(value: str, option: str) -> dt.datetime:
    """*value* read by the CLI's one time rule; a bad one is a one-line error here."""
    try:
        return iso_time(value)
    except argparse.ArgumentTypeError as exc:
        msg = f"{option}: {exc}"
        raise IncidentError(msg) from None


class _Session:
    """The register over the database, and the engine to dispose."""

    def __init__(self, args: argparse.Namespace) -> None:
        from sqlalchemy import create_engine  # noqa: PLC0415 - the CLI loads lazily

        from .. import Policy  # noqa: PLC0415
        from ..governance import IncidentRegister  # noqa: PLC0415
        from ..sqlalchemy import SqlIncidentStore  # noqa: PLC0415

        policy = None if args.policy is None else Policy.from_toml(args.policy)
        try:
            self.engine = create_engine(args.url, hide_parameters=True)
        except Exception as exc:  # noqa: BLE001 - a bad URL is a usage error
            msg = f"cannot open the database URL ({type(exc).__name__})"
            raise IncidentError(msg) from None
        self.store = SqlIncidentStore(self.engine, prefix=args.prefix)
        self.register = IncidentRegister(
            self.store,
            taxonomy=None if policy is None else policy.taxonomy,
            routes=None if policy is None else policy.reporting,
            organisation="" if policy is None else policy.organisation,
        )


@contextlib.contextmanager
def _session(args: argparse.Namespace) -> Iterator[_Session]:
    from sqlalchemy import inspect  # noqa: PLC0415

    session = _Session(args)
    try:
        if args.incident_command != "open" and not inspect(session.engine).has_table(
            session.store.tables.incident.name
        ):
            msg = f"no incident {args.incident_id!r} (the database has no incident tables)"
            raise UnknownIncidentError(msg)
        yield session
    finally:
        session.engine.dispose()


def _fail(args: argparse.Namespace, exc: CustdataError) -> int:
    return fail(args, f"incident {args.incident_command}", exc)


def _open(args: argparse.Namespace) -> int:
    from ..governance import AffectedField, Incident, IncidentScope  # noqa: PLC0415

    try:
        detected = _time(args.detected_at, "--detected-at")
        jurisdictions: list[str] = args.jurisdiction or ["appi"]
        fields = []
        for raw in args.category:
            key, _, flag = raw.partition(":")
            if flag not in {"", "encrypted"}:
                msg = f"--category {raw!r}: the only flag is ':encrypted'"
                raise IncidentError(msg)
            fields.append(AffectedField(category=key, encrypted=flag == "encrypted"))
        incident = Incident(
            incident_id=args.incident_id or Incident.new_id(detected),
            detected_at=detected,
            reporter=args.reporter,
            kind=args.kind,
            possible=args.possible,
            cause=args.cause,
            malicious=args.malicious,
            acquisition_stage=args.acquisition_stage,
            contractor_origin=args.contractor,
            principal=args.principal,
            jurisdictions=frozenset(jurisdictions),
            keys_compromised=args.keys_compromised,
            scope=IncidentScope(
                fields=fields,
                subject_count=args.subjects,
                record_count=args.records,
            ),
        )
        with _session(args) as session:
            session.store.create_tables()
            session.register.open(incident, actor=operator(args))
    except CustdataError as exc:
        return _fail(args, exc)
    print_result(args, {"incident_id": incident.incident_id}, incident.incident_id)
    return 0


def _classify(args: argparse.Namespace) -> int:
    from ..governance import key_custody  # noqa: PLC0415

    try:
        custody = None
        if args.keyring is not None:
            custody = key_custody(
                load_keyring(args.keyring, args),
                keys_stored_apart=True if args.keys_stored_apart else None,
            )
        with _session(args) as session:
            result = session.register.classify(
                args.incident_id, actor=operator(args), custody=custody
            )
    except CustdataError as exc:
        return _fail(args, exc)
    lines = []
    if result.appi is not None:
        a = result.appi
        lines.append(f"APPI ({a.pack_id}): {a.status.value}")
        lines.extend(f"  category {c.number}: {c.reason_en}" for c in a.categories)
        if a.exemption_reason:
            lines.append(f"  encryption: {a.exemption_reason}")
    if result.gdpr is not None:
        g = result.gdpr
        lines.append(
            f"GDPR ({g.pack_id}): notify authority: {_yes(g.notify_authority)}, "
            f"notify subjects: {_yes(g.notify_subjects)}"
        )
        lines.extend(f"  {r}" for r in g.reasons)
    lines.append(
        "subjects may demand cessation (35条5項): "
        + _yes(result.eligible_for_cessation)
    )
    print_result(args, result.as_dict(), "\n".join(lines))
    return 0


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _deadlines(args: argparse.Namespace) -> int:
    try:
        now = (
            dt.datetime.now(dt.timezone.utc)
            if args.now is None
            else _time(args.now, "--now")
        )
        with _session(args) as session:
            items = session.register.deadlines(args.incident_id)
            due = session.register.reminders(args.incident_id, now=now)
            done = session.register.done_items(args.incident_id)
    except CustdataError as exc:
        return _fail(args, exc)
    data = {
        "items": [{**i.as_dict(), "done": i.key in done} for i in items],
        "reminders": [
            {
                "item": r.item,
                "remind_at": r.remind_at.isoformat(),
                "due_at": r.due_at.isoformat(),
                "hours_before": r.before.total_seconds() / 3600,
            }
            for r in due
        ],
    }
    lines = []
    for i in items:
        when = "promptly" if i.due_at is None else i.due_at.isoformat()
        mark = " (done)" if i.key in done else ""
        alert = "" if i.alert_at is None else f", alert {i.alert_at.isoformat()}"
        lines.append(f"{when}  {i.key}: {i.label_en}{alert}{mark}")
    if not items:
        lines.append("no due items")
    lines.extend(
        f"reminder: {r.item} due {r.due_at.isoformat()} "
        f"({r.before.total_seconds() / 3600:g} h before)"
        for r in due
    )
    print_result(args, data, "\n".join(lines))
    return 0


def _fact(args: argparse.Namespace) -> int:
    try:
        with _session(args) as session:
            entry = session.register.record_fact(
                args.incident_id, args.item, args.text, actor=operator(args)
            )
    except CustdataError as exc:
        return _fail(args, exc)
    return _recorded(args, entry)


def _recorded(args: argparse.Namespace, entry: Any) -> int:
    print_result(args, {"seq": entry.seq}, f"recorded as entry {entry.seq}")
    return 0


def _ack(args: argparse.Namespace) -> int:
    try:
        with _session(args) as session:
            entry = session.register.acknowledge(
                args.incident_id, args.step, actor=operator(args)
            )
    except CustdataError as exc:
        return _fail(args, exc)
    return _recorded(args, entry)


def _notified(args: argparse.Namespace) -> int:
    try:
        with _session(args) as session:
            entry = session.register.notified(
                args.incident_id,
                args.item,
                actor=operator(args),
                recipient=args.recipient,
            )
    except CustdataError as exc:
        return _fail(args, exc)
    return _recorded(args, entry)


def _exemption(args: argparse.Namespace) -> int:
    try:
        with _session(args) as session:
            entry = session.register.decide_exemption(
                args.incident_id,
                confirmed=args.confirm,
                reason=args.reason,
                actor=operator(args),
            )
    except CustdataError as exc:
        return _fail(args, exc)
    return _recorded(args, entry)


def _timeline(args: argparse.Namespace) -> int:
    try:
        with _session(args) as session:
            entries = session.store.timeline(args.incident_id)
    except CustdataError as exc:
        return _fail(args, exc)
    data = [
        {
            "seq": e.seq,
            "at": e.at.isoformat(),
            "actor": e.actor,
            "action": e.action.value,
            "detail": dict(e.detail),
        }
        for e in entries
    ]
    text = "\n".join(
        f"{e.seq:>3}  {e.at.isoformat()}  {e.actor}  {e.action.value}" for e in entries
    )
    print_result(args, data, text)
    return 0


def _report(args: argparse.Namespace) -> int:
    try:
        with _session(args) as session:
            report = session.register.report(
                args.incident_id, kind=args.kind, stage=args.stage
            )
    except IncidentReportIncompleteError as exc:
        lacks = f"the final report lacks: {', '.join(exc.missing)}"
        return fail(args, "incident report", lacks, status=1)
    except CustdataError as exc:
        return _fail(args, exc)
    if args.json:
        print(report.to_json())
    else:
        sys.stdout.write(report.render(args.lang))
    return 0
