"""Where custdata's optional native accelerators are looked up (internal).

Two optional C extensions, built by ``hatch_build.py`` when the machine has
a compiler and OpenSSL's headers, speed up custdata without changing a byte
of what it writes: :mod:`custdata.crypto._native` (the AES-256-GCM of every
envelope) and :mod:`custdata.audit._native` (the audit chain's per-record
step). The pure-Python code next to each is the reference.
``CUSTDATA_PURE_PYTHON=1`` in the environment, read once when each is first
imported, forces the pure-Python code for both.
"""

from __future__ import annotations

import importlib
import os

from types import ModuleType


__all__ = ["PURE_PYTHON_ENV", "load"]

#: The environment variable that forces the pure-Python code (read at import).
PURE_PYTHON_ENV = "CUSTDATA_PURE_PYTHON"


def usable(module: ModuleType, required: tuple[str, ...]) -> bool:
    """Whether *module* has every name the Python code calls in it.

    A build compiled from an older source, and not rebuilt, lacks some: it is
    not used.
    """
    return all(hasattr(module, name) for name in required)


def load(name: str, required: tuple[str, ...]) -> ModuleType | None:
    """The extension module *name* if it is built, current and allowed, else ``None``."""
    if os.environ.get(PURE_PYTHON_ENV, "").strip() not in {"", "0"}:
        return None
    try:
        module = importlib.import_module(name)
    except ImportError:
        return None
    return module if usable(module, required) else None
