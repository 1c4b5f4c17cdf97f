"""Request shapes: for one kind of request, how many usable free devices each host has.

A request's criteria (`pci.request.Criteria`) are served by a fixed set of pool
signatures (`pci.pool.Signature`), so one `Shape` per criteria can keep, per host, the
free devices it may use — per NUMA node, because NUMA policies count them differently.
A `Ranking` turns those per-node counts into one number per host under one locality rule
and keeps hosts in buckets by that number, so that finding hosts with at least N never
looks at the others.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum

from passthru.pci.pool import Signature
from passthru.pci.request import Criteria, NumaPolicy, PciRequest


class Locality(Enum):
    """How a host's per-node free devices add up for one request of a VM.

    A VM that is not NUMA-bound may use any device (ANY). A NUMA-bound VM sits on one
    node: `required` counts that node only (NODE), `legacy` adds devices without a node
    (NODE_OR_NONE), `socket` counts every node of the socket (SOCKET), and `preferred`
    may fall back to anything (ANY). The host's number is the best over its nodes.
    """

    ANY = "any"
    NODE = "node"
    NODE_OR_NONE = "node-or-none"
    SOCKET = "socket"

    @classmethod
    def of(cls, request: PciRequest, numa_bound: bool) -> Locality:
        if not numa_bound:
            return cls.ANY
        return _POLICY_LOCALITY[request.numa_policy]

    def usable(self, per_node: Mapping[int | None, int], socket_of: Mapping[int, int]) -> int:
        if self is Locality.ANY:
            return sum(per_node.values())
        if self is Locality.SOCKET:
            per_socket: dict[int, int] = {}
            for node, free in per_node.items():
                if node is not None:
                    socket = socket_of.get(node, node)
                    per_socket[socket] = per_socket.get(socket, 0) + free
            return max(per_socket.values(), default=0)
        best = max((free for node, free in per_node.items() if node is not None), default=0)
        return best + per_node.get(None, 0) if self is Locality.NODE_OR_NONE else best

    def phrase(self) -> str:
        """How a failure message qualifies the count."""
        return _LOCALITY_PHRASE[self]


_POLICY_LOCALITY = {
    NumaPolicy.REQUIRED: Locality.NODE,
    NumaPolicy.LEGACY: Locality.NODE_OR_NONE,
    NumaPolicy.SOCKET: Locality.SOCKET,
    NumaPolicy.PREFERRED: Locality.ANY,
}

_LOCALITY_PHRASE = {
    Locality.ANY: "",
    Locality.NODE: " on one NUMA node",
    Locality.NODE_OR_NONE: " on one NUMA node (or with no NUMA node)",
    Locality.SOCKET: " on one socket",
}


class Ranking:
    """Hosts by their usable free count under one locality, bucketed by that count.

    Hosts with nothing usable (or down) are absent. Within a bucket hosts keep the order
    in which they reached it.
    """

    def __init__(self, locality: Locality) -> None:
        self.locality = locality
        self.count: dict[str, int] = {}
        self.buckets: dict[int, dict[str, None]] = {}

    def set(self, host: str, count: int) -> None:
        old = self.count.get(host, 0)
        if old == count:
            return
        if old:
            bucket = self.buckets[old]
            del bucket[host]
            if not bucket:
                del self.buckets[old]
        if count > 0:
            self.count[host] = count
            self.buckets.setdefault(count, {})[host] = None
        else:
            del self.count[host]

    def hosts_with_at_least(self, need: int) -> int:
        return sum(len(hosts) for count, hosts in self.buckets.items() if count >= need)

    def walk(self, need: int, fewest_first: bool) -> Iterator[str]:
        """Hosts with at least `need`, by count (ascending or descending)."""
        counts = sorted((c for c in self.buckets if c >= need), reverse=not fewest_first)
        for count in counts:
            yield from self.buckets[count]


@dataclass(slots=True)
class Shape:
    """The signatures one criteria serves, and per host the free devices per NUMA node."""

    criteria: Criteria
    signatures: set[Signature] = field(default_factory=set)
    per_host: dict[str, dict[int | None, int]] = field(default_factory=dict)
    rankings: dict[Locality, Ranking] = field(default_factory=dict)

    def add_free(self, host: str, node: int | None, delta: int) -> None:
        nodes = self.per_host.setdefault(host, {})
        nodes[node] = nodes.get(node, 0) + delta

    def rerank(self, host: str, socket_of: Mapping[int, int], up: bool) -> None:
        nodes = self.per_host.get(host, {})
        for ranking in self.rankings.values():
            ranking.set(host, ranking.locality.usable(nodes, socket_of) if up else 0)

    def forget(self, host: str) -> None:
        self.per_host.pop(host, None)
        for ranking in self.rankings.values():
            ranking.set(host, 0)
