"""The host's NUMA nodes as sysfs lists them: which CPUs each node has.

Read from `<sysfs_root>/devices/system/node/nodeN/cpulist` (e.g. `0-3,8-11`), so that a
simulated host's tree answers as a real one does.
"""

from __future__ import annotations

from pathlib import Path

from passthru.errors import InvalidInputError


def parse_cpulist(text: str, where: str = "cpulist") -> tuple[int, ...]:
    """The CPUs of a kernel CPU list such as `0-3,8,10-11`, sorted."""
    cpus: set[int] = set()
    for part in text.strip().split(","):
        if not part:
            continue
        first, _, last = part.partition("-")
        try:
            low, high = int(first), int(last or first)
        except ValueError:
            raise InvalidInputError(f"{where}: {part!r} is not a CPU number or range") from None
        if low > high:
            raise InvalidInputError(f"{where}: range {part!r} runs backwards")
        cpus.update(range(low, high + 1))
    return tuple(sorted(cpus))


def node_cpus(sysfs_root: Path, node: int) -> tuple[int, ...]:
    """The CPUs of NUMA node `node`; refuses a node the host does not have or without CPUs."""
    path = sysfs_root / "devices/system/node" / f"node{node}" / "cpulist"
    try:
        text = path.read_text()
    except OSError:
        raise InvalidInputError(f"NUMA node {node} is not on this host ({path} cannot be read); "
                                f"the controller placed the VM on a node the host does not "
                                f"report") from None
    cpus = parse_cpulist(text, str(path))
    if not cpus:
        raise InvalidInputError(f"NUMA node {node} has no CPUs ({path} is empty); a VM cannot be "
                                f"pinned to it")
    return cpus
