"""Values that may be None in general (a nullable column, an optional field) but must be
there where a test reads them: typed without None, so that the test can sort them."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

_T = TypeVar("_T")


def present(values: Iterable[_T | None]) -> list[_T]:
    """The values as a list, none of which may be None."""
    found = list(values)
    there = [value for value in found if value is not None]
    assert len(there) == len(found), f"None among {found}"
    return there
