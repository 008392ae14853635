"""Progress of the long-running commands (``reencrypt``, ``sweep``, ...).

On a terminal, a tqdm bar per table, redrawn with the rows per second and the
time left. On anything else (a pipe, a log file, CI) nothing is redrawn: one
plain line is written when a table is finished, so logs stay readable.
"""

from __future__ import annotations

import sys
import time

from typing import IO, Any

from tqdm import tqdm


__all__ = ["Progress"]


class Progress:
    """A ``progress(table, done, total)`` callback for the jobs of :mod:`custdata.sqlalchemy`.

    Args:
        quiet: Write nothing at all.
        stream: Where to write (standard error by default).
        clock: The clock for the plain lines' durations (tests pass their own).
        min_interval: The least time between two redraws of a bar, in seconds.
    """

    def __init__(
        self,
        quiet: bool = False,
        stream: IO[str] | None = None,
        clock: Any = time.monotonic,
        min_interval: float = 0.1,
    ) -> None:
        self.stream = sys.stderr if stream is None else stream
        self.quiet = quiet
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.clock = clock
        self.min_interval = min_interval
        self.current: str | None = None
        self.started = 0.0
        self.last: tuple[int, int] = (0, 0)
        self.bar: tqdm[Any] | None = None

    def __call__(self, table: str, done: int, total: int) -> None:
        """Report that *done* of *total* rows of *table* are through."""
        if self.quiet:
            return
        if table != self.current:
            self._finish()
            self.current = table
            self.started = self.clock()
            if self.tty:
                self.bar = tqdm(
                    total=total,
                    desc=table,
                    unit=" rows",
                    unit_scale=True,
                    mininterval=self.min_interval,
                    file=self.stream,
                    dynamic_ncols=True,
                    leave=True,
                )
        self.last = (done, total)
        if self.bar is not None:
            self.bar.total = total
            self.bar.update(done - self.bar.n)

    def _finish(self) -> None:
        if self.current is None:
            return
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        else:
            done, total = self.last
            elapsed = self.clock() - self.started
            self.stream.write(
                f"{self.current}: {done}/{total} rows in {duration(elapsed)}\n"
            )
            self.stream.flush()
        self.current = None

    def close(self) -> None:
        """Finish the last table's bar or line."""
        if not self.quiet:
            self._finish()


def duration(elapsed: float) -> str:
    """``42s``, ``3m05s`` or ``2h07m``."""
    seconds = round(elapsed)
    if seconds < 60:  # noqa: PLR2004 - a minute
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:  # noqa: PLR2004 - an hour
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"
