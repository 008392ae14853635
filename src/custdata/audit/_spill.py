"""The MACs a verification keeps, in bounded memory.

Replaying the anchored checkpoints needs every verified MAC by chain and seq
(the Merkle leaves), in checkpoint order, which is not file order. The
one-pass verifier therefore keeps them: 32 bytes per record in a per-chain
``bytearray``, moved to one anonymous temporary file whenever the buffers of
all chains together exceed :data:`MEMORY_LIMIT`. Memory stays bounded at any
trail size; the disk holds 32 bytes per record until the verification ends.
"""

from __future__ import annotations

import bisect
import contextlib
import os
import tempfile

from collections.abc import Iterator
from pathlib import Path
from typing import Final


__all__ = ["MEMORY_LIMIT", "ChainMacs", "MacSpill"]

#: The bytes of MACs held in memory, all chains together, before they spill.
MEMORY_LIMIT: Final = 16 << 20
_MAC: Final = 32
#: How many MACs one read of a spilled range fetches.
_READ: Final = 8192


class MacSpill:
    """The temporary file the chains' MAC buffers spill to (created on first spill)."""

    def __init__(self, limit: int = MEMORY_LIMIT) -> None:
        self.limit = limit
        self.chains: list[ChainMacs] = []
        self._fd: int | None = None
        self._size = 0

    def chain(self) -> ChainMacs:
        """Return the MAC store of a new chain."""
        macs = ChainMacs(self)
        self.chains.append(macs)
        return macs

    def buffered(self) -> int:
        """The bytes of MACs held in memory."""
        return sum(len(c.buf) for c in self.chains)

    def maybe_spill(self) -> None:
        """Move every chain's buffer to the file if together they exceed the limit."""
        if self.buffered() <= self.limit:
            return
        if self._fd is None:
            # An unnamed file: unlinked at once (where the system allows).
            fd, name = tempfile.mkstemp(prefix="custdata-verify-")
            self._fd = fd
            with contextlib.suppress(OSError):
                Path(name).unlink()
        for macs in self.chains:
            if macs.buf:
                os.pwrite(self._fd, macs.buf, self._size)
                macs.spilled(self._size)
                self._size += len(macs.buf)
                macs.buf = bytearray()

    def read(self, offset: int, size: int) -> bytes:
        """Read *size* bytes of spilled MACs at *offset*."""
        assert self._fd is not None  # noqa: S101 - only spilled ranges are read
        return os.pread(self._fd, size, offset)

    def close(self) -> None:
        """Drop the temporary file."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def __del__(self) -> None:
        self.close()


class ChainMacs:
    """The MACs of one chain for seq 1, 2, 3, … (appended in order).

    Reads like the ``{seq: mac}`` mapping the replay expects: :meth:`get`,
    ``len()`` and :meth:`range`.
    """

    def __init__(self, spill: MacSpill) -> None:
        #: The spill file this chain's MACs move to.
        self.spill = spill
        #: The MACs not yet spilled, for seq ``len(self) - len(buf)/32 + 1`` on.
        self.buf = bytearray()
        #: Spilled runs: the first seq of each, and its file offset.
        self._starts: list[int] = []
        self._offsets: list[int] = []
        self._on_disk = 0

    def append(self, mac: bytes) -> None:
        """Add the MAC of the next seq."""
        self.buf += mac

    def spilled(self, offset: int) -> None:
        """Note that the buffer was written to the spill file at *offset*."""
        self._starts.append(self._on_disk + 1)
        self._offsets.append(offset)
        self._on_disk += len(self.buf) // _MAC

    def __len__(self) -> int:
        return self._on_disk + len(self.buf) // _MAC

    def get(self, seq: int, default: bytes | None = None) -> bytes | None:
        """Return the MAC of *seq*, or *default* when the chain has no such seq."""
        if not 1 <= seq <= len(self):
            return default
        if seq > self._on_disk:
            at = (seq - self._on_disk - 1) * _MAC
            return bytes(self.buf[at : at + _MAC])
        run = bisect.bisect_right(self._starts, seq) - 1
        offset = self._offsets[run] + (seq - self._starts[run]) * _MAC
        return self.spill.read(offset, _MAC)

    def range(self, first: int, last: int) -> Iterator[bytes]:
        """Yield the MACs of *first* to *last* (both included, within the chain)."""
        seq = max(first, 1)
        last = min(last, len(self))
        while seq <= last:
            if seq > self._on_disk:
                at = (seq - self._on_disk - 1) * _MAC
                end = (last - self._on_disk) * _MAC
                chunk = bytes(self.buf[at:end])
            else:
                run = bisect.bisect_right(self._starts, seq) - 1
                run_end = (
                    self._starts[run + 1] - 1
                    if run + 1 < len(self._starts)
                    else self._on_disk
                )
                upto = min(last, run_end, seq + _READ - 1)
                offset = self._offsets[run] + (seq - self._starts[run]) * _MAC
                chunk = self.spill.read(offset, (upto - seq + 1) * _MAC)
            for at in range(0, len(chunk), _MAC):
                yield chunk[at : at + _MAC]
            seq += len(chunk) // _MAC
