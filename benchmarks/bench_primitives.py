"""The hand-written primitives against the standard library, side by side.

custdata keeps a hand-written piece only where this benchmark shows it pays
(issue "Integration kit", item 6). Two are measured, on this Python:

- HMAC-SHA256 of a short message under a fixed key, as the blind index, the
  audit chains and the subject pseudonyms compute it: SHA-256 states fed the
  padded keys once per key (``custdata.crypto._hmac.hmac_states``), against
  ``hmac.digest`` (OpenSSL's one-shot HMAC) and against ``hmac.new(...).copy()``
  (the standard library's own way to reuse a key's set-up).
- The subject pseudonym's 26 base32 characters: a table of 10-bit pairs
  (``custdata.audit._keys``), against ``base64.b32encode(mac)[:26].lower()``.

Usage::

    python benchmarks/bench_primitives.py [--number 200000]
"""

from __future__ import annotations

import argparse
import base64
import hmac
import os
import statistics
import sys
import timeit

from collections.abc import Callable
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from custdata.crypto._hmac import hmac_states  # noqa: E402


KEY = os.urandom(32)
MESSAGE = b"tenant\x00c-0001234567"
MAC = hmac.digest(KEY, MESSAGE, "sha256")
_B32 = "abcdefghijklmnopqrstuvwxyz234567"
_PAIRS = tuple(a + b for a in _B32 for b in _B32)
_SHIFTS = tuple(range(120, -1, -10))


def _custdata_hmac() -> Callable[[], bytes]:
    inner, outer = hmac_states(KEY)

    def run() -> bytes:
        i = inner.copy()
        i.update(MESSAGE)
        o = outer.copy()
        o.update(i.digest())
        return o.digest()

    return run


def _stdlib_digest() -> Callable[[], bytes]:
    return lambda: hmac.digest(KEY, MESSAGE, "sha256")


def _stdlib_copy() -> Callable[[], bytes]:
    base = hmac.new(KEY, digestmod="sha256")

    def run() -> bytes:
        h = base.copy()
        h.update(MESSAGE)
        return h.digest()

    return run


def _custdata_b32() -> str:
    bits = int.from_bytes(MAC[:17], "big") >> 6
    return "".join([_PAIRS[(bits >> s) & 1023] for s in _SHIFTS])


def _stdlib_b32() -> str:
    return base64.b32encode(MAC)[:26].decode().lower()


def _median_ns(func: Callable[[], object], number: int, repeat: int = 7) -> float:
    return (
        statistics.median(timeit.repeat(func, number=number, repeat=repeat))
        / number
        * 1e9
    )


def main() -> None:
    """Print each pair's time per call and the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=200_000)
    args = parser.parse_args()

    if not (_custdata_hmac()() == _stdlib_digest()() == _stdlib_copy()() == MAC):
        sys.exit("the HMAC variants disagree")
    if _custdata_b32() != _stdlib_b32():
        sys.exit("the base32 variants disagree")

    rows = [
        ("HMAC-SHA256, padded-key states (custdata)", _custdata_hmac()),
        ("HMAC-SHA256, hmac.digest (stdlib)", _stdlib_digest()),
        ("HMAC-SHA256, hmac.new().copy() (stdlib)", _stdlib_copy()),
        ("pseudonym base32, pair table (custdata)", _custdata_b32),
        ("pseudonym base32, base64.b32encode (stdlib)", _stdlib_b32),
    ]
    print(f"Python {sys.version.split()[0]}, {args.number} calls, median of 7")
    times = {name: _median_ns(func, args.number) for name, func in rows}
    for name, ns in times.items():
        print(f"  {name:46} {ns:8.0f} ns")
    names = list(times)
    print(
        f"  stdlib hmac.digest / custdata:   {times[names[1]] / times[names[0]]:.2f}x"
    )
    print(
        f"  stdlib hmac copy / custdata:     {times[names[2]] / times[names[0]]:.2f}x"
    )
    print(
        f"  stdlib b32encode / custdata:     {times[names[4]] / times[names[3]]:.2f}x"
    )


if __name__ == "__main__":
    main()
