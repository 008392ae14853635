"""Audit keys: where chain keys and subject pseudonyms come from.

Every audit key derives from an *audit root key* held by the keyring (or a KMS
provider), identified by a key id written into every record as ``key_ref``::

    K_1(chain)  = HMAC-SHA256(root, "custdata/audit/chain/v1" || 0x00 || chain)
    K_{i+1}     = SHA-256("custdata/audit/evolve/v1" || K_i)
    K_pseudo    = HKDF-SHA256(root_p, salt=None, info="custdata/audit/pseudonym/v1")
    subject_ref = "sr_" + base32(HMAC-SHA256(K_pseudo, tenant || 0x00 || subject))[:26]

Chain keys derive from the *current* root (the primary data key's), so new
chains move to a new ``key_ref`` after a rotation. Pseudonyms must instead stay
the same for the life of the deployment, or "who accessed subject S?" would
split at every rotation: ``root_p`` is the *pseudonym root* chosen by
:func:`pseudonym_root`, for a keyring the audit root of its oldest data key,
which is kept (as a one-way HKDF output) even after that key is retired.

The root never leaves the key source except to derive these; writers keep only
the current evolved chain key, so a later memory dump cannot rewrite the past.
"""

from __future__ import annotations

import hashlib
import hmac

from typing import Any, Final, Protocol, runtime_checkable

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from custdata.crypto._hmac import hmac_states


__all__ = [
    "AuditKeySource",
    "chain_initial_key",
    "evolve_key",
    "pseudonym_key",
    "pseudonym_root",
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
    Subject pseudonyms use :func:`pseudonym_root`: a key source whose current
    root changes (by rotation) must say which root is the stable one, either
    with an optional ``pseudonym_root_key() -> bytes`` method or, like the
    keyring, by listing its keys in ``keys`` (``KeyInfo`` with ``key_id``,
    ``kind`` and ``created_at``).
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


def pseudonym_root(keys: AuditKeySource) -> bytes:
    """Return the root that subject pseudonyms derive from, stable across rotations.

    In order of preference: the key source's own ``pseudonym_root_key()``; for
    a source that lists its keys (a :class:`custdata.crypto.Keyring`), the
    audit root of its oldest data key (by ``created_at``, then listing order),
    which retiring the key keeps; otherwise the current audit root, for a source
    with a single root.

    Raises:
        LookupError: The oldest data key's audit root is gone (a keyring file
            whose retired key kept no audit root).
    """
    own = getattr(keys, "pseudonym_root_key", None)
    if callable(own):
        return bytes(own())
    listed = getattr(keys, "keys", None)
    if listed is not None and not callable(listed):
        data = [
            info
            for info in listed
            if getattr(getattr(info, "kind", None), "value", None) == "data"
        ]
        if data:
            oldest = min(data, key=lambda info: info.created_at)
            return keys.audit_root_key_for(oldest.key_id)
    return keys.audit_root_key()[1]


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


_B32 = "abcdefghijklmnopqrstuvwxyz234567"
#: Two base32 characters for every 10-bit value.
_B32_PAIRS = tuple(a + b for a in _B32 for b in _B32)
_PAIR_SHIFTS = tuple(range(120, -1, -10))


class PseudonymKey:
    """``K_pseudo`` with its HMAC padded-key states computed once (internal).

    :func:`subject_ref` with it skips the HMAC key setup: a third of the cost
    of a new subject's pseudonym.
    """

    __slots__ = ("inner", "outer")

    def __init__(self, key: bytes) -> None:
        self.inner, self.outer = hmac_states(key)

    def __repr__(self) -> str:
        return "<PseudonymKey>"


def subject_ref(key: bytes | PseudonymKey, subject: str, *, tenant: str = "") -> str:
    """Return the keyed pseudonym of a data subject.

    Args:
        key: ``K_pseudo`` from :func:`pseudonym_key`, or a
            :class:`PseudonymKey` made from it.
        subject: The subject's surrogate identifier (never written anywhere).
        tenant: An optional tenant, so equal ids in two tenants differ.

    Returns:
        ``"sr_"`` followed by 26 lower-case base32 characters (130 bits).
    """
    data = f"{tenant}\x00{subject}".encode()
    if key.__class__ is PseudonymKey:
        inner = key.inner.copy()
        inner.update(data)
        outer = key.outer.copy()
        outer.update(inner.digest())
        mac: bytes = outer.digest()
    else:
        mac = hmac.digest(key, data, "sha256")  # type: ignore[arg-type]
    # The first 130 bits of the MAC in RFC 4648 base32, lower case: the same
    # characters as ``base64.b32encode(mac)[:26].lower()``, which is pure
    # Python before 3.13 and costs several microseconds on every new subject.
    bits = int.from_bytes(mac[:17], "big") >> 6
    return "sr_" + "".join([_B32_PAIRS[(bits >> s) & 1023] for s in _PAIR_SHIFTS])
