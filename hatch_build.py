"""Build the optional native accelerator of the audit chain (``custdata.audit._native``).

A hatchling custom build hook (``[tool.hatch.build.targets.wheel.hooks.custom]``
in ``pyproject.toml``). It compiles ``src/custdata/audit/_native.c`` against
OpenSSL's libcrypto with setuptools' ``build_ext`` (the compiler and flags of
the running Python, ``CC``/``CFLAGS``/``LDFLAGS`` honoured):

* for a wheel, into a temporary directory, included as
  ``custdata/audit/_native<EXT_SUFFIX>`` (the wheel gets a platform tag);
* for an editable install (``pip install -e .``), next to the sources, where
  the editable path finds it (the file is ``.gitignore``d).

The extension is optional: without a compiler, Python headers or OpenSSL
headers the build prints a warning and goes on, and custdata runs on its
pure-Python code (``custdata.audit.native_enabled()`` says which one runs).
``CUSTDATA_NO_NATIVE=1`` at build time skips the compilation altogether.
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
import tempfile

from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


_SOURCE = "src/custdata/audit/_native.c"
_TARGET = "custdata/audit/_native"


class NativeBuildHook(BuildHookInterface):  # type: ignore[type-arg]
    """Compile ``custdata.audit._native`` when the machine can; warn otherwise."""

    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        """Build the extension for a wheel (*version* ``standard``) or in place (``editable``)."""
        if os.environ.get("CUSTDATA_NO_NATIVE", "") not in {"", "0"}:
            _warn("CUSTDATA_NO_NATIVE is set: the native accelerator is not built")
            return
        root = Path(self.root)
        suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
        self._tmp = tempfile.mkdtemp(prefix="custdata-native-")
        try:
            built = _compile(root, Path(self._tmp))
        except Exception as exc:  # noqa: BLE001 - any failure means "pure Python"
            _warn(
                "the native accelerator could not be built "
                f"({type(exc).__name__}: {exc}); custdata will use its "
                "pure-Python audit chain"
            )
            return
        if version == "editable":
            shutil.copyfile(built, root / "src" / (_TARGET + suffix))
            return
        build_data["force_include"][str(built)] = _TARGET + suffix
        build_data["pure_python"] = False
        build_data["infer_tag"] = True

    def finalize(
        self, version: str, build_data: dict[str, Any], artifact_path: str
    ) -> None:
        """Remove the temporary build directory."""
        tmp = getattr(self, "_tmp", None)
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _compile(root: Path, tmp: Path) -> Path:
    """Compile the extension under *tmp*; return the built file."""
    from setuptools import Distribution, Extension  # noqa: PLC0415 - its absence is a warning
    from setuptools.command.build_ext import build_ext  # noqa: PLC0415

    ext = Extension(
        "custdata.audit._native",
        sources=[str(root / _SOURCE)],
        libraries=["crypto"],
    )
    dist = Distribution({"name": "custdata-native", "ext_modules": [ext]})
    cmd = build_ext(dist)
    cmd.build_temp = str(tmp / "temp")
    cmd.build_lib = str(tmp / "lib")
    cmd.ensure_finalized()
    cmd.run()
    (output,) = cmd.get_outputs()
    return Path(output)


def _warn(message: str) -> None:
    print(f"custdata build: WARNING: {message}", file=sys.stderr)  # noqa: T201
