"""Sphinx configuration for the custdata documentation."""

from __future__ import annotations

from importlib.metadata import version as _version


project = "custdata"
author = "The custdata developers"
copyright = "2026, The custdata developers"
release = _version("custdata")
version = ".".join(release.split(".")[:2])

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.intersphinx",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3
exclude_patterns = ["_build"]
html_theme = "furo"
html_title = f"custdata {release}"
autodoc_member_order = "bysource"
autodoc_typehints = "description"
# SQLAlchemy's own docstrings (cache_ok, ...) point at labels of its docs.
autodoc_inherit_docstrings = False
autodoc_default_options = {"members": True, "show-inheritance": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
# Objects re-exported under two names (custdata.X and custdata._module.X) would
# otherwise warn as duplicates; the reference documents only the public path.
suppress_warnings = ["ref.python"]
intersphinx_mapping: dict[str, tuple[str, None]] = {}
