"""The public namespaces: explicit, sorted and complete ``__all__``."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest


NAMESPACES = [
    "custdata",
    "custdata.alembic",
    "custdata.crypto",
    "custdata.audit",
    "custdata.governance",
    "custdata.sqlalchemy",
]


class TestAll:
    @pytest.mark.parametrize("name", NAMESPACES)
    def test_all_is_sorted_and_matches_public_names(self, name: str) -> None:
        """__all__ is sorted and lists exactly the public, non-module names."""
        module = importlib.import_module(name)
        public = {
            n
            for n, v in vars(module).items()
            if not n.startswith("_")
            and not isinstance(v, type(sys))
            and n != "annotations"
        }
        assert sorted(module.__all__) == list(module.__all__)
        assert public == set(module.__all__)

    def test_error_module_all_is_sorted(self) -> None:
        """The errors module's own __all__ is sorted too (the family's one home)."""
        module = importlib.import_module("custdata._errors")
        assert sorted(module.__all__) == list(module.__all__)

    @pytest.mark.parametrize("name", NAMESPACES)
    def test_classes_show_public_path(self, name: str) -> None:
        """Re-exported classes report the public module, not the private one."""
        module = importlib.import_module(name)
        private = [
            n
            for n in module.__all__
            if isinstance(getattr(module, n), type)
            and getattr(module, n).__module__ != name
            and getattr(module, n).__module__.startswith("custdata")
        ]
        assert [] == private

    @pytest.mark.parametrize("name", NAMESPACES)
    def test_every_public_object_has_a_docstring(self, name: str) -> None:
        """Every public class and function is documented."""
        module = importlib.import_module(name)
        undocumented = [
            n
            for n in module.__all__
            if callable(getattr(module, n))
            and not (getattr(module, n).__doc__ or "").strip()
        ]
        assert [] == undocumented


class TestImportCost:
    def test_import_custdata_pulls_no_optional_dependency(self) -> None:
        """import custdata imports neither SQLAlchemy nor boto3."""
        code = "import sys, custdata; print(sorted(m for m in ('sqlalchemy', 'boto3', 'botocore') if m in sys.modules))"
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout
        assert "[]" == out.strip()

    def test_import_governance_pulls_no_sqlalchemy(self) -> None:
        """import custdata.governance (incidents included) imports no SQLAlchemy."""
        code = "import sys, custdata.governance; print('sqlalchemy' in sys.modules)"
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout
        assert "False" == out.strip()

    def test_version(self) -> None:
        """__version__ comes from the package metadata."""
        from importlib.metadata import version

        import custdata

        assert version("custdata") == custdata.__version__
