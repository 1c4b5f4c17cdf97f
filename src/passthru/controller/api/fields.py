"""Field types shared by the request bodies, path and query parameters: one definition per
kind of field, so that every value the API stores fits the store.

- Text never holds NUL (PostgreSQL's text cannot) nor a lone surrogate (no UTF-8 for it,
  so neither store can encode it); free text (`Text`) is capped at `MAX_TEXT` characters.
- Names and references (`Name`, `Key` and their path and query twins) hold no control
  character at all (C0, DEL, C1) and fit the store's 255-character name columns.
- Integers that go into 32-bit `INTEGER` columns are `Int32`, or narrower.

The checks run before a handler does, so a hostile value gets a 422 that names the field
and the character, never a 500 from the store.
"""

from __future__ import annotations

import unicodedata
from typing import Annotated, Any

from fastapi import Path, Query
from pydantic import AfterValidator, Field, StrictInt

#: The store's name columns are String(255).
MAX_NAME = 255
#: Free text: descriptions, extra spec and image property values, PCI flavor values.
MAX_TEXT = 4096
#: The largest value of the store's 32-bit INTEGER columns.
INT32_MAX = 2**31 - 1

NAME_PATTERN = r"^\S(.*\S)?$"
#: What a name that does not match NAME_PATTERN is told.
NAME_RULE = "a name must not begin or end with a blank, nor hold a line break"


def _where(value: str, index: int) -> str:
    return f"U+{ord(value[index]):04X} at position {index + 1}"


def _clean_text(value: str) -> str:
    """Free text: anything printable, tabs and line breaks, but no NUL or lone surrogate."""
    for index, char in enumerate(value):
        if char == "\x00":
            raise ValueError(f"text must not contain NUL (the control character "
                             f"{_where(value, index)})")
        if unicodedata.category(char) == "Cs":
            raise ValueError(f"text must not contain a lone surrogate ({_where(value, index)}"
                             "); send valid UTF-8")
    return value


def _clean_name(value: str) -> str:
    """A name or reference: printable characters only."""
    _clean_text(value)
    for index, char in enumerate(value):
        if unicodedata.category(char) == "Cc":
            raise ValueError(f"names must not contain control characters; found "
                             f"{_where(value, index)}")
    return value


#: A string checked as a name (printable characters only); give its length with Field.
CheckedName = Annotated[str, AfterValidator(_clean_name)]
#: A string checked as free text (no NUL, no lone surrogate); give its length with Field.
CleanText = Annotated[str, AfterValidator(_clean_text)]

#: A resource name or reference (UUID or name): 1-255 printable characters, no
#: surrounding blanks.
Name = Annotated[CheckedName, Field(min_length=1, max_length=MAX_NAME, pattern=NAME_PATTERN)]
#: The key of an extra spec, image property or PCI flavor attribute.
Key = Annotated[CheckedName, Field(min_length=1, max_length=MAX_NAME)]
#: Free text (a description, a value): at most MAX_TEXT characters.
Text = Annotated[CleanText, Field(max_length=MAX_TEXT)]
#: A whole number that fits the store's 32-bit INTEGER columns (narrow it further with Field).
Int32 = Annotated[StrictInt, Field(ge=-INT32_MAX - 1, le=INT32_MAX)]

#: A path parameter naming a resource (by UUID or name), a project or a key.
NamePath = Annotated[CheckedName, Path(min_length=1, max_length=MAX_NAME)]


def name_query(description: str) -> Any:
    """An optional query filter naming a resource: `Annotated[CheckedName | None,
    name_query("only this host's")] = None`."""
    return Query(max_length=MAX_NAME, description=description)
