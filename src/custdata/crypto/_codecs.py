"""Typed codecs: the plaintext frame inside every envelope.

A frame is one type-tag byte followed by the payload. The tags and payloads of
frame version 1 (integers big-endian):

=====  ==========================  ==========================================================
tag    type                        payload
=====  ==========================  ==========================================================
0x01   ``str``                     UTF-8
0x02   ``bytes``                   the bytes
0x03   ``int``                     two's-complement, minimal length (``0`` is ``0x00``)
0x04   ``Decimal``                 ASCII of ``str(value)``: exact, scale, sign and NaN kept
0x05   ``float``                   IEEE 754 binary64
0x06   ``bool``                    ``0x00`` or ``0x01``
0x07   ``date``                    year(2) month(1) day(1)
0x08   naive ``datetime``          year(2) month day hour minute second(1 each) µs(3) fold(1)
0x09   aware ``datetime``          as 0x08, then the UTC offset in µs (8, signed)
0x0A   naive ``time``              hour minute second(1 each) µs(3) fold(1)
0x0B   aware ``time``              as 0x0A, then the UTC offset in µs (8, signed)
0x0C   ``UUID``                    16 bytes
0x0D   ``Enum``                    the member's name in UTF-8
0x0E   JSON (``dict``/``list``)    compact UTF-8 JSON, keys in insertion order
0x0F   ``IPv4Address``/``IPv6…``   the packed address (4 or 16 bytes)
=====  ==========================  ==========================================================

Tags 0x80 to 0xFF are free for application codecs. Aware datetimes and times keep
their offset but not the zone's name: they decode with a fixed
:class:`datetime.timezone`.
"""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import ipaddress
import json
import struct
import uuid

from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar, cast, final

import attrs

from custdata._errors import DecryptionError, ValueTypeError


__all__ = ["Codec", "codec_for"]

T = TypeVar("T")

_DATE = struct.Struct(">HBB")
_NAIVE_DATETIME_SIZE = 11
_AWARE_DATETIME_SIZE = 19
_NAIVE_TIME_SIZE = 7
_AWARE_TIME_SIZE = 15
_CLOCK = struct.Struct(">BBB")
_OFFSET = struct.Struct(">q")


@final
@attrs.frozen(kw_only=True)
class Codec(Generic[T]):
    """Turns values of one Python type into a tagged plaintext frame and back.

    Get the standard codecs from :func:`codec_for`; build an application codec
    with :meth:`Codec.tagged` and a tag from 0x80 to 0xFF.

    Attributes:
        name: A short name for messages (``"str"``, ``"Decimal"``).
        python_type: The type (or types) ``encode`` accepts.
        encode: Returns the frame ``tag ‖ payload`` for a value. Raises
            :class:`TypeError` for a value of another type and :class:`ValueError`
            for one that cannot be encoded (a str with lone surrogates, a time zone
            without a fixed offset, non-JSON content).
        decode: Returns the value in a frame. Raises
            :class:`~custdata.DecryptionError` for another type tag or a malformed
            payload.
    """

    name: str
    python_type: type[Any] | tuple[type[Any], ...] = attrs.field(eq=False)
    encode: Callable[[T], bytes] = attrs.field(eq=False, repr=False)
    decode: Callable[[bytes], T] = attrs.field(eq=False, repr=False)

    @classmethod
    def tagged(
        cls,
        *,
        name: str,
        tag: int,
        python_type: type[Any] | tuple[type[Any], ...],
        encode_payload: Callable[[T], bytes],
        decode_payload: Callable[[bytes], T],
        exclude: tuple[type[Any], ...] = (),
    ) -> Codec[T]:
        """Build a codec whose frames are one tag byte followed by a payload.

        Args:
            name: A short name for messages.
            tag: The type tag, 0 to 255; applications use 0x80 to 0xFF.
            python_type: The type (or types) the codec accepts.
            encode_payload: Turns a value into its payload bytes.
            decode_payload: Turns payload bytes back into a value; any
                ``ValueError``, ``TypeError``, ``KeyError`` or ``ArithmeticError``
                it raises becomes a :class:`~custdata.DecryptionError`.
            exclude: Subtypes of ``python_type`` to refuse (``bool`` for ``int``).

        Raises:
            ValueError: ``tag`` is not a byte value.
        """
        if not 0 <= tag <= 255:  # noqa: PLR2004 - a byte
            raise ValueError("a codec tag must be a byte value (0 to 255)")
        tag_byte = bytes((tag,))
        accepted = python_type

        def encode(value: T) -> bytes:
            if not isinstance(value, accepted) or isinstance(value, exclude):
                raise ValueTypeError(
                    f"the {name} codec cannot encode a {type(value).__name__}"
                )
            return tag_byte + encode_payload(value)

        def decode(frame: bytes) -> T:
            if frame[:1] != tag_byte:
                raise DecryptionError(f"the stored value is not a {name} frame")
            try:
                return decode_payload(frame[1:])
            except (ValueError, TypeError, KeyError, ArithmeticError, struct.error):
                raise DecryptionError(f"malformed {name} frame") from None

        return cls(name=name, python_type=python_type, encode=encode, decode=decode)


def _int_to_bytes(value: int) -> bytes:
    return value.to_bytes((value.bit_length() + 8) // 8, "big", signed=True)


def _int_from_bytes(data: bytes) -> int:
    if not data:
        raise ValueError("empty integer")
    return int.from_bytes(data, "big", signed=True)


def _decimal_decode(data: bytes) -> decimal.Decimal:
    return decimal.Decimal(data.decode("ascii"))


def _float_decode(data: bytes) -> float:
    value: float = struct.unpack(">d", data)[0]
    return value


def _bool_decode(data: bytes) -> bool:
    if data == b"\x01":
        return True
    if data == b"\x00":
        return False
    raise ValueError("bad bool")


def _date_encode(value: dt.date) -> bytes:
    return _DATE.pack(value.year, value.month, value.day)


def _date_decode(data: bytes) -> dt.date:
    return dt.date(*_DATE.unpack(data))


def _offset_us(value: dt.datetime | dt.time) -> int | None:
    if value.tzinfo is None:
        return None
    offset = value.utcoffset()
    if offset is None:
        raise ValueError("a time zone without a fixed UTC offset cannot be encoded")
    return (offset.days * 86_400 + offset.seconds) * 1_000_000 + offset.microseconds


def _clock_bytes(value: dt.datetime | dt.time) -> bytes:
    return (
        _CLOCK.pack(value.hour, value.minute, value.second)
        + value.microsecond.to_bytes(3, "big")
        + bytes((value.fold,))
    )


def _tz(data: bytes) -> dt.timezone:
    return dt.timezone(dt.timedelta(microseconds=_OFFSET.unpack(data)[0]))


def _naive_datetime_encode(value: dt.datetime) -> bytes:
    if value.tzinfo is not None:
        raise ValueTypeError("the naive datetime codec cannot encode an aware datetime")
    return _date_encode(value) + _clock_bytes(value)


def _datetime_fields(data: bytes) -> dict[str, Any]:
    year, month, day = _DATE.unpack_from(data)
    hour, minute, second = _CLOCK.unpack_from(data, 4)
    return {
        "year": year,
        "month": month,
        "day": day,
        "hour": hour,
        "minute": minute,
        "second": second,
        "microsecond": int.from_bytes(data[7:10], "big"),
        "fold": data[10],
    }


def _naive_datetime_decode(data: bytes) -> dt.datetime:
    if len(data) != _NAIVE_DATETIME_SIZE:
        raise ValueError("bad datetime")
    return dt.datetime(**_datetime_fields(data))  # noqa: DTZ001 - naive by design


def _aware_datetime_decode(data: bytes) -> dt.datetime:
    if len(data) != _AWARE_DATETIME_SIZE:
        raise ValueError("bad datetime")
    return dt.datetime(**_datetime_fields(data), tzinfo=_tz(data[11:]))


def _time_fields(data: bytes) -> dict[str, Any]:
    hour, minute, second = _CLOCK.unpack_from(data)
    return {
        "hour": hour,
        "minute": minute,
        "second": second,
        "microsecond": int.from_bytes(data[3:6], "big"),
        "fold": data[6],
    }


def _naive_time_decode(data: bytes) -> dt.time:
    if len(data) != _NAIVE_TIME_SIZE:
        raise ValueError("bad time")
    return dt.time(**_time_fields(data))


def _aware_time_decode(data: bytes) -> dt.time:
    if len(data) != _AWARE_TIME_SIZE:
        raise ValueError("bad time")
    return dt.time(**_time_fields(data), tzinfo=_tz(data[7:]))


def _json_encode(value: dict[str, Any] | list[Any]) -> bytes:
    return json.dumps(
        value, ensure_ascii=False, separators=(",", ":"), allow_nan=False
    ).encode("utf-8")


def _json_decode(data: bytes) -> Any:
    value = json.loads(data.decode("utf-8"))
    if not isinstance(value, (dict, list)):
        raise TypeError("bad JSON frame")
    return value


def _uuid_decode(data: bytes) -> uuid.UUID:
    return uuid.UUID(bytes=data)


def _ip_decode(data: bytes) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    if len(data) not in (4, 16):
        raise ValueError("bad address")
    return ipaddress.ip_address(data)


def _ip_encode(value: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bytes:
    return value.packed


def _str_encode(value: str) -> bytes:
    # What Codec.tagged builds for str, written out: it runs for every value.
    if not isinstance(value, str):
        raise ValueTypeError(f"the str codec cannot encode a {type(value).__name__}")
    try:
        return b"\x01" + value.encode("utf-8")
    except UnicodeEncodeError:
        # The error would carry the value (and name its characters).
        raise ValueError("the str codec cannot encode a lone surrogate") from None


_utf8 = str.encode


def encode_all(codec: Codec[T], values: Sequence[T]) -> list[bytes]:
    """Return the frames of many values (internal, for batch encryption).

    The same frames as ``codec.encode`` gives each value; for the str codec
    without a Python call per value.

    Raises:
        The same errors as ``codec.encode``.
    """
    if codec.encode is _str_encode:
        try:
            return [b"\x01" + _utf8(value) for value in values]  # type: ignore[arg-type]
        except (TypeError, ValueError):
            pass  # let the per-value codec name the problem
    encode = codec.encode
    return [encode(value) for value in values]


def _str_decode(frame: bytes) -> str:
    if frame[:1] != b"\x01":
        raise DecryptionError("the stored value is not a str frame")
    try:
        return frame[1:].decode("utf-8")
    except ValueError:
        raise DecryptionError("malformed str frame") from None


STR: Codec[str] = Codec(
    name="str", python_type=str, encode=_str_encode, decode=_str_decode
)
BYTES: Codec[bytes] = Codec.tagged(
    name="bytes",
    tag=0x02,
    python_type=(bytes, bytearray, memoryview),
    encode_payload=bytes,
    decode_payload=bytes,
)
INT: Codec[int] = Codec.tagged(
    name="int",
    tag=0x03,
    python_type=int,
    encode_payload=_int_to_bytes,
    decode_payload=_int_from_bytes,
    exclude=(bool,),
)
DECIMAL: Codec[decimal.Decimal] = Codec.tagged(
    name="Decimal",
    tag=0x04,
    python_type=decimal.Decimal,
    encode_payload=lambda v: str(v).encode("ascii"),
    decode_payload=_decimal_decode,
)
FLOAT: Codec[float] = Codec.tagged(
    name="float",
    tag=0x05,
    python_type=float,
    encode_payload=lambda v: struct.pack(">d", v),
    decode_payload=_float_decode,
)
BOOL: Codec[bool] = Codec.tagged(
    name="bool",
    tag=0x06,
    python_type=bool,
    encode_payload=lambda v: b"\x01" if v else b"\x00",
    decode_payload=_bool_decode,
)
DATE: Codec[dt.date] = Codec.tagged(
    name="date",
    tag=0x07,
    python_type=dt.date,
    encode_payload=_date_encode,
    decode_payload=_date_decode,
    exclude=(dt.datetime,),
)
_NAIVE_DATETIME: Codec[dt.datetime] = Codec.tagged(
    name="datetime",
    tag=0x08,
    python_type=dt.datetime,
    encode_payload=_naive_datetime_encode,
    decode_payload=_naive_datetime_decode,
)
_AWARE_DATETIME: Codec[dt.datetime] = Codec.tagged(
    name="datetime",
    tag=0x09,
    python_type=dt.datetime,
    encode_payload=lambda v: (
        _date_encode(v) + _clock_bytes(v) + _OFFSET.pack(cast("int", _offset_us(v)))
    ),
    decode_payload=_aware_datetime_decode,
)
_NAIVE_TIME: Codec[dt.time] = Codec.tagged(
    name="time",
    tag=0x0A,
    python_type=dt.time,
    encode_payload=_clock_bytes,
    decode_payload=_naive_time_decode,
)
_AWARE_TIME: Codec[dt.time] = Codec.tagged(
    name="time",
    tag=0x0B,
    python_type=dt.time,
    encode_payload=lambda v: _clock_bytes(v) + _OFFSET.pack(cast("int", _offset_us(v))),
    decode_payload=_aware_time_decode,
)
UUID: Codec[uuid.UUID] = Codec.tagged(
    name="UUID",
    tag=0x0C,
    python_type=uuid.UUID,
    encode_payload=lambda v: v.bytes,
    decode_payload=_uuid_decode,
)
JSON: Codec[Any] = Codec.tagged(
    name="JSON",
    tag=0x0E,
    python_type=(dict, list),
    encode_payload=_json_encode,
    decode_payload=_json_decode,
)
IP_ADDRESS: Codec[ipaddress.IPv4Address | ipaddress.IPv6Address] = Codec.tagged(
    name="IP address",
    tag=0x0F,
    python_type=(ipaddress.IPv4Address, ipaddress.IPv6Address),
    encode_payload=_ip_encode,
    decode_payload=_ip_decode,
)


def _split(
    name: str, naive: Codec[T], aware: Codec[T], tags: tuple[int, int]
) -> Codec[T]:
    """Combine a naive and an aware codec, each writing under its own tag.

    The two tags keep a naive value from ever coming back aware, or the reverse.
    """
    by_tag = {tags[0]: naive.decode, tags[1]: aware.decode}

    def encode(value: T) -> bytes:
        if not isinstance(value, naive.python_type):
            raise ValueTypeError(
                f"the {name} codec cannot encode a {type(value).__name__}"
            )
        return (naive if _offset_us(value) is None else aware).encode(value)

    def decode(frame: bytes) -> T:
        decoder = by_tag.get(frame[0]) if frame else None
        if decoder is None:
            raise DecryptionError(f"the stored value is not a {name} frame")
        return decoder(frame)

    return Codec(name=name, python_type=naive.python_type, encode=encode, decode=decode)


DATETIME = _split("datetime", _NAIVE_DATETIME, _AWARE_DATETIME, (0x08, 0x09))
TIME = _split("time", _NAIVE_TIME, _AWARE_TIME, (0x0A, 0x0B))

_ENUM_TAG = 0x0D
_STANDARD: dict[type[Any], Codec[Any]] = {
    str: STR,
    bytes: BYTES,
    int: INT,
    decimal.Decimal: DECIMAL,
    float: FLOAT,
    bool: BOOL,
    dt.date: DATE,
    dt.datetime: DATETIME,
    dt.time: TIME,
    uuid.UUID: UUID,
    dict: JSON,
    list: JSON,
    ipaddress.IPv4Address: IP_ADDRESS,
    ipaddress.IPv6Address: IP_ADDRESS,
}
_ENUM_CODECS: dict[type[enum.Enum], Codec[Any]] = {}


def _enum_codec(enum_type: type[enum.Enum]) -> Codec[Any]:
    codec = _ENUM_CODECS.get(enum_type)
    if codec is None:
        codec = Codec.tagged(
            name=enum_type.__name__,
            tag=_ENUM_TAG,
            python_type=enum_type,
            encode_payload=lambda v: v.name.encode("utf-8"),
            decode_payload=lambda d: enum_type[d.decode("utf-8")],
        )
        _ENUM_CODECS[enum_type] = codec
    return codec


def codec_for(python_type: type[T]) -> Codec[T]:
    """Return the standard codec for a Python type.

    Supported: ``str``, ``bytes``, ``int`` (any size), ``decimal.Decimal``,
    ``float``, ``bool``, ``datetime.date``, ``datetime.datetime``,
    ``datetime.time``, ``uuid.UUID``, any :class:`enum.Enum` subclass (stored by
    member name), ``dict`` and ``list`` (JSON) and the ``ipaddress`` address types.

    Raises:
        TypeError: There is no standard codec for ``python_type``.
    """
    codec = _STANDARD.get(python_type)
    if codec is not None:
        return codec
    if issubclass(python_type, enum.Enum):
        return _enum_codec(python_type)
    raise TypeError(
        f"no standard codec for {getattr(python_type, '__name__', python_type)!r}"
    )
