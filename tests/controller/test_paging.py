"""Every list pages as Nova does: `limit` and `marker`, a next link only while more follow,
each item exactly once even when items are added between pages, and a clear 400 for a
bad limit, a marker that names nothing, or a query parameter the list does not know."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy import select, text

from passthru.asgi import create_app
from passthru.controller.settings import Settings
from passthru.controller.store.db import Store
from passthru.controller.store.models import ServerRow, ServerStatus
from tests.controller.conftest import Api

V2 = "/v2/admin"
PAGE_SIZE = 2
MAX_PAGE = 5

#: Every list of the REST API, and the key of its items.
LISTS = {
    "/servers": "servers", "/flavors": "flavors", "/images": "images",
    "/os-keypairs": "keypairs", "/networks": "networks", "/ports": "ports",
    "/tokens": "tokens", "/os-pci-flavors": "os-pci-flavors", "/os-events": "events",
    "/os-hosts": "hosts", "/os-pci-devices": "pci_devices", "/os-pci-stats": "pci_stats",
    "/os-pci-flavor-stats": "pci_flavor_stats",
}


@pytest.fixture
def small(tmp_path: Path) -> Iterator[Api]:
    """The controller with pages of 2 items by default and at most 5."""
    settings = Settings(tmp_path / "data", page_size=PAGE_SIZE, max_page_size=MAX_PAGE)
    with TestClient(create_app(settings)) as client:
        yield Api(client, settings.admin_token_path.read_text().strip())


def _marker(body: dict[str, Any], key: str) -> str | None:
    links = body.get(f"{key}_links")
    if links is None:
        return None
    assert [link["rel"] for link in links] == ["next"]
    return parse_qs(urlsplit(links[0]["href"]).query)["marker"][0]


def walk(api: Api, path: str, key: str, **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    marker = None
    while True:
        query = {**params, **({"marker": marker} if marker else {})}
        body = api.ok("GET", f"{V2}{path}", params=query)
        items.extend(body[key])
        marker = _marker(body, key)
        if marker is None:
            return items


def _flavor(api: Api, name: str) -> None:
    api.ok("POST", f"{V2}/flavors", json={"flavor": {"name": name}})


def _names(api: Api) -> set[str]:
    return {f["name"] for f in walk(api, "/flavors", "flavors", limit=MAX_PAGE)}


@hypothesis_settings(max_examples=15, deadline=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(limit=st.integers(1, MAX_PAGE + 2), existing=st.integers(0, 6),
       added=st.lists(st.text("abcdefghij", min_size=1, max_size=4), max_size=6))
def test_a_walk_sees_every_item_once_though_items_are_added_between_pages(
        small: Api, limit: int, existing: int, added: list[str]) -> None:
    for _ in range(existing):
        _flavor(small, f"f{len(_names(small)):04d}")
    before = _names(small)
    seen: list[str] = []
    inserted: set[str] = set()
    ahead: set[str] = set()  # added after the walk's position: a later page has them
    marker = None
    pending = list(added)
    while True:
        body = small.ok("GET", f"{V2}/flavors",
                        params={"limit": limit, **({"marker": marker} if marker else {})})
        page = [f["name"] for f in body["flavors"]]
        assert len(page) <= min(limit, MAX_PAGE)
        assert page == sorted(page)
        seen += page
        marker = _marker(body, "flavors")
        if marker is None:
            break
        if pending:
            name = pending.pop() + "-" + str(len(before) + len(inserted))
            if name not in before | inserted:
                _flavor(small, name)
                inserted.add(name)
                if name > page[-1]:
                    ahead.add(name)
    assert len(seen) == len(set(seen)), "an item came twice"
    assert before <= set(seen)
    assert set(seen) - before == ahead


def test_servers_created_in_the_same_instant_each_come_once_in_their_project(
        small: Api) -> None:
    store: Store = small.client.app.state.store  # type: ignore[attr-defined]
    instant = datetime(2026, 1, 1, tzinfo=UTC)
    with store.write() as session:
        session.add_all(ServerRow(name=f"vm-{n}", project="demo" if n % 3 else "other",
                                  status=ServerStatus.ACTIVE, created_at=instant)
                        for n in range(13))
        session.add(ServerRow(name="gone", project="demo", status=ServerStatus.DELETED,
                              created_at=instant))
    with store.read() as session:
        every = session.scalars(select(ServerRow).where(ServerRow.status != ServerStatus.DELETED)
                                .order_by(ServerRow.created_at, ServerRow.uuid)).all()
        demo = [row.uuid for row in every if row.project == "demo"]
        everyone = [row.uuid for row in every]
    member = small.member("demo")
    for limit in range(1, MAX_PAGE + 2):
        assert [s["id"] for s in walk(small, "/servers", "servers", limit=limit,
                                      all_projects="true")] == everyone
        mine: list[str] = []
        marker = None
        while True:
            params = {"limit": limit, **({"marker": marker} if marker else {})}
            body = small.ok("GET", "/v2/demo/servers", member, params=params)
            mine += [s["id"] for s in body["servers"]]
            if (marker := _marker(body, "servers")) is None:
                break
        assert mine == demo
    # Another project's server is no marker of this one's list.
    other = next(uuid for uuid in everyone if uuid not in demo)
    refused = small.call("GET", "/v2/demo/servers", member, params={"marker": other},
                         expect=400)
    assert f"marker {other!r} is no server of this list" in refused.json()["error"]["message"]


def test_the_next_link_is_there_only_while_more_follow(small: Api) -> None:
    for name in ("a", "b", "c"):
        _flavor(small, name)
    whole = small.ok("GET", f"{V2}/flavors", params={"limit": 3})
    assert [f["name"] for f in whole["flavors"]] == ["a", "b", "c"]
    assert "flavors_links" not in whole
    first = small.ok("GET", f"{V2}/flavors")  # the default page: 2
    assert [f["name"] for f in first["flavors"]] == ["a", "b"]
    (link,) = first["flavors_links"]
    assert link["rel"] == "next"
    assert link["href"].endswith(f"{V2}/flavors?marker={first['flavors'][1]['id']}")
    rest = small.client.get(link["href"], headers={"Authorization": f"Bearer {small.admin}"})
    assert [f["name"] for f in rest.json()["flavors"]] == ["c"]
    assert "flavors_links" not in rest.json()
    # A limit above the most a page holds is cut to it, as Nova cuts to max_limit.
    for name in "defg":
        _flavor(small, name)
    assert len(small.ok("GET", f"{V2}/flavors", params={"limit": 1000})["flavors"]) == MAX_PAGE
    # Filters stay in the next link.
    tokens = small.ok("GET", f"{V2}/tokens", params={"role": "admin", "limit": 1})
    assert "tokens_links" not in tokens  # one admin token


@pytest.mark.parametrize("path", sorted(LISTS))
def test_a_bad_limit_marker_or_parameter_is_refused_with_the_reason(
        small: Api, path: str) -> None:
    for limit in ("0", "-1", "many", "1.5"):
        bad = small.call("GET", f"{V2}{path}", params={"limit": limit}, expect=400)
        assert bad.json()["error"]["message"].startswith(
            f"limit must be a whole number of at least 1, got {limit!r}")
    missing = small.call("GET", f"{V2}{path}", params={"marker": "no-such-thing"},
                         expect=400)
    message = missing.json()["error"]["message"]
    assert message.startswith("marker 'no-such-thing' is no ")
    assert "of the last" in message
    for typo in ({"statsu": "up"}, {"all_project": "true"}):
        unknown = small.call("GET", f"{V2}{path}", params=typo, expect=400)
        (name,) = typo
        assert unknown.json()["error"]["message"].startswith(
            f"unknown query parameter {name!r}; /v2/admin{path} takes ")


def test_the_fleet_summary_refuses_unknown_parameters(small: Api) -> None:
    bad = small.call("GET", f"{V2}/os-fleet-summary", params={"limit": 3}, expect=400)
    assert "unknown query parameter 'limit'" in bad.json()["error"]["message"]


def test_a_page_of_servers_is_an_index_range_scan(store: Store) -> None:
    """The page query reads the paging index in order: no sort, no full scan."""
    query = (select(ServerRow).where(ServerRow.status != ServerStatus.DELETED,
                                     ServerRow.project == "demo")
             .order_by(ServerRow.created_at, ServerRow.uuid).limit(101))
    with store.read() as session:
        compiled = query.compile(session.get_bind(), compile_kwargs={"literal_binds": True})
        if store.engine.dialect.name == "sqlite":
            plan = " ".join(str(row[-1]) for row in session.execute(
                text(f"EXPLAIN QUERY PLAN {compiled}")))
            assert "USING INDEX ix_servers_project_page" in plan, plan
            assert "TEMP B-TREE" not in plan, plan
        else:
            session.execute(text("SET LOCAL enable_seqscan = off"))
            plan = " ".join(row[0] for row in session.execute(text(f"EXPLAIN {compiled}")))
            assert "ix_servers_project_page" in plan, plan
            assert "Sort" not in plan, plan
