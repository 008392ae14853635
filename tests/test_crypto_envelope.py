"""The envelope: format, known answers, and errors instead of garbage."""

from __future__ import annotations

import datetime as dt
import decimal
import ipaddress
import json
import re
import uuid

from pathlib import Path
from typing import Any

import pytest

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, AESSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from custdata import DecryptionError, UnknownKeyError
from custdata.crypto import (
    Keyring,
    codec_for,
    envelope_key_id,
    normalize_email,
    normalize_phone,
)


VECTORS = json.loads(
    (Path(__file__).parent / "vectors" / "envelope_v1.json").read_text("utf-8")
)


def _iso_datetime(text: str) -> dt.datetime:
    """``datetime.fromisoformat``, with Python 3.10's six-digit fraction rule met."""
    match = re.fullmatch(r"(.*T\d\d:\d\d:\d\d)\.(\d{1,6})(.*)", text)
    if match:
        head, fraction, tail = match.groups()
        text = f"{head}.{fraction.ljust(6, '0')}{tail}"
    return dt.datetime.fromisoformat(text)


_TYPES: dict[str, Any] = {
    "str": (str, str),
    "bytes": (bytes, bytes.fromhex),
    "int": (int, int),
    "Decimal": (decimal.Decimal, decimal.Decimal),
    "float": (float, float),
    "bool": (bool, lambda t: t == "true"),
    "date": (dt.date, dt.date.fromisoformat),
    "datetime": (dt.datetime, _iso_datetime),
    "time": (dt.time, dt.time.fromisoformat),
    "UUID": (uuid.UUID, uuid.UUID),
    "JSON": (dict, json.loads),
    "IP address": (ipaddress.IPv6Address, ipaddress.ip_address),
}


def _subject(spec: dict[str, Any] | None) -> Any:
    if spec is None:
        return None
    return {"uuid": uuid.UUID, "str": str, "int": int}[spec["type"]](spec["value"])


def _lp(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def _subject_part(subject: Any) -> bytes:
    """A subject id's bytes in the context: a type byte and the id (the spec)."""
    if isinstance(subject, uuid.UUID):
        return b"u" + subject.bytes
    if isinstance(subject, str):
        return b"s" + subject.encode()
    return b"i" + subject.to_bytes((subject.bit_length() + 8) // 8, "big", signed=True)


def _context(table: str, column: str, subject: Any) -> bytes:
    """The context, written from the spec in docs/security.md, not from the library."""
    parts = [table.encode(), column.encode()]
    if subject is not None:
        parts.append(_subject_part(subject))
    return bytes((len(parts),)) + b"".join(_lp(p) for p in parts)


def _hkdf(key: bytes, info: bytes, length: int = 32) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(
        key
    )


@pytest.fixture(scope="module")
def vector_keyring() -> Keyring:
    return Keyring.from_json(json.dumps(VECTORS["keyring"]))


def _key(key_id: int) -> bytes:
    import base64

    (entry,) = [k for k in VECTORS["keyring"]["keys"] if k["id"] == key_id]
    return base64.b64decode(entry["key"])


class TestKnownAnswers:
    @pytest.mark.parametrize("vector", VECTORS["envelopes"], ids=lambda v: v["name"])
    def test_vector_decrypts(
        self, vector_keyring: Keyring, vector: dict[str, Any]
    ) -> None:
        """Every committed envelope decrypts to its value, in this and every later release."""
        python_type, parse = _TYPES[vector["codec"]]
        codec = codec_for(python_type)
        blob = bytes.fromhex(vector["envelope"])
        if vector["algorithm"] == 1:
            cipher: Any = vector_keyring.field_cipher(
                table=vector["table"], column=vector["column"], codec=codec
            )
        else:
            cipher = vector_keyring.deterministic_field_cipher(
                table=vector["table"], column=vector["column"], codec=codec
            )
        expected = parse(vector["value"])
        actual = cipher.decrypt(blob, _subject(vector["subject"]))
        assert (type(expected), str(expected)) == (type(actual), str(actual))
        assert vector["frame"] == codec.encode(expected).hex()

    @pytest.mark.parametrize("vector", VECTORS["envelopes"], ids=lambda v: v["name"])
    def test_vector_matches_the_documented_construction(
        self, vector: dict[str, Any]
    ) -> None:
        """Each envelope is rebuilt byte for byte from the spec with raw primitives."""
        blob = bytes.fromhex(vector["envelope"])
        key_id = int.from_bytes(blob[2:6], "big")
        header = bytes((1, vector["algorithm"])) + key_id.to_bytes(4, "big")
        context = _context(
            vector["table"], vector["column"], _subject(vector["subject"])
        )
        frame = bytes.fromhex(vector["frame"])
        info = _context(vector["table"], vector["column"], None)
        if vector["algorithm"] == 1:
            subkey = _hkdf(_key(key_id), b"custdata/field/aes-256-gcm/v1" + info)
            nonce = bytes.fromhex(vector["nonce"])
            expected = (
                header + nonce + AESGCM(subkey).encrypt(nonce, frame, header + context)
            )
        else:
            subkey = _hkdf(_key(key_id), b"custdata/field/aes-siv-512/v1" + info, 64)
            expected = header + AESSIV(subkey).encrypt(frame, [header + context])
        assert expected.hex() == vector["envelope"]

    @pytest.mark.parametrize(
        "vector", VECTORS["subject_envelopes"], ids=lambda v: v["name"]
    )
    def test_subject_vector_decrypts(
        self, vector_keyring: Keyring, vector: dict[str, Any]
    ) -> None:
        """Per-subject-key (algorithm 0x03) envelopes decrypt with their wrapped keys."""
        from custdata.crypto import InMemorySubjectKeyStore, SubjectKeyRecord

        store = InMemorySubjectKeyStore()
        for record in VECTORS["subject_keys"]:
            store.add(SubjectKeyRecord.from_json(record))
        python_type, parse = _TYPES[vector["codec"]]
        codec = codec_for(python_type)
        cipher = vector_keyring.field_cipher(
            table=vector["table"],
            column=vector["column"],
            codec=codec,
            subject_keys=store,
        )
        blob = bytes.fromhex(vector["envelope"])
        assert parse(vector["value"]) == cipher.decrypt(
            blob, _subject(vector["subject"])
        )
        assert vector["frame"] == codec.encode(parse(vector["value"])).hex()

    @pytest.mark.parametrize(
        "vector", VECTORS["subject_envelopes"], ids=lambda v: v["name"]
    )
    def test_subject_vector_matches_the_documented_construction(
        self, vector: dict[str, Any]
    ) -> None:
        """The subject key unwraps, and the envelope rebuilds, from the spec with raw primitives."""
        import base64

        blob = bytes.fromhex(vector["envelope"])
        subject = _subject(vector["subject"])
        context = _context(vector["table"], vector["column"], subject)
        (record,) = [
            r
            for r in VECTORS["subject_keys"]
            if r["key_id"] == int.from_bytes(blob[2:6], "big")
        ]
        subject_bytes = base64.b64decode(record["subject"])
        assert _subject_part(subject) == subject_bytes
        wrapped = base64.b64decode(record["wrapped_key"])
        label = b"custdata/subject-key-wrap/v1"
        aad = (
            label
            + _lp(subject_bytes)
            + record["key_id"].to_bytes(4, "big")
            + record["wrapping_key_id"].to_bytes(4, "big")
        )
        wrapper = AESGCM(_hkdf(_key(record["wrapping_key_id"]), label))
        subject_key = wrapper.decrypt(wrapped[:12], wrapped[12:], aad)
        header = bytes((1, 3)) + record["key_id"].to_bytes(4, "big")
        nonce = bytes.fromhex(vector["nonce"])
        frame = bytes.fromhex(vector["frame"])
        expected = (
            header + nonce + AESGCM(subject_key).encrypt(nonce, frame, header + context)
        )
        assert expected.hex() == vector["envelope"]

    @pytest.mark.parametrize(
        "vector", VECTORS["blind_index"], ids=lambda v: f"{v['column']}-{v['bits']}"
    )
    def test_blind_index_vector(
        self, vector_keyring: Keyring, vector: dict[str, Any]
    ) -> None:
        """Blind-index digests are stable across releases."""
        normalizer = {"email": normalize_email, "phone": normalize_phone}[
            vector["normalizer"]
        ]
        index = vector_keyring.blind_index(
            table=vector["table"],
            column=vector["column"],
            normalizer=normalizer,
            bits=vector["bits"],
        )
        assert vector["digest"] == index.compute(vector["value"]).hex()

    def test_audit_root_vector(self, vector_keyring: Keyring) -> None:
        """The audit root is HKDF-SHA256(primary data key, info=custdata/audit/root/v1)."""
        key_id, root = vector_keyring.audit_root_key()
        assert (VECTORS["audit_root"]["key_id"], VECTORS["audit_root"]["root"]) == (
            key_id,
            root.hex(),
        )
        assert _hkdf(_key(key_id), b"custdata/audit/root/v1").hex() == root.hex()


@pytest.fixture(scope="module")
def keyring() -> Keyring:
    return Keyring.generate()


class TestLayout:
    def test_overhead_is_34_bytes(self, keyring: Keyring) -> None:
        """A GCM envelope is the frame plus 34 bytes: header 6, nonce 12, tag 16."""
        cipher = keyring.field_cipher(table="t", column="c", codec=codec_for(str))
        blob = cipher.encrypt("abc")
        assert (1, 1, keyring.primary_key_id, 4 + 34) == (
            blob[0],
            blob[1],
            int.from_bytes(blob[2:6], "big"),
            len(blob),
        )

    def test_envelope_key_id(self, keyring: Keyring) -> None:
        """envelope_key_id reads the header without decrypting."""
        cipher = keyring.field_cipher(table="t", column="c", codec=codec_for(str))
        blob = cipher.encrypt("abc")
        assert (
            keyring.primary_key_id
            == envelope_key_id(blob)
            == envelope_key_id(memoryview(blob))
        )

    @pytest.mark.parametrize(
        "blob",
        [
            b"",
            b"\x01",
            b"\x02\x01" + bytes(40),
            b"\x01\x09" + bytes(40),
            b"\x01\x01" + bytes(10),
            b"\x01\x02" + bytes(19),
        ],
    )
    def test_envelope_key_id_rejects_malformed(self, blob: bytes) -> None:
        """Malformed headers raise DecryptionError."""
        with pytest.raises(DecryptionError):
            envelope_key_id(blob)

    def test_envelope_key_id_rejects_non_bytes(self) -> None:
        """envelope_key_id wants bytes."""
        with pytest.raises(TypeError):
            envelope_key_id("0101")  # type: ignore[arg-type]

    def test_random_nonces_are_distinct(self, keyring: Keyring) -> None:
        """100,000 encryptions of one value give 100,000 distinct nonces and envelopes."""
        cipher = keyring.field_cipher(table="t", column="nonces", codec=codec_for(str))
        blobs = [cipher.encrypt("same value") for _ in range(100_000)]
        assert 100_000 == len({b[6:18] for b in blobs}) == len(set(blobs))

    def test_encrypt_many_nonces_are_distinct(self, keyring: Keyring) -> None:
        """The batched path also gives distinct nonces and decrypts."""
        cipher = keyring.field_cipher(table="t", column="batch", codec=codec_for(str))
        blobs = cipher.encrypt_many(["v"] * 10_000)
        assert (10_000, ["v"] * 10_000) == (
            len({b[6:18] for b in blobs}),
            cipher.decrypt_many(blobs),
        )


class TestCorruption:
    @pytest.fixture
    def setup(self, keyring: Keyring) -> tuple[Any, bytes]:
        cipher = keyring.field_cipher(
            table="customers", column="email", codec=codec_for(str)
        )
        blob = cipher.encrypt("x" * 25)
        return cipher, blob

    def test_every_bit_flip_fails(self, setup: tuple[Any, bytes]) -> None:
        """Every single-bit flip of a 60-byte envelope raises DecryptionError."""
        cipher, blob = setup
        assert 60 == len(blob)
        failures = 0
        for i in range(len(blob) * 8):
            flipped = bytearray(blob)
            flipped[i // 8] ^= 1 << (i % 8)
            with pytest.raises(DecryptionError):
                cipher.decrypt(bytes(flipped))
            failures += 1
        assert 480 == failures

    def test_every_truncation_fails(self, setup: tuple[Any, bytes]) -> None:
        """Every proper prefix of an envelope raises DecryptionError."""
        cipher, blob = setup
        for length in range(len(blob)):
            with pytest.raises(DecryptionError):
                cipher.decrypt(blob[:length])

    def test_extension_fails(self, setup: tuple[Any, bytes]) -> None:
        """Appending bytes raises DecryptionError."""
        cipher, blob = setup
        with pytest.raises(DecryptionError):
            cipher.decrypt(blob + b"\x00")

    def test_bulk_path_fails_the_same(self, setup: tuple[Any, bytes]) -> None:
        """decrypt_many raises on a corrupt value like decrypt does."""
        cipher, blob = setup
        with pytest.raises(DecryptionError):
            cipher.decrypt_many([blob, blob[:-1] + bytes((blob[-1] ^ 1,))])
        with pytest.raises(DecryptionError):
            cipher.decrypt_many([blob[:20]])

    def test_error_is_raised_from_none(self, setup: tuple[Any, bytes]) -> None:
        """The error hides the primitive's exception (raised from None)."""
        cipher, blob = setup
        with pytest.raises(DecryptionError) as info:
            cipher.decrypt(blob[:-1] + b"\x00")
        assert (None, True) == (info.value.__cause__, info.value.__suppress_context__)

    @pytest.mark.parametrize(
        ("mutate", "error"),
        [
            (lambda b: b"\x02" + b[1:], DecryptionError),
            (lambda b: b"\x00" + b[1:], DecryptionError),
            (lambda b: b[:1] + b"\x07" + b[2:], DecryptionError),
            (lambda b: b[:1] + b"\x02" + b[2:], DecryptionError),
            (lambda b: b[:2] + b"\xde\xad\xbe\xef" + b[6:], UnknownKeyError),
        ],
        ids=[
            "version-2",
            "version-0",
            "unknown-algorithm",
            "siv-algorithm",
            "unknown-key-id",
        ],
    )
    def test_header_matrix(
        self, setup: tuple[Any, bytes], mutate: Any, error: type[Exception]
    ) -> None:
        """Unknown versions, algorithms and key ids raise their exact error."""
        cipher, blob = setup
        with pytest.raises(error):
            cipher.decrypt(mutate(blob))

    def test_wrong_keyring(self, setup: tuple[Any, bytes]) -> None:
        """A value from another keyring fails: unknown key id, never garbage."""
        _, blob = setup
        other = Keyring.generate().field_cipher(
            table="customers", column="email", codec=codec_for(str)
        )
        with pytest.raises(UnknownKeyError):
            other.decrypt(blob)

    def test_same_key_id_wrong_key(self, keyring: Keyring) -> None:
        """A keyring with the same key ids but other key bytes fails authentication."""
        document = json.loads(keyring.export_insecure())
        for item in document["keys"]:
            item["key"] = "A" * 43 + "="
        impostor = Keyring.from_json(json.dumps(document))
        blob = keyring.field_cipher(
            table="t", column="c", codec=codec_for(str)
        ).encrypt("v")
        with pytest.raises(DecryptionError):
            impostor.field_cipher(table="t", column="c", codec=codec_for(str)).decrypt(
                blob
            )


class TestContextBinding:
    @pytest.mark.parametrize(
        ("source", "target"),
        [
            (("customers", "email"), ("customers", "phone")),
            (("customers", "email"), ("suppliers", "email")),
            (("customers", "email"), ("customer", "semail")),
            (("ab", "c"), ("a", "bc")),
        ],
        ids=["other-column", "other-table", "concatenation", "shifted-boundary"],
    )
    def test_value_moved_to_other_column(
        self, keyring: Keyring, source: tuple[str, str], target: tuple[str, str]
    ) -> None:
        """A value copied to another column or table fails to decrypt."""
        blob = keyring.field_cipher(
            table=source[0], column=source[1], codec=codec_for(str)
        ).encrypt("v")
        with pytest.raises(DecryptionError):
            keyring.field_cipher(
                table=target[0], column=target[1], codec=codec_for(str)
            ).decrypt(blob)

    @pytest.mark.parametrize(
        ("written", "read"),
        [
            (uuid.UUID(int=1), uuid.UUID(int=2)),
            (uuid.UUID(int=1), None),
            (None, uuid.UUID(int=1)),
            ("42", 42),
            (b"42", "42"),
            (uuid.UUID(int=1), uuid.UUID(int=1).bytes),
        ],
        ids=[
            "other-subject",
            "subject-dropped",
            "subject-added",
            "str-vs-int",
            "bytes-vs-str",
            "uuid-vs-bytes",
        ],
    )
    def test_value_moved_to_other_subject(
        self, keyring: Keyring, written: Any, read: Any
    ) -> None:
        """A value bound to one subject fails for any other subject, or none."""
        cipher = keyring.field_cipher(
            table="customers", column="email", codec=codec_for(str)
        )
        blob = cipher.encrypt("v", written)
        with pytest.raises(DecryptionError):
            cipher.decrypt(blob, read)

    def test_empty_names_refused(self, keyring: Keyring) -> None:
        """Empty table or column names are a programming error."""
        with pytest.raises(ValueError, match="non-empty"):
            keyring.field_cipher(table="", column="c", codec=codec_for(str))


class TestRowOpening:
    """``open_in_place``, the one-row path of the SQL layer, agrees with ``open_value``."""

    def test_same_values_and_errors(self, keyring: Keyring) -> None:
        """Values, None, other codecs and every corruption give what open_value gives."""
        from custdata.crypto._cipher import open_in_place
        from custdata.sqlalchemy._binding import subject_parts

        subject = uuid.UUID(int=7)
        _, tail = subject_parts(subject, "uuid")
        name = keyring.field_cipher(table="t", column="name", codec=codec_for(str))
        when = keyring.field_cipher(table="t", column="when", codec=codec_for(dt.date))
        row = [
            "key",
            name.encrypt("日本語 name", subject=subject),
            None,
            when.encrypt(dt.date(2026, 1, 2), subject=subject),
        ]
        columns = [(1, name), (2, name), (3, when)]
        opened = list(row)
        open_in_place(opened, columns, tail)
        assert opened == ["key", "日本語 name", None, dt.date(2026, 1, 2)]
        blob = row[1]
        for i in range(len(blob) * 8):
            flipped = bytearray(blob)
            flipped[i // 8] ^= 1 << (i % 8)
            with pytest.raises(DecryptionError):
                open_in_place([bytes(flipped)], [(0, name)], tail)
            with pytest.raises(DecryptionError):
                name.open_value(bytes(flipped), tail)
        for length in range(len(blob)):
            with pytest.raises(DecryptionError):
                open_in_place([blob[:length]], [(0, name)], tail)
        _, other = subject_parts(uuid.UUID(int=8), "uuid")
        with pytest.raises(DecryptionError):
            open_in_place([blob], [(0, name)], other)
        with pytest.raises(DecryptionError):
            open_in_place([row[3]], [(0, name)], tail)  # another column's value

    def test_memoryview_and_rotation(self, keyring: Keyring) -> None:
        """Drivers' buffer types and values under a non-primary key open too."""
        from custdata.crypto._cipher import open_in_place

        cipher = keyring.field_cipher(table="t", column="c", codec=codec_for(str))
        old = cipher.encrypt("before rotation")
        keyring.rotate()
        cipher = keyring.field_cipher(table="t", column="c", codec=codec_for(str))
        new = cipher.encrypt("after rotation")
        row: list[Any] = [memoryview(old), new]
        open_in_place(row, [(0, cipher), (1, cipher)], None)
        assert row == ["before rotation", "after rotation"]
