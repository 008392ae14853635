"""Counting the Python function calls a piece of code makes (counted, not timed)."""

from __future__ import annotations

import sys

from collections.abc import Callable
from typing import Any


def python_calls(run: Callable[[], Any], *, under: str | None = None) -> int:
    """The Python function calls *run* makes, its own left out.

    Args:
        run: What to count.
        under: Count only the functions whose file is under this path.
    """
    calls = 0

    def profile(frame: Any, event: str, arg: Any) -> None:
        nonlocal calls
        if event == "call" and (
            under is None or frame.f_code.co_filename.startswith(under)
        ):
            calls += 1

    sys.setprofile(profile)
    try:
        run()
    finally:
        sys.setprofile(None)
    # run itself, when it is counted.
    return calls - 1 if under is None else calls
