"""Typed codecs: the plaintext frame inside every envelope."""

from __future__ import annotations

import datetime as dt
import decimal
import importlib.util
import ipaddress
import struct
import sys
import uuid
import zoneinfo

from pathlib import Path
from typing import Any

import pytest

from hypothesis import given, settings
from hypothesis import strategies as st

from custdata import DecryptionError
from custdata.crypto import Codec, Keyring, codec_for
from custdata.crypto._codecs import encode_all


def _load_strategies() -> Any:
    # pytest runs with --import-mode=importlib, so tests/ is not on sys.path.
    name = "strategies_crypto"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, Path(__file__).with_name(f"{name}.py")
        )
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


S = _load_strategies()
KEYRING = Keyring.generate()


def same(a: Any, b: Any) -> bool:
    """Exact equality: type, sign of zero, NaN payload, scale, offset and fold."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return struct.pack(">d", a) == struct.pack(">d", b)
    if isinstance(a, decimal.Decimal):
        return str(a) == str(b)
    if isinstance(a, (dt.datetime, dt.time)):
        return (a.replace(tzinfo=None), a.utcoffset(), a.fold, a.tzinfo is None) == (
            b.replace(tzinfo=None),
            b.utcoffset(),
            b.fold,
            b.tzinfo is None,
        )
    return bool(a == b)


class TestRoundTrip:
    @pytest.mark.parametrize("python_type", list(S.VALUES), ids=lambda t: t.__name__)
    @settings(max_examples=150)
    @given(data=st.data())
    def test_codec_round_trip(self, python_type: Any, data: st.DataObject) -> None:
        """Every codec gives back exactly the value it encoded."""
        value = data.draw(S.VALUES[python_type])
        codec = codec_for(type(value) if python_type is not S.Color else python_type)
        assert same(value, codec.decode(codec.encode(value)))

    @pytest.mark.parametrize("python_type", list(S.VALUES), ids=lambda t: t.__name__)
    @settings(max_examples=50)
    @given(data=st.data())
    def test_encrypted_round_trip(self, python_type: Any, data: st.DataObject) -> None:
        """Every codec's values survive encryption and decryption unchanged."""
        value = data.draw(S.VALUES[python_type])
        codec = codec_for(type(value) if python_type is not S.Color else python_type)
        cipher = KEYRING.field_cipher(table="t", column=f"c_{codec.name}", codec=codec)
        assert same(value, cipher.decrypt(cipher.encrypt(value)))


class TestFrames:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ("é", "01c3a9"),
            (b"\x00", "0200"),
            (0, "0300"),
            (255, "0300ff"),
            (-129, "03ff7f"),
            (decimal.Decimal("1.10"), "04312e3130"),
            (1.0, "053ff0000000000000"),
            (True, "0601"),
            (False, "0600"),
            (dt.date(2026, 11, 29), "0707ea0b1d"),
            (dt.datetime(2026, 11, 29, 1, 2, 3, 4), "0807ea0b1d01020300000400"),
            (
                dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
                "0907ea010100000000000000" + "00" * 8,
            ),
            (dt.time(1, 2, 3), "0a01020300000000"),
            (uuid.UUID(int=1), "0c" + "00" * 15 + "01"),
            ({"a": 1}, "0e" + b'{"a":1}'.hex()),
            (ipaddress.ip_address("10.0.0.1"), "0f0a000001"),
        ],
    )
    def test_known_frames(self, value: Any, expected: str) -> None:
        """Frames are exactly the documented bytes."""
        assert expected == codec_for(type(value)).encode(value).hex()

    def test_enum_frame_is_member_name(self) -> None:
        """Enums are stored by member name under tag 0x0D."""
        assert b"\x0dGREEN" == codec_for(S.Color).encode(S.Color.GREEN)

    def test_naive_and_aware_datetimes_stay_apart(self) -> None:
        """A naive datetime never decodes aware, nor the reverse."""
        codec = codec_for(dt.datetime)
        naive = dt.datetime(2026, 1, 1, 9)
        aware = naive.replace(tzinfo=dt.timezone(dt.timedelta(hours=9)))
        assert codec.decode(codec.encode(naive)).tzinfo is None
        assert dt.timedelta(hours=9) == codec.decode(codec.encode(aware)).utcoffset()

    def test_zoneinfo_keeps_offset(self) -> None:
        """An IANA zone is kept as its offset at that instant."""
        value = dt.datetime(2026, 7, 1, 12, tzinfo=zoneinfo.ZoneInfo("Europe/Berlin"))
        decoded = codec_for(dt.datetime).decode(codec_for(dt.datetime).encode(value))
        assert (value, dt.timedelta(hours=2)) == (decoded, decoded.utcoffset())

    def test_application_codec(self) -> None:
        """Applications can add codecs with their own tag."""
        codec: Codec[complex] = Codec.tagged(
            name="complex",
            tag=0x80,
            python_type=complex,
            encode_payload=lambda v: struct.pack(">dd", v.real, v.imag),
            decode_payload=lambda d: complex(*struct.unpack(">dd", d)),
        )
        assert 1 + 2j == codec.decode(codec.encode(1 + 2j))


class TestMisuse:
    @pytest.mark.parametrize(
        ("python_type", "value", "error"),
        [
            (str, b"bytes", TypeError),
            (str, None, TypeError),
            (str, "\ud800", ValueError),
            (bytes, "text", TypeError),
            (int, True, TypeError),
            (int, 1.0, TypeError),
            (bool, 1, TypeError),
            (dt.date, dt.datetime(2026, 1, 1), TypeError),
            (dt.datetime, dt.date(2026, 1, 1), TypeError),
            (float, decimal.Decimal(1), TypeError),
            (dict, (1, 2), TypeError),
            (dict, {"x": float("nan")}, ValueError),
            (dict, {"x": object()}, TypeError),
            (uuid.UUID, str(uuid.UUID(int=0)), TypeError),
            (dt.time, dt.time(1, tzinfo=zoneinfo.ZoneInfo("Asia/Tokyo")), ValueError),
        ],
    )
    def test_encode_rejects(
        self, python_type: Any, value: Any, error: type[Exception]
    ) -> None:
        """Values of the wrong type or shape are refused at the boundary."""
        with pytest.raises(error):
            codec_for(python_type).encode(value)

    def test_unencodable_str_not_carried(self) -> None:
        """A str that cannot be framed is refused without the error holding it."""
        canary = "canary-\ud800-value"
        for encode in (
            codec_for(str).encode,
            lambda v: encode_all(codec_for(str), [v]),
        ):
            with pytest.raises(ValueError, match="lone surrogate") as info:
                encode(canary)
            assert not isinstance(info.value, UnicodeError)
            assert info.value.__context__ is None or info.value.__suppress_context__
            assert "canary" not in repr(info.value.args)

    def test_encode_all_matches_encode(self) -> None:
        """Batch framing gives the per-value frames, for the fast str path too."""
        for python_type, values in (
            (str, ["", "a", "日本語", "x" * 300]),
            (int, [0, -1, 2**70]),
        ):
            codec = codec_for(python_type)
            assert encode_all(codec, values) == [codec.encode(v) for v in values]
        with pytest.raises(TypeError, match="cannot encode a bytes"):
            encode_all(codec_for(str), ["a", b"b"])

    @pytest.mark.parametrize("python_type", [object, tuple, set, complex, type(None)])
    def test_no_codec(self, python_type: Any) -> None:
        """codec_for refuses types it has no codec for."""
        with pytest.raises(TypeError):
            codec_for(python_type)

    @pytest.mark.parametrize(
        ("python_type", "frame"),
        [
            (str, b"\x02abc"),
            (str, b""),
            (str, b"\x01\xff"),
            (int, b"\x03"),
            (bool, b"\x06\x02"),
            (float, b"\x05\x00"),
            (dt.date, b"\x07\x07\xea\x0d\x01"),
            (dt.datetime, b"\x08\x00"),
            (dt.datetime, b"\x07\x07\xea\x01\x01"),
            (dt.time, b"\x0a\x19\x00\x00\x00\x00\x00\x00"),
            (uuid.UUID, b"\x0c\x00"),
            (dict, b"\x0e1"),
            (dict, b"\x0e{"),
            (decimal.Decimal, b"\x04abc"),
            (S.Color, b"\x0dPURPLE"),
            (ipaddress.IPv4Address, b"\x0f\x00"),
        ],
    )
    def test_decode_rejects(self, python_type: Any, frame: bytes) -> None:
        """A frame of another type or a malformed payload raises DecryptionError."""
        with pytest.raises(DecryptionError):
            codec_for(python_type).decode(frame)

    def test_tag_out_of_range(self) -> None:
        """An application codec's tag must be a byte."""
        with pytest.raises(ValueError, match="tag"):
            Codec.tagged(
                name="x",
                tag=256,
                python_type=str,
                encode_payload=str.encode,
                decode_payload=bytes.decode,
            )
