"""A PCI flavor edit updates only the shapes that name the edited flavor, and the index
then answers exactly as one built from scratch with the new flavors.

Random fleets go through random sequences of flavor creations, spec changes, renames
and deletions, mixed with placements (which create shapes and claim devices), frees and
inventory reports. After every step each shape the index holds must equal a fresh
index's: the signatures it serves, the free devices per host and NUMA node, and every
ranking; and a placement must succeed on one exactly when it does on the other.
"""

from __future__ import annotations

from collections.abc import Mapping

from hypothesis import given, settings
from hypothesis import strategies as st

from passthru.controller.scheduler import HostIndex, NoValidHostError, place
from passthru.controller.scheduler.shapes import Locality
from passthru.pci.device import PciDevice
from passthru.pci.flavor import PciFlavor
from passthru.pci.pool import build_pools
from passthru.pci.request import PciRequest
from tests.controller.scheduler.fleet import FLAVORS, gpus, index_of, vf_port
from tests.controller.scheduler.test_index_vs_brute_force import hosts, requests

NAMES = ["bigGPU", "smallGPU", "anyGPU", "fastNIC", "newGPU"]
SPECS = [
    {"vendor_id": "10de", "product_id": "20b5"},
    {"vendor_id": "10de", "product_id": "20b6"},
    {"vendor_id": "10de"},
    {"product_id": "20b[56]"},
    {"vendor_id": "8086", "product_id": "154c"},
    {"vendor_id": "15b3"},
    {"vendor_id": "ffff"},
]

#: (name, spec index) sets a flavor (creating it or changing its spec), (name, None)
#: deletes it, (name, -1) changes only its description.
edits = st.tuples(st.sampled_from(NAMES), st.sampled_from([None, -1, *range(len(SPECS))]))
wanted = st.one_of(
    requests,
    st.builds(lambda count, names: gpus(count, *names), st.integers(1, 2),
              st.lists(st.sampled_from(NAMES), min_size=1, max_size=3, unique=True)),
    st.builds(vf_port, st.sampled_from(["physnet1", "physnet2"]), st.sampled_from(NAMES)),
)
operations = st.one_of(
    st.tuples(st.just("edit"), edits),
    st.tuples(st.just("rename"), st.sampled_from(NAMES), st.sampled_from(NAMES)),
    st.tuples(st.just("place"), st.lists(wanted, min_size=1, max_size=2)),
    st.tuples(st.just("free"), st.integers(0, 50)),
    st.tuples(st.just("report"), st.integers(0, 50)),
)


def edited(flavors: dict[str, PciFlavor], name: str, spec: int | None) -> None:
    if spec is None:
        flavors.pop(name, None)
    elif spec == -1:
        if name in flavors:
            old = flavors[name]
            flavors[name] = PciFlavor(name, old.spec, old.description + " (edited)")
    else:
        flavors[name] = PciFlavor(name, SPECS[spec])


def fresh_index(index: HostIndex, flavors: Mapping[str, PciFlavor]) -> HostIndex:
    fresh = HostIndex(flavors)
    for name, entry in index.hosts.items():
        fresh.report(name, entry.pools, socket_of=entry.socket_of, up=entry.up)
    return fresh


def free_per_node(per_host: Mapping[str, Mapping[int | None, int]]) -> dict[str, dict]:
    """Free counts without the zeros (a node with nothing free counts as none)."""
    kept = {host: {node: n for node, n in nodes.items() if n} for host, nodes in
            per_host.items()}
    return {host: nodes for host, nodes in kept.items() if nodes}


def assert_as_fresh(index: HostIndex, flavors: Mapping[str, PciFlavor],
                    vm: list[PciRequest] | None) -> None:
    fresh = fresh_index(index, flavors)
    for criteria, shape in list(index._shapes.items()):
        built = fresh.shape(criteria)
        assert shape.signatures == built.signatures, criteria
        assert free_per_node(shape.per_host) == free_per_node(built.per_host), criteria
        for locality in Locality:
            ours, theirs = index.ranking(criteria, locality), fresh.ranking(criteria, locality)
            assert ours.count == theirs.count, (criteria, locality)
            assert ours.buckets.keys() == theirs.buckets.keys(), (criteria, locality)
    if vm is not None:
        assert placeable(index, vm) == placeable(fresh, vm)


def placeable(index: HostIndex, vm: list[PciRequest]) -> bool:
    try:
        place(index, vm)
    except NoValidHostError:
        return False
    return True


@settings(max_examples=200, deadline=None)
@given(fleet=st.lists(hosts(), min_size=1, max_size=4),
       steps=st.lists(operations, min_size=1, max_size=16))
def test_after_any_edits_the_index_answers_as_a_fresh_one(
        fleet: list[list[PciDevice]], steps: list[tuple]) -> None:
    names = [f"compute-{n}" for n in range(len(fleet))]
    index = index_of(dict(zip(names, fleet, strict=True)))
    flavors = dict(FLAVORS)
    owners: list[tuple[str, str]] = []
    for number, step in enumerate(steps):
        vm = None
        if step[0] == "edit":
            edited(flavors, *step[1])
            index.set_flavors(flavors)
        elif step[0] == "rename":
            _, old, new = step
            if old in flavors and new not in flavors:
                renamed = flavors.pop(old)
                flavors[new] = PciFlavor(new, renamed.spec, renamed.description, renamed.uuid)
            index.set_flavors(flavors)
        elif step[0] == "place":
            vm = step[1]
            try:
                placement = place(index, vm)
            except NoValidHostError:
                pass
            else:
                owner = f"vm{number}"
                index.claim(placement.host, placement.selection, owner)
                owners.append((placement.host, owner))
        elif step[0] == "free" and owners:
            host, owner = owners.pop(step[1] % len(owners))
            index.free(host, owner)
        elif step[0] == "report":
            entry = index.hosts[names[step[1] % len(names)]]
            index.report(entry.name, build_pools(list(entry.devices.values())),
                         socket_of=entry.socket_of, up=entry.up)
        assert_as_fresh(index, flavors, vm)


def test_an_edit_keeps_the_shapes_that_do_not_name_the_flavor() -> None:
    index = index_of({"h0": [PciDevice("0000:40:00.0", "10de", "20b5", numa_node=0)]})
    big, small = gpus(1, "bigGPU").criteria, gpus(1, "smallGPU").criteria
    kept, rematched = index.shape(big), index.shape(small)
    ranking = index.ranking(big, Locality.ANY)
    index.set_flavors({**FLAVORS, "smallGPU": PciFlavor("smallGPU", {"product_id": "20b5"})})
    assert index.shape(big) is kept and index.ranking(big, Locality.ANY) is ranking
    assert index.shape(small) is rematched
    assert rematched.per_host == {"h0": {0: 1}}
    assert placeable(index, [gpus(1, "smallGPU")])
