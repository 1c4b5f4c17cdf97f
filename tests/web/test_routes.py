"""The page's files: served without a token, locked down by headers, left out of the API
description."""

from __future__ import annotations

import pytest

from tests.controller.conftest import Api


@pytest.mark.parametrize(("path", "media_type", "marker"), [
    ("/ui", "text/html", '<script src="ui/fleet.js">'),
    ("/ui/fleet.js", "text/javascript", "function takeToken()"),
    ("/ui/fleet.css", "text/css", ".bar .used"),
])
def test_the_page_and_its_files_are_served(api: Api, path: str, media_type: str,
                                           marker: str) -> None:
    answer = api.client.get(path)
    assert answer.status_code == 200
    assert answer.headers["content-type"] == f"{media_type}; charset=utf-8"
    assert marker in answer.text
    policy = answer.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "connect-src 'self'" in policy
    assert answer.headers["referrer-policy"] == "no-referrer"


def test_other_files_are_not_found_and_the_page_is_no_api(api: Api) -> None:
    answer = api.client.get("/ui/routes.py")
    assert answer.status_code == 404
    assert answer.json()["error"]["message"] == "the fleet page has no file 'routes.py'; open /ui"
    paths = api.ok("GET", "/openapi.json")["paths"]
    assert not [path for path in paths if path.startswith("/ui")]
    assert "/v2/{tenant_id}/os-events" in paths
    assert "/v2/{tenant_id}/os-pci-flavor-stats" in paths
