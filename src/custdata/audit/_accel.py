"""Which implementation of the audit chain's per-record step runs.

The optional C extension :mod:`custdata.audit._native` (built by
``hatch_build.py`` when the machine has a compiler and OpenSSL's headers)
seals and verifies records with one call per record, or per run of lines;
the pure-Python code in ``_chain.py`` and ``_verify.py`` is the reference and
gives byte-identical results. ``CUSTDATA_PURE_PYTHON=1`` in the environment,
read once at import, forces the pure-Python code.
"""

from __future__ import annotations

from types import ModuleType

from custdata._accel import PURE_PYTHON_ENV, load, usable


__all__ = ["PURE_PYTHON_ENV", "native", "native_enabled"]


#: What the Python code calls in the extension: a build that lacks any of them
#: (compiled from an older source and not rebuilt) is not used.
_REQUIRED = (
    "Sealer",
    "fill",
    "next_in_order",
    "run",
    "step",
    "v1_line",
    "v2_body",
    "v2_line",
)


def _usable(module: ModuleType) -> bool:
    return usable(module, _REQUIRED)


#: The native module in use, or ``None`` for the pure-Python code. Looked up
#: at each use (a chain writer's start, a verification), so a test may swap it.
native: ModuleType | None = load("custdata.audit._native", _REQUIRED)


def native_enabled() -> bool:
    """Return whether the audit chain runs on the native accelerator.

    ``True`` when the optional extension ``custdata.audit._native`` was built
    and imported and ``CUSTDATA_PURE_PYTHON`` was not set (to anything but
    ``0``) when custdata was imported; ``False`` when the pure-Python code
    runs. Both give byte-identical records and verification reports; the
    native one is faster (see :doc:`/audit`, "The native accelerator").
    """
    return native is not None
