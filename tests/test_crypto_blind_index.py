"""Blind indexes: normalisers, truncation and index-key rotation."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from hypothesis import given
from hypothesis import strategies as st

from custdata.crypto import Keyring, _kdf, normalize_email, normalize_phone


class TestNormalizers:
    @pytest.mark.parametrize(
        ("raw", "expected"),
        [
            (" Taro@Example.COM ", "taro@example.com"),
            ("ＴＡＲＯ＠ｅｘａｍｐｌｅ．ｃｏｍ", "taro@example.com"),
            ("STRASSE@x.de", "strasse@x.de"),
            ("Straße@x.de", "strasse@x.de"),
            ("\tA@B\n", "a@b"),
        ],
    )
    def test_email(self, raw: str, expected: str) -> None:
        """E-mail: NFKC, case-folded, stripped."""
        assert expected == normalize_email(raw)

    @pytest.mark.parametrize(
        ("raw", "expected"),
        [
            ("+81 (90) 1234-5678", "819012345678"),
            ("０９０－１２３４－５６７８", "09012345678"),
            ("tel: 03.1234.5678 ext", "0312345678"),
            ("", ""),
        ],
    )
    def test_phone(self, raw: str, expected: str) -> None:
        """Phone: decimal digits only, as ASCII."""
        assert expected == normalize_phone(raw)

    @given(st.text())
    def test_normalizers_are_idempotent(self, value: str) -> None:
        """Normalising twice changes nothing."""
        assert normalize_email(normalize_email(value)) == normalize_email(value)
        assert normalize_phone(normalize_phone(value)) == normalize_phone(value)

    @pytest.mark.parametrize("normalizer", [normalize_email, normalize_phone])
    def test_normalizers_want_str(self, normalizer: object) -> None:
        """Non-str values are refused."""
        with pytest.raises(TypeError):
            normalizer(b"x")  # type: ignore[operator]


class TestIndex:
    def test_is_hmac_sha256_under_a_column_subkey(self) -> None:
        """compute is exactly HMAC-SHA256 under the column's HKDF subkey of the index key."""
        import base64
        import json

        keyring = Keyring.generate()
        (index_key,) = [
            base64.b64decode(k["key"])
            for k in json.loads(keyring.export_insecure())["keys"]
            if k["kind"] == "index"
        ]
        subkey = _kdf.column_key(
            index_key, _kdf.LABEL_BLIND_INDEX, "customers", "email"
        )
        expected = hmac.digest(subkey, b"taro@example.com", hashlib.sha256)
        index = keyring.blind_index(
            table="customers", column="email", normalizer=normalize_email
        )
        assert expected == index.compute(" TARO@example.com")

    def test_columns_have_separate_keys(self) -> None:
        """The same value indexes differently in two columns."""
        keyring = Keyring.generate()
        a = keyring.blind_index(table="t", column="a")
        b = keyring.blind_index(table="t", column="b")
        assert a.compute("v") != b.compute("v")

    @pytest.mark.parametrize(
        ("bits", "size", "last_mask"),
        [(256, 32, 0xFF), (64, 8, 0xFF), (12, 2, 0xF0), (1, 1, 0x80)],
    )
    def test_truncation(self, bits: int, size: int, last_mask: int) -> None:
        """Truncated digests are a prefix of the full one with unused low bits zero."""
        keyring = Keyring.generate()
        full = keyring.blind_index(table="t", column="c").compute("v")
        short = keyring.blind_index(table="t", column="c", bits=bits).compute("v")
        assert (size, full[: size - 1], full[size - 1] & last_mask) == (
            len(short),
            short[:-1],
            short[-1],
        )

    @pytest.mark.parametrize(
        ("bits", "error"),
        [(0, ValueError), (257, ValueError), (True, TypeError), (8.0, TypeError)],
    )
    def test_bad_bits(self, bits: object, error: type[Exception]) -> None:
        """bits is an int from 1 to 256."""
        with pytest.raises(error):
            Keyring.generate().blind_index(table="t", column="c", bits=bits)  # type: ignore[arg-type]

    def test_non_text_values_refused(self) -> None:
        """Values must normalise to str or bytes."""
        with pytest.raises(TypeError):
            Keyring.generate().blind_index(table="t", column="c").compute(42)

    def test_independent_of_data_key_rotation(self) -> None:
        """Rotating the data key leaves the blind index unchanged."""
        keyring = Keyring.generate()
        index = keyring.blind_index(table="t", column="c")
        before = index.compute("v")
        keyring.rotate()
        assert (before,) == index.candidates("v")

    def test_search_spans_index_key_rotation(self) -> None:
        """Mid-rotation, candidates match rows indexed under the old and the new index key."""
        keyring = Keyring.generate()
        index = keyring.blind_index(table="t", column="c", normalizer=normalize_email)
        stored_old = index.compute("a@x")
        old = keyring.primary_index_key_id
        keyring.rotate_index_key()
        stored_new = index.compute("A@X ")
        assert stored_new != stored_old
        assert (stored_new, stored_old) == index.candidates("a@x")
        keyring.retire(old)
        assert (stored_new,) == index.candidates("a@x")
