"""The conformance suite calls every public method of Tx and Store (a new one needs a test)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from taskgrid.coordinator.store import Store, Tx

HERE = Path(__file__).resolve().parent


def public_methods(cls: type) -> list[str]:
    """Public methods of the class and of the query groups it is made of."""
    own = [c for c in cls.__mro__ if c.__module__.startswith("taskgrid.")]
    return sorted({name for c in own for name, value in vars(c).items()
                   if not name.startswith("_") and callable(value)})


def suite_source() -> str:
    """The other test files of this folder (helpers and conftest do not count)."""
    return "\n".join(p.read_text(encoding="utf-8") for p in sorted(HERE.glob("test_*.py"))
                     if p.name != Path(__file__).name)


@pytest.mark.parametrize("cls", [Tx, Store], ids=lambda c: c.__name__)
def test_every_public_method_is_called_by_a_test(cls):
    names = public_methods(cls)
    assert len(names) >= (30 if cls is Tx else 6), names  # introspection found them
    source = suite_source()
    untested = [n for n in names if not re.search(rf"\.{n}\(", source)]
    assert untested == [], f"{cls.__name__} methods no test in tests/store calls: {untested}"
