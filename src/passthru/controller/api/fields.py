"""Field types shared by the request bodies."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

#: A resource name: 1-255 characters, no surrounding blanks.
Name = Annotated[str, Field(min_length=1, max_length=255, pattern=r"^\S(.*\S)?$")]
#: The key of an extra spec, image property or PCI flavor attribute.
Key = Annotated[str, Field(min_length=1, max_length=255)]
