"""Lookups in lxml trees typed as tests use them: lxml-stubs type `find` as maybe None and
`xpath` as a union of every kind of XPath result, where a test expects one element there,
or a list of elements or of strings."""

from __future__ import annotations

from typing import TypeVar

from lxml import etree

_T = TypeVar("_T")


def one(parent: etree._Element, path: str) -> etree._Element:
    """The first element at `path` under `parent`, which must have one."""
    found = parent.find(path)
    assert found is not None, f"<{parent.tag}> has no {path}"
    return found


def _selected(node: etree._Element, path: str, kind: type[_T]) -> list[_T]:
    found = node.xpath(path)
    assert isinstance(found, list), f"{path} selects no node-set"
    selected: list[_T] = [item for item in found if isinstance(item, kind)]
    assert len(selected) == len(found), f"{path} selects other than {kind.__name__}"
    return selected


def elements(node: etree._Element, path: str) -> list[etree._Element]:
    """The elements an XPath expression selects from `node`, in document order."""
    return _selected(node, path, etree._Element)


def strings(node: etree._Element, path: str) -> list[str]:
    """The attribute values or texts an XPath expression selects from `node`."""
    return _selected(node, path, str)
