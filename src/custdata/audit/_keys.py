"""Audit keys: where chain keys and subject pseudonyms come from.

Every audit key derives from an *audit root key* held by the keyring (or a KMS
provider), identified by a key id written into every record as ``key_ref``::

    K_1(chain)  = HMAC-SHA256(root, "custdata/audit/chain/v1" || 0x00 || chain)
    K_{i+1}     = SHA-256("custdata/audit/evolve/v1" || K_i)
    K_pseudo    = HKDF-SHA256(root, salt=None, info="custdata/audit/pseudonym/v1")
    subject_ref = "sr_" + base32(HMAC-SHA256(K_pseudo, tenant || 0x00 || subject))[:26]

The root never leaves the key source except to derive these; writers keep only
the current evolved chain key, so a later memory dump cannot rewrite the past.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from typing import Any, Final, Protocol, runtime_checkable

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


__all__ = [
    "AuditKeySource",
    "chain_initial_key",
    "evolve_key",
    "pseudonym_key",
    "root_for",
    "subject_ref",
]

_CHAIN_LABEL: Final = b"custdata/audit/chain/v1\x00"
_EVOLVE_LABEL: Final = b"custdata/audit/evolve/v1"
_PSEUDO_INFO: Final = b"custdata/audit/pseudonym/v1"


@runtime_checkable
class AuditKeySource(Protocol):
    """Anything that holds audit root keys; :class:`custdata.crypto.Keyring` does.

    Writers call :meth:`audit_root_key` once per chain; the verifier calls
    :meth:`audit_root_key_for` with the ``key_ref`` stored in each record.
    """

    def audit_root_key(self) -> tuple[Any, bytes]:
        """Return the current audit root key as ``(key_id, 32 bytes)``.

        The key id (an ``int`` or a ``str``) is written as text in ``key_ref``.
        """

    def audit_root_key_for(self, key_id: Any) -> bytes:
        """Return the audit root key named *key_id*.

        Raises:
            LookupError: No audit root key has that id.
        """


def root_for(keys: AuditKeySource, key_ref: str) -> bytes:
    """Return the audit root named by a stored ``key_ref`` (``int`` ids as text).

    Raises:
        LookupError: The key source has no such audit root.
    """
    if key_ref.isdigit():
        try:
            return keys.audit_root_key_for(int(key_ref))
        except LookupError:
            pass
    return keys.audit_root_key_for(key_ref)


def chain_initial_key(root: bytes, chain: str) -> bytes:
    """Derive the first key of *chain* from the audit *root* key."""
    return hmac.digest(root, _CHAIN_LABEL + chain.encode("utf-8"), "sha256")


def evolve_key(key: bytes) -> bytes:
    """Return the next chain key; the previous one cannot be recovered from it."""
    return hashlib.sha256(_EVOLVE_LABEL + key).digest()


def pseudonym_key(root: bytes) -> bytes:
    """Derive the subject-pseudonym key ``K_pseudo`` from the audit *root* key."""
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=_PSEUDO_INFO
    ).derive(root)


def subject_ref(key: bytes, subject: str, *, tenant: str = "") -> str:
    """Return the keyed pseudonym of a data subject.

    Args:
        key: ``K_pseudo`` from :func:`pseudonym_key`.
        subject: The subject's surrogate identifier (never written anywhere).
        tenant: An optional tenant, so equal ids in two tenants differ.

    Returns:
        ``"sr_"`` followed by 26 lower-case base32 characters (130 bits).
    """
    mac = hmac.digest(key, f"{tenant}\x00{subject}".encode(), "sha256")
    return "sr_" + base64.b32encode(mac).decode("ascii")[:26].lower()
