"""`KEY=VALUE` words as the seed's transcripts write them.

The seed types `set 'vendor_id'='8086' 'product_id': '0001'` and
`set pci_passthrough:pci_flavor= 1:IntelGPU,NvGPU;`: after the shell removes the quotes a
value may be glued to its key (`vendor_id=8086`), follow a key ending in `=`
(`e.group=` `A`), or follow a key ending in `:` (`product_id:` `0001`). All three read the
same.
"""

from __future__ import annotations

from collections.abc import Sequence

from passthru.errors import InvalidInputError


class AssignmentError(InvalidInputError):
    """Words that do not read as KEY=VALUE pairs."""


def parse_assignments(words: Sequence[str]) -> dict[str, str]:
    pairs: dict[str, str] = {}
    index = 0
    while index < len(words):
        word = words[index]
        if "=" in word:
            key, _, value = word.partition("=")
        elif word.endswith(":"):
            key, value = word[:-1], ""
        else:
            raise AssignmentError(f"{word!r} is not KEY=VALUE (e.g. vendor_id=8086)")
        if not value:
            index += 1
            if index == len(words):
                raise AssignmentError(f"{key!r} has no value; write {key}=VALUE")
            value = words[index]
        if not key:
            raise AssignmentError(f"{word!r} has no key before '='; write KEY=VALUE")
        pairs[key] = value
        index += 1
    return pairs
