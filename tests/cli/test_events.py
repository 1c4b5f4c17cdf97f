"""`passthru events` against a live controller: who had a VF and when, as a table and as
JSON, with the filters an operator types."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from passthru.controller.settings import DATABASE_FILE
from passthru.controller.store.db import Store
from passthru.errors import ForbiddenError, InvalidInputError
from tests.cli.runner import as_json, ok, run
from tests.support.live import ServedApp
from tests.web.fleet import VF, vf_history


@pytest.fixture
def history(cli_env: ServedApp) -> Iterator[ServedApp]:
    """One VF, held by vm-a, freed, then held by vm-b (see `vf_history`)."""
    store = Store(f"sqlite:///{cli_env.data_dir / DATABASE_FILE}")
    auth = {"Authorization": f"Bearer {cli_env.admin_token}"}
    try:
        with httpx.Client(base_url=cli_env.url, headers=auth, timeout=30) as http:
            vf_history(http, store)
    finally:
        store.close()
    yield cli_env


def test_who_had_this_vf_and_when(history: ServedApp) -> None:
    found = as_json("passthru events --device 0a:02.0 --kind device-claimed "
                    "--kind device-freed")
    assert [(e["kind"], e["server_name"], e["device"]) for e in found] == [
        ("device-claimed", "vm-b", VF), ("device-freed", "vm-a", VF),
        ("device-claimed", "vm-a", VF)]
    table = ok("passthru events --device 0000:0a:02.0 --limit 2").stdout
    assert "Events (newest first)" in table
    for header in ("Time (UTC)", "Kind", "Host", "Device", "Server", "Message"):
        assert header in table
    lines = [line for line in table.splitlines() if VF in line]
    assert len(lines) == 2
    assert "device-claimed" in lines[0] and "vm-b" in lines[0] and "net-1" in lines[0]
    assert "device-freed" in lines[1] and "freed by server vm-a" in lines[1]


def test_server_host_and_time_filters(history: ServedApp) -> None:
    assert [e["kind"] for e in as_json("passthru events --server vm-a")] == [
        "server-deleted", "device-freed", "device-claimed", "server-created"]
    assert as_json("passthru events --host net-2") == []
    assert as_json("passthru events --since 2999-01-01") == []
    everything = as_json("passthru events")
    assert "host-added" in {e["kind"] for e in everything}
    assert as_json("passthru events --until '2999-01-01 00:00:00'") == everything


def test_members_and_bad_filters_get_one_line_saying_why(history: ServedApp) -> None:
    member = as_json("passthru token-create --project demo")["token"]
    refused = run(f"passthru events --token {member}")
    assert refused.exit_code == ForbiddenError.exit_code
    assert "listing events needs an admin token" in refused.stderr
    bad = run("passthru events --device 0a:02")
    assert bad.exit_code == InvalidInputError.exit_code
    assert "device filter: PCI address '0a:02'" in bad.stderr
