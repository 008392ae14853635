"""Typing test: ``requires_purpose`` preserves signatures (checked by mypy --strict).

This module is type-checked, not executed for behaviour; pytest imports it to
make sure it stays importable.
"""

from __future__ import annotations

import sys

import custdata


if sys.version_info >= (3, 11):
    from typing import assert_type
else:  # pragma: no cover
    from typing_extensions import assert_type


@custdata.requires_purpose("billing")
def charge(customer_id: str, amount: int, *, currency: str = "JPY") -> bool:
    """A sync function under a purpose."""
    return bool(customer_id) and amount > 0 and bool(currency)


@custdata.requires_purpose("support")
async def reply(ticket: int, text: str) -> list[str]:
    """An async function under a purpose."""
    return [str(ticket), text]


def check_signatures() -> None:
    """Call sites keep their parameter and return types."""
    result = charge("c-1", 100, currency="USD")
    assert_type(result, bool)
    coro = reply(1, "hello")

    async def consume() -> None:
        assert_type(await coro, list[str])

    del consume
    # The following would be mypy errors, which is the point:
    #   charge("c-1", "100")          -> arg-type
    #   charge("c-1", 1, curr="USD")  -> call-arg
