"""Hypothesis strategies shared by the crypto tests."""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import ipaddress
import uuid

from typing import Any

from hypothesis import strategies as st


class Color(enum.Enum):
    """An enum for codec round trips (values of mixed types on purpose)."""

    RED = 1
    GREEN = "green"
    BLUE = (0, 0, 255)


offsets = st.integers(
    min_value=-(24 * 3600 * 10**6) + 1, max_value=24 * 3600 * 10**6 - 1
).map(lambda us: dt.timezone(dt.timedelta(microseconds=us)))
naive_datetimes = st.datetimes()
aware_datetimes = st.datetimes(timezones=offsets)
naive_times = st.times()
aware_times = st.times(timezones=offsets)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
json_documents = st.lists(json_values, max_size=4) | st.dictionaries(
    st.text(max_size=8), json_values, max_size=4
)
decimals = st.decimals(allow_nan=True, allow_infinity=True) | st.builds(
    lambda digits, exp, sign: decimal.Decimal((sign, tuple(digits), exp)),
    st.lists(st.integers(0, 9), min_size=1, max_size=40),
    st.integers(-1000, 1000),
    st.integers(0, 1),
)
ip_addresses = st.ip_addresses(v=4) | st.ip_addresses(v=6)

#: One strategy per codec type, keyed by the type given to ``codec_for``.
VALUES: dict[Any, st.SearchStrategy[Any]] = {
    str: st.text(),
    bytes: st.binary(),
    int: st.integers() | st.integers(min_value=-(2**300), max_value=2**300),
    decimal.Decimal: decimals,
    float: st.floats(allow_nan=True, allow_infinity=True),
    bool: st.booleans(),
    dt.date: st.dates(),
    dt.datetime: naive_datetimes | aware_datetimes,
    dt.time: naive_times | aware_times,
    uuid.UUID: st.uuids(),
    Color: st.sampled_from(Color),
    dict: json_documents,
    ipaddress.IPv4Address: ip_addresses,
}

subjects = (
    st.uuids()
    | st.text(min_size=1, max_size=20)
    | st.binary(min_size=1, max_size=20)
    | st.integers()
)
#: Values that must never appear in messages or reprs: long and distinctive.
canaries = st.text(alphabet="QXZJKqxzjk0123456789", min_size=16, max_size=32).map(
    lambda s: "CANARY" + s
)
