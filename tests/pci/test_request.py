import pytest

from passthru.errors import InvalidInputError
from passthru.pci.device import DevType
from passthru.pci.request import (
    NumaPolicy,
    PciRequest,
    RequestSyntaxError,
    check_flavor_names,
    narrow_to_supported,
    parse_nova_alias_spec,
    parse_numa_policy,
    parse_seed_spec,
    requests_from_extra_specs,
)


def shape(requests: list[PciRequest]) -> list[tuple[int, tuple[str, ...]]]:
    return [(r.count, r.alternatives) for r in requests]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1:IntelGPU,NvGPU;1:intelQuickAssist", [(1, ("IntelGPU", "NvGPU")), (1, ("intelQuickAssist",))]),
        ("1:IntelGPU,NvGPU;1:intelQuickAssist;", [(1, ("IntelGPU", "NvGPU")), (1, ("intelQuickAssist",))]),
        ("1:bigGPU;", [(1, ("bigGPU",))]),
        ("1:bigGPU,bigGPU2;", [(1, ("bigGPU", "bigGPU2"))]),
        ("3:QA13;", [(3, ("QA13",))]),
        ("bigGPU", [(1, ("bigGPU",))]),
        (" 2 : a , b ; c ", [(2, ("a", "b")), (1, ("c",))]),
        ("1:phyX_NIC;", [(1, ("phyX_NIC",))]),
    ],
)
def test_seed_spec(text: str, expected: list) -> None:
    assert shape(parse_seed_spec(text)) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("IntelNIC:2, QA:1", [(2, ("IntelNIC",)), (1, ("QA",))]),
        ("QA", [(1, ("QA",))]),
        ("a:1,b", [(1, ("a",)), (1, ("b",))]),
    ],
)
def test_nova_alias_spec(text: str, expected: list) -> None:
    assert shape(parse_nova_alias_spec(text)) == expected


@pytest.mark.parametrize(
    ("text", "position", "problem"),
    [
        ("0:bigGPU", 0, "count must be at least 1"),
        ("1:bigGPU;-2:QA", 9, "is not a whole number"),
        ("1:bigGPU;;1:QA", 9, "empty request"),
        ("1:big GPU", 2, "is not a PCI flavor name"),
        ("1:a,,b", 4, "a PCI flavor name is missing"),
        ("x:a", 0, "is not a whole number"),
        ("\u00b2:a", 0, "is not a whole number (digits 0-9)"),
        ("1:a;\u2460:b", 4, "is not a whole number (digits 0-9)"),
        ("1025:a", 0, "count 1025 is more than the 1024 devices a request may ask for"),
        (f"{10**20}:a", 0, "is more than the 1024 devices"),
        (f"{'9' * 5000}:a", 0, "is more than the 1024 devices"),
        ("", 0, "empty request"),
    ],
)
def test_seed_spec_errors_point_into_the_string(text: str, position: int, problem: str) -> None:
    with pytest.raises(RequestSyntaxError) as caught:
        parse_seed_spec(text)
    assert caught.value.position == position
    assert problem in str(caught.value)
    # The caret sits under the offending character.
    lines = str(caught.value).splitlines()
    assert lines[2].index("^") - lines[1].index("'") - 1 == position


def test_nova_alias_errors() -> None:
    with pytest.raises(RequestSyntaxError, match="count must be at least 1"):
        parse_nova_alias_spec("QA:0")
    with pytest.raises(RequestSyntaxError, match="not a whole number"):
        parse_nova_alias_spec("QA:two")
    with pytest.raises(RequestSyntaxError, match="not a whole number"):
        parse_nova_alias_spec("QA:\u00b2")
    with pytest.raises(RequestSyntaxError, match="more than the 1024 devices"):
        parse_nova_alias_spec("QA:2147483648")
    assert [r.count for r in parse_nova_alias_spec("QA:1024, GPU:0007")] == [1024, 7]


def test_each_request_gets_its_own_uuid() -> None:
    ids = [r.request_id for r in parse_seed_spec("1:a;1:b;1:c")]
    assert len(set(ids)) == 3


def test_extra_specs_combine_both_syntaxes_and_the_numa_policy() -> None:
    requests = requests_from_extra_specs({
        "pci_passthrough:pci_flavor": "1:bigGPU",
        "pci_passthrough:alias": "QA:2",
        "hw:pci_numa_affinity_policy": "required",
    })
    assert shape(requests) == [(1, ("bigGPU",)), (2, ("QA",))]
    assert {r.numa_policy for r in requests} == {NumaPolicy.REQUIRED}
    assert requests_from_extra_specs({"hw:cpu_policy": "dedicated"}) == []


def test_if_available_requests_are_soft() -> None:
    requests = requests_from_extra_specs({
        "pci_passthrough:pci_flavor": "1:bigGPU",
        "pci_passthrough:pci_flavor_if_available": "2:QA;1:fastNIC"})
    assert [(r.count, r.alternatives, r.soft) for r in requests] == [
        (1, ("bigGPU",), False), (2, ("QA",), True), (1, ("fastNIC",), True)]
    with pytest.raises(RequestSyntaxError, match="count must be at least 1") as caught:
        requests_from_extra_specs({"pci_passthrough:pci_flavor_if_available": "0:QA"})
    assert "pci_passthrough:pci_flavor_if_available '0:QA'" in str(caught.value)


def test_numa_policy_parsing() -> None:
    assert parse_numa_policy(None) is NumaPolicy.LEGACY
    assert parse_numa_policy("Preferred") is NumaPolicy.PREFERRED
    with pytest.raises(InvalidInputError, match="expected one of required, preferred"):
        parse_numa_policy("strict")


def test_unknown_flavor_names_are_refused_with_the_known_ones() -> None:
    requests = parse_seed_spec("1:bigGPU,hugeGPU")
    check_flavor_names(requests, {"bigGPU", "hugeGPU"})
    with pytest.raises(InvalidInputError, match=r"unknown PCI flavor 'hugeGPU'.*known PCI flavors: QA, bigGPU"):
        check_flavor_names(requests, {"bigGPU", "QA"})


def test_image_narrows_alternatives() -> None:
    requests = parse_seed_spec("1:QA1,QA2,QA3")
    (narrowed,) = narrow_to_supported(requests, {"QA1", "QA3"})
    assert narrowed.alternatives == ("QA1", "QA3")
    assert narrowed.request_id == requests[0].request_id
    with pytest.raises(InvalidInputError, match="supports only PCI flavors QA9"):
        narrow_to_supported(requests, {"QA9"}, image="image QA9_image")


def test_describe_without_a_pci_flavor() -> None:
    request = PciRequest(1, (), physical_network="physnet1", dev_type=DevType.VF)
    assert request.describe() == "1 device (type-VF) on physical_network physnet1"


def test_describe_names_network_and_type() -> None:
    request = PciRequest(2, ("bigGPU",), physical_network="physnet2", dev_type=DevType.VF)
    assert request.describe() == "2 devices of pci flavor bigGPU (type-VF) on physical_network physnet2"
