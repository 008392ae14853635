"""``custdata request``: track data-subject requests kept in the application's database.

Each sub-command works on the request tables (``custdata_request*``) of the
database given by ``--url``; ``open`` creates them when they are missing (use
your migrations and :func:`custdata.sqlalchemy.add_custdata_tables` in
production). ``--policy`` supplies the ``[requests]`` settings (the APPI
target in days, the time zone, the fee, the accepted verification methods)
and the purposes a stop may cover. Every step is recorded at ``--at`` (an ISO
date-time with its offset; now when omitted) by ``--actor``.

The subject of a request is customer data: ``open`` stores it sealed with
``--keyring`` (required there). ``show`` prints it only with ``--keyring``,
``--policy``, ``--role`` and a ``--purpose`` that may read it (a
``subject_disclosure`` purpose or one that ``may_erase``), a decision recorded
in ``--audit`` when given; otherwise it shows the request without it.

Sub-commands: ``open KIND``, ``verify ID``, ``extend ID`` (GDPR, with
reasons), ``decide ID`` (``--grant``, or ``--refuse`` with ``--ground`` and
``--reason``), ``fulfil ID`` (``--partial`` with grounds), ``withdraw ID``,
``list`` and ``show ID``; each takes ``--json``. ``custdata request kinds``
lists the kinds with their articles.

Exit status: 0 done; 2 a usage, configuration or database error, an unknown
request, a value the kind does not take or a step its state does not allow.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt

from collections.abc import Callable, Iterator
from typing import Any

from .._errors import (
    ConfigurationError,
    CustdataError,
    RequestError,
    UnknownRequestError,
)
from ._options import (
    add_audit_arguments,
    add_holds_table_argument,
    add_kek_arguments,
    add_subject_key_arguments,
    count_int,
    disposal_custodian,
    fail,
    iso_time,
    load_keyring,
    open_audit,
    operator,
    print_result,
    warn_unrecorded,
)


__all__ = ["add_requests_url_arguments", "read_requests", "register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the ``request`` command group on *subparsers*."""
    request = subparsers.add_parser(
        "request",
        help="track data-subject requests (APPI 32-35条, GDPR 15-21)",
        description=__doc__,
    )
    commands = request.add_subparsers(
        dest="request_command", metavar="COMMAND", required=True
    )

    kinds = commands.add_parser("kinds", help="the kinds of request and their articles")
    kinds.add_argument("--json", action="store_true", help="machine-readable output")
    kinds.set_defaults(handler=_kinds)

    opened = commands.add_parser("open", help="record a new request")
    opened.add_argument("kind", metavar="KIND", help="the kind (see 'request kinds')")
    _common(opened)
    opened.add_argument(
        "--subject", required=True, help="the subject's id or identifier, as given"
    )
    opened.add_argument("--id", dest="request_id", help="the request id (generated)")
    opened.add_argument(
        "--fee-yen", type=count_int, metavar="N", help="the fee charged (法38条)"
    )
    opened.add_argument(
        "--format", dest="disclosure_format", help="the form of disclosure chosen"
    )
    opened.add_argument(
        "--purpose", action="append", default=[], help="a purpose a stop covers"
    )
    opened.add_argument(
        "--recipient", action="append", default=[], help="a third party a stop covers"
    )
    opened.add_argument(
        "--ground", action="append", default=[], help="a ground cited (35条)"
    )
    opened.add_argument("--note", default="", help="a note (no customer values)")
    opened.set_defaults(handler=_open)

    verify = commands.add_parser("verify", help="record the identity verification")
    _common(verify, with_id=True)
    verify.add_argument("--method", required=True, help="how the identity was verified")
    verify.set_defaults(handler=_verify)

    extend = commands.add_parser(
        "extend", help="extend a GDPR request by two months (Art. 12(3))"
    )
    _common(extend, with_id=True)
    extend.add_argument("--reason", required=True, help="why (told to the person)")
    extend.set_defaults(handler=_extend)

    decide = commands.add_parser("decide", help="grant or refuse the request")
    _common(decide, with_id=True)
    choice = decide.add_mutually_exclusive_group(required=True)
    choice.add_argument("--grant", action="store_true", help="grant: work begins")
    choice.add_argument("--refuse", action="store_true", help="refuse, with grounds")
    _refusal(decide)
    decide.set_defaults(handler=_decide)

    fulfil = commands.add_parser("fulfil", help="record that the request was answered")
    _common(fulfil, with_id=True)
    fulfil.add_argument(
        "--partial", action="store_true", help="only part was granted (give grounds)"
    )
    _refusal(fulfil)
    fulfil.add_argument(
        "--result",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="what was done (rows=3, export=file.json); no customer values",
    )
    _execution(fulfil)
    fulfil.set_defaults(handler=_fulfil)

    withdraw = commands.add_parser("withdraw", help="record that the person withdrew")
    _common(withdraw, with_id=True)
    withdraw.add_argument("--reason", default="", help="how it was withdrawn")
    withdraw.set_defaults(handler=_withdraw)

    listed = commands.add_parser("list", help="the requests and their deadlines")
    _common(listed)
    listed.add_argument("--open", action="store_true", help="open requests only")
    listed.set_defaults(handler=_list)

    show = commands.add_parser("show", help="one request and its history")
    _common(show, with_id=True)
    show.add_argument("--role", help="the role reading the subject (with --purpose)")
    show.add_argument(
        "--purpose",
        help="show the subject, read for this purpose (subject_disclosure or "
        "may_erase; needs --keyring, --policy and --role)",
    )
    add_audit_arguments(show, actor=False)
    show.set_defaults(handler=_show)


def add_requests_url_arguments(parser: argparse.ArgumentParser, *, what: str) -> None:
    """Add ``--requests-url`` and ``--requests-prefix`` (for ``check`` and ``report``)."""
    parser.add_argument(
        "--requests-url",
        metavar="URL",
        help=f"the application's database holding the data-subject requests: {what}",
    )
    parser.add_argument(
        "--requests-prefix",
        default="custdata_request",
        metavar="NAME",
        help="the request tables' prefix (default custdata_request)",
    )


def read_requests(url: str, prefix: str) -> tuple[Any, ...]:
    """Every request in the database at *url* (none when it has no request tables).

    Raises:
        ConfigurationError: The URL or the database cannot be read.
    """
    from sqlalchemy import create_engine, inspect  # noqa: PLC0415 - optional layer
    from sqlalchemy.exc import SQLAlchemyError  # noqa: PLC0415

    from ..sqlalchemy import SqlRequestStore  # noqa: PLC0415

    try:
        engine = create_engine(url, hide_parameters=True)
    except Exception as exc:  # noqa: BLE001 - a bad URL is a usage error
        msg = f"cannot open --requests-url ({type(exc).__name__})"
        raise ConfigurationError(msg) from None
    try:
        store = SqlRequestStore(engine, prefix=prefix)
        if not inspect(engine).has_table(store.tables.request.name):
            return ()
        return store.requests()
    except SQLAlchemyError as exc:
        msg = f"cannot read the requests ({type(exc).__name__})"
        raise ConfigurationError(msg) from None
    finally:
        engine.dispose()


def _common(parser: argparse.ArgumentParser, *, with_id: bool = False) -> None:
    if with_id:
        parser.add_argument("request_id", metavar="ID", help="the request id")
    parser.add_argument("--url", required=True, help="the application's database URL")
    parser.add_argument(
        "--prefix", default="custdata_request", help="the request tables' prefix"
    )
    parser.add_argument("--policy", metavar="PATH", help="the policy file")
    parser.add_argument("--actor", help="who records this (default cli:<login>)")
    parser.add_argument(
        "--at",
        type=iso_time,
        metavar="ISO",
        help="when it happened, with its offset (default now; for 'list', the "
        "time overdue is judged at)",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument(
        "--keyring",
        metavar="PATH",
        help="the keyring that seals the subjects (required by 'open')",
    )
    add_kek_arguments(parser)


def _execution(parser: argparse.ArgumentParser) -> None:
    """``fulfil --execute``: answer a granted request with ``answer_request``."""
    group = parser.add_argument_group(
        "execution",
        "--execute answers a granted disclosure, portability or erasure request "
        "in the --url database (answer_request) and records the answer: the "
        "subject is opened from its sealed form (a recorded read), located in "
        "the --models tables, disclosed to --out or erased. The options are "
        "those of 'custdata erase'.",
    )
    group.add_argument(
        "--execute", action="store_true", help="execute the answer, then record it"
    )
    group.add_argument(
        "--models",
        metavar="MODULE:BASE",
        help="the declarative base (or MetaData) whose tables hold the subject",
    )
    add_subject_key_arguments(group)
    add_audit_arguments(parser, actor=False)
    group.add_argument("--role", help="the role of --actor (it must grant --purpose)")
    group.add_argument(
        "--purpose",
        help="the purpose acted for: one that may_erase for an erasure "
        "(a disclosure reads under 'disclosure')",
    )
    add_holds_table_argument(group)
    group.add_argument(
        "--out", metavar="PATH", help="the file a disclosure is written to"
    )
    group.add_argument(
        "--dry-run",
        action="store_true",
        help="locate the subject and report what would be done; change nothing",
    )


def _refusal(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ground",
        action="append",
        default=[],
        help="a refusal ground of the rule pack (repeat)",
    )
    parser.add_argument("--reason", default="", help="the reasons told to the person")


def _time(value: dt.datetime | None) -> dt.datetime:
    """``--at`` (parsed by the CLI's one time rule), or now when absent."""
    return dt.datetime.now(dt.timezone.utc) if value is None else value


class _Session:
    """The desk over the database, and the engine to dispose."""

    def __init__(self, args: argparse.Namespace) -> None:
        from sqlalchemy import create_engine  # noqa: PLC0415 - the CLI loads lazily

        from .. import Policy  # noqa: PLC0415
        from ..governance import RequestDesk  # noqa: PLC0415
        from ..sqlalchemy import SqlRequestStore  # noqa: PLC0415

        policy = None if args.policy is None else Policy.from_toml(args.policy)
        self.policy = policy
        self.keyring = (
            None if args.keyring is None else load_keyring(args.keyring, args)
        )
        try:
            self.engine = create_engine(args.url, hide_parameters=True)
        except Exception as exc:  # noqa: BLE001 - a bad URL is a usage error
            msg = f"cannot open the database URL ({type(exc).__name__})"
            raise RequestError(msg) from None
        self.store = SqlRequestStore(
            self.engine, keyring=self.keyring, prefix=args.prefix
        )
        self.missing = False
        self.desk = RequestDesk(
            self.store,
            settings=None if policy is None else policy.requests,
            purposes=None if policy is None else tuple(policy.purposes),
        )


@contextlib.contextmanager
def _session(args: argparse.Namespace) -> Iterator[_Session]:
    from sqlalchemy import inspect  # noqa: PLC0415
    from sqlalchemy.exc import SQLAlchemyError  # noqa: PLC0415

    session = _Session(args)
    try:
        missing = not inspect(session.engine).has_table(
            session.store.tables.request.name
        )
        if args.request_command == "open":
            session.store.create_tables()
        elif missing and args.request_command != "list":
            msg = f"no request {args.request_id!r} (the database has no request tables)"
            raise UnknownRequestError(msg)
        session.missing = missing
        yield session
    except SQLAlchemyError as exc:
        msg = f"database error ({type(exc).__name__})"
        raise RequestError(msg) from None
    finally:
        session.engine.dispose()


def _fail(args: argparse.Namespace, exc: CustdataError) -> int:
    return fail(args, f"request {args.request_command}", exc)


def _line(r: Any, now: dt.datetime) -> str:
    late = " OVERDUE" if r.overdue(now) else ""
    return (
        f"{r.request_id}  {r.kind}  {r.state.value}  due {r.due_at.isoformat()}{late}"
    )


def _summary(r: Any, now: dt.datetime) -> dict[str, Any]:
    info = r.kind_info
    return {
        "request_id": r.request_id,
        "kind": r.kind,
        "article": info.article,
        "regime": r.regime,
        "state": r.state.value,
        "received_at": r.received_at.isoformat(),
        "due_at": r.due_at.isoformat(),
        "overdue": r.overdue(now),
        "pack_id": r.pack_id,
    }


def _kinds(args: argparse.Namespace) -> int:
    from ..governance import request_kinds  # noqa: PLC0415

    kinds = request_kinds()
    data = [
        {
            "key": k.key,
            "regime": k.regime,
            "article": k.article,
            "label_ja": k.label_ja,
            "label_en": k.label_en,
            "execution": k.execution,
            "fee": k.fee,
            "formats": list(k.formats),
            "grounds": list(k.grounds),
            "pack_id": k.pack_id,
        }
        for k in kinds
    ]
    text = "\n".join(f"{k.key:<24} {k.article:<16} {k.label_en}" for k in kinds)
    print_result(args, data, text)
    return 0


def _open(args: argparse.Namespace) -> int:
    if args.keyring is None:
        return _fail(
            args,
            ConfigurationError(
                "the subject is stored sealed: give --keyring (and its KEK options)"
            ),
        )
    try:
        at = _time(args.at)
        with _session(args) as session:
            request = session.desk.open(
                args.kind,
                subject=args.subject,
                received_at=at,
                actor=operator(args),
                request_id=args.request_id,
                fee_yen=args.fee_yen,
                disclosure_format=args.disclosure_format,
                purposes=args.purpose,
                recipients=args.recipient,
                grounds=args.ground,
                note=args.note,
            )
    except CustdataError as exc:
        return _fail(args, exc)
    print_result(
        args,
        _summary(request, at),
        f"{request.request_id} due {request.due_at.isoformat()}",
    )
    return 0


def _stepped(args: argparse.Namespace, request: Any) -> int:
    print_result(
        args,
        _summary(request, request.history[-1].at),
        f"{request.request_id}: {request.state.value}, due {request.due_at.isoformat()}",
    )
    return 0


def _step(args: argparse.Namespace, call: Callable[..., Any]) -> int:
    """Run one step of the desk (*call* gets the desk, ``at`` and ``actor``)."""
    try:
        with _session(args) as session:
            request = call(session.desk, at=_time(args.at), actor=operator(args))
    except CustdataError as exc:
        return _fail(args, exc)
    return _stepped(args, request)


def _verify(args: argparse.Namespace) -> int:
    return _step(
        args,
        lambda desk, **when: desk.verify(
            args.request_id,
            method=args.method,
            **when,
        ),
    )


def _extend(args: argparse.Namespace) -> int:
    return _step(
        args,
        lambda desk, **when: desk.extend(
            args.request_id,
            reason=args.reason,
            **when,
        ),
    )


def _decide(args: argparse.Namespace) -> int:
    return _step(
        args,
        lambda desk, **when: desk.decide(
            args.request_id,
            grant=args.grant,
            grounds=args.ground,
            reason=args.reason,
            **when,
        ),
    )


def _results(pairs: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            msg = f"--result {key!r}: expected KEY=VALUE"
            raise RequestError(msg)
        out[key] = value
    return out


def _fulfil(args: argparse.Namespace) -> int:
    if args.execute:
        return _execute(args)
    return _step(
        args,
        lambda desk, **when: desk.fulfil(
            args.request_id,
            partial=args.partial,
            grounds=args.ground,
            reason=args.reason,
            result=_results(args.result),
            **when,
        ),
    )


def _withdraw(args: argparse.Namespace) -> int:
    return _step(
        args,
        lambda desk, **when: desk.withdraw(
            args.request_id,
            reason=args.reason,
            **when,
        ),
    )


def _list(args: argparse.Namespace) -> int:
    try:
        now = _time(args.at)
        with _session(args) as session:
            if session.missing:
                requests: tuple[Any, ...] = ()
            elif args.open:
                requests = session.desk.open_requests()
            else:
                requests = session.store.requests()
    except CustdataError as exc:
        return _fail(args, exc)
    data = [_summary(r, now) for r in requests]
    text = "\n".join(_line(r, now) for r in requests) or "no requests"
    print_result(args, data, text)
    return 0


def _subject(args: argparse.Namespace, session: _Session) -> str:
    """The request's subject, opened for ``--purpose`` (a recorded decision)."""
    from .. import Custodian, acting_as, purpose  # noqa: PLC0415

    if session.keyring is None or session.policy is None or args.role is None:
        msg = "--purpose shows the subject: it needs --keyring, --policy and --role"
        raise ConfigurationError(msg)
    trail = open_audit(args, session.keyring)
    try:
        custodian = Custodian(
            policy=session.policy, keyring=session.keyring, audit=trail
        )
        with (
            custodian.activate(),
            acting_as(operator(args), role=args.role),
            purpose(args.purpose),
        ):
            return session.store.open_subject(args.request_id, custodian=custodian)
    finally:
        if trail is not None:
            trail.close()


def _show(args: argparse.Namespace) -> int:
    try:
        now = _time(args.at)
        with _session(args) as session:
            request = session.desk.get(args.request_id)
            subject = None if args.purpose is None else _subject(args, session)
    except CustdataError as exc:
        return _fail(args, exc)
    data = {**request.as_dict(), "overdue": request.overdue(now)}
    data["subject"] = subject
    lines = [_line(request, now)]
    if subject is not None:
        lines.append(f"subject: {subject}")
    lines.extend(
        f"{e.seq:>3}  {e.at.isoformat()}  {e.actor}  {e.action.value}"
        for e in request.history
    )
    print_result(args, data, "\n".join(lines))
    return 0


def _execute_usage(args: argparse.Namespace) -> None:
    """Refuse a ``fulfil --execute`` that lacks what it needs, or mixes in a manual answer."""
    missing = [
        name
        for name, value in (
            ("--models", args.models),
            ("--policy", args.policy),
            ("--keyring", args.keyring),
            ("--role", args.role),
        )
        if not value
    ]
    if missing:
        msg = f"--execute needs {', '.join(missing)}"
        raise ConfigurationError(msg)
    if args.partial or args.result or args.ground or args.reason:
        msg = (
            "--execute records what it did: --partial, --result, --ground and "
            "--reason are for an answer given by the application"
        )
        raise ConfigurationError(msg)


def _execute(args: argparse.Namespace) -> int:
    """``fulfil --execute``: answer a granted request, or say what would be done."""
    from sqlalchemy import inspect  # noqa: PLC0415 - optional layer
    from sqlalchemy.exc import SQLAlchemyError  # noqa: PLC0415
    from sqlalchemy.orm import Session  # noqa: PLC0415

    from .. import acting_as, purpose  # noqa: PLC0415
    from ..governance import RequestDesk, RequestState  # noqa: PLC0415
    from ..sqlalchemy import SqlRequestStore, answer_request  # noqa: PLC0415

    try:
        _execute_usage(args)
        at = _time(args.at)
        with (
            disposal_custodian(args) as (custodian, engine, models),
            custodian.activate(),
            Session(engine) as session,
            acting_as(operator(args), role=args.role),
            purpose(args.purpose) if args.purpose else contextlib.nullcontext(),
        ):
            store = SqlRequestStore(
                engine, keyring=custodian.keyring, prefix=args.prefix
            )
            if not inspect(engine).has_table(store.tables.request.name):
                msg = f"no request {args.request_id!r} (the database has no request tables)"
                raise UnknownRequestError(msg)
            desk = RequestDesk(
                store,
                settings=custodian.policy.requests,
                purposes=tuple(custodian.policy.purposes),
            )
            if args.dry_run:
                data, text = _dry_run(args, desk, session, models, at)
            else:
                request = desk.get(args.request_id)
                if (
                    request.state is RequestState.IN_PROGRESS
                    and request.kind_info.execution == "disclose"
                    and args.out is None
                ):
                    msg = f"{request.kind}: give --out, the file the disclosure is written to"
                    raise ConfigurationError(msg)
                answered, _done = answer_request(
                    desk, args.request_id, session, at=at, out=args.out, tables=models
                )
                result = dict(answered.history[-1].detail.get("result", {}))
                data = {
                    **_summary(answered, at),
                    "dry_run": False,
                    "result": result,
                    "out": None if args.out is None else str(args.out),
                }
                text = f"{answered.request_id}: {answered.state.value}; " + ", ".join(
                    f"{k}={v}" for k, v in sorted(result.items())
                )
                warn_unrecorded("request fulfil", args, "the request was answered")
    except CustdataError as exc:
        return _fail(args, exc)
    except SQLAlchemyError as exc:
        return _fail(args, RequestError(f"database error ({type(exc).__name__})"))
    print_result(args, data, text)
    return 0


def _dry_run(
    args: argparse.Namespace, desk: Any, session: Any, models: Any, at: dt.datetime
) -> tuple[dict[str, Any], str]:
    """What ``--execute`` would do: the footprint, and for an erasure its plan."""
    from ..sqlalchemy import plan_answer  # noqa: PLC0415

    request = desk.get(args.request_id)
    footprint, erasure = plan_answer(
        desk, args.request_id, session, at=at, tables=models
    )
    plan: dict[str, Any] = {}
    if erasure is not None:
        plan = {
            "deleted_rows": erasure.total("delete_row"),
            "erased_values": erasure.total("erase"),
            "kept": sum(k.count for k in erasure.kept),
        }
    data = {
        **_summary(request, at),
        "dry_run": True,
        "execution": request.kind_info.execution,
        "tables": {r.table: len(r.primary_keys) for r in footprint.rows},
        "rows": footprint.row_count,
        **plan,
    }
    text = (
        f"{request.request_id}: would {request.kind_info.execution} "
        f"{footprint.row_count} rows in {len(footprint.rows)} tables"
        + "".join(f"; {k}={v}" for k, v in plan.items())
    )
    return data, text
