"""``custdata keys``: create, rotate, retire and show a local keyring file.

``custdata keys usage`` counts stored values per key id; it needs the database
layer and is registered by :func:`register_usage`.
"""

from __future__ import annotations

import argparse
import json
import sys

from pathlib import Path
from typing import Any

from .._errors import ConfigurationError, CustdataError
from ..crypto import (
    AwsKmsKeyProvider,
    EnvKeyProvider,
    KeyKind,
    KeyProvider,
    Keyring,
    LocalKeyProvider,
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
    _add_provider_arguments(init, create=True)
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
    _add_provider_arguments(rotate)
    rotate.set_defaults(handler=run_rotate)

    retire = sub.add_parser(
        "retire",
        help="destroy a non-primary key",
        description=(
            "Destroy the material of a non-primary key; values under it then "
            "refuse to decrypt. Re-encrypt them first."
        ),
    )
    retire.add_argument("path", metavar="PATH", help="the keyring file")
    retire.add_argument("key_id", metavar="KEY_ID", type=int, help="the key to retire")
    _add_provider_arguments(retire)
    retire.set_defaults(handler=run_retire)

    show = sub.add_parser(
        "show",
        help="list key ids and their status",
        description="List each key's id, kind, status and dates; never key material.",
    )
    show.add_argument("path", metavar="PATH", help="the keyring file")
    show.add_argument("--json", action="store_true", help="print JSON")
    _add_provider_arguments(show)
    show.set_defaults(handler=run_show)

    # ``usage`` reads the database, so it lives with the SQLAlchemy commands.
    register_usage(sub)


def _add_provider_arguments(
    parser: argparse.ArgumentParser, *, create: bool = False
) -> None:
    group = parser.add_argument_group(
        "key-encryption key",
        "Wrap the keyring's keys under a key-encryption key (at most one of these); "
        "without one, keys are stored in the clear in the 0600 file.",
    ).add_mutually_exclusive_group()
    group.add_argument(
        "--kek-file",
        metavar="FILE",
        help="a local KEK file (base64 of 32 bytes, mode 0600)"
        + ("; created if missing" if create else ""),
    )
    group.add_argument(
        "--kek-env",
        metavar="VAR",
        help="an environment variable holding the KEK (base64)",
    )
    group.add_argument(
        "--aws-kms-key-id", metavar="KEY", help="an AWS KMS key id, ARN or alias"
    )
    parser.add_argument(
        "--aws-region", metavar="REGION", help="the AWS region for --aws-kms-key-id"
    )
    parser.add_argument(
        "--aws-endpoint-url",
        metavar="URL",
        help="a KMS endpoint URL for --aws-kms-key-id",
    )


def _provider(args: argparse.Namespace, *, create: bool = False) -> KeyProvider | None:
    if args.kek_file:
        if create and not Path(args.kek_file).exists():
            return LocalKeyProvider.create_file(args.kek_file)
        return LocalKeyProvider.from_file(args.kek_file)
    if args.kek_env:
        return EnvKeyProvider(args.kek_env)
    if args.aws_kms_key_id:
        return AwsKmsKeyProvider(
            args.aws_kms_key_id,
            region_name=args.aws_region,
            endpoint_url=args.aws_endpoint_url,
        )
    return None


def _fail(command: str, error: Exception) -> int:
    print(f"custdata keys {command}: {error}", file=sys.stderr)
    return 2


def run_init(args: argparse.Namespace) -> int:
    """Run ``custdata keys init PATH``."""
    try:
        keyring = Keyring.generate(provider=_provider(args, create=True))
        keyring.save(args.path, overwrite=False)
    except FileExistsError:
        return _fail(
            "init",
            ConfigurationError("the file exists; not overwriting it", path=args.path),
        )
    except (CustdataError, OSError) as exc:
        return _fail("init", exc)
    print(
        f"created {args.path} (mode 0600): data key {keyring.primary_key_id}, "
        f"index key {keyring.primary_index_key_id}"
    )
    return 0


def run_rotate(args: argparse.Namespace) -> int:
    """Run ``custdata keys rotate PATH``."""
    try:
        keyring = Keyring.load(args.path, provider=_provider(args))
        key_id = keyring.rotate_index_key() if args.index else keyring.rotate()
        keyring.save(args.path)
    except (CustdataError, OSError) as exc:
        return _fail("rotate", exc)
    kind = "index" if args.index else "data"
    print(f"new primary {kind} key {key_id}; older {kind} keys stay active")
    return 0


def run_retire(args: argparse.Namespace) -> int:
    """Run ``custdata keys retire PATH KEY_ID``."""
    try:
        keyring = Keyring.load(args.path, provider=_provider(args))
        keyring.retire(args.key_id)
        keyring.save(args.path)
    except (CustdataError, OSError, ValueError) as exc:
        return _fail("retire", exc)
    print(f"retired key {args.key_id}")
    return 0


def run_show(args: argparse.Namespace) -> int:
    """Run ``custdata keys show PATH``: ids, kinds, status and dates, never key bytes."""
    try:
        keyring = Keyring.load(args.path, provider=_provider(args))
    except (CustdataError, OSError) as exc:
        return _fail("show", exc)
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
        print(json.dumps({"kek": kek, "keys": rows}, indent=2))
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
