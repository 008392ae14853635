"""``custdata report --html DIR``: the compliance report as a static page set.

::

    custdata report --policy PATH --html DIR [--models MODULE:BASE] [--today YYYY-MM-DD]
                    [--trail SOURCE --keyring PATH [--kek-file PATH | ...]
                     [--checkpoints PATH --checkpoint-key KEY|@FILE]]

Writes ``DIR/index.html`` (data map, fields and protection, consent coverage,
reviews due, the audit trail's verification status) and the rendered
documents in HTML, both languages. The pages load nothing from the network.

Exit status 0: written; 2: invalid policy, models, trail options or folder
(one line on stderr). A trail with findings is shown in the report, not an
error: use ``custdata audit verify`` to gate on it.
"""

from __future__ import annotations

import argparse
import json
import sys

from pathlib import Path
from typing import TYPE_CHECKING

import attrs

from custdata._errors import ConfigurationError
from custdata._policy import Policy

from ._docs import add_models_argument, add_policy_argument, load_fields
from ._options import (
    add_json_argument,
    add_kek_arguments,
    add_today_argument,
    chosen_date,
)


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
    add_today_argument(parser, what="the report date")
    add_json_argument(parser)
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


def run(args: argparse.Namespace) -> int:
    """Run ``custdata report``."""
    from custdata.governance import render_report  # noqa: PLC0415

    today = chosen_date(args)
    try:
        policy = Policy.from_toml(args.policy)
        fields = load_fields(args.models)
        trail = _trail(args)
        pages = render_report(
            policy,
            today=today,
            fields=fields,
            trail=trail,
        )
        out = Path(args.html)
        out.mkdir(parents=True, exist_ok=True)
        for name, text in pages.items():
            (out / name).write_text(text, encoding="utf-8")
    except ConfigurationError as exc:
        print(f"custdata report: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(
            f"custdata report: cannot write to {args.html} ({exc.strerror})",
            file=sys.stderr,
        )
        return 2
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
