"""Development sessions: ``nox -l`` lists them."""

from __future__ import annotations

import os

from pathlib import Path

import nox


nox.options.sessions = ["tests", "lint", "typecheck", "docs"]
nox.options.default_venv_backend = "venv"

PYPROJECT = nox.project.load_toml("pyproject.toml")
SQLALCHEMY = ["2.0", "2.1"]
DB_ENV = {
    "CUSTDATA_TEST_POSTGRES_URL": os.environ.get(
        "CUSTDATA_TEST_POSTGRES_URL",
        "postgresql+psycopg://postgres@127.0.0.1:5432/test",
    ),
    "CUSTDATA_TEST_MYSQL_URL": os.environ.get(
        "CUSTDATA_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test"
    ),
}


@nox.session
@nox.parametrize("sqlalchemy", SQLALCHEMY)
def tests(session: nox.Session, sqlalchemy: str) -> None:
    """Run the test suite on one SQLAlchemy minor version, with coverage."""
    session.install(
        "-e", ".", *nox.project.dependency_groups(PYPROJECT, "tests", "typing")
    )
    session.install(f"sqlalchemy~={sqlalchemy}.0")
    session.run("coverage", "run", "-m", "pytest", *session.posargs, env=DB_ENV)
    session.run("coverage", "combine", success_codes=[0, 1])
    session.run("coverage", "report")


@nox.session(python=["3.10", "3.11", "3.12", "3.13"])
def pythons(session: nox.Session) -> None:
    """Run the test suite on every supported Python (those installed)."""
    session.install("-e", ".", *nox.project.dependency_groups(PYPROJECT, "tests"))
    session.run("pytest", *session.posargs, env=DB_ENV)


@nox.session
def lint(session: nox.Session) -> None:
    """Ruff lint and format check."""
    session.install("-e", ".", *nox.project.dependency_groups(PYPROJECT, "lint"))
    paths = ["src", "tests", "benchmarks", "examples", "noxfile.py", "docs/conf.py"]
    session.run("ruff", "check", *paths)
    session.run("ruff", "format", "--check", *paths)


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict over src/ and the typing tests."""
    session.install(
        "-e", ".", *nox.project.dependency_groups(PYPROJECT, "typing", "tests")
    )
    session.run("mypy")


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation with warnings as errors."""
    session.install("-e", ".", *nox.project.dependency_groups(PYPROJECT, "docs"))
    session.run(
        "sphinx-build", "-W", "--keep-going", "-b", "html", "docs", "docs/_build/html"
    )


@nox.session
def examples(session: nox.Session) -> None:
    """Run every example script."""
    session.install("-e", ".")
    session.run("python", "-m", "pytest", "tests/test_examples.py", env=DB_ENV)


@nox.session
def bench(session: nox.Session) -> None:
    """Run the benchmarks and print the ratios (never gates CI)."""
    session.install(
        "-e", ".", *nox.project.dependency_groups(PYPROJECT, "bench", "tests")
    )
    for script in sorted(Path("benchmarks").glob("bench_*.py")):
        session.run("python", str(script), *session.posargs, env=DB_ENV)
