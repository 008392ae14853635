"""Key providers, re-wrapping under a new KEK, the data-key cache, and AWS KMS on loopback."""

from __future__ import annotations

import base64
import json
import socket

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from custdata import ConfigurationError, KeyManagementError
from custdata.crypto import (
    AwsKmsKeyProvider,
    DataKeyCache,
    EnvKeyProvider,
    KeyProvider,
    Keyring,
    LocalKeyProvider,
    codec_for,
)


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CountingProvider:
    """Wraps a provider and counts unwrap calls (the KMS calls that cost money)."""

    def __init__(self, inner: KeyProvider) -> None:
        self.inner = inner
        self.unwraps = 0
        self.wraps = 0

    @property
    def kek_id(self) -> str:
        return self.inner.kek_id

    def wrap_key(self, key: bytes, *, context: Mapping[str, str]) -> bytes:
        self.wraps += 1
        return self.inner.wrap_key(key, context=context)

    def unwrap_key(self, wrapped: bytes, *, context: Mapping[str, str]) -> bytes:
        self.unwraps += 1
        return self.inner.unwrap_key(wrapped, context=context)


class TestLocalProviders:
    def test_wrapped_keyring_round_trip(self, tmp_path: Path) -> None:
        """A keyring wrapped by a local KEK stores no key in the clear and loads with the KEK."""
        provider = LocalKeyProvider.generate()
        keyring = Keyring.generate(provider=provider)
        keyring.save(tmp_path / "k.json")
        document = json.loads((tmp_path / "k.json").read_text())
        assert (provider.kek_id, False) == (
            document["kek"],
            any("key" in k for k in document["keys"]),
        )
        blob = keyring.field_cipher(
            table="t", column="c", codec=codec_for(str)
        ).encrypt("v")
        loaded = Keyring.load(tmp_path / "k.json", provider=provider)
        assert "v" == loaded.field_cipher(
            table="t", column="c", codec=codec_for(str)
        ).decrypt(blob)

    @pytest.mark.parametrize(
        "case", ["no-provider", "other-provider", "provider-for-clear"]
    )
    def test_provider_mismatch_refused(self, tmp_path: Path, case: str) -> None:
        """Loading with no, or the wrong, provider is a configuration error."""
        wrapped = case != "provider-for-clear"
        Keyring.generate(
            provider=LocalKeyProvider.generate() if wrapped else None
        ).save(tmp_path / "k.json")
        provider = None if case == "no-provider" else LocalKeyProvider.generate()
        with pytest.raises(ConfigurationError):
            Keyring.load(tmp_path / "k.json", provider=provider)

    def test_kek_file(self, tmp_path: Path) -> None:
        """create_file writes a 0600 KEK file; from_file reads it and refuses loose modes."""
        path = tmp_path / "kek"
        created = LocalKeyProvider.create_file(path)
        assert (0o600, created.kek_id) == (
            path.stat().st_mode & 0o777,
            LocalKeyProvider.from_file(path).kek_id,
        )
        with pytest.raises(FileExistsError):
            LocalKeyProvider.create_file(path)
        path.chmod(0o644)
        with pytest.raises(ConfigurationError):
            LocalKeyProvider.from_file(path)

    def test_env_provider_matches_local(self) -> None:
        """The environment provider is the same KEK as a local one with the same bytes."""
        kek = bytes(range(32))
        env = EnvKeyProvider(
            "MY_KEK", environ={"MY_KEK": base64.b64encode(kek).decode()}
        )
        local = LocalKeyProvider(kek)
        wrapped = env.wrap_key(b"k" * 32, context={"a": "b"})
        assert (env.kek_id, b"k" * 32) == (
            local.kek_id,
            local.unwrap_key(wrapped, context={"a": "b"}),
        )
        assert "MY_KEK" in repr(env)
        assert base64.b64encode(kek).decode() not in repr(env) + repr(local)

    @pytest.mark.parametrize(
        "value", [None, "", "not base64", base64.b64encode(bytes(16)).decode()]
    )
    def test_env_provider_bad_variable(self, value: str | None) -> None:
        """A missing or malformed variable fails at construction, naming the variable."""
        environ = {} if value is None else {"MY_KEK": value}
        with pytest.raises(ConfigurationError, match="MY_KEK"):
            EnvKeyProvider("MY_KEK", environ=environ)

    @pytest.mark.parametrize("kek", [b"short", "x" * 32])
    def test_local_provider_bad_kek(self, kek: Any) -> None:
        """The KEK must be 32 bytes."""
        with pytest.raises((TypeError, ValueError)):
            LocalKeyProvider(kek)

    def test_unwrap_under_other_context_fails(self) -> None:
        """A wrapped key cannot be passed off as another key."""
        provider = LocalKeyProvider.generate()
        wrapped = provider.wrap_key(b"k" * 32, context={"custdata:key-id": "1"})
        with pytest.raises(KeyManagementError):
            provider.unwrap_key(wrapped, context={"custdata:key-id": "2"})


class TestRewrap:
    def test_rewrap_changes_no_ciphertext(self, tmp_path: Path) -> None:
        """Re-wrapping under a new KEK keeps every value readable; the old KEK no longer loads it."""
        old, new = LocalKeyProvider.generate(), LocalKeyProvider.generate()
        keyring = Keyring.generate(provider=old)
        first = keyring.primary_key_id
        keyring.rotate()
        keyring.retire(first)
        blob = keyring.field_cipher(
            table="t", column="c", codec=codec_for(str)
        ).encrypt("v")
        keyring.rewrap(new)
        keyring.save(tmp_path / "k.json")
        with pytest.raises(ConfigurationError):
            Keyring.load(tmp_path / "k.json", provider=old)
        reloaded = Keyring.load(tmp_path / "k.json", provider=new)
        assert (keyring.keys, keyring.audit_root_key_for(first), "v") == (
            reloaded.keys,
            reloaded.audit_root_key_for(first),
            reloaded.field_cipher(table="t", column="c", codec=codec_for(str)).decrypt(
                blob
            ),
        )

    def test_rewrap_protects_a_clear_keyring(self, tmp_path: Path) -> None:
        """A keyring with keys in the clear can be put under a KEK."""
        keyring = Keyring.generate()
        blob = keyring.field_cipher(
            table="t", column="c", codec=codec_for(str)
        ).encrypt("v")
        provider = LocalKeyProvider.generate()
        keyring.rewrap(provider)
        keyring.save(tmp_path / "k.json")
        assert '"key"' not in (tmp_path / "k.json").read_text()
        loaded = Keyring.load(tmp_path / "k.json", provider=provider)
        assert "v" == loaded.field_cipher(
            table="t", column="c", codec=codec_for(str)
        ).decrypt(blob)

    def test_rewrap_needs_a_provider(self) -> None:
        """rewrap refuses anything that is not a KeyProvider."""
        with pytest.raises(TypeError):
            Keyring.generate().rewrap(object())  # type: ignore[arg-type]


class TestDataKeyCache:
    def _keyring(
        self, tmp_path: Path, **cache: Any
    ) -> tuple[Keyring, CountingProvider, FakeClock, bytes]:
        provider = LocalKeyProvider.generate()
        writer = Keyring.generate(provider=provider)
        blob = writer.field_cipher(table="t", column="c", codec=codec_for(str)).encrypt(
            "v"
        )
        writer.save(tmp_path / "k.json")
        clock = FakeClock()
        counting = CountingProvider(provider)
        reader = Keyring.load(
            tmp_path / "k.json",
            provider=counting,
            cache=DataKeyCache(clock=clock, **cache),
        )
        return reader, counting, clock, blob

    def test_ttl_bounds_provider_calls(self, tmp_path: Path) -> None:
        """10,000 decryptions make one unwrap per data key per TTL."""
        keyring, provider, clock, blob = self._keyring(tmp_path, ttl=60)
        cipher = keyring.field_cipher(table="t", column="c", codec=codec_for(str))
        assert 0 == provider.unwraps
        for _ in range(10_000):
            cipher.decrypt(blob)
        assert 1 == provider.unwraps
        clock.now += 59
        cipher.decrypt(blob)
        assert 1 == provider.unwraps
        clock.now += 1
        for _ in range(10_000):
            cipher.decrypt(blob)
        assert 2 == provider.unwraps

    def test_max_uses_bounds_key_lifetime(self, tmp_path: Path) -> None:
        """After max_uses values the key is unwrapped again."""
        keyring, provider, _, blob = self._keyring(tmp_path, ttl=3600, max_uses=1000)
        cipher = keyring.field_cipher(table="t", column="c", codec=codec_for(str))
        cipher.decrypt_many([blob] * 2500)
        assert 3 == provider.unwraps

    def test_columns_share_one_unwrap(self, tmp_path: Path) -> None:
        """Ciphers of many columns share the cached data key."""
        keyring, provider, _, _ = self._keyring(tmp_path)
        for column in "abcdef":
            cipher = keyring.field_cipher(
                table="t", column=column, codec=codec_for(str)
            )
            cipher.decrypt(cipher.encrypt("v"))
        assert 1 == provider.unwraps

    @pytest.mark.parametrize(("ttl", "max_uses"), [(0, None), (-1, None), (10, 0)])
    def test_bad_settings(self, ttl: float, max_uses: int | None) -> None:
        """ttl and max_uses must be positive."""
        with pytest.raises(ValueError):
            DataKeyCache(ttl=ttl, max_uses=max_uses)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def kms_endpoint() -> Iterator[str]:
    """A KMS API endpoint on loopback: moto's server, started and stopped here."""
    moto_server = pytest.importorskip("moto.server")
    server = moto_server.ThreadedMotoServer(
        ip_address="127.0.0.1", port=_free_port(), verbose=False
    )
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def kms(kms_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A boto3 KMS client for the loopback endpoint, with fake credentials."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": "/nonexistent",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
        "NO_PROXY": "127.0.0.1",
    }.items():
        monkeypatch.setenv(name, value)
    import boto3

    return boto3.client("kms", endpoint_url=kms_endpoint, region_name="us-east-1")


class TestAwsKms:
    def test_keyring_under_kms(
        self, kms: Any, kms_endpoint: str, tmp_path: Path
    ) -> None:
        """A keyring wrapped by KMS saves, loads and decrypts through the loopback endpoint."""
        key_id = kms.create_key(Description="custdata test KEK")["KeyMetadata"]["KeyId"]
        provider = AwsKmsKeyProvider(
            key_id, region_name="us-east-1", endpoint_url=kms_endpoint
        )
        keyring = Keyring.generate(provider=provider)
        blob = keyring.field_cipher(
            table="t", column="c", codec=codec_for(str)
        ).encrypt("v")
        keyring.save(tmp_path / "k.json")
        assert (
            f"aws-kms:{key_id}" == json.loads((tmp_path / "k.json").read_text())["kek"]
        )
        loaded = Keyring.load(
            tmp_path / "k.json", provider=AwsKmsKeyProvider(key_id, client=kms)
        )
        assert "v" == loaded.field_cipher(
            table="t", column="c", codec=codec_for(str)
        ).decrypt(blob)

    def test_ten_thousand_values_one_kms_call_per_data_key(
        self, kms: Any, tmp_path: Path
    ) -> None:
        """Decrypting 10,000 values under two data keys makes exactly two KMS Decrypt calls."""
        key_id = kms.create_key()["KeyMetadata"]["KeyId"]
        writer = Keyring.generate(provider=AwsKmsKeyProvider(key_id, client=kms))
        cipher = writer.field_cipher(table="t", column="c", codec=codec_for(str))
        blobs = [cipher.encrypt(f"v{i}") for i in range(5_000)]
        writer.rotate()
        blobs += [cipher.encrypt(f"w{i}") for i in range(5_000)]
        writer.save(tmp_path / "k.json")
        calls: list[str] = []
        kms.meta.events.register(
            "before-call.kms.Decrypt", lambda **_: calls.append("Decrypt")
        )
        reader = Keyring.load(
            tmp_path / "k.json", provider=AwsKmsKeyProvider(key_id, client=kms)
        )
        reader_cipher = reader.field_cipher(table="t", column="c", codec=codec_for(str))
        values = [reader_cipher.decrypt(b) for b in blobs] + reader_cipher.decrypt_many(
            blobs
        )
        assert (20_000, 2) == (len(values), len(calls))

    def test_kms_refusal_is_key_management_error(self, kms: Any) -> None:
        """A KMS error becomes KeyManagementError naming the operation, not the data."""
        key_id = kms.create_key()["KeyMetadata"]["KeyId"]
        provider = AwsKmsKeyProvider(key_id, client=kms)
        wrapped = provider.wrap_key(b"k" * 32, context={"custdata:key-id": "1"})
        with pytest.raises(KeyManagementError, match="Decrypt"):
            provider.unwrap_key(wrapped, context={"custdata:key-id": "2"})
        with pytest.raises(KeyManagementError, match="Encrypt"):
            AwsKmsKeyProvider("alias/absent", client=kms).wrap_key(
                b"k" * 32, context={}
            )

    def test_empty_key_id(self) -> None:
        """The KMS key id is required."""
        with pytest.raises(ValueError):
            AwsKmsKeyProvider("", client=object())  # type: ignore[arg-type]
