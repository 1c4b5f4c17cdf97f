"""The agent reads each order on its own: one it cannot read is kept aside with the server
it names and why, and the others are carried out as usual."""

from __future__ import annotations

import pytest

from passthru.host.worker import OrdersUnreadableError, UnreadableOrder, read_orders
from passthru.pci.work import PowerAction

ONE = "6f1d6a43-0000-4000-8000-000000000001"
TWO = "6f1d6a43-0000-4000-8000-000000000002"


def spawn(uuid: str, mac: str) -> dict[str, object]:
    device = {"address": "0000:5e:01.1", "vendor_id": "8086", "product_id": "1889",
              "dev_type": "type-VF", "parent_addr": "0000:5e:00.0"}
    return {"server_uuid": uuid, "name": "vm", "vcpus": 1, "ram_mb": 512, "devices": [{
        "device": device, "request_id": "r1", "port": {"port_id": "p1", "vnic_type": "direct", "mac": mac},
        "network": {"name": "prod", "network_type": "vlan", "physical_network": "physnet1",
                    "segmentation_id": 100}}]}


def test_a_bad_order_is_set_aside_and_the_others_are_read() -> None:
    orders = read_orders({
        "spawn": [spawn(ONE, "01:00:5e:00:00:01"), spawn(TWO, "fa:16:3e:00:00:02")],
        "destroy": [{"server_uuid": "not-a-uuid", "name": "gone"}],
        "power": [{"server_uuid": ONE, "name": "vm", "action": "suspend"},
                  {"server_uuid": TWO, "name": 7, "action": "stop"}],
        "running": [ONE, "garbage", 12],
    })
    assert [order.server_uuid for order in orders.spawn] == [TWO]
    assert orders.destroy == [] and orders.power == []
    assert orders.running == [ONE]
    [bad_destroy, bad_spawn, bad_action, bad_name] = orders.unreadable
    assert (bad_spawn.kind, bad_spawn.server_uuid) == ("spawn", ONE)
    assert "01:00:5e:00:00:01" in bad_spawn.reason and "multicast" in bad_spawn.reason
    assert (bad_destroy.kind, bad_destroy.server_uuid) == ("destroy", None)
    assert "not a UUID" in bad_destroy.reason
    assert (bad_action.kind, bad_action.server_uuid, bad_action.action) == ("power", ONE, None)
    assert bad_name == UnreadableOrder("power", TWO, bad_name.reason, PowerAction.STOP)
    assert bad_name.reason.startswith("name: ")


@pytest.mark.parametrize("document", [[], {"spawn": {"a": 1}}])
def test_what_is_not_an_orders_document_fails_the_round(document: object) -> None:
    with pytest.raises(OrdersUnreadableError):
        read_orders(document)
