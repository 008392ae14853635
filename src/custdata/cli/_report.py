"""``custdata report --html DIR``: the compliance report as a static page set.

::

    custdata report --policy PATH --html DIR [--models MODULE:BASE] [--today YYYY-MM-DD]
                    [--incidents URL] [--provision-records URL]
                    [--trail SOURCE --keyring PATH [--kek-file PATH | ...]
                     [--checkpoints PATH --checkpoint-key KEY|@FILE]]
                    [--requests-url URL]

Writes ``DIR/index.html`` (data map with recipients and countries, fields and
protection, consent coverage, open incidents with their deadlines when
``--incidents`` names the incident database, the open data-subject requests
with their deadlines from ``--requests-url``, reviews due, the audit trail's
verification status) and the rendered documents in HTML, both languages. The
pages load nothing from the network.

Exit status 0: written; 2: invalid policy, models, trail options or folder
(one line on stderr). A trail with findings is shown in the report, not an
error: use ``custdata audit verify`` to gate on it.
"""

from __future__ import annotations

import argparse
import contextlib
import json

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from custdata._errors import ConfigurationError
from custdata._policy import Policy

from ._docs import (
    add_models_argument,
    add_policy_argument,
    add_records_argument,
    load_fields,
    load_records,
)
from ._options import (
    add_json_argument,
    add_kek_arguments,
    add_today_argument,
    chosen_date,
    fail,
)
from ._request import add_requests_url_arguments, read_requests


if TYPE_CHECKING:
    from custdata.governance import TrailStatus


__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the ``report`` command on *subparsers*."""
    parser = subparsers.add_parser(
        "report",
        help="write the compliance report as static HTML pages",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_policy_argument(parser)
    parser.add_argument(
        "--html", required=True, metavar="DIR", help="the folder to write to"
    )
    add_models_argument(parser)
    add_records_argument(parser)
    add_today_argument(parser, what="the report date")
    add_json_argument(parser)
    parser.add_argument(
        "--incidents",
        metavar="URL",
        help="the database URL of the incident register (custdata incident --url)",
    )
    parser.add_argument(
        "--incident-prefix",
        default="custdata_incident",
        metavar="PREFIX",
        help="the incident tables' prefix (default: custdata_incident)",
    )
    parser.add_argument(
        "--trail",
        dest="source",
        metavar="SOURCE",
        help="an audit trail to verify (JSON-lines file or database URL)",
    )
    parser.add_argument(
        "--keyring", metavar="PATH", help="the keyring holding the audit root keys"
    )
    add_kek_arguments(parser)
    parser.add_argument(
        "--checkpoints", metavar="PATH", help="the checkpoint anchor file"
    )
    parser.add_argument(
        "--checkpoint-key", metavar="KEY", help="the pinned checkpoint verifier key"
    )
    add_requests_url_arguments(parser, what="the open ones are listed")
    parser.set_defaults(handler=run, prefix="custdata_audit", heartbeat=None)


def _trail(args: argparse.Namespace) -> TrailStatus | None:
    """Verify the trail of ``--trail``; return its status, or ``None`` without one."""
    from custdata.governance import TrailStatus  # noqa: PLC0415

    from ._audit import _prepare, _run_verify, _Usage  # noqa: PLC0415
    from ._options import _shown  # noqa: PLC0415

    if not args.source:
        return None
    if not args.keyring:
        raise ConfigurationError("--trail needs --keyring")
    try:
        keys, source, anchor, verifier, engine = _prepare(args)
    except _Usage as exc:
        raise ConfigurationError(str(exc)) from None
    try:
        report = _run_verify(args, keys, source, anchor, verifier)
    except Exception as exc:  # noqa: BLE001 - any read failure is one line
        msg = f"cannot read the trail ({type(exc).__name__})"
        raise ConfigurationError(msg) from None
    finally:
        if engine is not None:
            engine.dispose()
    return TrailStatus.from_report(report, source=_shown(args.source))


@contextlib.contextmanager
def _incidents(args: argparse.Namespace, policy: Policy) -> Iterator[Any]:
    """The incident register of ``--incidents``, or ``None`` without it.

    A database without incident tables has no incidents.
    """
    if not args.incidents:
        yield None
        return
    from sqlalchemy import create_engine, inspect  # noqa: PLC0415
    from sqlalchemy.exc import SQLAlchemyError  # noqa: PLC0415

    from custdata.governance import (  # noqa: PLC0415
        IncidentRegister,
        InMemoryIncidentStore,
    )
    from custdata.sqlalchemy import SqlIncidentStore  # noqa: PLC0415

    try:
        engine = create_engine(args.incidents, hide_parameters=True)
    except Exception as exc:  # noqa: BLE001 - a bad URL is a usage error
        msg = f"cannot open the --incidents URL ({type(exc).__name__})"
        raise ConfigurationError(msg) from None
    try:
        store: Any = SqlIncidentStore(engine, prefix=args.incident_prefix)
        try:
            present = inspect(engine).has_table(store.tables.incident.name)
        except Exception as exc:  # noqa: BLE001 - any connection failure is one line
            msg = f"cannot read the incident register ({type(exc).__name__})"
            raise ConfigurationError(msg) from None
        register = IncidentRegister(
            store if present else InMemoryIncidentStore(),
            taxonomy=policy.taxonomy,
            routes=policy.reporting,
            organisation=policy.organisation,
        )
        try:
            yield register
        except SQLAlchemyError as exc:
            msg = f"cannot read the incident register ({type(exc).__name__})"
            raise ConfigurationError(msg) from None
    finally:
        engine.dispose()


def run(args: argparse.Namespace) -> int:
    """Run ``custdata report``."""
    from custdata.governance import render_report  # noqa: PLC0415

    today = chosen_date(args)
    try:
        policy = Policy.from_toml(args.policy)
        fields = load_fields(args.models)
        records = load_records(args.provision_records)
        trail = _trail(args)
        requests = (
            read_requests(args.requests_url, args.requests_prefix)
            if args.requests_url
            else ()
        )
        with _incidents(args, policy) as register:
            pages = render_report(
                policy,
                today=today,
                fields=fields,
                trail=trail,
                incidents=register,
                records=records,
                requests=requests,
            )
        out = Path(args.html)
        out.mkdir(parents=True, exist_ok=True)
        for name, text in pages.items():
            (out / name).write_text(text, encoding="utf-8")
    except ConfigurationError as exc:
        return fail(args, "report", exc)
    except OSError as exc:
        return fail(args, "report", f"cannot write to {args.html} ({exc.strerror})")
    if args.json:
        document = {
            "date": today.isoformat(),
            "index": str(out / "index.html"),
            "pages": sorted(str(out / name) for name in pages),
            "trail": None if trail is None else attrs.asdict(trail),
        }
        print(json.dumps(document, ensure_ascii=False, indent=2))
        return 0
    print(out / "index.html")
    return 0
