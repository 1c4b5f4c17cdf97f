"""The seed wiki's PCI flavor API, with its bodies, in-process."""

from __future__ import annotations

from tests.controller.conftest import Api

FLAVORS = "/v2/admin/os-pci-flavors"


def create(api: Api, name: str, description: str = "") -> dict[str, str]:
    body = {"pci-flavor": {"name": name, "description": description}}
    return dict(api.ok("POST", FLAVORS, json=body)["os-pci-flavor"])


def test_create_show_update_list_delete_with_the_seeds_bodies(api: Api) -> None:
    created = create(api, "bigGPU", "passthrough Intel's on-die GPU")
    uuid = created["UUID"]
    assert created == {"UUID": uuid, "name": "bigGPU",
                       "description": "passthrough Intel's on-die GPU"}

    update = {"action": "update",
              "pci-flavor": {"description": "xxxx", "vendor_id": "8086", "e.group": "A"}}
    updated = api.ok("PUT", f"{FLAVORS}/{uuid}", json=update)["os-pci-flavor"]
    assert updated == {"UUID": uuid, "name": "bigGPU", "description": "xxxx",
                       "vendor_id": "8086", "e.group": "A"}

    by_name = api.ok("GET", "/v2/admin/os-pci-flavor/bigGPU")["os-pci-flavor"]
    by_uuid = api.ok("GET", f"/v2/admin/os-pci-flavor/{uuid}")["os-pci-flavor"]
    assert by_name == by_uuid == updated
    assert api.ok("GET", FLAVORS) == {"os-pci-flavors": [updated]}

    api.call("DELETE", f"/v2/admin/os-pci-flavor/{uuid}", expect=204)
    assert api.ok("GET", FLAVORS) == {"os-pci-flavors": []}
    api.call("GET", f"{FLAVORS}/bigGPU", expect=404)


def test_update_replaces_the_definition_and_set_merges(api: Api) -> None:
    create(api, "QA13")
    path = f"{FLAVORS}/QA13"
    api.ok("PUT", path, json={"action": "update",
                              "pci-flavor": {"vendor_id": "8086", "e.QAclass": "1"}})
    replaced = api.ok("PUT", path, json={"action": "update",
                                         "pci-flavor": {"e.QAclass": "(1|3)"}})
    assert replaced["os-pci-flavor"] == {"UUID": replaced["os-pci-flavor"]["UUID"],
                                         "name": "QA13", "description": "",
                                         "e.QAclass": "(1|3)"}
    merged = api.ok("PUT", path, json={"action": "set",
                                       "pci-flavor": {"device_id": "0001", "e.QAclass": None}})
    assert {k: v for k, v in merged["os-pci-flavor"].items() if k != "UUID"} == {
        "name": "QA13", "description": "", "product_id": "0001"}


def test_bad_keys_and_values_are_refused_with_the_reason(api: Api) -> None:
    create(api, "bigGPU")
    path = f"{FLAVORS}/bigGPU"
    answer = api.call("PUT", path, json={"action": "update", "pci-flavor": {"vendor": "8086"}},
                      expect=400)
    assert "vendor_id" in answer.json()["error"]["message"]  # did you mean
    answer = api.call("PUT", path, json={"pci-flavor": {"address": "0000:0a:00.1"}},
                      expect=400)
    assert "differs from host to host" in answer.json()["error"]["message"]
    answer = api.call("PUT", path, json={"pci-flavor": {"vendor_id": "80g6"}}, expect=400)
    assert answer.json()["error"]["code"] == 400
    answer = api.call("POST", FLAVORS, json={"pci-flavor": {"name": "1bad"}}, expect=400)
    assert "start with a letter" in answer.json()["error"]["message"]


def test_names_are_unique(api: Api) -> None:
    create(api, "bigGPU")
    answer = api.call("POST", FLAVORS, json={"pci-flavor": {"name": "bigGPU"}}, expect=409)
    assert "exists already" in answer.json()["error"]["message"]


def test_flavor_attrs_list_what_hosts_group_their_pools_by(api: Api) -> None:
    device = {"address": "0000:0a:00.0", "vendor_id": "8086", "product_id": "0001",
              "tags": {"e.group": "gpu"}}
    api.ok("PUT", "/v2/agent/hosts/c1/inventory",
           json={"pool_attrs": ["vendor_id", "e.*"], "devices": [device]})
    api.ok("PUT", "/v2/agent/hosts/c2/inventory",
           json={"pool_attrs": ["product_id", "dev_type"], "devices": []})
    attrs = api.ok("GET", "/v2/admin/os-pci-flavor/0")["os-pci-flavor"]
    assert attrs == {"UUID": "0", "name": "_flavor_attrs",
                     "description": "Available flavor attrs", "dev_type": "True",
                     "e.group": "True", "product_id": "True", "vendor_id": "True"}
    api.call("PUT", "/v2/admin/os-pci-flavor/0", json={"pci-flavor": {"x": "1"}}, expect=403)


def test_a_pci_flavor_in_use_cannot_be_deleted_or_renamed(api: Api) -> None:
    create(api, "bigGPU")
    create(api, "QA")
    api.ok("POST", "/v2/admin/flavors", json={"flavor": {"name": "m1.small"}})
    api.ok("POST", "/v2/admin/flavors/m1.small/os-extra_specs",
           json={"extra_specs": {"pci_passthrough:pci_flavor": "1:bigGPU;1:QA"}})
    answer = api.call("DELETE", f"{FLAVORS}/bigGPU", expect=409)
    assert answer.json()["error"]["message"] == (
        "PCI flavor bigGPU is still used by flavor m1.small; change or delete them first")
    api.call("PUT", f"{FLAVORS}/QA", json={"action": "set", "pci-flavor": {"name": "QA2"}},
             expect=409)
    api.ok("POST", "/v2/admin/images", json={"image": {
        "name": "qa-image", "properties": {"pci_passthrough:supported": "QA"}}})
    api.call("DELETE", "/v2/admin/flavors/m1.small/os-extra_specs/pci_passthrough:pci_flavor",
             expect=204)
    api.call("DELETE", f"{FLAVORS}/bigGPU", expect=204)
    answer = api.call("DELETE", f"{FLAVORS}/QA", expect=409)
    assert "image qa-image" in answer.json()["error"]["message"]
