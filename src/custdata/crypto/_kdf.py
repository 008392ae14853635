"""Key derivation: HKDF-SHA256 with one label per use.

Every AES or HMAC key the library uses on a value is derived from a keyring key
with HKDF-SHA256 (RFC 5869, no salt) and an ``info`` made of a use label and,
for per-column keys, the column's canonical context (see ``_envelope``). So no
key is shared by two columns or two uses, and no keyring key is used directly.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ._envelope import context_bytes


__all__ = [
    "LABEL_AUDIT_ROOT",
    "LABEL_BLIND_INDEX",
    "LABEL_FIELD_GCM",
    "LABEL_FIELD_SIV",
    "LABEL_KEK_ID",
    "LABEL_SUBJECT_WRAP",
    "column_key",
    "hkdf",
]

LABEL_FIELD_GCM = b"custdata/field/aes-256-gcm/v1"
LABEL_FIELD_SIV = b"custdata/field/aes-siv-512/v1"
LABEL_BLIND_INDEX = b"custdata/blind-index/hmac-sha256/v1"
LABEL_SUBJECT_WRAP = b"custdata/subject-key-wrap/v1"
LABEL_AUDIT_ROOT = b"custdata/audit/root/v1"
LABEL_KEK_ID = b"custdata/kek-id/v1"


def hkdf(key: bytes, *, info: bytes, length: int = 32) -> bytes:
    """Return ``length`` bytes of HKDF-SHA256 output for ``key`` and ``info``."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(
        key
    )


def column_key(
    key: bytes, label: bytes, table: str, column: str, *, length: int = 32
) -> bytes:
    """Return the subkey of ``key`` for one use (``label``) on one column."""
    return hkdf(key, info=label + context_bytes(table, column), length=length)
