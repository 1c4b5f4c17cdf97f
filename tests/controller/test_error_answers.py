"""Every error answer names its kind beside its status, as the error tree gives them, and
the OpenAPI document describes that body."""

from __future__ import annotations

from typing import Any

from tests.controller.conftest import Api

V2 = "/v2/admin"


def _error(answer: Any) -> tuple[int, str, int]:
    body = answer.json()["error"]
    return answer.status_code, body["kind"], body["code"]


def test_each_refusal_names_its_kind(api: Api) -> None:
    assert _error(api.call("GET", f"{V2}/os-pci-flavors/nothing")) == (404, "not_found", 404)
    assert _error(api.call("GET", f"{V2}/no-such-collection")) == (404, "not_found", 404)
    assert _error(api.call("GET", f"{V2}/flavors", "pt_made-up")) == (
        401, "unauthorized", 401)
    member = api.member("p1")
    assert _error(api.call("GET", f"{V2}/os-hosts", member)) == (403, "forbidden", 403)
    body = {"pci-flavor": {"name": "bigGPU", "vendor_id": "10de"}}
    api.ok("POST", f"{V2}/os-pci-flavors", json=body)
    assert _error(api.call("POST", f"{V2}/os-pci-flavors", json=body)) == (
        409, "conflict", 409)
    assert _error(api.call("POST", f"{V2}/os-pci-flavors", json={"pci-flavor": {
        "name": "x", "vendor_id": "nvidia"}})) == (400, "invalid_input", 400)
    assert _error(api.call("POST", f"{V2}/flavors", json={"flavor": {}})) == (
        422, "invalid_input", 422)


def test_openapi_describes_the_kind() -> None:
    from passthru.controller.api.errors import ErrorDetail
    from passthru.errors import TREE

    schema = ErrorDetail.model_json_schema()
    assert schema["properties"]["kind"]["enum"] == [meaning.kind for meaning in TREE]
    assert set(schema["required"]) == {"code", "kind", "title", "message"}
