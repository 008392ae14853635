"""The purpose tree and the Byun–Bertino–Li permission rule (R-PUR-2)."""

from __future__ import annotations

import pytest

from custdata import Purpose, PurposeTree


def _tree() -> PurposeTree:
    """General → {admin → {analysis, record}, marketing → {direct → {email, phone}, third_party}}."""
    parents = {
        "general": None,
        "admin": "general",
        "analysis": "admin",
        "record": "admin",
        "marketing": "general",
        "direct": "marketing",
        "email": "direct",
        "phone": "direct",
        "third_party": "marketing",
    }
    return PurposeTree(
        {
            pid: Purpose(id=pid, parent=parent, text_ja="目的", text_en="purpose")
            for pid, parent in parents.items()
        }
    )


class TestTree:
    def test_descendants_include_self(self) -> None:
        """p↓ is p and everything below it."""
        assert frozenset(
            {"marketing", "direct", "email", "phone", "third_party"}
        ) == _tree().descendants("marketing")

    def test_ancestors_include_self(self) -> None:
        """p↑ is p and everything above it."""
        assert frozenset(
            {"email", "direct", "marketing", "general"}
        ) == _tree().ancestors("email")

    def test_effective_set(self) -> None:
        """IP* = AIP↓ − PIP↕."""
        # 'marketing' is an ancestor of the prohibited third_party, so it is blocked too.
        assert frozenset({"direct", "email", "phone"}) == _tree().effective(
            ["marketing"], ["third_party"]
        )


# (access purpose, allowed, prohibited, expected)
PERMISSION_TABLE = [
    pytest.param("email", ["marketing"], [], True, id="allowed-child"),
    pytest.param("marketing", ["marketing"], [], True, id="allowed-exact"),
    pytest.param("general", ["marketing"], [], False, id="parent-of-allowed-denied"),
    pytest.param(
        "email", ["marketing"], ["marketing"], False, id="prohibited-ancestor"
    ),
    pytest.param(
        "marketing",
        ["general"],
        ["email"],
        False,
        id="prohibited-descendant-blocks-ancestor",
    ),
    pytest.param(
        "direct",
        ["general"],
        ["email"],
        False,
        id="prohibited-descendant-blocks-parent",
    ),
    pytest.param(
        "phone", ["general"], ["email"], True, id="sibling-of-prohibited-allowed"
    ),
    pytest.param("email", ["general"], ["email"], False, id="prohibited-exact"),
    pytest.param(
        "analysis", ["admin", "marketing"], [], True, id="several-allowed-first"
    ),
    pytest.param(
        "phone", ["admin", "marketing"], [], True, id="several-allowed-second"
    ),
    pytest.param(
        "general", ["admin", "marketing"], [], False, id="several-allowed-root-denied"
    ),
    pytest.param("nonexistent", ["general"], [], False, id="unknown-purpose"),
    pytest.param("email", [], [], False, id="untagged-field"),
    pytest.param("email", ["nonexistent"], [], False, id="unknown-allowed-tag"),
    pytest.param(
        "third_party", ["marketing"], ["direct"], True, id="prohibited-sibling-branch"
    ),
]


class TestPermissionRule:
    @pytest.mark.parametrize(
        ("access", "allowed", "prohibited", "expected"), PERMISSION_TABLE
    )
    def test_rule(
        self, access: str, allowed: list[str], prohibited: list[str], expected: bool
    ) -> None:
        """permits() follows AIP↓ − PIP↕ for every row of the table."""
        assert expected == _tree().permits(access, allowed, prohibited)

    @pytest.mark.parametrize(
        ("access", "allowed", "prohibited", "expected"), PERMISSION_TABLE
    )
    def test_permits_agrees_with_effective(
        self, access: str, allowed: list[str], prohibited: list[str], expected: bool
    ) -> None:
        """The fast per-purpose check and the set formula give the same answer."""
        tree = _tree()
        assert (access in tree.effective(allowed, prohibited)) == tree.permits(
            access, allowed, prohibited
        )
