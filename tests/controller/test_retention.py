"""Pruning on both stores: exactly what is old enough goes (deleted servers with their
requests, events by age and by count, agents' answers, long-expired tokens), live
servers and recent events stay, and the archive holds exactly the events pruned."""

from __future__ import annotations

import json
import stat
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, insert, select

from passthru.asgi import create_app
from passthru.controller.enums import Role
from passthru.controller.settings import Settings
from passthru.controller.store.db import Store
from passthru.controller.store.models import (
    AnswerRow,
    EventRow,
    HostRow,
    PciRequestRow,
    ServerRow,
    ServerStatus,
    TokenRow,
    utcnow,
)
from passthru.controller.store.retention import BATCH, prune
from passthru.errors import PassthruError
from passthru.pci.request import NumaPolicy, RequestSource
from tests.cli.runner import ok, run
from tests.controller.conftest import Api
from tests.support.values import present

NOW = utcnow()
OLD = NOW - timedelta(days=400)
RECENT = NOW - timedelta(hours=1)


def add_server(store: Store, name: str, status: ServerStatus, updated: datetime,
               on_host: bool = False) -> str:
    with store.write() as session:
        host = None
        if on_host:
            host = HostRow(name=f"h-{name}")
            session.add(host)
            session.flush()
        server = ServerRow(name=name, project="alpha", status=status, updated_at=updated,
                           created_at=updated, host_id=host.id if host else None)
        session.add(server)
        session.flush()
        session.add(PciRequestRow(uuid=f"r-{server.uuid[:30]}", server_uuid=server.uuid,
                                  position=0, count=1, source=RequestSource.FLAVOR,
                                  numa_policy=NumaPolicy.LEGACY))
        return server.uuid


def add_events(store: Store, count: int, when: datetime, server: str | None = None) -> None:
    with store.write() as session:
        session.execute(insert(EventRow), [
            {"time": when, "kind": "server-created", "server": server, "message": f"e{i}"}
            for i in range(count)])


def event_ids(store: Store) -> list[int]:
    with store.read() as session:
        return list(session.scalars(select(EventRow.id).order_by(EventRow.id)))


def times(store: Store) -> set[datetime]:
    with store.read() as session:
        return set(session.scalars(select(EventRow.time)))


def archived(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def settings_for(tmp_path: Path, **options: object) -> Settings:
    return Settings(tmp_path / "data", **options)  # type: ignore[arg-type]


def test_deleted_servers_go_after_their_days_and_live_ones_stay(store: Store,
                                                                 tmp_path: Path) -> None:
    gone = [add_server(store, f"old{i}", ServerStatus.DELETED, OLD) for i in range(3)]
    kept = {
        add_server(store, "deleted-recently", ServerStatus.DELETED, RECENT),
        add_server(store, "still-on-its-host", ServerStatus.DELETED, OLD, on_host=True),
        add_server(store, "live", ServerStatus.ACTIVE, OLD),
        add_server(store, "broken", ServerStatus.ERROR, OLD),
    }
    pruned = prune(store, settings_for(tmp_path, keep_deleted_days=30), NOW)
    assert pruned.servers == len(gone)
    with store.read() as session:
        assert set(session.scalars(select(ServerRow.uuid))) == kept
        assert set(session.scalars(select(PciRequestRow.server_uuid))) == kept


def test_old_events_go_to_the_archive_first_in_batches(store: Store, tmp_path: Path) -> None:
    server = add_server(store, "vm1", ServerStatus.ACTIVE, OLD)
    add_events(store, BATCH * 2 + 7, OLD, server)
    old = event_ids(store)
    add_events(store, 10, RECENT)
    recent = event_ids(store)[len(old):]
    archive = tmp_path / "archive" / "events.jsonl"
    archive.parent.mkdir()
    settings = settings_for(tmp_path, keep_events_days=90, events_archive=archive)
    assert prune(store, settings, NOW).events == len(old)
    assert event_ids(store) == recent
    lines = archived(archive)
    assert [line["id"] for line in lines] == old
    assert {(line["kind"], line["server"], line["server_name"], line["project"])
            for line in lines} == {("server-created", server, "vm1", "alpha")}
    assert datetime.fromisoformat(str(lines[0]["time"])) == OLD
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600
    assert prune(store, settings, NOW).events == 0
    assert len(archived(archive)) == len(old)


def test_beyond_max_events_the_oldest_go(store: Store, tmp_path: Path) -> None:
    add_events(store, 1250, RECENT)
    ids = event_ids(store)
    archive = tmp_path / "events.jsonl"
    settings = settings_for(tmp_path, max_events=1000, events_archive=archive)
    assert prune(store, settings, NOW).events == 250
    assert event_ids(store) == ids[250:]
    assert [line["id"] for line in archived(archive)] == ids[:250]


def test_old_answers_and_long_expired_tokens_go(store: Store, tmp_path: Path) -> None:
    with store.write() as session:
        session.execute(insert(AnswerRow), [
            {"key": key, "host": "h", "server": "s", "kind": "spawned", "result": {},
             "created_at": when}
            for key, when in (("old", NOW - timedelta(hours=25)), ("new", RECENT))])
        session.execute(insert(TokenRow), [
            {"digest": name * 8, "role": Role.MEMBER, "project": "a", "name": name,
             "expires_at": when, "created_at": OLD}
            for name, when in (("longgone", OLD), ("justnow", RECENT), ("forever", None))])
    pruned = prune(store, settings_for(tmp_path), NOW)
    assert (pruned.answers, pruned.tokens) == (1, 1)
    with store.read() as session:
        assert list(session.scalars(select(AnswerRow.key))) == ["new"]
        assert sorted(present(session.scalars(select(TokenRow.name)))) == ["forever", "justnow"]


def test_zero_keeps_everything(store: Store, tmp_path: Path) -> None:
    add_server(store, "old", ServerStatus.DELETED, OLD)
    add_events(store, 20, OLD)
    settings = settings_for(tmp_path, keep_deleted_days=0, keep_events_days=0, max_events=0,
                            keep_answers_hours=0)
    assert not prune(store, settings, NOW)
    with store.read() as session:
        assert session.scalar(select(func.count()).select_from(ServerRow)) == 1
    assert len(event_ids(store)) == 20


def test_replicas_pruning_at_once_archive_each_event_once(store: Store,
                                                          tmp_path: Path) -> None:
    add_events(store, BATCH * 4, OLD)
    ids = event_ids(store)
    archives = [tmp_path / f"replica{i}.jsonl" for i in range(2)]
    threads = [threading.Thread(target=prune, args=(
        store, settings_for(tmp_path, events_archive=path), NOW)) for path in archives]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seen = [line["id"] for path in archives if path.exists() for line in archived(path)]
    assert sorted(seen) == ids
    assert event_ids(store) == []


def test_passthru_prune_prunes_the_store_at_once(db_url: str, tmp_path: Path) -> None:
    settings = Settings(tmp_path / "data", db_url=db_url)
    store = create_app(settings).state.store
    try:
        add_events(store, 30, NOW - timedelta(days=10))
        add_events(store, 5, RECENT)
        add_server(store, "old", ServerStatus.DELETED, NOW - timedelta(days=10))
    finally:
        store.close()
    archive = tmp_path / "pruned.jsonl"
    result = ok(f"passthru prune --data-dir {settings.data_dir} --db {db_url} "
                f"--keep-events-days 7 --keep-deleted-days 7 --events-archive {archive}")
    assert "pruned 30 event(s), 1 deleted server(s)" in result.stderr
    assert len(archived(archive)) == 30


def test_the_controller_prunes_while_it_runs(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, prune_interval=0.2)
    with TestClient(create_app(settings)) as client:
        store: Store = client.app.state.store  # type: ignore[attr-defined]
        add_events(store, 5, OLD)
        add_events(store, 1, RECENT)
        deadline = time.monotonic() + 60
        while OLD in times(store) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert OLD not in times(store)
        assert RECENT in times(store)


@pytest.mark.parametrize("option", ["--keep-events-days -1", "--max-events -5"])
def test_prune_refuses_negative_settings(option: str, tmp_path: Path) -> None:
    result = run(f"passthru prune --data-dir {tmp_path} {option}")
    assert result.exit_code == 2


def test_an_archive_that_cannot_be_written_keeps_the_events(store: Store,
                                                            tmp_path: Path) -> None:
    add_events(store, 3, OLD)
    settings = settings_for(tmp_path, events_archive=tmp_path / "no-such-dir" / "a.jsonl")
    with pytest.raises(PassthruError, match="cannot append to the events archive"):
        prune(store, settings, NOW)
    assert len(event_ids(store)) == 3


def test_servers_deleted_through_the_api_are_gone_after_their_days(
        api: Api, settings: Settings) -> None:
    api.ok("POST", "/v2/admin/flavors", json={"flavor": {"name": "m1"}})
    ids = [api.ok("POST", "/v2/admin/servers", json={"server": {
        "name": f"vm{i}", "flavorRef": "m1"}})["server"]["id"] for i in range(5)]
    for server in ids[:4]:
        api.ok("DELETE", f"/v2/admin/servers/{server}")
    store: Store = api.client.app.state.store  # type: ignore[attr-defined]
    assert prune(store, settings).servers == 0
    later = utcnow() + timedelta(days=settings.keep_deleted_days + 1)
    assert prune(store, settings, later).servers == 4
    for server in ids[:4]:
        api.call("GET", f"/v2/admin/servers/{server}", expect=404)
    api.call("GET", f"/v2/admin/servers/{ids[4]}", expect=200)
    kinds = {e["kind"] for e in api.ok("GET", "/v2/admin/os-events",
                                       params={"server": ids[0]})["events"]}
    assert "server-deleted" in kinds


def test_a_prune_told_to_stop_ends_at_a_batch_end(store: Store, tmp_path: Path) -> None:
    add_events(store, BATCH * 3, OLD)

    class StopAtFirstPause(threading.Event):
        """The controller starts shutting down while the prune pauses after a batch."""

        def wait(self, timeout: float | None = None) -> bool:
            self.set()
            return True

    archive = tmp_path / "events.jsonl"
    pruned = prune(store, settings_for(tmp_path, events_archive=archive), NOW,
                   StopAtFirstPause())
    assert pruned.events == BATCH
    assert len(event_ids(store)) == BATCH * 2
    assert len(archived(archive)) == BATCH
