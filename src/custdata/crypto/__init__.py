"""Field-level encryption and key management.

The layer every encrypted column uses: a versioned binary envelope around
AES-256-GCM (or, opt-in, deterministic AES-SIV), typed codecs for the values
inside it, a keyring of versioned data and index keys with per-column HKDF
subkeys, key providers that wrap the keyring under a key-encryption key (a local
key, an environment variable, AWS KMS), per-subject keys for crypto-shredding and
blind indexes for equality search. See ``docs/encryption.md``, ``docs/keys.md``
and ``docs/security.md``.
"""

from __future__ import annotations

from ._accel import native_enabled as native_enabled
from ._aws import AwsKmsKeyProvider as AwsKmsKeyProvider
from ._blind_index import BlindIndex as BlindIndex
from ._blind_index import normalize_email as normalize_email
from ._blind_index import normalize_phone as normalize_phone
from ._cache import DataKeyCache as DataKeyCache
from ._cipher import DeterministicFieldCipher as DeterministicFieldCipher
from ._cipher import FieldCipher as FieldCipher
from ._codecs import Codec as Codec
from ._codecs import codec_for as codec_for
from ._envelope import Algorithm as Algorithm
from ._envelope import Subject as Subject
from ._envelope import envelope_key_id as envelope_key_id
from ._keyring import KeyInfo as KeyInfo
from ._keyring import KeyKind as KeyKind
from ._keyring import Keyring as Keyring
from ._keyring import KeyStatus as KeyStatus
from ._providers import EnvKeyProvider as EnvKeyProvider
from ._providers import KeyProvider as KeyProvider
from ._providers import LocalKeyProvider as LocalKeyProvider
from ._subject import BatchSubjectKeyStore as BatchSubjectKeyStore
from ._subject import FileSubjectKeyStore as FileSubjectKeyStore
from ._subject import InMemorySubjectKeyStore as InMemorySubjectKeyStore
from ._subject import SubjectKeyRecord as SubjectKeyRecord
from ._subject import SubjectKeyScope as SubjectKeyScope
from ._subject import SubjectKeyStore as SubjectKeyStore


__all__ = [
    "Algorithm",
    "AwsKmsKeyProvider",
    "BatchSubjectKeyStore",
    "BlindIndex",
    "Codec",
    "DataKeyCache",
    "DeterministicFieldCipher",
    "EnvKeyProvider",
    "FieldCipher",
    "FileSubjectKeyStore",
    "InMemorySubjectKeyStore",
    "KeyInfo",
    "KeyKind",
    "KeyProvider",
    "KeyStatus",
    "Keyring",
    "LocalKeyProvider",
    "Subject",
    "SubjectKeyRecord",
    "SubjectKeyScope",
    "SubjectKeyStore",
    "codec_for",
    "envelope_key_id",
    "native_enabled",
    "normalize_email",
    "normalize_phone",
]

for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type):
        _obj.__module__ = __name__
del _name, _obj
