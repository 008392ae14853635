"""``custdata keys``: create, rotate, retire and show a local keyring file.

``custdata keys usage`` counts stored values per key id; it needs the database
layer and is registered by :func:`register_usage`. ``keys retire`` counts, in
the application's database, everything that still depends on the key before it
destroys it, and refuses while anything does.
"""

from __future__ import annotations

import argparse
import json
import sys

from typing import Any

from .._errors import ConfigurationError, CustdataError
from ..crypto import KeyKind, Keyring, KeyStatus
from ._options import (
    JobKeys,
    add_audit_arguments,
    add_database_arguments,
    add_json_argument,
    add_kek_arguments,
    add_subject_key_arguments,
    fail,
    key_provider,
    load_keyring,
    load_models,
    open_audit,
    open_subject_keys,
    operator,
    warn_unrecorded,
)
from ._usage import register_usage


__all__ = ["register"]


def register(commands: Any) -> None:
    """Register the ``keys`` command group and its sub-commands."""
    parser = commands.add_parser(
        "keys",
        help="manage a local keyring file",
        description=(
            "Create, rotate, retire and show the keys of a local keyring file. "
            "Exit 0 on success, 2 on a configuration error."
        ),
    )
    sub = parser.add_subparsers(
        dest="keys_command", metavar="SUBCOMMAND", required=True
    )

    init = sub.add_parser(
        "init",
        help="create a keyring file (mode 0600)",
        description="Create a new keyring file with one data key and one index key.",
    )
    init.add_argument("path", metavar="PATH", help="the keyring file to create")
    add_json_argument(init)
    add_kek_arguments(init, create=True)
    init.set_defaults(handler=run_init)

    rotate = sub.add_parser(
        "rotate",
        help="add a new primary key",
        description=(
            "Add a new primary data key (or, with --index, index key). Older keys "
            "keep decrypting; nothing is re-encrypted."
        ),
    )
    rotate.add_argument("path", metavar="PATH", help="the keyring file")
    rotate.add_argument(
        "--index", action="store_true", help="rotate the blind-index key instead"
    )
    add_json_argument(rotate)
    add_kek_arguments(rotate)
    add_audit_arguments(rotate)
    rotate.set_defaults(handler=run_rotate)

    retire = sub.add_parser(
        "retire",
        help="destroy a non-primary key",
        description=(
            "Destroy the material of a non-primary key; values under it then "
            "refuse to decrypt. Before that, count in the database (--url and "
            "--models, with --subject-keys where the models use per-subject keys) "
            "the stored values, per-subject keys and blind-index entries that "
            "still depend on the key, and refuse while any does: run custdata "
            "reencrypt first. Exit 0 retired, 1 refused, 2 on a configuration "
            "error. --force retires anyway; it needs --audit, where it is recorded."
        ),
    )
    retire.add_argument("path", metavar="PATH", help="the keyring file")
    retire.add_argument("key_id", metavar="KEY_ID", type=int, help="the key to retire")
    add_json_argument(retire)
    database = retire.add_argument_group(
        "the application's database",
        "Where to count what still depends on the key.",
    )
    add_database_arguments(database, required=False)
    add_subject_key_arguments(database)
    retire.add_argument(
        "--force",
        action="store_true",
        help="retire even if something depends on the key, or it cannot be "
        "counted (those values become unreadable); recorded, needs --audit",
    )
    add_kek_arguments(retire)
    add_audit_arguments(retire)
    retire.set_defaults(handler=run_retire)

    show = sub.add_parser(
        "show",
        help="list key ids and their status",
        description="List each key's id, kind, status and dates; never key material.",
    )
    show.add_argument("path", metavar="PATH", help="the keyring file")
    add_json_argument(show)
    add_kek_arguments(show)
    show.set_defaults(handler=run_show)

    # ``usage`` reads the database, so it lives with the SQLAlchemy commands.
    register_usage(sub)


def _json(document: dict[str, Any]) -> None:
    print(json.dumps(document, indent=2))


def run_init(args: argparse.Namespace) -> int:
    """Run ``custdata keys init PATH``."""
    try:
        keyring = Keyring.generate(provider=key_provider(args, create=True))
        keyring.save(args.path, overwrite=False)
    except FileExistsError:
        return fail(
            args,
            "keys init",
            ConfigurationError("the file exists; not overwriting it", path=args.path),
        )
    except (CustdataError, OSError) as exc:
        return fail(args, "keys init", exc)
    if args.json:
        _json(
            {
                "keyring": args.path,
                "data_key": keyring.primary_key_id,
                "index_key": keyring.primary_index_key_id,
                "kek": None if keyring.provider is None else keyring.provider.kek_id,
            }
        )
        return 0
    print(
        f"created {args.path} (mode 0600): data key {keyring.primary_key_id}, "
        f"index key {keyring.primary_index_key_id}"
    )
    return 0


def run_rotate(args: argparse.Namespace) -> int:
    """Run ``custdata keys rotate PATH``; recorded as ``key.rotate`` with ``--audit``."""
    trail = None
    try:
        keyring = load_keyring(args.path, args)
        trail = open_audit(args, keyring)
        old = keyring.primary_index_key_id if args.index else keyring.primary_key_id
        key_id = keyring.rotate_index_key() if args.index else keyring.rotate()
        if trail is not None:
            # Recorded before the file is replaced: no unrecorded key operation.
            trail.key_rotated(
                old_key_id=str(old),
                new_key_id=str(key_id),
                actor=operator(args),
                kind="index" if args.index else "data",
            )
        keyring.save(args.path)
    except (CustdataError, OSError) as exc:
        return fail(args, "keys rotate", exc)
    finally:
        if trail is not None:
            trail.close()
    kind = "index" if args.index else "data"
    if args.json:
        _json(
            {
                "keyring": args.path,
                "kind": kind,
                "previous_key": old,
                "primary_key": key_id,
                "recorded": trail is not None,
            }
        )
        return 0
    print(f"new primary {kind} key {key_id}; older {kind} keys stay active")
    return 0


def run_retire(args: argparse.Namespace) -> int:
    """Run ``custdata keys retire PATH KEY_ID``.

    Counts what depends on the key, refuses (exit 1) while anything does,
    records the retirement as ``key.retire`` with ``--audit``.
    """
    trail = None
    try:
        keyring = load_keyring(args.path, args)
        info = keyring.key_info(args.key_id)
        if info.status is KeyStatus.RETIRED:
            if args.json:
                _json(_retired(args, "already_retired", []))
            else:
                print(f"key {args.key_id} is already retired")
            return 0
        if info.status is KeyStatus.PRIMARY:
            raise ConfigurationError(
                f"key {args.key_id} is a primary key; rotate before retiring it"
            )
        if args.force and not args.audit:
            raise ConfigurationError(
                "--force needs --audit: a forced retirement is always recorded"
            )
        trail = open_audit(args, keyring)
        dependents = _dependents(args, keyring, info.kind, trail)
        mark = "FORCED: " if args.force else ""
        for line in dependents:
            print(f"custdata keys retire: {mark}{line}", file=sys.stderr)
        if dependents and not args.force:
            print(
                f"custdata keys retire: refused: key {args.key_id} is still needed; "
                "run custdata reencrypt (with --subject-keys where used) first",
                file=sys.stderr,
            )
            if args.json:
                _json(_retired(args, "refused", dependents))
            return 1
        if dependents:
            print(
                f"custdata keys retire: FORCED: key {args.key_id} is destroyed although "
                "the above depend on it; they can never be decrypted or found again",
                file=sys.stderr,
            )
        keyring.retire(args.key_id)
        if trail is not None:
            keys: dict[str, Any] = {
                "retired": str(args.key_id),
                "kind": info.kind.value,
            }
            if args.force:
                keys["forced"] = True
                keys["dependents"] = len(dependents)
            trail.record(
                "key.retire",
                outcome="allowed",
                actor={"type": "user", "id": operator(args)},
                keys=keys,
                reason="operator_request",
            )
        keyring.save(args.path)
    except (CustdataError, OSError, ValueError) as exc:
        return fail(args, "keys retire", exc)
    finally:
        if trail is not None:
            trail.close()
    if args.json:
        _json(_retired(args, "retired", dependents))
        return 0
    print(f"retired key {args.key_id}")
    return 0


def _retired(
    args: argparse.Namespace, outcome: str, dependents: list[str]
) -> dict[str, Any]:
    """``keys retire --json``: the outcome and what depended on the key."""
    return {
        "keyring": args.path,
        "key_id": args.key_id,
        "outcome": outcome,
        "forced": bool(args.force) and outcome == "retired",
        "dependents": dependents,
        "recorded": bool(args.audit) and outcome == "retired",
    }


def _dependents(
    args: argparse.Namespace, keyring: Keyring, kind: KeyKind, trail: Any
) -> list[str]:
    """What still depends on the key, one line each; empty when nothing does.

    Raises:
        ConfigurationError: The database is not named (without ``--force``),
            or the models use per-subject keys and ``--subject-keys`` is not
            given, so not everything can be counted.
    """
    if not (args.url and args.models):
        if args.url or args.models:
            raise ConfigurationError("--url and --models go together")
        if args.force:
            return ["nothing was counted (no --url and --models)"]
        raise ConfigurationError(
            "name the database (--url and --models) so that what still depends on "
            f"key {args.key_id} can be counted, or pass --force"
        )
    from sqlalchemy import create_engine  # noqa: PLC0415 - optional layer

    from ..sqlalchemy import index_usage, key_usage  # noqa: PLC0415
    from ..sqlalchemy._jobs import uses_subject_keys  # noqa: PLC0415

    models = load_models(args.models)
    opened = open_subject_keys(args)
    store, store_engine = opened if opened is not None else (None, None)
    engine = create_engine(args.url, hide_parameters=True)
    try:
        lines = []
        if kind is KeyKind.DATA:
            if store is None and uses_subject_keys(models):
                raise ConfigurationError(
                    "the models use per-subject keys: pass --subject-keys so the "
                    "subject keys wrapped by this key can be counted"
                )
            for u in key_usage(engine, tables=models, subject_keys=store):
                if u.key_id != args.key_id or u.algorithm not in {1, 2}:
                    continue
                what = "subject keys" if u.kind == "subject_key" else "stored values"
                lines.append(
                    f"{u.table}.{u.column}: {u.count} {what} under key {u.key_id}"
                )
        else:
            warn_unrecorded("keys retire", args, "searchable values are decrypted")
            job = JobKeys(keyring, store, trail)
            for u in index_usage(engine, job, tables=models):
                if u.key_id == args.key_id:
                    lines.append(
                        f"{u.table}.{u.column}: {u.count} blind-index entries under "
                        f"index key {u.key_id}"
                    )
                elif u.key_id == -1:
                    lines.append(
                        f"{u.table}.{u.column}: {u.count} blind-index entries whose "
                        "index key cannot be told (they may need this key)"
                    )
        return lines
    finally:
        engine.dispose()
        if store_engine is not None:
            store_engine.dispose()


def run_show(args: argparse.Namespace) -> int:
    """Run ``custdata keys show PATH``: ids, kinds, status and dates, never key bytes."""
    try:
        keyring = load_keyring(args.path, args)
    except (CustdataError, OSError) as exc:
        return fail(args, "keys show", exc)
    rows = [
        {
            "id": info.key_id,
            "kind": info.kind.value,
            "status": info.status.value,
            "created_at": info.created_at.isoformat(),
            "retired_at": None
            if info.retired_at is None
            else info.retired_at.isoformat(),
        }
        for info in keyring.keys
    ]
    kek = None if keyring.provider is None else keyring.provider.kek_id
    if args.json:
        _json({"kek": kek, "keys": rows})
        return 0
    print(
        f"keyring {args.path} (key-encryption key: {kek or 'none, keys in the clear'})"
    )
    for kind in KeyKind:
        for row in rows:
            if row["kind"] == kind.value:
                retired = f"  retired {row['retired_at']}" if row["retired_at"] else ""
                print(
                    f"  {row['kind']:<5}  {row['id']:>10}  {row['status']:<7}  created {row['created_at']}{retired}"
                )
    return 0
