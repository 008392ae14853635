"""AWS KMS as a key provider (the ``aws`` extra)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, final

from custdata._errors import ConfigurationError, KeyManagementError


if TYPE_CHECKING:
    from mypy_boto3_kms import KMSClient

__all__ = ["AwsKmsKeyProvider"]


@final
class AwsKmsKeyProvider:
    """A KEK in AWS KMS: data keys are wrapped with ``Encrypt`` and unwrapped with ``Decrypt``.

    boto3 is imported only when a provider is built without a client, so
    ``import custdata`` never needs it; install it with ``pip install
    'custdata[aws]'``. The wrapping context is passed as the KMS encryption
    context, so CloudTrail shows which data key each call was for. The keyring
    caches unwrapped keys (see :class:`DataKeyCache`), so KMS is called once per
    data key per cache lifetime, never per value.

    Args:
        key_id: The KMS key's id, ARN or alias. Use the same spelling every time:
            it becomes the keyring's ``kek_id``, which loading checks.
        client: A boto3 KMS client to use; by default one is built from the
            ``region_name`` and ``endpoint_url`` and boto3's usual configuration.
        region_name: The AWS region, when building the client.
        endpoint_url: A KMS endpoint to use instead of AWS's, when building the
            client (a VPC endpoint, or a local KMS for tests).

    Raises:
        ConfigurationError: boto3 is not installed.
        ValueError: ``key_id`` is empty.
    """

    def __init__(
        self,
        key_id: str,
        *,
        client: KMSClient | None = None,
        region_name: str | None = None,
        endpoint_url: str | None = None,
    ) -> None:
        if not key_id:
            raise ValueError("key_id must be non-empty")
        self.key_id = key_id
        if client is None:
            try:
                import boto3  # noqa: PLC0415 - an optional dependency, imported on use
            except ImportError:
                raise ConfigurationError(
                    "AwsKmsKeyProvider needs boto3: pip install 'custdata[aws]'"
                ) from None
            client = boto3.client(
                "kms", region_name=region_name, endpoint_url=endpoint_url
            )
        self.client: KMSClient = client

    @property
    def kek_id(self) -> str:
        """``aws-kms:`` followed by the key id as given."""
        return f"aws-kms:{self.key_id}"

    def wrap_key(self, key: bytes, *, context: Mapping[str, str]) -> bytes:
        """Return ``key`` encrypted by KMS under :attr:`key_id`.

        Raises:
            KeyManagementError: KMS refused or could not be reached.
        """
        response = self._call(
            "Encrypt", KeyId=self.key_id, Plaintext=key, EncryptionContext=dict(context)
        )
        blob: bytes = response["CiphertextBlob"]
        return blob

    def unwrap_key(self, wrapped: bytes, *, context: Mapping[str, str]) -> bytes:
        """Return the key inside ``wrapped``, decrypted by KMS.

        Raises:
            KeyManagementError: KMS refused (wrong key, wrong context, no
                permission) or could not be reached.
        """
        response = self._call(
            "Decrypt",
            KeyId=self.key_id,
            CiphertextBlob=wrapped,
            EncryptionContext=dict(context),
        )
        key: bytes = response["Plaintext"]
        return key

    def _call(self, operation: str, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415 - optional dependency

        method = self.client.encrypt if operation == "Encrypt" else self.client.decrypt
        try:
            return method(**kwargs)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "unknown error")
            raise KeyManagementError(
                f"AWS KMS {operation} with {self.key_id} failed: {code}"
            ) from None
        except BotoCoreError as exc:
            raise KeyManagementError(
                f"AWS KMS {operation} with {self.key_id} failed: {type(exc).__name__}"
            ) from None

    def __repr__(self) -> str:
        return f"<AwsKmsKeyProvider key_id={self.key_id!r}>"
