"""Sphinx configuration for the custdata documentation."""

from __future__ import annotations

import zlib

from importlib.metadata import version as _version
from pathlib import Path
from typing import Any


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

# Links into the documentation of Python and of the libraries custdata builds
# on, resolved offline: each project's objects that these pages reference are
# listed, with their real address, in ``_inventories/<project>.txt`` (Sphinx's
# plain-text inventory format, as ``sphobjinv`` writes it). The build compiles
# them into ``objects.inv`` files under its doctree folder and nothing is
# fetched. A reference into one of these projects that its list does not name
# fails the build (``_check_external_reference`` below): add the object, with
# the URL from the project's own documentation, to its list.
_INVENTORIES = Path(__file__).parent / "_inventories"
_EXTERNAL = {
    "python": "https://docs.python.org/3/",
    "sqlalchemy": "https://docs.sqlalchemy.org/en/20/",
    "structlog": "https://www.structlog.org/en/stable/",
    "attrs": "https://www.attrs.org/en/stable/",
    "cryptography": "https://cryptography.io/en/latest/",
}
# Module aliases the sources import under (``import datetime as dt``); type
# hints that keep them are resolved under the full name.
_ALIASES = {"dt": "datetime", "sa": "sqlalchemy"}
intersphinx_mapping: dict[str, tuple[str, str]] = {}


def _compile_inventories(app: Any, config: Any) -> None:
    """Compile each plain-text inventory into an ``objects.inv`` for intersphinx."""
    out = Path(app.doctreedir) / "inventories"
    out.mkdir(parents=True, exist_ok=True)
    mapping = {}
    for project, base in _EXTERNAL.items():
        text = (_INVENTORIES / f"{project}.txt").read_bytes()
        lines = text.splitlines(keepends=True)
        header, body = b"".join(lines[:4]), b"".join(lines[4:])
        target = out / f"{project}.inv"
        target.write_bytes(header + zlib.compress(body, 9))
        mapping[project] = (base, str(target))
    config.intersphinx_mapping = mapping


def _listed_modules() -> set[str]:
    """The top-level modules the inventories cover (``datetime``, ``sqlalchemy``...)."""
    tops = set(_ALIASES)
    for project in _EXTERNAL:
        text = (_INVENTORIES / f"{project}.txt").read_text(encoding="utf-8")
        for line in text.splitlines():
            if line and not line.startswith("#"):
                tops.add(line.split(".", 1)[0].split(" ", 1)[0])
    return tops


_EXTERNAL_MODULES = _listed_modules()


def _check_external_reference(app: Any, env: Any, node: Any, contnode: Any) -> Any:
    """Resolve an aliased name; warn for an external reference no inventory lists.

    A reference into one of the projects above that intersphinx cannot
    resolve is not in its inventory: the warning fails a ``-W`` build.
    """
    from sphinx.ext.intersphinx import missing_reference  # noqa: PLC0415
    from sphinx.util import logging  # noqa: PLC0415

    if node.get("refdomain") != "py":
        return None
    target = str(node.get("reftarget", "")).lstrip("~.")
    top, _, rest = target.partition(".")
    if top in _ALIASES and rest:
        node["reftarget"] = target = f"{_ALIASES[top]}.{rest}"
        top = _ALIASES[top]
    # Every listener runs; intersphinx's answer (or this one) is taken.
    resolved = missing_reference(app, env, node, contnode)
    if resolved is not None:
        return resolved
    if top in _EXTERNAL_MODULES:
        logging.getLogger(__name__).warning(
            "external reference %r is not in docs/_inventories (add it with its URL)",
            target,
            location=node,
            type="ref",
            subtype="external",
        )
    return None


def setup(app: Any) -> None:
    """Compile the inventories before intersphinx loads them; check references."""
    app.connect("config-inited", _compile_inventories, priority=700)
    app.connect("missing-reference", _check_external_reference, priority=900)
