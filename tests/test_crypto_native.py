"""The native AES-256-GCM (``custdata.crypto._native``) against the reference.

cryptography's ``AESGCM`` with the Python envelope functions of
:mod:`custdata.crypto._aead` is the reference: the native key object and its
methods must give the same bytes for every call and refuse the same forgeries
with the same ``InvalidTag``; column ciphers built on either must read each
other's envelopes. Tests that need the extension skip
where it was not built (a machine without a compiler or OpenSSL's headers).
"""

from __future__ import annotations

import copy
import gc
import os
import pickle
import subprocess
import sys
import uuid

from pathlib import Path
from typing import Any

import pytest

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from custdata import DecryptionError
from custdata._accel import PURE_PYTHON_ENV, load
from custdata.crypto import (
    InMemorySubjectKeyStore,
    Keyring,
    _accel,
    _aead,
    _kdf,
    codec_for,
)
from custdata.crypto._envelope import HEADER_SIZE, length_prefixed, subject_bytes


sys.path.insert(0, str(Path(__file__).parent))
from counting import python_calls


NATIVE = load("custdata.crypto._native", _accel._REQUIRED)
needs_native = pytest.mark.skipif(
    NATIVE is None, reason="the native extension custdata.crypto._native is not built"
)

KEY = bytes(range(32))
CANARY_KEY = b"K" * 16 + b"\xfe\xed" * 8


class Impl:
    """One implementation: its key class, its three envelope functions, its reader."""

    def __init__(self, native: bool) -> None:
        if native:
            assert NATIVE is not None
            cls = NATIVE.AesGcm
            self.names = {
                "aes_gcm": cls,
                "open_envelope": cls.open,
                "open_text": cls.open_text,
                "seal_envelope": cls.seal,
                "reader": NATIVE.Reader,
                "unwrap_keys": NATIVE.unwrap_keys,
            }
        else:
            self.names = {
                "aes_gcm": AESGCM,
                "open_envelope": _aead.py_open_envelope,
                "open_text": _aead.py_open_text,
                "seal_envelope": _aead.py_seal_envelope,
                "reader": None,
                "unwrap_keys": None,
            }
        self.key = self.names["aes_gcm"]

    def open(self, key: Any, *args: Any) -> Any:
        return self.names["open_envelope"](key, *args)

    def open_text(self, key: Any, *args: Any) -> Any:
        return self.names["open_text"](key, *args)

    def seal(self, key: Any, *args: Any) -> Any:
        return self.names["seal_envelope"](key, *args)

    def use(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Column ciphers made from now on run on this implementation."""
        for name, value in self.names.items():
            monkeypatch.setattr(_aead, name, value)


PURE = Impl(native=False)
IMPLEMENTATIONS = [
    pytest.param(False, id="pure"),
    pytest.param(True, id="native", marks=needs_native),
]


@pytest.fixture(params=IMPLEMENTATIONS)
def impl(request: pytest.FixtureRequest) -> Impl:
    """The reference or the native implementation."""
    return Impl(native=request.param)


@pytest.fixture(params=IMPLEMENTATIONS)
def factory(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Impl:
    """Column ciphers made after this fixture use the given implementation."""
    chosen = Impl(native=request.param)
    chosen.use(monkeypatch)
    return chosen


class TestKnownAnswers:
    """The GCM specification's AES-256 test cases, on both implementations."""

    def test_empty_plaintext(self, impl: Impl) -> None:
        """McGrew-Viega test case 13: zero key and nonce, nothing to encrypt."""
        out = impl.key(bytes(32)).encrypt(bytes(12), b"", None)
        assert out.hex() == "530f8afbc74536b9a963b4f1c4cb738b"

    def test_one_zero_block(self, impl: Impl) -> None:
        """McGrew-Viega test case 14: zero key and nonce, one zero block."""
        key = impl.key(bytes(32))
        out = key.encrypt(bytes(12), bytes(16), None)
        assert out.hex() == (
            "cea7403d4d606b6e074ec5d3baf39d18d0d1c8a799996bf0265b98b5d48ab919"
        )
        assert key.decrypt(bytes(12), out, None) == bytes(16)
        envelope = impl.seal(key, b"h", bytes(12), bytes(16), b"", None)
        assert envelope == b"h" + bytes(12) + out
        assert impl.open(key, envelope, 1, b"", None) == bytes(16)


@needs_native
class TestEquivalence:
    """Every call of the native implementation gives the reference's bytes."""

    @settings(max_examples=300, deadline=None)
    @given(
        key=st.binary(min_size=32, max_size=32),
        nonce=st.binary(min_size=12, max_size=12),
        data=st.binary(max_size=600),
        prefix=st.binary(max_size=80),
        tail=st.none() | st.binary(max_size=40),
        header=st.binary(min_size=0, max_size=9),
    )
    def test_same_bytes(
        self,
        key: bytes,
        nonce: bytes,
        data: bytes,
        prefix: bytes,
        tail: bytes | None,
        header: bytes,
    ) -> None:
        """encrypt, decrypt, seal, open and open_text agree with the reference."""
        nat = Impl(native=True)
        ref_key, nat_key = PURE.key(key), nat.key(key)
        aad = prefix + (tail or b"")
        sealed = ref_key.encrypt(nonce, data, aad)
        assert nat_key.encrypt(nonce, data, aad) == sealed
        assert nat_key.decrypt(nonce, sealed, aad) == data
        blob = PURE.seal(ref_key, header, nonce, data, prefix, tail)
        assert blob == header + nonce + sealed
        assert nat.seal(nat_key, header, nonce, data, prefix, tail) == blob
        assert nat.open(nat_key, blob, len(header), prefix, tail) == data
        assert nat.open_text(nat_key, blob, len(header), prefix, tail) == (
            PURE.open_text(ref_key, blob, len(header), prefix, tail)
        )

    @settings(max_examples=300, deadline=None)
    @given(
        text=st.text(max_size=300),
        tag=st.sampled_from([b"\x01", b"\x00", b"\x02", b""]),
        bad_utf8=st.booleans(),
    )
    def test_open_text_frames(self, text: str, tag: bytes, bad_utf8: bool) -> None:
        """A plain str frame comes back as str; any other frame as its bytes."""
        frame = tag + text.encode() + (b"\xff" if bad_utf8 else b"")
        nat = Impl(native=True)
        ref_key, nat_key = PURE.key(KEY), nat.key(KEY)
        blob = PURE.seal(ref_key, b"hdr", bytes(12), frame, b"ctx", None)
        got = nat.open_text(nat_key, blob, 3, b"ctx", None)
        assert got == PURE.open_text(ref_key, blob, 3, b"ctx", None)
        if tag == b"\x01" and not bad_utf8:
            assert got == text
        elif frame[:1] == b"\x01" and not bad_utf8:
            # No tag, and the text itself starts with 0x01: a plain frame too.
            assert got == text[1:]
        else:
            assert got == frame

    @settings(max_examples=300, deadline=None)
    @given(
        data=st.binary(max_size=100),
        where=st.integers(min_value=0, max_value=10_000),
        flip=st.integers(min_value=1, max_value=255),
        cut=st.integers(min_value=0, max_value=200),
    )
    def test_forgeries_refused_alike(
        self, data: bytes, where: int, flip: int, cut: int
    ) -> None:
        """A flipped bit, a cut envelope or other associated data: InvalidTag on both."""
        blob = PURE.seal(PURE.key(KEY), b"hh", b"n" * 12, data, b"prefix", b"tail")
        # The header is not authenticated here (the callers put it into the
        # prefix): flip a byte of the nonce, the ciphertext or the tag.
        i = 2 + where % (len(blob) - 2)
        flipped = blob[:i] + bytes([blob[i] ^ flip]) + blob[i + 1 :]
        cut_blob = blob[: min(cut, len(blob) - 1)]
        for impl in (PURE, Impl(native=True)):
            key = impl.key(KEY)
            for bad, prefix in (
                (flipped, b"prefix"),
                (cut_blob, b"prefix"),
                (blob, b"prefiy"),
            ):
                with pytest.raises(InvalidTag):
                    impl.open(key, bad, 2, prefix, b"tail")
                with pytest.raises(InvalidTag):
                    impl.open_text(key, bad, 2, prefix, b"tail")


@needs_native
class TestNativeObject:
    """What the native key object refuses and never shows."""

    @staticmethod
    def _key(key: bytes = KEY) -> Any:
        assert NATIVE is not None
        return NATIVE.AesGcm(key)

    def test_bad_keys_and_nonces(self) -> None:
        """A key of another size or a nonce of another size is a ValueError."""
        with pytest.raises(ValueError, match="32-byte key"):
            self._key(b"short")
        with pytest.raises(ValueError, match="nonce"):
            self._key().encrypt(b"n" * 11, b"x", None)
        with pytest.raises(ValueError, match="nonce"):
            self._key().seal(b"", b"n" * 13, b"x", b"", None)

    def test_wrong_types_are_type_errors(self) -> None:
        """Text where bytes belong is a TypeError, never a crash."""
        key = self._key()
        with pytest.raises(TypeError):
            key.open("text", 0, b"", None)
        with pytest.raises(TypeError):
            key.open(b"x" * 40, 0, "prefix", None)
        with pytest.raises(TypeError):
            key.seal(b"", b"n" * 12, "frame", b"", None)
        with pytest.raises(TypeError):
            key.decrypt(b"n" * 12, b"x" * 20)
        with pytest.raises(TypeError):
            NATIVE.AesGcm.open(object(), b"x" * 40, 0, b"", None)  # type: ignore[union-attr]

    def test_bytes_like_inputs(self) -> None:
        """encrypt and decrypt take any bytes-like input, as AESGCM does."""
        sealed = AESGCM(KEY).encrypt(b"n" * 12, b"value", b"aad")
        got = self._key().decrypt(
            memoryview(b"n" * 12), bytearray(sealed), memoryview(b"aad")
        )
        assert got == b"value"

    def test_key_never_shown(self) -> None:
        """No repr, pickle or copy of a key object carries the key."""
        key = self._key(CANARY_KEY)
        assert "K" * 4 not in repr(key)
        assert CANARY_KEY.hex() not in repr(key)
        with pytest.raises(TypeError, match="cannot be pickled"):
            pickle.dumps(key)
        with pytest.raises(TypeError, match="cannot be pickled"):
            copy.copy(key)
        with pytest.raises(TypeError, match="cannot be pickled"):
            copy.deepcopy(key)
        assert not hasattr(key, "key")
        assert not hasattr(key, "__dict__")

    def test_not_tracked_by_the_collector(self) -> None:
        """A key object holds no Python object: a cache of them costs a collection nothing."""
        key = self._key()
        key.decrypt(b"n" * 12, AESGCM(KEY).encrypt(b"n" * 12, b"", None), None)
        assert not gc.is_tracked(key)


def _cipher(keyring: Keyring, *, column: str = "email", subjects: Any = None) -> Any:
    return keyring.field_cipher(
        table="customers", column=column, codec=codec_for(str), subject_keys=subjects
    )


class TestColumnCiphers:
    """A column cipher reads the same on either implementation, and each other's envelopes."""

    VALUES = ("alice@example.jp", "", "日本語の住所", "x" * 1000)

    def test_round_trips(self, factory: Impl) -> None:
        """Every read and write call of a column cipher, on this implementation."""
        cipher = _cipher(Keyring.generate())
        subject = uuid.uuid4()
        tail = length_prefixed(subject_bytes(subject))
        for value in self.VALUES:
            blob = cipher.encrypt(value)
            bound = cipher.encrypt(value, subject)
            assert cipher.decrypt(blob) == value
            assert cipher.decrypt(bound, subject) == value
            assert cipher.open_value(blob) == value
            assert cipher.open_value(bound, tail) == value
            assert cipher.open_value(memoryview(bound), tail) == value
        values = list(self.VALUES)
        blobs = cipher.seal_many(values)
        assert cipher.open_fetched(blobs) == values
        assert cipher.decrypt_many(blobs) == values
        assert cipher.open_fetched([bytearray(b) for b in blobs]) == values
        tails = [tail] * len(values)
        bound_blobs = cipher.seal_many(values, tails)
        assert cipher.open_fetched(bound_blobs, tails) == values
        assert cipher.encrypt_many(values, [subject] * len(values)) != bound_blobs
        assert (
            cipher.decrypt_many(
                cipher.encrypt_many(values, [subject] * len(values)),
                [subject] * len(values),
            )
            == values
        )

    def test_non_str_codecs(self, factory: Impl) -> None:
        """A codec other than str decodes its frames from open, not open_text."""
        keyring = Keyring.generate()
        cipher = keyring.field_cipher(table="t", column="n", codec=codec_for(int))
        blobs = cipher.seal_many([1, -2, 10**30])
        assert cipher.open_fetched(blobs) == [1, -2, 10**30]
        assert cipher.open_value(blobs[2]) == 10**30

    @needs_native
    def test_envelopes_cross_implementations(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """What one implementation sealed, the other opens; the same tamper fails on both."""
        keyring = Keyring.generate()
        Impl(native=True).use(monkeypatch)
        sealed_native = _cipher(keyring, column="a").seal_many(list(self.VALUES))
        PURE.use(monkeypatch)
        keyring.rotate()  # drops the derived keys: the next ones are pure
        sealed_pure = _cipher(keyring, column="b").seal_many(list(self.VALUES))
        # The column is bound into each value: open each with a cipher of
        # its own column, on the other implementation.
        assert _cipher(keyring, column="a").open_fetched(sealed_native) == list(
            self.VALUES
        )
        Impl(native=True).use(monkeypatch)
        keyring.rotate()
        reopened = _cipher(keyring, column="b")
        assert reopened.open_fetched(sealed_pure) == list(self.VALUES)
        tampered = sealed_pure[0][:-1] + bytes([sealed_pure[0][-1] ^ 1])
        with pytest.raises(DecryptionError, match="authentication failed"):
            reopened.open_value(tampered)
        with pytest.raises(DecryptionError, match="authentication failed"):
            reopened.open_fetched([tampered, *sealed_pure[1:]])

    def test_tampered_and_foreign_values(self, factory: Impl) -> None:
        """A flipped byte, another column's or another subject's value: DecryptionError."""
        keyring = Keyring.generate()
        cipher = _cipher(keyring)
        other = _cipher(keyring, column="phone")
        a, b = uuid.uuid4(), uuid.uuid4()
        blob = cipher.encrypt("value", a)
        flipped = (
            blob[:HEADER_SIZE]
            + bytes([blob[HEADER_SIZE] ^ 1])
            + blob[HEADER_SIZE + 1 :]
        )
        for bad, subject, reader in (
            (flipped, a, cipher),
            (blob, b, cipher),
            (blob, a, other),
        ):
            with pytest.raises(DecryptionError):
                reader.decrypt(bad, subject)
            with pytest.raises(DecryptionError):
                reader.open_value(bad, length_prefixed(subject_bytes(subject)))

    def test_subject_keys(self, factory: Impl) -> None:
        """Per-subject keys: sealed, opened, held and refused alike on both."""
        keyring = Keyring.generate()
        cipher = _cipher(keyring, subjects=InMemorySubjectKeyStore())
        subjects = [uuid.uuid4() for _ in range(5)]
        tails = [length_prefixed(subject_bytes(s)) for s in subjects]
        values = [f"v{i}" for i in range(5)]
        blobs = cipher.seal_many(values, tails)
        assert cipher.open_fetched(blobs, tails) == values
        held = cipher.held_keys(tails)
        assert [
            cipher.open_held(b, t, held) for b, t in zip(blobs, tails, strict=True)
        ] == values
        with pytest.raises(DecryptionError):
            cipher.open_fetched([blobs[1], *blobs[1:]], tails)


def _found(keyring: Keyring, n: int) -> tuple[dict[bytes, Any], dict[bytes, bytes]]:
    """*n* new subjects' key records as a lookup reads them, and their plain keys."""
    subjects = [subject_bytes(uuid.uuid4()) for _ in range(n)]
    records, keys = keyring._new_subject_records(subjects)
    found = {
        r.subject: (r.subject, r.key_id, r.wrapped_key, r.wrapping_key_id)
        for r in records
    }
    return found, {r.subject: k for r, k in zip(records, keys, strict=True)}


class TestUnwrapKeys:
    """A batch's subject key records unwrapped into cache entries, in one call."""

    HEAD = b"\x02\x00"
    GONE = object()

    def test_entries_open_what_the_plain_keys_seal(self, factory: Impl) -> None:
        """Both implementations: each entry's key object is the record's key; a tombstone is gone."""
        keyring = Keyring.generate()
        found, plain = _found(keyring, 5)
        subjects = list(found)
        # The shapes a driver hands back: a list row, a memoryview key.
        found[subjects[1]] = list(found[subjects[1]])
        row = found[subjects[2]]
        found[subjects[2]] = (row[0], row[1], memoryview(row[2]), row[3])
        tomb = subject_bytes(uuid.uuid4())
        found[tomb] = (tomb, 7, None, None)
        entries = keyring._unwrap_subject_entries(found, self.HEAD, 12.5, self.GONE)
        if factory.names["unwrap_keys"] is None:
            assert entries is None  # the reference unwraps in Python
            return
        assert entries is not None
        assert self.GONE is entries.pop(tomb)
        assert set(subjects) == set(entries)
        for subject, (header, key, key_id, expires) in entries.items():
            assert header == self.HEAD + found[subject][1].to_bytes(4, "big")
            assert (key_id, expires) == (found[subject][1], 12.5)
            nonce = os.urandom(12)
            sealed = AESGCM(plain[subject]).encrypt(nonce, b"value", b"ad")
            assert b"value" == key.decrypt(nonce, sealed, b"ad")

    @needs_native
    def test_entries_are_not_tracked_and_nothing_leaks(self) -> None:
        """Entries hold no tracked object; repeated calls keep every refcount."""
        keyring = Keyring.generate()
        found = _found(keyring, 3)[0]
        tomb = subject_bytes(uuid.uuid4())
        found[tomb] = (tomb, 7, None, None)
        expires = 99.5
        wrappers = {
            keyring.primary_key_id: keyring._subject_wrapper(keyring.primary_key_id)
        }
        label = _kdf.LABEL_SUBJECT_WRAP
        before = [
            sys.getrefcount(o) for o in (self.GONE, expires, *found, *wrappers.values())
        ]
        for _ in range(200):
            out = NATIVE.unwrap_keys(
                found, wrappers, label, self.HEAD, expires, self.GONE
            )
            assert not any(gc.is_tracked(e) for e in out.values())
            del out
        after = [
            sys.getrefcount(o) for o in (self.GONE, expires, *found, *wrappers.values())
        ]
        assert before == after

    @needs_native
    def test_a_forged_or_moved_record_is_refused(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A flipped bit, or a record under another subject: DecryptionError, no key shown."""
        monkeypatch.setattr(_aead, "unwrap_keys", NATIVE.unwrap_keys)
        keyring = Keyring.generate()
        found, plain = _found(keyring, 2)
        a, b = list(found)
        flipped = bytearray(found[a][2])
        flipped[20] ^= 1
        forged = {a: (a, found[a][1], bytes(flipped), found[a][3])}
        moved = {b: (b, found[a][1], found[a][2], found[a][3])}
        for bad in (forged, moved):
            with pytest.raises(DecryptionError) as info:
                keyring._unwrap_subject_entries(bad, self.HEAD, 1.0, self.GONE)
            shown = str(info.value) + repr(info.value)
            assert plain[a].hex() not in shown
            assert "authentication" in shown

    @needs_native
    def test_declines_what_it_does_not_expect(self) -> None:
        """Another type, an id out of range, a missing wrapper, a short record: None."""
        keyring = Keyring.generate()
        found, _ = _found(keyring, 1)
        ((subject, row),) = found.items()
        wrappers = {row[3]: keyring._subject_wrapper(row[3])}
        label = _kdf.LABEL_SUBJECT_WRAP
        declined = [
            {subject.hex(): row},  # a str subject
            {subject: (subject, 2**40, row[2], row[3])},  # a key id past 32 bits
            {subject: (subject, "1", row[2], row[3])},  # a key id that is no int
            {subject: (subject, row[1], row[2], row[3] + 1)},  # no such wrapper
            {subject: (subject, row[1], row[2][:-1], row[3])},  # a record cut short
            {subject: (subject, row[1])},  # a short row
            {subject: 5},  # no row at all
        ]
        for bad in declined:
            assert (
                NATIVE.unwrap_keys(bad, wrappers, label, self.HEAD, 1.0, None) is None
            )
        with pytest.raises(TypeError):
            NATIVE.unwrap_keys(found, wrappers, label, b"\x02", 1.0, None)

    def test_a_corrupt_record_is_a_decryption_error(self, factory: Impl) -> None:
        """A key id past 32 bits, a key read as text: the typed error on both paths."""
        keyring = Keyring.generate()
        found, _ = _found(keyring, 1)
        ((subject, row),) = found.items()
        scope = keyring.subject_scope(InMemorySubjectKeyStore())
        for bad in (
            (subject, 2**40, row[2], row[3]),  # a key id past 32 bits
            (subject, row[1], row[2].hex(), row[3]),  # a key read as text
        ):
            with pytest.raises(DecryptionError):
                scope._unwrap({subject: bad})


class TestReader:
    """A str column's ``read``: ``open_value``, in one C call where it can be."""

    VALUES = ("alice@example.jp", "", "日本語の住所", "x" * 1000)

    def test_reads_as_open_value(self, factory: Impl) -> None:
        """Every value, bound to a subject or not, before and after its key is cached."""
        cipher = _cipher(Keyring.generate())
        tail = length_prefixed(subject_bytes(uuid.uuid4()))
        for value in self.VALUES:
            blob = cipher.encrypt(value)
            bound = cipher.seal_many([value], [tail])[0]
            assert cipher.read(blob) == cipher.open_value(blob) == value
            assert cipher.read(bound, tail) == cipher.open_value(bound, tail) == value
            assert cipher.read(memoryview(bound), tail) == value
            assert cipher.read(bytearray(blob)) == value

    def test_refusals_are_open_values(self, factory: Impl) -> None:
        """What open_value refuses, read refuses with the same error and message."""
        keyring = Keyring.generate()
        cipher, other = _cipher(keyring), _cipher(keyring, column="phone")
        a, b = (length_prefixed(subject_bytes(uuid.uuid4())) for _ in range(2))
        canary = "canary-7f3e-reader"
        blob = cipher.seal_many([canary], [a])[0]
        assert cipher.read(blob, a) == canary  # the key is cached: the reader opens it
        flipped = blob[:-1] + bytes([blob[-1] ^ 1])
        cases: list[tuple[Any, Any, Any]] = [
            (cipher, flipped, a),  # forged
            (cipher, blob, b),  # another subject's
            (cipher, blob, None),  # bound, read unbound
            (other, blob, a),  # another column's
            (cipher, blob[: HEADER_SIZE + 20], a),  # truncated
            (cipher, b"", a),
            (cipher, "text", a),  # not bytes
            (cipher, 12, None),
        ]
        for reader, bad, tail in cases:
            with pytest.raises(DecryptionError) as expected:
                reader.open_value(bad, tail)
            with pytest.raises(DecryptionError) as got:
                reader.read(bad, tail)
            assert str(got.value) == str(expected.value)
            assert canary not in str(got.value)

    def test_other_codecs_and_subject_keys_read_through_open_value(self) -> None:
        """Only a str column under column keys gets a native reader."""
        keyring = Keyring.generate()
        number = keyring.field_cipher(table="t", column="n", codec=codec_for(int))
        per_subject = _cipher(keyring, subjects=InMemorySubjectKeyStore())
        assert number.read == number.open_value
        assert per_subject.read == per_subject.open_value
        assert number.read(number.encrypt(10**30)) == 10**30

    def test_held_reads_as_open_held(self, factory: Impl) -> None:
        """A batch's values under per-subject keys: held opens what open_held opens."""
        keyring = Keyring.generate()
        store = InMemorySubjectKeyStore()
        cipher = _cipher(keyring, subjects=store)
        subjects = [uuid.uuid4() for _ in range(3)]
        tails = [length_prefixed(subject_bytes(s)) for s in subjects]
        values = ["canary-held-0", "", "日本語の住所"]
        blobs = cipher.seal_many(values, tails)
        held = cipher.held_keys(tails)
        for blob, tail, value in zip(blobs, tails, values, strict=True):
            assert cipher.held(blob, tail, held) == cipher.open_held(blob, tail, held)
            assert cipher.held(blob, tail, held) == value
            assert cipher.held(memoryview(blob), tail, held) == value
        assert cipher.held(None, tails[0], held) is None
        assert cipher.held(blobs[0], None, held) is None
        flipped = blobs[0][:-1] + bytes([blobs[0][-1] ^ 1])
        for bad, tail in (
            (flipped, tails[0]),  # forged
            (blobs[0], tails[1]),  # another subject's value
            (blobs[0][: HEADER_SIZE + 20], tails[0]),  # truncated
            ("text", tails[0]),  # not bytes
        ):
            with pytest.raises(DecryptionError) as expected:
                cipher.open_held(bad, tail, held)
            with pytest.raises(DecryptionError) as got:
                cipher.held(bad, tail, held)
            assert str(got.value) == str(expected.value)
            assert "canary-held" not in str(got.value)
        # A subject whose key the batch found destroyed, or found none of.
        from custdata import KeyDestroyedError, UnknownKeyError
        from custdata.crypto._subject import DESTROYED

        for found, error in ((DESTROYED, KeyDestroyedError), (None, UnknownKeyError)):
            gone = {**held, tails[2]: found}
            with pytest.raises(error):
                cipher.open_held(blobs[2], tails[2], gone)
            with pytest.raises(error):
                cipher.held(blobs[2], tails[2], gone)

    def test_held_keys_withdrawn_since_are_never_used(self, factory: Impl) -> None:
        """A batch's held keys after a shred in this process: the shredded subject is refused.

        The held mapping records the scope's generation; a shred raises it,
        so the next read checks the batch's keys again (the others still open).
        """
        from custdata import KeyDestroyedError

        keyring = Keyring.generate()
        store = InMemorySubjectKeyStore()
        cipher = _cipher(keyring, subjects=store)
        alice, bob = uuid.uuid4(), uuid.uuid4()
        tails = [length_prefixed(subject_bytes(s)) for s in (alice, bob)]
        blobs = cipher.seal_many(["canary-gone", "kept"], tails)
        held = cipher.held_keys(tails)
        assert "canary-gone" == cipher.held(blobs[0], tails[0], held)
        assert keyring.shred_subject(alice, store)
        for opener in (cipher.held, cipher.open_held):
            with pytest.raises(KeyDestroyedError) as info:
                opener(blobs[0], tails[0], held)
            assert "canary" not in str(info.value)
            assert "kept" == opener(blobs[1], tails[1], held)

    @needs_native
    def test_native_held_reads_make_no_python_call(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A held value opens in C; a key that is not the value's goes to open_held."""
        Impl(native=True).use(monkeypatch)
        cipher = _cipher(Keyring.generate(), subjects=InMemorySubjectKeyStore())
        tails = [length_prefixed(subject_bytes(uuid.uuid4())) for _ in range(2)]
        blobs = cipher.seal_many(["a", "b"], tails)
        held = cipher.held_keys(tails)
        assert python_calls(lambda: cipher.held(blobs[0], tails[0], held)) == 0
        with pytest.raises(DecryptionError):
            cipher.held(blobs[0], tails[1], held)
        assert python_calls(lambda: cipher.held(blobs[0], {}.get(0), held)) > 0

    @needs_native
    def test_native_subject_batches_open_through_held(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A batch under per-subject keys: the values, Nones and errors open_held gives.

        Natively the batch is one ``map`` over the reader's ``held``: no Python
        call per value (calls flat in the batch's size).
        """
        Impl(native=True).use(monkeypatch)
        cipher = _cipher(Keyring.generate(), subjects=InMemorySubjectKeyStore())
        tails = [length_prefixed(subject_bytes(uuid.uuid4())) for _ in range(60)]
        values = [f"v{i}" for i in range(60)]
        blobs = cipher.seal_many(values, tails)
        assert cipher.open_fetched(blobs, tails) == values  # keys cached
        small = python_calls(lambda: cipher.open_fetched(blobs[:10], tails[:10]))
        large = python_calls(lambda: cipher.open_fetched(blobs, tails))
        assert small == large
        assert cipher.open_fetched([None, blobs[1]], [tails[0], None]) == [None, None]
        with pytest.raises(ValueError, match="differ in length"):
            cipher.open_fetched(blobs[:2], tails[:3])
        flipped = blobs[5][:-1] + bytes([blobs[5][-1] ^ 1])
        with pytest.raises(DecryptionError, match="authentication failed"):
            cipher.open_fetched([*blobs[:5], flipped], tails[:6])

    @needs_native
    def test_native_reads_make_no_python_call(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A cached key's value opens in C; anything else goes to open_value."""
        Impl(native=True).use(monkeypatch)
        cipher = _cipher(Keyring.generate())
        blob = cipher.encrypt("value")
        assert python_calls(lambda: cipher.read(blob)) > 0  # derives the key
        assert python_calls(lambda: cipher.read(blob)) == 0
        flipped = blob[:-1] + bytes([blob[-1] ^ 1])
        with pytest.raises(DecryptionError):
            cipher.read(flipped)
        assert python_calls(lambda: cipher.read(memoryview(blob))) > 0

    @needs_native
    def test_leased_keys_are_spent_per_value(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A provider's unwrapped key with a use limit: every read spends a use."""
        from custdata.crypto import DataKeyCache, LocalKeyProvider

        Impl(native=True).use(monkeypatch)
        keyring = Keyring.generate(
            provider=LocalKeyProvider.generate(), cache=DataKeyCache(max_uses=3)
        )
        cipher = _cipher(keyring)
        blob = cipher.encrypt("value")
        unwraps = 0
        real = keyring._data_key

        def counted(key_id: int) -> Any:
            nonlocal unwraps
            unwraps += 1
            return real(key_id)

        monkeypatch.setattr(keyring, "_data_key", counted)
        for _ in range(10):
            assert cipher.read(blob) == "value"
            assert python_calls(lambda: cipher.read(blob)) > 0
        # 20 reads, 3 uses per unwrapped key: the key was unwrapped again.
        assert unwraps >= 20 // 3 - 1

    @needs_native
    def test_rotation_and_retirement_empty_the_reader(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A retired key's value is refused, though the reader had its key."""
        from custdata import UnknownKeyError

        Impl(native=True).use(monkeypatch)
        keyring = Keyring.generate()
        cipher = _cipher(keyring)
        blob = cipher.encrypt("value")
        assert cipher.read(blob) == "value"
        old = keyring.primary_key_id
        keyring.rotate()
        assert python_calls(lambda: cipher.read(blob)) > 0  # derived afresh
        keyring.retire(old)
        with pytest.raises(UnknownKeyError):
            cipher.read(blob)

    @needs_native
    def test_reader_shows_nothing(self) -> None:
        """No key in its repr; it cannot be pickled or copied; bad arguments are typed errors."""
        assert NATIVE is not None
        cipher = _cipher(Keyring.generate())
        subject_context = cipher._subject_context
        args = (HEADER_SIZE, cipher.open_value, subject_context, cipher.open_held)
        reader = NATIVE.Reader({}, *args)
        assert repr(reader) == "<custdata column reader>"
        for attempt in (pickle.dumps, copy.copy, copy.deepcopy):
            with pytest.raises(TypeError, match="Reader cannot be pickled or copied"):
                attempt(reader)
        with pytest.raises(TypeError):
            reader.read()
        with pytest.raises(TypeError):
            reader.read(b"", None, None)
        with pytest.raises(TypeError):
            reader.held(b"", b"")
        with pytest.raises(TypeError):
            NATIVE.Reader([], *args)
        with pytest.raises(ValueError, match="callable"):
            NATIVE.Reader({}, HEADER_SIZE, None, subject_context, cipher.open_held)
        with pytest.raises(ValueError, match="callable"):
            NATIVE.Reader({}, HEADER_SIZE, cipher.open_value, subject_context, 1)
        with pytest.raises(ValueError, match="header size"):
            NATIVE.Reader({}, -1, *args[1:])
        for generation in ([], [0, 1], (0,), 0):
            with pytest.raises(TypeError, match="generation"):
                NATIVE.Reader({}, *args, generation)
        # Entries of another shape are never used: the fallbacks read.
        blob = cipher.encrypt("value")
        odd = NATIVE.Reader({blob[:HEADER_SIZE]: ("no", b"", b"")}, *args)
        assert odd.read(blob) == "value"
        tail = length_prefixed(subject_bytes(uuid.uuid4()))
        for by_tail in ({tail: ("no",)}, {tail: (blob[:HEADER_SIZE], "no")}, {}):
            with pytest.raises((DecryptionError, TypeError, KeyError)):
                odd.held(blob, tail, by_tail)

    @needs_native
    def test_a_dropped_cipher_is_collected(self) -> None:
        """The reader and its cipher refer to each other: the collector frees both."""
        assert NATIVE is not None

        def readers() -> int:
            return sum(o.__class__ is NATIVE.Reader for o in gc.get_objects())

        gc.collect()
        before = readers()
        keyring = Keyring.generate()
        cipher = _cipher(keyring)
        cipher.read(cipher.encrypt("value"))
        assert readers() == before + 1
        del keyring, cipher
        gc.collect()
        assert readers() == before


def _python(code: str, **env: str) -> str:
    environ = {k: v for k, v in os.environ.items() if k != PURE_PYTHON_ENV}
    environ.update(env)
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=environ,
        check=True,
    )
    return done.stdout.strip()


_ROUND_TRIP = """
import custdata.crypto as c
k = c.Keyring.generate()
f = k.field_cipher(table="t", column="c", codec=c.codec_for(str))
print(c.native_enabled(), f.decrypt(f.encrypt("ok")))
"""


class TestSelection:
    """Which implementation runs, and what says so."""

    def test_pure_python_forced(self) -> None:
        """CUSTDATA_PURE_PYTHON=1 (read at import) runs cryptography's AESGCM."""
        assert _python(_ROUND_TRIP, CUSTDATA_PURE_PYTHON="1") == "False ok"

    @needs_native
    def test_native_by_default(self) -> None:
        """With the extension built and nothing set, the native code runs."""
        assert _python(_ROUND_TRIP) == "True ok"

    def test_missing_extension_means_pure_python(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """An extension that cannot be imported is not an error: the reference runs."""
        monkeypatch.delenv(PURE_PYTHON_ENV, raising=False)
        monkeypatch.setitem(sys.modules, "custdata.crypto._native", None)
        assert load("custdata.crypto._native", _accel._REQUIRED) is None

    def test_stale_build_ignored(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A module without a name the Python code calls is not used."""
        monkeypatch.delenv(PURE_PYTHON_ENV, raising=False)
        import types

        stale = types.ModuleType("custdata.crypto._native")
        monkeypatch.setitem(sys.modules, "custdata.crypto._native", stale)
        assert load("custdata.crypto._native", _accel._REQUIRED) is None

    def test_native_enabled_is_what_runs(self) -> None:
        """custdata.crypto.native_enabled() is whether the key class is the native type."""
        import custdata.crypto

        assert custdata.crypto.native_enabled() is (_aead.aes_gcm is not AESGCM)


def test_value_canary_absent_from_errors(factory: Impl) -> None:
    """A refused value's plaintext and the key never appear in the error."""
    keyring = Keyring.generate()
    cipher = _cipher(keyring)
    canary = "CANARY-3f9a1b7c"
    blob = cipher.encrypt(canary)
    bad = blob[:-1] + bytes([blob[-1] ^ 0x55])
    with pytest.raises(DecryptionError) as caught:
        cipher.open_value(bad)
    text = str(caught.value) + repr(caught.value)
    assert canary not in text
    assert blob.hex() not in text


def test_held_str_values_open_without_a_codec_call(factory: Impl) -> None:
    """A per-subject str value opened with its batch's keys is decoded by open_text."""
    keyring = Keyring.generate()
    cipher = _cipher(keyring, subjects=InMemorySubjectKeyStore())
    subject = uuid.uuid4()
    tail = length_prefixed(subject_bytes(subject))
    blob = cipher.seal_many(["held value"], [tail])[0]
    held = cipher.held_keys([tail])
    called: list[str] = []

    def profile(frame: Any, event: str, arg: object) -> None:
        if event == "call":
            called.append(frame.f_code.co_name)

    sys.setprofile(profile)
    try:
        opened = cipher.open_held(blob, tail, held)
    finally:
        sys.setprofile(None)
    assert opened == "held value"
    assert "_str_decode" not in called
    assert "open_held" in called
