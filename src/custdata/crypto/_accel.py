"""Which implementation of the crypto layer's per-value work runs (internal).

The optional C extension :mod:`custdata.crypto._native` (built by
``hatch_build.py`` when the machine has a compiler and OpenSSL's headers)
holds the native AES-256-GCM key object (see :mod:`._aead`) and the batch
form of a UUID subject's canonical text and associated-data tail. The
Python code next to each is the reference and gives the same bytes.
``CUSTDATA_PURE_PYTHON=1`` in the environment, read once at import, forces
it.
"""

from __future__ import annotations

from types import ModuleType

from custdata._accel import load


__all__ = ["native", "native_enabled"]

#: What the Python code calls in the extension (a build lacking any is not used).
_REQUIRED = ("AesGcm", "Reader", "unwrap_keys", "uuid_subjects")

#: The native module in use, or ``None`` (looked up once, at import).
native: ModuleType | None = load("custdata.crypto._native", _REQUIRED)


def native_enabled() -> bool:
    """Return whether custdata's AES-256-GCM runs on the native accelerator.

    ``True`` when the optional extension ``custdata.crypto._native`` was
    built and imported and ``CUSTDATA_PURE_PYTHON`` was not set (to anything
    but ``0``) when custdata was imported; ``False`` when cryptography's
    ``AESGCM`` does the work. Both give the same envelopes; the native one
    opens and seals a value in about half the time (see :doc:`/encryption`,
    "The native accelerator").
    """
    return native is not None
