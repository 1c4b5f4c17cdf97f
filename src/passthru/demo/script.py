"""The seed wiki's use cases, played on the demo's hosts with the passthru CLI.

The wiki's examples use made-up ids (GPUs 8086:0001 and 8086:0002, NICs 8086:0022,
encryption cards V1/V2); here they become the simulated hardware's real ids, and each
use case says so. The wiki reuses the name bigGPU in every case; here each case gets its
own PCI flavor, since they all live in one cluster. Every use case returns the checks
that decide whether it was met, made on what the controller reports afterwards.
"""

from __future__ import annotations

import fnmatch
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from lxml import etree

from passthru.demo.hosts import LOCAL_GROUP, DemoHost
from passthru.demo.outcome import (
    Check,
    active_on,
    check,
    devices,
    exists,
    ids,
    port_devices,
    server,
    tagged,
)
from passthru.demo.real_vm import RealVmHost
from passthru.demo.real_vm import play as play_real_vm
from passthru.demo.walk import Walk
from passthru.pci.device import PHYSICAL_NETWORK
from passthru.sim.hardware import (
    A100,
    CONNECTX5,
    E810,
    QAT_4XXX,
    QAT_C62X,
    QAT_DH895XCC,
    T4,
    DeviceModel,
)

GPU_HOST, E810_HOST, CONNECTX_HOST, QAT_HOST = "gpu-2numa", "e810", "connectx", "qat"
#: The seed's wildcard `000[1-2]` covers its two GPUs; this glob covers 20b5 and 1eb8.
GPU_GLOB = "[12][0e]b[58]"
PCI_FLAVOR = "pci_passthrough:pci_flavor"
NUMA_POLICY = "hw:pci_numa_affinity_policy"
QA_CLASS = "e.QAclass"


@dataclass(frozen=True, slots=True)
class UseCase:
    """A use case of the seed wiki: what it asks, how it plays here, and the steps that
    play it (they return the checks that decide whether it was met)."""

    title: str
    seed: str
    here: str
    play: Callable[[Walk], list[Check]]


def _model_ids(model: DeviceModel) -> str:
    return f"{model.vendor_id}:{model.product_id}"


def _vf_ids(model: DeviceModel) -> str:
    return f"{model.vendor_id}:{model.vf.product_id}" if model.vf else _model_ids(model)


def _gpus_freed(walk: Walk, name: str, held: Sequence[dict[str, Any]]) -> Check:
    """Delete `name` and check its GPUs are free again for the next use case."""
    walk.run("delete", name, note="give its GPUs back for the next use cases")
    listed = walk.api.call("GET", walk.api.tenant("/os-pci-devices"),
                           params={"host": walk.host_of(GPU_HOST)})["pci_devices"]
    status = {row["device"]["address"]: row["device"]["status"] for row in listed}
    addresses = [device["address"] for device in held]
    return check(f"after delete, its {len(held)} devices are available again",
                 bool(held) and all(status.get(a) == "available" for a in addresses),
                 ", ".join(f"{a} {status.get(a)}" for a in addresses))


def _ports_on_their_networks(walk: Walk, found: dict[str, Any]) -> list[Check]:
    """Each port got a device tagged with its network's physical network."""
    checks = []
    for port_id, device in port_devices(found).items():
        network = walk.network(walk.port(port_id)["network_id"])
        wanted = network["physical_network"]
        checks.append(check(
            f"the port on {network['name']} got a device on {wanted}",
            device["tags"].get(PHYSICAL_NETWORK) == wanted,
            f"{device['address']} {device['dev_type']} on "
            f"{device['tags'].get(PHYSICAL_NETWORK)}"))
    return checks


def general_gpu(walk: Walk) -> list[Check]:
    walk.catalog("pci-flavor-create", "bigGPU", "--description", "passthrough NVIDIA A100")
    walk.catalog("pci-flavor-update", "bigGPU", "set", f"vendor_id={A100.vendor_id}",
                 f"product_id={A100.product_id}")
    walk.catalog("flavor-create", "m1.small", "--vcpus", "1", "--ram", "512")
    walk.catalog("flavor-key", "m1.small", "set", f"{PCI_FLAVOR}=1:bigGPU;")
    found = walk.boot("gpu-vm", "--flavor", "m1.small")
    got = [ids(d) for d in devices(found)]
    return [*active_on(found, [walk.host_of(GPU_HOST)]),
            check(f"one device, an A100 ({_model_ids(A100)})", got == [_model_ids(A100)],
                  ", ".join(got))]


def multi_flavor(walk: Walk) -> list[Check]:
    walk.catalog("pci-flavor-create", "bigGPU2", "--description", "passthrough NVIDIA T4")
    walk.catalog("pci-flavor-update", "bigGPU2", "set", f"vendor_id={T4.vendor_id}",
                 f"product_id={T4.product_id}")
    walk.catalog("flavor-create", "m1.multi", "--vcpus", "4", "--ram", "4096")
    walk.catalog("flavor-key", "m1.multi", "set", f"{PCI_FLAVOR}=4:bigGPU,bigGPU2;")
    found = walk.boot("multi-gpu-vm", "--flavor", "m1.multi")
    held = devices(found)
    got = {ids(d) for d in held}
    checks = [
        *active_on(found, [walk.host_of(GPU_HOST)]),
        check("4 devices, each a bigGPU (A100) or a bigGPU2 (T4)",
              len(held) == 4 and got <= {_model_ids(A100), _model_ids(T4)},
              ", ".join(ids(d) for d in held)),
        check("both models among them: with 3 A100s free, bigGPU2 made up the fourth",
              len(got) == 2, ", ".join(sorted(got))),
    ]
    return [*checks, _gpus_freed(walk, "multi-gpu-vm", held)]


def wildcard_flavor(walk: Walk) -> list[Check]:
    walk.catalog("pci-flavor-create", "anyGPU", "--description",
                 "passthrough NVIDIA A100 or T4, by a product id glob")
    walk.catalog("pci-flavor-update", "anyGPU", "set", f"vendor_id={A100.vendor_id}",
                 f"product_id={GPU_GLOB}")
    walk.catalog("flavor-create", "m1.wild", "--vcpus", "4", "--ram", "4096")
    walk.catalog("flavor-key", "m1.wild", "set", f"{PCI_FLAVOR}=4:anyGPU;")
    found = walk.boot("wild-gpu-vm", "--flavor", "m1.wild")
    held = devices(found)
    products = sorted({d["product_id"] for d in held})
    checks = [
        *active_on(found, [walk.host_of(GPU_HOST)]),
        check(f"4 devices, every product id matching {GPU_GLOB}",
              len(held) == 4 and all(fnmatch.fnmatch(p, GPU_GLOB) for p in products),
              ", ".join(ids(d) for d in held)),
        check(f"the one glob took both {A100.product_id} and {T4.product_id}",
              products == sorted((A100.product_id, T4.product_id)), ", ".join(products)),
    ]
    return [*checks, _gpus_freed(walk, "wild-gpu-vm", held)]


def grouping_tag(walk: Walk) -> list[Check]:
    walk.run("pci-flavor-show", "0", note="the attributes hosts expose: e.group is one")
    attrs = walk.api.call("GET", walk.api.tenant("/os-pci-flavors/0"))["os-pci-flavor"]
    walk.catalog("pci-flavor-create", "gpuGroup", "--description",
                 "any GPU the hosts tag e.group=gpu")
    walk.catalog("pci-flavor-update", "gpuGroup", "set", "e.group=gpu")
    walk.catalog("flavor-create", "m1.group", "--vcpus", "2", "--ram", "2048")
    walk.catalog("flavor-key", "m1.group", "set", f"{PCI_FLAVOR}=2:gpuGroup;",
                 f"{NUMA_POLICY}=required")
    found = walk.boot("group-gpu-vm", "--flavor", "m1.group")
    held = devices(found)
    nodes = {d["numa_node"] for d in held}
    return [
        check("hosts expose e.group (pci-flavor-show 0)", "e.group" in attrs,
              ", ".join(k for k in attrs if k not in ("UUID", "name", "description"))),
        *active_on(found, [walk.host_of(GPU_HOST)]),
        check("2 devices, both tagged e.group=gpu",
              len(held) == 2 and all(d["tags"].get("e.group") == "gpu" for d in held),
              tagged(held, "e.group")),
        check("both on the same NUMA node (required affinity)",
              len(nodes) == 1 and None not in nodes,
              "NUMA " + ", ".join(sorted(map(str, nodes)))),
    ]


def _networks(walk: Walk) -> None:
    walk.catalog("net-create", "net1", "--physical-network", "physnet1",
                 "--segmentation-id", "100")
    walk.catalog("net-create", "net2", "--physical-network", "physnet2",
                 "--segmentation-id", "200")
    walk.catalog("flavor-create", "m1.tiny", "--vcpus", "1", "--ram", "512")


def plan_a(walk: Walk) -> list[Check]:
    _networks(walk)
    walk.catalog("pci-flavor-create", "phy1_NIC", "--description",
                 "passthrough NIC connected to physical network physnet1")
    walk.catalog("pci-flavor-update", "phy1_NIC", "set", f"{PHYSICAL_NETWORK}=physnet1")
    walk.catalog("pci-flavor-create", "mlxVF", "--description",
                 "a Mellanox ConnectX virtual function")
    walk.catalog("pci-flavor-update", "mlxVF", "set", f"vendor_id={CONNECTX5.vendor_id}")
    found = walk.boot("plan-a-vm", "--flavor", "m1.tiny",
                      "--nic", "net-id=net1,vnic-type=direct,pci-flavor=phy1_NIC",
                      "--nic", "net-id=net2,vnic-type=direct,pci-flavor=mlxVF")
    held = devices(found)
    return [
        *active_on(found, [walk.host_of(CONNECTX_HOST)]),
        *_ports_on_their_networks(walk, found),
        check("2 VFs, the one on physnet2 a Mellanox one (mlxVF)",
              len(held) == 2 and all(d["dev_type"] == "type-VF" for d in held)
              and any(d["vendor_id"] == CONNECTX5.vendor_id
                      and d["tags"].get(PHYSICAL_NETWORK) == "physnet2" for d in held),
              "; ".join(f"{ids(d)} on {d['tags'].get(PHYSICAL_NETWORK)}" for d in held)),
        *walk.vf_settings(found),
    ]


def plan_b(walk: Walk) -> list[Check]:
    found = walk.boot("plan-b-vm", "--flavor", "m1.tiny",
                      "--nic", "net-id=net1,vnic-type=direct",
                      "--nic", "net-id=net2,vnic-type=direct")
    held = devices(found)
    return [
        *active_on(found, [walk.host_of(E810_HOST), walk.host_of(CONNECTX_HOST)]),
        *_ports_on_their_networks(walk, found),
        check("2 VFs", len(held) == 2 and all(d["dev_type"] == "type-VF" for d in held),
              ", ".join(f"{d['address']} {d['dev_type']}" for d in held)),
        *walk.vf_settings(found),
    ]


def _macvtap_source(xml: str) -> list[str]:
    """The netdevs of the domain's macvtap interfaces."""
    tree = etree.fromstring(xml.encode())
    return [str(source.get("dev")) for source in tree.iterfind(
        "devices/interface[@type='direct']/source")]


def vnic_types(walk: Walk) -> list[Check]:
    found = walk.boot("macvtap-pf-vm", "--flavor", "m1.tiny",
                      "--nic", "net-id=net1,vnic-type=macvtap",
                      "--nic", "net-id=net2,vnic-type=direct-physical")
    held = devices(found)
    vf_netdevs = [d["netdev"] for d in held if d["dev_type"] == "type-VF"]
    whole = [d for d in held if d["dev_type"] == "type-PF"]
    macvtaps = _macvtap_source(found["domain_xml"]) if found["domain_xml"] else []
    return [
        *active_on(found, [walk.host_of(E810_HOST)]),
        *_ports_on_their_networks(walk, found),
        check("the macvtap port's VF netdev is the source of an <interface type='direct'>",
              bool(vf_netdevs) and macvtaps == vf_netdevs,
              f"VF netdevs {vf_netdevs}, macvtap sources {macvtaps}"),
        check(f"the direct-physical port got a whole E810 PF ({_model_ids(E810)})",
              [ids(d) for d in whole] == [_model_ids(E810)],
              ", ".join(f"{d['address']} {ids(d)}" for d in whole) or "no PF"),
        *walk.vf_settings(found),
    ]


def _qa_classes(held: Sequence[dict[str, Any]]) -> list[str]:
    return [str(d["tags"].get(QA_CLASS)) for d in held]


def encryption_cards(walk: Walk) -> list[Check]:
    walk.catalog("pci-flavor-create", "QA1", "--description", "QuickAssist card version 1")
    walk.catalog("pci-flavor-update", "QA1", "set", f"{QA_CLASS}=1")
    walk.catalog("pci-flavor-create", "QA13", "--description",
                 "QuickAssist card version 1 and version 3")
    walk.catalog("pci-flavor-update", "QA13", "set", f"{QA_CLASS}=(1|3)")
    walk.catalog("image-create", "QA1_image", "--property", "pci_passthrough:supported=QA1")
    walk.catalog("image-create", "QA13_image", "--property",
                 "pci_passthrough:supported=QA13")
    walk.catalog("flavor-create", "m1.qa", "--vcpus", "1", "--ram", "1024")
    walk.catalog("flavor-key", "m1.qa", "set", f"{PCI_FLAVOR}=1:QA1,QA13;")
    walk.catalog("flavor-create", "m1.qa13", "--vcpus", "2", "--ram", "2048")
    walk.catalog("flavor-key", "m1.qa13", "set", f"{PCI_FLAVOR}=3:QA13;")
    qat = walk.host_of(QAT_HOST)
    one = walk.boot("qa1-vm", "--flavor", "m1.qa", "--image", "QA1_image",
                    note="m1.qa allows QA1 or QA13; the image narrows it to QA1")
    three = walk.boot("qa13-vm", "--flavor", "m1.qa13", "--image", "QA13_image")
    refused = walk.run("boot", "qa-mismatch-vm", "--flavor", "m1.qa13", "--image",
                       "QA1_image", quiet=True, note="QA1_image cannot take QA13 cards: refused")
    narrowed = [r["request"]["alternatives"] for r in one["pci_requests"]]
    return [
        *active_on(one, [qat]),
        check("qa1-vm's request was narrowed by its image to QA1", narrowed == [["QA1"]],
              "; ".join(" or ".join(names) for names in narrowed)),
        check("qa1-vm got one card of class 1", _qa_classes(devices(one)) == ["1"],
              tagged(devices(one), QA_CLASS)),
        *active_on(three, [qat]),
        check("qa13-vm got 3 cards, each of class 1 or 3",
              len(devices(three)) == 3
              and all(c in ("1", "3") for c in _qa_classes(devices(three))),
              tagged(devices(three), QA_CLASS)),
        check("QA1_image with 3:QA13 is refused, naming the image",
              not refused.ok and "supports only PCI flavors QA1" in refused.output
              and not exists(walk.api, "qa-mismatch-vm"),
              refused.output.strip().splitlines()[-1] if refused.output.strip() else ""),
    ]


def local_devices(walk: Walk) -> list[Check]:
    walk.catalog("pci-flavor-create", LOCAL_GROUP, "--description",
                 "a PCI device of the machine running the demo")
    walk.catalog("pci-flavor-update", LOCAL_GROUP, "set", f"e.group={LOCAL_GROUP}")
    walk.catalog("flavor-create", "m1.local", "--vcpus", "1", "--ram", "512")
    walk.catalog("flavor-key", "m1.local", "set", f"{PCI_FLAVOR}=1:{LOCAL_GROUP};")
    found = walk.boot("local-vm", "--flavor", "m1.local")
    held = devices(found)
    local = [h.name for h in walk.hosts.values() if h.profile is None]
    return [*active_on(found, local),
            check(f"one of this machine's devices, tagged e.group={LOCAL_GROUP}",
                  len(held) == 1 and held[0]["tags"].get("e.group") == LOCAL_GROUP,
                  tagged(held, "e.group"))]


def _refusal(walk: Walk, name: str, args: Sequence[str], expected: Sequence[str],
             note: str) -> list[Check]:
    ran = walk.run("boot", name, *args, quiet=True, note=note)
    found = server(walk.api, name)
    fault = found["fault"] or ""
    return [
        check(f"boot {name} fails and {name} is kept in ERROR",
              not ran.ok and found["status"] == "ERROR", found["status"]),
        check(f"the reason names {' and '.join(expected)}",
              all(part in fault for part in expected), fault),
        check(f"{name} holds no device", not devices(found), len(devices(found))),
    ]


def refusals(walk: Walk) -> list[Check]:
    walk.catalog("flavor-create", "m1.huge", "--vcpus", "8", "--ram", "8192")
    walk.catalog("flavor-key", "m1.huge", "set", f"{PCI_FLAVOR}=5:bigGPU;")
    gpu = walk.host_of(GPU_HOST)
    return [
        *_refusal(walk, "too-big-vm", ("--flavor", "m1.huge"),
                  ("no host has 5 free devices of pci flavor bigGPU", f"closest: {gpu}"),
                  "5 A100s: the fleet has only 4"),
        *_refusal(walk, "wrong-net-vm",
                  ("--flavor", "m1.tiny",
                   "--nic", "net-id=net2,vnic-type=direct,pci-flavor=phy1_NIC"),
                  ("pci flavor phy1_NIC", "physical_network physnet2"),
                  "plan A set up wrong: a physnet1 flavor on a physnet2 network"),
    ]


def use_cases(hosts: Sequence[DemoHost], real: RealVmHost | None = None) -> list[UseCase]:
    """The use cases to walk; this machine's own devices only when it offers some, and a
    real VM where the machine runs one (`real`)."""
    cases = [
        UseCase(
            "General PCI passthrough", seed="A compute node has one GPU, 8086:0001. PCI "
            "flavor `bigGPU` is that vendor and product; flavor m1.small asks for "
            "`1:bigGPU`, and `mytest` boots with it.",
            here=f"The GPU is an NVIDIA A100 ({_model_ids(A100)}) of the GPU host.",
            play=general_gpu),
        UseCase(
            "Multiple PCI flavor candidates", seed="Two GPU models, 8086:0001 and "
            "8086:0002, are PCI flavors `bigGPU` and `bigGPU2`; `1:bigGPU,bigGPU2` takes "
            "one of either.",
            here=f"bigGPU2 is the Tesla T4 ({_model_ids(T4)}). The VM asks for 4 of either "
            "while 3 A100s are free, so the answer must mix both models.",
            play=multi_flavor),
        UseCase(
            "Wild-card PCI flavor", seed="One PCI flavor matches both GPU models with a "
            "glob over the product id: `product_id=000[1-2]`.",
            here=f"The glob `{GPU_GLOB}` matches {A100.product_id} (A100) and "
            f"{T4.product_id} (T4); 4 of them again need both models.",
            play=wildcard_flavor),
        UseCase(
            "Grouping tag", seed="The compute node tags its GPUs `e.group=gpu` in "
            "pci_information and pools by `e.group`; PCI flavor `bigGPU` is `e.group=gpu`.",
            here="The GPU host's config tags every NVIDIA device e.group=gpu; the flavor "
            "`gpuGroup` asks for 2, with `hw:pci_numa_affinity_policy=required` so both "
            "sit on the VM's NUMA node (the host has two).",
            play=grouping_tag),
        UseCase(
            "SR-IOV NICs with tagged PCI flavors (plan A)", seed="NICs are tagged "
            "`e.physical_network` on the compute node; PCI flavor `phyX_NIC` selects that "
            "tag and the nic names it: `--nic net-id=network_X pci_flavor=phyX_NIC`. The "
            "IRC meeting's plan A: the flavor must agree with the network, or no boot.",
            here="Networks net1 (physnet1, VLAN 100) and net2 (physnet2, VLAN 200); VFs "
            "of an Intel E810 host and a Mellanox ConnectX host on both. `phy1_NIC` is "
            "the seed's tagged flavor; `mlxVF` narrows net2's VF to Mellanox, so only "
            "the ConnectX host fits.",
            play=plan_a),
        UseCase(
            "SR-IOV NICs chosen by their network (plan B)", seed="The IRC meeting's plan "
            "B: no PCI flavor on the nic; the network's physical_network becomes a "
            "scheduling requirement, and the device is found by its tag.",
            here="`--nic net-id=net1,vnic-type=direct` and the same on net2.",
            play=plan_b),
        UseCase(
            "macvtap and direct-physical ports", seed="Neutron's other vnic types: "
            "macvtap (a VF behind a macvtap device) and direct-physical (a whole PF).",
            here="Only the E810 host offers a whole PF (on physnet2), so the VM lands there.",
            play=vnic_types),
        UseCase(
            "Encryption cards and images", seed="Three encryption cards, classes "
            "`e.QAclass` 1, 2 and 3; PCI flavors QA1 (`e.QAclass=1`) and QA13 "
            "(`e.QAclass=(1|3)`); QA1_image supports card 1 only, QA13_image cards 1 and 3.",
            here=f"The cards are Intel QuickAssist VFs: C62x ({_vf_ids(QAT_C62X)}) class 1, "
            f"DH895xCC ({_vf_ids(QAT_DH895XCC)}) class 2, 4xxx ({_vf_ids(QAT_4XXX)}) class "
            "3. Images narrow a flavor's choices with `pci_passthrough:supported`.",
            play=encryption_cards),
    ]
    if any(h.profile is None for h in hosts):
        cases.append(UseCase(
            "This machine's own devices", seed="(not in the seed) The agent on this "
            "machine reads the real /sys and offers every device but the bridges and what "
            "the host runs on (its disks' controllers, its NICs in use), tagged "
            f"`e.group={LOCAL_GROUP}`.",
            here="Its libvirt is the test driver, so the VM is only defined there: no "
            "device is taken from this machine, which is why its config says "
            "allow_no_iommu = true.",
            play=local_devices))
    cases.append(UseCase(
        "Requests no host can meet", seed="The wiki's filter: a request the hosts cannot "
        "meet is not booted; the IRC meeting: if the flavor and network disagree, don't "
        "boot the VM.",
        here="Too many GPUs, and plan A set up wrong; each is refused with the reason.",
        play=refusals))
    if real is not None:
        cases.append(UseCase(
            "A real VM", seed="(not in the seed) What the VMs above would be on a real "
            "hypervisor: an image with a disk, a keypair, a flavor with a disk, a NIC on "
            "the management network.",
            here=f"{real.host.name}'s libvirt is a real libvirtd with the qemu driver; the "
            "image is a Debian kernel with a busybox init that prints what it sees.",
            play=functools.partial(play_real_vm, real=real)))
    return cases
