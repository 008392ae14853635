"""Key providers: the key-encryption keys (KEKs) that wrap a keyring's data keys."""

from __future__ import annotations

import base64
import binascii
import os

from collections.abc import Mapping
from typing import Protocol, final, runtime_checkable

import attrs

from cryptography.exceptions import InvalidTag

from custdata._errors import ConfigurationError, KeyManagementError

from . import _aead
from ._aead import Aead
from ._envelope import length_prefixed
from ._files import read_private_file, write_private_file
from ._kdf import LABEL_KEK_ID, hkdf


__all__ = ["EnvKeyProvider", "KeyProvider", "LocalKeyProvider"]

_KEK_SIZE = 32
_WRAP_LABEL = b"custdata/kek-wrap/v1"


@runtime_checkable
class KeyProvider(Protocol):
    """A key-encryption key that wraps and unwraps data keys.

    The keyring calls :meth:`wrap_key` when it creates a data key or is re-wrapped
    and :meth:`unwrap_key` when a data key is needed and not cached. Neither is
    ever called on the per-value path.

    ``context`` names the key being wrapped (``{"custdata:key-id": "…",
    "custdata:kind": "data"}``); a provider must bind it to the wrapped key (KMS
    encryption context, AEAD associated data) so a wrapped key cannot be passed
    off as another.
    """

    @property
    def kek_id(self) -> str:
        """A stable, non-secret name of the KEK, recorded in the keyring file."""
        ...

    def wrap_key(self, key: bytes, *, context: Mapping[str, str]) -> bytes:
        """Return ``key`` wrapped under the KEK.

        Raises:
            KeyManagementError: The KEK refused or could not be reached.
        """
        ...

    def unwrap_key(self, wrapped: bytes, *, context: Mapping[str, str]) -> bytes:
        """Return the key inside ``wrapped``.

        Raises:
            KeyManagementError: The KEK refused, could not be reached, or
                ``wrapped`` is not a key it wrapped under this context.
        """
        ...


def _canonical_context(context: Mapping[str, str]) -> bytes:
    parts = [_WRAP_LABEL, bytes((len(context),))]
    for name in sorted(context):
        parts.append(length_prefixed(name.encode("utf-8")))
        parts.append(length_prefixed(context[name].encode("utf-8")))
    return b"".join(parts)


@final
@attrs.frozen(eq=False)
class LocalKeyProvider:
    """A KEK held locally: a 256-bit AES key, wrapping data keys with AES-256-GCM.

    The wrapped form is ``nonce(12) ‖ ciphertext(32) ‖ tag(16)``, with the
    canonical encoding of the context as associated data. Keep the KEK apart from
    the keyring file (another volume, a secret mount), or the wrapping protects
    nothing; :class:`EnvKeyProvider` reads it from the environment instead.

    Args:
        kek: The 32-byte key-encryption key.

    Raises:
        TypeError: ``kek`` is not bytes.
        ValueError: ``kek`` is not 32 bytes long.
    """

    _kek: bytes = attrs.field(repr=False, alias="kek")
    _aead: Aead = attrs.field(init=False, repr=False)
    kek_id: str = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        if not isinstance(self._kek, bytes):
            raise TypeError("kek must be bytes")
        if len(self._kek) != _KEK_SIZE:
            raise ValueError("kek must be 32 bytes")
        object.__setattr__(self, "_aead", _aead.aes_gcm(self._kek))
        object.__setattr__(
            self,
            "kek_id",
            "aes-kek:" + hkdf(self._kek, info=LABEL_KEK_ID, length=8).hex(),
        )

    @classmethod
    def generate(cls) -> LocalKeyProvider:
        """Return a provider with a fresh random KEK."""
        return cls(os.urandom(_KEK_SIZE))

    @classmethod
    def create_file(cls, path: str | os.PathLike[str]) -> LocalKeyProvider:
        """Generate a KEK, write it base64-encoded to a new file of mode 0600, return it.

        Raises:
            FileExistsError: ``path`` exists.
        """
        provider = cls.generate()
        text = base64.b64encode(provider._kek).decode("ascii")  # noqa: SLF001 - own class
        write_private_file(path, text + "\n", overwrite=False)
        return provider

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> LocalKeyProvider:
        """Read a KEK file written by :meth:`create_file`.

        Raises:
            ConfigurationError: The file is missing, accessible to group or others,
                or does not hold a base64-encoded 32-byte key.
        """
        text = read_private_file(path, what="key-encryption key file")
        return cls(_decode_kek(text, path=str(path)))

    def wrap_key(self, key: bytes, *, context: Mapping[str, str]) -> bytes:
        """Return ``nonce ‖ AES-256-GCM(key) ‖ tag`` under the KEK."""
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, key, _canonical_context(context))

    def unwrap_key(self, wrapped: bytes, *, context: Mapping[str, str]) -> bytes:
        """Return the key inside ``wrapped``.

        Raises:
            KeyManagementError: ``wrapped`` was not made by this KEK for this context.
        """
        try:
            return self._aead.decrypt(
                wrapped[:12], wrapped[12:], _canonical_context(context)
            )
        except (InvalidTag, ValueError):
            raise KeyManagementError(
                f"{self.kek_id} could not unwrap the data key"
            ) from None


def _decode_kek(
    text: str, *, path: str | None = None, key_path: str | None = None
) -> bytes:
    try:
        kek = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        kek = b""
    if len(kek) != _KEK_SIZE:
        raise ConfigurationError(
            "expected a base64-encoded 32-byte key", path=path, key_path=key_path
        )
    return kek


@final
class EnvKeyProvider:
    """A KEK read from an environment variable (base64 of 32 bytes).

    Behaves exactly like :class:`LocalKeyProvider` with that key, and has the
    same :attr:`kek_id`, so a keyring wrapped under one loads with the other.
    The variable is read once, when the provider is built.

    Args:
        variable: The variable's name.
        environ: The environment to read; defaults to :data:`os.environ`.

    Raises:
        ConfigurationError: The variable is unset or does not hold a
            base64-encoded 32-byte key.
    """

    def __init__(
        self,
        variable: str = "CUSTDATA_KEK",
        *,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        env = os.environ if environ is None else environ
        value = env.get(variable)
        if value is None:
            raise ConfigurationError(
                "the environment variable is not set", key_path=variable
            )
        self.variable = variable
        self._local = LocalKeyProvider(_decode_kek(value, key_path=variable))

    @property
    def kek_id(self) -> str:
        """The KEK's name, ``aes-kek:`` and a 64-bit fingerprint."""
        return self._local.kek_id

    def wrap_key(self, key: bytes, *, context: Mapping[str, str]) -> bytes:
        """Return ``nonce ‖ AES-256-GCM(key) ‖ tag`` under the KEK."""
        return self._local.wrap_key(key, context=context)

    def unwrap_key(self, wrapped: bytes, *, context: Mapping[str, str]) -> bytes:
        """Return the key inside ``wrapped``.

        Raises:
            KeyManagementError: ``wrapped`` was not made by this KEK for this context.
        """
        return self._local.unwrap_key(wrapped, context=context)

    def __repr__(self) -> str:
        return f"<EnvKeyProvider variable={self.variable!r} kek_id={self.kek_id!r}>"
