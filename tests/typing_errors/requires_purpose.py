"""Typing test run by tests/test_typing.py: each marked line must be a mypy error."""

from __future__ import annotations

import custdata


@custdata.requires_purpose("billing")
def charge(customer_id: str, amount: int, *, currency: str = "JPY") -> bool:
    """A sync function under a purpose."""
    return bool(customer_id) and amount > 0 and bool(currency)


charge("c-1", "100")  # E: arg-type
charge("c-1", 1, curr="USD")  # E: call-arg
x: str = charge("c-1", 1)  # E: assignment
