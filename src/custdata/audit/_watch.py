"""Noticing, cheaply, that a path may no longer name the file a sink opened.

A :class:`~custdata.audit.JsonLinesSink` must not append events to a file that
was moved, deleted or replaced. Comparing ``os.stat(path)`` with the opened
file on every event is exact but costs a path lookup and a ``stat_result`` per
event (about a quarter of sealing an event into a file). On Linux the kernel
reports those changes through one process-wide ``inotify`` instance: watches
on the file (moved, link count changed, deleted) and on its directory (moved,
deleted). When the kernel queued an event since a sink last looked, the sink
makes the exact ``stat`` comparison before writing; the per-event cost is one
``poll`` with a zero timeout. The kernel queues the notification inside the
``rename``/``unlink`` system call itself, so the very next event sees it.

What ``inotify`` does not report (a grandparent directory renamed, a change
made by another host on a network file system) is caught by the exact
comparison the sink still makes at least every :data:`CHECK_EVERY` events and
every :data:`CHECK_INTERVAL_NS` nanoseconds. Where ``inotify`` is unavailable
(another system, the per-user instance limit reached) the sink compares on
every event, as before.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import select
import sys
import threading

from collections.abc import Callable
from pathlib import Path
from typing import Final


__all__ = ["CHECK_EVERY", "CHECK_INTERVAL_NS", "Watcher", "watcher"]

#: The exact comparison runs at least every this many events per sink…
CHECK_EVERY: Final = 1024
#: …and at least every this many nanoseconds (50 ms).
CHECK_INTERVAL_NS: Final = 50_000_000

# inotify(7) event masks.
_IN_ATTRIB: Final = 0x00000004
_IN_MOVE_SELF: Final = 0x00000800
_IN_DELETE_SELF: Final = 0x00000400
_IN_UNMOUNT: Final = 0x00002000
_IN_Q_OVERFLOW: Final = 0x00004000
_FILE_MASK: Final = _IN_ATTRIB | _IN_MOVE_SELF | _IN_DELETE_SELF
_DIR_MASK: Final = _IN_MOVE_SELF | _IN_DELETE_SELF


class Watcher:
    """A process-wide ``inotify`` instance shared by every file sink.

    :attr:`generation` counts the batches of kernel notifications read so far;
    a sink that last checked its file at an older generation checks again.
    """

    def __init__(self, fd: int, add_watch: Callable[[int, bytes, int], int]) -> None:
        self._fd = fd
        self._add_watch = add_watch
        self._lock = threading.Lock()
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        #: ``poll(0)`` of the instance: non-empty when notifications are queued.
        self.poll = poller.poll
        self.generation = 0

    def watch(self, path: str) -> bool:
        """Watch *path* and its directory; ``False`` when the kernel refuses."""
        directory = os.fspath(Path(path).absolute().parent)
        for target, mask in ((path, _FILE_MASK), (directory, _DIR_MASK)):
            if self._add_watch(self._fd, os.fsencode(target), mask) < 0:
                return False
        return True

    def drain(self) -> int:
        """Read every queued notification and return the new generation.

        The notifications themselves are not interpreted: any of them only
        means "compare again". Watches the kernel removed (a deleted file) are
        not re-added; a sink that re-opens its file watches it anew.
        """
        with self._lock:
            try:
                while os.read(self._fd, 65_536):
                    pass
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                pass
            self.generation += 1
            return self.generation


_state: list[Watcher | None] = []
_state_lock = threading.Lock()


def watcher() -> Watcher | None:
    """Return this process's watcher, creating it on first use (``None``: unavailable)."""
    if _state:
        return _state[0]
    with _state_lock:
        if not _state:
            _state.append(_new_watcher())
    return _state[0]


def _new_watcher() -> Watcher | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        init = libc.inotify_init1
        add_watch = libc.inotify_add_watch
    except (OSError, AttributeError):
        return None
    init.argtypes = [ctypes.c_int]
    init.restype = ctypes.c_int
    add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
    add_watch.restype = ctypes.c_int
    fd = init(os.O_NONBLOCK | os.O_CLOEXEC)
    if fd < 0:
        return None
    return Watcher(fd, add_watch)


def _forget_after_fork() -> None:
    # A child shares the parent's instance (and would steal its notifications):
    # it makes its own on first use, and its sinks watch their files anew.
    _state.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)
