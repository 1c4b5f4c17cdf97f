"""Which of the hosts that fit is tried first."""

from __future__ import annotations

from enum import StrEnum


class Weigher(StrEnum):
    """`pack` fills hosts up (fewest free devices first), keeping whole hosts free for big
    VMs; `spread` balances load (most free first). Both weigh by the free count of the
    VM's most selective request."""

    PACK = "pack"
    SPREAD = "spread"

    @property
    def fewest_first(self) -> bool:
        return self is Weigher.PACK
