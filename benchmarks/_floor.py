"""The hand-written AES-GCM floor that the performance budgets are measured against.

``../shared/DESIGN.md`` §6 states the budgets as ratios to this column type: a
``TypeDecorator`` that an application could write by hand in a few lines, with
a random 96-bit nonce, ``table.column`` as associated data and its bind and
result processors as closures — no purpose check, no audit, no subject
binding, no key ids. Every benchmark that reports a ratio "÷ floor" builds its
models with :func:`floor_string` so all of them measure the same floor.
"""

from __future__ import annotations

import os

from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import LargeBinary
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator


_KEY = AESGCM.generate_key(bit_length=256)


class HandAesGcm(TypeDecorator[str]):
    """A ``str`` column sealed with AES-256-GCM, bound to ``table.column``."""

    impl = LargeBinary
    cache_ok = True

    def __init__(self, where: str) -> None:
        super().__init__()
        self.where = where

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any]:
        aead = AESGCM(_KEY)
        encrypt = aead.encrypt
        ad = self.where.encode()
        urandom = os.urandom

        def process(value: Any) -> Any:
            if value is None:
                return None
            nonce = urandom(12)
            return nonce + encrypt(nonce, value.encode(), ad)

        return process

    def result_processor(
        self, dialect: Dialect, coltype: object
    ) -> Callable[[Any], Any]:
        aead = AESGCM(_KEY)
        decrypt = aead.decrypt
        ad = self.where.encode()

        def process(value: Any) -> Any:
            if value is None:
                return None
            blob = bytes(value)
            return decrypt(blob[:12], blob[12:], ad).decode()

        return process


def floor_string(table: str, column: str) -> HandAesGcm:
    """The floor's column type for ``table.column``."""
    return HandAesGcm(f"{table}.{column}")
