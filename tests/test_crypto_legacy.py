"""Stored values that are no envelope, and legacy plaintext read as a column's type."""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import uuid

from typing import Any

import pytest

from hypothesis import given
from hypothesis import strategies as st

from custdata import DecryptionError
from custdata.crypto import Keyring, codec_for
from custdata.crypto._envelope import length_prefixed, subject_bytes
from custdata.crypto._legacy import looks_sealed, read_legacy_plaintext


class Color(enum.Enum):
    """An enum stored by member name."""

    RED = 1


@pytest.fixture(scope="module")
def keyring() -> Keyring:
    return Keyring.generate()


class TestReadLegacyPlaintext:
    """Legacy plaintext, as the database kept it, read as the column's type."""

    @pytest.mark.parametrize(
        ("python_type", "stored", "expected"),
        [
            (str, "Yamada", "Yamada"),
            (str, "山田".encode(), "山田"),
            (str, memoryview(b"abc"), "abc"),
            (str, 4111, "4111"),
            (bytes, b"\x00\xff", b"\x00\xff"),
            (bytes, "raw", b"raw"),
            (int, b"-42", -42),
            (int, 42, 42),
            (decimal.Decimal, "12.50", decimal.Decimal("12.50")),
            (decimal.Decimal, 3, decimal.Decimal(3)),
            (bool, b"true", True),
            (bool, "0", False),
            (dt.date, b"2026-12-02", dt.date(2026, 12, 2)),
            (
                dt.datetime,
                "2026-12-02T09:30:00+09:00",
                dt.datetime(2026, 12, 2, 0, 30, tzinfo=dt.timezone.utc),
            ),
            (dt.time, "09:30", dt.time(9, 30)),
            (uuid.UUID, str(uuid.UUID(int=7)), uuid.UUID(int=7)),
            (dict, b'{"a": [1]}', {"a": [1]}),
            (Color, "RED", Color.RED),
        ],
    )
    def test_reads(
        self, python_type: type[Any], stored: object, expected: object
    ) -> None:
        """Bytes are UTF-8, text is the type's ISO or decimal spelling."""
        assert expected == read_legacy_plaintext(stored, python_type, where="t.c")

    @pytest.mark.parametrize(
        ("python_type", "stored"),
        [
            (dt.date, b"secret-4111"),
            (int, "secret-4111"),
            (bool, "secret-4111"),
            (uuid.UUID, "secret-4111"),
            (decimal.Decimal, "secret-4111"),
            (dict, "secret-4111"),
            (Color, "secret-4111"),
            (str, b"secret-4111\xff"),
            (bytes, 4111),
            (int, True),
        ],
    )
    def test_unreadable(self, python_type: type[Any], stored: object) -> None:
        """A value that is no spelling of the type: DecryptionError naming the column, not the value."""
        with pytest.raises(DecryptionError, match=r"t\.c") as info:
            read_legacy_plaintext(stored, python_type, where="t.c")
        assert "4111" not in str(info.value)

    def test_looks_sealed(self, keyring: Keyring) -> None:
        """Real envelopes have the shape; text, short or foreign bytes do not."""
        cipher = keyring.field_cipher(table="t", column="c", codec=codec_for(str))
        assert looks_sealed(cipher.encrypt("x"))
        assert not any(
            looks_sealed(v)
            for v in ("text", b"", b"\x01\x01", b"plain text of some length", None)
        )


class TestOpenValue:
    """FieldCipher.open_value and open_fetched: one error for every non-envelope."""

    @given(st.one_of(st.text(), st.binary(), st.integers(), st.floats(allow_nan=False)))
    def test_never_type_error(self, stored: object) -> None:
        """Any stored value that is no envelope raises DecryptionError, without the value."""
        cipher = Keyring.generate().field_cipher(
            table="t", column="c", codec=codec_for(str)
        )
        for opened in (
            lambda: cipher.open_value(stored),
            lambda: cipher.open_fetched([stored, stored]),
            lambda: cipher.open_fetched([stored], [b"\x00\x00\x00\x02s1"]),
        ):
            with pytest.raises(DecryptionError) as info:
                opened()
            if len(repr(stored)) > 4:
                assert repr(stored) not in str(info.value)

    def test_a_fetched_column_opens_as_its_values_do_one_by_one(
        self, keyring: Keyring
    ) -> None:
        """open_fetched of a column (with and without subjects) equals open_value per value."""
        cipher = keyring.field_cipher(table="t", column="c", codec=codec_for(str))
        values = ["", "Tanaka Hanako", "東京都渋谷区", "x" * 300]
        tails = [length_prefixed(subject_bytes(f"s{i}")) for i in range(len(values))]
        bare = [cipher.encrypt(v) for v in values]
        bound = [cipher.encrypt(v, subject=f"s{i}") for i, v in enumerate(values)]
        assert values == cipher.open_fetched(bare)
        assert values == [cipher.open_value(b) for b in bare]
        assert values == cipher.open_fetched(bound, tails)
        assert values == [
            cipher.open_value(b, t) for b, t in zip(bound, tails, strict=True)
        ]
        with pytest.raises(DecryptionError):
            cipher.open_fetched(bound[::-1], tails)
        with pytest.raises(ValueError, match="differ in length"):
            cipher.open_fetched(bound, tails[:-1])

    def test_a_frame_of_another_codec_in_a_fetched_column(
        self, keyring: Keyring
    ) -> None:
        """An authentic envelope whose frame is no str frame: DecryptionError, batch or not."""
        text = keyring.field_cipher(table="t", column="c", codec=codec_for(str))
        other = keyring.field_cipher(table="t", column="c", codec=codec_for(int))
        stray = other.encrypt(12345678)
        good = text.encrypt("Tanaka Hanako")
        for batch in ([stray], [good, stray], [stray, good]):
            with pytest.raises(DecryptionError) as info:
                text.open_fetched(batch)
            assert "12345678" not in str(info.value)
        with pytest.raises(DecryptionError):
            text.open_value(stray)

    def test_legacy_reader_gets_only_non_envelopes(self, keyring: Keyring) -> None:
        """In the transitional mode envelopes still decrypt; anything else goes to the reader."""
        seen: list[object] = []

        def legacy(stored: object) -> str:
            seen.append(stored)
            return f"legacy:{stored!r}"

        cipher = keyring.field_cipher(
            table="t", column="c", codec=codec_for(str), legacy=legacy
        )
        sealed = cipher.encrypt("sealed")
        assert [
            "sealed",
            "legacy:'text'",
            None,
            "legacy:b'bytes'",
        ] == cipher.open_fetched([sealed, "text", None, b"bytes"])
        assert "sealed" == cipher.open_value(sealed)
        assert ["text", b"bytes"] == seen
        plain = keyring.field_cipher(table="t", column="c", codec=codec_for(str))
        assert plain is not cipher
        with pytest.raises(DecryptionError):
            plain.open_value("text")

    def test_tampered_envelope_is_not_legacy(self, keyring: Keyring) -> None:
        """An envelope-shaped value that fails to authenticate is never read as plaintext."""
        cipher = keyring.field_cipher(
            table="t", column="c2", codec=codec_for(str), legacy=lambda stored: "legacy"
        )
        sealed = bytearray(cipher.encrypt("sealed"))
        sealed[-1] ^= 1
        with pytest.raises(DecryptionError):
            cipher.open_value(bytes(sealed))
