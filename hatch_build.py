"""Build custdata's optional native accelerators.

A hatchling custom build hook (``[tool.hatch.build.targets.wheel.hooks.custom]``
in ``pyproject.toml``). It compiles two C extensions against OpenSSL's
libcrypto with setuptools' ``build_ext`` (the compiler and flags of the
running Python, ``CC``/``CFLAGS``/``LDFLAGS`` honoured):

* ``custdata.crypto._native`` (``src/custdata/crypto/_native.c``): the AES-256-GCM
  of every envelope;
* ``custdata.audit._native`` (``src/custdata/audit/_native.c``): the audit
  chain's per-record step;

for a wheel, into a temporary directory, included in the wheel (which gets a
platform tag); for an editable install (``pip install -e .``), next to the
sources, where the editable path finds them (the files are ``.gitignore``d).

Each extension is optional: without a compiler, Python headers or OpenSSL
headers the build prints a warning and goes on, and custdata runs on its
pure-Python code (``custdata.crypto.native_enabled()`` and
``custdata.audit.native_enabled()`` say which one runs).
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


#: (source, module) of each extension.
_EXTENSIONS = (
    ("src/custdata/crypto/_native.c", "custdata.crypto._native"),
    ("src/custdata/audit/_native.c", "custdata.audit._native"),
)


class NativeBuildHook(BuildHookInterface):  # type: ignore[type-arg]
    """Compile the native accelerators when the machine can; warn otherwise."""

    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        """Build the extensions for a wheel (*version* ``standard``) or in place (``editable``)."""
        if os.environ.get("CUSTDATA_NO_NATIVE", "") not in {"", "0"}:
            _warn("CUSTDATA_NO_NATIVE is set: the native accelerators are not built")
            return
        root = Path(self.root)
        suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
        self._tmp = tempfile.mkdtemp(prefix="custdata-native-")
        for source, module in _EXTENSIONS:
            target = module.replace(".", "/") + suffix
            try:
                built = _compile(root, Path(self._tmp) / module, source, module)
            except Exception as exc:  # noqa: BLE001 - any failure means "pure Python"
                _warn(
                    f"the native accelerator {module} could not be built "
                    f"({type(exc).__name__}: {exc}); custdata will use its "
                    "pure-Python code in its place"
                )
                continue
            if version == "editable":
                shutil.copyfile(built, root / "src" / target)
                continue
            build_data["force_include"][str(built)] = target
            build_data["pure_python"] = False
            build_data["infer_tag"] = True

    def finalize(
        self, version: str, build_data: dict[str, Any], artifact_path: str
    ) -> None:
        """Remove the temporary build directory."""
        tmp = getattr(self, "_tmp", None)
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _compile(root: Path, tmp: Path, source: str, module: str) -> Path:
    """Compile the extension *module* from *source* under *tmp*; return the built file."""
    from setuptools import Distribution, Extension  # noqa: PLC0415 - its absence is a warning
    from setuptools.command.build_ext import build_ext  # noqa: PLC0415

    ext = Extension(
        module,
        sources=[str(root / source)],
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
